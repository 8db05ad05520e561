package heartbeat

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The node under test is node 1 of cluster 7, with peers 2 and 3 on links 0 (ifindex 10) and 1
// (ifindex 11). Logical time starts at t0, not zero: zero means never.
const (
	testCluster = 7
	self        = 1
	selfInc     = 100
	ms          = uint64(time.Millisecond)
	t0          = uint64(time.Second)
)

var (
	testKey  = Key{0: 1, 1: 2, 2: 3, 15: 0x42}
	otherKey = Key{0: 9}
	ifaceMAC = [MaxLinks][6]byte{{0x02, 0, 0, 0, 1, 0}, {0x02, 0, 0, 0, 1, 1}}
)

func peerMAC(id uint16) [6]byte { return [6]byte{0x02, 0, 0, 0, byte(id), 0xaa} }

func testConfig() Config {
	c := NewConfig(time.Millisecond, 3)
	c.ClusterID = testCluster
	c.NodeID = self
	c.Key = testKey
	c.Incarnation = selfInc
	c.StallTimeoutNS = 10 * ms
	c.NLinks = 2
	c.StartNS = t0
	return c
}

func testIfaces() map[int]Iface {
	return map[int]Iface{10: {LinkID: 0, MAC: ifaceMAC[0]}, 11: {LinkID: 1, MAC: ifaceMAC[1]}}
}

func newTestDetector(t testing.TB, mods ...func(*Config)) *Detector {
	t.Helper()
	return newDetectorOf(t, []uint16{2, 3}, mods...)
}

func newDetectorOf(t testing.TB, peers []uint16, mods ...func(*Config)) *Detector {
	t.Helper()
	cfg := testConfig()
	for _, m := range mods {
		m(&cfg)
	}
	d, err := NewDetector(cfg, peers, testIfaces())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// dataFrame is what peer sends on link: a data heartbeat asking for an echo.
func dataFrame(peer uint16, link uint8, inc, seq uint64) Frame {
	return Frame{Flags: FlagEchoRequest, LinkID: link, ClusterID: testCluster, SrcNode: peer,
		Incarnation: inc, Seq: seq, SendNS: t0 - 500, Progress: 77}
}

// echoFrame is our own frame seq on link, sent at sendNS and reflected by peer.
func echoFrame(peer uint16, link uint8, seq, sendNS uint64) Frame {
	return Frame{Flags: FlagEchoReply, LinkID: link, ClusterID: testCluster, SrcNode: self,
		EchoNode: peer, Incarnation: selfInc, Seq: seq, SendNS: sendNS, EchoNS: 123}
}

func encode(f Frame) []byte { return f.AppendEncode(nil, testKey) }

// seal recomputes the MAC of raw frame bytes, so that a test reaches the checks after it.
func seal(b []byte) {
	k0, k1 := testKey.halves()
	binary.LittleEndian.PutUint64(b[macOffset:], sipHash24(k0, k1, b[:macOffset]))
}

func mustReceive(t *testing.T, d *Detector, now uint64, ifindex int, f Frame, want Counter) []byte {
	t.Helper()
	got, reply := d.Receive(now, ifindex, peerMAC(f.SrcNode), encode(f))
	if got != want {
		t.Fatalf("Receive(%+v) = %v, want %v", f, got, want)
	}
	return reply
}

func TestReceiveData(t *testing.T) {
	d := newTestDetector(t)
	f := dataFrame(2, 1, 5, 10)
	payload := append(encode(f), make([]byte, 10)...) // Ethernet padding is ignored
	verdict, reply := d.Receive(t0, 11, peerMAC(2), payload)
	if verdict != CounterData || reply == nil {
		t.Fatalf("Receive = %v, reply %v; want data with a reply", verdict, reply != nil)
	}
	want := Slot{LastDataNS: t0, Incarnation: 5, LastSeq: 10, RxData: 1, Progress: 77,
		ProgressNS: t0, Rise: 1, PeerMAC: peerMAC(2)}
	if got := d.Slot(2, 1); got != want {
		t.Errorf("slot 2/1 = %+v\nwant       %+v", got, want)
	}
	if got := d.Slot(2, 0); got != (Slot{}) {
		t.Errorf("slot 2/0 changed: %+v", got)
	}
	c := d.Counters()
	if c[CounterData] != 1 || c[CounterEchoSent] != 1 {
		t.Errorf("counters %v, want one data and one echo sent", c)
	}

	// Without FlagEchoRequest the frame is recorded and not reflected.
	f.Flags, f.Seq = 0, 11
	if reply := mustReceive(t, d, t0+ms, 11, f, CounterData); reply != nil {
		t.Error("a frame without FlagEchoRequest was reflected")
	}
	if s := d.Slot(2, 1); s.Rise != 2 || s.LastSeq != 11 || s.Lost != 0 {
		t.Errorf("after a second frame: %+v", s)
	}
}

// TestReceiveRejects sends frames that fail exactly one check (or several, to pin the order
// of the checks) to a detector that already recorded peer 2 on link 0, and checks that each is
// counted under the right reason and changes nothing else.
func TestReceiveRejects(t *testing.T) {
	// The state the frames are sent to: peer 2's incarnation 5 up to seq 10 on link 0, and
	// our seq 10 reflected by peer 2 on link 0.
	prepare := func(t *testing.T) *Detector {
		d := newTestDetector(t)
		mustReceive(t, d, t0, 10, dataFrame(2, 0, 5, 10), CounterData)
		mustReceive(t, d, t0, 10, echoFrame(2, 0, 10, t0-100), CounterEchoReply)
		return d
	}
	// Each of these alone would be accepted.
	data := func(mod func(*Frame)) []byte {
		f := dataFrame(2, 0, 5, 11)
		mod(&f)
		return encode(f)
	}
	echo := func(mod func(*Frame)) []byte {
		f := echoFrame(2, 0, 11, t0)
		mod(&f)
		return encode(f)
	}
	bytesOf := func(mod func([]byte)) []byte {
		b := data(func(*Frame) {})
		mod(b)
		return b
	}
	resealed := func(mod func([]byte)) []byte {
		return bytesOf(func(b []byte) { mod(b); seal(b) })
	}
	forgedFrame := dataFrame(2, 0, 5, 11)
	forged := forgedFrame.AppendEncode(nil, otherKey)

	for _, tc := range []struct {
		name    string
		ifindex int
		payload []byte
		want    Counter
	}{
		{"interface without a link", 99, data(func(*Frame) {}), CounterNotConfigured},
		{"garbage on an interface without a link", 99, []byte{1}, CounterNotConfigured},
		{"empty", 10, nil, CounterMalformed},
		{"short", 10, data(func(*Frame) {})[:FrameSize-1], CounterMalformed},
		{"version 2", 10, resealed(func(b []byte) { b[0] = 2 }), CounterVersion},
		{"version 0", 10, resealed(func(b []byte) { b[0] = 0 }), CounterVersion},
		{"reserved0 set", 10, resealed(func(b []byte) { b[3] = 1 }), CounterMalformed},
		{"reserved1 set", 10, resealed(func(b []byte) { b[15] = 0x80 }), CounterMalformed},
		{"both echo flags", 10, data(func(f *Frame) { f.Flags = FlagEchoRequest | FlagEchoReply }), CounterMalformed},
		{"unknown flag", 10, data(func(f *Frame) { f.Flags |= 1 << 2 }), CounterMalformed},
		{"link id MaxLinks", 10, data(func(f *Frame) { f.LinkID = MaxLinks }), CounterMalformed},
		{"link id 255", 10, data(func(f *Frame) { f.LinkID = 255 }), CounterMalformed},
		{"other cluster", 10, data(func(f *Frame) { f.ClusterID = 8 }), CounterCluster},
		{"forged with another key", 10, forged, CounterBadMAC},
		{"payload altered", 10, bytesOf(func(b []byte) { b[24]++ }), CounterBadMAC},
		{"MAC altered", 10, bytesOf(func(b []byte) { b[FrameSize-1] ^= 1 }), CounterBadMAC},
		{"sender 0", 10, data(func(f *Frame) { f.SrcNode = 0 }), CounterUnknownPeer},
		{"sender MaxNodes", 10, data(func(f *Frame) { f.SrcNode = MaxNodes }), CounterUnknownPeer},
		{"sender 0xffff", 10, data(func(f *Frame) { f.SrcNode = 0xffff }), CounterUnknownPeer},
		{"sender is this node", 10, data(func(f *Frame) { f.SrcNode = self }), CounterUnknownPeer},
		{"sender not a configured peer", 10, data(func(f *Frame) { f.SrcNode = 5 }), CounterUnknownPeer},
		{"data frame naming a reflector", 10, data(func(f *Frame) { f.EchoNode = 3 }), CounterUnknownPeer},
		{"reply to another node's request", 10, echo(func(f *Frame) { f.SrcNode = 3 }), CounterUnknownPeer},
		{"reply reflected by 0", 10, echo(func(f *Frame) { f.EchoNode = 0 }), CounterUnknownPeer},
		{"reply reflected by this node", 10, echo(func(f *Frame) { f.EchoNode = self }), CounterUnknownPeer},
		{"reply reflected by MaxNodes", 10, echo(func(f *Frame) { f.EchoNode = MaxNodes }), CounterUnknownPeer},
		{"reply reflected by a stranger", 10, echo(func(f *Frame) { f.EchoNode = 5 }), CounterUnknownPeer},
		{"data on the wrong link", 11, data(func(*Frame) {}), CounterWrongLink},
		{"reply on the wrong link", 11, echo(func(*Frame) {}), CounterWrongLink},
		{"data seq repeated", 10, data(func(f *Frame) { f.Seq = 10 }), CounterReplay},
		{"data seq older", 10, data(func(f *Frame) { f.Seq = 9 }), CounterReplay},
		{"data incarnation older", 10, data(func(f *Frame) { f.Incarnation, f.Seq = 4, 1000 }), CounterReplay},
		{"reply seq repeated", 10, echo(func(f *Frame) { f.Seq = 10 }), CounterReplay},
		{"reply seq older", 10, echo(func(f *Frame) { f.Seq = 9 }), CounterReplay},
		{"reply to our previous incarnation", 10, echo(func(f *Frame) { f.Incarnation = selfInc - 1 }), CounterReplay},
		{"reply to a later incarnation", 10, echo(func(f *Frame) { f.Incarnation = selfInc + 1 }), CounterReplay},
		// The order of the checks.
		{"version before MAC", 10, bytesOf(func(b []byte) { b[0] = 9 }), CounterVersion},
		{"reserved before MAC", 10, bytesOf(func(b []byte) { b[3] = 1 }), CounterMalformed},
		{"link id before cluster", 10, data(func(f *Frame) { f.LinkID, f.ClusterID = 7, 8 }), CounterMalformed},
		{"cluster before MAC", 10, func() []byte {
			f := dataFrame(2, 0, 5, 11)
			f.ClusterID = 8
			return f.AppendEncode(nil, otherKey)
		}(), CounterCluster},
		{"peer before link", 11, data(func(f *Frame) { f.SrcNode = 5 }), CounterUnknownPeer},
		{"link before replay", 11, data(func(f *Frame) { f.Seq = 1 }), CounterWrongLink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := prepare(t)
			slots, peers, counters := d.slots, d.peers, d.Counters()
			got, reply := d.Receive(t0+ms, tc.ifindex, peerMAC(2), tc.payload)
			if got != tc.want || reply != nil {
				t.Fatalf("Receive = %v (reply %v), want %v", got, reply != nil, tc.want)
			}
			if d.slots != slots || d.peers != peers {
				t.Error("a rejected frame changed the slots or peers")
			}
			counters[tc.want]++
			if d.Counters() != counters {
				t.Errorf("counters %v, want %v", d.Counters(), counters)
			}
		})
	}
}

func TestReceiveSequenceGap(t *testing.T) {
	d := newTestDetector(t)
	now := t0
	for _, tc := range []struct{ seq, lost uint64 }{
		{1, 0}, {2, 0}, {5, 2}, {6, 2}, {100, 95},
	} {
		now += ms
		mustReceive(t, d, now, 10, dataFrame(3, 0, 1, tc.seq), CounterData)
		if s := d.Slot(3, 0); s.Lost != tc.lost || s.LastSeq != tc.seq {
			t.Errorf("after seq %d: lost %d, last seq %d; want %d, %d", tc.seq, s.Lost, s.LastSeq, tc.lost, tc.seq)
		}
	}
	if s := d.Slot(3, 0); s.RxData != 5 || s.Rise != 5 {
		t.Errorf("rx %d, rise %d; want 5, 5", s.RxData, s.Rise)
	}
}

func TestReceiveFirstFrameCountsNoLoss(t *testing.T) {
	d := newTestDetector(t)
	// However large its seq, and even with incarnation 0, the first frame starts the count.
	mustReceive(t, d, t0, 10, dataFrame(2, 0, 0, 1000), CounterData)
	if s := d.Slot(2, 0); s.Lost != 0 || s.LastSeq != 1000 {
		t.Errorf("first frame: lost %d, last seq %d", s.Lost, s.LastSeq)
	}
}

func TestReceiveIncarnationRestart(t *testing.T) {
	d := newTestDetector(t)
	f := dataFrame(2, 0, 7, 100)
	mustReceive(t, d, t0, 10, f, CounterData)
	f.Seq = 103 // two lost
	mustReceive(t, d, t0+ms, 10, f, CounterData)

	// The peer's daemon restarts: seq starts over and the progress counter too, with the same
	// value as before, which must not look like progress standing still since t0.
	f = dataFrame(2, 0, 8, 1)
	mustReceive(t, d, t0+2*ms, 10, f, CounterData)
	s := d.Slot(2, 0)
	if s.Incarnation != 8 || s.LastSeq != 1 || s.Lost != 2 || s.RxData != 3 {
		t.Errorf("after the restart: %+v", s)
	}
	if s.Progress != f.Progress || s.ProgressNS != t0+2*ms {
		t.Errorf("progress %d at %d, want %d at %d", s.Progress, s.ProgressNS, f.Progress, t0+2*ms)
	}
	// And the previous incarnation is now a replay, whatever its seq.
	mustReceive(t, d, t0+3*ms, 10, dataFrame(2, 0, 7, 104), CounterReplay)
}

func TestReceiveProgress(t *testing.T) {
	d := newTestDetector(t)
	f := dataFrame(2, 0, 1, 1)
	for i, tc := range []struct {
		progress, wantNS uint64
	}{
		{5, t0 + 1}, {5, t0 + 1}, {6, t0 + 3}, {6, t0 + 3},
	} {
		f.Seq, f.Progress = uint64(i+1), tc.progress
		mustReceive(t, d, t0+uint64(i)+1, 10, f, CounterData)
		if s := d.Slot(2, 0); s.Progress != tc.progress || s.ProgressNS != tc.wantNS {
			t.Errorf("frame %d: progress %d at %d, want %d at %d", i, s.Progress, s.ProgressNS, tc.progress, tc.wantNS)
		}
	}
}

func TestEchoReflection(t *testing.T) {
	d := newTestDetector(t)
	in := dataFrame(3, 1, 9, 42)
	now := t0 + 5*ms
	reply := mustReceive(t, d, now, 11, in, CounterData)
	if len(reply) != FrameSize {
		t.Fatalf("reply is %d bytes, want %d", len(reply), FrameSize)
	}
	got, err := Decode(reply, testCluster, testKey)
	if err != nil {
		t.Fatalf("Decode(reply): %v", err)
	}
	want := in
	want.Flags, want.EchoNode, want.EchoNS = FlagEchoReply, self, now
	if got != want {
		t.Errorf("reply %+v\nwant  %+v", got, want)
	}
	// The MAC, computed independently of AppendEncode.
	k0, k1 := testKey.halves()
	if mac := binary.LittleEndian.Uint64(reply[macOffset:]); mac != sipHash24(k0, k1, reply[:macOffset]) {
		t.Errorf("reply MAC %#x is wrong", mac)
	}
	// Only the flags, echo fields and MAC differ from the request.
	req := encode(in)
	for i := range FrameSize {
		changed := req[i] != reply[i]
		allowed := i == 1 || (i >= 10 && i < 12) || i >= 48
		if changed && !allowed {
			t.Errorf("byte %d changed from %#x to %#x", i, req[i], reply[i])
		}
	}
	if c := d.Counters(); c[CounterEchoSent] != 1 {
		t.Errorf("echo sent %d, want 1", c[CounterEchoSent])
	}

	// The reflection is no use to anyone but the original sender: fed back to us it is a
	// reply to another node's request.
	if v, r := d.Receive(now, 11, peerMAC(3), reply); v != CounterUnknownPeer || r != nil {
		t.Errorf("our own reflection fed back: %v", v)
	}
}

func TestEchoRTT(t *testing.T) {
	d := newTestDetector(t)
	now := t0
	for i, tc := range []struct {
		sendAgo       uint64 // now - SendNS; the largest means SendNS is in the future
		rtt, wantSRTT uint64
	}{
		{800, 800, 800},             // the first sample is the average
		{1600, 1600, 900},           // 800 + 800/8
		{400, 400, 838},             // 900 - 500/8, truncated
		{^uint64(49), 0, 838 - 104}, // sent 50ns "after" now: round trip 0
		{734 + 7, 734 + 7, 734 + 0}, // 7/8 truncates to 0
	} {
		now += ms
		mustReceive(t, d, now, 10, echoFrame(2, 0, uint64(i+1), now-tc.sendAgo), CounterEchoReply)
		s := d.Slot(2, 0)
		if s.LastRTTNS != tc.rtt || s.SRTTNS != tc.wantSRTT {
			t.Errorf("reply %d: rtt %d srtt %d, want %d %d", i+1, s.LastRTTNS, s.SRTTNS, tc.rtt, tc.wantSRTT)
		}
		if s.LastEchoNS != now || s.LastEchoSeq != uint64(i+1) || s.RxEcho != uint64(i+1) {
			t.Errorf("reply %d: %+v", i+1, s)
		}
	}
	if s := d.Slot(2, 0); s.LastDataNS != 0 || s.RxData != 0 || s.Rise != 5 {
		t.Errorf("echo replies touched the data fields or miscounted rise: %+v", s)
	}
	if c := d.Counters(); c[CounterEchoReply] != 5 || c[CounterEchoSent] != 0 {
		t.Errorf("counters %v", c)
	}
}

func TestRise(t *testing.T) {
	d := newTestDetector(t)
	steps := []struct {
		at   uint64
		echo bool
		rise uint32
	}{
		{t0, false, 1},           // first frame
		{t0, true, 2},            // an echo counts too
		{t0 + 3*ms, false, 3},    // exactly detect apart
		{t0 + 6*ms + 1, true, 1}, // more than detect apart: a new run
		{t0 + 7*ms, false, 2},
	}
	for i, st := range steps {
		if st.echo {
			mustReceive(t, d, st.at, 10, echoFrame(2, 0, uint64(i+1), st.at), CounterEchoReply)
		} else {
			mustReceive(t, d, st.at, 10, dataFrame(2, 0, 1, uint64(i+1)), CounterData)
		}
		if r := d.Slot(2, 0).Rise; r != st.rise {
			t.Errorf("step %d: rise %d, want %d", i, r, st.rise)
		}
	}
}

func TestEventFields(t *testing.T) {
	d := newDetectorOf(t, []uint16{2}, func(c *Config) { c.Rise = 1 })
	mustReceive(t, d, t0+ms, 10, dataFrame(2, 0, 1, 1), CounterData)
	mustReceive(t, d, t0+2*ms, 11, echoFrame(2, 1, 1, t0), CounterEchoReply)
	got := d.Sweep(t0 + 2*ms)
	want := []Event{
		{NowNS: t0 + 2*ms, LastSeenNS: t0 + ms, Peer: 2, Link: 0, Kind: EventLink,
			State: uint32(LinkUp), OldState: uint32(LinkDown), LinksUp: 2},
		{NowNS: t0 + 2*ms, LastSeenNS: t0 + 2*ms, Peer: 2, Link: 1, Kind: EventLink,
			State: uint32(LinkUp), OldState: uint32(LinkDown), LinksUp: 2},
		{NowNS: t0 + 2*ms, LastSeenNS: t0 + 2*ms, Peer: 2, Link: LinkNone, Kind: EventPeer,
			State: uint32(PeerAlive), OldState: uint32(PeerUnknown), LinksUp: 2},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n%v\nwant\n%v", got, want)
	}
	p := d.Peer(2)
	if p != (Peer{SinceNS: t0 + 2*ms, State: PeerAlive, LinksUp: 2, Configured: true, SweptNS: t0 + 2*ms}) {
		t.Errorf("peer 2 = %+v", p)
	}
	if s := d.Slot(2, 1); s.State != LinkUp || s.SinceNS != t0+2*ms {
		t.Errorf("slot 2/1 = %+v", s)
	}

	got = d.Sweep(t0 + 5*ms) // link 0 silent for 4ms, link 1 for 3ms
	want = []Event{
		{NowNS: t0 + 5*ms, LastSeenNS: t0 + ms, Peer: 2, Link: 0, Kind: EventLink,
			State: uint32(LinkDown), OldState: uint32(LinkUp), LinksUp: 1},
		{NowNS: t0 + 5*ms, LastSeenNS: t0 + 2*ms, Peer: 2, Link: LinkNone, Kind: EventPeer,
			State: uint32(PeerStalled), OldState: uint32(PeerAlive), LinksUp: 1},
		{NowNS: t0 + 5*ms, LastSeenNS: t0 + 2*ms, Peer: 2, Link: LinkNone, Kind: EventJeopardy,
			State: 1, OldState: 0, LinksUp: 1},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events\n%v\nwant\n%v", got, want)
	}
	if s := d.Slot(2, 0); s.Rise != 0 || s.SinceNS != t0+5*ms {
		t.Errorf("a link going down keeps rise %d, since %d", s.Rise, s.SinceNS)
	}
	if p := d.Peer(2); p.StalledNS != t0+5*ms || !p.Jeopardy || p.LinksUp != 1 {
		t.Errorf("peer 2 = %+v", p)
	}
}

// TestStallTimeoutBoundary pins the comparison: STALLED turns DOWN only once more than the
// stall timeout has passed.
func TestStallTimeoutBoundary(t *testing.T) {
	d := newDetectorOf(t, []uint16{2})
	for i := range uint64(3) { // an echo-only link: kernel alive, daemon never heard
		now := t0 + i*ms
		mustReceive(t, d, now, 10, echoFrame(2, 0, i+1, now), CounterEchoReply)
	}
	if ev := d.Sweep(t0 + 2*ms); len(ev) != 3 || PeerState(ev[1].State) != PeerStalled {
		t.Fatalf("events %v, want link up, peer stalled, jeopardy", ev)
	}
	stalled := t0 + 2*ms
	for now := stalled; now <= stalled+10*ms; now += ms {
		mustReceive(t, d, now, 10, echoFrame(2, 0, now, now), CounterEchoReply)
		if ev := d.Sweep(now); len(ev) != 0 {
			t.Fatalf("at stalled+%v: %v", time.Duration(now-stalled), ev)
		}
	}
	ev := d.Sweep(stalled + 10*ms + 1)
	if len(ev) != 1 || ev[0].Kind != EventPeer || PeerState(ev[0].State) != PeerDown {
		t.Fatalf("one nanosecond after the stall timeout: %v, want peer down", ev)
	}
}

// A peer reachable on the only configured link is not in jeopardy: it has no second channel
// to lose.
func TestNoJeopardyWithOneLink(t *testing.T) {
	cfg := testConfig()
	cfg.NLinks, cfg.Rise = 1, 1
	d, err := NewDetector(cfg, []uint16{2}, map[int]Iface{10: {LinkID: 0}})
	if err != nil {
		t.Fatal(err)
	}
	mustReceive(t, d, t0, 10, dataFrame(2, 0, 1, 1), CounterData)
	ev := d.Sweep(t0)
	if len(ev) != 2 || ev[0].Kind != EventLink || ev[1].Kind != EventPeer || d.Peer(2).Jeopardy {
		t.Fatalf("events %v, want link up and peer alive only", ev)
	}
}

// Zero is never, even when the clock is younger than detect (as in kernel tests with a
// logical clock): a peer heard only through echoes has sent no data, however recent time 0
// looks.
func TestZeroMeansNever(t *testing.T) {
	d := newDetectorOf(t, []uint16{2}, func(c *Config) { c.StartNS = 1 })
	for now := uint64(1); now <= 3; now++ {
		mustReceive(t, d, now, 10, echoFrame(2, 0, now, now), CounterEchoReply)
	}
	ev := d.Sweep(3)
	if len(ev) != 3 || PeerState(ev[1].State) != PeerStalled {
		t.Fatalf("events %v, want link up, peer stalled, jeopardy", ev)
	}
}

func TestSetLinkDownOutOfRange(t *testing.T) {
	d := newTestDetector(t)
	d.SetLinkDown(2, true) // NLinks is 2
	d.SetLinkDown(LinkNone, true)
	if d.linksDown != 0 {
		t.Fatalf("links down %#b", d.linksDown)
	}
	d.SetLinkDown(1, true)
	d.SetLinkDown(1, true)
	d.SetLinkDown(0, false)
	if d.linksDown != 0b10 {
		t.Fatalf("links down %#b, want 0b10", d.linksDown)
	}
	d.SetLinkDown(1, false)
	if d.linksDown != 0 {
		t.Fatalf("links down %#b, want none", d.linksDown)
	}
}

// The data frames of a link without local carrier do not keep a peer ALIVE: whatever they
// are, they cannot have come through that interface just now.
func TestLinkDownIgnoresItsData(t *testing.T) {
	d := newDetectorOf(t, []uint16{2}, func(c *Config) { c.Rise = 1 })
	mustReceive(t, d, t0, 10, dataFrame(2, 0, 1, 1), CounterData)
	mustReceive(t, d, t0, 11, echoFrame(2, 1, 1, t0), CounterEchoReply)
	d.SetLinkDown(0, true)
	ev := d.Sweep(t0)
	if len(ev) != 3 || ev[0].Link != 1 || PeerState(ev[1].State) != PeerStalled {
		t.Fatalf("events %v, want link 1 up, peer stalled, jeopardy", ev)
	}
}

func TestAccessorsOutOfRange(t *testing.T) {
	d := newTestDetector(t)
	if d.Slot(MaxNodes, 0) != (Slot{}) || d.Slot(2, MaxLinks) != (Slot{}) || d.Peer(MaxNodes) != (Peer{}) {
		t.Error("out-of-range accessors must return zero values")
	}
	if !d.Peer(2).Configured || d.Peer(self).Configured || d.Peer(4).Configured {
		t.Error("wrong peers configured")
	}
}

func TestNewDetectorErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		peers  []uint16
		ifaces map[int]Iface
	}{
		{"peer 0", []uint16{0}, nil},
		{"peer MaxNodes", []uint16{MaxNodes}, nil},
		{"this node as a peer", []uint16{2, self}, nil},
		{"peer twice", []uint16{2, 3, 2}, nil},
		{"interface on a link not configured", []uint16{2}, map[int]Iface{4: {LinkID: 2}}},
	} {
		if _, err := NewDetector(testConfig(), tc.peers, tc.ifaces); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := NewDetector(Config{}, nil, nil); err == nil {
		t.Error("zero Config: no error")
	}
	// A lone node, and a detector whose ifaces map the caller then changes.
	ifaces := testIfaces()
	d, err := NewDetector(testConfig(), nil, ifaces)
	if err != nil {
		t.Fatal(err)
	}
	delete(ifaces, 10)
	if v, _ := d.Receive(t0, 10, peerMAC(2), encode(dataFrame(2, 0, 1, 1))); v != CounterUnknownPeer {
		t.Errorf("lone node: %v, want unknown peer", v)
	}
	if ev := d.Sweep(t0 + uint64(time.Hour)); ev != nil {
		t.Errorf("lone node: events %v", ev)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"node 0", func(c *Config) { c.NodeID = 0 }},
		{"node MaxNodes", func(c *Config) { c.NodeID = MaxNodes }},
		{"no key", func(c *Config) { c.Key = Key{} }},
		{"incarnation 0", func(c *Config) { c.Incarnation = 0 }},
		{"detect 0", func(c *Config) { c.DetectNS = 0 }},
		{"stall timeout 0", func(c *Config) { c.StallTimeoutNS = 0 }},
		{"rise 0", func(c *Config) { c.Rise = 0 }},
		{"no links", func(c *Config) { c.NLinks = 0 }},
		{"too many links", func(c *Config) { c.NLinks = MaxLinks + 1 }},
	} {
		c := testConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestNewConfig(t *testing.T) {
	for _, tc := range []struct {
		interval   time.Duration
		multiplier uint32
		detect     uint64
	}{
		{time.Millisecond, 3, 3 * ms},
		{10 * time.Millisecond, 5, 50 * ms},
		{0, 3, 0},
		{-time.Second, 3, 0},
		{time.Duration(1 << 62), 8, 1<<64 - 1}, // saturates
	} {
		c := NewConfig(tc.interval, tc.multiplier)
		if c.DetectNS != tc.detect || c.Rise != tc.multiplier {
			t.Errorf("NewConfig(%v, %d): detect %d rise %d, want %d %d",
				tc.interval, tc.multiplier, c.DetectNS, c.Rise, tc.detect, tc.multiplier)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		got  fmt.Stringer
		want string
	}{
		{LinkDown, "down"}, {LinkUp, "up"}, {LinkState(7), "LinkState(7)"},
		{PeerUnknown, "unknown"}, {PeerAlive, "alive"}, {PeerStalled, "stalled"},
		{PeerDown, "down"}, {PeerState(9), "PeerState(9)"},
		{CounterData, "data"}, {CounterEchoReply, "echo_reply"}, {CounterEchoSent, "echo_sent"},
		{CounterMalformed, "malformed"}, {CounterVersion, "version"}, {CounterCluster, "cluster"},
		{CounterBadMAC, "bad_mac"}, {CounterUnknownPeer, "unknown_peer"},
		{CounterWrongLink, "wrong_link"}, {CounterReplay, "replay"},
		{CounterNotConfigured, "not_configured"}, {CounterCatchup, "catchup"}, {CounterHeld, "held"}, {NumCounters, "Counter(13)"},
		{EventLink, "link"}, {EventPeer, "peer"}, {EventJeopardy, "jeopardy"},
		{EventKind(0), "EventKind(0)"},
		{Event{Peer: 2, Link: 1, Kind: EventLink, State: 0, OldState: 1, LinksUp: 1},
			"peer 2 link 1 down (was up; 1 link up)"},
		{Event{Peer: 3, Link: LinkNone, Kind: EventPeer, State: 2, OldState: 1, LinksUp: 2},
			"peer 3 stalled (was alive; 2 links up)"},
		{Event{Peer: 3, Link: LinkNone, Kind: EventJeopardy, State: 1, LinksUp: 1},
			"peer 3 in jeopardy (1 link up)"},
		{Event{Peer: 3, Link: LinkNone, Kind: EventJeopardy, OldState: 1, LinksUp: 0},
			"peer 3 out of jeopardy (0 links up)"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("String() = %q, want %q", s, tc.want)
		}
	}
}

// The numbers of enum hb_counter, hb_peer_state and hb_event_kind, which the kernel path
// copies as they are.
func TestEnumValues(t *testing.T) {
	if CounterNotConfigured != 10 || CounterCatchup != 11 || CounterHeld != 12 || NumCounters != 13 || CounterReplay != 9 {
		t.Error("Counter values differ from enum hb_counter")
	}
	if PeerDown != 3 || LinkUp != 1 || EventJeopardy != 3 || LinkNone != 0xff {
		t.Error("state or event values differ from bpf/heartbeat.h")
	}
}

// FuzzReceive feeds arbitrary payloads to a detector that already holds some state. Receive
// must not panic, must count every payload once, must leave everything unchanged when it
// rejects one, must change at most the frame's own slot when it accepts one, and must reflect
// only data frames. With seal set the fuzzer's bytes get a valid MAC, so that it explores the
// checks after authentication too.
func FuzzReceive(f *testing.F) {
	for _, fr := range []Frame{
		dataFrame(2, 0, 5, 11), dataFrame(3, 1, 1, 1), dataFrame(2, 0, 6, 1),
		echoFrame(2, 0, 11, t0), echoFrame(3, 1, 1, t0+ms),
	} {
		b := encode(fr)
		f.Add(b, false, uint8(fr.LinkID), uint32(1000))
		f.Add(b, true, uint8(1-fr.LinkID), uint32(0))
	}
	f.Add([]byte{}, false, uint8(2), uint32(0))
	f.Add(make([]byte, FrameSize), true, uint8(0), uint32(1))

	f.Fuzz(func(t *testing.T, payload []byte, sealIt bool, link uint8, dt uint32) {
		d := newTestDetector(t)
		mustReceive(t, d, t0, 10, dataFrame(2, 0, 5, 10), CounterData)
		mustReceive(t, d, t0, 10, echoFrame(2, 0, 10, t0-100), CounterEchoReply)
		mustReceive(t, d, t0, 11, dataFrame(3, 1, 1, 1), CounterData)
		d.Sweep(t0)
		if sealIt && len(payload) >= FrameSize {
			payload = slices.Clone(payload)
			seal(payload)
		}
		ifindex := 10 + int(link%3) // 12 carries no link
		slots, peers, counters := d.slots, d.peers, d.Counters()
		verdict, reply := d.Receive(t0+uint64(dt), ifindex, peerMAC(4), payload)

		if verdict < 0 || verdict >= NumCounters || verdict == CounterEchoSent {
			t.Fatalf("verdict %v", verdict)
		}
		counters[verdict]++
		if reply != nil {
			counters[CounterEchoSent]++
		}
		if d.Counters() != counters {
			t.Fatalf("counters %v, want %v", d.Counters(), counters)
		}
		if verdict != CounterData && verdict != CounterEchoReply {
			if d.slots != slots || d.peers != peers || reply != nil {
				t.Fatalf("rejected (%v) payload changed the state or was reflected", verdict)
			}
			return
		}
		fr, err := Decode(payload, testCluster, testKey)
		if err != nil {
			t.Fatalf("accepted (%v) a payload Decode rejects: %v", verdict, err)
		}
		peer := fr.SrcNode
		if verdict == CounterEchoReply {
			peer = fr.EchoNode
		}
		if peer != 2 && peer != 3 {
			t.Fatalf("accepted a frame of node %d", peer)
		}
		slots[peer][fr.LinkID] = d.slots[peer][fr.LinkID]
		if d.slots != slots || d.peers != peers {
			t.Fatal("an accepted frame changed another slot, or a peer")
		}
		if (reply != nil) != (verdict == CounterData && fr.Flags&FlagEchoRequest != 0) {
			t.Fatalf("verdict %v, flags %#x, reply %v", verdict, fr.Flags, reply != nil)
		}
		if reply != nil {
			r, err := Decode(reply, testCluster, testKey)
			if err != nil || r.Flags != FlagEchoReply || r.EchoNode != self || r.Seq != fr.Seq {
				t.Fatalf("reply %+v, %v", r, err)
			}
		}
	})
}

// A scenario drives a detector (node 1) over logical time against simulated peers 2 and 3 on
// links 0 and 1, one frame per link every millisecond, detect = 3ms, rise 3, stall timeout
// 10ms. Each step returns the scenario, so a test reads as a script:
//
//	s.tick(2).expect("2ms link 2/0 down->up", ...)
//	s.cut(2, 0).tick(4).expect("6ms link 2/0 up->down", "6ms jeopardy 2 on")
//
// Every tick, the simulated peers whose daemon runs send a data frame on every link that is
// not cut, and those whose kernel runs reflect our own frame of that tick; then the detector
// sweeps. Events print as "<time since start> link P/L old->new", "peer P old->new" and
// "jeopardy P on|off".
type scenario struct {
	t      *testing.T
	d      *Detector
	now    uint64
	ourSeq [MaxLinks]uint64
	peers  []*simPeer
	events []string
	// Our sender: muted sends nothing (so no peer echoes); it stamps a TxStamp per link and
	// send unless noStamps (the detector then judges echoes by their plain age).
	muted, noStamps bool
	tx              [MaxLinks]TxStamp
}

type simPeer struct {
	id          uint16
	daemon      bool // sends data frames
	kernel      bool // reflects our frames
	incarnation uint64
	seq         [MaxLinks]uint64
	progress    uint64
	frozen      bool // progress stands still
	cut         [MaxLinks]bool
}

const interval = time.Millisecond

func newScenario(t *testing.T, mods ...func(*Config)) *scenario {
	s := &scenario{t: t, d: newTestDetector(t, mods...), now: t0}
	for _, id := range []uint16{2, 3} {
		s.peers = append(s.peers, &simPeer{id: id, daemon: true, kernel: true, incarnation: 1})
	}
	return s
}

func (s *scenario) peer(id uint16) *simPeer {
	for _, p := range s.peers {
		if p.id == id {
			return p
		}
	}
	s.t.Fatalf("no simulated peer %d", id)
	return nil
}

// tick runs n intervals of traffic, sweeping after each.
func (s *scenario) tick(n int) *scenario {
	s.t.Helper()
	for range n {
		s.now += uint64(interval)
		for _, p := range s.peers {
			if !p.frozen {
				p.progress++
			}
		}
		for link := range uint8(2) {
			if !s.muted {
				s.ourSeq[link]++
				if !s.noStamps {
					s.tx[link] = s.tx[link].Next(s.now, s.now+uint64(interval+interval/TxSlackDiv))
					s.d.SetTx(link, s.tx[link])
				}
			}
			for _, p := range s.peers {
				if p.cut[link] {
					continue
				}
				if p.daemon {
					s.data(p.id, link)
				}
				if p.kernel && !s.muted {
					s.echo(p.id, link)
				}
			}
		}
		s.sweep()
	}
	return s
}

// advance moves the clock without traffic or sweep.
func (s *scenario) advance(d time.Duration) *scenario {
	s.now += uint64(d)
	return s
}

func (s *scenario) sweep() *scenario {
	for _, e := range s.d.Sweep(s.now) {
		at := time.Duration(e.NowNS - t0)
		var line string
		switch e.Kind {
		case EventLink:
			line = fmt.Sprintf("%v link %d/%d %v->%v", at, e.Peer, e.Link, LinkState(e.OldState), LinkState(e.State))
		case EventPeer:
			line = fmt.Sprintf("%v peer %d %v->%v", at, e.Peer, PeerState(e.OldState), PeerState(e.State))
		case EventJeopardy:
			line = fmt.Sprintf("%v jeopardy %d %s", at, e.Peer, map[uint32]string{0: "off", 1: "on"}[e.State])
		}
		s.events = append(s.events, line)
	}
	return s
}

// data delivers a data frame of peer on link now, whatever the simulation says.
func (s *scenario) data(id uint16, link uint8) *scenario {
	s.t.Helper()
	p := s.peer(id)
	p.seq[link]++
	f := Frame{Flags: FlagEchoRequest, LinkID: link, ClusterID: testCluster, SrcNode: id,
		Incarnation: p.incarnation, Seq: p.seq[link], SendNS: s.now, Progress: p.progress}
	reply := mustReceive(s.t, s.d, s.now, 10+int(link), f, CounterData)
	if r, err := Decode(reply, testCluster, testKey); err != nil || r.EchoNode != self {
		s.t.Fatalf("reflection of %+v: %+v, %v", f, r, err)
	}
	return s
}

// echo delivers peer's reflection of our latest frame on link, 50µs after we sent it.
func (s *scenario) echo(id uint16, link uint8) *scenario {
	s.t.Helper()
	f := echoFrame(id, link, s.ourSeq[link], s.now-50_000)
	mustReceive(s.t, s.d, s.now, 10+int(link), f, CounterEchoReply)
	return s
}

// expect checks the events since the previous expect.
func (s *scenario) expect(want ...string) *scenario {
	s.t.Helper()
	if !slices.Equal(s.events, want) {
		s.t.Fatalf("at %v: events\n\t%s\nwant\n\t%s", time.Duration(s.now-t0),
			strings.Join(s.events, "\n\t"), strings.Join(want, "\n\t"))
	}
	s.events = nil
	return s
}

func (s *scenario) cut(id uint16, links ...uint8) *scenario {
	for _, l := range links {
		s.peer(id).cut[l] = true
	}
	return s
}

func (s *scenario) heal(id uint16, links ...uint8) *scenario {
	for _, l := range links {
		s.peer(id).cut[l] = false
	}
	return s
}

// kill stops peer's daemon; its kernel keeps reflecting.
func (s *scenario) kill(id uint16) *scenario { s.peer(id).daemon = false; return s }

// crash stops the peer altogether.
func (s *scenario) crash(id uint16) *scenario {
	p := s.peer(id)
	p.daemon, p.kernel = false, false
	return s
}

// restart starts a new daemon on the peer: next incarnation, sequences from 1.
func (s *scenario) restart(id uint16) *scenario {
	p := s.peer(id)
	p.daemon, p.kernel = true, true
	p.incarnation++
	p.seq = [MaxLinks]uint64{}
	return s
}

// mute stops our own sender (a stalled or stopped daemon, a vCPU not run); unmute resumes it.
func (s *scenario) mute() *scenario   { s.muted = true; return s }
func (s *scenario) unmute() *scenario { s.muted = false; return s }

func (s *scenario) freeze(id uint16) *scenario { s.peer(id).frozen = true; return s }
func (s *scenario) thaw(id uint16) *scenario   { s.peer(id).frozen = false; return s }

// carrierLost cuts link for every peer and tells the detector, as netlink would.
func (s *scenario) carrierLost(link uint8) *scenario {
	for _, p := range s.peers {
		p.cut[link] = true
	}
	s.d.SetLinkDown(link, true)
	return s
}

// carrierBack heals link for every peer and tells the detector.
func (s *scenario) carrierBack(link uint8) *scenario {
	for _, p := range s.peers {
		p.cut[link] = false
	}
	return s.reportCarrier(link)
}

// reportCarrier tells the detector only: netlink catching up with a link that works again.
func (s *scenario) reportCarrier(link uint8) *scenario {
	s.d.SetLinkDown(link, false)
	return s
}

var startup = []string{
	"2ms link 2/0 down->up", "2ms link 2/1 down->up", "2ms peer 2 unknown->alive",
	"2ms link 3/0 down->up", "2ms link 3/1 down->up", "2ms peer 3 unknown->alive",
}

func TestScenarioStartup(t *testing.T) {
	s := newScenario(t)
	// One tick brings a data frame and an echo per link: rise 2 of 3.
	s.tick(1).expect()
	if sl := s.d.Slot(2, 0); sl.Rise != 2 || sl.State != LinkDown {
		t.Fatalf("after one tick: %+v", sl)
	}
	if p := s.d.Peer(2); p.State != PeerUnknown {
		t.Fatalf("peer 2 %v within the grace", p.State)
	}
	s.tick(1).expect(startup...)
	s.tick(100).expect()
	for _, id := range []uint16{2, 3} {
		if p := s.d.Peer(id); p.State != PeerAlive || p.LinksUp != 2 || p.Jeopardy {
			t.Errorf("peer %d = %+v", id, p)
		}
		if sl := s.d.Slot(id, 1); sl.RxData != 102 || sl.RxEcho != 102 || sl.Lost != 0 || sl.SRTTNS != 50_000 {
			t.Errorf("slot %d/1 = %+v", id, sl)
		}
	}
}

func TestScenarioUnknownGrace(t *testing.T) {
	s := newScenario(t)
	s.crash(3)
	// Peer 3 has until 3ms (detect after the start) to show up.
	s.tick(3).expect(startup[:3]...)
	s.tick(1).expect("4ms peer 3 unknown->down")
	s.restart(3).tick(2).expect("6ms link 3/0 down->up", "6ms link 3/1 down->up", "6ms peer 3 down->alive")

	// Heard within the grace: never down.
	s = newScenario(t)
	s.crash(3).tick(1).restart(3)
	s.tick(1).expect(startup[:3]...)
	s.tick(1).expect("3ms link 3/0 down->up", "3ms link 3/1 down->up", "3ms peer 3 unknown->alive")

	// A kernel that answers while its daemon does not: stalled. Echoes alone are one frame per
	// tick and link, so the links need three ticks.
	s = newScenario(t)
	s.kill(3)
	s.tick(2).expect(startup[:3]...)
	s.tick(1).expect("3ms link 3/0 down->up", "3ms link 3/1 down->up", "3ms peer 3 unknown->stalled")
}

func TestScenarioLinkCut(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	// Link 0 to peer 2 goes silent after the frames at 2ms; 3ms of silence is still fine.
	s.cut(2, 0).tick(3).expect()
	s.tick(1).expect("6ms link 2/0 up->down", "6ms jeopardy 2 on")
	// Reachable through link 1 only: in jeopardy, but alive for as long as that lasts.
	s.tick(50).expect()
	if p := s.d.Peer(2); p.State != PeerAlive || p.LinksUp != 1 || !p.Jeopardy {
		t.Fatalf("peer 2 = %+v", p)
	}
	// Restored: a data frame and an echo per tick, so rise reaches 3 on the second tick.
	s.heal(2, 0).tick(1).expect()
	s.tick(1).expect("58ms link 2/0 down->up", "58ms jeopardy 2 off")
	// Then the last link goes too: down, and no longer in jeopardy.
	s.cut(2, 0).tick(4).expect("62ms link 2/0 up->down", "62ms jeopardy 2 on")
	s.cut(2, 1).tick(4).expect("66ms link 2/1 up->down", "66ms peer 2 alive->down", "66ms jeopardy 2 off")
}

func TestScenarioDaemonKilled(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	// Its kernel keeps echoing: the links stay up, the peer stalls once its data is older
	// than detect, and is down once the stall timeout (10ms) has passed.
	s.kill(2).tick(3).expect()
	s.tick(1).expect("6ms peer 2 alive->stalled")
	s.tick(10).expect() // 16ms: exactly the stall timeout
	s.advance(1).sweep().expect("16.000001ms peer 2 stalled->down")
	s.advance(interval - 1).tick(20).expect()
	if p := s.d.Peer(2); p.State != PeerDown || p.LinksUp != 2 || p.StalledNS != t0+6*ms {
		t.Fatalf("peer 2 = %+v", p)
	}
	// A new daemon: its first frames bring the peer back at once, its links never went down.
	s.restart(2).tick(1).expect("38ms peer 2 down->alive")
	if sl := s.d.Slot(2, 0); sl.Incarnation != 2 || sl.LastSeq != 1 || sl.Lost != 0 {
		t.Fatalf("slot 2/0 = %+v", sl)
	}
	if p := s.d.Peer(2); p.StalledNS != 0 {
		t.Fatalf("peer 2 alive with StalledNS %d", p.StalledNS)
	}
}

func TestScenarioNodeCutOff(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	s.cut(2, 0, 1).tick(3).expect()
	s.tick(1).expect("6ms link 2/0 up->down", "6ms link 2/1 up->down", "6ms peer 2 alive->down")
	s.tick(100).expect()
	// Recovery after a long silence: a fresh run of rise frames on each link.
	s.heal(2, 0, 1).tick(1).expect()
	s.tick(1).expect("108ms link 2/0 down->up", "108ms link 2/1 down->up", "108ms peer 2 down->alive")
	// A crashed node is the same thing to the detector.
	s.crash(3).tick(4).expect("112ms link 3/0 up->down", "112ms link 3/1 up->down", "112ms peer 3 alive->down")
}

// Once down by the stall timeout, a peer whose kernel answers but whose daemon does not stays
// down; so does one that was cut off and comes back in that state.
func TestScenarioDownStaysDown(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	s.cut(2, 0, 1).tick(4).expect("6ms link 2/0 up->down", "6ms link 2/1 up->down", "6ms peer 2 alive->down")
	s.kill(2).heal(2, 0, 1).tick(2).expect()
	s.tick(1).expect("9ms link 2/0 down->up", "9ms link 2/1 down->up")
	s.tick(100).expect()
}

func TestScenarioProgressFreeze(t *testing.T) {
	s := newScenario(t, func(c *Config) { c.ProgressNS = 5 * ms })
	s.tick(2).expect(startup...)
	// Data keeps coming, but its progress counter last changed at 2ms.
	s.freeze(2).tick(5).expect()
	s.tick(1).expect("8ms peer 2 alive->stalled")
	s.thaw(2).tick(1).expect("9ms peer 2 stalled->alive")
	// Frozen for good: stalled, then down after the stall timeout, links up all along.
	s.freeze(2).tick(6).expect("15ms peer 2 alive->stalled")
	s.tick(11).expect("26ms peer 2 stalled->down")
}

func TestScenarioLinkDown(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	// netlink reports carrier loss on link 0: the next sweep takes it down for every peer,
	// without waiting for detect, even though a late frame was processed after the report.
	s.carrierLost(0).data(2, 0).tick(1).expect(
		"3ms link 2/0 up->down", "3ms jeopardy 2 on",
		"3ms link 3/0 up->down", "3ms jeopardy 3 on")
	s.tick(1).expect()
	if sl := s.d.Slot(2, 0); sl.Rise != 0 || sl.LastDataNS != t0+2*ms {
		t.Fatalf("slot 2/0 = %+v", sl)
	}
	// Carrier back: up again after rise frames, as after any silence.
	s.carrierBack(0).tick(1).expect()
	s.tick(1).expect(
		"6ms link 2/0 down->up", "6ms jeopardy 2 off",
		"6ms link 3/0 down->up", "6ms jeopardy 3 off")

	// Lost again. This time frames flow before netlink reports the carrier back: they count
	// towards rise, but the link stays down until the report, and comes up at once then.
	s.carrierLost(0).tick(1).expect(
		"7ms link 2/0 up->down", "7ms jeopardy 2 on",
		"7ms link 3/0 up->down", "7ms jeopardy 3 on")
	s.heal(2, 0).heal(3, 0).tick(3).expect()
	s.reportCarrier(0).sweep().expect(
		"10ms link 2/0 down->up", "10ms jeopardy 2 off",
		"10ms link 3/0 down->up", "10ms jeopardy 3 off")
}

// A link that is down comes up only after rise frames, each no more than detect after the
// previous one: stray frames after a silence do not bring it up.
func TestScenarioHysteresis(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	s.crash(2).tick(4).expect("6ms link 2/0 up->down", "6ms link 2/1 up->down", "6ms peer 2 alive->down")
	s.tick(20).expect()
	// One stray frame after a long silence.
	s.data(2, 0).sweep().expect()
	// Frames further apart than detect, each starting a new run.
	for range 5 {
		s.tick(4).data(2, 0).sweep().expect()
	}
	if r := s.d.Slot(2, 0).Rise; r != 1 {
		t.Fatalf("rise %d after spaced frames, want 1", r)
	}
	// The last of them started a run; two more make rise (3) frames in a row.
	s.tick(1).data(2, 0).sweep().expect()
	s.tick(1).data(2, 0).sweep().expect("48ms link 2/0 down->up", "48ms peer 2 down->alive", "48ms jeopardy 2 on")
}

// Pause compensation: a sweep that runs late (its previous run more than detect/2 ago) does
// not turn the staleness gathered while it could not run into transitions; the receive path
// gets CatchupNS to catch up.
func TestScenarioPauseCompensation(t *testing.T) {
	catchup := func(c *Config) { c.CatchupNS = ms }
	down2 := func(at string) []string {
		return []string{at + " link 2/0 up->down", at + " link 2/1 up->down", at + " peer 2 alive->down"}
	}
	// This node's CPU stalls for 6ms after the sweep at 2ms: no sweep, no frame recorded.
	// Everything resumes at 8ms; the late sweep holds the links, the next frames refresh them.
	s := newScenario(t, catchup)
	s.tick(2).expect(startup...)
	s.advance(6 * interval).sweep().expect()
	if p := s.d.Peer(2); p.HoldFromNS != t0+2*ms || p.HoldUntilNS != t0+9*ms || p.SweptNS != t0+8*ms {
		t.Fatalf("peer 2 after the late sweep: %+v", p)
	}
	// One window per peer, and the four links it held.
	if c := s.d.Counters(); c[CounterCatchup] != 2 || c[CounterHeld] != 4 {
		t.Fatalf("catchup %d, held %d", c[CounterCatchup], c[CounterHeld])
	}
	s.tick(20).expect()

	// Without compensation the same stall takes everything down.
	s = newScenario(t)
	s.tick(2).expect(startup...)
	s.advance(6 * interval).sweep().expect(append(down2("8ms"),
		"8ms link 3/0 up->down", "8ms link 3/1 up->down", "8ms peer 3 alive->down")...)

	// A peer that really failed during the stall is down at the first sweep after the
	// catch-up window (8ms + 1ms); the other, whose frames came, stays up.
	s = newScenario(t, catchup)
	s.tick(2).expect(startup...)
	s.crash(2).advance(6 * interval).sweep().expect()
	s.tick(1).expect(down2("9ms")...)
	s.tick(10).expect()

	// Sweeps that keep running late (every 2ms, detect/2 = 1.5ms) hold a silent slot only
	// while it was fresh at the sweep before: peer 2, silent since 2ms, is down at 8ms
	// instead of 6ms, not never.
	s = newScenario(t, catchup)
	s.tick(2).expect(startup...)
	s.crash(2).kill(3).advance(2 * interval).sweep().expect()
	s.advance(2 * interval).sweep().expect()
	s.advance(2 * interval).sweep().expect(append(down2("8ms"),
		"8ms link 3/0 up->down", "8ms link 3/1 up->down", "8ms peer 3 alive->down")...)

	// A daemon that stopped before the stall: its data is not held once it was stale at the
	// sweep before the stall, so it stalls as it would have; its kernel's echoes were fresh.
	s = newScenario(t, catchup)
	s.tick(2).expect(startup...)
	s.kill(2).tick(4).expect("6ms peer 2 alive->stalled")
	s.advance(6 * interval).sweep().expect()
	s.tick(1).expect()

	// Local carrier loss is never held.
	s = newScenario(t, catchup)
	s.tick(2).expect(startup...)
	s.carrierLost(0).advance(6*interval).sweep().expect(
		"8ms link 2/0 up->down", "8ms jeopardy 2 on", "8ms link 3/0 up->down", "8ms jeopardy 3 on")
}
