package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"vigil/control/transport"
	"vigil/dataplane"
	"vigil/heartbeat"
	"vigil/internal/nodeconf"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

// The interconnect benchmark: a 3-node cluster of vigild daemons at 1 ms × 3 with cluster
// addresses and the TCX steering program (primary policy). Node 1 sends to node 2 over the
// cluster transport (TCP) two streams, request/response and one-way at a fixed rate, while
// node 1's link 0 (the primary, carrying the streams) is cut and restored again and again. It
// measures the longest delivery gap per cut against the heartbeat plane's detection time, lost
// and reordered messages, message latency against a plain UDP ping-pong between the same
// namespaces, and the TCX program's cost per packet.
//
// The transport endpoints run in the benchmark process, in the daemons' namespaces and on their
// cluster addresses: the daemons do not host the transport yet, and the path the packets take
// (routes, TCX steering, links) is the same.
//
// Every cycle is run with two TCP settings: the kernel's default minimum RTO (200 ms) and a
// lowered one (the transport's RTOMin, TCP_RTO_MIN_US), since a segment lost on the dying link
// is re-sent only by RACK/TLP/RTO, all bounded below by it.

const (
	icInterval   = time.Millisecond
	icMultiplier = 3
	icPort       = 7100
	icUDPPort    = 7200
	icRate       = time.Millisecond // one-way stream: one message per this
	icMsgSize    = 64
	icHold       = 400 * time.Millisecond // a cut lasts this long
)

type icVariant struct {
	name   string // in metric names
	rtoMin time.Duration
	// nudge says what happens when a node's daemon logs the link to the other node down (the
	// bench follows both daemons' logs, standing in for a daemon that hosts the transport):
	//   nudgeNone     nothing
	//   nudgeTCP      transport.TCP.Nudge(peer) on that node: no-op frames on its streams with
	//                 unacknowledged data, so that the peer's SACKs report the hole and RACK
	//                 re-sends at once
	//   nudgeMessage  an empty message on that node's end of the request/response stream,
	//                 whether or not it has unacknowledged data
	nudge int
	// daemon runs the streams inside the vigild processes (their bench streams: --bench-dir,
	// --bench-peer), on the daemons' own cluster transport (RTOMin 5 ms), which the daemons
	// nudge on their own link-down events unless noNudge (vigild --no-nudge).
	daemon, noNudge bool
}

const (
	nudgeNone = iota
	nudgeTCP
	nudgeMessage
)

// 5 ms asks for TCP_RTO_MIN_US = 5000, which this kernel (HZ=250) rounds up to 2 jiffies, 8 ms.
var icVariants = []icVariant{
	{"rto200ms", 0, nudgeNone, false, false},
	{"rto5ms", 5 * time.Millisecond, nudgeNone, false, false},
	{"rto5ms_nudge", 5 * time.Millisecond, nudgeTCP, false, false},
	{"rto5ms_nudge_message", 5 * time.Millisecond, nudgeMessage, false, false},
	{"vigild", 5 * time.Millisecond, nudgeNone, true, false},
	{"vigild_no_nudge", 5 * time.Millisecond, nudgeNone, true, true},
}

func runInterconnect(cfg config, out io.Writer) (metrics, error) {
	cycles, pings := 20, 2000
	if cfg.quick {
		cycles, pings = 5, 500
	}
	m := metrics{}
	cost, err := tcxCost()
	if err != nil {
		return nil, err
	}
	m["interconnect_tcx_ns_per_packet"] = float64(cost.Nanoseconds())
	fmt.Fprintf(out, "TCX steering program: %v per packet (BPF_PROG_TEST_RUN, 1M runs)\n", cost)
	for _, v := range icVariants {
		session := icSession
		if v.daemon {
			session = icDaemonSession
		}
		r, err := session(v, cycles, pings)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		fmt.Fprintf(out, "\n-- %s: %d cuts of node 1's link 0 (carrying), %v each; 1 ms x 3 heartbeats\n", v.name, cycles, icHold)
		table(out, [][]string{
			{"metric", "n", "p50 ms", "p99 ms", "max ms"},
			r.detect.row("detection: cut -> link down (node 1)"),
			r.detect2.row("detection: cut -> link down (node 2)"),
			r.cutCall.row("the cut itself (netlink call in the hub)"),
			r.owGap.row("one-way: longest delivery gap per cut"),
			r.owControl.row("one-way: longest gap, same window before the cut"),
			r.owHit.row("one-way: worst latency, sent -5..+20 ms of the cut"),
			r.owHitControl.row("one-way: worst latency, sent -105..-80 ms"),
			r.rrGap.row("request/response: longest wait per cut"),
			r.rrControl.row("request/response: longest wait before the cut"),
			r.owRestore.row("one-way: longest gap per restore"),
			r.udp.row("UDP ping-pong RTT (steady)"),
			r.rr.row("transport request/response RTT (steady)"),
			r.ow.row("one-way latency (whole run)"),
		})
		fmt.Fprintf(out, "one-way: %d sent, %d delivered, %d lost, %d reordered, %d duplicated; request/response: %d round trips, %d lost\n",
			r.sent, r.delivered, r.sent-r.delivered, r.reordered, r.duplicated, r.rrDone, r.rrLost)
		for _, w := range r.peerDownWhat {
			fmt.Fprintln(out, "  "+w)
		}
		fmt.Fprintf(out, "peer down reported during the run: %d; gap p99 - detection p99 = %.3f ms (target <= 2 ms)\n",
			r.peerDown, ms(r.owGap.quantile(0.99)-r.detect.quantile(0.99)))
		fmt.Fprintf(out, "request/response: longest wait p99 - later detection p99 = %.3f ms (target <= 2 ms)\n",
			ms(r.rrGap.quantile(0.99)-max(r.detect.quantile(0.99), r.detect2.quantile(0.99))))
		fmt.Fprintf(out, "TCP in nodes 1 and 2 during the cuts: %d loss probes and retransmission timeouts, %d SACK recoveries\n",
			r.timers, r.sackRecoveries)
		p := "interconnect_" + v.name + "_"
		r.detect.record(m, p+"detection")
		r.owGap.record(m, p+"oneway_gap")
		r.rrGap.record(m, p+"rr_gap")
		r.owRestore.record(m, p+"oneway_restore_gap")
		r.owControl.record(m, p+"oneway_control_gap")
		r.owHit.record(m, p+"oneway_cut_latency")
		r.owHitControl.record(m, p+"oneway_control_latency")
		r.rrControl.record(m, p+"rr_control_wait")
		r.udp.record(m, p+"udp_rtt")
		r.rr.record(m, p+"transport_rtt")
		r.ow.record(m, p+"oneway_latency")
		m[p+"lost_messages"] = float64(r.sent - r.delivered + r.rrLost)
		m[p+"reordered_messages"] = float64(r.reordered)
		m[p+"peer_down_events"] = float64(r.peerDown)
		m[p+"gap_minus_detection_p99_ms"] = ms(r.owGap.quantile(0.99) - r.detect.quantile(0.99))
		r.detect2.record(m, p+"detection_node2")
		r.cutCall.record(m, p+"cut_call")
		m[p+"rr_gap_minus_detection_p99_ms"] = ms(r.rrGap.quantile(0.99) - max(r.detect.quantile(0.99), r.detect2.quantile(0.99)))
		m[p+"tcp_loss_timers"] = float64(r.timers)
		m[p+"tcp_sack_recoveries"] = float64(r.sackRecoveries)
		m[p+"transport_vs_udp_p50_ratio"] = float64(r.rr.quantile(0.5)) / float64(max(r.udp.quantile(0.5), 1))
	}
	return m, nil
}

// tcxCost measures the steering program per packet in the kernel, on a cluster packet that it
// steers onto a live link.
func tcxCost() (time.Duration, error) {
	hb, err := dataplane.LoadHeartbeat(dataplane.HeartbeatOptions{})
	if err != nil {
		return 0, err
	}
	defer hb.Close()
	s, err := dataplane.LoadSteer(dataplane.SteerOptions{Heartbeat: hb})
	if err != nil {
		return 0, err
	}
	defer s.Close()
	own := [2]net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 1, 0, 1}}
	if err := s.SetConfig(dataplane.SteerPrimary, []dataplane.SteerLink{{Ifindex: 1, MAC: own[0]}, {Ifindex: 4242, MAC: own[1]}}); err != nil {
		return 0, err
	}
	dst := netip.MustParseAddr("198.18.100.2")
	if err := s.SetDests(map[netip.Addr]uint16{dst: 2}); err != nil {
		return 0, err
	}
	for l := range uint8(2) {
		if err := hb.SetLinkStateForTest(2, l, true, net.HardwareAddr{2, 0, 0, l, 0, 2}); err != nil {
			return 0, err
		}
	}
	// Ethernet + IPv4 + TCP ports, placeholder destination MAC, as routed.
	frame := append(append([]byte{}, dataplane.PlaceholderMAC...), own[0]...)
	frame = append(frame, 8, 0, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 100, 1, 198, 18, 100, 2)
	frame = append(frame, make([]byte, 20)...)
	binary.BigEndian.PutUint16(frame[34:], 40000)
	binary.BigEndian.PutUint16(frame[36:], icPort)
	return s.Cost(frame, 1_000_000)
}

type icResult struct {
	detect, detect2, owGap, rrGap, owRestore sample
	owControl, rrControl                     sample // the same windows just before each cut
	// The worst delivery latency of one-way messages sent from 5 ms before to 20 ms after each
	// cut: what the cut costs a message; and the same for a window before the cut.
	owHit, owHitControl                    sample
	udp, rr, ow                            sample
	sent, delivered, reordered, duplicated int
	rrDone, rrLost                         int
	peerDown                               int
	peerDownWhat                           []string
	cutCall                                sample // how long LinkDown's netlink call took
	// TCP counters of nodes 1 and 2, summed over the cuts (each from just before the cut to
	// the restore): TCPLossProbes + TCPTimeouts, and TCPSackRecovery.
	timers, sackRecoveries int64
}

// rrDone is one request/response round trip.
type rrDone struct{ start, end time.Time }

// icCut is one cut: when the link went down (just before the call), when it was restored, and
// when node 1 saw it up again.
type icCut struct{ down, up, steady time.Time }

// icCycles cuts node 1's link 0 and restores it, cycles times, and records the detection
// times and the TCP counters of nodes 1 and 2 in r.
func icCycles(c *vcluster.Cluster, cycles int, r *icResult) (cuts []icCut, err error) {
	// A cycle that fails leaves no link cut behind.
	cutNow := false
	defer func() {
		if cutNow {
			err = errors.Join(err, c.Net.LinkUp(1, netns.Private0))
		}
	}()
	n1, n2 := c.Node(1), c.Node(2)
	counters := func() (int64, int64) {
		var timers, sacks int64
		for _, id := range []int{1, 2} {
			c.Net.Node(id).Do(func() error {
				m, err := tcpExt()
				timers += m["TCPLossProbes"] + m["TCPTimeouts"]
				sacks += m["TCPSackRecovery"]
				return err
			})
		}
		return timers, sacks
	}
	for range cycles {
		time.Sleep(300*time.Millisecond + rand.N(icInterval))
		mark1, mark2 := n1.LogLines(), n2.LogLines()
		timers0, sacks0 := counters()
		t0 := heartbeat.MonotonicNow()
		down := time.Now()
		if err := c.Net.LinkDown(1, netns.Private0); err != nil {
			return cuts, err
		}
		r.cutCall = append(r.cutCall, time.Duration(heartbeat.MonotonicNow()-t0))
		cutNow = true
		ev, err := n1.WaitEvent(mark1, eventTimeout, isEvent("link down", 2, 0))
		if err != nil {
			return cuts, err
		}
		r.detect = append(r.detect, since(ev, t0))
		if ev, err := n2.WaitEvent(mark2, eventTimeout, isEvent("link down", 1, 0)); err == nil {
			r.detect2 = append(r.detect2, since(ev, t0))
		}
		time.Sleep(time.Until(down.Add(icHold)))
		timers1, sacks1 := counters()
		r.timers += timers1 - timers0
		r.sackRecoveries += sacks1 - sacks0
		mark1 = n1.LogLines()
		up := time.Now()
		if err := c.Net.LinkUp(1, netns.Private0); err != nil {
			return cuts, err
		}
		cutNow = false
		if _, err := n1.WaitEvent(mark1, steadyTimeout, isEvent("link up", 2, 0)); err != nil {
			return cuts, err
		}
		cuts = append(cuts, icCut{down, up, time.Now()})
	}
	return cuts, nil
}

// tcpExt reads the TcpExt counters of the calling thread's network namespace.
func tcpExt() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/netstat")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		out := map[string]int64{}
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			out[names[j]] = v
		}
		return out, nil
	}
	return nil, errors.New("no TcpExt counters in /proc/net/netstat")
}

// icAnalyse fills r from what the streams delivered: loss, order, latency, and per cut the
// longest gaps and waits, each with a control window before the cut.
func icAnalyse(r *icResult, c *vcluster.Cluster, startMark int, cuts []icCut, ds []delivery, rrs []rrDone, sent int) error {
	evs, err := c.Node(1).Events(startMark)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		if ev.Msg == "peer down" {
			r.peerDown++
			r.peerDownWhat = append(r.peerDownWhat, fmt.Sprintf("node 1 saw node %d down (silent %v)", ev.Peer, silence(ev)))
		}
	}

	r.sent, r.delivered = sent, len(ds)
	seen := map[uint64]bool{}
	var last uint64
	for _, d := range ds {
		if seen[d.seq] {
			r.duplicated++
		}
		seen[d.seq] = true
		if d.seq < last {
			r.reordered++
		}
		last = max(last, d.seq)
		r.ow = append(r.ow, d.at.Sub(d.sent))
	}
	r.delivered = len(seen)
	// The longest gap between consecutive deliveries in a window.
	gap := func(from, to time.Time) time.Duration {
		var g time.Duration
		prev := from
		for _, d := range ds {
			if d.at.Before(from) {
				continue
			}
			if d.at.After(to) {
				break
			}
			g = max(g, d.at.Sub(prev))
			prev = d.at
		}
		return g
	}
	r.rrDone = len(rrs)
	for _, ct := range cuts {
		r.owGap = append(r.owGap, gap(ct.down, ct.up))
		r.owRestore = append(r.owRestore, gap(ct.up, ct.steady.Add(100*time.Millisecond)))
		r.owControl = append(r.owControl, gap(ct.down.Add(-icHold), ct.down))
		worst := func(from, to time.Time) time.Duration {
			var w time.Duration
			for _, d := range ds {
				if !d.sent.Before(from) && d.sent.Before(to) {
					w = max(w, d.at.Sub(d.sent))
				}
			}
			return w
		}
		r.owHit = append(r.owHit, worst(ct.down.Add(-5*time.Millisecond), ct.down.Add(20*time.Millisecond)))
		r.owHitControl = append(r.owHitControl, worst(ct.down.Add(-105*time.Millisecond), ct.down.Add(-80*time.Millisecond)))
		wait := func(from, to time.Time) time.Duration {
			var w time.Duration
			for _, x := range rrs {
				if x.end.After(from) && x.start.Before(to) {
					w = max(w, x.end.Sub(x.start))
				}
			}
			return w
		}
		r.rrGap = append(r.rrGap, wait(ct.down, ct.up))
		r.rrControl = append(r.rrControl, wait(ct.down.Add(-icHold), ct.down))
	}
	return nil
}

// delivery is one one-way message as received.
type delivery struct {
	seq  uint64
	at   time.Time
	sent time.Time
}

func icSession(v icVariant, cycles, pings int) (r icResult, err error) {
	c, err := vcluster.Start(vcluster.Options{
		Nodes: 3, Interval: icInterval, Multiplier: icMultiplier, StallTimeout: 200 * time.Millisecond,
		Interconnect: nodeconf.Interconnect{
			Network: vcluster.ClusterNetwork, Policy: nodeconf.PolicyPrimary,
			ErrorThreshold: nodeconf.DefaultErrorThreshold, ErrorWindow: nodeconf.DefaultErrorWindow,
			ErrorClean: nodeconf.DefaultErrorClean,
		},
	})
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	if err := waitAllAlive(c, steadyTimeout); err != nil {
		return r, err
	}
	key, err := nodeconf.LoadKey(filepath.Join(c.Net.SharedDir, "cluster.key"))
	if err != nil {
		return r, err
	}
	addr := func(id int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 100, byte(id)}), icPort)
	}
	var t1, t2 *transport.TCP
	for _, n := range []struct {
		id   int
		peer int
		t    **transport.TCP
	}{{1, 2, &t1}, {2, 1, &t2}} {
		err := c.Net.Node(n.id).Do(func() (err error) {
			*n.t, err = transport.NewTCP(transport.TCPConfig{
				Local: transport.NodeID(n.id), Key: key[:], Listen: addr(n.id),
				Peers:  map[transport.NodeID]netip.AddrPort{transport.NodeID(n.peer): addr(n.peer)},
				RTOMin: v.rtoMin, UserTimeout: 30 * time.Second,
			})
			return err
		})
		if err != nil {
			return r, err
		}
		defer (*n.t).Close()
	}
	ln, err := t2.Listen(transport.ServiceBench)
	if err != nil {
		return r, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// Node 2: the first message of a stream says what it is: "rr" (echo) or "ow" (sink).
	var mu sync.Mutex
	var got []delivery
	serverRR := make(chan transport.Conn, 1)
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				kind, err := conn.Recv(ctx)
				if err != nil {
					return
				}
				if string(kind) == "rr" {
					select {
					case serverRR <- conn:
					default:
					}
				}
				for {
					msg, err := conn.Recv(ctx)
					if err != nil {
						return
					}
					if string(kind) == "rr" {
						if len(msg) == 0 {
							continue // a nudge
						}
						if conn.Send(ctx, msg) != nil {
							return
						}
						continue
					}
					now := time.Now()
					mu.Lock()
					got = append(got, delivery{seq: binary.LittleEndian.Uint64(msg), at: now,
						sent: time.Unix(0, int64(binary.LittleEndian.Uint64(msg[8:])))})
					mu.Unlock()
				}
			})
		}
	})
	dial := func(kind string) (transport.Conn, error) {
		var conn transport.Conn
		err := c.Net.Node(1).Do(func() (err error) {
			conn, err = t1.Dial(ctx, 2, transport.ServiceBench)
			return err
		})
		if err != nil {
			return nil, err
		}
		return conn, conn.Send(ctx, []byte(kind))
	}
	rrConn, err := dial("rr")
	if err != nil {
		return r, err
	}
	defer rrConn.Close()
	owConn, err := dial("ow")
	if err != nil {
		return r, err
	}
	defer owConn.Close()

	// Steady state: plain UDP ping-pong and the transport's request/response.
	if r.udp, err = udpPingPong(c, pings); err != nil {
		return r, err
	}
	msg := make([]byte, icMsgSize)
	steady, endSteady := context.WithTimeout(ctx, time.Minute)
	defer endSteady()
	for range pings {
		t0 := time.Now()
		if err := rrConn.Send(steady, msg); err != nil {
			return r, err
		}
		if _, err := rrConn.Recv(steady); err != nil {
			return r, err
		}
		r.rr = append(r.rr, time.Since(t0))
	}

	switch v.nudge {
	case nudgeTCP:
		wg.Go(func() { tailEvents(ctx, c.Node(1).Log, isEvent("link down", 2, 0), func() { t1.Nudge(2) }) })
		wg.Go(func() { tailEvents(ctx, c.Node(2).Log, isEvent("link down", 1, 0), func() { t2.Nudge(1) }) })
	case nudgeMessage:
		srv := <-serverRR
		wg.Go(func() { tailEvents(ctx, c.Node(1).Log, isEvent("link down", 2, 0), func() { rrConn.Send(ctx, nil) }) })
		wg.Go(func() { tailEvents(ctx, c.Node(2).Log, isEvent("link down", 1, 0), func() { srv.Send(ctx, nil) }) })
	}
	recvReply := func(ctx context.Context) error {
		for {
			msg, err := rrConn.Recv(ctx)
			if err != nil || len(msg) > 0 {
				return err
			}
		}
	}

	// The streams run through the cuts.
	var rrMu sync.Mutex
	var rrs []rrDone
	var sent int
	// The streams stop (and are waited for) on every way out; their calls use the streams'
	// context, so that stopping them unblocks a Send or Recv waiting on a dead stream.
	streams, stopStreams := context.WithCancel(ctx)
	var swg sync.WaitGroup
	defer func() { stopStreams(); swg.Wait() }()
	swg.Go(func() {
		b := make([]byte, icMsgSize)
		for streams.Err() == nil {
			t0 := time.Now()
			if rrConn.Send(streams, b) != nil {
				return
			}
			if err := recvReply(streams); err != nil {
				return
			}
			rrMu.Lock()
			rrs = append(rrs, rrDone{t0, time.Now()})
			rrMu.Unlock()
		}
	})
	swg.Go(func() {
		tick := time.NewTicker(icRate)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			select {
			case <-streams.Done():
				return
			case <-tick.C:
			}
			b := make([]byte, icMsgSize)
			binary.LittleEndian.PutUint64(b, seq)
			binary.LittleEndian.PutUint64(b[8:], uint64(time.Now().UnixNano()))
			if owConn.Send(streams, b) != nil {
				return
			}
			sent = int(seq)
		}
	})

	n1 := c.Node(1)
	startMark := n1.LogLines()
	cuts, err := icCycles(c, cycles, &r)
	if err != nil {
		return r, err
	}
	time.Sleep(300 * time.Millisecond)
	stopStreams()
	swg.Wait()
	// Let the last messages arrive.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= sent {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	ds := slices.Clone(got)
	mu.Unlock()
	rrMu.Lock()
	defer rrMu.Unlock()
	return r, icAnalyse(&r, c, startMark, cuts, ds, rrs, sent)
}

// udpPingPong measures the round trip of a 64-byte UDP datagram from node 1 to node 2's cluster
// address and back, n times.
func udpPingPong(c *vcluster.Cluster, n int) (sample, error) {
	var srv net.PacketConn
	if err := c.Net.Node(2).Do(func() (err error) {
		srv, err = net.ListenPacket("udp", fmt.Sprintf("198.18.100.2:%d", icUDPPort))
		return err
	}); err != nil {
		return nil, err
	}
	defer srv.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			k, a, err := srv.ReadFrom(b)
			if err != nil {
				return
			}
			srv.WriteTo(b[:k], a)
		}
	}()
	var cl net.Conn
	if err := c.Net.Node(1).Do(func() (err error) {
		cl, err = net.Dial("udp", fmt.Sprintf("198.18.100.2:%d", icUDPPort))
		return err
	}); err != nil {
		return nil, err
	}
	defer cl.Close()
	var s sample
	b, in := make([]byte, icMsgSize), make([]byte, 2048)
	for i := range n {
		binary.LittleEndian.PutUint64(b, uint64(i))
		t0 := time.Now()
		cl.SetDeadline(t0.Add(time.Second))
		if _, err := cl.Write(b); err != nil {
			return nil, err
		}
		for {
			k, err := cl.Read(in)
			if err != nil {
				return nil, fmt.Errorf("udp ping %d: %w", i, err)
			}
			if k >= 8 && binary.LittleEndian.Uint64(in) == uint64(i) {
				break
			}
		}
		s = append(s, time.Since(t0))
	}
	return s, nil
}

// tailEvents follows a daemon's JSON log from its current end and calls f for every
// transition for which match is true, until ctx ends.
func tailEvents(ctx context.Context, path string, match func(vcluster.LogEvent) bool, f func()) {
	file, err := os.Open(path)
	if err != nil {
		return
	}
	defer file.Close()
	if _, err := file.Seek(0, io.SeekEnd); err != nil {
		return
	}
	r := bufio.NewReader(file)
	var line []byte
	for ctx.Err() == nil {
		b, err := r.ReadBytes('\n')
		line = append(line, b...)
		if err != nil {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		var ev vcluster.LogEvent
		if json.Unmarshal(line, &ev) == nil && match(ev) {
			f()
		}
		line = line[:0]
	}
}

// icDaemonSession runs the streams inside the daemons: node 1's vigild drives its bench
// streams to node 2 over its own cluster transport and records every round trip and one-way
// message; node 2's records what it receives. The daemons nudge their streams on their own
// link-down events (unless the variant says --no-nudge). The benchmark only cuts, reads the
// daemons' logs for detection, and reads the records afterwards.
func icDaemonSession(v icVariant, cycles, pings int) (r icResult, err error) {
	var dirs [2]string
	for i := range dirs {
		if dirs[i], err = os.MkdirTemp("", "vigil-ic-bench-"); err != nil {
			return r, err
		}
		defer os.RemoveAll(dirs[i])
	}
	var extra []string
	if v.noNudge {
		extra = append(extra, "--no-nudge")
	}
	c, err := vcluster.Start(vcluster.Options{
		Nodes: 3, Interval: icInterval, Multiplier: icMultiplier, StallTimeout: 200 * time.Millisecond,
		Interconnect: nodeconf.Interconnect{
			Network: vcluster.ClusterNetwork, Policy: nodeconf.PolicyPrimary,
			ErrorThreshold: nodeconf.DefaultErrorThreshold, ErrorWindow: nodeconf.DefaultErrorWindow,
			ErrorClean: nodeconf.DefaultErrorClean,
		},
		Args: map[int][]string{
			1: append([]string{"--bench-dir", dirs[0], "--bench-peer", "2"}, extra...),
			2: append([]string{"--bench-dir", dirs[1]}, extra...),
		},
	})
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	if err := waitAllAlive(c, steadyTimeout); err != nil {
		return r, err
	}
	if r.udp, err = udpPingPong(c, pings); err != nil {
		return r, err
	}
	if err := os.WriteFile(filepath.Join(dirs[0], "start"), nil, 0o600); err != nil {
		return r, err
	}
	if err := waitFor(10*time.Second, func() bool { return logContains(c.Node(1).Log, "bench streams running") }); err != nil {
		return r, fmt.Errorf("node 1's bench streams did not start: %w", err)
	}
	running := time.Now()
	startMark := c.Node(1).LogLines()
	cuts, err := icCycles(c, cycles, &r)
	if err != nil {
		return r, fmt.Errorf("%w (%s)", err, icDump(c))
	}
	time.Sleep(300 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(dirs[0], "stop"), nil, 0o600); err != nil {
		return r, err
	}
	if err := waitFor(10*time.Second, func() bool { _, err := os.Stat(filepath.Join(dirs[0], "done")); return err == nil }); err != nil {
		return r, fmt.Errorf("node 1's bench streams did not stop: %w", err)
	}
	at := func(ns uint64) time.Time { return time.Unix(0, int64(ns)) }
	recs, err := readRecords(filepath.Join(dirs[0], "rr.bin"), 2)
	if err != nil {
		return r, err
	}
	var rrs []rrDone
	for _, x := range recs {
		rt := rrDone{at(x[0]), at(x[1])}
		rrs = append(rrs, rt)
		// Steady state: the round trips between the streams' start and the first cut.
		if len(cuts) > 0 && rt.start.After(running.Add(50*time.Millisecond)) && rt.end.Before(cuts[0].down) {
			r.rr = append(r.rr, rt.end.Sub(rt.start))
		}
	}
	sentRecs, err := readRecords(filepath.Join(dirs[0], "ow_sent.bin"), 2)
	if err != nil {
		return r, err
	}
	var ds []delivery
	waitFor(2*time.Second, func() bool { // node 2 flushes its records every 100 ms
		recv, err := readRecords(filepath.Join(dirs[1], "ow_recv.bin"), 3)
		ds = ds[:0]
		for _, x := range recv {
			ds = append(ds, delivery{seq: x[0], sent: at(x[1]), at: at(x[2])})
		}
		return err == nil && len(ds) >= len(sentRecs)
	})
	return r, icAnalyse(&r, c, startMark, cuts, ds, rrs, len(sentRecs))
}

// readRecords reads a file of little-endian uint64 tuples of n (the daemons' bench records).
func readRecords(path string, n int) ([][]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out [][]uint64
	for ; len(b) >= 8*n; b = b[8*n:] {
		x := make([]uint64, n)
		for i := range x {
			x[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		out = append(out, x)
	}
	return out, nil
}

func logContains(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

func waitFor(timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// icDump asks every daemon of a failed session for its goroutines (SIGQUIT: the Go runtime
// prints them and exits) and keeps the logs, for a daemon that stopped reporting.
func icDump(c *vcluster.Cluster) string {
	var kept []string
	for _, n := range c.Nodes {
		if p := n.Proc(); p != nil {
			p.Cmd.Process.Signal(syscall.SIGQUIT)
		}
	}
	time.Sleep(time.Second)
	for _, n := range c.Nodes {
		b, err := os.ReadFile(n.Log)
		if err != nil {
			continue
		}
		path := filepath.Join(os.TempDir(), fmt.Sprintf("vigil-ic-node%d-%d.log", n.ID, time.Now().Unix()))
		if os.WriteFile(path, b, 0o600) == nil {
			kept = append(kept, path)
		}
	}
	return "daemon logs with goroutine dumps: " + strings.Join(kept, " ")
}
