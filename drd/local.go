package drd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/shm"
	"vigil/drd/wire"
)

// localLink is a session of the local path: the device's shared region, two eventfds and the
// unix socket that tells each side the other is alive.
type localLink struct {
	d      *Device
	conn   *net.UnixConn
	sock   *os.File // dup of the socket, polled for the server's end
	sockFd int
	srvEfd int // the server sleeps on it
	cliEfd int // we sleep on it
	sqMu   sync.Mutex
	stop   atomic.Bool
	done   chan struct{}
	once   sync.Once
}

func dialLocal(ctx context.Context, d *Device, path string) (*localLink, wire.Welcome, error) {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unixpacket", path)
	if err != nil {
		return nil, wire.Welcome{}, err
	}
	l := &localLink{d: d, conn: c.(*net.UnixConn), srvEfd: -1, cliEfd: -1, done: make(chan struct{})}
	fail := func(err error) (*localLink, wire.Welcome, error) {
		l.release()
		return nil, wire.Welcome{}, err
	}
	if l.srvEfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("eventfd: %w", err))
	}
	if l.cliEfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fail(fmt.Errorf("eventfd: %w", err))
	}
	if l.sock, err = l.conn.File(); err != nil {
		return fail(fmt.Errorf("dup socket: %w", err))
	}
	l.sockFd = int(l.sock.Fd())
	d.region.Reset()
	hello := wire.AppendHello(nil, wire.Hello{Version: wire.Version, Device: d.name, Client: d.id})
	if dl, ok := ctx.Deadline(); ok {
		l.conn.SetDeadline(dl)
	}
	if _, _, err := l.conn.WriteMsgUnix(hello, unix.UnixRights(d.memfd, l.srvEfd, l.cliEfd), nil); err != nil {
		return fail(fmt.Errorf("hello: %w", err))
	}
	buf := make([]byte, 2048)
	n, err := l.conn.Read(buf)
	if err != nil {
		return fail(fmt.Errorf("welcome: %w", err))
	}
	w, err := wire.DecodeWelcome(buf[:n])
	if err != nil {
		return fail(err)
	}
	if w.Status != wire.StatusOK {
		return fail(fmt.Errorf("server refused device %s: %v: %s", d.name, w.Status, w.Message))
	}
	l.conn.SetDeadline(time.Time{})
	go l.recv()
	return l, w, nil
}

func (l *localLink) kind() string { return "local" }

// started does nothing: the local link's receiving goroutine runs for the link's whole life.
func (l *localLink) started() {}

func (l *localLink) await(c *Call) { <-c.Done }

func (l *localLink) send(tag uint64, c *Call, epoch uint64) error {
	e := shm.SQE{Op: c.Op, Slot: uint32(c.slot), Offset: uint64(c.Offset), Epoch: epoch, UserData: tag}
	switch c.Op {
	case wire.OpRead, wire.OpWrite:
		e.Length = uint32(len(c.Buf))
	case wire.OpDiscard:
		e.Length = uint32(c.Length)
	}
	r := l.d.region
	l.sqMu.Lock()
	if l.stop.Load() {
		l.sqMu.Unlock()
		return errors.New("local path closed")
	}
	if r.SQFree() == 0 { // cannot happen: at most QueueDepth calls are in flight
		l.sqMu.Unlock()
		return errors.New("local path: submission ring full")
	}
	r.Push(e)
	if r.Submit() {
		kick(l.srvEfd)
	}
	l.sqMu.Unlock()
	return nil
}

func kick(efd int) {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	unix.Write(efd, b[:])
}

// recv reaps completions; with none waiting it sleeps on the eventfd (and the socket, to see
// the server die).
func (l *localLink) recv() {
	defer close(l.done)
	r := l.d.region
	cqes := make([]shm.CQE, r.Geometry().CQEntries)
	pfds := make([]unix.PollFd, 2)
	for !l.stop.Load() {
		n, srvIdle := r.Reap(cqes)
		if srvIdle {
			kick(l.srvEfd) // released only after this goroutine ends
		}
		if n > 0 {
			for _, c := range cqes[:n] {
				var data []byte
				if c.Status == wire.StatusOK {
					if call := l.d.peek(c.UserData); call != nil && call.Op == wire.OpRead {
						data = r.Slot(uint32(call.slot))[:len(call.Buf)]
					}
				}
				if !l.d.complete(l, c.UserData, c.Status, data) {
					return
				}
			}
			continue
		}
		// Completions come back within microseconds while the disk is busy: look again for a
		// short while before paying for a sleep and a wake-up.
		if spinUntil(r.Ready, spinFor) {
			continue
		}
		r.SetWaiting(true)
		if r.Ready() || l.stop.Load() {
			r.SetWaiting(false)
			continue
		}
		pfds[0] = unix.PollFd{Fd: int32(l.cliEfd), Events: unix.POLLIN}
		pfds[1] = unix.PollFd{Fd: int32(l.sockFd), Events: unix.POLLIN | unix.POLLRDHUP}
		if _, err := unix.Poll(pfds, -1); err != nil && err != unix.EINTR {
			l.d.broken(l, fmt.Errorf("poll: %w", err))
			return
		}
		r.SetWaiting(false)
		if pfds[1].Revents != 0 {
			l.d.broken(l, errors.New("local server closed the session"))
			return
		}
		var b [8]byte
		unix.Read(l.cliEfd, b[:])
	}
}

// peek returns the call of tag if it is in flight.
func (d *Device) peek(tag uint64) *Call {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight[tag]
}

func (l *localLink) close() {
	l.once.Do(func() {
		l.sqMu.Lock()
		l.stop.Store(true)
		l.sqMu.Unlock()
		kick(l.cliEfd)
		l.conn.Close()
	})
}

func (l *localLink) wait() {
	<-l.done
	l.release()
}

func (l *localLink) release() {
	l.sqMu.Lock()
	defer l.sqMu.Unlock()
	for _, fd := range []*int{&l.srvEfd, &l.cliEfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if l.sock != nil {
		l.sock.Close()
		l.sock = nil
	}
	l.conn.Close()
}

// spinFor is how long the completion reaper spins before it sleeps.
const spinFor = 50 * time.Microsecond

// spinUntil polls cond until it holds (true) or d passes (false).
func spinUntil(cond func() bool, d time.Duration) bool {
	start := time.Now()
	for i := 0; ; i++ {
		if cond() {
			return true
		}
		if i%16 == 15 {
			if time.Since(start) > d {
				return false
			}
			runtime.Gosched() // let the goroutines that submit run on this P
		}
	}
}
