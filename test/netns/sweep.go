package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sweep removes what killed harness runs left behind: every namespace under /run/netns whose name
// starts with [Prefix] and whose owning process (the PID in its name) is gone, after killing the
// processes still inside it, and the shared directories of such runs. Namespaces of live
// processes, including this one, are left alone, and nothing without the prefix is touched.
func Sweep() error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, e := range entries {
		owner, ok := ownerPID(e.Name())
		if !ok || processAlive(owner) {
			continue
		}
		if err := killInside(filepath.Join(netnsDir, e.Name())); err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamespace(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*-shared-*"))
	for _, d := range dirs {
		if owner, ok := ownerPID(filepath.Base(d)); ok && !processAlive(owner) {
			_ = unix.Unmount(filepath.Join(d, "bpffs"), unix.MNT_DETACH)
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ownerPID parses "vgl-<pid>-..." names.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, Prefix)
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

// killInside SIGKILLs every process whose network namespace is the one at path: processes a dead
// harness run started there.
func killInside(path string) error {
	ino, err := netnsInode(path)
	if err != nil {
		return nil // already gone
	}
	procs, _ := os.ReadDir("/proc")
	var killed []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if pi, err := netnsInode(filepath.Join("/proc", p.Name(), "ns", "net")); err == nil && pi == ino {
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				killed = append(killed, pid)
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range killed {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}
