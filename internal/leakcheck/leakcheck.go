// Package leakcheck fails a test binary whose tests leave file descriptors or goroutines behind,
// for the packages that own kernel objects (rings, memfds, eventfds, sockets, files).
package leakcheck

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// Main runs the tests of a package and fails the run if they leave file descriptors or
// goroutines behind: call it from the package's TestMain. Fuzzing runs are not checked (the
// fuzzing engine keeps goroutines of its own in its workers).
func Main(m *testing.M) {
	time.Sleep(time.Millisecond) // the first timer starts the runtime's poller (two descriptors)
	fds0, g0 := openFDs(), runtime.NumGoroutine()
	code := m.Run()
	// The fuzzing engine keeps goroutines of its own (signal handling) in its workers.
	if f := flag.Lookup("test.fuzz"); code == 0 && (f == nil || f.Value.String() == "") {
		var fds, g int
		for range 100 { // let closing sessions and finalizers settle
			runtime.GC()
			if fds, g = openFDs(), runtime.NumGoroutine(); fds <= fds0 && g <= g0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if fds > fds0 || g > g0 {
			fmt.Fprintf(os.Stderr, "leak check: %d descriptors and %d goroutines before, %d and %d after\n", fds0, g0, fds, g)
			buf := make([]byte, 1<<20)
			os.Stderr.Write(buf[:runtime.Stack(buf, true)])
			ents, _ := os.ReadDir("/proc/self/fd")
			for _, e := range ents {
				l, _ := os.Readlink("/proc/self/fd/" + e.Name())
				fmt.Fprintln(os.Stderr, e.Name(), l)
			}
			code = 1
		}
	}
	os.Exit(code)
}

func openFDs() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents) - 1
}
