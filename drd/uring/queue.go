package uring

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Memory ordering. The rings are shared with the kernel, which runs on other CPUs at the same
// time; each index has exactly one writer:
//
//   - SQ tail (written by us): the SQEs are filled with plain stores, then the new tail is
//     published with atomic.StoreUint32, a release (on amd64 an XCHG, a full barrier). The
//     kernel loads the tail with smp_load_acquire, so it sees complete SQEs.
//   - SQ head (written by the kernel with smp_store_release once it has copied the SQEs): we
//     load it with atomic.LoadUint32, an acquire, before overwriting a slot.
//   - CQ tail (written by the kernel with smp_store_release after filling the CQEs): we load it
//     with atomic.LoadUint32, an acquire, then read the CQEs with plain loads.
//   - CQ head (written by us): after copying the CQEs out, atomic.StoreUint32, a release, so
//     the kernel does not reuse a slot we are still reading.
//   - SQ flags (written by the kernel): with SQPOLL, after storing the tail we load the flags
//     to see IORING_SQ_NEED_WAKEUP; the kernel requires a full barrier between the two, which
//     Go's sequentially consistent atomics give.

// GetSQE returns the next free submission queue entry, zeroed. Fill it with one of the Prep
// methods; it goes to the kernel with the next Submit or SubmitAndWait. When the queue is full,
// GetSQE first submits what it holds (so the requests already prepared start); it returns
// ErrSQFull only if the kernel still has not made room (possible with SQPOLL).
func (r *Ring) GetSQE() (*SQE, error) {
	if r.closed {
		return nil, ErrClosed
	}
	if r.sqLocal-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		if _, err := r.Submit(); err != nil {
			return nil, fmt.Errorf("%w: flush: %w", ErrSQFull, err)
		}
		if r.flags&setupSQPoll != 0 && r.sqLocal-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
			for {
				_, errno := sysEnter(r.fd, 0, 0, enterSQWait, nil, 0)
				r.stats.Enters++
				if errno != unix.EINTR {
					break
				}
				r.stats.EINTR++
			}
		}
		if r.sqLocal-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
			return nil, ErrSQFull
		}
	}
	sqe := &r.sqes[r.sqLocal&r.sqMask]
	*sqe = SQE{}
	r.sqLocal++
	return sqe, nil
}

// Pending returns the number of SQEs obtained with GetSQE and not submitted yet.
func (r *Ring) Pending() int { return int(r.sqLocal - r.sqPublished) }

// publish hands the prepared SQEs to the kernel by storing the tail (a release).
func (r *Ring) publish() int {
	n := r.sqLocal - r.sqPublished
	if n != 0 {
		atomic.StoreUint32(r.sqTail, r.sqLocal)
		r.sqPublished = r.sqLocal
		r.inflight += n
		r.stats.Submitted += uint64(n)
	}
	return int(n)
}

// Submit hands every prepared SQE to the kernel with one io_uring_enter (more only when the
// kernel stops early) and returns how many the kernel took (with SQPOLL: how many were queued
// for the polling thread). It retries on EINTR, and on EAGAIN or EBUSY it moves completions out
// of the way (they are returned later by the reapers) and retries.
func (r *Ring) Submit() (int, error) {
	return r.SubmitAndWait(0)
}

// SubmitAndWait is Submit, then waits until at least n completions are ready to be reaped in
// the same system call. A wait interrupted by a signal is resumed.
func (r *Ring) SubmitAndWait(n uint32) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	published := r.publish()
	consumed, err := r.enterLoop(n, 0)
	if r.flags&setupSQPoll != 0 {
		return published, err
	}
	return consumed, err
}

// ready returns how many completions can be reaped without a system call.
func (r *Ring) ready() uint32 {
	return uint32(len(r.backlog)) + atomic.LoadUint32(r.cqTail) - r.cqLocal
}

// unconsumed returns the SQEs published that the kernel has not taken yet.
func (r *Ring) unconsumed() uint32 { return r.sqPublished - atomic.LoadUint32(r.sqHead) }

// enterLoop calls io_uring_enter until the kernel has taken every published SQE (without
// SQPOLL) and at least want completions are ready, or timeout (if not zero) has passed. It
// returns how many SQEs the kernel took.
func (r *Ring) enterLoop(want uint32, timeout time.Duration) (int, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	consumed, stuck := 0, 0
	for {
		var toSubmit, flags, minComplete uint32
		if r.flags&setupSQPoll != 0 {
			if r.unconsumed() != 0 && atomic.LoadUint32(r.sqFlags)&sqNeedWakeup != 0 {
				flags |= enterSQWakeup
			}
		} else {
			toSubmit = r.unconsumed()
		}
		if ready := r.ready(); want > ready {
			if r.inflight == 0 {
				return consumed, fmt.Errorf("%w (want %d completions, %d ready)", ErrNothingInFlight, want, ready)
			}
			// The kernel counts only the CQ ring, which cannot hold more than cqEntries: move
			// its entries to the backlog and wait for at most a full ring at a time.
			need := want - uint32(len(r.backlog))
			if need > r.cqEntries {
				if r.toBacklog() > 0 {
					continue
				}
				need = r.cqEntries
			}
			flags |= enterGetEvents
			minComplete = need
		}
		if toSubmit == 0 && flags == 0 {
			return consumed, nil
		}
		var arg unsafe.Pointer
		var argSize uintptr
		if flags&enterGetEvents != 0 && !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return consumed, ErrTimeout
			}
			if r.features&FeatExtArg != 0 {
				r.waitTS = unix.NsecToTimespec(int64(left))
				r.waitArg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.waitTS)))}
				arg, argSize = unsafe.Pointer(&r.waitArg), unsafe.Sizeof(r.waitArg)
				flags |= enterExtArg
			} else {
				// No timed wait in this kernel: poll.
				flags &^= enterGetEvents
				minComplete = 0
				if toSubmit == 0 && flags == 0 {
					time.Sleep(min(left, time.Millisecond))
					r.flushKernel()
					continue
				}
			}
		}
		n, errno := sysEnter(r.fd, toSubmit, minComplete, flags, arg, argSize)
		r.stats.Enters++
		switch errno {
		case 0:
			if toSubmit > 0 {
				consumed += n
				if n == 0 && flags&enterGetEvents == 0 {
					// The kernel took nothing and said nothing: make room and try again.
					if stuck++; stuck > 100 {
						return consumed, fmt.Errorf("io_uring_enter: kernel takes no SQEs (%d waiting)", toSubmit)
					}
					r.relieve()
				}
			}
		case unix.EINTR:
			r.stats.EINTR++
		case unix.ETIME:
			return consumed, fmt.Errorf("%w: %w", ErrTimeout, errno)
		case unix.EAGAIN, unix.EBUSY:
			r.stats.Busy++
			if r.relieve() {
				stuck = 0
			} else if stuck++; stuck > 100 {
				return consumed, fmt.Errorf("io_uring_enter: %w (retried %d times)", errno, stuck-1)
			} else {
				time.Sleep(100 * time.Microsecond)
			}
		case unix.EEXIST:
			return consumed, fmt.Errorf("io_uring_enter from a thread that is not the ring's single issuer "+
				"(keep the goroutine locked with runtime.LockOSThread): %w", errno)
		default:
			return consumed, fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// getEvents asks the kernel to post completions it holds (overflow list, deferred task work)
// and, if want > 0, waits for that many. It retries on EINTR.
func (r *Ring) getEvents(want uint32) error {
	for {
		_, errno := sysEnter(r.fd, 0, want, enterGetEvents, nil, 0)
		r.stats.Enters++
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			r.stats.EINTR++
		default:
			return fmt.Errorf("io_uring_enter getevents: %w", errno)
		}
	}
}

// flushKernel makes the kernel post completions it holds back, if the flags say it does.
func (r *Ring) flushKernel() bool {
	f := atomic.LoadUint32(r.sqFlags)
	if f&(sqCQOverflow|sqTaskrun) == 0 {
		return false
	}
	if f&sqCQOverflow != 0 {
		r.stats.OverflowFlushes++
	}
	return r.getEvents(0) == nil
}

// relieve makes room in the completion queue by moving its entries to the backlog, flushing
// the kernel's overflow list, and, if that freed nothing, waiting for one completion. It reports
// whether anything moved.
func (r *Ring) relieve() bool {
	moved := r.toBacklog()
	if r.flushKernel() {
		moved += r.toBacklog()
	}
	if moved == 0 && r.inflight > r.unconsumed() {
		if r.getEvents(1) == nil {
			moved += r.toBacklog()
		}
	}
	return moved > 0
}

func (r *Ring) toBacklog() int {
	n := 0
	for {
		if len(r.backlog) == cap(r.backlog) {
			r.backlog = append(r.backlog, CQE{})[:len(r.backlog)]
		}
		m := r.reapRing(r.backlog[len(r.backlog):cap(r.backlog)])
		r.backlog = r.backlog[:len(r.backlog)+m]
		n += m
		if m == 0 {
			return n
		}
	}
}

// reapRing copies completions from the CQ ring into out and advances the head.
func (r *Ring) reapRing(out []CQE) int {
	tail := atomic.LoadUint32(r.cqTail) // acquire: the CQEs before tail are complete
	head := r.cqLocal
	n := 0
	for head != tail && n < len(out) {
		out[n] = r.cqes[head&r.cqMask]
		head++
		n++
	}
	if n > 0 {
		atomic.StoreUint32(r.cqHead, head) // release: we are done reading those slots
		r.cqLocal = head
		r.inflight -= uint32(n)
		r.stats.Completed += uint64(n)
	}
	return n
}

func (r *Ring) fromBacklog(out []CQE) int {
	if len(r.backlog) == 0 {
		return 0
	}
	n := copy(out, r.backlog)
	r.backlog = r.backlog[:copy(r.backlog, r.backlog[n:])]
	return n
}

// checkOverflow reports completions the kernel dropped since the last check. They will never
// arrive, so they no longer count as in flight.
func (r *Ring) checkOverflow() error {
	ov := atomic.LoadUint32(r.cqOverflow)
	if ov == r.lastOverflow {
		return nil
	}
	d := ov - r.lastOverflow
	r.lastOverflow = ov
	r.stats.Dropped += uint64(d)
	r.inflight -= min(d, r.inflight)
	return fmt.Errorf("%w: %d", ErrCQOverflow, d)
}

// ReapCQEs copies ready completions into out and returns how many, without a system call when
// they are already in the completion queue. It enters the kernel only when the kernel signals
// that it holds completions back (CQ overflow, or deferred task work with WithSingleIssuer).
// Process out[:n] even when err is not nil: err wraps ErrCQOverflow when the kernel dropped
// completions.
func (r *Ring) ReapCQEs(out []CQE) (int, error) {
	if r.closed {
		return 0, ErrClosed
	}
	n := r.fromBacklog(out)
	n += r.reapRing(out[n:])
	for n < len(out) && r.flushKernel() {
		m := r.reapRing(out[n:])
		if m == 0 {
			break
		}
		n += m
	}
	return n, r.checkOverflow()
}

// PeekCQE returns a ready completion, if there is one, without waiting.
func (r *Ring) PeekCQE() (CQE, bool, error) {
	var one [1]CQE
	n, err := r.ReapCQEs(one[:])
	return one[0], n == 1, err
}

// WaitCQE returns the next completion, waiting for it if none is ready. It returns an error
// wrapping ErrNothingInFlight instead of waiting forever.
func (r *Ring) WaitCQE() (CQE, error) {
	var one [1]CQE
	_, err := r.WaitCQEs(one[:], 1)
	return one[0], err
}

// WaitCQEs waits until at least want completions are ready (want is capped at len(out)), then
// copies as many as fit into out. Signals do not interrupt the wait. Process out[:n] even when
// err is not nil.
func (r *Ring) WaitCQEs(out []CQE, want int) (int, error) {
	return r.waitCQEs(out, want, 0)
}

// WaitCQEsTimeout is WaitCQEs giving up after timeout with an error wrapping ErrTimeout.
func (r *Ring) WaitCQEsTimeout(out []CQE, want int, timeout time.Duration) (int, error) {
	if timeout <= 0 {
		timeout = time.Nanosecond
	}
	return r.waitCQEs(out, want, timeout)
}

func (r *Ring) waitCQEs(out []CQE, want int, timeout time.Duration) (int, error) {
	want = min(want, len(out))
	n, err := r.ReapCQEs(out)
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	for n < want && err == nil {
		left := time.Duration(0)
		if !deadline.IsZero() {
			if left = time.Until(deadline); left <= 0 {
				return n, ErrTimeout
			}
		}
		if _, err = r.enterLoop(uint32(want-n), left); err != nil {
			break
		}
		var m int
		m, err = r.ReapCQEs(out[n:])
		n += m
	}
	return n, err
}
