package heartbeat

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Echo replies answer our own requests: their silence is evidence only for the time our
// sender was sending (bpf/heartbeat.h, "Echo silence counts only while this node was sending").

func TestTxStampNext(t *testing.T) {
	for _, c := range []struct {
		name      string
		prev      TxStamp
		now, due  uint64
		wantGapNS uint64
	}{
		{"first send", TxStamp{}, t0, t0 + 1500_000, 0},
		{"punctual", TxStamp{SentNS: t0, DueNS: t0 + 1500_000, GapNS: 7}, t0 + ms, t0 + 2500_000, 7},
		{"at the due time", TxStamp{SentNS: t0, DueNS: t0 + 1500_000, GapNS: 7}, t0 + 1500_000, t0 + 3*ms, 7},
		{"late", TxStamp{SentNS: t0, DueNS: t0 + 1500_000, GapNS: 7}, t0 + 10*ms, t0 + 11500_000, 7 + 8500_000},
	} {
		got := c.prev.Next(c.now, c.due)
		if want := (TxStamp{SentNS: c.now, DueNS: c.due, GapNS: c.wantGapNS}); got != want {
			t.Errorf("%s: %+v.Next(%d, %d) = %+v, want %+v", c.name, c.prev, c.now, c.due, got, want)
		}
	}
}

// The freshness of one slot of link 0 (detect 3ms) at now, for slot times and sender stamps.
func TestEchoFreshness(t *testing.T) {
	const detect = 3 * ms
	for _, c := range []struct {
		name       string
		data, echo uint64 // slot times; zero: never
		echoGap    uint64 // the slot's EchoGapNS
		tx         TxStamp
		now        uint64
		fresh      bool
	}{
		// Without stamps the plain ages rule.
		{"no stamps, echo fresh", 0, t0, 0, TxStamp{}, t0 + detect, true},
		{"no stamps, echo stale", 0, t0, 0, TxStamp{}, t0 + detect + 1, false},
		// A punctual sender (its next send due after now) changes nothing.
		{"punctual, echo-only slot stale", 0, t0, 0, TxStamp{DueNS: t0 + detect + ms}, t0 + detect + 1, false},
		{"punctual, data fresh", t0 + 3*ms, t0 + 3*ms, 0, TxStamp{DueNS: t0 + 5*ms}, t0 + 4*ms, true},
		// Our sender overdue since t0+1.5ms: the echo-only slot (its daemon silent since
		// t0-10ms) ages only until then.
		{"overdue, echo-only", t0 - 10*ms, t0, 0, TxStamp{DueNS: t0 + 1500_000}, t0 + 50*ms, true},
		{"overdue, echo-only, aged before", t0 - 10*ms, t0, 0, TxStamp{DueNS: t0 + 3*ms + 1}, t0 + 50*ms, false},
		{"overdue, never any data", 0, t0, 0, TxStamp{DueNS: t0 + 1500_000}, t0 + 50*ms, true},
		// The same while its data was fresh when the last echo came: plain ages (a live peer
		// whose link dies while we are stalled still goes down).
		{"overdue, data fresh at the echo", t0 - 2*ms, t0, 0, TxStamp{DueNS: t0 + 1500_000}, t0 + 50*ms, false},
		{"overdue, data at exactly detect before", t0 - detect, t0, 0, TxStamp{DueNS: t0 + 1500_000}, t0 + 50*ms, false},
		// A gap that is over: 20ms of it came after the last echo, so 23ms later is 3ms.
		{"gap over, within detect", 0, t0, 5, TxStamp{DueNS: t0 + 30*ms, GapNS: 5 + 20*ms}, t0 + 23*ms, true},
		{"gap over, beyond detect", 0, t0, 5, TxStamp{DueNS: t0 + 30*ms, GapNS: 5 + 20*ms}, t0 + 23*ms + 1, false},
		// The first sweep after the sender resumed, before its request's echo is back.
		{"just resumed", 0, t0, 0, TxStamp{SentNS: t0 + 40*ms, DueNS: t0 + 41500_000, GapNS: 38500_000}, t0 + 40*ms + 10_000, true},
		// A gap before the last echo is not subtracted again.
		{"gap before the echo", 0, t0, 38 * ms, TxStamp{DueNS: t0 + 10*ms, GapNS: 38 * ms}, t0 + detect + 1, false},
		// Local carrier loss, never any frame: not fresh whatever the sender did.
		{"never heard", 0, 0, 0, TxStamp{DueNS: t0}, t0 + 50*ms, false},
	} {
		d := newTestDetector(t)
		d.SetTx(0, c.tx)
		s := Slot{LastDataNS: c.data, LastEchoNS: c.echo, EchoGapNS: c.echoGap}
		if got := d.linkFresh(&s, 0, c.now); got != c.fresh {
			t.Errorf("%s: fresh %v, want %v (echo age %v)", c.name, got, c.fresh, time.Duration(d.echoAge(&s, 0, c.now)))
		}
	}
}

// The bug this rule fixes: a peer whose daemon was killed is heard through its kernel's echoes
// only; when our own sender stalls for longer than detect, the echoes stop with it, and the old
// rule took the peer down long before its stall timeout.
func TestScenarioOwnSenderStallKeepsStalledPeer(t *testing.T) {
	for _, stamps := range []bool{true, false} {
		s := newScenario(t)
		s.noStamps = !stamps
		s.tick(2).expect(startup...)
		s.kill(2).tick(3).expect()
		s.tick(1).expect("6ms peer 2 alive->stalled")
		s.mute().tick(2).expect()
		if !stamps {
			// The old rule: down once the last echo (6ms) is more than 3ms old, 4ms into a 10ms
			// stall timeout.
			s.tick(1).expect()
			s.tick(1).expect("10ms link 2/0 up->down", "10ms link 2/1 up->down", "10ms peer 2 stalled->down")
			continue
		}
		// 8ms without sending: peer 3 speaks for itself, peer 2 stays stalled.
		s.tick(6).expect()
		if p := s.d.Peer(2); p.State != PeerStalled || p.LinksUp != 2 {
			t.Fatalf("peer 2 after our 8ms stall: %+v", p)
		}
		// Resumed: its kernel answers again; down only by the stall timeout (6ms + 10ms).
		s.unmute().tick(2).expect()
		s.tick(1).expect("17ms peer 2 stalled->down")
		if sl := s.d.Slot(2, 0); sl.State != LinkUp || sl.EchoGapNS == 0 {
			t.Fatalf("slot 2/0 = %+v", sl)
		}
	}
}

// Echo silence counts again from the first request after a stall: a peer whose kernel died
// while we were not sending (its daemon already dead) goes down detect after we resume.
func TestScenarioOwnSenderStallThenCrash(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	s.kill(2).tick(4).expect("6ms peer 2 alive->stalled")
	s.mute().crash(2).tick(5).expect() // 11ms: no request went out, so no echo is missing
	s.unmute().tick(2).expect()        // two requests (12, 13ms) and the pre-stall 1.5ms
	s.tick(1).expect("14ms link 2/0 up->down", "14ms link 2/1 up->down", "14ms peer 2 stalled->down")
}

// A live peer's link that dies while our sender is stalled goes down on the silence of its
// data frames, as before: the echo rule applies to echo-only slots.
func TestScenarioOwnSenderStallLinkCut(t *testing.T) {
	s := newScenario(t)
	s.tick(2).expect(startup...)
	s.mute().cut(3, 0).tick(3).expect()
	s.tick(1).expect("6ms link 3/0 up->down", "6ms jeopardy 3 on")
	s.cut(3, 1).tick(4).expect("10ms link 3/1 up->down", "10ms peer 3 alive->down", "10ms jeopardy 3 off")
	if p := s.d.Peer(2); p.State != PeerAlive || p.LinksUp != 2 {
		t.Fatalf("peer 2 = %+v", p)
	}
}

// fakeStamps records the sender's stamps of link 0.
type fakeStamps struct {
	mu     sync.Mutex
	loaded TxStamp
	stored []TxStamp
}

func (f *fakeStamps) LoadTx(link uint8) TxStamp { return f.loaded }
func (f *fakeStamps) StoreTx(link uint8, t TxStamp) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if link == 0 {
		f.stored = append(f.stored, t)
	}
}

// Run stamps every link before each send: the next send is due within an interval and a half,
// and a restarted sender continues its predecessor's gap (the time no daemon sent counts as
// one).
func TestSenderRunStamps(t *testing.T) {
	stamps := &fakeStamps{loaded: TxStamp{SentNS: 5, DueNS: 10, GapNS: 1000}}
	tx := &countingTx{}
	s, err := NewSender(SenderConfig{ClusterID: 7, NodeID: 5, Key: testKey, Incarnation: 9,
		Interval: time.Millisecond, Links: []Transmitter{tx, &countingTx{}}, Stamps: stamps})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := MonotonicNow()
	go func() { s.Run(ctx, nil); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for tx.n.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	stamps.mu.Lock()
	defer stamps.mu.Unlock()
	if len(stamps.stored) < 20 {
		t.Fatalf("%d stamps", len(stamps.stored))
	}
	first := stamps.stored[0]
	if first.SentNS < start || first.GapNS != 1000+first.SentNS-10 {
		t.Fatalf("first stamp %+v (started at %d): want the predecessor's gap plus the time since its due time", first, start)
	}
	for i, st := range stamps.stored {
		if st.DueNS <= st.SentNS || st.DueNS > st.SentNS+uint64(3*time.Millisecond/2) {
			t.Fatalf("stamp %d: %+v: due not within an interval and a half", i, st)
		}
		if i > 0 {
			prev := stamps.stored[i-1]
			if st.SentNS <= prev.SentNS || st != prev.Next(st.SentNS, st.DueNS) {
				t.Fatalf("stamp %d: %+v after %+v", i, st, prev)
			}
		}
	}
}
