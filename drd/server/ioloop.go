package server

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"golang.org/x/sys/unix"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// blockReq is one request of a stream session (remote or NBD) on its way to the disk. Write
// data is already in the slot; read data lands there.
type blockReq struct {
	op     wire.Op
	off    uint64
	length uint32
	tag    uint64
	slot   int // index of the session's data slot; -1 for flush and discard
}

// ioLoop runs the block requests of one stream session on the session's own engine, with the
// device registered as fixed file 0 and the session's data slots as fixed buffer 0. Requests
// come in on in; done is called from the loop's goroutine for each completion, with the read
// data (valid during the call only); the caller then releases the slot.
type ioLoop struct {
	dev      *Device
	eng      uring.Engine
	region   []byte
	slotSize int
	free     chan int
	in       chan *blockReq
	done     func(r *blockReq, st wire.Status, data []byte)
	log      *slog.Logger
	finished chan struct{}
}

func newIOLoop(dev *Device, depth, slotSize int, disableURing bool, log *slog.Logger,
	done func(*blockReq, wire.Status, []byte)) (*ioLoop, error) {
	eng, region, err := openEngine(dev, depth, depth*slotSize, disableURing)
	if err != nil {
		return nil, err
	}
	l := &ioLoop{dev: dev, eng: eng, region: region, slotSize: slotSize, free: make(chan int, depth),
		in: make(chan *blockReq, depth), done: done, log: log, finished: make(chan struct{})}
	for i := range depth {
		l.free <- i
	}
	return l, nil
}

// openEngine makes a session's engine for depth requests, with the device registered as fixed
// file 0 and a data region of size bytes (the session's slots) as fixed buffer 0.
func openEngine(dev *Device, depth, size int, disableURing bool, opts ...uring.Option) (uring.Engine, []byte, error) {
	eng, err := uring.NewEngine(uring.Config{QueueDepth: depth, DisableURing: disableURing, Align: dev.Align, RingOptions: opts})
	if err != nil {
		return nil, nil, fmt.Errorf("session on %s: %w", dev.Name, err)
	}
	region, err := uring.AllocAligned(size, 4096)
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("session on %s: %w", dev.Name, err), eng.Close())
	}
	fail := func(err error) (uring.Engine, []byte, error) {
		return nil, nil, errors.Join(fmt.Errorf("session on %s: %w", dev.Name, err), eng.Close(), uring.FreeAligned(region))
	}
	if err := eng.RegisterBuffers([][]byte{region}); err != nil {
		return fail(err)
	}
	if err := eng.RegisterFiles([]int{dev.Fd()}); err != nil {
		return fail(err)
	}
	return eng, region, nil
}

// newReq makes the block request of a checked request: a read or write takes a free slot
// (waiting while all are in use, or false once done is closed) and a write's data is copied
// into it.
func (l *ioLoop) newReq(op wire.Op, off uint64, length uint32, write []byte, tag uint64, done <-chan struct{}) (*blockReq, bool) {
	br := &blockReq{op: op, off: off, length: length, tag: tag, slot: -1}
	if op == wire.OpRead || op == wire.OpWrite {
		select {
		case br.slot = <-l.free:
		case <-done:
			return nil, false
		}
		if op == wire.OpWrite {
			copy(l.slot(br.slot, length), write)
		}
	}
	return br, true
}

// slot returns the memory of slot i, length bytes long.
func (l *ioLoop) slot(i int, length uint32) []byte {
	return l.region[i*l.slotSize : i*l.slotSize+int(length)]
}

// run is the loop's goroutine: it submits what came in as one batch, reaps what completed, and
// waits in the kernel for a completion only when nothing new is waiting. It returns when in is
// closed and everything in flight completed, after releasing the engine and the slots.
func (l *ioLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(l.finished)
	inflight := map[uint64]*blockReq{}
	var next uint64
	reqs := make([]uring.Request, 0, cap(l.in))
	cqes := make([]uring.CQE, cap(l.in))
	open := true
	for open || len(inflight) > 0 {
		reqs = reqs[:0]
		if len(inflight) == 0 {
			r, ok := <-l.in
			if !ok {
				break
			}
			reqs = l.prep(reqs, r, inflight, &next)
		}
	drain:
		for open {
			select {
			case r, ok := <-l.in:
				if !ok {
					open = false
					break drain
				}
				reqs = l.prep(reqs, r, inflight, &next)
			default:
				break drain
			}
		}
		// Submit and, unless more requests wait, wait for a completion in the same system
		// call.
		wait := 0
		if len(l.in) == 0 && len(inflight) > 0 {
			wait = 1
		}
		for len(reqs) > 0 || wait > 0 {
			n, err := l.eng.SubmitWait(reqs, wait)
			wait = 0
			if err != nil && n == len(reqs) {
				l.log.Error("drd submit", "device", l.dev.Name, "err", err)
			} else if err != nil && !errors.Is(err, uring.ErrQueueFull) {
				// The request was checked before; a refusal here is a bug or a kernel failure.
				ud := reqs[n].UserData
				l.log.Error("drd submit failed", "device", l.dev.Name, "err", err)
				r := inflight[ud]
				delete(inflight, ud)
				l.done(r, wire.StatusIO, nil)
				n++
			}
			reqs = reqs[:copy(reqs, reqs[n:])]
			if len(reqs) > 0 { // queue full: make room
				l.reap(cqes, 1, inflight)
			}
		}
		l.reap(cqes, 0, inflight)
	}
	if err := l.eng.Close(); err != nil {
		l.log.Error("drd session engine close", "device", l.dev.Name, "err", err)
	}
	if err := uring.FreeAligned(l.region); err != nil {
		l.log.Error("drd session free", "device", l.dev.Name, "err", err)
	}
}

func (l *ioLoop) prep(reqs []uring.Request, r *blockReq, inflight map[uint64]*blockReq, next *uint64) []uring.Request {
	*next++
	ud := *next
	inflight[ud] = r
	var buf []byte
	if r.slot >= 0 {
		buf = l.slot(r.slot, r.length)
	}
	return append(reqs, engineRequest(r.op, r.off, r.length, buf, ud))
}

// engineRequest is the engine request of a checked block request on fixed file 0; buf is the
// memory (inside fixed buffer 0) a read fills or a write takes.
func engineRequest(op wire.Op, off uint64, length uint32, buf []byte, ud uint64) uring.Request {
	q := uring.Request{Fd: 0, FixedFile: true, Offset: int64(off), UserData: ud}
	switch op {
	case wire.OpRead:
		q.Op, q.Buf, q.FixedBuf = uring.OpRead, buf, true
	case wire.OpWrite:
		q.Op, q.Buf, q.FixedBuf = uring.OpWrite, buf, true
	case wire.OpFlush:
		q.Op = uring.OpSync
	case wire.OpDiscard:
		q.Op, q.Length = uring.OpDiscard, int64(length)
	}
	return q
}

func (l *ioLoop) reap(cqes []uring.CQE, want int, inflight map[uint64]*blockReq) {
	n, err := l.eng.Reap(cqes, want)
	if err != nil {
		l.log.Error("drd reap", "device", l.dev.Name, "err", err)
	}
	for _, c := range cqes[:n] {
		r := inflight[c.UserData]
		delete(inflight, c.UserData)
		if r == nil {
			continue
		}
		st := resultStatus(r.op, r.length, c.Res)
		if st == wire.StatusIO {
			l.log.Warn("drd i/o failed", "device", l.dev.Name, "op", r.op, "offset", r.off,
				"length", r.length, "res", c.Res, "err", c.Err())
		}
		var data []byte
		if st == wire.StatusOK && r.op == wire.OpRead {
			data = l.slot(r.slot, r.length)
		}
		l.done(r, st, data)
	}
}

// resultStatus turns a completion's result into the status the client gets: short reads and
// writes are errors (the device has a fixed size), EOPNOTSUPP on a discard is "not supported".
func resultStatus(op wire.Op, length uint32, res int32) wire.Status {
	if res < 0 {
		if op == wire.OpDiscard && (unix.Errno(-res) == unix.EOPNOTSUPP || unix.Errno(-res) == unix.ENOTSUP) {
			return wire.StatusNotSupported
		}
		return wire.StatusIO
	}
	if (op == wire.OpRead || op == wire.OpWrite) && uint32(res) != length {
		return wire.StatusIO
	}
	return wire.StatusOK
}
