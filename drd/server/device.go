package server

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/uring"
	"vigil/drd/wire"
)

// Device is one DRD device: a backing file or block device opened for direct I/O.
type Device struct {
	Name  string
	Path  string
	Size  uint64 // bytes, a multiple of the block size
	Align uring.Alignment
	f     *os.File
}

// LockWait is how long OpenDevice waits for the backing's lock (see OpenDeviceWait).
const LockWait = 10 * time.Second

// OpenDevice is OpenDeviceWait with LockWait.
func OpenDevice(name, path string) (*Device, error) { return OpenDeviceWait(name, path, LockWait) }

// OpenDeviceWait opens the backing of a device read-write with O_DIRECT. Its size is rounded
// down to whole 4096-byte blocks; its direct I/O alignment must divide 4096, since every DRD
// request is made of whole blocks.
//
// It takes an exclusive lock (flock) on the backing, waiting up to wait for it. The lock
// belongs to the open file, which every io_uring of the server holds as a registered file: it
// is released only when the last ring is torn down, after its requests in flight finished. A
// server killed with SIGKILL has its rings torn down asynchronously, after the process is gone;
// without the lock a restarted server on the same node could serve (and acknowledge newer
// writes) while a write of the killed one is still on its way to the disk, and have it land
// on top. The lock also keeps two servers on one node from serving one backing.
func OpenDeviceWait(name, path string, wait time.Duration) (*Device, error) {
	if name == "" || len(name) > wire.MaxName {
		return nil, fmt.Errorf("device %q: name must be 1 to %d bytes", name, wire.MaxName)
	}
	f, align, err := uring.OpenDirect(path, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", name, err)
	}
	if err := lockBacking(f, wait); err != nil {
		return nil, errors.Join(fmt.Errorf("device %s: %w", name, err), f.Close())
	}
	d := &Device{Name: name, Path: path, Align: align, f: f}
	if align.Offset == 0 || wire.BlockSize%align.Offset != 0 || align.Memory == 0 || 4096%align.Memory != 0 {
		return nil, errors.Join(fmt.Errorf("device %s: direct i/o alignment %d/%d (%s) does not divide the %d-byte block",
			name, align.Memory, align.Offset, align.Source, wire.BlockSize), f.Close())
	}
	size, err := backingSize(f)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("device %s: %w", name, err), f.Close())
	}
	d.Size = size / wire.BlockSize * wire.BlockSize
	if d.Size == 0 {
		return nil, errors.Join(fmt.Errorf("device %s: backing %s is smaller than one block", name, path), f.Close())
	}
	return d, nil
}

// lockBacking takes an exclusive flock on f, retrying until wait has passed.
func lockBacking(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err != unix.EWOULDBLOCK:
			return fmt.Errorf("lock backing %s: %w", f.Name(), err)
		case time.Now().After(deadline):
			return fmt.Errorf("backing %s is locked by another server on this node (or the rings of a killed one are still finishing its requests) after %v", f.Name(), wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func backingSize(f *os.File) (uint64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return uint64(st.Size()), nil
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var size uint64
	var ierr error
	if err := sc.Control(func(fd uintptr) {
		var v uint64
		ierr = ioctlU64(int(fd), unix.BLKGETSIZE64, &v)
		size = v
	}); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, fmt.Errorf("ioctl BLKGETSIZE64 on %s: %w", f.Name(), ierr)
	}
	return size, nil
}

// Fd is the backing's file descriptor.
func (d *Device) Fd() int { return int(d.f.Fd()) }

// Close closes the backing.
func (d *Device) Close() error { return d.f.Close() }
