package main

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vigil/heartbeat"
)

// A scheduling-latency probe in the manner of cyclictest: one SCHED_FIFO thread per CPU, above
// the daemons' senders, pinned to its CPU, sleeps to absolute 1 ms deadlines and records every
// wake-up that comes late. Only interrupts, code that runs with them off and (on a kernel
// built with PREEMPT_NONE, as the bench machine's) non-preemptible kernel sections outrank it,
// so a late wake-up of several milliseconds means the CPU ran nothing else that we could
// schedule: on a virtual machine, mostly the hypervisor not running the vCPU. The probe cannot
// tell these causes apart; the output calls all of them "vCPU stalls". During such a stall
// nothing scheduled on that CPU runs (on a descheduled vCPU, neither the senders nor the XDP
// program nor the sweep timer), and the other CPU's sweep sees the silence.

const (
	probePriority = 90
	probePeriod   = time.Millisecond
)

// cpuStall is a late wake-up of the probe on one CPU: the CPU ran nothing of ours in
// [from, to] at most (the stall began after the previous wake-up, at most a period before the
// missed deadline). Times are CLOCK_MONOTONIC ns.
type cpuStall struct {
	cpu      int
	from, to uint64
	late     time.Duration
}

type stallProbe struct {
	threshold time.Duration
	stop      chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	stalls    []cpuStall
	wakeups   int
	errs      []error
}

// startStallProbe starts one probe thread per CPU; it records wake-ups later than threshold.
// It returns once every thread runs pinned at its priority (or failed to), so that whatever
// the caller starts next is watched from its beginning.
func startStallProbe(threshold time.Duration) *stallProbe {
	p := &stallProbe{threshold: threshold, stop: make(chan struct{})}
	var ready sync.WaitGroup
	for cpu := range runtime.NumCPU() {
		ready.Add(1)
		p.wg.Go(func() { p.run(cpu, ready.Done) })
	}
	ready.Wait()
	return p
}

func (p *stallProbe) run(cpu int, ready func()) {
	// The thread keeps its real-time policy and affinity and dies with the goroutine.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		p.fail(fmt.Errorf("probe: pin to cpu %d: %w", cpu, err))
		ready()
		return
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: probePriority}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		p.fail(fmt.Errorf("probe: SCHED_FIFO on cpu %d: %w", cpu, err))
		ready()
		return
	}
	ready()
	n := 0
	next := heartbeat.MonotonicNow()
loop:
	for {
		select {
		case <-p.stop:
			break loop
		default:
		}
		next += uint64(probePeriod)
		ts := unix.NsecToTimespec(int64(next))
		for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil) == unix.EINTR {
		}
		now := heartbeat.MonotonicNow()
		n++
		if late := time.Duration(now - next); late > p.threshold {
			p.mu.Lock()
			p.stalls = append(p.stalls, cpuStall{cpu: cpu, from: next - uint64(probePeriod), to: now, late: late})
			p.mu.Unlock()
		}
		if now > next+uint64(probePeriod) {
			next = now // do not replay the missed deadlines
		}
	}
	p.mu.Lock()
	p.wakeups += n
	p.mu.Unlock()
}

// Snapshot returns the stalls seen so far, in the order they were seen on each CPU.
func (p *stallProbe) Snapshot() []cpuStall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.stalls)
}

func (p *stallProbe) fail(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

// Stop ends the probe and returns the stalls it saw, by start time, and the first error.
func (p *stallProbe) Stop() ([]cpuStall, error) {
	close(p.stop)
	p.wg.Wait()
	slices.SortFunc(p.stalls, func(a, b cpuStall) int { return cmp.Compare(a.from, b.from) })
	if len(p.errs) > 0 {
		return p.stalls, p.errs[0]
	}
	return p.stalls, nil
}

// near reports whether t falls in a stall of any CPU, or within slack after its end.
func near(stalls []cpuStall, t uint64, slack time.Duration) bool {
	for _, s := range stalls {
		if t >= s.from && t <= s.to+uint64(slack) {
			return true
		}
	}
	return false
}

// sleepFloor measures the least any user-space heartbeat sender at 1 kHz can cost on this
// machine: a thread that does nothing but sleep to absolute 1 ms deadlines (at the sender's
// real-time priority, with raw system calls, as heartbeat.Sender.Run does) for d. It returns
// the thread's time on CPU (schedstat) in percent of one core, and its wake-ups.
func sleepFloor(d time.Duration) (percent float64, wakeups int, err error) {
	type result struct {
		pct float64
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var old unix.SchedAttr
		oldp, err := unix.SchedGetAttr(0, 0)
		if err == nil {
			old = *oldp
		}
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: heartbeat.RealtimePriority}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			done <- result{err: fmt.Errorf("sleep floor: SCHED_FIFO: %w", err)}
			return
		}
		defer unix.SchedSetAttr(0, &old, 0)
		ns0, err := schedstatNS("/proc/thread-self/schedstat")
		if err != nil {
			done <- result{err: err}
			return
		}
		start := heartbeat.MonotonicNow()
		next, end := start, start+uint64(d)
		n := 0
		for next < end {
			next += uint64(time.Millisecond)
			ts := unix.NsecToTimespec(int64(next))
			for {
				_, _, e := unix.RawSyscall6(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME,
					uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
				if e != unix.EINTR {
					break
				}
			}
			n++
		}
		elapsed := heartbeat.MonotonicNow() - start
		ns1, err := schedstatNS("/proc/thread-self/schedstat")
		done <- result{pct: 100 * float64(ns1-ns0) / float64(elapsed), n: n, err: err}
	}()
	r := <-done
	return r.pct, r.n, r.err
}
