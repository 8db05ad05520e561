// Command vigild is the Vigil node daemon: one per node, it runs the heartbeat plane, takes part
// in membership and quorum, and brings service groups online and offline.
//
//	vigild --config /etc/vigil/node.yaml
//
// It exits non-zero, with nothing started, when the configuration is invalid. SIGTERM or SIGINT
// detach its eBPF programs and remove their pins; after SIGKILL they stay in the kernel, which
// keeps answering peers' echoes, and the next vigild takes them over.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"vigil/control/metrics"
	"vigil/internal/buildinfo"
	"vigil/internal/nodeconf"
	"vigil/internal/sdnotify"
)

// CLI holds vigild's flags.
type CLI struct {
	Config    string     `short:"c" default:"/etc/vigil/node.yaml" type:"path" help:"Node configuration file."`
	Fallback  bool       `help:"Receive heartbeats in user space (AF_PACKET) instead of XDP, whatever the configuration says."`
	BPFDir    string     `name:"bpf-dir" default:"/sys/fs/bpf/vigil" type:"path" help:"bpffs directory where eBPF objects are pinned (mounted if needed)."`
	LogFormat string     `enum:"text,json" default:"text" help:"Log format: text or json."`
	LogLevel  slog.Level `default:"info" help:"Log level: debug, info, warn, error."`
	CheckOnly bool       `name:"check" help:"Validate the configuration and key file, then exit."`
	// The cluster database (see cluster.go and the control/cluster package).
	Witness    bool             `help:"Run as a witness: vote and store the cluster database, host no services."`
	Join       bool             `help:"With an empty data directory, wait to be added to an existing cluster (vigil node add) instead of founding one with the configured peers."`
	RaftListen string           `name:"raft-listen" placeholder:"ADDR[:PORT]" help:"Address of this node's cluster transport (default: the first UDP link's address, port 7405)."`
	RaftPeer   []string         `name:"raft-peer" placeholder:"ID=ADDR[:PORT]" help:"Cluster transport address of a peer (repeatable; default: from the UDP links)."`
	RaftTick   time.Duration    `name:"raft-tick" default:"10ms" help:"Raft tick: heartbeats every tick, elections after 10-20 ticks without a leader (at once when the heartbeat plane sees the leader down)."`
	DRDListen  string           `name:"drd-listen" placeholder:"ADDR[:PORT]" help:"Address of the DRD block shipping listener (default: the cluster transport's address, port 7406, where the other nodes' clients look for it)."`
	BenchDir   string           `name:"bench-dir" hidden:"" type:"path" help:"Serve the interconnect benchmark's streams and record them in this directory (test traffic; see benchstream.go)."`
	BenchPeer  int              `name:"bench-peer" hidden:"" help:"With --bench-dir: run the benchmark's streams to this node once DIR/start exists."`
	NoNudge    bool             `name:"no-nudge" hidden:"" help:"Do not nudge the transport's streams on link-down events (a benchmark control)."`
	Version    kong.VersionFlag `help:"Print the version and exit."`
	// Prometheus metrics (control/metrics); off unless an address is given.
	MetricsListen string `name:"metrics-listen" placeholder:"ADDR:PORT" help:"Serve Prometheus metrics over HTTP at /metrics on this address (e.g. 127.0.0.1:9405); off by default."`
}

func main() {
	var cli CLI
	kong.Parse(&cli,
		kong.Name("vigild"),
		kong.Description("The Vigil node daemon."),
		kong.Vars{"version": "vigild " + buildinfo.Version()},
		kong.UsageOnError(),
	)
	if err := run(cli); err != nil {
		fmt.Fprintln(os.Stderr, "vigild:", err)
		os.Exit(1)
	}
}

func run(cli CLI) error {
	cfg, err := nodeconf.Load(cli.Config)
	if err != nil {
		return err
	}
	key, err := nodeconf.LoadKey(cfg.KeyFile)
	if err != nil {
		return err
	}
	if cli.Fallback {
		cfg.Heartbeat.Mode = nodeconf.ModeFallback
	}
	if cli.CheckOnly {
		fmt.Printf("%s: configuration valid (cluster %s, node %d, %d links, %d peers)\n",
			cli.Config, cfg.Cluster, cfg.Node, len(cfg.Links), len(cfg.Peers))
		return nil
	}
	var h slog.Handler
	opts := &slog.HandlerOptions{Level: cli.LogLevel}
	if cli.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	} else {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	log := slog.New(h).With("node", cfg.Node)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The metrics port first: when it is taken, nothing else has started.
	var metricsLn net.Listener
	if cli.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", cli.MetricsListen); err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		defer metricsLn.Close()
	}
	d, err := newDaemon(cfg, key, daemonOptions{BPFDir: cli.BPFDir, Log: log, DRDListen: cli.DRDListen, Cluster: clusterFlags{
		Witness: cli.Witness, Join: cli.Join, Listen: cli.RaftListen, Peers: cli.RaftPeer, Tick: cli.RaftTick},
		Bench: benchFlags{Dir: cli.BenchDir, Peer: cli.BenchPeer, NoNudge: cli.NoNudge}})
	if err != nil {
		return err
	}
	if metricsLn != nil {
		go func() {
			if err := metrics.Serve(ctx, metricsLn, d.provider(), log); err != nil {
				log.Error("metrics server stopped", "err", err)
			}
		}()
	}
	// The admin socket listens and the heartbeat plane runs: tell systemd (Type=notify).
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("cannot tell the service manager that vigild is ready", "err", err)
	}
	err = d.run(ctx)
	if _, nerr := sdnotify.Notify(sdnotify.Stopping); nerr != nil {
		log.Warn("cannot tell the service manager that vigild is stopping", "err", nerr)
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, d.shutdown())
}
