package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// expectClosed fails unless recv reports the session's end within a few seconds.
func expectClosed(t *testing.T, what string, recv func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- recv() }()
	select {
	case err := <-errc:
		if err == nil {
			t.Errorf("%s: got a message, want the session closed", what)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: the earlier session of the same client is still open after the new one was welcomed", what)
	}
}

// TestRemoteFence: a Hello from a client the server still has a session with ends that session
// (its requests finished) before the new one is welcomed, so a re-sent write can never be
// overtaken by its first copy.
func TestRemoteFence(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { testRemoteFence(t, tr.dial) })
	}
}

func testRemoteFence(t *testing.T, dialPipe func(*testing.T, *Server) *rawClient) {
	s, _ := newTestServer(t, false)
	ctx := context.Background()
	hello := func(c *rawClient, client uint64) wire.Welcome {
		t.Helper()
		if err := c.c.Send(ctx, wire.AppendHello(nil, wire.Hello{Version: wire.Version, Device: "d0", Client: client})); err != nil {
			t.Fatal(err)
		}
		m, err := c.c.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := wire.DecodeWelcome(m)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	a := dialPipe(t, s)
	if w := hello(a, 42); w.Status != wire.StatusOK {
		t.Fatal(w)
	}
	if r := a.do(wire.Request{Op: wire.OpWrite, Length: 4096, Epoch: 7, Tag: 1, Data: make([]byte, 4096)}); r.Status != wire.StatusOK {
		t.Fatal(r.Status)
	}
	other := dialPipe(t, s) // another client: left alone
	if w := hello(other, 43); w.Status != wire.StatusOK {
		t.Fatal(w)
	}
	b := dialPipe(t, s)
	if w := hello(b, 42); w.Status != wire.StatusOK {
		t.Fatal(w)
	}
	expectClosed(t, "same client", func() error { _, err := a.c.Recv(ctx); return err })
	if r := b.do(wire.Request{Op: wire.OpRead, Length: 4096, Epoch: 7, Tag: 2}); r.Status != wire.StatusOK {
		t.Fatal(r.Status)
	}
	if r := other.do(wire.Request{Op: wire.OpRead, Length: 4096, Epoch: 7, Tag: 3}); r.Status != wire.StatusOK {
		t.Errorf("another client's session: %v", r.Status)
	}
}

// TestLocalFence: the same for the local path, where the client is known by its shared region.
func TestLocalFence(t *testing.T) {
	s, _ := newTestServer(t, false)
	sock := listenLocal(t, s)
	memfd, _ := region(t)
	a, w := localHello(t, sock, "d0", memfd, eventfd(t), eventfd(t))
	if w.Status != wire.StatusOK {
		t.Fatal(w)
	}
	_, w = localHello(t, sock, "d0", memfd, eventfd(t), eventfd(t))
	if w.Status != wire.StatusOK {
		t.Fatal(w)
	}
	a.SetDeadline(time.Now().Add(5 * time.Second))
	expectClosed(t, "same region", func() error { _, err := a.Read(make([]byte, 64)); return err })
}

// TestExportsSorted: Exports is sorted by name, as documented (NBD's default export is the
// first).
func TestExportsSorted(t *testing.T) {
	var devs []*Device
	for _, name := range []string{"zeta", "alpha"} {
		d, err := OpenDevice(name, newBacking(t, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		devs = append(devs, d)
	}
	s, err := New(Config{Devices: devs, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ex := s.Exports(); len(ex) != 2 || ex[0].Name != "alpha" || ex[1].Name != "zeta" {
		t.Errorf("exports %+v, want alpha then zeta", ex)
	}
}

// TestBackingLocked: a backing that a device holds open cannot be opened by another device
// (another server on this node, or a restarted one whose predecessor's rings still finish
// their requests) until the first is closed.
func TestBackingLocked(t *testing.T) {
	backing := newBacking(t, 1<<20)
	d1, err := OpenDevice("d0", backing)
	if err != nil {
		t.Fatal(err)
	}
	if d2, err := OpenDeviceWait("d0", backing, 50*time.Millisecond); err == nil {
		d2.Close()
		t.Fatal("a second server opened a backing that is being served")
	} else {
		t.Log(err)
	}
	d1.Close()
	d2, err := OpenDeviceWait("d0", backing, 5*time.Second)
	if err != nil {
		t.Fatalf("backing still locked after close: %v", err)
	}
	d2.Close()
}

// TestLockHeldByRing: the lock lives as long as a ring holds the backing as a registered file,
// even after the device's own descriptor is closed (as when the process was killed): that is
// what fences a restarted server from a killed one's requests still in flight.
func TestLockHeldByRing(t *testing.T) {
	backing := newBacking(t, 1<<20)
	d1, err := OpenDevice("d0", backing)
	if err != nil {
		t.Fatal(err)
	}
	loop, err := newIOLoop(d1, 4, 4096, false, slog.New(slog.DiscardHandler), func(*blockReq, wire.Status, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if loop.eng.Kind() != uring.KindURing {
		loop.eng.Close()
		d1.Close()
		t.Skipf("io_uring unavailable (%s): no ring holds the file", loop.eng.Reason())
	}
	go loop.run()
	d1.Close()
	if d2, err := OpenDeviceWait("d0", backing, 50*time.Millisecond); err == nil {
		d2.Close()
		t.Fatal("backing opened while a ring still holds it")
	}
	close(loop.in)
	<-loop.finished
	d2, err := OpenDeviceWait("d0", backing, 5*time.Second)
	if err != nil {
		t.Fatalf("backing still locked after the ring closed: %v", err)
	}
	d2.Close()
}
