// Command vigil-drd is the standalone DRD server: it serves DRD devices given on the command
// line, without a cluster, to local clients (shared-memory rings on a unix socket), remote
// clients (block shipping on a framed TCP socket) and NBD clients; in a cluster, vigild serves
// the devices of the cluster database (vigil drd). All the logic is in drd/. It also runs the
// DRD verifier as a client (vigil-drd verify), which finds the serving node through the local
// vigild with --vigild.
//
//	vigil-drd serve --device db0=/dev/vdb --epoch-file /var/lib/vigil/drd.epoch \
//	    --local /run/vigil/drd.sock --listen 198.18.1.1:7790 --nbd-unix /run/vigil/nbd.sock
//	vigil-drd verify --device db0 --local /run/vigil/drd.sock --connect 198.18.1.1:7790 --duration 30s
//	vigil-drd verify --device db0 --vigild /run/vigil/vigild.sock --duration 30s
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"vigil/control/admin"
	"vigil/drd"
	"vigil/drd/nbd"
	"vigil/drd/server"
	"vigil/drd/verify"
	"vigil/drd/wire"
)

// CLI is the command tree.
type CLI struct {
	Serve  ServeCmd  `cmd:"" help:"Serve DRD devices until SIGTERM or SIGINT."`
	Verify VerifyCmd `cmd:"" help:"Run the DRD verifier against a served device and check every acknowledged write."`
}

// ServeCmd serves devices.
type ServeCmd struct {
	Device     []string      `required:"" help:"A device to serve, NAME=PATH (a file or block device on a file system with O_DIRECT). Repeatable." placeholder:"NAME=PATH"`
	EpochFile  string        `required:"" type:"path" help:"File holding the last epoch; the server takes the next one and writes it back (durably) before serving. Share it between the nodes that can serve the devices." placeholder:"FILE"`
	Local      string        `type:"path" help:"Unix socket (SOCK_SEQPACKET) of the shared-memory local path." placeholder:"PATH"`
	Listen     string        `help:"TCP address of the remote path (framed block shipping)." placeholder:"ADDR:PORT"`
	NBDUnix    string        `name:"nbd-unix" type:"path" help:"Unix socket of the NBD export." placeholder:"PATH"`
	NBDTCP     string        `name:"nbd-tcp" help:"TCP address of the NBD export (loopback or a private network: NBD has no TLS here)." placeholder:"ADDR:PORT"`
	QueueDepth int           `default:"64" help:"Requests in flight per remote or NBD session."`
	SlotSize   int           `default:"262144" help:"Largest request of a remote or NBD session, bytes."`
	Sync       bool          `help:"Use the synchronous pread/pwrite engine instead of io_uring."`
	Grace      time.Duration `default:"5s" help:"How long SIGTERM waits for requests in flight."`
}

func parseDevices(specs []string) ([][2]string, error) {
	var out [][2]string
	for _, s := range specs {
		name, path, ok := strings.Cut(s, "=")
		if !ok || name == "" || path == "" {
			return nil, fmt.Errorf("--device %q: want NAME=PATH", s)
		}
		out = append(out, [2]string{name, path})
	}
	return out, nil
}

// nextEpoch reads the epoch file, increments it and writes it back durably.
func nextEpoch(path string) (uint64, error) {
	var last uint64
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("epoch file: %w", err)
	default:
		if last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return 0, fmt.Errorf("epoch file %s: %w", path, err)
		}
	}
	epoch := last + 1
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("epoch file: %w", err)
	}
	_, werr := fmt.Fprintf(f, "%d\n", epoch)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("epoch file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("epoch file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return epoch, nil
}

// removeStaleSocket removes a socket left at path by a killed predecessor; anything else at
// path is left alone and refused (a mistyped flag must not delete a file).
func removeStaleSocket(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket (%v); not removing it", path, st.Mode().Type())
	}
	return os.Remove(path)
}

// Run serves until a signal.
func (c *ServeCmd) Run(log *slog.Logger) error {
	specs, err := parseDevices(c.Device)
	if err != nil {
		return err
	}
	if c.Local == "" && c.Listen == "" && c.NBDUnix == "" && c.NBDTCP == "" {
		return errors.New("nothing to serve on: give --local, --listen, --nbd-unix or --nbd-tcp")
	}
	var devs []*server.Device
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	for _, s := range specs {
		d, err := server.OpenDevice(s[0], s[1])
		if err != nil {
			return err
		}
		devs = append(devs, d)
	}
	epoch, err := nextEpoch(c.EpochFile)
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Devices: devs, Epoch: epoch, QueueDepth: c.QueueDepth,
		SlotSize: c.SlotSize, DisableURing: c.Sync, Logger: log})
	if err != nil {
		return err
	}
	nbdSrv := nbd.NewServer(srv, log)
	errc := make(chan error, 4)
	if c.Local != "" {
		if err := removeStaleSocket(c.Local); err != nil {
			return fmt.Errorf("--local: %w", err)
		}
		l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: c.Local, Net: "unixpacket"})
		if err != nil {
			return fmt.Errorf("--local: %w", err)
		}
		go func() { errc <- srv.ServeLocal(l) }()
	}
	if c.Listen != "" {
		l, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		go func() { errc <- srv.ServeNet(l) }()
	}
	if c.NBDUnix != "" {
		if err := removeStaleSocket(c.NBDUnix); err != nil {
			return fmt.Errorf("--nbd-unix: %w", err)
		}
		l, err := net.Listen("unix", c.NBDUnix)
		if err != nil {
			return fmt.Errorf("--nbd-unix: %w", err)
		}
		go func() { errc <- nbdSrv.Serve(l) }()
	}
	if c.NBDTCP != "" {
		l, err := net.Listen("tcp", c.NBDTCP)
		if err != nil {
			return fmt.Errorf("--nbd-tcp: %w", err)
		}
		go func() { errc <- nbdSrv.Serve(l) }()
	}
	log.Info("drd serving", "epoch", epoch, "devices", c.Device)
	fmt.Printf("ready epoch=%d\n", epoch)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("drd stopping", "signal", s)
	case err = <-errc:
	}
	done := make(chan error, 1)
	go func() { done <- errors.Join(nbdSrv.Close(), srv.Close()) }()
	select {
	case cerr := <-done:
		return errors.Join(err, cerr)
	case <-time.After(c.Grace):
		return errors.Join(err, fmt.Errorf("requests still in flight after %v", c.Grace))
	}
}

// VerifyCmd runs the verifier as a client.
type VerifyCmd struct {
	Device     string        `required:"" help:"Device name."`
	Local      string        `type:"path" help:"Unix socket of the local path, tried first." placeholder:"PATH"`
	Connect    []string      `help:"TCP addresses of the remote path, tried in turn (the nodes that may serve the device)." placeholder:"ADDR:PORT"`
	Vigild     string        `type:"path" help:"Admin socket of this node's vigild: find the serving node in the cluster database at every (re)connection, instead of --local and --connect." placeholder:"SOCKET"`
	FirstBlock uint64        `default:"0" help:"First block of the range this verifier owns."`
	Blocks     uint64        `default:"1024" help:"Number of blocks this verifier owns."`
	Workers    int           `default:"8" help:"Concurrent workers."`
	Duration   time.Duration `default:"10s" help:"How long to run before the final check (SIGINT or SIGTERM ends the run earlier)."`
	Reconnect  time.Duration `default:"30s" help:"How long to keep reconnecting to a lost server."`
}

// Run runs the workload and the final check and prints the result as JSON.
func (c *VerifyCmd) Run(log *slog.Logger) error {
	opt := drd.Options{LocalSocket: c.Local, ReconnectTimeout: c.Reconnect, Logger: log, QueueDepth: c.Workers * 2}
	if len(c.Connect) > 0 {
		opt.Dial = DialAny(c.Connect)
	}
	if c.Vigild != "" {
		if c.Local != "" || len(c.Connect) > 0 {
			return errors.New("--vigild finds the device's server: give neither --local nor --connect with it")
		}
		loc, err := locate(c.Vigild, c.Device)
		if err != nil {
			return err
		}
		opt.LocalSocket, opt.Dial = loc.Local, DialVigild(c.Vigild, c.Device)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	dev, err := drd.Open(ctx, c.Device, opt)
	cancel()
	if err != nil {
		return err
	}
	defer dev.Close()
	v, err := verify.New(dev, verify.Config{FirstBlock: c.FirstBlock, Blocks: c.Blocks, Workers: c.Workers, Seed: uint64(time.Now().UnixNano())})
	if err != nil {
		return err
	}
	// SIGINT or SIGTERM ends the run early; the final check still runs.
	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel = context.WithTimeout(sigCtx, c.Duration)
	defer cancel()
	runErr := v.Run(ctx)
	checkErr := v.Check()
	json.NewEncoder(os.Stdout).Encode(map[string]any{"writes": v.Stats.Writes.Load(), "reads": v.Stats.Reads.Load(),
		"failed": v.Stats.Failed.Load(), "blocks_written": v.Acked(), "epoch": dev.Epoch(), "path": dev.Path()})
	return errors.Join(runErr, checkErr)
}

// locate asks vigild where device is served.
func locate(socket, device string) (admin.DRDLocation, error) {
	cl, err := admin.Dial(socket)
	if err != nil {
		return admin.DRDLocation{}, fmt.Errorf("vigild at %s: %w", socket, err)
	}
	defer cl.Close()
	loc, err := cl.DRDLocate(device)
	if err != nil {
		return loc, fmt.Errorf("locate drd device %s: %w", device, err)
	}
	return loc, nil
}

// DialVigild returns a dialer that asks vigild (its admin socket) where the device is served
// now, and opens the remote path to that node.
func DialVigild(socket, device string) func(ctx context.Context) (wire.Conn, error) {
	return func(ctx context.Context) (wire.Conn, error) {
		loc, err := locate(socket, device)
		if err != nil {
			return nil, err
		}
		if loc.Remote == "" || !loc.Ready {
			return nil, fmt.Errorf("drd device %s is not served now (node %d, epoch %d, ready %v)", device, loc.Node, loc.Epoch, loc.Ready)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", loc.Remote)
		if err != nil {
			return nil, err
		}
		return wire.NewFrameConn(c), nil
	}
}

// DialAny returns a dialer that tries each TCP address in turn.
func DialAny(addrs []string) func(ctx context.Context) (wire.Conn, error) {
	return func(ctx context.Context) (wire.Conn, error) {
		var errs []error
		for _, a := range addrs {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a)
			if err == nil {
				return wire.NewFrameConn(c), nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
}

func main() {
	var cli CLI
	kctx := kong.Parse(&cli, kong.Name("vigil-drd"),
		kong.Description("Interim standalone DRD server and verifier (until vigild serves DRD devices from the cluster database)."))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := kctx.Run(log); err != nil {
		fmt.Fprintln(os.Stderr, "vigil-drd:", err)
		os.Exit(1)
	}
}
