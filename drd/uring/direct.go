package uring

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Alignment is what O_DIRECT demands of a file: buffer addresses aligned to Memory bytes, file
// offsets and lengths multiples of Offset bytes (the logical block size).
type Alignment struct {
	Memory uint32
	Offset uint32
	// Source says where the numbers came from ("BLKSSZGET", "statx STATX_DIOALIGN", or an
	// assumption and why).
	Source string
}

// ErrMisaligned is wrapped by the errors of CheckAligned.
var ErrMisaligned = errors.New("misaligned direct i/o")

// AlignmentError describes one O_DIRECT alignment rule broken by a request. It matches
// ErrMisaligned with errors.Is.
type AlignmentError struct {
	What  string // "offset", "length" or "buffer address"
	Value int64
	Align uint32
}

func (e *AlignmentError) Error() string {
	switch e.What {
	case "buffer address":
		return fmt.Sprintf("buffer address %#x is not aligned to %d bytes", e.Value, e.Align)
	default:
		if e.Value < 0 {
			return fmt.Sprintf("%s %d is negative", e.What, e.Value)
		}
		return fmt.Sprintf("%s %d is not a multiple of the %d-byte block size", e.What, e.Value, e.Align)
	}
}

// Is makes errors.Is(err, ErrMisaligned) true.
func (e *AlignmentError) Is(target error) bool { return target == ErrMisaligned }

// CheckAligned checks a read or write of buf at offset off against align. It returns an
// *AlignmentError for the first rule broken (offset, then length, then buffer address), or nil.
// A zero field of align is not checked.
func CheckAligned(buf []byte, off int64, align Alignment) error {
	if off < 0 {
		return &AlignmentError{What: "offset", Value: off, Align: align.Offset}
	}
	if a := int64(align.Offset); a > 1 {
		if off%a != 0 {
			return &AlignmentError{What: "offset", Value: off, Align: align.Offset}
		}
		if int64(len(buf))%a != 0 {
			return &AlignmentError{What: "length", Value: int64(len(buf)), Align: align.Offset}
		}
	}
	if a := uintptr(align.Memory); a > 1 && len(buf) > 0 {
		if p := uintptr(unsafe.Pointer(unsafe.SliceData(buf))); p%a != 0 {
			return &AlignmentError{What: "buffer address", Value: int64(p), Align: align.Memory}
		}
	}
	return nil
}

// OpenDirect opens path with O_DIRECT (and O_CLOEXEC) added to flags (O_RDONLY, O_RDWR, O_CREAT,
// ...; a created file gets mode 0600) and reports the alignment direct I/O on it needs:
//   - block devices: the logical block size from BLKSSZGET for offsets and lengths, and the
//     memory alignment from statx STATX_DIOALIGN when the kernel reports it (else the block size);
//   - regular files: statx STATX_DIOALIGN (dio_mem_align, dio_offset_align; Linux 6.1);
//   - otherwise 4096 for both, which satisfies every device with 512- or 4096-byte sectors, and
//     Source says it is an assumption.
//
// A file system without O_DIRECT support fails the open with EINVAL.
func OpenDirect(path string, flags int) (*os.File, Alignment, error) {
	f, err := os.OpenFile(path, flags|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			err = fmt.Errorf("%w (the file system does not support O_DIRECT)", err)
		}
		return nil, Alignment{}, fmt.Errorf("open direct: %w", err)
	}
	a, err := DirectAlignment(f)
	if err != nil {
		return nil, Alignment{}, errors.Join(err, f.Close())
	}
	return f, a, nil
}

// DirectAlignment reports the O_DIRECT alignment of an open file, as OpenDirect does.
func DirectAlignment(f *os.File) (Alignment, error) {
	var st unix.Statx_t
	sc, err := f.SyscallConn()
	if err != nil {
		return Alignment{}, fmt.Errorf("direct alignment of %s: %w", f.Name(), err)
	}
	var statErr error
	var blkSize int
	var blkErr error
	if err := sc.Control(func(fd uintptr) {
		statErr = unix.Statx(int(fd), "", unix.AT_EMPTY_PATH, unix.STATX_TYPE|unix.STATX_DIOALIGN, &st)
		if statErr == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			blkSize, blkErr = unix.IoctlGetInt(int(fd), unix.BLKSSZGET)
		}
	}); err != nil {
		return Alignment{}, fmt.Errorf("direct alignment of %s: %w", f.Name(), err)
	}
	if statErr != nil {
		return Alignment{}, fmt.Errorf("direct alignment of %s: statx: %w", f.Name(), statErr)
	}
	dio := st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_offset_align != 0
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if blkErr != nil {
			return Alignment{}, fmt.Errorf("direct alignment of %s: ioctl BLKSSZGET: %w", f.Name(), blkErr)
		}
		a := Alignment{Memory: uint32(blkSize), Offset: uint32(blkSize), Source: "BLKSSZGET"}
		if dio && st.Dio_mem_align != 0 {
			a.Memory = st.Dio_mem_align
			a.Source = "BLKSSZGET, memory from statx STATX_DIOALIGN"
		}
		return a, nil
	}
	if dio {
		return Alignment{Memory: st.Dio_mem_align, Offset: st.Dio_offset_align, Source: "statx STATX_DIOALIGN"}, nil
	}
	if st.Mask&unix.STATX_DIOALIGN != 0 {
		// The kernel says direct I/O is not supported on this file; O_DIRECT was accepted at
		// open, so the file system falls back to buffered I/O or fails each request.
		return Alignment{Memory: 4096, Offset: 4096,
			Source: "assumed 4096: statx reports no direct I/O support for this file"}, nil
	}
	return Alignment{Memory: 4096, Offset: 4096,
		Source: "assumed 4096: the kernel or file system does not report STATX_DIOALIGN"}, nil
}
