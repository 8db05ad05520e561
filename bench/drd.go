package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"vigil/drd"
	"vigil/drd/uring"
	"vigil/drd/wire"
	"vigil/test/netns"
)

// runDRD measures 4 KiB random reads and writes at queue depth 1 and 32 on one backing file
// (ext4 under /var/tmp, O_DIRECT) through: fio with io_uring and direct=1 on the file (the raw
// baseline); the DRD local path (shared-memory rings, the server in its own process); the DRD
// remote path between two netns nodes (block shipping over TCP on a private link); and over the
// same link, fio's nbd engine against qemu-nbd (--cache=none --aio=io_uring), nbdkit's file
// plugin and DRD's own NBD export.
func runDRD(cfg config, out io.Writer) (metrics, error) {
	for _, tool := range []string{"fio", "qemu-nbd", "nbdkit"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not installed (Debian packages fio, qemu-utils, nbdkit; see .ci/run)", tool)
		}
	}
	size, runtime := int64(1<<30), 10*time.Second
	if cfg.quick {
		size, runtime = 256<<20, 3*time.Second
	}
	dir, err := os.MkdirTemp("/var/tmp", "drd-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	backing := filepath.Join(dir, "disk")
	if err := fillRandom(backing, size); err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "vigil-drd")
	if b, err := exec.Command("go", "build", "-o", bin, "vigil/cmd/vigil-drd").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build vigil-drd: %v\n%s", err, b)
	}
	c, err := netns.Build(netns.Options{Nodes: 2})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	n1, n2 := c.Node(1), c.Node(2)
	host := netns.Addr(1, netns.Private0).String()
	sock := filepath.Join(dir, "drd.sock")
	drdAddr, drdNBD, qemuPort, kitPort := host+":7790", host+":10811", "10809", "10810"
	srv, err := n1.Start(n1.Command(bin, "serve", "--device", "d0="+backing, "--epoch-file", filepath.Join(dir, "epoch"),
		"--local", sock, "--listen", drdAddr, "--nbd-tcp", drdNBD))
	if err != nil {
		return nil, err
	}
	defer srv.Terminate(5 * time.Second)
	qemu, err := n1.Start(n1.Command("qemu-nbd", "-f", "raw", "--cache=none", "--aio=io_uring", "-b", host, "-p", qemuPort,
		"-x", "d0", "--persistent", "--shared=8", backing))
	if err != nil {
		return nil, err
	}
	defer qemu.Terminate(5 * time.Second)
	kit, err := n1.Start(n1.Command("nbdkit", "-f", "-i", host, "-p", kitPort, "file", "file="+backing, "cache=none"))
	if err != nil {
		return nil, err
	}
	defer kit.Terminate(5 * time.Second)
	dialRemote := func(ctx context.Context) (wire.Conn, error) {
		var conn net.Conn
		err := n2.Do(func() error {
			var d net.Dialer
			var err error
			conn, err = d.DialContext(ctx, "tcp", drdAddr)
			return err
		})
		if err != nil {
			return nil, err
		}
		return wire.NewFrameConn(conn), nil
	}
	if err := waitUp(func() error { return tryOpen(drd.Options{LocalSocket: sock}) }); err != nil {
		return nil, fmt.Errorf("drd server: %w", err)
	}
	if err := waitUp(func() error { return tryOpen(drd.Options{Dial: dialRemote}) }); err != nil {
		return nil, fmt.Errorf("drd remote path: %w", err)
	}
	for _, port := range []string{qemuPort, kitPort} {
		if err := waitUp(func() error {
			return n2.Do(func() error {
				c, err := net.DialTimeout("tcp", host+":"+port, time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
		}); err != nil {
			return nil, fmt.Errorf("nbd server on port %s: %w", port, err)
		}
	}

	type system struct {
		name, label string
		run         func(rw string, qd int) (ioResult, error)
	}
	fioNBD := func(uri string) func(string, int) (ioResult, error) {
		return func(rw string, qd int) (ioResult, error) {
			return runFio(func(args ...string) ([]byte, error) {
				ctx, cancel := context.WithTimeout(context.Background(), runtime+time.Minute)
				defer cancel()
				o, err := n2.Run(ctx, "fio", args...)
				return []byte(o), err
			}, rw, qd, runtime, size, "--ioengine=nbd", "--uri="+uri)
		}
	}
	systems := []system{
		{"fio_raw", "fio io_uring direct=1 (raw baseline)", func(rw string, qd int) (ioResult, error) {
			return runFio(func(args ...string) ([]byte, error) { return exec.Command("fio", args...).CombinedOutput() },
				rw, qd, runtime, size, "--ioengine=io_uring", "--direct=1", "--filename="+backing)
		}},
		{"drd_local", "DRD local path (shared memory)", func(rw string, qd int) (ioResult, error) {
			return runDRDClient(drd.Options{LocalSocket: sock, QueueDepth: qd}, rw, qd, runtime)
		}},
		{"drd_remote", "DRD remote path (node 2 -> 1)", func(rw string, qd int) (ioResult, error) {
			return runDRDClient(drd.Options{Dial: dialRemote, QueueDepth: qd}, rw, qd, runtime)
		}},
		{"qemu_nbd", "qemu-nbd, fio nbd (node 2 -> 1)", fioNBD("nbd://" + host + ":" + qemuPort + "/d0")},
		{"nbdkit", "nbdkit file, fio nbd (node 2 -> 1)", fioNBD("nbd://" + host + ":" + kitPort)},
		{"drd_nbd", "DRD NBD export, fio nbd (node 2 -> 1)", fioNBD("nbd://" + drdNBD + "/d0")},
	}
	m := metrics{}
	rows := [][]string{{"system", "workload", "IOPS", "p50 us", "p99 us", "vs raw"}}
	for _, rw := range []string{"randread", "randwrite"} {
		for _, qd := range []int{1, 32} {
			var base float64
			for _, s := range systems {
				r, err := s.run(rw, qd)
				if err != nil {
					return nil, fmt.Errorf("%s %s qd%d: %w", s.name, rw, qd, err)
				}
				if s.name == "fio_raw" {
					base = r.iops
				}
				key := fmt.Sprintf("drd_%s_%s_qd%d", s.name, rw, qd)
				m[key+"_iops"] = math.Round(r.iops)
				m[key+"_p50_us"] = r.p50
				m[key+"_p99_us"] = r.p99
				ratio := r.iops / base
				m[key+"_ratio_to_raw"] = math.Round(ratio*1000) / 1000
				rows = append(rows, []string{s.label, fmt.Sprintf("%s qd%d", rw, qd), fmt.Sprintf("%.0f", r.iops),
					fmt.Sprintf("%.1f", r.p50), fmt.Sprintf("%.1f", r.p99), fmt.Sprintf("%.2f", ratio)})
			}
		}
	}
	table(out, rows)
	return m, nil
}

// ioResult is one measurement: IOPS and completion latency quantiles in microseconds.
type ioResult struct{ iops, p50, p99 float64 }

// fillRandom writes size random bytes to path with O_DIRECT, so reads reach the disk (a sparse
// or preallocated file would be answered with zeros without any).
func fillRandom(path string, size int64) error {
	f, _, err := uring.OpenDirect(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, err := uring.AllocAligned(1<<20, 4096)
	if err != nil {
		return err
	}
	defer uring.FreeAligned(buf)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("fill %s: %w", path, err)
		}
	}
	return f.Sync()
}

func waitUp(try func() error) error {
	var err error
	for range 100 {
		if err = try(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func tryOpen(opt drd.Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d, err := drd.Open(ctx, "d0", opt)
	if err != nil {
		return err
	}
	return d.Close()
}

// runFio runs one fio job and reads IOPS and completion latency from its JSON output.
func runFio(run func(args ...string) ([]byte, error), rw string, qd int, runtime time.Duration, size int64, extra ...string) (ioResult, error) {
	args := append([]string{"--name=drd", "--rw=" + rw, "--bs=4k", fmt.Sprintf("--iodepth=%d", qd),
		fmt.Sprintf("--size=%d", size), "--time_based", fmt.Sprintf("--runtime=%ds", int(runtime.Seconds())),
		"--randrepeat=0", "--norandommap", "--output-format=json"}, extra...)
	b, err := run(args...)
	if err != nil {
		return ioResult{}, fmt.Errorf("fio: %v\n%s", err, b)
	}
	// fio may print notes before the JSON document.
	if i := strings.IndexByte(string(b), '{'); i > 0 {
		b = b[i:]
	}
	var doc struct {
		Jobs []map[string]json.RawMessage `json:"jobs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Jobs) == 0 {
		return ioResult{}, fmt.Errorf("fio output: %v\n%s", err, b)
	}
	dir := "read"
	if strings.Contains(rw, "write") {
		dir = "write"
	}
	var st struct {
		IOPS float64 `json:"iops"`
		Clat struct {
			Percentile map[string]float64 `json:"percentile"`
		} `json:"clat_ns"`
	}
	if err := json.Unmarshal(doc.Jobs[0][dir], &st); err != nil {
		return ioResult{}, fmt.Errorf("fio %s stats: %w", dir, err)
	}
	return ioResult{iops: st.IOPS, p50: st.Clat.Percentile["50.000000"] / 1000, p99: st.Clat.Percentile["99.000000"] / 1000}, nil
}

// runDRDClient drives a DRD device with the asynchronous API at queue depth qd for d and
// measures each call from start to completion.
func runDRDClient(opt drd.Options, rw string, qd int, d time.Duration) (ioResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	dev, err := drd.Open(ctx, "d0", opt)
	cancel()
	if err != nil {
		return ioResult{}, err
	}
	defer dev.Close()
	op := wire.OpRead
	if rw == "randwrite" {
		op = wire.OpWrite
	}
	blocks := dev.Size() / 4096
	done := make(chan *drd.Call, qd)
	started := make(map[*drd.Call]time.Time, qd)
	for range qd {
		buf := make([]byte, 4096)
		rand.Read(buf)
		c := &drd.Call{Op: op, Offset: mrand.Int64N(blocks) * 4096, Buf: buf, Done: done}
		started[c] = time.Now()
		dev.Go(c)
	}
	var lat sample
	end := time.Now().Add(d)
	t0 := time.Now()
	var errs []error
	for time.Now().Before(end) {
		c := <-done
		now := time.Now()
		lat = append(lat, now.Sub(started[c]))
		if c.Err != nil {
			errs = append(errs, c.Err)
			if len(errs) > 10 {
				return ioResult{}, errors.Join(errs...)
			}
		}
		c.Offset = mrand.Int64N(blocks) * 4096
		started[c] = now
		dev.Go(c)
	}
	elapsed := time.Since(t0)
	for range qd {
		<-done
	}
	us := func(x time.Duration) float64 { return float64(x.Nanoseconds()) / 1000 }
	return ioResult{iops: float64(len(lat)) / elapsed.Seconds(), p50: us(lat.quantile(0.5)), p99: us(lat.quantile(0.99))}, errors.Join(errs...)
}
