package uring

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// syncEngine is the Engine for kernels without io_uring: Submit performs each request at once
// with pread, pwrite, fdatasync or fallocate, and Reap hands out the results.
type syncEngine struct {
	depth  int
	align  Alignment
	done   []CQE
	bufs   [][]byte
	fds    []int
	reason string
	closed bool
}

func newSyncEngine(cfg Config, reason string) *syncEngine {
	return &syncEngine{depth: cfg.QueueDepth, align: cfg.Align, reason: reason,
		done: make([]CQE, 0, cfg.QueueDepth)}
}

func (e *syncEngine) Kind() Kind     { return KindSync }
func (e *syncEngine) Reason() string { return e.reason }
func (e *syncEngine) InFlight() int  { return len(e.done) }

// SubmitWait is Submit: the synchronous engine's requests are complete when it returns.
func (e *syncEngine) SubmitWait(reqs []Request, _ int) (int, error) { return e.Submit(reqs) }

func (e *syncEngine) Submit(reqs []Request) (int, error) {
	if e.closed {
		return 0, ErrClosed
	}
	for i := range reqs {
		req := &reqs[i]
		if len(e.done) >= e.depth {
			return i, ErrQueueFull
		}
		if err := validate(req, e.align, e.bufs, len(e.fds)); err != nil {
			return i, fmt.Errorf("request %d (user data %d): %w", i, req.UserData, err)
		}
		e.done = append(e.done, CQE{UserData: req.UserData, Res: e.do(req)})
	}
	return len(reqs), nil
}

func (e *syncEngine) do(req *Request) int32 {
	fd := int(req.Fd)
	if req.FixedFile {
		fd = e.fds[req.Fd]
	}
	var n int
	var err error
	for {
		switch req.Op {
		case OpNop:
			return 0
		case OpRead:
			n, err = unix.Pread(fd, req.Buf, req.Offset)
		case OpWrite:
			n, err = unix.Pwrite(fd, req.Buf, req.Offset)
		case OpSync:
			err = unix.Fdatasync(fd)
		case OpDiscard:
			err = unix.Fallocate(fd, DiscardMode, req.Offset, req.Length)
		case OpPoll:
			// Synchronous like the rest: waits here until an event holds.
			p := []unix.PollFd{{Fd: int32(fd), Events: int16(req.Length)}}
			if _, err = unix.Poll(p, -1); err == nil {
				return int32(uint16(p[0].Revents))
			}
		}
		if err != unix.EINTR {
			break
		}
	}
	if err == nil {
		return int32(n)
	}
	if errno, ok := err.(unix.Errno); ok { // x/sys returns a bare Errno; no errors.As, no allocation
		return -int32(errno)
	}
	return -int32(unix.EIO)
}

func (e *syncEngine) Reap(out []CQE, _ int) (int, error) {
	if e.closed {
		return 0, ErrClosed
	}
	n := copy(out, e.done)
	e.done = e.done[:copy(e.done, e.done[n:])]
	return n, nil
}

func (e *syncEngine) RegisterBuffers(bufs [][]byte) error {
	if e.closed {
		return ErrClosed
	}
	if e.bufs != nil {
		return errors.New("register buffers: buffers already registered (unregister them first)")
	}
	if len(bufs) == 0 {
		return errors.New("register buffers: no buffers")
	}
	for i, b := range bufs {
		if len(b) == 0 {
			return fmt.Errorf("register buffers: buffer %d is empty", i)
		}
	}
	e.bufs = append([][]byte(nil), bufs...)
	return nil
}

func (e *syncEngine) UnregisterBuffers() error {
	if e.bufs == nil {
		return errors.New("unregister buffers: no buffers registered")
	}
	e.bufs = nil
	return nil
}

func (e *syncEngine) RegisterFiles(fds []int) error {
	if e.closed {
		return ErrClosed
	}
	if e.fds != nil {
		return errors.New("register files: files already registered (unregister them first)")
	}
	if len(fds) == 0 {
		return errors.New("register files: no files")
	}
	e.fds = append([]int(nil), fds...)
	return nil
}

func (e *syncEngine) UnregisterFiles() error {
	if e.fds == nil {
		return errors.New("unregister files: no files registered")
	}
	e.fds = nil
	return nil
}

func (e *syncEngine) Close() error {
	e.closed = true
	e.done, e.bufs, e.fds = nil, nil, nil
	return nil
}
