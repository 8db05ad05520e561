package heartbeat

import (
	"testing"

	"golang.org/x/sys/unix"
)

// MonotonicNow must agree with the kernel's CLOCK_MONOTONIC, which bpf_ktime_get_ns reads.
func TestMonotonicNowMatchesKernelClock(t *testing.T) {
	for range 100 {
		var ts unix.Timespec
		before := MonotonicNow()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		after := MonotonicNow()
		k := uint64(ts.Nano())
		// Allow 50 µs of calibration error either side.
		if k+50_000 < before || k > after+50_000 {
			t.Fatalf("CLOCK_MONOTONIC %d outside [%d, %d] ± 50µs", k, before, after)
		}
	}
}
