package uring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain fails the run if the tests leave file descriptors, io_uring mappings or goroutines
// behind.
func TestMain(m *testing.M) {
	time.Sleep(time.Millisecond) // the first timer starts the runtime's poller (two descriptors)
	before := snapshot()
	code := m.Run()
	if code == 0 {
		var after resources
		for range 50 { // let finalizers and exiting goroutines settle
			runtime.GC()
			after = snapshot()
			if after == before {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if after != before {
			fmt.Fprintf(os.Stderr, "leak check: before %+v, after %+v\n", before, after)
			code = 1
		}
	}
	os.Exit(code)
}

type resources struct {
	fds, uringFds, uringMaps, goroutines int
}

func snapshot() resources {
	var r resources
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		r.fds++
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.Contains(l, "io_uring") {
			r.uringFds++
		}
	}
	r.fds-- // the directory read itself
	maps, _ := os.ReadFile("/proc/self/maps")
	r.uringMaps = bytes.Count(maps, []byte("io_uring"))
	r.goroutines = runtime.NumGoroutine()
	return r
}

func kernelVersion() (major, minor int) {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return 0, 0
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0
	}
	major, _ = strconv.Atoi(parts[0])
	minor, _ = strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor
}

func kernelAtLeast(major, minor int) bool {
	ma, mi := kernelVersion()
	return ma > major || ma == major && mi >= minor
}

// requireURing skips the test when io_uring is unavailable, but fails it when the kernel is
// 6.1 or newer and says ENOSYS: such a kernel has io_uring unless it was built without it, and
// a skip must not hide that.
func requireURing(tb testing.TB) {
	tb.Helper()
	r, err := New(4)
	if err == nil {
		if err := r.Close(); err != nil {
			tb.Fatal(err)
		}
		return
	}
	if errors.Is(err, unix.ENOSYS) && kernelAtLeast(6, 1) {
		ma, mi := kernelVersion()
		tb.Fatalf("io_uring_setup returned ENOSYS on Linux %d.%d (>= 6.1): %v", ma, mi, err)
	}
	tb.Skipf("io_uring unavailable: %v", err)
}

var (
	directBaseOnce sync.Once
	directBase     string
	directBaseWhy  string
)

// findDirectBase returns a directory whose file system accepts O_DIRECT: the temporary
// directory, else /var/tmp or /dev/shm.
func findDirectBase() (string, string) {
	directBaseOnce.Do(func() {
		var why []string
		for _, base := range []string{os.TempDir(), "/var/tmp", "/dev/shm"} {
			dir, err := os.MkdirTemp(base, "uring-probe-")
			if err != nil {
				why = append(why, err.Error())
				continue
			}
			err = probeDirect(filepath.Join(dir, "probe"))
			_ = os.RemoveAll(dir)
			if err == nil {
				directBase = base
				return
			}
			why = append(why, fmt.Sprintf("%s: %v", base, err))
		}
		directBaseWhy = strings.Join(why, "; ")
	})
	return directBase, directBaseWhy
}

func probeDirect(path string) error {
	f, a, err := OpenDirect(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, err := AllocAligned(int(max(a.Offset, 4096)), int(max(a.Memory, 4096)))
	if err != nil {
		return err
	}
	defer FreeAligned(buf)
	_, err = unix.Pwrite(int(f.Fd()), buf, 0)
	return err
}

// directFile creates a file of size bytes, each block filled by fillBlock(block, 0), opened
// with O_DIRECT in a directory that supports it and removed when the test ends.
func directFile(tb testing.TB, size int64) (*os.File, Alignment) {
	tb.Helper()
	base, why := findDirectBase()
	if base == "" {
		tb.Skipf("no directory supports O_DIRECT: %s", why)
	}
	dir, err := os.MkdirTemp(base, "uring-test-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "data")
	if size > 0 {
		w, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		chunk := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(chunk)) {
			n := min(int64(len(chunk)), size-off)
			for b := int64(0); b < n; b += 4096 {
				fillBlock(chunk[b:b+4096], uint64((off+b)/4096), 0)
			}
			if _, err := w.Write(chunk[:n]); err != nil {
				tb.Fatal(err)
			}
		}
		if err := errors.Join(w.Sync(), w.Close()); err != nil {
			tb.Fatal(err)
		}
	}
	f, a, err := OpenDirect(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f, a
}

// fillBlock writes a self-describing pattern: block number and generation in every 16 bytes.
func fillBlock(b []byte, block, gen uint64) {
	for i := 0; i+16 <= len(b); i += 16 {
		for j := range 8 {
			b[i+j] = byte(block >> (8 * j))
			b[i+8+j] = byte(gen >> (8 * j))
		}
	}
}

func checkBlock(tb testing.TB, b []byte, block, gen uint64) {
	tb.Helper()
	want := make([]byte, len(b))
	fillBlock(want, block, gen)
	if !bytes.Equal(b, want) {
		tb.Fatalf("block %d: data is not generation %d (first bytes % x)", block, gen, b[:32])
	}
}

// alloc returns page-aligned memory freed when the test ends.
func alloc(tb testing.TB, size int) []byte {
	tb.Helper()
	b, err := AllocAligned(size, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := FreeAligned(b); err != nil {
			tb.Error(err)
		}
	})
	return b
}

// signalStorm sends SIGURG to thread tid every interval until stop is called.
func signalStorm(tb testing.TB, tid int, interval time.Duration) (stop func() int) {
	done := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				sent <- n
				return
			case <-t.C:
				if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err == nil {
					n++
				}
			}
		}
	}()
	var once sync.Once
	n := 0
	stop = func() int {
		once.Do(func() { close(done); n = <-sent })
		return n
	}
	tb.Cleanup(func() { stop() })
	return stop
}
