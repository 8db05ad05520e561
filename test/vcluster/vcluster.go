// Package vcluster runs clusters of real vigild processes in the netns harness: it builds the
// binaries once per process, writes each node's configuration and the cluster key, starts,
// stops and kills daemons, talks to them through their admin sockets, and follows their JSON
// logs for the transitions they report. Integration tests, benchmarks and the demo use it.
package vcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/internal/nodeconf"
	"vigil/test/netns"
)

// Options describe a cluster of daemons.
type Options struct {
	Nodes        int           // 1 .. netns.MaxNodes
	Interval     time.Duration // heartbeat interval; zero: 10ms
	Multiplier   int           // zero: 3
	StallTimeout time.Duration // zero: the daemon's default
	// Fallback lists the nodes that receive heartbeats in user space instead of XDP.
	Fallback []int
	// UDP carries heartbeats in UDP (port UDPPort on each private address) instead of raw
	// Ethernet frames.
	UDP bool
	// Bin is a directory holding vigild and vigil; empty builds them (once per process).
	Bin string
	// Witnesses run with --witness (cluster database role witness).
	Witnesses []int
	// RaftTick is vigild's --raft-tick; zero: the daemon's default.
	RaftTick time.Duration
	// AllArgs are extra vigild flags for every node (before Args and Node.Args).
	AllArgs []string
	// Interconnect is written into every node's configuration as it is (zero: off); see
	// ClusterNetwork for a network the harness does not use.
	Interconnect nodeconf.Interconnect
	// DiskHeartbeat, when its Interval is set, gives every node a disk heartbeat on one shared
	// file of the cluster's shared directory (Path is filled in).
	DiskHeartbeat nodeconf.DiskHeartbeat
	// Args are extra vigild flags per node id, for every start of that node.
	Args map[int][]string
}

// RaftPort is the cluster transport's port of every daemon; each listens on its cluster
// address when Options.Interconnect is on, else on its address on the first private link.
const RaftPort = 7405

// ClusterNetwork is a network for cluster addresses inside 198.18.0.0/15 that the netns
// harness does not use: node N's cluster address is 198.18.100.N.
var ClusterNetwork = netip.MustParsePrefix("198.18.100.0/24")

// UDPPort is the heartbeat port of clusters with Options.UDP.
const UDPPort = 5405

// Cluster is a running set of daemons on a netns topology.
type Cluster struct {
	Net   *netns.Cluster
	Nodes []*Node
	Opts  Options
	bin   string
}

// Node is one daemon.
type Node struct {
	ID     int
	NS     *netns.Node
	Config string // path of its node.yaml
	Socket string // admin socket
	Log    string // its JSON log (stderr)
	// Args are extra vigild flags for the next Start.
	Args []string
	proc *netns.Proc
	c    *Cluster
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries builds vigild and vigil into a temporary directory, once per process, and returns it.
func Binaries() (string, error) {
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vigil-bin-")
		if buildErr != nil {
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "./cmd/vigild", "./cmd/vigil")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build vigild vigil: %w\n%s", err, out)
		}
	})
	return buildDir, buildErr
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the vigil module")
	}
	return filepath.Dir(mod), nil
}

// New starts a cluster for a test and stops it in t.Cleanup; the daemons' logs are attached to
// a failing test.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	netns.RequireRoot(t)
	c, err := Start(opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				if b, err := os.ReadFile(n.Log); err == nil {
					t.Logf("log of node %d:\n%s", n.ID, tail(string(b), 60))
				}
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	return c
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Start builds the topology, writes the configurations and starts every daemon. The caller
// must Close the cluster.
func Start(opts Options) (c *Cluster, err error) {
	if opts.Interval == 0 {
		opts.Interval = 10 * time.Millisecond
	}
	if opts.Multiplier == 0 {
		opts.Multiplier = 3
	}
	bin := opts.Bin
	if bin == "" {
		if bin, err = Binaries(); err != nil {
			return nil, err
		}
	}
	nc, err := netns.Build(netns.Options{Nodes: opts.Nodes})
	if err != nil {
		return nil, err
	}
	c = &Cluster{Net: nc, Opts: opts, bin: bin}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
			c = nil
		}
	}()
	keyPath := filepath.Join(nc.SharedDir, "cluster.key")
	if err := nodeconf.GenerateKey(keyPath); err != nil {
		return c, err
	}
	if c.Opts.DiskHeartbeat.Interval != 0 {
		if c.Opts.DiskHeartbeat.Path, err = nc.SharedFile("heartbeat.disk", 64*4096); err != nil {
			return c, err
		}
	}
	for _, n := range nc.Nodes {
		node, err := c.writeConfig(n, keyPath)
		if err != nil {
			return c, err
		}
		c.Nodes = append(c.Nodes, node)
	}
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return c, err
		}
	}
	return c, nil
}

func (c *Cluster) writeConfig(n *netns.Node, keyPath string) (*Node, error) {
	dir := filepath.Join(c.Net.SharedDir, fmt.Sprintf("n%d", n.ID))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := nodeconf.Config{
		Cluster: "test", Node: n.ID, KeyFile: keyPath, DataDir: filepath.Join(dir, "data"),
		AdminSocket: filepath.Join(dir, "vigild.sock"),
		Heartbeat: nodeconf.Heartbeat{
			Interval: c.Opts.Interval, Multiplier: c.Opts.Multiplier, StallTimeout: c.Opts.StallTimeout,
			Sweep: min(c.Opts.Interval, time.Millisecond),
		},
	}
	if slices.Contains(c.Opts.Fallback, n.ID) {
		cfg.Heartbeat.Mode = nodeconf.ModeFallback
	}
	cfg.Interconnect = c.Opts.Interconnect
	if c.Opts.DiskHeartbeat.Interval != 0 {
		cfg.DiskHeartbeat = c.Opts.DiskHeartbeat
	}
	for _, l := range netns.PrivateLinks {
		link := nodeconf.Link{Name: l.String()}
		if c.Opts.UDP {
			link.UDP = netip.AddrPortFrom(netns.Addr(n.ID, l), UDPPort)
		}
		cfg.Links = append(cfg.Links, link)
	}
	for _, p := range c.Net.Nodes {
		if p.ID == n.ID {
			continue
		}
		peer := nodeconf.Peer{ID: p.ID}
		if c.Opts.UDP {
			for _, l := range netns.PrivateLinks {
				peer.UDP = append(peer.UDP, netip.AddrPortFrom(netns.Addr(p.ID, l), UDPPort))
			}
		}
		cfg.Peers = append(cfg.Peers, peer)
	}
	data, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("node %d config: %w", n.ID, err)
	}
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	return &Node{ID: n.ID, NS: n, Config: path, Socket: cfg.AdminSocket, Log: filepath.Join(dir, "vigild.log"), c: c}, nil
}

// Node returns node id (1-based).
func (c *Cluster) Node(id int) *Node { return c.Nodes[id-1] }

// Start starts the node's daemon and waits until its admin socket answers.
func (n *Node) Start() error {
	logf, err := os.OpenFile(n.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"--config", n.Config, "--bpf-dir", n.c.Net.BPFDir, "--log-format", "json", "--log-level", "debug"}
	if !n.c.Opts.Interconnect.Enabled() {
		// Without cluster addresses the cluster transport runs on the first private link.
		args = append(args, "--raft-listen", netip.AddrPortFrom(netns.Addr(n.ID, netns.Private0), RaftPort).String())
		for _, p := range n.c.Nodes {
			if p.ID != n.ID {
				args = append(args, "--raft-peer", fmt.Sprintf("%d=%s", p.ID, netip.AddrPortFrom(netns.Addr(p.ID, netns.Private0), RaftPort)))
			}
		}
	}
	if slices.Contains(n.c.Opts.Witnesses, n.ID) {
		args = append(args, "--witness")
	}
	if n.c.Opts.RaftTick != 0 {
		args = append(args, "--raft-tick", n.c.Opts.RaftTick.String())
	}
	args = append(args, n.c.Opts.AllArgs...)
	args = append(args, n.c.Opts.Args[n.ID]...)
	args = append(args, n.Args...)
	// The daemon is started the way systemd starts it (Type=notify): it must say READY=1 on
	// $NOTIFY_SOCKET, and by then its admin socket must answer.
	notifyPath := filepath.Join(filepath.Dir(n.Config), fmt.Sprintf("notify-%d.sock", n.ID))
	os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("node %d: notify socket: %w", n.ID, err)
	}
	defer os.Remove(notifyPath)
	defer notify.Close()
	cmd := n.NS.Command(filepath.Join(n.c.bin, "vigild"), args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := n.NS.Start(cmd)
	if err != nil {
		return err
	}
	n.proc = p
	// Loading and verifying the eBPF programs takes well under a second on a quiet machine and
	// tens of seconds on a machine loaded by parallel test packages: a generous bound.
	const startTimeout = 60 * time.Second
	deadline := time.Now().Add(startTimeout)
	buf := make([]byte, 512)
	for {
		notify.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if k, err := notify.Read(buf); err == nil && slices.Contains(strings.Split(string(buf[:k]), "\n"), "READY=1") {
			cl, err := admin.Dial(n.Socket)
			if err == nil {
				_, err = cl.Status()
				cl.Close()
			}
			if err != nil {
				return fmt.Errorf("vigild on node %d said READY=1 but its admin socket does not answer: %w", n.ID, err)
			}
			return nil
		}
		select {
		case <-p.Done():
			n.proc = nil
			b, _ := os.ReadFile(n.Log)
			return fmt.Errorf("vigild on node %d exited: %v\n%s", n.ID, p.Wait(), tail(string(b), 20))
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(n.Log)
			return fmt.Errorf("vigild on node %d: no READY=1 on its notify socket after %v\n%s", n.ID, startTimeout, tail(string(b), 20))
		}
	}
}

// Proc returns the running daemon's process, nil if none was started.
func (n *Node) Proc() *netns.Proc { return n.proc }

// Stop sends SIGTERM and waits for a clean exit.
func (n *Node) Stop() error {
	if n.proc == nil {
		return nil
	}
	err := n.proc.Terminate(10 * time.Second)
	n.proc = nil
	if err != nil {
		b, _ := os.ReadFile(n.Log)
		return fmt.Errorf("%w\n%s", err, tail(string(b), 5))
	}
	return nil
}

// Kill kills the daemon with SIGKILL: its pinned XDP program and timer stay in the kernel.
func (n *Node) Kill() error {
	if n.proc == nil {
		return nil
	}
	err := n.proc.Kill()
	n.proc = nil
	return err
}

// Admin dials the node's admin socket.
func (n *Node) Admin() (*admin.Client, error) { return admin.Dial(n.Socket) }

// Peer returns what this node's daemon reports about node id.
func (n *Node) Peer(id int) (admin.NodeStatus, error) {
	cl, err := n.Admin()
	if err != nil {
		return admin.NodeStatus{}, err
	}
	defer cl.Close()
	nodes, err := cl.Nodes()
	if err != nil {
		return admin.NodeStatus{}, err
	}
	for _, s := range nodes {
		if int(s.ID) == id {
			return s, nil
		}
	}
	return admin.NodeStatus{}, fmt.Errorf("node %d does not report node %d", n.ID, id)
}

// Vigil runs the vigil CLI against this node's daemon, from inside its namespace.
func (n *Node) Vigil(ctx context.Context, args ...string) (string, error) {
	return n.NS.Run(ctx, filepath.Join(n.c.bin, "vigil"), append([]string{"--socket", n.Socket}, args...)...)
}

// Close stops every daemon (SIGTERM, so nothing stays pinned) and removes the topology.
func (c *Cluster) Close() error {
	var errs []error
	for _, n := range c.Nodes {
		if n.proc != nil {
			if err := n.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop node %d: %w", n.ID, err))
			}
		}
	}
	return errors.Join(append(errs, c.Net.Close())...)
}

// LogEvent is one transition a daemon logged.
type LogEvent struct {
	Msg      string `json:"msg"`
	Peer     int    `json:"peer"`
	Link     *int   `json:"link"`
	State    string `json:"state"`
	Was      string `json:"was"`
	KernelNS uint64 `json:"kernel_ns"` // CLOCK_MONOTONIC of the sweep that saw it
	// LastSeenNS is the CLOCK_MONOTONIC time of the last valid frame on the link (link events)
	// or on any link (peer and jeopardy events); zero if none was ever seen.
	LastSeenNS uint64 `json:"last_seen_ns"`
	LinksUp    int    `json:"links_up"`
	Line       int    `json:"-"` // line number in the log
}

// Events returns the transitions node n has logged after line `from` (a LogLines mark).
func (n *Node) Events(from int) ([]LogEvent, error) {
	f, err := os.Open(n.Log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LogEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if line <= from || !strings.Contains(sc.Text(), `"kernel_ns"`) {
			continue
		}
		var ev LogEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			continue
		}
		ev.Line = line
		out = append(out, ev)
	}
	return out, sc.Err()
}

// WaitEvent waits until node n logs a transition after line `from` for which match is true.
func (n *Node) WaitEvent(from int, timeout time.Duration, match func(LogEvent) bool) (LogEvent, error) {
	deadline := time.Now().Add(timeout)
	for {
		evs, err := n.Events(from)
		if err != nil {
			return LogEvent{}, err
		}
		for _, ev := range evs {
			if match(ev) {
				return ev, nil
			}
		}
		if time.Now().After(deadline) {
			return LogEvent{}, fmt.Errorf("node %d: no matching event within %v (%d events since line %d)", n.ID, timeout, len(evs), from)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// LogLines returns the number of lines in node n's log, a mark for Events and WaitEvent.
func (n *Node) LogLines() int {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}
