//go:build linux

package dataplane

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"vigil/heartbeat"
)

// XDP_TX (the other verdicts are in stats_test.go).
const xdpTX = 3

var (
	testKey   = heartbeat.Key{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	otherKey  = heartbeat.Key{16, 15, 14}
	selfMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	peerMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

const (
	testCluster = 4711
	testSelf    = 1
	testInc     = 77
	testNow     = 1_000_000_000
	testUDPPort = 5405
)

func testConfig() KernelConfig {
	return KernelConfig{
		Key: testKey, ClusterID: testCluster, NodeID: testSelf, Incarnation: testInc,
		DetectNS: 3_000_000, StallTimeoutNS: 50_000_000, SweepNS: 1_000_000, StartNS: testNow,
		Rise: 3, NLinks: 2, UDPPort: testUDPPort, NowNS: testNow,
	}
}

// loadHeartbeatForTest loads the programs unpinned, configured as node 1 with peers 2 and 3,
// and the loopback interface (where BPF_PROG_TEST_RUN frames arrive) as link 0.
func loadHeartbeatForTest(t *testing.T) *Heartbeat {
	t.Helper()
	requireRoot(t)
	h, err := LoadHeartbeat(HeartbeatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := h.SetConfig(testConfig()); err != nil {
		t.Fatal(err)
	}
	if err := h.SetInterface(1, 0, selfMAC); err != nil {
		t.Fatal(err)
	}
	if err := h.SetPeers([]uint16{2, 3}); err != nil {
		t.Fatal(err)
	}
	return h
}

// ethFrame wraps a heartbeat payload in an Ethernet header.
func ethFrame(dst, src net.HardwareAddr, payload []byte) []byte {
	b := append(append(append([]byte{}, dst...), src...), 0x88, 0xB5)
	return append(b, payload...)
}

// udpFrame wraps a heartbeat payload in Ethernet, IPv4 (checksum left zero: XDP does not
// check it) and UDP.
func udpFrame(src, dst net.IP, sport, dport uint16, payload []byte) []byte {
	b := append(append([]byte{}, selfMAC...), peerMAC...)
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	b = append(b, ip...)
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(append(b, udp...), payload...)
}

// dataFrame is a valid echo-requesting heartbeat from peer on link 0.
func dataFrame(peer uint16, seq uint64) heartbeat.Frame {
	return heartbeat.Frame{
		Flags: heartbeat.FlagEchoRequest, LinkID: 0, ClusterID: testCluster, SrcNode: peer,
		Incarnation: 5, Seq: seq, SendNS: 123, Progress: 9,
	}
}

func encode(f heartbeat.Frame, key heartbeat.Key) []byte { return f.AppendEncode(nil, key) }

// poke returns a copy of b with byte i set to v.
func poke(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func counterDelta(t *testing.T, h *Heartbeat, before [heartbeat.NumCounters]uint64) map[int]uint64 {
	t.Helper()
	after, err := h.Counters()
	if err != nil {
		t.Fatal(err)
	}
	d := map[int]uint64{}
	for i := range after {
		if after[i] != before[i] {
			d[i] = after[i] - before[i]
		}
	}
	return d
}

func TestHeartbeatXDPVerdicts(t *testing.T) {
	reply := heartbeat.Frame{
		Flags: heartbeat.FlagEchoReply, ClusterID: testCluster, SrcNode: testSelf, EchoNode: 2,
		Incarnation: testInc, Seq: 40, SendNS: testNow - 2500, EchoNS: 55,
	}
	oldReply := reply
	oldReply.Incarnation = testInc - 1
	cases := []struct {
		name    string
		frame   []byte
		verdict uint32
		counter heartbeat.Counter // the one counter that must move by one; -1: none
	}{
		{"valid data frame", ethFrame(broadcast, peerMAC, encode(dataFrame(2, 10), testKey)), xdpTX, heartbeat.CounterData},
		{"forged: wrong key", ethFrame(broadcast, peerMAC, encode(dataFrame(2, 11), otherKey)), xdpDrop, heartbeat.CounterBadMAC},
		{"tampered after signing", ethFrame(broadcast, peerMAC, poke(encode(dataFrame(2, 11), testKey), 40, 0xee)), xdpDrop, heartbeat.CounterBadMAC},
		{"other cluster", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 11); f.ClusterID = 1; return f }(), testKey)), xdpDrop, heartbeat.CounterCluster},
		{"version 2", ethFrame(broadcast, peerMAC, poke(encode(dataFrame(2, 11), testKey), 0, 2)), xdpDrop, heartbeat.CounterVersion},
		{"truncated", ethFrame(broadcast, peerMAC, encode(dataFrame(2, 11), testKey)[:40]), xdpDrop, heartbeat.CounterMalformed},
		{"reserved byte set", ethFrame(broadcast, peerMAC, poke(encode(dataFrame(2, 11), testKey), 3, 1)), xdpDrop, heartbeat.CounterMalformed},
		{"both echo flags", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 11); f.Flags = 3; return f }(), testKey)), xdpDrop, heartbeat.CounterMalformed},
		{"link id out of range", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 11); f.LinkID = 4; return f }(), testKey)), xdpDrop, heartbeat.CounterMalformed},
		{"unconfigured peer", ethFrame(broadcast, peerMAC, encode(dataFrame(5, 11), testKey)), xdpDrop, heartbeat.CounterUnknownPeer},
		{"node id 0", ethFrame(broadcast, peerMAC, encode(dataFrame(0, 11), testKey)), xdpDrop, heartbeat.CounterUnknownPeer},
		{"own id as sender", ethFrame(broadcast, peerMAC, encode(dataFrame(testSelf, 11), testKey)), xdpDrop, heartbeat.CounterUnknownPeer},
		{"wrong link", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 11); f.LinkID = 1; return f }(), testKey)), xdpDrop, heartbeat.CounterWrongLink},
		{"replayed seq", ethFrame(broadcast, peerMAC, encode(dataFrame(2, 10), testKey)), xdpDrop, heartbeat.CounterReplay},
		{"older incarnation", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 99); f.Incarnation = 4; return f }(), testKey)), xdpDrop, heartbeat.CounterReplay},
		{"data frame without echo request", ethFrame(broadcast, peerMAC, encode(func() heartbeat.Frame { f := dataFrame(2, 12); f.Flags = 0; return f }(), testKey)), xdpDrop, heartbeat.CounterData},
		{"echo reply", ethFrame(selfMAC, peerMAC, encode(reply, testKey)), xdpDrop, heartbeat.CounterEchoReply},
		{"echo reply replayed", ethFrame(selfMAC, peerMAC, encode(reply, testKey)), xdpDrop, heartbeat.CounterReplay},
		{"echo reply of an old incarnation", ethFrame(selfMAC, peerMAC, encode(func() heartbeat.Frame { f := oldReply; f.Seq = 41; return f }(), testKey)), xdpDrop, heartbeat.CounterReplay},
		{"echo reply to another node", ethFrame(selfMAC, peerMAC, encode(func() heartbeat.Frame { f := reply; f.SrcNode = 3; f.Seq = 42; return f }(), testKey)), xdpDrop, heartbeat.CounterUnknownPeer},
		{"ipv4 passes", append(append(append([]byte{}, selfMAC...), peerMAC...), 0x08, 0x00, 0x45, 0, 0, 20), xdpPass, -1},
		{"arp passes", append(append(append([]byte{}, broadcast...), peerMAC...), 0x08, 0x06, 0, 1), xdpPass, -1},
		{"udp to another port passes", udpFrame(net.IPv4(198, 18, 1, 2), net.IPv4(198, 18, 1, 1), 999, 53, encode(dataFrame(2, 13), testKey)), xdpPass, -1},
	}
	h := loadHeartbeatForTest(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := h.Counters()
			if err != nil {
				t.Fatal(err)
			}
			slotBefore, _ := h.Slot(2, 0)
			verdict, _, err := h.RunXDP(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if verdict != tc.verdict {
				t.Errorf("verdict %d, want %d", verdict, tc.verdict)
			}
			d := counterDelta(t, h, before)
			if tc.counter >= 0 {
				if d[int(tc.counter)] != 1 {
					t.Errorf("counter %v moved by %d, want 1 (all moves: %v)", tc.counter, d[int(tc.counter)], d)
				}
			} else if len(d) != 0 {
				t.Errorf("counters moved for passed traffic: %v", d)
			}
			accepted := tc.counter == heartbeat.CounterData || tc.counter == heartbeat.CounterEchoReply
			if slotAfter, _ := h.Slot(2, 0); !accepted && slotAfter != slotBefore {
				t.Errorf("rejected frame changed the slot:\nbefore %+v\nafter  %+v", slotBefore, slotAfter)
			}
		})
	}
	s, err := h.Slot(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Accepted: data seq 10 and 12 (11 was never accepted: one lost), one echo reply.
	if s.RxData != 2 || s.LastSeq != 12 || s.Lost != 1 || s.Incarnation != 5 || s.LastDataNS != testNow ||
		s.Progress != 9 || s.ProgressNS != testNow || net.HardwareAddr(s.PeerMAC[:]).String() != peerMAC.String() {
		t.Errorf("slot after data frames: %+v", s)
	}
	if s.RxEcho != 1 || s.LastEchoSeq != 40 || s.LastRTTNS != 2500 || s.SRTTNS != 2500 || s.LastEchoNS != testNow {
		t.Errorf("slot after echo reply: %+v", s)
	}
}

func TestHeartbeatXDPEchoReflection(t *testing.T) {
	h := loadHeartbeatForTest(t)
	req := dataFrame(2, 1)
	verdict, out, err := h.RunXDP(ethFrame(broadcast, peerMAC, encode(req, testKey)))
	if err != nil || verdict != xdpTX {
		t.Fatalf("verdict %d, err %v; want XDP_TX", verdict, err)
	}
	if !bytes.Equal(out[0:6], peerMAC) || !bytes.Equal(out[6:12], selfMAC) || binary.BigEndian.Uint16(out[12:]) != heartbeat.EtherType {
		t.Errorf("reflected Ethernet header % x", out[:14])
	}
	got, err := heartbeat.Decode(out[14:], testCluster, testKey)
	if err != nil {
		t.Fatalf("reflected frame does not verify: %v", err)
	}
	want := req
	want.Flags, want.EchoNode, want.EchoNS = heartbeat.FlagEchoReply, testSelf, testNow
	if got != want {
		t.Errorf("reflected frame\n got %+v\nwant %+v", got, want)
	}

	// The same payload in UDP: addresses and ports swap, the checksum is cleared.
	req.Seq = 2
	verdict, out, err = h.RunXDP(udpFrame(net.IPv4(198, 18, 1, 2), net.IPv4(198, 18, 1, 1), 40000, testUDPPort, encode(req, testKey)))
	if err != nil || verdict != xdpTX {
		t.Fatalf("udp: verdict %d, err %v; want XDP_TX", verdict, err)
	}
	ip, udp := out[14:34], out[34:42]
	if !net.IP(ip[12:16]).Equal(net.IPv4(198, 18, 1, 1)) || !net.IP(ip[16:20]).Equal(net.IPv4(198, 18, 1, 2)) {
		t.Errorf("udp reply addresses %v -> %v", net.IP(ip[12:16]), net.IP(ip[16:20]))
	}
	if binary.BigEndian.Uint16(udp[0:]) != testUDPPort || binary.BigEndian.Uint16(udp[2:]) != 40000 || binary.BigEndian.Uint16(udp[6:]) != 0 {
		t.Errorf("udp reply header % x", udp)
	}
	if _, err := heartbeat.Decode(out[42:], testCluster, testKey); err != nil {
		t.Errorf("udp reflected frame does not verify: %v", err)
	}
}

// The C structs and the Go encoder must agree byte for byte.
func TestHeartbeatDrift(t *testing.T) {
	sizes := map[string]struct{ got, want int }{
		"hb_frame": {binary.Size(heartbeatHbFrame{}), heartbeat.FrameSize},
		"hb_slot":  {binary.Size(heartbeatHbSlot{}), slotSize},
		"hb_peer":  {binary.Size(heartbeatHbPeer{}), peerSize},
		"hb_event": {binary.Size(heartbeatHbEvent{}), 32},
	}
	for name, s := range sizes {
		if s.got != s.want {
			t.Errorf("sizeof(struct %s) = %d, Go assumes %d", name, s.got, s.want)
		}
	}
	f := heartbeat.Frame{Flags: 1, LinkID: 2, ClusterID: 3, SrcNode: 4, EchoNode: 5, Incarnation: 6, Seq: 7, SendNS: 8, Progress: 9, EchoNS: 10}
	var c heartbeatHbFrame
	if _, err := binary.Decode(encode(f, testKey), binary.LittleEndian, &c); err != nil {
		t.Fatal(err)
	}
	if c.Version != heartbeat.Version || c.Flags != 1 || c.LinkId != 2 || c.ClusterId != 3 || c.SrcNode != 4 || c.EchoNode != 5 ||
		c.Incarnation != 6 || c.Seq != 7 || c.SendNs != 8 || c.Progress != 9 || c.EchoNs != 10 {
		t.Errorf("Go encoding read through the C layout: %+v", c)
	}
	if heartbeat.FlagEchoRequest != uint8(heartbeatHbFlagsHB_F_ECHO_REQUEST) || heartbeat.FlagEchoReply != uint8(heartbeatHbFlagsHB_F_ECHO_REPLY) {
		t.Error("echo flags differ")
	}
	counters := map[heartbeat.Counter]heartbeatHbCounter{
		heartbeat.CounterData: heartbeatHbCounterHB_C_DATA, heartbeat.CounterEchoReply: heartbeatHbCounterHB_C_ECHO_REPLY,
		heartbeat.CounterEchoSent: heartbeatHbCounterHB_C_ECHO_SENT, heartbeat.CounterMalformed: heartbeatHbCounterHB_C_MALFORMED,
		heartbeat.CounterVersion: heartbeatHbCounterHB_C_VERSION, heartbeat.CounterCluster: heartbeatHbCounterHB_C_CLUSTER,
		heartbeat.CounterBadMAC: heartbeatHbCounterHB_C_BAD_MAC, heartbeat.CounterUnknownPeer: heartbeatHbCounterHB_C_UNKNOWN_PEER,
		heartbeat.CounterWrongLink: heartbeatHbCounterHB_C_WRONG_LINK, heartbeat.CounterReplay: heartbeatHbCounterHB_C_REPLAY,
		heartbeat.CounterNotConfigured: heartbeatHbCounterHB_C_NOT_CONFIGURED, heartbeat.CounterCatchup: heartbeatHbCounterHB_C_CATCHUP, heartbeat.CounterHeld: heartbeatHbCounterHB_C_HELD,
		heartbeat.NumCounters: heartbeatHbCounterHB_C_MAX,
	}
	for g, c := range counters {
		if uint32(g) != uint32(c) {
			t.Errorf("counter %v = %d in Go, %d in C", g, g, c)
		}
	}
	states := [][2]uint32{
		{uint32(heartbeat.PeerUnknown), uint32(heartbeatHbPeerStateHB_PEER_UNKNOWN)},
		{uint32(heartbeat.PeerAlive), uint32(heartbeatHbPeerStateHB_PEER_ALIVE)},
		{uint32(heartbeat.PeerStalled), uint32(heartbeatHbPeerStateHB_PEER_STALLED)},
		{uint32(heartbeat.PeerDown), uint32(heartbeatHbPeerStateHB_PEER_DOWN)},
		{uint32(heartbeat.LinkDown), uint32(heartbeatHbLinkStateHB_LINK_DOWN)},
		{uint32(heartbeat.LinkUp), uint32(heartbeatHbLinkStateHB_LINK_UP)},
		{uint32(heartbeat.EventLink), uint32(heartbeatHbEventKindHB_EV_LINK)},
		{uint32(heartbeat.EventPeer), uint32(heartbeatHbEventKindHB_EV_PEER)},
		{uint32(heartbeat.EventJeopardy), uint32(heartbeatHbEventKindHB_EV_JEOPARDY)},
	}
	for i, s := range states {
		if s[0] != s[1] {
			t.Errorf("state/kind %d: Go %d, C %d", i, s[0], s[1])
		}
	}
}
