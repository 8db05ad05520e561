package uring

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Errors callers branch on.
var (
	// ErrNotSupported wraps io_uring_setup failing with ENOSYS or EPERM: the kernel has no
	// io_uring, or kernel.io_uring_disabled or a seccomp filter forbids it.
	ErrNotSupported = errors.New("io_uring not supported")
	// ErrClosed is returned by every method of a closed Ring or Engine.
	ErrClosed = errors.New("io_uring ring closed")
	// ErrSQFull is returned by GetSQE when the submission queue stays full after a flush.
	ErrSQFull = errors.New("io_uring submission queue full")
	// ErrNothingInFlight is returned by a wait that could never end: fewer completions are
	// ready than asked for and no request is in flight.
	ErrNothingInFlight = errors.New("io_uring wait with nothing in flight")
	// ErrCQOverflow is returned by the reapers when the kernel dropped completions because
	// the completion queue was full (only possible without IORING_FEAT_NODROP, or when the
	// kernel could not allocate its overflow list).
	ErrCQOverflow = errors.New("io_uring completion queue overflowed: completions lost")
	// ErrTimeout is returned by a wait with a timeout that expired.
	ErrTimeout = errors.New("io_uring wait timed out")
	// ErrDrainTimeout is returned by Close when requests were still in flight after the close
	// timeout. Their buffers are then kept referenced for the life of the process.
	ErrDrainTimeout = errors.New("io_uring close: requests still in flight after the timeout")
)

// Option configures New.
type Option func(*config)

type config struct {
	cqEntries    uint32
	sqPoll       bool
	sqPollIdle   time.Duration
	singleIssuer bool
	closeTimeout time.Duration
}

// WithCQEntries sets the size of the completion queue (IORING_SETUP_CQSIZE); the kernel rounds
// it up to a power of two. It must be at least the number of SQ entries. The default is twice
// the SQ size.
func WithCQEntries(n uint32) Option { return func(c *config) { c.cqEntries = n } }

// WithSQPoll starts a kernel thread that polls the submission queue (IORING_SETUP_SQPOLL), so
// submitting needs no system call while the thread is awake; it sleeps after idle without work.
// It costs a CPU while busy: on a 2-core machine it is rarely a win.
func WithSQPoll(idle time.Duration) Option {
	return func(c *config) { c.sqPoll, c.sqPollIdle = true, idle }
}

// WithSingleIssuer tells the kernel that only the thread calling New will ever use the ring
// (IORING_SETUP_SINGLE_ISSUER, with IORING_SETUP_DEFER_TASKRUN where the kernel has it, else
// IORING_SETUP_COOP_TASKRUN): completions are then processed when that thread asks for them,
// with no interrupt of other work. The goroutine must call runtime.LockOSThread before New and
// stay locked, using the ring (Close included) from no other goroutine, for the ring's life;
// a call from another thread fails with an error wrapping EEXIST.
//
// Without this option the ring works from any goroutine (one at a time): the kernel finishes
// each completion on the OS thread that submitted the request, interrupting it if it is
// running. COOP_TASKRUN is not used then, because Go may have moved that thread on to other
// goroutines, and without the interrupt the completion would wait until the thread next enters
// the kernel (up to a scheduler tick).
func WithSingleIssuer() Option { return func(c *config) { c.singleIssuer = true } }

// WithCloseTimeout bounds how long Close waits for requests in flight (default 10s).
func WithCloseTimeout(d time.Duration) Option { return func(c *config) { c.closeTimeout = d } }

// Stats counts what a Ring did. The counters only grow.
type Stats struct {
	Submitted       uint64 // SQEs handed to the kernel
	Completed       uint64 // CQEs taken from the completion queue
	Enters          uint64 // io_uring_enter system calls
	EINTR           uint64 // io_uring_enter calls interrupted by a signal and retried
	Busy            uint64 // EAGAIN or EBUSY from io_uring_enter, answered by reaping and retrying
	OverflowFlushes uint64 // times the kernel's CQ overflow list was flushed into the ring
	Dropped         uint64 // completions the kernel dropped (see ErrCQOverflow)
}

// Ring is one io_uring instance: a submission queue, a completion queue and the SQE array,
// shared with the kernel through three (or two) mappings.
//
// A Ring is not safe for concurrent use: one goroutine at a time submits and reaps (with
// WithSingleIssuer, always the same locked goroutine).
type Ring struct {
	fd       int
	flags    uint32 // setup flags in effect
	features uint32

	ringMem []byte // SQ ring, and the CQ ring with FeatSingleMmap
	cqMem   []byte // CQ ring without FeatSingleMmap, else nil
	sqeMem  []byte

	// Submission queue. The kernel writes head and reads tail.
	sqHead, sqTail, sqFlags, sqDropped *uint32
	sqMask, sqEntries                  uint32
	sqes                               []SQE
	sqLocal                            uint32 // next SQE to hand out (ours alone)
	sqPublished                        uint32 // last value stored to *sqTail

	// Completion queue. The kernel writes tail and reads head.
	cqHead, cqTail, cqOverflow *uint32
	cqMask, cqEntries          uint32
	cqes                       []CQE
	cqLocal                    uint32 // our copy of *cqHead
	lastOverflow               uint32

	inflight uint32 // SQEs published minus CQEs taken from the ring
	backlog  []CQE  // CQEs taken from the ring to make room, not yet returned to the caller

	bufs   [][]byte // registered buffers: referenced here so the GC keeps them
	nfiles int

	closeTimeout time.Duration
	stats        Stats
	closed       bool

	// Arguments of a timed wait, on the heap so their addresses stay valid during the call.
	waitArg getEventsArg
	waitTS  unix.Timespec
}

// setupSyscall is io_uring_setup; tests replace it to simulate kernels without io_uring.
var setupSyscall = sysSetup

// New creates a ring with room for entries submissions (rounded up to a power of two by the
// kernel, at most 32768). It asks for the newest setup flags first and falls back to older
// ones when the kernel refuses them (EINVAL). It returns an error wrapping ErrNotSupported when
// io_uring_setup fails with ENOSYS or EPERM.
func New(entries uint32, opts ...Option) (*Ring, error) {
	cfg := config{closeTimeout: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if entries == 0 {
		return nil, errors.New("io_uring setup: entries must be at least 1")
	}
	var base uint32 = setupClamp
	if cfg.cqEntries != 0 {
		base |= setupCQSize
	}
	if cfg.sqPoll {
		base |= setupSQPoll
	}
	// From most to least wanted; the kernel answers EINVAL for flags it does not know.
	var tries []uint32
	if cfg.singleIssuer {
		if !cfg.sqPoll { // DEFER_TASKRUN cannot be combined with SQPOLL
			tries = append(tries, setupSingleIssuer|setupDeferTaskrun|setupTaskrunFlag|setupSubmitAll)
		}
		if !cfg.sqPoll { // nor can the task-run flags
			tries = append(tries, setupSingleIssuer|setupCoopTaskrun|setupTaskrunFlag|setupSubmitAll)
		}
		tries = append(tries, setupSingleIssuer|setupSubmitAll)
	}
	tries = append(tries, setupSubmitAll, 0)

	var (
		p     params
		fd    int
		errno unix.Errno
	)
	for _, extra := range tries {
		p = params{flags: base | extra, cqEntries: cfg.cqEntries}
		if cfg.sqPoll {
			p.sqThreadIdle = uint32(cfg.sqPollIdle / time.Millisecond)
		}
		fd, errno = setupSyscall(entries, &p)
		if errno != unix.EINVAL {
			break
		}
	}
	switch errno {
	case 0:
	case unix.ENOSYS, unix.EPERM:
		return nil, fmt.Errorf("io_uring setup: %w: %w", ErrNotSupported, errno)
	default:
		return nil, fmt.Errorf("io_uring setup (%d entries, flags %#x): %w", entries, p.flags, errno)
	}
	r := &Ring{fd: fd, flags: p.flags, features: p.features, closeTimeout: cfg.closeTimeout}
	if err := r.mapRings(&p); err != nil {
		return nil, errors.Join(err, r.unmap(), unix.Close(fd))
	}
	return r, nil
}

// mapRings maps the rings and the SQE array and points the Ring's fields into them.
func (r *Ring) mapRings(p *params) error {
	const prot = unix.PROT_READ | unix.PROT_WRITE
	const flags = unix.MAP_SHARED | unix.MAP_POPULATE
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.features&FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.ringMem, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring mmap sq ring (%d bytes): %w", sqSize, err)
	}
	cqMem := r.ringMem
	if !single {
		if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			return fmt.Errorf("io_uring mmap cq ring (%d bytes): %w", cqSize, err)
		}
		cqMem = r.cqMem
	}
	sqeSize := int(p.sqEntries) * int(unsafe.Sizeof(SQE{}))
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, sqeSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring mmap sqes (%d bytes): %w", sqeSize, err)
	}

	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead = u32(r.ringMem, p.sqOff.head)
	r.sqTail = u32(r.ringMem, p.sqOff.tail)
	r.sqFlags = u32(r.ringMem, p.sqOff.flags)
	r.sqDropped = u32(r.ringMem, p.sqOff.dropped)
	r.sqMask = *u32(r.ringMem, p.sqOff.ringMask)
	r.sqEntries = *u32(r.ringMem, p.sqOff.ringEntries)
	array := unsafe.Slice(u32(r.ringMem, p.sqOff.array), r.sqEntries)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), r.sqEntries)
	// SQEs are always handed out in ring order, so the indirection array is the identity.
	for i := range array {
		array[i] = uint32(i)
	}
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	r.sqPublished = r.sqLocal

	r.cqHead = u32(cqMem, p.cqOff.head)
	r.cqTail = u32(cqMem, p.cqOff.tail)
	r.cqOverflow = u32(cqMem, p.cqOff.overflow)
	r.cqMask = *u32(cqMem, p.cqOff.ringMask)
	r.cqEntries = *u32(cqMem, p.cqOff.ringEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&cqMem[p.cqOff.cqes])), r.cqEntries)
	r.cqLocal = atomic.LoadUint32(r.cqHead)
	r.lastOverflow = atomic.LoadUint32(r.cqOverflow)
	return nil
}

func (r *Ring) unmap() error {
	var errs []error
	for _, m := range []*[]byte{&r.sqeMem, &r.cqMem, &r.ringMem} {
		if *m != nil {
			if err := unix.Munmap(*m); err != nil {
				errs = append(errs, fmt.Errorf("io_uring munmap: %w", err))
			}
			*m = nil
		}
	}
	r.sqes, r.cqes = nil, nil
	return errors.Join(errs...)
}

// Fd returns the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// SQEntries and CQEntries return the sizes of the queues as the kernel made them.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries returns the size of the completion queue.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// SetupFlags returns the IORING_SETUP_* flags in effect (after any fallback).
func (r *Ring) SetupFlags() uint32 { return r.flags }

// Features returns the IORING_FEAT_* flags the kernel reported.
func (r *Ring) Features() uint32 { return r.features }

// InFlight returns the number of requests handed to the kernel whose completion has not been
// taken from the completion queue yet.
func (r *Ring) InFlight() int { return int(r.inflight) }

// Stats returns the counters.
func (r *Ring) Stats() Stats { return r.stats }

// CQOverflowPending reports whether the kernel holds completions that did not fit in the
// completion queue (IORING_SQ_CQ_OVERFLOW). The reapers flush them.
func (r *Ring) CQOverflowPending() bool {
	return !r.closed && atomic.LoadUint32(r.sqFlags)&sqCQOverflow != 0
}

// Close cancels the requests in flight (IORING_OP_ASYNC_CANCEL), waits until the kernel has
// completed every one of them (at most the close timeout), discards their completions, then
// unmaps the rings and closes the descriptor. Requests the kernel cannot cancel (disk I/O
// already issued) are waited for, so the kernel never writes into memory the caller frees
// after Close. If the timeout expires first, Close keeps the registered buffers referenced for
// the life of the process and returns an error wrapping ErrDrainTimeout. Close is idempotent.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	drainErr := r.drain(time.Now().Add(r.closeTimeout))
	if drainErr != nil && r.bufs != nil {
		bury(r.bufs)
	}
	r.closed = true
	r.bufs = nil
	r.backlog = nil
	err := errors.Join(drainErr, r.unmap())
	if cerr := unix.Close(r.fd); cerr != nil {
		err = errors.Join(err, fmt.Errorf("io_uring close: %w", cerr))
	}
	r.fd = -1
	return err
}

// cancelUserData marks the cancel request Close submits; its completion is discarded.
const cancelUserData = ^uint64(0)

func (r *Ring) drain(deadline time.Time) error {
	if r.inflight == 0 && r.sqLocal == r.sqPublished {
		return nil
	}
	// SQEs prepared but never submitted are dropped: the kernel has not seen them.
	r.sqLocal = r.sqPublished
	if r.inflight > 0 {
		if sqe, err := r.GetSQE(); err == nil {
			sqe.PrepCancelAll(cancelUserData)
			r.publish()
		}
	}
	var scratch [64]CQE
	for {
		if _, err := r.ReapCQEs(scratch[:]); err != nil && !errors.Is(err, ErrCQOverflow) {
			return fmt.Errorf("io_uring close: %w", err)
		}
		if r.inflight == 0 && r.sqLocal == r.sqPublished {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w (%d requests, timeout %v)", ErrDrainTimeout, r.inflight, r.closeTimeout)
		}
		if _, err := r.enterLoop(1, min(time.Until(deadline), 100*time.Millisecond)); err != nil &&
			!errors.Is(err, ErrTimeout) {
			return fmt.Errorf("io_uring close: %w", err)
		}
	}
}

// graveyard keeps buffers the kernel may still write into referenced forever.
var graveyard struct {
	sync.Mutex
	bufs [][]byte
}

func bury(bufs [][]byte) {
	graveyard.Lock()
	graveyard.bufs = append(graveyard.bufs, bufs...)
	graveyard.Unlock()
}
