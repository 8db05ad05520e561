package dataplane

import (
	"errors"
	"os"
	"testing"
	"time"

	"vigil/heartbeat"
)

// WaitEvent returns the events a sweep raised, waiting for them in the network poller, and
// CloseEvents ends a wait.
func TestHeartbeatWaitEvent(t *testing.T) {
	h := loadHeartbeatForTest(t)
	got := make(chan heartbeat.Event, 8)
	errc := make(chan error, 1)
	go func() {
		for {
			ev, err := h.WaitEvent()
			if err != nil {
				errc <- err
				return
			}
			got <- ev
		}
	}()
	time.Sleep(20 * time.Millisecond) // the reader waits before there is anything
	select {
	case ev := <-got:
		t.Fatalf("an event before any sweep: %+v", ev)
	default:
	}
	// Peers 2 and 3 were never heard: past the start-up grace, the sweep reports them down.
	kc := testConfig()
	kc.NowNS = testNow + 10*kc.DetectNS
	if err := h.SetConfig(kc); err != nil {
		t.Fatal(err)
	}
	if err := h.Sweep(); err != nil {
		t.Fatal(err)
	}
	down := map[uint16]bool{}
	for len(down) < 2 {
		select {
		case ev := <-got:
			if ev.Kind == heartbeat.EventPeer && heartbeat.PeerState(ev.State) == heartbeat.PeerDown {
				down[ev.Peer] = true
			}
		case err := <-errc:
			t.Fatalf("WaitEvent: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no peer-down events within 5s (got %v)", down)
		}
	}
	if h.wait.err != nil || h.wait.file == nil {
		t.Fatalf("the events were not waited for in the network poller: %v", h.wait.err)
	}
	if err := h.CloseEvents(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("WaitEvent after CloseEvents: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("CloseEvents did not end the wait")
	}
}
