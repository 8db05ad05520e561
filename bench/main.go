// Command bench runs Vigil's benchmarks against real processes in the netns cluster harness.
//
//	go run ./bench [-quick] [-json FILE] [-soak DURATION] NAME|all
//
// Each benchmark prints a table on stdout; -json writes a flat JSON object of metric name to
// number, the names saying what, where and the unit (netns_build_3node_p99_ms). -quick makes a
// short run of a few minutes at most; -soak sets the length of each false-positive soak of the
// heartbeat benchmark. Benchmarks need root.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"
)

// benchmark is one named benchmark. It writes its table to out and returns its metrics.
type benchmark struct {
	help string
	run  func(cfg config, out io.Writer) (metrics, error)
}

type config struct {
	quick bool
	soak  time.Duration // length of each false-positive soak; zero: the benchmark's default
}

// metrics maps a metric name to its value.
type metrics map[string]float64

var benchmarks = map[string]benchmark{
	"drd":          {"DRD 4 KiB random i/o at QD1/QD32: raw fio, local and remote paths, qemu-nbd, nbdkit, DRD NBD", runDRD},
	"harness":      {"netns cluster build and teardown time, carrier-loss notification latency", runHarness},
	"heartbeat":    {"failure detection latency, false positives under starvation, vigild CPU cost", runHeartbeat},
	"interconnect": {"message gap, loss and latency over the transport while the carrying link is cut; TCX cost", runInterconnect},
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "short run (a few minutes at most)")
	jsonPath := fs.String("json", "", "write the metrics as a flat JSON object to this file")
	soak := fs.Duration("soak", 0, "length of each false-positive soak of the heartbeat benchmark (default 10m, 1m with -quick)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run ./bench [-quick] [-json FILE] [-soak DURATION] NAME|all")
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "benchmarks:")
		for _, name := range slices.Sorted(maps.Keys(benchmarks)) {
			fmt.Fprintf(fs.Output(), "  %-12s %s\n", name, benchmarks[name].help)
		}
	}
	// Flags may come before or after the name.
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("no benchmark named")
	}
	name := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	names := []string{name}
	if name == "all" {
		names = slices.Sorted(maps.Keys(benchmarks))
	} else if _, ok := benchmarks[name]; !ok {
		fs.Usage()
		return fmt.Errorf("unknown benchmark %q", name)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("benchmarks run real processes in network namespaces: run as root")
	}
	all := metrics{}
	for _, n := range names {
		fmt.Fprintf(out, "== %s (quick=%v)\n", n, *quick)
		m, err := benchmarks[n].run(config{quick: *quick, soak: *soak}, out)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		maps.Copy(all, m)
	}
	if *jsonPath != "" {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", *jsonPath, err)
		}
		fmt.Fprintf(out, "metrics written to %s\n", *jsonPath)
	}
	return nil
}

// table writes rows of columns aligned, the first row being the header.
func table(out io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			fmt.Fprintf(&b, "%-*s  ", widths[i], c)
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), " "))
	}
}
