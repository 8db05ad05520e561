// Package attention keeps an epoll set of descriptors whose input must not wait: a thread
// that holds a Go scheduler P without ever giving it back to the scheduler (vigild's
// heartbeat sender, which sleeps with raw system calls) asks Pending at every wake-up, and if
// input waits it parks for a while, so that the runtime's network poller is looked at and the
// goroutine reading that input runs. Without it, on a machine with two CPUs (two Ps), input
// waits for as long as the other P's thread is in a system call plus sysmon's sleep, up to
// 10 ms (see heartbeat.Sender.Run).
//
// The set is level-triggered and only looked at, never read from: the descriptors' owners
// read them as before. A descriptor leaves the set by itself when its owner closes it.
package attention

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Set is an epoll set; the zero value is not usable (New).
type Set struct {
	epfd int
}

// New makes an empty set.
func New() (*Set, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("attention set: epoll_create1: %w", err)
	}
	return &Set{epfd: fd}, nil
}

// Add watches fd for input. The caller keeps fd open as long as it wants it watched;
// closing it removes it from the set.
func (s *Set) Add(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("attention set: watch descriptor %d: %w", fd, err)
	}
	return nil
}

// Pending reports whether input waits on a descriptor of the set. It does not block and does
// not tell the Go scheduler (a raw epoll_pwait with no timeout): safe on a thread that keeps
// its P.
func (s *Set) Pending() bool {
	var ev [1]unix.EpollEvent
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(s.epfd), uintptr(unsafe.Pointer(&ev[0])), 1, 0, 0, 0)
	return e == 0 && n > 0
}

// Close releases the set.
func (s *Set) Close() error { return unix.Close(s.epfd) }
