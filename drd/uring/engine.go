package uring

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"unsafe"
)

// Op is the operation of a Request.
type Op uint8

// The operations an Engine performs.
const (
	OpNop     Op = iota // nothing; completes with result 0
	OpRead              // read len(Buf) bytes at Offset; result: bytes read
	OpWrite             // write Buf at Offset; result: bytes written
	OpSync              // fdatasync the whole file
	OpDiscard           // free Length bytes at Offset, keeping the file size (punch a hole)
	OpPoll              // wait until Fd reports one of the poll events Length (POLLIN, ...); result: the events
)

func (o Op) String() string {
	switch o {
	case OpNop:
		return "nop"
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpSync:
		return "sync"
	case OpDiscard:
		return "discard"
	case OpPoll:
		return "poll"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Request is one I/O for an Engine.
type Request struct {
	Op Op
	// Fd is the file descriptor, or with FixedFile the index of a registered file.
	Fd        int32
	FixedFile bool
	// Buf is the data of a read or write. The engine keeps it referenced until the request's
	// completion is reaped; the caller must not touch it before then.
	Buf []byte
	// With FixedBuf, Buf lies inside the registered buffer BufIndex.
	FixedBuf bool
	BufIndex uint16
	Offset   int64  // file offset of reads, writes and discards
	Length   int64  // length of a discard
	UserData uint64 // returned in the completion
}

// Kind says which engine NewEngine chose.
type Kind uint8

// The engines.
const (
	KindURing Kind = iota + 1 // io_uring, through Ring
	KindSync                  // synchronous pread, pwrite, fdatasync and fallocate
)

func (k Kind) String() string {
	switch k {
	case KindURing:
		return "io_uring"
	case KindSync:
		return "sync"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ErrQueueFull is returned by Engine.Submit when QueueDepth requests are in flight: reap
// completions, then submit the rest.
var ErrQueueFull = errors.New("engine queue full")

// Engine runs batches of Requests. Both engines have the same semantics, so the DRD server
// works on either: Submit starts reqs[:n] (all of them when err is nil; else reqs[n] was
// refused because the queue is full, it failed validation, or the kernel failed); each started
// request produces exactly one completion, returned by Reap with the request's UserData and its
// result (bytes transferred, or a negated errno: see CQE.Err). Completions may come in any
// order. An Engine is not safe for concurrent use.
type Engine interface {
	// Submit validates and starts a batch of requests (one system call for the whole batch
	// with io_uring).
	Submit(reqs []Request) (int, error)
	// SubmitWait is Submit, then waits until at least wait completions are ready (capped at
	// the number in flight) in the same system call, so a driver that submits and then waits
	// pays for one system call instead of two. It waits only when every request started.
	SubmitWait(reqs []Request, wait int) (int, error)
	// Reap copies completions into out, waiting until at least want are there (want is capped
	// at the number in flight and at len(out)). Signals do not interrupt it.
	Reap(out []CQE, want int) (int, error)
	// InFlight returns the number of requests submitted whose completion was not reaped yet.
	InFlight() int
	// RegisterBuffers and RegisterFiles make buffers and files usable by index (FixedBuf,
	// FixedFile). See Ring.RegisterBuffers for the rules on buffer memory.
	RegisterBuffers(bufs [][]byte) error
	UnregisterBuffers() error
	RegisterFiles(fds []int) error
	UnregisterFiles() error
	// Kind and Reason say which engine runs and why it was chosen.
	Kind() Kind
	Reason() string
	// Close waits for (or cancels) the requests in flight, discarding their completions, and
	// releases the engine. It is idempotent.
	Close() error
}

// Config configures NewEngine.
type Config struct {
	// QueueDepth is the most requests in flight at once (default 128, at most 32768).
	QueueDepth int
	// Align is checked on every read and write before submission (see CheckAligned); the
	// zero value checks nothing.
	Align Alignment
	// DisableURing selects the synchronous engine.
	DisableURing bool
	// RingOptions are passed to New (WithSingleIssuer, WithSQPoll, WithCloseTimeout, ...).
	RingOptions []Option
}

// NewEngine returns the io_uring engine, or the synchronous engine when cfg.DisableURing is set
// or the kernel refuses io_uring (io_uring_setup fails with ENOSYS or EPERM, e.g. with
// kernel.io_uring_disabled set). Reason says which and why. Other setup failures are errors.
func NewEngine(cfg Config) (Engine, error) {
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = 128
	}
	if cfg.QueueDepth < 0 || cfg.QueueDepth > 32768 {
		return nil, fmt.Errorf("new engine: queue depth %d (want 1 to 32768)", cfg.QueueDepth)
	}
	if cfg.DisableURing {
		return newSyncEngine(cfg, "sync engine: io_uring disabled by configuration"), nil
	}
	ring, err := New(uint32(cfg.QueueDepth), cfg.RingOptions...)
	if err != nil {
		if errors.Is(err, ErrNotSupported) {
			return newSyncEngine(cfg, fmt.Sprintf("sync engine: %v%s", err, sysctlNote())), nil
		}
		return nil, fmt.Errorf("new engine: %w", err)
	}
	e := &ringEngine{
		ring:  ring,
		align: cfg.Align,
		slots: make([]slot, cfg.QueueDepth),
		free:  make([]uint32, cfg.QueueDepth),
		reason: fmt.Sprintf("io_uring engine: %d SQ / %d CQ entries, setup flags %#x, features %#x",
			ring.SQEntries(), ring.CQEntries(), ring.SetupFlags(), ring.Features()),
	}
	for i := range e.free {
		e.free[i] = uint32(len(e.free) - 1 - i)
	}
	return e, nil
}

func sysctlNote() string {
	b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	if v := strings.TrimSpace(string(b)); err == nil && v != "0" {
		return " (kernel.io_uring_disabled=" + v + ")"
	}
	return ""
}

// validate checks a request before it is started, so that a bad one gets a clear error
// instead of a kernel errno.
func validate(req *Request, align Alignment, bufs [][]byte, nfiles int) error {
	switch req.Op {
	case OpNop, OpSync:
	case OpRead, OpWrite:
		if len(req.Buf) > math.MaxInt32 {
			return fmt.Errorf("%v of %d bytes: at most %d bytes per request", req.Op, len(req.Buf), math.MaxInt32)
		}
		if err := CheckAligned(req.Buf, req.Offset, align); err != nil {
			return err
		}
		if req.FixedBuf {
			if int(req.BufIndex) >= len(bufs) {
				return fmt.Errorf("fixed buffer %d not registered (%d registered)", req.BufIndex, len(bufs))
			}
			if !inside(req.Buf, bufs[req.BufIndex]) {
				return fmt.Errorf("buffer is not inside registered buffer %d", req.BufIndex)
			}
		}
	case OpDiscard:
		if req.Offset < 0 || req.Length <= 0 {
			return fmt.Errorf("discard of %d bytes at offset %d: offset and length must be positive", req.Length, req.Offset)
		}
	case OpPoll:
		if req.Length <= 0 || req.Length > math.MaxUint16 {
			return fmt.Errorf("poll for events %#x: want a non-empty 16-bit mask", req.Length)
		}
	default:
		return fmt.Errorf("unknown operation %v", req.Op)
	}
	if req.Op == OpNop {
		return nil
	}
	if req.FixedFile {
		if req.Fd < 0 || int(req.Fd) >= nfiles {
			return fmt.Errorf("fixed file %d not registered (%d registered)", req.Fd, nfiles)
		}
	} else if req.Fd < 0 {
		return fmt.Errorf("bad file descriptor %d", req.Fd)
	}
	return nil
}

func inside(b, reg []byte) bool {
	if len(b) == 0 {
		return true
	}
	s, rs := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&reg[0]))
	return s >= rs && s+uintptr(len(b)) <= rs+uintptr(len(reg))
}

// ringEngine is the io_uring Engine. Each request in flight holds a slot, whose index is the
// user data the kernel sees; the slot keeps the caller's user data and buffer.
type ringEngine struct {
	ring   *Ring
	align  Alignment
	slots  []slot
	free   []uint32 // free slot indices, used as a stack
	reason string
}

type slot struct {
	userData uint64
	buf      []byte
}

func (e *ringEngine) Kind() Kind     { return KindURing }
func (e *ringEngine) Reason() string { return e.reason }
func (e *ringEngine) InFlight() int  { return len(e.slots) - len(e.free) }

func (e *ringEngine) Submit(reqs []Request) (int, error) { return e.SubmitWait(reqs, 0) }

func (e *ringEngine) SubmitWait(reqs []Request, wait int) (int, error) {
	if e.ring.closed {
		return 0, ErrClosed
	}
	var err error
	n := 0
	for ; n < len(reqs); n++ {
		req := &reqs[n]
		if len(e.free) == 0 {
			err = ErrQueueFull
			break
		}
		if verr := validate(req, e.align, e.ring.bufs, e.ring.nfiles); verr != nil {
			err = fmt.Errorf("request %d (user data %d): %w", n, req.UserData, verr)
			break
		}
		sqe, gerr := e.ring.GetSQE()
		if gerr != nil {
			err = gerr
			break
		}
		idx := e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
		e.slots[idx] = slot{userData: req.UserData, buf: req.Buf}
		ud := uint64(idx)
		switch req.Op {
		case OpNop:
			sqe.PrepNop(ud)
		case OpRead:
			if req.FixedBuf {
				sqe.PrepReadFixed(req.Fd, req.Buf, req.Offset, req.BufIndex, ud)
			} else {
				sqe.PrepRead(req.Fd, req.Buf, req.Offset, ud)
			}
		case OpWrite:
			if req.FixedBuf {
				sqe.PrepWriteFixed(req.Fd, req.Buf, req.Offset, req.BufIndex, ud)
			} else {
				sqe.PrepWrite(req.Fd, req.Buf, req.Offset, ud)
			}
		case OpSync:
			sqe.PrepFsync(req.Fd, FsyncDatasync, ud)
		case OpDiscard:
			sqe.PrepDiscard(req.Fd, req.Offset, req.Length, ud)
		case OpPoll:
			sqe.PrepPollAdd(req.Fd, uint32(req.Length), ud)
		}
		if req.FixedFile && req.Op != OpNop {
			sqe.SetFixedFile()
		}
	}
	if err != nil || wait < 0 {
		wait = 0
	}
	wait = min(wait, e.InFlight())
	if _, serr := e.ring.SubmitAndWait(uint32(wait)); serr != nil {
		// The requests are in the submission queue and count as in flight; the ring hands
		// them to the kernel on its next call.
		err = errors.Join(err, fmt.Errorf("submit: %w", serr))
	}
	return n, err
}

func (e *ringEngine) Reap(out []CQE, want int) (int, error) {
	if e.ring.closed {
		return 0, ErrClosed
	}
	n, err := e.ring.WaitCQEs(out, min(want, e.InFlight()))
	for i := range out[:n] {
		idx := out[i].UserData
		if idx >= uint64(len(e.slots)) {
			panic(fmt.Sprintf("uring: completion for unknown slot %d", idx))
		}
		s := &e.slots[idx]
		out[i].UserData = s.userData
		*s = slot{}
		e.free = append(e.free, uint32(idx))
	}
	return n, err
}

func (e *ringEngine) RegisterBuffers(bufs [][]byte) error { return e.ring.RegisterBuffers(bufs) }
func (e *ringEngine) UnregisterBuffers() error            { return e.ring.UnregisterBuffers() }
func (e *ringEngine) RegisterFiles(fds []int) error       { return e.ring.RegisterFiles(fds) }
func (e *ringEngine) UnregisterFiles() error              { return e.ring.UnregisterFiles() }

func (e *ringEngine) Close() error {
	if e.ring.closed {
		return nil
	}
	err := e.ring.Close()
	if errors.Is(err, ErrDrainTimeout) {
		var bufs [][]byte
		for _, s := range e.slots {
			if s.buf != nil {
				bufs = append(bufs, s.buf)
			}
		}
		bury(bufs)
	}
	clear(e.slots)
	e.free = e.free[:0]
	return err
}
