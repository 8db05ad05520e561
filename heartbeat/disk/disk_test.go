package disk

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSlotRoundTrip(t *testing.T) {
	s := Slot{ClusterID: 7, Node: 3, Incarnation: 99, Seq: 12345, WallNS: -5, IntervalNS: 1e7}
	buf := make([]byte, SlotSize)
	s.Encode(buf)
	got, err := Decode(buf, 7, 3)
	if err != nil || got != s {
		t.Fatalf("Decode(Encode(%+v)) = %+v, %v", s, got, err)
	}
	for _, tc := range []struct {
		name    string
		mutate  func(b []byte)
		cluster uint32
		node    uint16
		want    error
	}{
		{"never written", func(b []byte) { clear(b) }, 7, 3, ErrEmpty},
		{"torn: a byte flipped", func(b []byte) { b[33] ^= 1 }, 7, 3, ErrCorrupt},
		{"garbage without magic", func(b []byte) { b[0] = 'X' }, 7, 3, ErrCorrupt},
		{"another cluster", func([]byte) {}, 8, 3, ErrForeign},
		{"another node's slot", func([]byte) {}, 7, 4, ErrForeign},
	} {
		b := make([]byte, SlotSize)
		s.Encode(b)
		tc.mutate(b)
		if _, err := Decode(b, tc.cluster, tc.node); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := Decode(buf[:10], 7, 3); !errors.Is(err, ErrCorrupt) {
		t.Errorf("short buffer: %v", err)
	}
}

// FuzzDecode: never panics, and whatever decodes encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	b := make([]byte, headerLen)
	Slot{ClusterID: 7, Node: 3, Seq: 1}.Encode(b)
	f.Add(b)
	f.Add(make([]byte, headerLen))
	f.Add([]byte("VIGILDHB"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data, 7, 3)
		if err != nil {
			return
		}
		out := make([]byte, headerLen)
		s.Encode(out)
		if string(out) != string(data[:headerLen]) {
			t.Fatalf("re-encoding changed the slot:\n% x\n% x", out, data[:headerLen])
		}
	})
}

func TestTracker(t *testing.T) {
	const timeout = 100 * time.Millisecond
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tr := NewTracker(timeout, ms(1000), []uint16{2, 3})
	slot := func(seq uint64) Slot { return Slot{Node: 2, Incarnation: 1, Seq: seq} }
	type step struct {
		at   int
		seq  uint64 // 0: a failed read
		want string // "-" or the new state
	}
	for i, st := range []step{
		{1010, 50, "-"},       // a baseline, not an advance: a stale slot never counts as alive
		{1050, 50, "-"},       // standing still
		{1060, 51, "alive"},   // advanced
		{1150, 51, "-"},       // 90 ms without an advance: still alive
		{1161, 51, "stopped"}, // 101 ms
		{1170, 0, "-"},        // read errors change nothing
		{1200, 52, "alive"},   // back
	} {
		var err error
		if st.seq == 0 {
			err = errors.New("read failed")
		}
		evs := tr.Observe(ms(st.at), 2, slot(st.seq), err)
		got := "-"
		if len(evs) == 1 {
			got = evs[0].State.String()
		} else if len(evs) > 1 {
			t.Fatalf("step %d: %d events", i, len(evs))
		}
		if got != st.want {
			t.Fatalf("step %d (t=%d seq=%d): %s, want %s", i, st.at, st.seq, got, st.want)
		}
	}
	// Peer 3 never wrote: unknown until timeout after the start, then stopped.
	if evs := tr.Tick(ms(1101)); len(evs) != 1 || evs[0].Peer != 3 || evs[0].State != Stopped {
		t.Errorf("peer 3 after the timeout: %+v", evs)
	}
	// A restarted peer (new incarnation, seq from 1) advances too.
	tr.Observe(ms(1300), 2, Slot{Incarnation: 2, Seq: 1}, nil)
	if p, _ := tr.Peer(2); p.State != Alive || p.Incarnation != 2 {
		t.Errorf("after a restart: %+v", p)
	}
	if evs := tr.Observe(0, 9, Slot{}, nil); evs != nil {
		t.Errorf("untracked peer: %+v", evs)
	}
}

// Two nodes on one file with O_DIRECT: each sees the other alive while both write, and stopped
// once one stops writing.
func TestDiskTwoNodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.disk")
	now := time.Duration(time.Second)
	clock := func() time.Duration { return now }
	open := func(node, peer uint16) *Disk {
		d, err := Open(Options{
			Path: path, ClusterID: 5, Node: node, Incarnation: 1, Peers: []uint16{peer},
			Interval: 10 * time.Millisecond, Timeout: 50 * time.Millisecond, Now: clock,
		})
		if err != nil {
			if node == 1 {
				t.Skipf("O_DIRECT on %s: %v", path, err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		})
		return d
	}
	// The file does not exist yet: Open must refuse, not create.
	if _, err := Open(Options{Path: path, Node: 1, Interval: time.Millisecond, Timeout: time.Second}); err == nil {
		t.Fatal("Open created a missing disk")
	}
	if err := writeEmpty(path); err != nil {
		t.Fatal(err)
	}
	a, b := open(1, 2), open(2, 1)
	for range 3 {
		now += 10 * time.Millisecond
		a.Beat()
		b.Beat()
	}
	if _, peers := a.Status(); peers[2].State != Alive {
		t.Fatalf("node 1 sees node 2 %v, want alive", peers[2])
	}
	b.SetPaused(true)
	var stopped bool
	for range 10 {
		now += 10 * time.Millisecond
		for _, ev := range a.Beat() {
			stopped = stopped || ev.Peer == 2 && ev.State == Stopped
		}
		b.Beat()
	}
	if !stopped {
		t.Error("node 1 did not see node 2's slot stop")
	}
	if _, peers := b.Status(); peers[1].State != Alive {
		t.Errorf("node 2 (reading, not writing) sees node 1 %v, want alive", peers[1].State)
	}
	st, _ := a.Status()
	if st.Seq != 13 || st.WriteErrors != 0 || st.ReadErrors != 0 {
		t.Errorf("node 1 status %+v", st)
	}
}

func writeEmpty(path string) error {
	return os.WriteFile(path, make([]byte, 3*SlotSize), 0o600)
}
