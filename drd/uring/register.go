package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// register calls io_uring_register, retrying on EINTR.
func (r *Ring) register(op uint32, arg unsafe.Pointer, n uint32) error {
	for {
		_, errno := sysRegister(r.fd, op, arg, n)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			r.stats.EINTR++
		default:
			return errno
		}
	}
}

// RegisterBuffers registers bufs as fixed buffers (IORING_REGISTER_BUFFERS): the kernel pins
// their pages once, and READ_FIXED and WRITE_FIXED requests name them by index. The Ring keeps
// bufs referenced until UnregisterBuffers or Close, so the garbage collector does not free
// them. The memory must not move while registered: the current Go collector never moves heap
// objects, but memory from AllocAligned (anonymous mmap, outside the Go heap, page-aligned for
// O_DIRECT) is the safest choice. Registered memory counts against RLIMIT_MEMLOCK unless the
// process has CAP_IPC_LOCK.
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	if r.closed {
		return ErrClosed
	}
	if r.bufs != nil {
		return errors.New("io_uring register buffers: buffers already registered (unregister them first)")
	}
	if len(bufs) == 0 || len(bufs) > 1<<14 {
		return fmt.Errorf("io_uring register buffers: %d buffers (want 1 to 16384)", len(bufs))
	}
	iovs := make([]unix.Iovec, len(bufs))
	total := 0
	for i, b := range bufs {
		if len(b) == 0 {
			return fmt.Errorf("io_uring register buffers: buffer %d is empty", i)
		}
		iovs[i].Base = &b[0]
		iovs[i].SetLen(len(b))
		total += len(b)
	}
	err := r.register(registerBuffers, unsafe.Pointer(&iovs[0]), uint32(len(iovs)))
	runtime.KeepAlive(iovs)
	if err != nil {
		if errors.Is(err, unix.ENOMEM) {
			return fmt.Errorf("io_uring register %d buffers (%d bytes): %w (RLIMIT_MEMLOCK too low?)", len(bufs), total, err)
		}
		return fmt.Errorf("io_uring register %d buffers (%d bytes): %w", len(bufs), total, err)
	}
	r.bufs = append([][]byte(nil), bufs...)
	return nil
}

// Buffers returns the registered buffers (nil if none).
func (r *Ring) Buffers() [][]byte { return r.bufs }

// UnregisterBuffers drops the registered buffers. It refuses while requests are in flight,
// since fixed requests among them may still be using the memory.
func (r *Ring) UnregisterBuffers() error {
	if r.closed {
		return ErrClosed
	}
	if r.bufs == nil {
		return errors.New("io_uring unregister buffers: no buffers registered")
	}
	if r.inflight > 0 {
		return fmt.Errorf("io_uring unregister buffers: %d requests in flight", r.inflight)
	}
	if err := r.register(unregisterBuffers, nil, 0); err != nil {
		return fmt.Errorf("io_uring unregister buffers: %w", err)
	}
	r.bufs = nil
	return nil
}

// RegisterFiles registers file descriptors (IORING_REGISTER_FILES); an SQE marked with
// SetFixedFile then names a file by its index in fds, which saves a file lookup and reference
// per request. -1 leaves a slot empty. The kernel holds its own reference on each file.
func (r *Ring) RegisterFiles(fds []int) error {
	if r.closed {
		return ErrClosed
	}
	if r.nfiles > 0 {
		return errors.New("io_uring register files: files already registered (unregister them first)")
	}
	if len(fds) == 0 {
		return errors.New("io_uring register files: no files")
	}
	arr := make([]int32, len(fds))
	for i, fd := range fds {
		arr[i] = int32(fd)
	}
	err := r.register(registerFiles, unsafe.Pointer(&arr[0]), uint32(len(arr)))
	runtime.KeepAlive(arr)
	if err != nil {
		return fmt.Errorf("io_uring register %d files: %w", len(fds), err)
	}
	r.nfiles = len(fds)
	return nil
}

// Files returns the number of registered files.
func (r *Ring) Files() int { return r.nfiles }

// UnregisterFiles drops the registered files.
func (r *Ring) UnregisterFiles() error {
	if r.closed {
		return ErrClosed
	}
	if r.nfiles == 0 {
		return errors.New("io_uring unregister files: no files registered")
	}
	if err := r.register(unregisterFiles, nil, 0); err != nil {
		return fmt.Errorf("io_uring unregister files: %w", err)
	}
	r.nfiles = 0
	return nil
}

// AllocAligned returns size bytes of zeroed anonymous memory, mapped outside the Go heap and
// aligned to align (a power of two; page alignment at least). Such memory never moves and is
// never freed by the garbage collector, which makes it the right home for O_DIRECT and
// registered buffers. Release it with FreeAligned.
func AllocAligned(size, align int) ([]byte, error) {
	page := os.Getpagesize()
	if size <= 0 {
		return nil, fmt.Errorf("alloc aligned: size %d is not positive", size)
	}
	if align <= 0 || align&(align-1) != 0 {
		return nil, fmt.Errorf("alloc aligned: alignment %d is not a power of two", align)
	}
	length := roundUp(size, page)
	extra := 0
	if align > page {
		extra = align - page
	}
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(length+extra), unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("alloc aligned: mmap %d bytes: %w", length+extra, err)
	}
	base := uintptr(p)
	start := (base + uintptr(align) - 1) &^ (uintptr(align) - 1)
	if head := start - base; head > 0 {
		_ = unix.MunmapPtr(p, head)
	}
	if tail := base + uintptr(length+extra) - (start + uintptr(length)); tail > 0 {
		_ = unix.MunmapPtr(unsafe.Add(p, start-base+uintptr(length)), tail)
	}
	return unsafe.Slice((*byte)(unsafe.Add(p, start-base)), length)[:size], nil
}

// FreeAligned unmaps memory from AllocAligned. The memory must not be in use by the kernel
// (registered, or part of a request in flight) and must not be touched afterwards.
func FreeAligned(buf []byte) error {
	if cap(buf) == 0 {
		return nil
	}
	buf = buf[:cap(buf)]
	if err := unix.MunmapPtr(unsafe.Pointer(&buf[0]), uintptr(roundUp(len(buf), os.Getpagesize()))); err != nil {
		return fmt.Errorf("free aligned: munmap: %w", err)
	}
	return nil
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }
