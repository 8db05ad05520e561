package attention

import (
	"os"
	"testing"
)

func TestPending(t *testing.T) {
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Pending() {
		t.Fatal("an empty set reports input")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := s.Add(int(r.Fd())); err != nil {
		t.Fatal(err)
	}
	if s.Pending() {
		t.Fatal("input reported on an empty pipe")
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Level-triggered: reported as long as it is unread, however often asked.
	for range 3 {
		if !s.Pending() {
			t.Fatal("input waiting on the pipe is not reported")
		}
	}
	if _, err := r.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if s.Pending() {
		t.Fatal("input reported after it was read")
	}
	// Closed by its owner: it leaves the set.
	if _, err := w.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if s.Pending() {
		t.Fatal("a closed descriptor is still watched")
	}
	if err := s.Add(-1); err == nil {
		t.Fatal("watching descriptor -1 did not fail")
	}
}
