package main

import (
	"log/slog"
	"os"
	"runtime"
)

// heldProcs is the number of Go scheduler Ps that vigild's goroutines keep while they sleep in
// the kernel: the heartbeat sender's (at intervals up to heartbeat.RawSleepMax it sleeps with a
// raw system call and never gives its P back, by design) and the heartbeat event reader's (the
// ring buffer reader blocks in epoll_wait with an ordinary system call, which keeps the P until
// sysmon takes it back).
const heldProcs = 2

// reserveProcs raises GOMAXPROCS by heldProcs, unless the GOMAXPROCS environment variable sets
// it. Without the spare Ps, on a 2-CPU machine, a goroutine that the event reader wakes (the
// main loop that hands "peer down" to raft) waits for sysmon to retake a P from a sleeping
// system call, which takes up to 20 ms (two sysmon periods of 10 ms when the process is idle):
// the membership bench's traces showed every heartbeat event reaching raft 8-20 ms after the
// kernel raised it, on every survivor, whenever a leader died. A spare P costs nothing while
// there is nothing to run on it.
func reserveProcs(log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	n := runtime.GOMAXPROCS(0) + heldProcs
	runtime.GOMAXPROCS(n)
	log.Debug("scheduler: spare Ps for the goroutines that sleep in the kernel holding theirs", "gomaxprocs", n)
}
