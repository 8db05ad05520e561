package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"vigil/heartbeat"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

// The heartbeat benchmark: detection latency of the heartbeat plane for four faults and two
// profiles, false positives under CPU starvation and a paused daemon on both receive paths,
// and the CPU cost of vigild at 1 kHz. Node 1 observes; nodes 2 and 3 suffer the faults.

const (
	hbMultiplier = 3
	// benchStallTimeout is the stall timeout of the detection clusters: short, so that a killed
	// daemon's "peer down" comes within a run. The soak uses the daemon's default (5 s).
	benchStallTimeout = 200 * time.Millisecond
	eventTimeout      = 5 * time.Second
	steadyTimeout     = 20 * time.Second
	clkTck            = 100 // USER_HZ, the unit of utime and stime in /proc/PID/stat on Linux
)

// hbProfile is a heartbeat profile: one frame per link every interval, multiplier 3.
type hbProfile struct {
	name     string // in metric names: "1ms", "10ms"
	interval time.Duration
	target   time.Duration // acceptance: detection p99 for link down and node cut-off
}

var hbProfiles = []hbProfile{
	{"1ms", time.Millisecond, 5 * time.Millisecond},
	{"10ms", 10 * time.Millisecond, 35 * time.Millisecond},
}

// faultSeries is the measured detection latencies of one fault (and event) in one profile.
type faultSeries struct {
	key      string // in metric names: "linkdown", "daemonkill_stalled", ...
	label    string // in the table and the plot
	event    string // the event node 1 logs
	targeted bool   // the profile's p99 target applies
	lat      sample // event kernel_ns - fault time
	silence  sample // event kernel_ns - last_seen_ns: the detector's own share
	// anomalies counts runs with a transition that should not have happened (a detour
	// through "stalled" for a cut-off node, a peer down after a link fault, ...).
	anomalies int
	// anomaliesAtStall counts the anomalous runs whose unexpected transition came during a vCPU
	// stall the probe measured, or just after one.
	anomaliesAtStall int
	notes            []string // what the anomalies were, a few
	lost             int      // runs repeated because the event never came
	// slow counts the runs over the target (from before the fault was applied), slowAtStall
	// those with a probe stall between the fault and the event.
	slow, slowAtStall int
	detours           int    // runs whose "peer down" came from another state than alive
	inject            sample // how long applying the fault took (the nft run for loss)
	// injectName names inject in the metrics: "netlink", "nft", or "reap" (SIGKILL to reaped).
	injectName string
}

// anomaly records an anomalous run; atStall says whether it came at a vCPU stall.
func (f *faultSeries) anomaly(atStall bool, format string, args ...any) {
	f.anomalies++
	note := fmt.Sprintf(format, args...)
	if atStall {
		f.anomaliesAtStall++
		note += " (at a vCPU stall)"
	}
	if len(f.notes) < 5 {
		f.notes = append(f.notes, note)
	}
}

// early counts the runs whose event came at or before the fault time.
func (f *faultSeries) early() int {
	n := 0
	for _, d := range f.lat {
		if d <= 0 {
			n++
		}
	}
	return n
}

// part reports whether the environment variable VIGIL_BENCH_HEARTBEAT (a comma-separated
// list of detect, soak, soak-ebpf, cpu) selects a part of the benchmark; unset selects all. For
// development only: a recorded run runs all three.
func part(name string) bool {
	v := os.Getenv("VIGIL_BENCH_HEARTBEAT")
	return v == "" || slices.Contains(strings.Split(v, ","), name)
}

func runHeartbeat(cfg config, out io.Writer) (metrics, error) {
	runs, cpuWindow, soak := 50, 60*time.Second, 10*time.Minute
	if cfg.quick {
		runs, cpuWindow, soak = 5, 15*time.Second, time.Minute
	}
	if cfg.soak > 0 {
		soak = cfg.soak
	}
	if _, err := vcluster.Binaries(); err != nil {
		return nil, err
	}
	m := metrics{}

	// 1. Detection latency.
	if part("detect") {
		var panels []cdfPanel
		rows := [][]string{{"profile", "fault", "event", "n", "p50 ms", "p99 ms", "max ms", "silence p99 ms", "target p99", "anomalies (at vCPU stall), lost runs"}}
		var stallNotes []string
		for _, p := range hbProfiles {
			series, stalls, err := detectProfile(p, runs)
			if err != nil {
				return nil, fmt.Errorf("detection at %s x %d: %w", p.interval, hbMultiplier, err)
			}
			n3, longest := 0, time.Duration(0)
			for _, s := range stalls {
				if s.late >= 3*time.Millisecond {
					n3++
				}
				longest = max(longest, s.late)
			}
			m["detect_"+p.name+"_vcpu_stalls_3ms"] = float64(n3)
			m["detect_"+p.name+"_vcpu_stall_max_ms"] = ms(longest)
			stallNotes = append(stallNotes, fmt.Sprintf("%s: the probe saw %d vCPU stalls >= 3 ms during the detection runs, the longest %.1f ms", p.name, n3, ms(longest)))
			panel := cdfPanel{title: fmt.Sprintf("%v × %d (stall timeout %v), %d runs per fault", p.interval, hbMultiplier, benchStallTimeout, runs), target: p.target}
			for _, f := range series {
				target := "-"
				if f.targeted {
					target = fmt.Sprintf("<= %v", p.target)
					if f.lat.quantile(0.99) > p.target {
						target += " MISSED"
					}
				}
				r := f.lat.row(p.name)
				rows = append(rows, []string{r[0], f.label, f.event, r[1], r[2], r[3], r[4],
					fmt.Sprintf("%.3f", ms(f.silence.quantile(0.99))), target, fmt.Sprintf("%d (%d), %d lost", f.anomalies, f.anomaliesAtStall, f.lost)})
				prefix := fmt.Sprintf("detect_%s_%s", f.key, p.name)
				f.lat.record(m, prefix)
				f.silence.record(m, prefix+"_silence")
				m[prefix+"_runs"] = float64(len(f.lat))
				m[prefix+"_anomalies"] = float64(f.anomalies)
				m[prefix+"_anomalies_at_cpu_stall"] = float64(f.anomaliesAtStall)
				m[prefix+"_lost_runs"] = float64(f.lost)
				if f.targeted {
					m[prefix+"_over_target_runs"] = float64(f.slow)
					m[prefix+"_over_target_runs_at_cpu_stall"] = float64(f.slowAtStall)
					if f.slow > 0 {
						stallNotes = append(stallNotes, fmt.Sprintf("%s %s: %d runs over %v even counted from before the fault was applied, %d of them with a vCPU stall between the fault and the event",
							p.name, f.key, f.slow, p.target, f.slowAtStall))
					}
				}
				m[prefix+"_early_runs"] = float64(f.early())
				if f.key == "nodecut" {
					m[prefix+"_detours"] = float64(f.detours)
				}
				if len(f.inject) > 0 {
					m[prefix+"_"+f.injectName+"_p50_ms"] = ms(f.inject.quantile(0.5))
					m[prefix+"_"+f.injectName+"_max_ms"] = ms(f.inject.max())
				}
				cs := cdfSeries{name: f.label + " → " + f.event, values: f.lat, color: cdfColors[len(panel.series)%len(cdfColors)]}
				if f.key == "loss100" {
					cs.name += ", from nft's return"
				}
				panel.series = append(panel.series, cs)
				if f.key == "loss100" {
					// nft commits before it returns: the time since the last frame heard bounds the
					// latency from above.
					panel.series = append(panel.series, cdfSeries{name: f.label + " → " + f.event + ", from the last frame heard",
						values: f.silence, dashed: true, color: cs.color})
				}
			}
			panels = append(panels, panel)
			for _, f := range series {
				for _, n := range f.notes {
					fmt.Fprintf(os.Stderr, "heartbeat: %s %s anomaly: %s\n", p.name, f.key, n)
				}
			}
		}
		fmt.Fprintln(out, "detection latency: fault applied -> node 1's kernel sweep logs the event (kernel_ns);")
		fmt.Fprintln(out, "silence = kernel_ns - last_seen_ns, the time from the last frame heard to the event")
		table(out, rows)
		for _, p := range hbProfiles {
			fmt.Fprintf(out, "%s: fault times: link down and node cut after the netlink call returned (took p50 %.3f ms);\n",
				p.name, m["detect_linkdown_"+p.name+"_netlink_p50_ms"])
			fmt.Fprintf(out, "  loss after nft returned (nft took p50 %.3f ms, max %.3f ms; its commit came earlier: see silence);\n",
				m["detect_loss100_"+p.name+"_nft_p50_ms"], m["detect_loss100_"+p.name+"_nft_max_ms"])
			fmt.Fprintf(out, "  daemon kill when SIGKILL was sent (reaped p50 %.3f ms later)\n", m["detect_daemonkill_stalled_"+p.name+"_reap_p50_ms"])
			fmt.Fprintf(out, "  %.0f of the loss runs logged the link down before nft had returned (negative latency);\n", m["detect_loss100_"+p.name+"_early_runs"])
			fmt.Fprintf(out, "  node cut off: %.0f runs went down through stalled (detours)\n", m["detect_nodecut_"+p.name+"_detours"])
		}
		for _, n := range stallNotes {
			fmt.Fprintln(out, n)
		}

		plotPath, err := plotFile(cfg.quick, "heartbeat.svg")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(plotPath, []byte(cdfSVG("Vigil heartbeat plane: detection latency, 3-node netns cluster of real vigild (node 1 observes)", panels)), 0o644); err != nil {
			return nil, fmt.Errorf("write plot: %w", err)
		}
		fmt.Fprintf(out, "plot written to %s\n\n", plotPath)
	}

	// 2. False positives under starvation.
	if part("soak") || part("soak-ebpf") {
		fpRows := [][]string{{"path", "soak", "pauses", "link down", "peer down", "false total", "target", "in/after a pause", "at a vCPU stall", "neither",
			"vCPU stalls >= 3ms", "longest", "stalled: node 1 (true)", "stalled: others"}}
		var breakdown, stallRates []string
		for _, path := range []struct {
			name     string
			fallback []int
		}{{"ebpf", nil}, {"fallback", []int{1, 2, 3}}} {
			if path.name == "fallback" && !part("soak") {
				continue // VIGIL_BENCH_HEARTBEAT=soak-ebpf
			}
			fmt.Fprintf(os.Stderr, "heartbeat: soak %v on the %s path\n", soak, path.name)
			r, err := soakRun(soak, path.fallback)
			if err != nil {
				return nil, fmt.Errorf("soak on the %s path: %w", path.name, err)
			}
			target := "-"
			if path.name == "ebpf" {
				target = "0"
				if r.linkDown+r.peerDown > 0 {
					target += " MISSED"
				}
			}
			total := r.linkDown + r.peerDown
			fpRows = append(fpRows, []string{path.name, r.duration.Round(time.Second).String(), strconv.Itoa(r.pauses),
				strconv.Itoa(r.linkDown), strconv.Itoa(r.peerDown), strconv.Itoa(total), target,
				strconv.Itoa(r.inPause), strconv.Itoa(r.atCPUStall), strconv.Itoa(r.neither),
				strconv.Itoa(r.cpuStalls), fmt.Sprintf("%.1fms", ms(r.cpuStallMax)), strconv.Itoa(r.stallsOfNode1), strconv.Itoa(r.stallsOther)})
			m["false_positives_"+path.name] = float64(r.linkDown + r.peerDown)
			m["false_positives_"+path.name+"_link_down"] = float64(r.linkDown)
			m["false_positives_"+path.name+"_peer_down"] = float64(r.peerDown)
			m["false_positives_"+path.name+"_in_pause"] = float64(r.inPause)
			m["false_positives_"+path.name+"_pauses"] = float64(r.pauses)
			m["false_positives_"+path.name+"_soak_s"] = r.duration.Seconds()
			m["false_positives_"+path.name+"_at_cpu_stall"] = float64(r.atCPUStall)
			m["false_positives_"+path.name+"_neither"] = float64(r.neither)
			m["false_positives_"+path.name+"_before_start"] = float64(r.beforeStart)
			if r.beforeStart > 0 {
				fmt.Fprintf(out, "%s: %d failure events before the soak started (not counted)\n", path.name, r.beforeStart)
			}
			m["false_positives_"+path.name+"_pause_max_ms"] = ms(r.pauseMax)
			m["soak_"+path.name+"_stalled_node1"] = float64(r.stallsOfNode1)
			m["soak_"+path.name+"_stalled_others"] = float64(r.stallsOther)
			m["soak_"+path.name+"_vcpu_stalls_3ms"] = float64(r.cpuStalls)
			m["soak_"+path.name+"_vcpu_stall_max_ms"] = ms(r.cpuStallMax)
			m["soak_"+path.name+"_vcpu_stalls_3ms_per_min_in_pause"] = r.stallRatePause
			m["soak_"+path.name+"_vcpu_stalls_3ms_per_min_elsewhere"] = r.stallRateElse
			stallRates = append(stallRates, fmt.Sprintf("%s: vCPU stalls >= 3 ms per minute: %.1f in/after pauses, %.1f elsewhere",
				path.name, r.stallRatePause, r.stallRateElse))
			for _, b := range r.breakdown {
				breakdown = append(breakdown, path.name+": "+b)
			}
			tl := filepath.Join(os.TempDir(), "vigil-soak-"+path.name+".txt")
			if err := os.WriteFile(tl, []byte(strings.Join(r.timeline, "\n")+"\n"), 0o644); err != nil {
				return nil, err
			}
			fmt.Fprintf(out, "%s: the %d false events, one per line, with the probe's view: %s\n", path.name, len(r.timeline), tl)
			fmt.Fprintf(out, "%s: per node: sender wake-ups more than an interval late %v (in %v of the 100 ms log windows); sweeps that ran late and opened a catch-up window (per peer) %v, link downs they withheld %v\n",
				path.name, r.lateWakeups, r.senderLate, r.catchup, r.held)
			for i := range r.senderLate {
				m[fmt.Sprintf("soak_%s_sender_late_windows_node%d", path.name, i+1)] = float64(r.senderLate[i])
				m[fmt.Sprintf("soak_%s_sender_late_wakeups_node%d", path.name, i+1)] = float64(r.lateWakeups[i])
				m[fmt.Sprintf("soak_%s_catchup_node%d", path.name, i+1)] = float64(r.catchup[i])
				m[fmt.Sprintf("soak_%s_held_node%d", path.name, i+1)] = float64(r.held[i])
			}
		}
		fmt.Fprintln(out, "false positives: 1ms x 3, stall timeout 5s (default), both CPUs saturated, node 1's vigild")
		fmt.Fprintln(out, "SIGSTOPped for 2s every 5-15s; every link down and peer down logged by any node is false.")
		fmt.Fprintln(out, "A SCHED_FIFO 90 probe thread per CPU (1 ms sleeps) measures vCPU stalls. An event counts")
		fmt.Fprintln(out, "\"at a vCPU stall\" when it falls in a wake-up >= 2 ms late or within 4 ms after one, \"in/after a pause\" when node 1")
		fmt.Fprintln(out, "was stopped or had resumed less than 53 ms before (an event can be both)")
		table(out, fpRows)
		for _, l := range stallRates {
			fmt.Fprintln(out, l)
		}
		if len(breakdown) > 0 {
			fmt.Fprintln(out, "breakdown (observer: event about peer [link] x count):")
			for _, b := range breakdown {
				fmt.Fprintln(out, "  "+b)
			}
		}
		fmt.Fprintln(out)
	}

	// 3. CPU cost.
	if !part("cpu") {
		return m, nil
	}
	cpuRows := [][]string{{"path", "network", "window", "node 1 %", "node 2 %", "node 3 %", "p50 %", "max %", "target",
		"sender thread % (p50)", "other threads % (p50)", "ticks % (p50)", "napi threads %", "softirq % (all CPUs)", "1 kHz sleep floor %"}}
	for _, path := range []struct {
		name     string
		fallback []int
		threaded bool
	}{{"ebpf", nil, false}, {"ebpf_threaded_napi", nil, true}, {"fallback", []int{1, 2, 3}, false}} {
		fmt.Fprintf(os.Stderr, "heartbeat: CPU cost on the %s path over %v\n", path.name, cpuWindow)
		r, err := cpuCost(cpuWindow, path.fallback, path.threaded)
		if err != nil {
			return nil, fmt.Errorf("cpu cost on the %s path: %w", path.name, err)
		}
		p50, mx := median(r.perNode), slices.Max(r.perNode)
		name := "vigild_cpu_1khz"
		target := "< 2%"
		switch {
		case path.name != "ebpf":
			name += "_" + path.name
			target = "-"
		case mx >= 2:
			target += " MISSED"
		default:
			target += " met"
		}
		network := "softirq inline"
		if path.threaded {
			network = "threaded NAPI"
		}
		m[name+"_percent_p50"] = p50
		m[name+"_percent_max"] = mx
		m[name+"_sender_percent_p50"] = median(r.sender)
		m[name+"_other_threads_percent_p50"] = median(r.other)
		m[name+"_ticks_percent_p50"] = median(r.ticks)
		m[name+"_napi_threads_percent"] = r.napi
		m[name+"_softirq_percent"] = r.softirq
		m[name+"_sleep_floor_percent"] = r.floor
		row := []string{path.name, network, cpuWindow.String()}
		for _, v := range r.perNode {
			row = append(row, fmt.Sprintf("%.2f", v))
		}
		row = append(row, fmt.Sprintf("%.2f", p50), fmt.Sprintf("%.2f", mx), target,
			fmt.Sprintf("%.2f", median(r.sender)), fmt.Sprintf("%.2f", median(r.other)),
			fmt.Sprintf("%.2f", median(r.ticks)), fmt.Sprintf("%.2f", r.napi), fmt.Sprintf("%.2f", r.softirq),
			fmt.Sprintf("%.2f", r.floor))
		cpuRows = append(cpuRows, row)
	}
	fmt.Fprintln(out, "CPU cost of vigild at 1 kHz, 2 peers x 2 links, % of one core: the sum over all the daemon's threads of")
	fmt.Fprintln(out, "the first field of /proc/PID/task/TID/schedstat (ns on CPU, exact); the sender is its SCHED_FIFO 40 thread;")
	fmt.Fprintln(out, "ticks = utime+stime from /proc/PID/stat (sampled at the 250 Hz tick); napi threads = the hub ports'")
	fmt.Fprintln(out, "NAPI kernel threads (the simulated switch, when threaded); softirq is system-wide, from /proc/stat;")
	fmt.Fprintln(out, "sleep floor = a SCHED_FIFO thread of the bench that only sleeps to 1 ms deadlines, same window")
	table(out, cpuRows)
	return m, nil
}

// plotFile is where a plot goes: bench/NAME in the module for a full run, a temporary file for
// a quick one (so that it does not replace the recorded plot).
func plotFile(quick bool, name string) (string, error) {
	if quick {
		return filepath.Join(os.TempDir(), "vigil-quick-"+name), nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the vigil module")
	}
	return filepath.Join(filepath.Dir(mod), "bench", name), nil
}

// detectProfile runs every fault `runs` times in one cluster of the profile and returns the
// series in table order.
func detectProfile(p hbProfile, runs int) (_ []*faultSeries, stalls []cpuStall, err error) {
	c, err := vcluster.Start(vcluster.Options{Nodes: 3, Interval: p.interval, Multiplier: hbMultiplier, StallTimeout: benchStallTimeout})
	if err != nil {
		return nil, nil, err
	}
	d := &detection{c: c, p: p}
	defer c.Close()
	if err := d.waitSteady(); err != nil {
		return nil, nil, err
	}
	d.probe = startStallProbe(2 * time.Millisecond)
	defer func() {
		var perr error
		stalls, perr = d.probe.Stop()
		err = errors.Join(err, perr)
	}()
	var (
		linkDown = &faultSeries{key: "linkdown", label: "link down (cable of node 2, link 0)", event: "link down", targeted: true, injectName: "netlink"}
		stalled  = &faultSeries{key: "daemonkill_stalled", label: "daemon of node 3 killed", event: "peer stalled", injectName: "reap"}
		down     = &faultSeries{key: "daemonkill_down", label: "daemon of node 3 killed", event: "peer down"}
		nodeCut  = &faultSeries{key: "nodecut", label: "node 3 cut off (both cables)", event: "peer down", targeted: true, injectName: "netlink"}
		loss     = &faultSeries{key: "loss100", label: "100% loss (node 2, link 0)", event: "link down", injectName: "nft"}
	)
	steps := []struct {
		name string
		f    *faultSeries
		run  func() error
	}{
		{"link down", linkDown, func() error { return d.linkDown(linkDown) }},
		{"daemon kill", stalled, func() error { return d.daemonKill(stalled, down) }},
		{"node cut", nodeCut, func() error { return d.nodeCut(nodeCut) }},
		{"loss 100%", loss, func() error { return d.loss(loss) }},
	}
	for _, s := range steps {
		fmt.Fprintf(os.Stderr, "heartbeat: %s: %d runs of %s\n", p.name, runs, s.name)
		for i := 0; len(s.f.lat) < runs; i++ {
			err := s.run()
			if err == nil {
				continue
			}
			// A run whose event never came (on this VM: a vCPU stall took the link down
			// just before the fault, so the fault changed nothing) is counted and repeated,
			// up to a fifth of the runs; the fault functions have undone the fault.
			s.f.lost++
			s.f.notes = append(s.f.notes, fmt.Sprintf("run %d lost: %v", i+1, err))
			if s.f.lost > runs/5 {
				return nil, nil, fmt.Errorf("%s, run %d: %d runs lost, the last: %w", s.name, i+1, s.f.lost, err)
			}
			if err := d.waitSteady(); err != nil {
				return nil, nil, fmt.Errorf("%s, run %d: %w", s.name, i+1, err)
			}
		}
	}
	return []*faultSeries{linkDown, stalled, down, nodeCut, loss}, nil, nil
}

// detection is one profile's cluster.
type detection struct {
	c     *vcluster.Cluster
	p     hbProfile
	probe *stallProbe
}

// slow notes a run of a targeted fault whose latency exceeded the profile's target, and
// whether a vCPU stall the probe measured overlaps the time from the fault to the event.
func (d *detection) slow(f *faultSeries, ev vcluster.LogEvent, fault uint64) {
	if since(ev, fault) <= d.p.target {
		return
	}
	f.slow++
	for _, st := range d.probe.Snapshot() {
		if st.to >= fault && st.from <= ev.KernelNS {
			f.slowAtStall++
			return
		}
	}
}

// atStall reports whether a transition logged at kernel time t came during a vCPU stall or
// within a detection time and a sweep after one.
func (d *detection) atStall(t uint64) bool {
	return near(d.probe.Snapshot(), t, hbMultiplier*d.p.interval+time.Millisecond)
}

func (d *detection) n1() *vcluster.Node { return d.c.Node(1) }

// jitter sleeps a random time in [0, interval), so faults land at every phase of the heartbeat
// cycle.
func (d *detection) jitter() { time.Sleep(rand.N(d.p.interval)) }

// settle waits a few detection times, so that a run's unexpected transitions (which would come
// within one detection time) are in the log before it is checked.
func (d *detection) settle() { time.Sleep(2*hbMultiplier*d.p.interval + 20*time.Millisecond) }

func since(ev vcluster.LogEvent, t0 uint64) time.Duration {
	return time.Duration(int64(ev.KernelNS) - int64(t0))
}

func silence(ev vcluster.LogEvent) time.Duration {
	if ev.LastSeenNS == 0 {
		return 0
	}
	return time.Duration(int64(ev.KernelNS) - int64(ev.LastSeenNS))
}

func isEvent(msg string, peer int, link int) func(vcluster.LogEvent) bool {
	return func(ev vcluster.LogEvent) bool {
		return ev.Msg == msg && ev.Peer == peer && (link < 0 || ev.Link != nil && *ev.Link == link)
	}
}

func describe(ev vcluster.LogEvent) string {
	s := fmt.Sprintf("%q peer %d", ev.Msg, ev.Peer)
	if ev.Link != nil {
		s += fmt.Sprintf(" link %d", *ev.Link)
	}
	return s
}

// check records as anomalies the events node 1 logged since mark for which bad is true.
func (d *detection) check(f *faultSeries, mark int, bad func(vcluster.LogEvent) bool) error {
	evs, err := d.n1().Events(mark)
	if err != nil {
		return err
	}
	var found []string
	atStall := false
	for _, ev := range evs {
		if bad(ev) {
			found = append(found, describe(ev))
			atStall = atStall || d.atStall(ev.KernelNS)
		}
	}
	if len(found) > 0 {
		f.anomaly(atStall, "node 1 logged %s", strings.Join(found, ", "))
	}
	return nil
}

// linkDown pulls node 2's cable on link 0 and waits for node 1 to take link 0 of peer 2 down.
func (d *detection) linkDown(f *faultSeries) error {
	n1 := d.n1()
	mark := n1.LogLines()
	d.jitter()
	before := heartbeat.MonotonicNow()
	if err := d.c.Net.LinkDown(2, netns.Private0); err != nil {
		return err
	}
	t0 := heartbeat.MonotonicNow()
	ev, err := n1.WaitEvent(mark, eventTimeout, isEvent("link down", 2, 0))
	if err != nil {
		return errors.Join(err, d.c.Net.LinkUp(2, netns.Private0))
	}
	f.lat = append(f.lat, since(ev, t0))
	f.silence = append(f.silence, silence(ev))
	f.inject = append(f.inject, time.Duration(t0-before))
	d.slow(f, ev, before)
	d.settle()
	err = d.check(f, mark, func(ev vcluster.LogEvent) bool {
		return ev.Msg == "peer down" || ev.Msg == "peer stalled" || ev.Msg == "link up" ||
			ev.Msg == "link down" && !isEvent("link down", 2, 0)(ev)
	})
	if err := errors.Join(err, d.c.Net.LinkUp(2, netns.Private0)); err != nil {
		return err
	}
	return d.waitSteady()
}

// daemonKill kills node 3's vigild with SIGKILL; its kernel keeps echoing, so node 1 must see it
// stalled first and down after the stall timeout. Then node 3's daemon is started again.
func (d *detection) daemonKill(stalled, down *faultSeries) error {
	n1, n3 := d.n1(), d.c.Node(3)
	mark := n1.LogLines()
	d.jitter()
	// Kill sends SIGKILL first thing and then waits for the process to be reaped, which takes
	// a millisecond or two: the fault time is taken just before, when the signal goes out.
	t0 := heartbeat.MonotonicNow()
	if err := n3.Kill(); err != nil {
		return err
	}
	reaped := heartbeat.MonotonicNow()
	evS, err := n1.WaitEvent(mark, eventTimeout, isEvent("peer stalled", 3, -1))
	if err == nil {
		var evD vcluster.LogEvent
		if evD, err = n1.WaitEvent(mark, eventTimeout, isEvent("peer down", 3, -1)); err == nil {
			stalled.lat = append(stalled.lat, since(evS, t0))
			stalled.silence = append(stalled.silence, silence(evS))
			stalled.inject = append(stalled.inject, time.Duration(reaped-t0))
			down.lat = append(down.lat, since(evD, t0))
			down.silence = append(down.silence, silence(evD))
			if evD.Was != "stalled" {
				down.anomaly(d.atStall(evD.KernelNS), "peer down from %q, not from stalled", evD.Was)
			} else if gap := time.Duration(evD.KernelNS - evS.KernelNS); gap < benchStallTimeout {
				down.anomaly(d.atStall(evD.KernelNS), "down %v after stalled, before the stall timeout", gap)
			}
			err = d.check(stalled, mark, func(ev vcluster.LogEvent) bool {
				// The kernel of node 3 still echoes: no link of it may go down.
				return ev.Msg == "link down" || ev.Peer == 2 && (ev.Msg == "peer down" || ev.Msg == "peer stalled")
			})
		}
	}
	if err := errors.Join(err, n3.Start()); err != nil {
		return err
	}
	return d.waitSteady()
}

// nodeCut pulls both private cables of node 3 and waits for node 1 to see it down, directly
// from alive.
func (d *detection) nodeCut(f *faultSeries) error {
	n1 := d.n1()
	mark := n1.LogLines()
	d.jitter()
	before := heartbeat.MonotonicNow()
	err := d.c.Net.LinkDown(3, netns.Private0)
	if err == nil {
		err = d.c.Net.LinkDown(3, netns.Private1)
	}
	t0 := heartbeat.MonotonicNow()
	var ev vcluster.LogEvent
	if err == nil {
		ev, err = n1.WaitEvent(mark, eventTimeout, isEvent("peer down", 3, -1))
	}
	if err == nil {
		f.lat = append(f.lat, since(ev, t0))
		f.silence = append(f.silence, silence(ev))
		f.inject = append(f.inject, time.Duration(t0-before))
		d.slow(f, ev, before)
		if ev.Was != "alive" {
			// Counted here; check below also reports the run as an anomaly, with the
			// "peer stalled" it logged.
			f.detours++
		}
		d.settle()
		err = d.check(f, mark, func(ev vcluster.LogEvent) bool {
			return ev.Msg == "peer stalled" || ev.Msg == "link up" || ev.Msg == "peer alive" ||
				ev.Peer == 2 && (ev.Msg == "peer down" || ev.Msg == "link down")
		})
	}
	if err := errors.Join(err, d.c.Net.LinkUp(3, netns.Private0), d.c.Net.LinkUp(3, netns.Private1)); err != nil {
		return err
	}
	return d.waitSteady()
}

// loss drops every frame on node 2's link 0 with nftables, both ways, and waits for node 1 to
// take link 0 of peer 2 down. The fault time is when nft has returned (after its commit).
func (d *detection) loss(f *faultSeries) error {
	n1 := d.n1()
	mark := n1.LogLines()
	d.jitter()
	before := heartbeat.MonotonicNow()
	undo, err := dropAll(d.c.Net, 2, netns.Private0)
	if err != nil {
		return err
	}
	t0 := heartbeat.MonotonicNow()
	ev, err := n1.WaitEvent(mark, eventTimeout, isEvent("link down", 2, 0))
	if err == nil {
		f.lat = append(f.lat, since(ev, t0))
		f.silence = append(f.silence, silence(ev))
		f.inject = append(f.inject, time.Duration(t0-before))
		d.settle()
		err = d.check(f, mark, func(ev vcluster.LogEvent) bool {
			return ev.Msg == "peer down" || ev.Msg == "peer stalled" || ev.Msg == "link up" ||
				ev.Msg == "link down" && !isEvent("link down", 2, 0)(ev)
		})
	}
	if err := errors.Join(err, undo()); err != nil {
		return err
	}
	return d.waitSteady()
}

// dropAll drops every frame on one link of one node, both ways, as
// netns.Cluster.Loss(node, l, 100, netns.Both) would: the same nftables table (netdev family,
// ingress and egress hooks of the hub-side veth end), loaded by one `nft -f` in the hub, with
// the rule `drop` instead of `numgen random mod 10000 < 10000 drop`, which nft rejects ("Value
// 10000 exceeds valid range 0-9999"), so that Loss cannot make 100% loss. It returns the undo.
func dropAll(c *netns.Cluster, node int, l netns.LinkID) (undo func() error, err error) {
	port := c.Node(node).Link(l).HubPort
	table := fmt.Sprintf("vgl_bench_drop_%s", port)
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", table)
	for _, hook := range []string{"ingress", "egress"} {
		fmt.Fprintf(&b, " chain lose_%s {\n  type filter hook %s device %q priority 0; policy accept;\n  drop\n }\n", hook, hook, port)
	}
	b.WriteString("}\n")
	if err := hubNft(c, b.String()); err != nil {
		return nil, err
	}
	return func() error { return hubNft(c, "delete table netdev "+table+"\n") }, nil
}

func hubNft(c *netns.Cluster, script string) error {
	cmd := exec.Command("ip", "netns", "exec", c.Hub, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", c.Hub, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitSteady waits until every node sees every peer alive on both links, out of jeopardy, and
// then a little longer.
func (d *detection) waitSteady() error {
	if err := waitAllAlive(d.c, steadyTimeout); err != nil {
		return err
	}
	d.settle()
	return nil
}

// waitAllAlive waits until every node reports every peer alive on all links and out of
// jeopardy.
func waitAllAlive(c *vcluster.Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for _, n := range c.Nodes {
			if bad = peersAlive(n); bad != "" {
				break
			}
		}
		if bad == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not steady after %v: %s", timeout, bad)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peersAlive returns what is not alive as seen by n, or "" if every peer is.
func peersAlive(n *vcluster.Node) string {
	cl, err := n.Admin()
	if err != nil {
		return fmt.Sprintf("node %d: %v", n.ID, err)
	}
	defer cl.Close()
	nodes, err := cl.Nodes()
	if err != nil {
		return fmt.Sprintf("node %d: %v", n.ID, err)
	}
	for _, s := range nodes {
		if s.Self {
			continue
		}
		if s.State != "alive" || s.LinksUp != s.Links || s.Jeopardy {
			return fmt.Sprintf("node %d sees node %d %s with %d/%d links up (jeopardy %v)", n.ID, s.ID, s.State, s.LinksUp, s.Links, s.Jeopardy)
		}
	}
	return ""
}

// soakResult is what a false-positive soak counted.
type soakResult struct {
	duration      time.Duration
	pauses        int
	pauseMax      time.Duration
	linkDown      int
	peerDown      int
	inPause       int // of linkDown+peerDown: seen while node 1 was stopped or just after
	atCPUStall    int // of linkDown+peerDown: seen during a vCPU stall the probe measured, or just after
	neither       int // of linkDown+peerDown: neither of the two
	beforeStart   int // failure events seen before the soak's clock (and the probe) started: not counted
	stallsOfNode1 int // "peer stalled" about node 1: true, its daemon was stopped
	stallsOther   int // "peer stalled" about nodes 2 and 3: false, but not a failure verdict
	cpuStalls     int // probe wake-ups at least 3 ms late
	cpuStallMax   time.Duration
	// Rates of those stalls per minute in the pause windows and outside them.
	stallRatePause, stallRateElse float64
	breakdown                     []string
	timeline                      []string // every false event with what the probe saw around it
	senderLate                    []int    // per node: "heartbeat sender ran late" log lines
	lateWakeups                   []uint64 // per node: sender wake-ups more than an interval late
	catchup                       []uint64 // per node: sweeps that ran late (catch-up windows opened, per peer)
	held                          []uint64 // per node: link downs those sweeps withheld
}

// nodeCounters reads a node's counters through its admin socket.
func nodeCounters(n *vcluster.Node) (map[string]uint64, error) {
	cl, err := n.Admin()
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctr, err := cl.Counters()
	if err != nil {
		return nil, fmt.Errorf("node %d counters: %w", n.ID, err)
	}
	return ctr, nil
}

// senderLate is a wake-up of a node's heartbeat sender more than an interval after its
// deadline, as the daemon logged it (the worst in each 100 ms).
type senderLate struct {
	node     int
	at, late uint64
}

// senderLates reads the "heartbeat sender ran late" lines node n logged after line from.
func senderLates(n *vcluster.Node, from int) ([]senderLate, error) {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return nil, err
	}
	var out []senderLate
	for i, line := range strings.Split(string(b), "\n") {
		if i < from || !strings.Contains(line, "heartbeat sender ran late") {
			continue
		}
		var v struct {
			WokeNS uint64 `json:"woke_ns"`
			LateNS uint64 `json:"late_ns"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", n.Log, i+1, err)
		}
		out = append(out, senderLate{node: n.ID, at: v.WokeNS, late: v.LateNS})
	}
	return out, nil
}

// soakEvent is a false link-down or peer-down event of a soak.
type soakEvent struct {
	node             int
	ev               vcluster.LogEvent
	inPause, atStall bool
}

// writeTimeline describes every false event, in time order: who saw what, how long the link
// or peer had been silent, the longest probe stall (any over 1 ms) that overlaps the silence
// (from the last frame heard to the event), whether node 1 was paused, and which other
// events came within 10 ms (an episode).
func writeTimeline(evs []soakEvent, stalls []cpuStall, lates []senderLate, windows [][2]uint64, start uint64) []string {
	slices.SortFunc(evs, func(a, b soakEvent) int { return cmp.Compare(a.ev.KernelNS, b.ev.KernelNS) })
	rel := func(t uint64) string { return fmt.Sprintf("%+.1fms", float64(int64(t)-int64(start))/1e6) }
	var out []string
	for i, e := range evs {
		from := e.ev.LastSeenNS
		if from == 0 || from > e.ev.KernelNS {
			from = e.ev.KernelNS
		}
		var best *cpuStall
		for j := range stalls {
			s := &stalls[j]
			if s.to >= from && s.from <= e.ev.KernelNS && (best == nil || s.late > best.late) {
				best = s
			}
		}
		stall := "no probe stall over 1 ms in the silence"
		if best != nil {
			stall = fmt.Sprintf("cpu%d stall %.1fms late, ending %.1fms before the event",
				best.cpu, ms(best.late), float64(int64(e.ev.KernelNS)-int64(best.to))/1e6)
		}
		// The silent peer's sender (or, for the observer's own silence, none): late over the
		// silence?
		sender := "peer's sender not late over 1 interval"
		for _, l := range lates {
			if l.node == e.ev.Peer && l.at >= from && l.at-l.late <= e.ev.KernelNS {
				sender = fmt.Sprintf("peer's sender woke %.1fms late, %.1fms before the event", float64(l.late)/1e6,
					float64(int64(e.ev.KernelNS)-int64(l.at))/1e6)
				break
			}
		}
		var others []string
		for j, o := range evs {
			if j != i && (o.node != e.node || o.ev.Peer != e.ev.Peer) &&
				max(o.ev.KernelNS, e.ev.KernelNS)-min(o.ev.KernelNS, e.ev.KernelNS) <= uint64(10*time.Millisecond) {
				others = append(others, fmt.Sprintf("n%d:%d", o.node, o.ev.Peer))
			}
		}
		class := "neither"
		switch {
		case e.inPause && e.atStall:
			class = "pause+stall"
		case e.inPause:
			class = "pause"
		case e.atStall:
			class = "stall"
		}
		out = append(out, fmt.Sprintf("%s node %d: %s, silent %.2fms [%s]; %s; %s; others within 10ms: %s",
			rel(e.ev.KernelNS), e.node, describe(e.ev), float64(e.ev.KernelNS-from)/1e6, class, stall, sender, strings.Join(others, " ")))
	}
	return out
}

// soakRun runs a 1ms x 3 cluster with the default stall timeout for d with both CPUs saturated
// and node 1's daemon stopped for 2 s every 5-15 s, and counts the link-down and peer-down
// events every node logged.
func soakRun(d time.Duration, fallback []int) (r soakResult, err error) {
	const interval = time.Millisecond
	c, err := vcluster.Start(vcluster.Options{Nodes: 3, Interval: interval, Multiplier: hbMultiplier, Fallback: fallback})
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	if err := waitAllAlive(c, steadyTimeout); err != nil {
		return r, err
	}
	time.Sleep(time.Second)
	// The probe records wake-ups more than 1 ms late for the timeline; the classification
	// counts those of 2 ms or more. It runs before the soak's clock starts, and the soak
	// counts the events from then on, so every counted event happened under the probe's
	// watch (the load starts after both).
	probe := startStallProbe(time.Millisecond)
	soakStartNS := heartbeat.MonotonicNow()
	marks := make([]int, len(c.Nodes))
	for i, n := range c.Nodes {
		marks[i] = n.LogLines()
	}
	load, err := c.Net.SaturateCPUs(d + time.Minute)
	if err != nil {
		_, _ = probe.Stop()
		return r, err
	}
	defer load.Stop()
	// A pause spans [stop, cont] plus the time a sweep needs to notice what it missed.
	grace := uint64(hbMultiplier*interval + 50*time.Millisecond)
	var windows [][2]uint64
	start := time.Now()
	end := start.Add(d)
	p1 := c.Node(1).Proc()
	for {
		wait := 5*time.Second + rand.N(10*time.Second)
		if time.Now().Add(wait + 2*time.Second).After(end) {
			break
		}
		time.Sleep(wait)
		stop := heartbeat.MonotonicNow()
		if err := p1.Stop(); err != nil {
			_, _ = probe.Stop()
			return r, err
		}
		time.Sleep(2 * time.Second)
		err := p1.Cont()
		cont := heartbeat.MonotonicNow()
		if err != nil {
			_, _ = probe.Stop()
			return r, err
		}
		windows = append(windows, [2]uint64{stop, cont + grace})
		r.pauses++
		r.pauseMax = max(r.pauseMax, time.Duration(cont-stop))
	}
	time.Sleep(time.Until(end))
	r.duration = time.Since(start)
	for _, n := range c.Nodes {
		ctr, err := nodeCounters(n)
		if err != nil {
			return r, err
		}
		r.catchup = append(r.catchup, ctr["catchup"])
		r.held = append(r.held, ctr["held"])
		r.lateWakeups = append(r.lateWakeups, ctr["sender_late_wakeups"])
	}
	load.Stop()
	time.Sleep(time.Second)
	allStalls, err := probe.Stop()
	if err != nil {
		return r, err
	}
	var stalls []cpuStall // of 2 ms or more: what the classification counts
	for _, s := range allStalls {
		if s.late >= 2*time.Millisecond {
			stalls = append(stalls, s)
		}
	}
	var inPauseStalls int
	var pauseTime time.Duration
	for _, w := range windows {
		pauseTime += time.Duration(w[1] - w[0])
	}
	for _, s := range stalls {
		if s.late >= 3*time.Millisecond {
			r.cpuStalls++
			for _, w := range windows {
				if s.to >= w[0] && s.from <= w[1] {
					inPauseStalls++
					break
				}
			}
		}
		r.cpuStallMax = max(r.cpuStallMax, s.late)
	}
	if pauseTime > 0 {
		r.stallRatePause = float64(inPauseStalls) / pauseTime.Minutes()
	}
	if rest := r.duration - pauseTime; rest > 0 {
		r.stallRateElse = float64(r.cpuStalls-inPauseStalls) / rest.Minutes()
	}

	counts := map[string][4]int{} // total, in/after a pause, at a vCPU stall, neither
	var timeline []soakEvent
	for i, n := range c.Nodes {
		evs, err := n.Events(marks[i])
		if err != nil {
			return r, err
		}
		for _, ev := range evs {
			if ev.KernelNS != 0 && ev.KernelNS < soakStartNS {
				r.beforeStart++ // logged after the mark, seen by a sweep before the probe ran
				continue
			}
			switch ev.Msg {
			case "link down":
				r.linkDown++
			case "peer down":
				r.peerDown++
			case "peer stalled":
				if ev.Peer == 1 {
					r.stallsOfNode1++
				} else {
					r.stallsOther++
				}
				continue
			default:
				continue
			}
			inPause := false
			for _, w := range windows {
				if ev.KernelNS >= w[0] && ev.KernelNS <= w[1] {
					inPause = true
					break
				}
			}
			atStall := near(stalls, ev.KernelNS, hbMultiplier*interval+time.Millisecond)
			k := fmt.Sprintf("node %d: %s", n.ID, describe(ev))
			ct := counts[k]
			ct[0]++
			if inPause {
				r.inPause++
				ct[1]++
			}
			if atStall {
				r.atCPUStall++
				ct[2]++
			}
			if !inPause && !atStall {
				r.neither++
				ct[3]++
			}
			counts[k] = ct
			timeline = append(timeline, soakEvent{node: n.ID, ev: ev, inPause: inPause, atStall: atStall})
		}
	}
	var lates []senderLate
	for i, n := range c.Nodes {
		l, err := senderLates(n, marks[i])
		if err != nil {
			return r, err
		}
		lates = append(lates, l...)
		r.senderLate = append(r.senderLate, len(l))
	}
	r.timeline = writeTimeline(timeline, allStalls, lates, windows, soakStartNS)
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		ct := counts[k]
		r.breakdown = append(r.breakdown, fmt.Sprintf("%s x %d (in/after a pause %d, at a vCPU stall %d, neither %d)", k, ct[0], ct[1], ct[2], ct[3]))
	}
	return r, nil
}

// cpuResult is the CPU time of each daemon over a window, in percent of one core.
type cpuResult struct {
	perNode []float64 // the whole process: all its threads, from schedstat
	sender  []float64 // its real-time (SCHED_FIFO) thread: the heartbeat sender
	other   []float64 // its other threads
	ticks   []float64 // the whole process, utime+stime (tick-sampled)
	napi    float64   // the NAPI kernel threads of all hub ports, all clusters
	softirq float64   // softirq time of all CPUs (XDP, the sweep timer, the veths and bridges)
	floor   float64   // a thread that only sleeps to 1 ms deadlines (sleepFloor), same window
}

// cpuCost runs a 1ms x 3 cluster and measures each daemon's CPU time over the window, and the
// system-wide softirq time. With threaded, the hub ports (the simulated switch) process their
// frames in NAPI kernel threads instead of in the softirq of whoever sent them: without it,
// the sender's sendto runs the bridge, the peers' XDP programs and their echo replies inline
// and the kernel charges all of it to the sending daemon.
func cpuCost(window time.Duration, fallback []int, threaded bool) (r cpuResult, err error) {
	c, err := vcluster.Start(vcluster.Options{Nodes: 3, Interval: time.Millisecond, Multiplier: hbMultiplier, Fallback: fallback})
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	if threaded {
		if err := threadedNAPI(c.Net); err != nil {
			return r, err
		}
	}
	if err := waitAllAlive(c, steadyTimeout); err != nil {
		return r, err
	}
	time.Sleep(2 * time.Second)
	type mark struct {
		threads map[int]threadTime
		ticks   uint64
	}
	read := func() ([]mark, uint64, uint64, error) {
		var ms []mark
		for _, n := range c.Nodes {
			pid := n.Proc().PID()
			ticks, err := procTicks(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				return nil, 0, 0, err
			}
			th, err := threadTimes(pid)
			if err != nil {
				return nil, 0, 0, err
			}
			ms = append(ms, mark{threads: th, ticks: ticks})
		}
		napi, err := napiThreadsNS()
		if err != nil {
			return nil, 0, 0, err
		}
		sirq, err := softirqTicks()
		return ms, napi, sirq, err
	}
	before, napi0, sirq0, err := read()
	if err != nil {
		return r, err
	}
	start := time.Now()
	// Meanwhile, in the bench process: what a thread that only sleeps at 1 kHz costs.
	floor, _, ferr := sleepFloor(window)
	time.Sleep(time.Until(start.Add(window)))
	elapsed := time.Since(start).Seconds()
	after, napi1, sirq1, err := read()
	if err != nil {
		return r, err
	}
	pctTicks := func(a, b uint64) float64 { return 100 * float64(b-a) / clkTck / elapsed }
	pctNS := func(ns uint64) float64 { return 100 * float64(ns) / 1e9 / elapsed }
	for i := range c.Nodes {
		var rt, other uint64
		for tid, a := range after[i].threads {
			d := a.ns - before[i].threads[tid].ns // a thread started in the window counts in full
			if a.realtime {
				rt += d
			} else {
				other += d
			}
		}
		r.perNode = append(r.perNode, pctNS(rt+other))
		r.sender = append(r.sender, pctNS(rt))
		r.other = append(r.other, pctNS(other))
		r.ticks = append(r.ticks, pctTicks(before[i].ticks, after[i].ticks))
	}
	if ferr != nil {
		return r, ferr
	}
	r.floor = floor
	r.napi = pctNS(napi1 - napi0)
	r.softirq = pctTicks(sirq0, sirq1)
	return r, nil
}

// threadedNAPI makes every hub port of the cluster process its frames in its own NAPI kernel
// thread (the ports have NAPI because they carry an XDP program).
func threadedNAPI(c *netns.Cluster) error {
	var script strings.Builder
	for _, n := range c.Nodes {
		for _, l := range []netns.LinkID{netns.Private0, netns.Private1} {
			fmt.Fprintf(&script, "echo 1 > /sys/class/net/%s/threaded && ", n.Links[l].HubPort)
		}
	}
	script.WriteString("true")
	out, err := exec.Command("ip", "netns", "exec", c.Hub, "sh", "-c", script.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("threaded NAPI on the hub ports: %w: %s", err, out)
	}
	return nil
}

// threadTime is one thread's time on CPU.
type threadTime struct {
	ns       uint64 // first field of schedstat: time on CPU, exact (not sampled)
	realtime bool   // the heartbeat sender: SCHED_FIFO at heartbeat.RealtimePriority
}

// threadTimes reads the schedstat of every thread of a process.
func threadTimes(pid int) (map[int]threadTime, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]threadTime{}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		ns, err := schedstatNS(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread has exited
		}
		f, err := statFields(filepath.Join(dir, t.Name(), "stat"))
		if err != nil {
			continue
		}
		// The sender is the thread at the sender's SCHED_FIFO priority (rt_priority, field
		// 40); the rest of vigild runs at a lower one.
		out[tid] = threadTime{ns: ns, realtime: f[38] == "1" && f[37] == strconv.Itoa(heartbeat.RealtimePriority)}
	}
	return out, nil
}

// schedstatNS returns the first field of a schedstat file: nanoseconds on CPU.
func schedstatNS(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// napiThreadsNS returns the time on CPU of all NAPI kernel threads ("napi/DEV-ID").
func napiThreadsNS() (uint64, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
		if err != nil || !strings.HasPrefix(string(comm), "napi/") {
			continue
		}
		ns, err := schedstatNS(filepath.Join("/proc", p.Name(), "schedstat"))
		if err != nil {
			continue
		}
		sum += ns
	}
	return sum, nil
}

// statFields returns the fields of a /proc/.../stat file from field 3 (state) on: the command
// name, field 2, is in parentheses and may hold spaces.
func statFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 39 {
		return nil, fmt.Errorf("%s: %d fields", path, len(f)+2)
	}
	return f, nil
}

// procTicks returns utime+stime (fields 14 and 15) of a /proc/PID/stat or
// /proc/PID/task/TID/stat file in clock ticks: for a process, all its threads.
func procTicks(path string) (uint64, error) {
	f, err := statFields(path)
	if err != nil {
		return 0, err
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return utime + stime, nil
}

// softirqTicks returns the softirq time of all CPUs in clock ticks, from /proc/stat.
func softirqTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	// cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	return strconv.ParseUint(f[7], 10, 64)
}

// median returns the middle value (the upper one of an even count).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
