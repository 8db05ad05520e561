package heartbeat

import (
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingTx is a transmitter that only counts and keeps the last payload.
type countingTx struct {
	n    atomic.Uint64
	mu   sync.Mutex
	last []byte
}

func (c *countingTx) Send(p []byte) error {
	c.mu.Lock()
	c.last = append(c.last[:0], p...)
	c.mu.Unlock()
	c.n.Add(1)
	return nil
}
func (c *countingTx) Close() error { return nil }

// Run sends the raw Ethernet links with its own batch socket (one sendmmsg, raw system calls)
// and any other transmitter through Send; every link gets its frames, in sequence, with its
// link id. The raw links here are two sockets on the loopback interface, each of which
// receives both links' frames.
func TestSenderRunBatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: AF_PACKET sockets")
	}
	var links [2]*RawLink
	for i := range links {
		l, err := OpenRawLink("lo")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		links[i] = l
	}
	fake := &countingTx{}
	cluster := rand.Uint32() | 1 // tell our frames from anyone else's on lo
	s, err := NewSender(SenderConfig{ClusterID: cluster, NodeID: 5, Key: testKey, Incarnation: 9,
		Interval: time.Millisecond, Links: []Transmitter{links[0], fake, links[1]}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, nil); close(done) }()

	// Read until both raw links' frames have come in a run of 20 each.
	lastSeq := map[uint8]uint64{}
	got := map[uint8]int{}
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for got[0] < 20 || got[2] < 20 {
		n, _, err := links[0].Receive(buf, deadline)
		if err != nil {
			t.Fatalf("after %v frames: %v", got, err)
		}
		f, err := Decode(buf[:n], cluster, testKey)
		if err != nil {
			continue // someone else's
		}
		if f.SrcNode != 5 || f.Incarnation != 9 || f.Flags != FlagEchoRequest || f.LinkID == 1 {
			t.Fatalf("frame %+v", f)
		}
		if prev, ok := lastSeq[f.LinkID]; ok && f.Seq <= prev {
			t.Fatalf("link %d: seq %d after %d", f.LinkID, f.Seq, prev)
		}
		if now := MonotonicNow(); f.SendNS > now || now-f.SendNS > uint64(time.Second) {
			t.Fatalf("link %d: send time %d, now %d", f.LinkID, f.SendNS, now)
		}
		lastSeq[f.LinkID] = f.Seq
		got[f.LinkID]++
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not return after cancel")
	}
	for id := range 3 {
		if st := s.Stats(id); st.Sent < 20 || st.Errors != 0 {
			t.Errorf("link %d: %+v", id, st)
		}
	}
	if err := s.LastError(); err != nil {
		t.Errorf("last error: %v", err)
	}
	if fake.n.Load() < 20 {
		t.Errorf("the non-raw link got %d frames", fake.n.Load())
	}
	fake.mu.Lock()
	f, err := Decode(fake.last, cluster, testKey)
	fake.mu.Unlock()
	if err != nil || f.LinkID != 1 {
		t.Errorf("non-raw link's frame %+v, %v", f, err)
	}
}

// Run sleeps the ordinary way (giving its P back) exactly while a ReleaseUntil deadline is
// ahead, and with raw sleeps otherwise; an earlier deadline never shortens a later one.
func TestSenderReleaseUntil(t *testing.T) {
	tx := &countingTx{}
	s, err := NewSender(SenderConfig{ClusterID: 7, NodeID: 5, Key: testKey, Incarnation: 9,
		Interval: time.Millisecond, Links: []Transmitter{tx}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, nil); close(done) }()
	defer func() { cancel(); <-done }()
	waitSends := func(n uint64) {
		t.Helper()
		target := tx.n.Load() + n
		for deadline := time.Now().Add(5 * time.Second); tx.n.Load() < target; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the sender sent %d of %d frames in 5 s", n-(target-tx.n.Load()), n)
			}
		}
	}
	waitSends(20)
	if n := s.ReleasedCount(); n != 0 {
		t.Fatalf("%d released sleeps with no ReleaseUntil", n)
	}
	end := MonotonicNow() + uint64(time.Second)
	s.ReleaseUntil(end)
	s.ReleaseUntil(end - uint64(500*time.Millisecond)) // earlier: no effect
	waitSends(20)
	if n := s.ReleasedCount(); n < 10 {
		t.Fatalf("%d released sleeps in 20 sends of a 1 s release", n)
	}
	for MonotonicNow() < end-uint64(100*time.Millisecond) {
		time.Sleep(time.Millisecond)
	}
	mid := s.ReleasedCount()
	waitSends(10)
	if MonotonicNow() < end && s.ReleasedCount() == mid {
		t.Fatal("the earlier ReleaseUntil shortened the later one")
	}
	for MonotonicNow() < end+uint64(50*time.Millisecond) {
		time.Sleep(time.Millisecond)
	}
	after := s.ReleasedCount()
	waitSends(20)
	if n := s.ReleasedCount(); n != after {
		t.Fatalf("%d released sleeps after the release ended", n-after)
	}
}

// While SenderConfig.Waiting reports work waiting, Run parks each sleep on a Go timer (and
// keeps sending at its interval); otherwise it never parks.
func TestSenderParksWhileWorkWaits(t *testing.T) {
	tx := &countingTx{}
	var waiting atomic.Bool
	s, err := NewSender(SenderConfig{ClusterID: 7, NodeID: 5, Key: testKey, Incarnation: 9,
		Interval: time.Millisecond, Links: []Transmitter{tx}, Waiting: waiting.Load})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, nil); close(done) }()
	defer func() { cancel(); <-done }()
	waitSends := func(n uint64) {
		t.Helper()
		target := tx.n.Load() + n
		for deadline := time.Now().Add(5 * time.Second); tx.n.Load() < target; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the sender sent %d of %d frames in 5 s", n-(target-tx.n.Load()), n)
			}
		}
	}
	waitSends(20)
	if n := s.ParkedCount(); n != 0 {
		t.Fatalf("%d parked sleeps with no work waiting", n)
	}
	waiting.Store(true)
	waitSends(20)
	if n := s.ParkedCount(); n < 10 {
		t.Fatalf("%d parked sleeps in 20 sends with work waiting", n)
	}
	if n := s.ReleasedCount(); n != 0 {
		t.Fatalf("%d released sleeps: parking is not the release window", n)
	}
	waiting.Store(false)
	waitSends(5) // the sleep under way when the work went may still park
	after := s.ParkedCount()
	waitSends(20)
	if n := s.ParkedCount(); n != after {
		t.Fatalf("%d parked sleeps after the work went", n-after)
	}
}
