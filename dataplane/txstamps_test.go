//go:build linux

package dataplane

import (
	"testing"

	"vigil/heartbeat"
)

// The sweep judges echo silence against our own sender's stamps (bpf/heartbeat.h, "Echo
// silence counts only while this node was sending"): peer 2's daemon is dead and its kernel
// answers on link 0; when our sender stops for 20 ms (beyond detect, 3 ms), the link stays up
// and the peer stays STALLED, and once it sends again unanswered requests take the link down
// after detect. The same schedule without stamps takes it down 3 ms after the last echo.
func TestSweepEchoAgainstOwnSender(t *testing.T) {
	const ms = 1_000_000
	for _, stamped := range []bool{true, false} {
		h := loadHeartbeatForTest(t)
		kc := testConfig()
		kc.NLinks = 1
		now := uint64(testNow)
		at := func(ns uint64) {
			now = ns
			kc.NowNS = ns
			if err := h.SetConfig(kc); err != nil {
				t.Fatal(err)
			}
		}
		var tx heartbeat.TxStamp
		var echoSeq uint64
		send := func() { // our sender stamps (and sends) at now
			tx = tx.Next(now, now+ms+ms/2)
			if stamped {
				h.StoreTx(0, tx)
			}
		}
		echo := func() { // peer 2's kernel reflects the request just sent
			echoSeq++
			f := heartbeat.Frame{Flags: heartbeat.FlagEchoReply, ClusterID: testCluster, SrcNode: testSelf, EchoNode: 2,
				Incarnation: testInc, Seq: echoSeq, SendNS: now - 50_000, EchoNS: now}
			if v, _, err := h.RunXDP(ethFrame(selfMAC, peerMAC, encode(f, testKey))); err != nil || v != xdpDrop {
				t.Fatalf("echo reply: verdict %d, %v", v, err)
			}
		}
		sweep := func() []heartbeat.Event {
			if err := h.Sweep(); err != nil {
				t.Fatal(err)
			}
			evs, err := h.PendingEvents()
			if err != nil {
				t.Fatal(err)
			}
			return evs
		}
		peer := func() heartbeat.Peer {
			p, err := h.Peer(2)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		// 10 ms of echoes only (the daemon was killed before we started): up and STALLED.
		for i := range uint64(10) {
			at(testNow + i*ms)
			send()
			echo()
			sweep()
		}
		if p := peer(); p.State != heartbeat.PeerStalled || p.LinksUp != 1 {
			t.Fatalf("stamped %v: before our stall: peer 2 %+v", stamped, p)
		}
		// Our sender stops at 9 ms: sweeps every ms until 29 ms.
		var down uint64
		for i := uint64(10); i < 30 && down == 0; i++ {
			at(testNow + i*ms)
			for _, ev := range sweep() {
				if ev.Kind == heartbeat.EventLink && ev.State == uint32(heartbeat.LinkDown) {
					down = now
				}
			}
		}
		if !stamped {
			if down != testNow+13*ms { // the last echo (9 ms) more than 3 ms old
				t.Fatalf("without stamps: link down at %d ms, want 13", (down-testNow)/ms)
			}
			continue
		}
		if down != 0 {
			t.Fatalf("link down at %d ms while our sender was stopped", (down-testNow)/ms)
		}
		if p := peer(); p.State != heartbeat.PeerStalled || p.LinksUp != 1 {
			t.Fatalf("after our stall: peer 2 %+v", p)
		}
		// It sends again at 30 ms, into a peer that is gone now: the echo silence counts again
		// from 30 ms (plus the 1.5 ms before the stall), so the link goes down at 32 ms.
		for i := uint64(30); i < 40 && down == 0; i++ {
			at(testNow + i*ms)
			send()
			for _, ev := range sweep() {
				if ev.Kind == heartbeat.EventLink && ev.State == uint32(heartbeat.LinkDown) {
					down = now
				}
			}
		}
		if down != testNow+32*ms {
			t.Fatalf("after resuming: link down at %d ms, want 32", (down-testNow)/ms)
		}
		// The XDP program recorded the gap at the last echo: none yet (the stall came after).
		if s, err := h.Slot(2, 0); err != nil || s.EchoGapNS != 0 {
			t.Fatalf("slot 2/0: %+v, %v", s, err)
		}
		if got := h.LoadTx(0); got != tx {
			t.Fatalf("LoadTx = %+v, want %+v", got, tx)
		}
	}
}

// The XDP program copies the sender's gap into the slot when it records an echo reply.
func TestXDPEchoRecordsSenderGap(t *testing.T) {
	h := loadHeartbeatForTest(t)
	h.StoreTx(0, heartbeat.TxStamp{SentNS: testNow - 100, DueNS: testNow + 1_500_000, GapNS: 4242})
	f := heartbeat.Frame{Flags: heartbeat.FlagEchoReply, ClusterID: testCluster, SrcNode: testSelf, EchoNode: 3,
		Incarnation: testInc, Seq: 1, SendNS: testNow - 100, EchoNS: testNow}
	if v, _, err := h.RunXDP(ethFrame(selfMAC, peerMAC, encode(f, testKey))); err != nil || v != xdpDrop {
		t.Fatalf("echo reply: verdict %d, %v", v, err)
	}
	if s, err := h.Slot(3, 0); err != nil || s.EchoGapNS != 4242 || s.RxEcho != 1 {
		t.Fatalf("slot 3/0: %+v, %v", s, err)
	}
	if s, err := h.Slot(3, 1); err != nil || s.EchoGapNS != 0 {
		t.Fatalf("slot 3/1: %+v, %v", s, err)
	}
}
