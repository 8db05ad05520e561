//go:build linux

package dataplane

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// The steering program as a function: frames in through BPF_PROG_TEST_RUN, verdict and frame
// out, with the link state written into the heartbeat plane's slots the way the sweep writes it.

var (
	steerSelf  = netip.MustParseAddr("198.18.100.1")
	steerPeer2 = netip.MustParseAddr("198.18.100.2")
	steerPeer3 = netip.MustParseAddr("198.18.100.3")
	// This node's MACs on links 0 and 1, and the peers' MACs learned by the heartbeat plane.
	ownMAC   = [2]net.HardwareAddr{{0x02, 0, 0, 0xa, 0, 1}, {0x02, 0, 0, 0xb, 0, 1}}
	peerMAC2 = [2]net.HardwareAddr{{0x02, 0, 0, 0xa, 0, 2}, {0x02, 0, 0, 0xb, 0, 2}}
	peerMAC3 = [2]net.HardwareAddr{{0x02, 0, 0, 0xa, 0, 3}, {0x02, 0, 0, 0xb, 0, 3}}
)

// lo is the interface BPF_PROG_TEST_RUN runs on; the other link's ifindex needs not exist
// because a redirect is only returned, not carried out.
const (
	lo       = 1
	otherIdx = 4242
)

type steerRig struct {
	t  *testing.T
	hb *Heartbeat
	s  *Steer
}

// newSteerRig loads both programs unpinned, with peers 2 and 3 at their cluster addresses and
// the given ifindexes for links 0 and 1.
func newSteerRig(t *testing.T, policy SteerPolicy, if0, if1 int) *steerRig {
	t.Helper()
	hb := loadHeartbeatForTest(t)
	s, err := LoadSteer(SteerOptions{Heartbeat: hb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := s.SetConfig(policy, []SteerLink{{if0, ownMAC[0]}, {if1, ownMAC[1]}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDests(map[netip.Addr]uint16{steerPeer2: 2, steerPeer3: 3}); err != nil {
		t.Fatal(err)
	}
	return &steerRig{t, hb, s}
}

// setLink writes the state of (peer, link) as the sweep would, with the MAC XDP learned.
func (r *steerRig) setLink(peer uint16, linkID uint8, up bool, mac net.HardwareAddr) {
	r.t.Helper()
	var slot heartbeatHbSlot
	idx := uint32(peer)*maxLinks + uint32(linkID)
	if err := r.hb.objs.Slots.Lookup(idx, &slot); err != nil {
		r.t.Fatal(err)
	}
	slot.State = 0
	if up {
		slot.State = 1
	}
	slot.PeerMac = [6]byte{}
	copy(slot.PeerMac[:], mac)
	if err := r.hb.objs.Slots.Put(idx, &slot); err != nil {
		r.t.Fatal(err)
	}
}

// setHeard sets when (peer, link) last heard a data frame.
func (r *steerRig) setHeard(peer uint16, linkID uint8, ns uint64) {
	r.t.Helper()
	var slot heartbeatHbSlot
	idx := uint32(peer)*maxLinks + uint32(linkID)
	if err := r.hb.objs.Slots.Lookup(idx, &slot); err != nil {
		r.t.Fatal(err)
	}
	slot.LastDataNs = ns
	if err := r.hb.objs.Slots.Put(idx, &slot); err != nil {
		r.t.Fatal(err)
	}
}

func (r *steerRig) allUp() {
	for l := range uint8(2) {
		r.setLink(2, l, true, peerMAC2[l])
		r.setLink(3, l, true, peerMAC3[l])
	}
}

// ipFrame builds Ethernet + IPv4 + 4 bytes of ports (TCP or UDP, protocol proto), addressed the
// way the kernel addresses a packet routed to a cluster address (placeholder neighbour MAC).
func ipFrame(src, dst netip.Addr, proto byte, sport, dport uint16) []byte {
	b := append(append([]byte{}, PlaceholderMAC...), ownMAC[0]...)
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+20)
	ip[8] = 64
	ip[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	b = append(b, ip...)
	l4 := make([]byte, 20)
	binary.BigEndian.PutUint16(l4[0:], sport)
	binary.BigEndian.PutUint16(l4[2:], dport)
	return append(b, l4...)
}

const (
	protoTCP  = 6
	protoUDP  = 17
	protoICMP = 1
)

// linkOf returns which link a steered frame is addressed for: the link whose own MAC is its
// source and whose learned peer MAC is its destination; -1 if none.
func linkOf(frame []byte, peerMACs [2]net.HardwareAddr) int {
	for l := range 2 {
		if bytes.Equal(frame[6:12], ownMAC[l]) && bytes.Equal(frame[0:6], peerMACs[l]) {
			return l
		}
	}
	return -1
}

func TestSteerTable(t *testing.T) {
	requireRoot(t)
	type linkState struct {
		peer uint16
		link uint8
		up   bool
	}
	for _, tc := range []struct {
		name     string
		policy   SteerPolicy
		if0, if1 int // ifindexes of links 0 and 1; the frame leaves on lo
		down     []linkState
		bad      []uint8
		heard    [2]uint64 // last_data_ns of peer 2's links
		noMAC    bool      // peer 2 never heard: no MAC learned
		frame    []byte
		verdict  int32
		wantLink int // -1: the frame must leave unchanged
	}{
		{
			name: "primary: link 0 live, leaves on it", policy: SteerPrimary, if0: lo, if1: otherIdx,
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCPass, wantLink: 0,
		},
		{
			name: "primary: link 0 down, redirected to link 1", policy: SteerPrimary, if0: lo, if1: otherIdx,
			down:  []linkState{{2, 0, false}},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCRedirect, wantLink: 1,
		},
		{
			name: "primary: routed via link 1, redirected to the primary", policy: SteerPrimary, if0: otherIdx, if1: lo,
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCRedirect, wantLink: 0,
		},
		{
			name: "primary: link 0 down for peer 2 only, peer 3 stays on it", policy: SteerPrimary, if0: lo, if1: otherIdx,
			down:  []linkState{{2, 0, false}},
			frame: ipFrame(steerSelf, steerPeer3, protoUDP, 40000, 7000), verdict: TCPass, wantLink: 0,
		},
		{
			name: "error-rate rule: link 0 bad, traffic moves off it", policy: SteerPrimary, if0: lo, if1: otherIdx,
			bad:   []uint8{0},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCRedirect, wantLink: 1,
		},
		{
			name: "every up link bad: the bad one is used rather than none", policy: SteerPrimary, if0: lo, if1: otherIdx,
			down: []linkState{{2, 1, false}}, bad: []uint8{0},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCPass, wantLink: 0,
		},
		{
			name: "both links down: blind on the link heard last", policy: SteerSpread, if0: lo, if1: otherIdx,
			down: []linkState{{2, 0, false}, {2, 1, false}}, heard: [2]uint64{100, 200},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCRedirect, wantLink: 1,
		},
		{
			name: "both links down, link 0 heard last", policy: SteerPrimary, if0: otherIdx, if1: lo,
			down: []linkState{{2, 0, false}, {2, 1, false}}, heard: [2]uint64{300, 200},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCRedirect, wantLink: 0,
		},
		{
			name: "peer never heard on any link: dropped", policy: SteerSpread, if0: lo, if1: otherIdx,
			noMAC: true,
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), verdict: TCDrop, wantLink: -1,
		},
		{
			name: "spread: link 1 down, every flow on link 0", policy: SteerSpread, if0: otherIdx, if1: lo,
			down:  []linkState{{2, 1, false}},
			frame: ipFrame(steerSelf, steerPeer2, protoTCP, 40001, 7000), verdict: TCRedirect, wantLink: 0,
		},
		{
			name: "not a cluster address: untouched", policy: SteerSpread, if0: lo, if1: otherIdx,
			frame:   ipFrame(steerSelf, netip.MustParseAddr("198.18.1.2"), protoTCP, 40000, 7000),
			verdict: TCNext, wantLink: -1,
		},
		{
			name: "ARP: untouched", policy: SteerSpread, if0: lo, if1: otherIdx,
			frame:   append(append(append([]byte{}, PlaceholderMAC...), ownMAC[0]...), 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1),
			verdict: TCNext, wantLink: -1,
		},
		{
			name: "runt frame: untouched", policy: SteerSpread, if0: lo, if1: otherIdx,
			frame: make([]byte, 14), verdict: TCNext, wantLink: -1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSteerRig(t, tc.policy, tc.if0, tc.if1)
			r.allUp()
			for _, d := range tc.down {
				mac := peerMAC2[d.link]
				if d.peer == 3 {
					mac = peerMAC3[d.link]
				}
				r.setLink(d.peer, d.link, d.up, mac)
			}
			for l, ns := range tc.heard {
				r.setHeard(2, uint8(l), ns)
			}
			if tc.noMAC {
				r.setLink(2, 0, false, nil)
				r.setLink(2, 1, false, nil)
			}
			for _, l := range tc.bad {
				if err := r.s.SetBad(l, true); err != nil {
					t.Fatal(err)
				}
			}
			verdict, out, err := r.s.Run(tc.frame, lo)
			if err != nil {
				t.Fatal(err)
			}
			if verdict != tc.verdict {
				t.Errorf("verdict %d, want %d", verdict, tc.verdict)
			}
			if tc.wantLink < 0 {
				if !bytes.Equal(out, tc.frame) {
					t.Errorf("frame changed:\n got % x\nwant % x", out, tc.frame)
				}
				return
			}
			macs := peerMAC2
			if bytes.Equal(tc.frame[30:34], steerPeer3.AsSlice()) {
				macs = peerMAC3
			}
			if got := linkOf(out, macs); got != tc.wantLink {
				t.Errorf("frame addressed for link %d (dst %v src %v), want link %d",
					got, net.HardwareAddr(out[0:6]), net.HardwareAddr(out[6:12]), tc.wantLink)
			}
			if !bytes.Equal(out[12:], tc.frame[12:]) {
				t.Error("the program changed more than the Ethernet addresses")
			}
		})
	}
}

// Failover and back: the same flow moves to link 1 when link 0 goes down and returns when it
// comes back (primary policy), and the traffic counters follow it.
func TestSteerFailoverAndCounters(t *testing.T) {
	r := newSteerRig(t, SteerPrimary, lo, otherIdx)
	r.allUp()
	frame := ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000)
	run := func() (int32, int) {
		t.Helper()
		v, out, err := r.s.Run(frame, lo)
		if err != nil {
			t.Fatal(err)
		}
		return v, linkOf(out, peerMAC2)
	}
	if v, l := run(); v != TCPass || l != 0 {
		t.Fatalf("all up: verdict %d link %d, want pass on link 0", v, l)
	}
	r.setLink(2, 0, false, peerMAC2[0])
	if v, l := run(); v != TCRedirect || l != 1 {
		t.Fatalf("link 0 down: verdict %d link %d, want redirect to link 1", v, l)
	}
	r.setLink(2, 0, true, peerMAC2[0])
	if v, l := run(); v != TCPass || l != 0 {
		t.Fatalf("link 0 back: verdict %d link %d, want pass on link 0", v, l)
	}
	for l, want := range []uint64{2, 1} {
		c, err := r.s.Traffic(2, uint8(l))
		if err != nil {
			t.Fatal(err)
		}
		if c.Packets != want || c.Bytes != want*uint64(len(frame)) {
			t.Errorf("link %d traffic %+v, want %d packets of %d bytes", l, c, want, len(frame))
		}
	}
	ctr, err := r.s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[SteerSteered] != 2 || ctr[SteerRedirected] != 1 {
		t.Errorf("counters %v, want 2 steered and 1 redirected", ctr)
	}
}

// Spreading: many flows over two live links land on both, roughly evenly; each flow always on
// the same link; with one link, all on it.
func TestSteerSpreadsFlows(t *testing.T) {
	r := newSteerRig(t, SteerSpread, lo, otherIdx)
	r.allUp()
	const flows = 1000
	count := [2]int{}
	first := map[uint16]int{}
	for i := range uint16(flows) {
		for range 2 { // twice: the choice must be stable per flow
			_, out, err := r.s.Run(ipFrame(steerSelf, steerPeer2, protoTCP, 30000+i, 7000), lo)
			if err != nil {
				t.Fatal(err)
			}
			l := linkOf(out, peerMAC2)
			if l < 0 {
				t.Fatalf("flow %d not steered", i)
			}
			if prev, seen := first[i]; seen {
				if prev != l {
					t.Fatalf("flow %d moved from link %d to %d with no change of state", i, prev, l)
				}
				continue
			}
			first[i] = l
			count[l]++
		}
	}
	// A fair coin gives 500 ± 16 (one standard deviation); allow 5.
	if count[0] < 420 || count[1] < 420 {
		t.Errorf("1000 flows spread %v over two links", count)
	}
	// UDP and ICMP flows are steered too.
	for _, f := range [][]byte{ipFrame(steerSelf, steerPeer2, protoUDP, 1, 2), ipFrame(steerSelf, steerPeer2, protoICMP, 0, 0)} {
		if _, out, err := r.s.Run(f, lo); err != nil || linkOf(out, peerMAC2) < 0 {
			t.Errorf("protocol %d not steered (err %v)", f[23], err)
		}
	}
	// Only flows of the dead link move.
	r.setLink(2, 1, false, peerMAC2[1])
	for i := range uint16(flows) {
		_, out, err := r.s.Run(ipFrame(steerSelf, steerPeer2, protoTCP, 30000+i, 7000), lo)
		if err != nil {
			t.Fatal(err)
		}
		if l := linkOf(out, peerMAC2); l != 0 {
			t.Fatalf("flow %d on link %d with link 1 down", i, l)
		}
	}
}

// The second pass after a redirect: a frame already addressed for the link it leaves on passes
// as it is, even when the state changed in between (no ping-pong between links).
func TestSteerSecondPass(t *testing.T) {
	r := newSteerRig(t, SteerPrimary, otherIdx, lo)
	r.allUp()
	frame := ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000)
	copy(frame[0:6], peerMAC2[1])
	copy(frame[6:12], ownMAC[1])
	// The primary is link 0, but this frame was already redirected onto link 1 (lo).
	v, out, err := r.s.Run(frame, lo)
	if err != nil {
		t.Fatal(err)
	}
	if v != TCPass || linkOf(out, peerMAC2) != 1 {
		t.Errorf("verdict %d link %d, want pass on link 1", v, linkOf(out, peerMAC2))
	}
}

// The steering program reads the map the heartbeat sweep writes: a link the sweep takes down
// (its slot goes stale) loses the traffic, without user space writing any state.
func TestSteerFollowsSweep(t *testing.T) {
	r := newSteerRig(t, SteerPrimary, lo, otherIdx)
	r.allUp()
	// Link 0 last heard long ago, link 1 just now (the test clock is testNow): the sweep takes
	// link 0 down and keeps link 1 up.
	r.setHeard(2, 0, 1)
	r.setHeard(2, 1, testNow)
	if err := r.hb.Sweep(); err != nil {
		t.Fatal(err)
	}
	v, out, err := r.s.Run(ipFrame(steerSelf, steerPeer2, protoTCP, 40000, 7000), lo)
	if err != nil {
		t.Fatal(err)
	}
	if v != TCRedirect || linkOf(out, peerMAC2) != 1 {
		t.Errorf("after the sweep took link 0 down: verdict %d link %d, want redirect to link 1", v, linkOf(out, peerMAC2))
	}
	ctr, err := r.s.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if ctr[SteerBlind] != 0 || ctr[SteerRedirected] != 1 {
		t.Errorf("counters %v", ctr)
	}
}

// The XDP program counts MAC failures per receiving link (an input of the error-rate rule), and
// nothing else there.
func TestHeartbeatCountsBadMACPerLink(t *testing.T) {
	h := loadHeartbeatForTest(t) // lo is link 0
	if err := h.SetInterface(1, 1, selfMAC); err != nil {
		t.Fatal(err)
	}
	good := dataFrame(2, 11)
	good.LinkID = 1
	for _, f := range [][]byte{
		ethFrame(broadcast, peerMAC, encode(good, otherKey)),
		ethFrame(broadcast, peerMAC, poke(encode(good, testKey), 40, 0xee)),
		ethFrame(broadcast, peerMAC, encode(good, testKey)), // valid: not counted
	} {
		if _, _, err := h.RunXDP(f); err != nil {
			t.Fatal(err)
		}
	}
	got, err := h.LinkBadMAC()
	if err != nil {
		t.Fatal(err)
	}
	if got != [maxLinks]uint64{0, 2, 0, 0} {
		t.Errorf("bad MACs per link %v, want 2 on link 1", got)
	}
}
