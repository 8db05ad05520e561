package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// runtimePriority is the SCHED_FIFO priority of every vigild thread but the heartbeat
// sender's (heartbeat.RealtimePriority): the lowest real-time one. It puts the daemon ahead of
// all ordinary (SCHED_OTHER) load, and behind every other real-time thread.
//
// Why the whole process, as corosync does: the sender's goroutine is locked to its thread,
// and the Go runtime preempts it every 10 ms or so (sysmon, the garbage collector). A
// preempted locked goroutine resumes only after another runtime thread has picked it up and
// handed its thread the P back; were those threads SCHED_OTHER, a CPU-saturated machine would
// delay that by milliseconds, and with it the heartbeats. The bench's starvation soak showed
// exactly that (the sender woke 4–30 ms late while a SCHED_FIFO 90 probe on the same CPUs saw
// no stall). It also keeps the daemon's progress counter and event handling going under load.
// The kernel's real-time throttling (sched_rt_runtime_us) still bounds a runaway daemon.
//
// Threads created later inherit the policy from the thread that creates them. So would child
// processes: a daemon that starts programs must reset their policy.
const runtimePriority = 1

// realtimeProcess gives every existing thread of the process SCHED_FIFO at prio.
func realtimeProcess(prio int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	var errs []error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
		if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("sched_setattr SCHED_FIFO %d on thread %d: %w", prio, tid, err))
		}
	}
	return errors.Join(errs...)
}
