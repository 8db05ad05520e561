package main

import (
	"cmp"
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
	"slices"
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
	size, runtime, rounds := int64(1<<30), 5*time.Second, 3
	if cfg.quick {
		size, runtime, rounds = 256<<20, 2*time.Second, 1
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
	// VIGIL_DRD_SYSTEMS (a comma-separated list of system names) measures only those, and
	// VIGIL_DRD_WORKLOADS (randread_qd1,...) only those workloads, for quick comparisons while
	// working on one path.
	filtered := os.Getenv("VIGIL_DRD_SYSTEMS") != "" || os.Getenv("VIGIL_DRD_WORKLOADS") != ""
	if only := os.Getenv("VIGIL_DRD_SYSTEMS"); only != "" {
		names := strings.Split(only, ",")
		systems = slices.DeleteFunc(systems, func(s system) bool { return !slices.Contains(names, s.name) })
	}
	// The machine is shared and noisy: every workload is measured in several rounds, each
	// round running every system once in turn, and the median round of each system counts.
	m := metrics{}
	rows := [][]string{{"system", "workload", "IOPS", "p50 us", "p99 us", "vs raw", "rounds (IOPS)"}}
	for _, rw := range []string{"randread", "randwrite"} {
		for _, qd := range []int{1, 32} {
			if w := os.Getenv("VIGIL_DRD_WORKLOADS"); w != "" && !slices.Contains(strings.Split(w, ","), fmt.Sprintf("%s_qd%d", rw, qd)) {
				continue
			}
			results := make([][]ioResult, len(systems))
			for range rounds {
				for i, s := range systems {
					r, err := s.run(rw, qd)
					if err != nil {
						return nil, fmt.Errorf("%s %s qd%d: %w", s.name, rw, qd, err)
					}
					results[i] = append(results[i], r)
				}
			}
			var base float64
			for i, s := range systems {
				r := medianResult(results[i])
				if s.name == "fio_raw" {
					base = r.iops
				}
				key := fmt.Sprintf("drd_%s_%s_qd%d", s.name, rw, qd)
				m[key+"_iops"] = math.Round(r.iops)
				m[key+"_p50_us"] = r.p50
				m[key+"_p99_us"] = r.p99
				ratio := r.iops / base
				if base > 0 {
					m[key+"_ratio_to_raw"] = math.Round(ratio*1000) / 1000
				}
				var each []string
				for _, x := range results[i] {
					each = append(each, fmt.Sprintf("%.0f", x.iops))
				}
				rows = append(rows, []string{s.label, fmt.Sprintf("%s qd%d", rw, qd), fmt.Sprintf("%.0f", r.iops),
					fmt.Sprintf("%.1f", r.p50), fmt.Sprintf("%.1f", r.p99), fmt.Sprintf("%.2f", ratio), strings.Join(each, " ")})
			}
		}
	}
	table(out, rows)
	for _, rw := range []string{"randread", "randwrite"} {
		for _, qd := range []int{1, 32} {
			k := fmt.Sprintf("_%s_qd%d_iops", rw, qd)
			if r, q := m["drd_drd_remote"+k], m["drd_qemu_nbd"+k]; r > 0 && q > 0 {
				m[fmt.Sprintf("drd_remote_vs_qemu_nbd_%s_qd%d", rw, qd)] = math.Round(r/q*100) / 100
				fmt.Fprintf(out, "DRD remote / qemu-nbd, %s qd%d: %.2f\n", rw, qd, r/q)
			}
		}
	}
	// The plot: IOPS per system, one panel per queue depth.
	var names []string
	var panels []barPanel
	for _, qd := range []int{1, 32} {
		p := barPanel{title: fmt.Sprintf("queue depth %d", qd), groups: []string{"4 KiB random read", "4 KiB random write"}}
		for _, s := range systems {
			var vs []float64
			for _, rw := range []string{"randread", "randwrite"} {
				v, ok := m[fmt.Sprintf("drd_%s_%s_qd%d_iops", s.name, rw, qd)]
				if !ok {
					v = math.NaN()
				}
				vs = append(vs, v)
			}
			p.values = append(p.values, vs)
		}
		panels = append(panels, p)
	}
	for _, s := range systems {
		names = append(names, s.label)
	}
	// A restricted run draws its plot in the temporary directory, like a quick one, so that it
	// does not replace the recorded plot of a full run.
	plot, err := plotFile("drd", cfg.quick || filtered)
	if err != nil {
		return nil, err
	}
	title := fmt.Sprintf("DRD against fio raw, qemu-nbd and nbdkit: IOPS, median of %d rounds of %v (%s UTC)",
		rounds, runtime, time.Now().UTC().Format("2006-01-02 15:04"))
	if err := os.WriteFile(plot, []byte(barSVG(title, "IOPS", names, panels)), 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "plot written to %s\n", plot)
	return m, nil
}

// ioResult is one measurement: IOPS and completion latency quantiles in microseconds.
type ioResult struct{ iops, p50, p99 float64 }

// medianResult returns the result with the median IOPS.
func medianResult(rs []ioResult) ioResult {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b ioResult) int { return cmp.Compare(a.iops, b.iops) })
	return sorted[len(sorted)/2]
}

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

// runDRDClient drives a DRD device at queue depth qd for d (the synchronous Do at depth 1, the
// asynchronous API above) and measures each call from start to completion.
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
	us := func(x time.Duration) float64 { return float64(x.Nanoseconds()) / 1000 }
	if qd == 1 {
		// Queue depth 1 is a synchronous caller (as fio is at iodepth 1): Do, which on the
		// remote path reads the reply in the calling goroutine.
		c, err := dev.NewCall(4096)
		if err != nil {
			return ioResult{}, err
		}
		defer dev.FreeCall(c)
		rand.Read(c.Buf)
		c.Op = op
		var lat sample
		var errs []error
		t0 := time.Now()
		for end := t0.Add(d); time.Now().Before(end); {
			c.Offset = mrand.Int64N(blocks) * 4096
			t := time.Now()
			dev.Do(c)
			lat = append(lat, time.Since(t))
			if c.Err != nil {
				if errs = append(errs, c.Err); len(errs) > 10 {
					return ioResult{}, errors.Join(errs...)
				}
			}
		}
		elapsed := time.Since(t0)
		return ioResult{iops: float64(len(lat)) / elapsed.Seconds(), p50: us(lat.quantile(0.5)), p99: us(lat.quantile(0.99))}, errors.Join(errs...)
	}
	done := make(chan *drd.Call, qd)
	started := make(map[*drd.Call]time.Time, qd)
	for range qd {
		c, err := dev.NewCall(4096) // on the local path the disk reads into and writes from it
		if err != nil {
			return ioResult{}, err
		}
		defer dev.FreeCall(c)
		rand.Read(c.Buf)
		c.Op, c.Offset, c.Done = op, mrand.Int64N(blocks)*4096, done
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
	return ioResult{iops: float64(len(lat)) / elapsed.Seconds(), p50: us(lat.quantile(0.5)), p99: us(lat.quantile(0.99))}, errors.Join(errs...)
}
