package shm

import (
	"errors"
	"testing"

	"vigil/drd/wire"
)

var testGeom = Geometry{SQEntries: 8, CQEntries: 16, Slots: 4, SlotSize: 8192}

func TestGeometry(t *testing.T) {
	if err := testGeom.Validate(); err != nil {
		t.Fatal(err)
	}
	if testGeom.CQOffset() != 4096+8*48 || testGeom.DataOffset() != 8192 || testGeom.Size() != 8192+4*8192 {
		t.Fatalf("layout %d %d %d", testGeom.CQOffset(), testGeom.DataOffset(), testGeom.Size())
	}
	for _, g := range []Geometry{
		{SQEntries: 3, CQEntries: 4, Slots: 1, SlotSize: 4096},
		{SQEntries: 8, CQEntries: 4, Slots: 1, SlotSize: 4096},
		{SQEntries: 8, CQEntries: 8, Slots: 0, SlotSize: 4096},
		{SQEntries: 8, CQEntries: 8, Slots: 1, SlotSize: 4097},
		{SQEntries: 8, CQEntries: 8, Slots: 4096, SlotSize: 1 << 20},
	} {
		if err := g.Validate(); err == nil {
			t.Errorf("%+v accepted", g)
		}
	}
}

func TestRings(t *testing.T) {
	mem := make([]byte, testGeom.Size())
	c, err := NewClient(mem, testGeom)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ReadHeader(mem)
	if err != nil || g != testGeom {
		t.Fatalf("header %+v, %v", g, err)
	}
	s, err := NewServer(mem, g)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]SQE, 8)
	for round := range 5 { // wrap the rings
		for i := range 8 {
			c.Push(SQE{Op: wire.OpRead, Slot: uint32(i % 4), Length: 4096, Offset: uint64(i) * 4096, Epoch: 3, UserData: uint64(round*8 + i)})
		}
		if c.SQFree() != 0 {
			t.Fatalf("sq free %d", c.SQFree())
		}
		c.Submit()
		n, err := s.Poll(out)
		if err != nil || n != 8 {
			t.Fatalf("poll %d, %v", n, err)
		}
		for i, e := range out[:n] {
			if e.UserData != uint64(round*8+i) || CheckSQE(e, g, 3, 1<<20) != wire.StatusOK {
				t.Fatalf("sqe %+v", e)
			}
			s.Post(CQE{UserData: e.UserData, Result: 4096})
		}
		s.Publish()
		cq := make([]CQE, 16)
		m, _ := c.Reap(cq)
		if m != 8 || cq[7].UserData != uint64(round*8+7) || cq[7].Result != 4096 {
			t.Fatalf("reap %d %+v", m, cq[7])
		}
	}
}

func TestCheckSQE(t *testing.T) {
	ok := SQE{Op: wire.OpWrite, Slot: 3, Length: 8192, Offset: 4096, Epoch: 5}
	if st := CheckSQE(ok, testGeom, 5, 1<<20); st != wire.StatusOK {
		t.Fatal(st)
	}
	for _, tc := range []struct {
		mod  func(*SQE)
		want wire.Status
	}{
		{func(e *SQE) { e.Epoch = 4 }, wire.StatusStaleEpoch},
		{func(e *SQE) { e.Slot = 4 }, wire.StatusBadSlot},
		{func(e *SQE) { e.Length = 12288 }, wire.StatusTooLarge},
		{func(e *SQE) { e.Offset = 1 }, wire.StatusMisaligned},
		{func(e *SQE) { e.Offset = 1 << 20 }, wire.StatusOutOfRange},
		{func(e *SQE) { e.Op = 0 }, wire.StatusBadOp},
	} {
		e := ok
		tc.mod(&e)
		if st := CheckSQE(e, testGeom, 5, 1<<20); st != tc.want {
			t.Errorf("%+v: %v, want %v", e, st, tc.want)
		}
	}
}

func TestBrokenIndices(t *testing.T) {
	mem := make([]byte, testGeom.Size())
	NewClient(mem, testGeom)
	s, _ := NewServer(mem, testGeom)
	*u32(mem, offSQTail) = 9 // more than the ring holds
	if _, err := s.Poll(make([]SQE, 8)); !errors.Is(err, ErrBroken) {
		t.Fatalf("sq tail 9: %v", err)
	}
	*u32(mem, offSQTail) = 0
	*u32(mem, offCQHead) = 1 // ahead of the tail
	if _, err := s.CQFree(); !errors.Is(err, ErrBroken) {
		t.Fatalf("cq head ahead: %v", err)
	}
}

// FuzzServerSide lets arbitrary bytes play the client: the header, the indices, the SQEs. The
// server side must never panic, never hand out an SQE that CheckSQE passes with an
// out-of-range slot or length, and never read outside the region.
func FuzzServerSide(f *testing.F) {
	mem := make([]byte, testGeom.Size())
	c, _ := NewClient(mem, testGeom)
	c.Push(SQE{Op: wire.OpWrite, Slot: 1, Length: 4096, Epoch: 1})
	c.Push(SQE{Op: wire.OpRead, Slot: 9, Length: 1 << 30, Offset: 3, Epoch: 1})
	c.Submit()
	f.Add(append([]byte(nil), mem[:8192]...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := make([]byte, testGeom.Size())
		copy(mem, b)
		if g, err := ReadHeader(mem); err == nil {
			if err := g.Validate(); err != nil || g.Size() > uint64(len(mem)) {
				t.Fatalf("header accepted %+v: %v", g, err)
			}
		}
		s, err := NewServer(mem, testGeom)
		if err != nil {
			t.Fatal(err)
		}
		copy(mem, b) // the client may overwrite the indices at any time
		out := make([]SQE, 8)
		for range 3 {
			n, err := s.Poll(out)
			if err != nil {
				return
			}
			for _, e := range out[:n] {
				if CheckSQE(e, testGeom, 1, 1<<20) == wire.StatusOK && e.Op != wire.OpFlush && e.Op != wire.OpDiscard {
					if e.Slot >= testGeom.Slots || e.Length > testGeom.SlotSize {
						t.Fatalf("unsafe sqe passed: %+v", e)
					}
					_ = s.Slot(e.Slot)[:e.Length]
				}
			}
			free, err := s.CQFree()
			if err != nil {
				return
			}
			for range min(free, n) {
				s.Post(CQE{})
			}
			s.Publish()
		}
	})
}
