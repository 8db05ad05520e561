package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// sockLoop serves the requests of one remote session on a framed socket (wire.FrameConn on
// TCP or a unix socket) from the session's own goroutine, locked to its thread, with one
// io_uring for the socket and the disk, the way qemu-nbd's event loop works: it waits in
// io_uring_enter until the socket is readable (a poll request) or a disk request completes,
// reads whatever requests arrived, submits them as one batch and writes the replies with one
// write(2). No request crosses to another thread: at queue depth 1 a request costs the
// wake-up of this thread by the network and one by the disk, where the session reader and the
// io loop of the general path (ServeConn on any wire.Conn) add a hand-off between two threads
// each way.
type sockLoop struct {
	s        *Server
	dev      *Device
	peer     string
	fd       int
	eng      uring.Engine
	region   []byte
	slotSize int
	depth    int
	free     []int
	inflight map[uint64]*blockReq
	next     uint64
	reqs     []uring.Request
	cqes     []uring.CQE

	rbuf         []byte // received bytes: rbuf[rhead:rtail] are not parsed yet
	rhead, rtail int
	wbuf         []byte    // replies not written yet
	pollIn       bool      // a poll for input is in flight
	pollOut      bool      // a poll for room to write is in flight
	eof          bool      // no more input: the client closed, the stream broke or the session is stopping
	halted       bool      // no more requests taken, not even those received (the stream is broken)
	broken       bool      // a write failed: replies are dropped
	err          error     // why the session ends
	yielded      time.Time // when the loop last gave its thread back to the Go scheduler (see submit)
}

// User data of the two poll requests; disk requests count up from 1.
const (
	udPollIn  = ^uint64(0)
	udPollOut = ^uint64(0) - 1
)

// errNoRing says the event loop cannot run; the session takes the general path.
var errNoRing = errors.New("no io_uring")

// wbufLimit is the most reply bytes held for a client that does not read: past it, no more
// requests are taken until the socket takes some.
const wbufLimit = 4 << 20

// rawSocket returns the descriptor access of a socket under a FrameConn, or nil when it is not
// one (net.Pipe, a transport stream). A wrapper that hands the stream over with its Hello put
// back (see Server.Go) is looked through when it has an Unwrap method returning the stream
// under it: the loop takes over reading after the Hello.
func rawSocket(c wire.Conn) (*wire.FrameConn, syscall.RawConn) {
	for {
		u, ok := c.(interface{ Unwrap() wire.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	fc, ok := c.(*wire.FrameConn)
	if !ok {
		return nil, nil
	}
	nc, _ := fc.Detach()
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return fc, rc
}

// sockStop stops a socket session from other goroutines (the fence, Server.Close): a
// shutdown of the socket, which wakes the loop's poll (or a general path's read) with the end
// of the stream. It never closes the descriptor, so it does not wait for the loop.
type sockStop struct {
	mu sync.Mutex
	rc syscall.RawConn // the socket, while the net.Conn holds it
	fd int             // the loop's own descriptor once it took the socket over; -1 before, -2 after
}

func (ss *sockStop) stop() error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	switch {
	case ss.fd >= 0:
		unix.Shutdown(ss.fd, unix.SHUT_RDWR)
	case ss.fd == -1:
		ss.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	return nil
}

// serveSocket runs the session's requests on the socket under fc until the client leaves, the
// stream breaks or ss.stop is called; it returns once every request it started completed.
func (s *Server) serveSocket(fc *wire.FrameConn, ss *sockStop, dev *Device, peer string) error {
	_, pending := fc.Detach()
	runtime.LockOSThread() // the ring's completions run as task work of the submitting thread
	defer runtime.UnlockOSThread()
	depth := s.cfg.QueueDepth
	// Two more entries than requests: the polls for input and for room to write.
	eng, region, err := openEngine(dev, depth+2, depth*s.cfg.SlotSize, false, uring.WithSingleIssuer())
	if err != nil {
		return err
	}
	if eng.Kind() != uring.KindURing {
		// No io_uring in this kernel: the synchronous engine cannot wait for the socket and
		// the disk at once.
		return errors.Join(errNoRing, eng.Close(), uring.FreeAligned(region))
	}
	l := &sockLoop{s: s, dev: dev, peer: peer, eng: eng, region: region, slotSize: s.cfg.SlotSize, depth: depth,
		inflight: map[uint64]*blockReq{}, reqs: make([]uring.Request, 0, depth+2), cqes: make([]uring.CQE, depth+2),
		rbuf: make([]byte, 4+wire.RequestHeader+wire.MaxIO+256<<10)}
	for i := range depth {
		l.free = append(l.free, i)
	}
	l.rtail = copy(l.rbuf, pending)
	// The loop takes the socket over with a descriptor of its own and closes the net.Conn, so
	// that Go's network poller forgets the socket: otherwise every request arriving would
	// also wake a thread of the poller, for nothing.
	ss.mu.Lock()
	var derr error
	cerr := ss.rc.Control(func(fd uintptr) { l.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err := errors.Join(cerr, derr); err == nil {
		ss.fd = l.fd
		fc.Close()
		ss.mu.Unlock()
		l.run()
		ss.mu.Lock()
		unix.Close(l.fd)
		ss.fd = -2
	} else {
		l.err = fmt.Errorf("take the socket over: %w", err)
	}
	ss.mu.Unlock()
	if err := l.eng.Close(); err != nil {
		s.log.Error("drd session engine close", "device", dev.Name, "err", err)
	}
	if err := uring.FreeAligned(l.region); err != nil {
		s.log.Error("drd session free", "device", dev.Name, "err", err)
	}
	return l.err
}

// run is the event loop; it returns once there is no more input and nothing in flight.
func (l *sockLoop) run() {
	for {
		l.parse()
		if len(l.wbuf) > 0 && !l.pollOut {
			l.flush()
			if !l.halted && l.taking() && l.hasFrame() {
				continue // the flush made room for requests waiting in the buffer
			}
		}
		if !l.eof && !l.pollIn && l.rtail < len(l.rbuf) && l.taking() {
			l.pollIn = true
			l.reqs = append(l.reqs, uring.Request{Op: uring.OpPoll, Fd: int32(l.fd), Length: unix.POLLIN, UserData: udPollIn})
		}
		if l.eof && len(l.inflight) == 0 {
			// The input ended and every request completed: the last replies go if the socket
			// takes them now (polls still in flight are cancelled by the engine's Close).
			if !l.pollOut && !l.broken {
				l.flush()
			}
			return
		}
		if len(l.reqs) == 0 && l.eng.InFlight() == 0 {
			l.end(errors.New("session loop: nothing to wait for")) // a bug: never loop idle
			continue
		}
		l.submit()
		l.reap()
	}
}

// taking reports whether the loop takes new requests: a free slot, room in the queue and no
// pile of unwritten replies.
func (l *sockLoop) taking() bool {
	return len(l.inflight) < l.depth && len(l.wbuf) < wbufLimit
}

// parse takes the complete requests in the receive buffer, as far as slots and queue room
// allow: a good one becomes a disk request, a bad one an error reply.
func (l *sockLoop) parse() {
	for l.taking() && !l.halted {
		avail := l.rbuf[l.rhead:l.rtail]
		if len(avail) < 4 {
			l.compact(avail) // part of a length header may sit at the buffer's very end
			break
		}
		n := int(binary.LittleEndian.Uint32(avail))
		if n > wire.MaxFrame {
			l.end(fmt.Errorf("recv: frame of %d bytes (at most %d)", n, wire.MaxFrame))
			return
		}
		if len(avail) < 4+n {
			l.compact(avail)
			break
		}
		m := avail[4 : 4+n]
		r, err := wire.DecodeRequest(m)
		st := wire.StatusOK
		switch {
		case err != nil:
			l.s.log.Warn("drd malformed request", "peer", l.peer, "err", err)
			st = wire.StatusProtocolError
		case r.Epoch != l.s.cfg.Epoch:
			st = wire.StatusStaleEpoch
		default:
			st = wire.Check(r.Op, r.Offset, r.Length, l.dev.Size, uint32(l.slotSize))
		}
		if st != wire.StatusOK {
			l.reply(r.Tag, st, nil)
		} else {
			br := &blockReq{op: r.Op, off: r.Offset, length: r.Length, tag: r.Tag, slot: -1}
			var buf []byte
			if r.Op == wire.OpRead || r.Op == wire.OpWrite {
				br.slot = l.free[len(l.free)-1]
				l.free = l.free[:len(l.free)-1]
				buf = l.region[br.slot*l.slotSize : br.slot*l.slotSize+int(r.Length)]
				if r.Op == wire.OpWrite {
					copy(buf, r.Data)
				}
			}
			l.next++
			l.inflight[l.next] = br
			l.reqs = append(l.reqs, engineRequest(r.Op, r.Offset, r.Length, buf, l.next))
		}
		l.rhead += 4 + n
	}
	if l.rhead == l.rtail {
		l.rhead, l.rtail = 0, 0
	}
}

// compact moves an incomplete frame (avail, the unparsed rest) to the front of the receive
// buffer when it reaches the buffer's end, so that the next read has room for the rest of it:
// without room no read is armed, and the loop would end the session with nothing to wait for.
func (l *sockLoop) compact(avail []byte) {
	if l.rhead > 0 && l.rtail == len(l.rbuf) {
		l.rtail = copy(l.rbuf, avail)
		l.rhead = 0
	}
}

// hasFrame reports whether a whole frame waits in the receive buffer.
func (l *sockLoop) hasFrame() bool {
	avail := l.rbuf[l.rhead:l.rtail]
	return len(avail) >= 4 && len(avail)-4 >= int(binary.LittleEndian.Uint32(avail))
}

// reply queues one response.
func (l *sockLoop) reply(tag uint64, st wire.Status, data []byte) {
	if l.broken {
		return // nobody reads replies
	}
	start := len(l.wbuf)
	l.wbuf = append(l.wbuf, 0, 0, 0, 0)
	l.wbuf = wire.AppendResponse(l.wbuf, &wire.Response{Tag: tag, Epoch: l.s.cfg.Epoch, Status: st, Data: data})
	binary.LittleEndian.PutUint32(l.wbuf[start:], uint32(len(l.wbuf)-start-4))
}

// flush writes what the socket takes of the replies; when it takes not all, a poll waits for
// room.
func (l *sockLoop) flush() {
	for len(l.wbuf) > 0 {
		n, err := unix.Write(l.fd, l.wbuf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			l.pollOut = true
			l.reqs = append(l.reqs, uring.Request{Op: uring.OpPoll, Fd: int32(l.fd), Length: unix.POLLOUT, UserData: udPollOut})
			return
		}
		if err != nil {
			l.end(fmt.Errorf("send: %w", err))
			l.broken, l.wbuf = true, nil
			return
		}
		l.wbuf = l.wbuf[:copy(l.wbuf, l.wbuf[n:])]
	}
}

// end stops taking input; the loop then finishes the requests in flight and returns err (the
// first reason given).
func (l *sockLoop) end(err error) {
	l.eof, l.halted = true, true
	if l.err == nil {
		l.err = err
	}
}

// fill reads what the socket has.
func (l *sockLoop) fill() {
	for l.rtail < len(l.rbuf) {
		n, err := unix.Read(l.fd, l.rbuf[l.rtail:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			l.end(fmt.Errorf("recv: %w", err))
			return
		case n == 0:
			// The requests received complete are still run and answered.
			l.eof = true
			if l.err == nil {
				l.err = fmt.Errorf("recv: %w", io.EOF)
			}
			return
		}
		l.rtail += n
		if l.rtail < len(l.rbuf) {
			return // the socket had no more
		}
	}
}

// yieldEvery is how long the loop runs at most without passing through the Go scheduler. Go's
// monitor thread (sysmon) takes the processor (P) away from a goroutine that sits in a system
// call when that P has not scheduled a goroutine for 10 ms, and a goroutine locked to its thread
// that only ever blocks in system calls never does: once past 10 ms, every wait of the loop lost
// its P to the monitor, which then polled every 20 µs instead of backing off to 10 ms, each
// time handing the P to another thread. At queue depth 1 that was about one wake-up of the
// monitor and one of another thread per request on a 2-CPU machine (see bench/README.md,
// ### drd). A Gosched every few milliseconds keeps the P's schedule tick fresh; on a locked
// thread it costs about 20 µs (a hand-off of the P to another thread and back).
const yieldEvery = 2 * time.Millisecond

// gosched is runtime.Gosched; tests count the loop's calls.
var gosched = runtime.Gosched

// submit starts the queued requests and waits for one completion in the same system call. If
// the loop is due to pass through the scheduler, it first submits without waiting (so the disk
// works meanwhile) and yields.
func (l *sockLoop) submit() {
	if time.Since(l.yielded) >= yieldEvery {
		l.submitWait(0)
		gosched()
		l.yielded = time.Now()
	}
	l.submitWait(1)
}

// submitWait starts the queued requests and, if wait is 1, waits for one completion in the same
// system call.
func (l *sockLoop) submitWait(wait int) {
	for len(l.reqs) > 0 || wait > 0 {
		n, err := l.eng.SubmitWait(l.reqs, wait)
		wait = 0
		if err != nil && n < len(l.reqs) && !errors.Is(err, uring.ErrQueueFull) {
			// The request was checked before; a refusal here is a bug or a kernel failure.
			l.s.log.Error("drd submit failed", "device", l.dev.Name, "err", err)
			l.fail(l.reqs[n].UserData)
			n++
		} else if err != nil && n == len(l.reqs) {
			l.s.log.Error("drd submit", "device", l.dev.Name, "err", err)
		}
		l.reqs = l.reqs[:copy(l.reqs, l.reqs[n:])]
		if len(l.reqs) > 0 { // queue full: make room
			l.reapN(1)
		}
	}
}

// fail answers a request the engine refused.
func (l *sockLoop) fail(ud uint64) {
	switch ud {
	case udPollIn:
		l.pollIn = false
		l.end(errors.New("poll for input refused"))
	case udPollOut:
		l.pollOut = false
		l.end(errors.New("poll for output refused"))
		l.broken, l.wbuf = true, nil
	default:
		l.complete(ud, -int32(unix.EIO))
	}
}

func (l *sockLoop) reap() { l.reapN(0) }

func (l *sockLoop) reapN(want int) {
	n, err := l.eng.Reap(l.cqes, want)
	if err != nil {
		l.s.log.Error("drd reap", "device", l.dev.Name, "err", err)
	}
	for _, c := range l.cqes[:n] {
		switch c.UserData {
		case udPollIn:
			l.pollIn = false
			if c.Res < 0 {
				l.end(fmt.Errorf("poll for input: %w", c.Err()))
			} else {
				l.fill()
			}
		case udPollOut:
			l.pollOut = false
			if c.Res < 0 {
				l.end(fmt.Errorf("poll for output: %w", c.Err()))
				l.broken, l.wbuf = true, nil
			}
		default:
			l.complete(c.UserData, c.Res)
		}
	}
}

// complete answers a disk request and frees its slot.
func (l *sockLoop) complete(ud uint64, res int32) {
	r := l.inflight[ud]
	if r == nil {
		return
	}
	delete(l.inflight, ud)
	st := resultStatus(r.op, r.length, res)
	if st == wire.StatusIO {
		l.s.log.Warn("drd i/o failed", "device", l.dev.Name, "op", r.op, "offset", r.off,
			"length", r.length, "res", res)
	}
	var data []byte
	if st == wire.StatusOK && r.op == wire.OpRead {
		data = l.region[r.slot*l.slotSize : r.slot*l.slotSize+int(r.length)]
	}
	l.reply(r.tag, st, data)
	if r.slot >= 0 {
		l.free = append(l.free, r.slot)
	}
}
