package main

import (
	"os"
	"runtime"
	"time"

	"vigil/heartbeat"
)

// senderP gives the Go runtime one more P than it chose when the heartbeat sender keeps one
// for itself: at intervals up to heartbeat.RawSleepMax its thread sleeps without releasing its
// P. On a 2-CPU machine the rest of the daemon then had a single P, and whenever the
// goroutine holding it entered a blocking system call (the event ring's epoll_wait) every other
// goroutine (the transport's streams, the admin server, the event loop) waited until sysmon
// took the P back, 10-20 ms under load: the request/response stream of the interconnect
// benchmark stalled that long at every cut (seen with TestInterconnectTraceCut). GOMAXPROCS in
// the environment wins.
func senderP(interval time.Duration) {
	if interval > heartbeat.RawSleepMax || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
}
