package server

import (
	"encoding/binary"
	"io"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// TestSocketHeaderAtBufferEnd: the receive buffer filled to its very end with 2 bytes of the
// next frame's length header. The loop must compact the buffer and read on (it ends the session
// with "nothing to wait for" without the compaction: a bug found in review).
func TestSocketHeaderAtBufferEnd(t *testing.T) {
	requireRing(t)
	s, dev := newTestServer(t, false)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	unix.SetNonblock(fds[1], false)
	cli := os.NewFile(uintptr(fds[1]), "cli")
	defer cli.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	depth := s.cfg.QueueDepth
	eng, region, err := openEngine(dev, depth+2, depth*s.cfg.SlotSize, false)
	if err != nil {
		t.Fatal(err)
	}
	defer uring.FreeAligned(region)
	defer eng.Close()
	l := &sockLoop{s: s, dev: dev, peer: "test", fd: fds[0], eng: eng, region: region, slotSize: s.cfg.SlotSize, depth: depth,
		inflight: map[uint64]*blockReq{}, reqs: make([]uring.Request, 0, depth+2), cqes: make([]uring.CQE, depth+2),
		rbuf: make([]byte, 4+wire.RequestHeader+wire.MaxIO+256<<10)}
	for i := range depth {
		l.free = append(l.free, i)
	}
	L := len(l.rbuf)
	// Frame A (MaxFrame zero bytes: malformed, answered with a protocol error), frame B up to
	// 2 bytes before the end, then 2 bytes of frame C's header; the rest of C is on the socket.
	n1 := wire.MaxFrame
	n2 := L - 4 - n1 - 4 - 2
	binary.LittleEndian.PutUint32(l.rbuf[0:], uint32(n1))
	binary.LittleEndian.PutUint32(l.rbuf[4+n1:], uint32(n2))
	var hc [4]byte
	binary.LittleEndian.PutUint32(hc[:], 16)
	copy(l.rbuf[L-2:], hc[:2])
	l.rtail = L
	if _, err := cli.Write(append(hc[2:], make([]byte, 16)...)); err != nil {
		t.Fatal(err)
	}
	replies := make(chan int, 1)
	go func() {
		n := 0
		var hdr [4]byte
		for {
			cli.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadFull(cli, hdr[:]); err != nil {
				break
			}
			if _, err := io.ReadFull(cli, make([]byte, binary.LittleEndian.Uint32(hdr[:]))); err != nil {
				break
			}
			n++
		}
		replies <- n
	}()
	stopped := make(chan struct{})
	go func() {
		time.Sleep(2 * time.Second)
		unix.Shutdown(fds[0], unix.SHUT_RDWR)
		close(stopped)
	}()
	l.run()
	<-stopped
	if got := <-replies; got != 3 {
		t.Errorf("replies: %d, want 3 (loop ended with %v)", got, l.err)
	}
}
