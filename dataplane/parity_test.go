//go:build linux

package dataplane

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"vigil/heartbeat"
)

// TestKernelMatchesGoDetector drives the XDP program and the bpf_timer sweep (through
// BPF_PROG_TEST_RUN, with the clock set in the config) and the pure Go detector with the same
// random schedules of frames, carrier changes and sweeps, and requires the same verdicts, the
// same events and the same slots and peers. The Go detector is the reference the rules are
// tested on; this holds the kernel to it. Seeds 4 and up turn on pause compensation and stall
// the sweeps now and then. Seeds 2, 3, 6, 7 and 8 stamp our own sender's send times
// (txstamps) and stop it now and then, so that echo silence is judged against them.
func TestKernelMatchesGoDetector(t *testing.T) {
	for seed := range uint64(9) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { checkParity(t, seed) })
	}
}

func checkParity(t *testing.T, seed uint64) {
	h := loadHeartbeatForTest(t)
	rng := rand.New(rand.NewPCG(seed, 42))
	kc := testConfig()
	kc.StallTimeoutNS = 20_000_000
	if seed%2 == 1 {
		kc.ProgressNS = 8_000_000
	}
	compensate := seed >= 4 && seed < 8
	stamped := seed%4 >= 2 || seed == 8
	if compensate {
		kc.CatchupNS = 1_000_000
	}
	gc := heartbeat.Config{
		ClusterID: kc.ClusterID, NodeID: kc.NodeID, Key: kc.Key, Incarnation: kc.Incarnation,
		DetectNS: kc.DetectNS, StallTimeoutNS: kc.StallTimeoutNS, ProgressNS: kc.ProgressNS,
		Rise: kc.Rise, NLinks: kc.NLinks, StartNS: kc.StartNS, CatchupNS: kc.CatchupNS,
	}
	// The kernel sees every test frame on loopback (ifindex 1) and is told before each frame
	// which link that is; the Go detector gets one fake interface per link.
	var mac [6]byte
	copy(mac[:], selfMAC)
	ifaces := map[int]heartbeat.Iface{100: {LinkID: 0, MAC: mac}, 101: {LinkID: 1, MAC: mac}}
	det, err := heartbeat.NewDetector(gc, []uint16{2, 3}, ifaces)
	if err != nil {
		t.Fatal(err)
	}
	// With compensation on, a twin without it shows that the schedule made it matter.
	gc0 := gc
	gc0.CatchupNS = 0
	det0, err := heartbeat.NewDetector(gc0, []uint16{2, 3}, ifaces)
	if err != nil {
		t.Fatal(err)
	}

	// With stamps on, a twin that never gets them shows that the schedule made them matter.
	detN, err := heartbeat.NewDetector(gc, []uint16{2, 3}, ifaces)
	if err != nil {
		t.Fatal(err)
	}

	now := uint64(testNow)
	var tx [2]heartbeat.TxStamp // our sender's stamps per link
	muted := false              // our sender stopped: no stamps, no echoes
	var seq [4][2]uint64        // data seq per peer and link
	var echoSeq [4][2]uint64    // our seq per peer and link
	inc := [4]uint64{2: 5, 3: 9}
	progress := [4]uint64{}
	silent := [4]bool{3: stamped} // daemon stalled: no data frames (echo-only slots)
	cut := [4][2]bool{}           // link cut: no frames at all
	var linksDown uint32          // local carrier
	events, differ, differStamps := 0, 0, 0
	sweep := func(step int) {
		gev := compareSweep(t, step, h, det, now)
		events += len(gev)
		if !slices.Equal(gev, det0.Sweep(now)) {
			differ++
		}
		if !slices.Equal(gev, detN.Sweep(now)) {
			differStamps++
		}

	}
	// deliver runs one frame from peer p on link l through the XDP program and the detectors.
	deliver := func(step int, f heartbeat.Frame, p uint16, l uint8, key heartbeat.Key) {
		payload := f.AppendEncode(nil, key)
		if err := h.SetInterface(1, l, selfMAC); err != nil {
			t.Fatal(err)
		}
		var src [6]byte
		copy(src[:], peerMAC)
		src[5] = byte(p)
		kv, out, err := h.RunXDP(ethFrame(broadcast, src[:], payload))
		if err != nil {
			t.Fatal(err)
		}
		gv, reply := det.Receive(now, 100+int(l), src, payload)
		det0.Receive(now, 100+int(l), src, payload)
		detN.Receive(now, 100+int(l), src, payload)
		wantVerdict := uint32(xdpDrop)
		if reply != nil {
			wantVerdict = xdpTX
			if string(out[14:14+heartbeat.FrameSize]) != string(reply) {
				t.Fatalf("step %d: reflected frame differs:\nkernel % x\ngo     % x", step, out[14:78], reply)
			}
		}
		if kv != wantVerdict {
			t.Fatalf("step %d: frame %+v: kernel verdict %d, Go verdict %v (reply %v)", step, f, kv, gv, reply != nil)
		}
	}
	for step := range 1500 {
		now += uint64(rng.IntN(700_000)) + 1 // up to 0.7 ms per step
		kc.NowNS = now
		kc.LinksDown = linksDown
		if err := h.SetConfig(kc); err != nil {
			t.Fatal(err)
		}
		if stamped && !muted && rng.IntN(4) != 0 { // our sender sends (not at every step)
			for l := range uint8(2) {
				tx[l] = tx[l].Next(now, now+1_500_000)
				h.StoreTx(l, tx[l])
				det.SetTx(l, tx[l])
				det0.SetTx(l, tx[l])
				// The kernels of silent peers answer every request (the others answer at
				// random below, with their data frames).
				for p := uint16(2); p <= 3; p++ {
					if silent[p] && !cut[p][l] {
						echoSeq[p][l]++
						deliver(step, heartbeat.Frame{Flags: heartbeat.FlagEchoReply, LinkID: l, ClusterID: testCluster,
							SrcNode: testSelf, EchoNode: p, Incarnation: testInc, Seq: echoSeq[p][l], SendNS: now - 50_000, EchoNS: now}, p, l, testKey)
					}
				}
			}
		}
		if stamped && rng.IntN(40) == 0 { // our own sender stops or resumes
			muted = !muted
		}
		switch r := rng.IntN(100); {
		case r < 3: // a peer's daemon stops or resumes
			p := 2 + rng.IntN(2)
			silent[p] = !silent[p]
		case r < 6: // a link to a peer is cut or restored
			p, l := 2+rng.IntN(2), rng.IntN(2)
			cut[p][l] = !cut[p][l]
		case r < 8: // local carrier change, then an immediate sweep as the daemon does
			l := uint8(rng.IntN(2))
			linksDown ^= 1 << l
			det.SetLinkDown(l, linksDown&(1<<l) != 0)
			det0.SetLinkDown(l, linksDown&(1<<l) != 0)
			detN.SetLinkDown(l, linksDown&(1<<l) != 0)
			kc.LinksDown = linksDown
			if err := h.SetConfig(kc); err != nil {
				t.Fatal(err)
			}
			sweep(step)
		case r < 9: // a daemon restart: new incarnation
			inc[2+rng.IntN(2)]++
		case r < 10: // progress moves
			progress[2+rng.IntN(2)]++
		case r < 60: // a frame
			p, l := uint16(2+rng.IntN(2)), uint8(rng.IntN(2))
			if cut[p][l] {
				continue
			}
			f := heartbeat.Frame{LinkID: l, ClusterID: testCluster, SendNS: now - uint64(rng.IntN(200_000))}
			if rng.IntN(2) == 0 && !silent[p] {
				seq[p][l] += 1 + uint64(rng.IntN(2)) // sometimes a frame is lost
				if rng.IntN(8) == 0 {
					seq[p][l]-- // and sometimes one is replayed
				}
				f.Flags, f.SrcNode, f.Incarnation, f.Seq, f.Progress = heartbeat.FlagEchoRequest, p, inc[p], seq[p][l], progress[p]
			} else {
				if stamped && muted {
					continue // no request of ours to answer
				}
				echoSeq[p][l]++
				f.Flags, f.SrcNode, f.EchoNode, f.Incarnation, f.Seq, f.EchoNS = heartbeat.FlagEchoReply, testSelf, p, testInc, echoSeq[p][l], now
			}
			key := testKey
			if rng.IntN(30) == 0 {
				key = otherKey
			}
			deliver(step, f, p, l, key)
		case r < 62 && compensate: // this node stalls: no frame, no sweep for 2-8 ms
			now += 2_000_000 + uint64(rng.IntN(6_000_000))
			kc.NowNS = now
			if err := h.SetConfig(kc); err != nil {
				t.Fatal(err)
			}
			sweep(step)
		default:
			sweep(step)
		}
	}
	kcount, err := h.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if gcount := det.Counters(); kcount != gcount {
		t.Errorf("counters: kernel %v, Go %v", kcount, gcount)
	}
	// The schedule must have exercised the rules, not compared two idle detectors.
	if events < 50 || kcount[heartbeat.CounterReplay] == 0 || kcount[heartbeat.CounterBadMAC] == 0 {
		t.Errorf("weak schedule: %d events, counters %v", events, kcount)
	}
	if compensate && differ == 0 {
		t.Errorf("weak schedule: pause compensation never changed a sweep's events")
	}
	if !compensate && differ != 0 {
		t.Errorf("%d sweeps differ from the twin detector with compensation off", differ)
	}
	if stamped && differStamps == 0 {
		t.Errorf("weak schedule: the sender's stamps never changed a sweep's events")
	}
	if !stamped && differStamps != 0 {
		t.Errorf("%d sweeps differ from the twin detector without stamps", differStamps)
	}
	t.Logf("%d events agreed; %d sweeps changed by pause compensation, %d by the sender's stamps; counters %v",
		events, differ, differStamps, kcount)
}

// compareSweep sweeps both at now, compares, and returns the events.
func compareSweep(t *testing.T, step int, h *Heartbeat, det *heartbeat.Detector, now uint64) []heartbeat.Event {
	t.Helper()
	if err := h.Sweep(); err != nil {
		t.Fatal(err)
	}
	kev, err := h.PendingEvents()
	if err != nil {
		t.Fatal(err)
	}
	gev := det.Sweep(now)
	if !slices.Equal(kev, gev) {
		t.Fatalf("step %d at %d: events differ\nkernel %v\ngo     %v", step, now, kev, gev)
	}
	for _, p := range []uint16{2, 3} {
		kp, err := h.Peer(p)
		if err != nil {
			t.Fatal(err)
		}
		if gp := det.Peer(p); kp != gp {
			t.Fatalf("step %d: peer %d: kernel %+v, Go %+v", step, p, kp, gp)
		}
		for l := range uint8(2) {
			ks, err := h.Slot(p, l)
			if err != nil {
				t.Fatal(err)
			}
			if gs := det.Slot(p, l); ks != gs {
				t.Fatalf("step %d: slot %d/%d:\nkernel %+v\ngo     %+v", step, p, l, ks, gs)
			}
		}
	}
	return gev
}
