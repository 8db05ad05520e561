package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// requireRing skips a test of the event loop when the kernel has no io_uring (the session
// then takes the general path, tested elsewhere).
func requireRing(t *testing.T) {
	t.Helper()
	eng, err := uring.NewEngine(uring.Config{QueueDepth: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if eng.Kind() != uring.KindURing {
		t.Skipf("no io_uring: %s", eng.Reason())
	}
}

// waitEnded returns ServeConn's result, failing the test if the session does not end soon.
func waitEnded(t *testing.T, ended chan error) error {
	t.Helper()
	select {
	case err := <-ended:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("session still running")
		return nil
	}
}

// TestSocketSplitAndBatched: a request that arrives a few bytes at a time is answered once
// complete, and a burst of more requests than the queue depth in one write is answered whole.
func TestSocketSplitAndBatched(t *testing.T) {
	requireRing(t)
	s, _ := newTestServer(t, false) // queue depth 8
	c, raw, _ := dialSocket(t, s)
	c.hello("d0", wire.Version)
	data := bytes.Repeat([]byte("split!"), 4096/6+1)[:4096]
	m := wire.AppendRequest(nil, &wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: 1, Offset: 4096, Length: 4096, Data: data})
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(m)))
	frame = append(frame, m...)
	for i := 0; i < len(frame); i += 997 {
		if _, err := raw.Write(frame[i:min(i+997, len(frame))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	mr, err := c.c.Recv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := wire.DecodeResponse(mr); err != nil || r.Tag != 1 || r.Status != wire.StatusOK {
		t.Fatalf("split write: %+v %v", r, err)
	}
	const n = 50
	var burst []byte
	for i := range n {
		m := wire.AppendRequest(nil, &wire.Request{Op: wire.OpRead, Epoch: 7, Tag: uint64(100 + i), Offset: 4096, Length: 4096})
		burst = binary.LittleEndian.AppendUint32(burst, uint32(len(m)))
		burst = append(burst, m...)
	}
	if _, err := raw.Write(burst); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for range n {
		mr, err := c.c.Recv(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r, err := wire.DecodeResponse(mr)
		if err != nil || r.Status != wire.StatusOK || r.Tag < 100 || r.Tag >= 100+n || seen[r.Tag] || !bytes.Equal(r.Data, data) {
			t.Fatalf("burst: %+v %v", r.Status, err)
		}
		seen[r.Tag] = true
	}
}

// TestSocketSlowReader: a client that sends many large reads before reading any answer gets
// all of them once it reads (the loop stops taking requests while replies pile up, and waits
// for room in the socket).
func TestSocketSlowReader(t *testing.T) {
	requireRing(t)
	s, _ := newTestServer(t, false)
	c, _, _ := dialSocket(t, s)
	c.hello("d0", wire.Version)
	pattern := make([]byte, 64<<10)
	for i := range pattern {
		pattern[i] = byte(i / 4096)
	}
	if r := c.do(wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: 1, Length: 64 << 10, Data: pattern}); r.Status != wire.StatusOK {
		t.Fatal(r.Status)
	}
	const n = 200 // 12.5 MiB of replies: more than the socket buffers and the loop's limit
	sent := make(chan error, 1)
	go func() {
		for i := range n {
			r := wire.Request{Op: wire.OpRead, Epoch: 7, Tag: uint64(10 + i), Length: 64 << 10}
			if err := c.c.Send(context.Background(), wire.AppendRequest(nil, &r)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	time.Sleep(200 * time.Millisecond) // let the replies pile up
	for range n {
		mr, err := c.c.Recv(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r, err := wire.DecodeResponse(mr); err != nil || r.Status != wire.StatusOK || !bytes.Equal(r.Data, pattern) {
			t.Fatalf("read %d: %v %v", r.Tag, r.Status, err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// TestSocketLoopYields: a socket session that serves one request after another passes through
// the Go scheduler at least every yieldEvery. Without it, a goroutine locked to its thread that
// only blocks in system calls has its processor taken by Go's monitor thread on every wait once
// 10 ms passed (bench/README.md, ### drd): the first wait yields, and a request submitted more
// than yieldEvery later yields again.
func TestSocketLoopYields(t *testing.T) {
	requireRing(t)
	var yields atomic.Int64
	gosched = func() { yields.Add(1); runtime.Gosched() }
	defer func() { gosched = runtime.Gosched }()
	s, _ := newTestServer(t, false)
	c, _, _ := dialSocket(t, s)
	c.hello("d0", wire.Version)
	data := bytes.Repeat([]byte{0x5a}, 4096)
	write := func(tag uint64) {
		if r := c.do(wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: tag, Offset: 4096 * (tag % 16), Length: 4096, Data: data}); r.Status != wire.StatusOK {
			t.Fatalf("write %d: %v", tag, r.Status)
		}
	}
	write(1) // the loop yielded before it took this request
	first := time.Now()
	tag := uint64(2)
	for ; time.Since(first) < 5*yieldEvery; tag++ {
		write(tag)
	}
	write(tag) // submitted more than yieldEvery after the first yield
	if n := yields.Load(); n < 2 {
		t.Errorf("%d yields in %d requests over %v, want at least 2", n, tag, time.Since(first).Round(time.Millisecond))
	}
}

// TestSocketBrokenMidRequest: a client that goes away in the middle of a request (part of a
// write's data sent) ends its session with an error; a frame longer than any request ends it
// too; the server goes on serving other sessions.
func TestSocketBrokenMidRequest(t *testing.T) {
	requireRing(t)
	s, _ := newTestServer(t, false)
	c, raw, ended := dialSocket(t, s)
	c.hello("d0", wire.Version)
	m := wire.AppendRequest(nil, &wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: 1, Length: 4096, Data: make([]byte, 4096)})
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(m)))
	frame = append(frame, m[:100]...)
	if _, err := raw.Write(frame); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if err := waitEnded(t, ended); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("session of a client gone mid-request ended with %v, want an EOF", err)
	}

	c, raw, ended = dialSocket(t, s)
	c.hello("d0", wire.Version)
	if _, err := raw.Write(binary.LittleEndian.AppendUint32(nil, wire.MaxFrame+1)); err != nil {
		t.Fatal(err)
	}
	if err := waitEnded(t, ended); err == nil || !strings.Contains(err.Error(), "frame of") {
		t.Errorf("session sent an oversized frame ended with %v", err)
	}
	if _, err := c.c.Recv(context.Background()); err == nil {
		t.Error("session still answers after an oversized frame")
	}

	c, _, _ = dialSocket(t, s)
	c.hello("d0", wire.Version)
	if r := c.do(wire.Request{Op: wire.OpRead, Epoch: 7, Tag: 3, Length: 4096}); r.Status != wire.StatusOK {
		t.Fatalf("another session after broken ones: %v", r.Status)
	}
}

// TestSocketServerClose: Close ends sessions waiting in the loop (idle, and with requests
// still to be read), and returns.
func TestSocketServerClose(t *testing.T) {
	requireRing(t)
	dev, err := OpenDevice("d0", newBacking(t, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	s, err := New(Config{Devices: []*Device{dev}, Epoch: 7, QueueDepth: 8, SlotSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	idle, _, idleEnded := dialSocket(t, s)
	idle.hello("d0", wire.Version)
	busy, _, busyEnded := dialSocket(t, s)
	busy.hello("d0", wire.Version)
	for i := range 20 {
		r := wire.Request{Op: wire.OpRead, Epoch: 7, Tag: uint64(i), Length: 64 << 10}
		if err := busy.c.Send(context.Background(), wire.AppendRequest(nil, &r)); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close does not return")
	}
	for _, ended := range []chan error{idleEnded, busyEnded} {
		waitEnded(t, ended)
	}
	if _, err := idle.c.Recv(context.Background()); err == nil {
		t.Error("idle session answers after Close")
	}
}
