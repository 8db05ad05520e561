package server

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vigil/drd/shm"
	"vigil/drd/wire"
)

func listenLocal(t *testing.T, s *Server) string {
	p := filepath.Join(t.TempDir(), "drd.sock")
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: p, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeLocal(l)
	return p
}

// localHello connects and sends a hello with fds; it returns the connection and the welcome.
func localHello(t *testing.T, sock, name string, fds ...int) (*net.UnixConn, wire.Welcome) {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(wire.AppendHello(nil, wire.Hello{Version: wire.Version, Device: name}), oob, nil); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	w, err := wire.DecodeWelcome(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

func eventfd(t *testing.T) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

var localGeom = shm.Geometry{SQEntries: 8, CQEntries: 8, Slots: 4, SlotSize: 8192}

func region(t *testing.T) (int, *shm.Client) {
	fd, c, err := shm.Create("test", localGeom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shm.Unmap(c.Mem()); unix.Close(fd) })
	return fd, c
}

func TestLocalRefusals(t *testing.T) {
	s, _ := newTestServer(t, false)
	sock := listenLocal(t, s)
	memfd, _ := region(t)
	if _, w := localHello(t, sock, "d0"); w.Status != wire.StatusProtocolError {
		t.Errorf("no descriptors: %+v", w)
	}
	if _, w := localHello(t, sock, "nope", memfd, eventfd(t), eventfd(t)); w.Status != wire.StatusNoDevice {
		t.Errorf("unknown device: %+v", w)
	}
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, w := localHello(t, sock, "d0", memfd, p[0], p[1]); w.Status != wire.StatusProtocolError {
		t.Errorf("pipes for eventfds: %+v", w)
	}
	unsealed, _ := unix.MemfdCreate("x", unix.MFD_CLOEXEC)
	defer unix.Close(unsealed)
	unix.Ftruncate(unsealed, int64(localGeom.Size()))
	if _, w := localHello(t, sock, "d0", unsealed, eventfd(t), eventfd(t)); w.Status != wire.StatusProtocolError {
		t.Errorf("unsealed memfd: %+v", w)
	} else {
		t.Log(w.Message)
	}
}

// TestLocalBadRequests: bad SQEs get error completions; an impossible tail ends the session;
// the server serves the next client.
func TestLocalBadRequests(t *testing.T) {
	s, _ := newTestServer(t, false)
	sock := listenLocal(t, s)
	memfd, c := region(t)
	srvEfd, cliEfd := eventfd(t), eventfd(t)
	conn, w := localHello(t, sock, "d0", memfd, srvEfd, cliEfd)
	if w.Status != wire.StatusOK || w.MaxIO != localGeom.SlotSize {
		t.Fatalf("welcome %+v", w)
	}
	reqs := []struct {
		e    shm.SQE
		want wire.Status
	}{
		{shm.SQE{Op: wire.OpWrite, Slot: 1, Length: 4096, Offset: 4096, Epoch: 7}, wire.StatusOK},
		{shm.SQE{Op: wire.OpRead, Slot: 9, Length: 4096, Epoch: 7}, wire.StatusBadSlot},
		{shm.SQE{Op: wire.OpRead, Slot: 1, Length: 1 << 20, Epoch: 7}, wire.StatusTooLarge},
		{shm.SQE{Op: wire.OpRead, Slot: 1, Length: 4096, Epoch: 1}, wire.StatusStaleEpoch},
		{shm.SQE{Op: wire.OpRead, Slot: 1, Length: 4096, Offset: 1 << 30, Epoch: 7}, wire.StatusOutOfRange},
		{shm.SQE{Op: 77, Epoch: 7}, wire.StatusBadOp},
	}
	copy(c.Slot(1), []byte("hello, disk"))
	for i, r := range reqs {
		r.e.UserData = uint64(i)
		c.Push(r.e)
	}
	if c.Submit() {
		var b [8]byte
		b[0] = 1
		unix.Write(srvEfd, b[:])
	}
	got := map[uint64]wire.Status{}
	cq := make([]shm.CQE, 8)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(reqs) && time.Now().Before(deadline) {
		n, _ := c.Reap(cq)
		for _, e := range cq[:n] {
			got[e.UserData] = e.Status
		}
		time.Sleep(time.Millisecond)
	}
	for i, r := range reqs {
		if got[uint64(i)] != r.want {
			t.Errorf("request %d: %v, want %v", i, got[uint64(i)], r.want)
		}
	}
	// An impossible tail: the server ends the session (the socket closes).
	tail := (*uint32)(unsafe.Pointer(&c.Mem()[128]))
	*tail += 1000
	var b [8]byte
	b[0] = 1
	unix.Write(srvEfd, b[:])
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := conn.Read(make([]byte, 16)); n != 0 || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("session still open after a broken ring: %d, %v", n, err)
	}
	// The next client is served.
	memfd2, _ := region(t)
	if _, w := localHello(t, sock, "d0", memfd2, eventfd(t), eventfd(t)); w.Status != wire.StatusOK {
		t.Fatalf("next client: %+v", w)
	}
}

// TestLocalFullCQSleeps: a client that leaves its completion ring full while more requests
// wait does not keep the server spinning: the server sleeps (idle word set) until the client
// reaps and wakes it, and then serves the rest.
func TestLocalFullCQSleeps(t *testing.T) {
	s, _ := newTestServer(t, false)
	sock := listenLocal(t, s)
	memfd, c := region(t)
	srvEfd, cliEfd := eventfd(t), eventfd(t)
	if _, w := localHello(t, sock, "d0", memfd, srvEfd, cliEfd); w.Status != wire.StatusOK {
		t.Fatalf("welcome %+v", w)
	}
	kick := func() {
		var b [8]byte
		b[0] = 1
		unix.Write(srvEfd, b[:])
	}
	push := func(from int) {
		for i := range int(localGeom.SQEntries) {
			c.Push(shm.SQE{Op: wire.OpFlush, Epoch: 7, UserData: uint64(from + i)})
		}
		if c.Submit() {
			kick()
		}
	}
	idle := (*uint32)(unsafe.Pointer(&c.Mem()[320]))
	sqHead := (*uint32)(unsafe.Pointer(&c.Mem()[64]))
	push(0)
	for deadline := time.Now().Add(10 * time.Second); atomic.LoadUint32(sqHead) != localGeom.SQEntries; {
		if time.Now().After(deadline) {
			t.Fatal("the server did not take the first requests")
		}
		time.Sleep(time.Millisecond)
	}
	push(int(localGeom.SQEntries)) // the CQ has no room for these until we reap
	deadline := time.Now().Add(5 * time.Second)
	for atomic.LoadUint32(idle) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server spins while the completion ring is full instead of sleeping")
		}
		time.Sleep(time.Millisecond)
	}
	got := map[uint64]bool{}
	cq := make([]shm.CQE, 8)
	for deadline := time.Now().Add(10 * time.Second); len(got) < 2*int(localGeom.SQEntries); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d completions", len(got), 2*localGeom.SQEntries)
		}
		n, srvIdle := c.Reap(cq)
		if srvIdle {
			kick()
		}
		for _, e := range cq[:n] {
			if e.Status != wire.StatusOK {
				t.Fatalf("flush %d: %v", e.UserData, e.Status)
			}
			got[e.UserData] = true
		}
		time.Sleep(time.Millisecond)
	}
}
