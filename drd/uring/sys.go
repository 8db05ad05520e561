package uring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's ABI, written from include/uapi/linux/io_uring.h. Only what this package uses is
// here; the layouts are checked by TestABILayout.

// io_uring_setup flags (io_uring_params.flags).
const (
	setupIOPoll       = 1 << 0  // IORING_SETUP_IOPOLL
	setupSQPoll       = 1 << 1  // IORING_SETUP_SQPOLL
	setupSQAff        = 1 << 2  // IORING_SETUP_SQ_AFF
	setupCQSize       = 1 << 3  // IORING_SETUP_CQSIZE
	setupClamp        = 1 << 4  // IORING_SETUP_CLAMP
	setupSubmitAll    = 1 << 7  // IORING_SETUP_SUBMIT_ALL (5.18)
	setupCoopTaskrun  = 1 << 8  // IORING_SETUP_COOP_TASKRUN (5.19)
	setupTaskrunFlag  = 1 << 9  // IORING_SETUP_TASKRUN_FLAG (5.19)
	setupSingleIssuer = 1 << 12 // IORING_SETUP_SINGLE_ISSUER (6.0)
	setupDeferTaskrun = 1 << 13 // IORING_SETUP_DEFER_TASKRUN (6.1)
)

// io_uring_params.features.
const (
	FeatSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP: SQ and CQ rings share one mapping
	FeatNoDrop     = 1 << 1 // IORING_FEAT_NODROP: CQ overflow is kept in the kernel, not dropped
	FeatExtArg     = 1 << 8 // IORING_FEAT_EXT_ARG: io_uring_enter takes a timeout
)

// mmap offsets.
const (
	offSQRing = 0          // IORING_OFF_SQ_RING
	offCQRing = 0x8000000  // IORING_OFF_CQ_RING
	offSQEs   = 0x10000000 // IORING_OFF_SQES
)

// sq_ring->flags.
const (
	sqNeedWakeup = 1 << 0 // IORING_SQ_NEED_WAKEUP
	sqCQOverflow = 1 << 1 // IORING_SQ_CQ_OVERFLOW
	sqTaskrun    = 1 << 2 // IORING_SQ_TASKRUN
)

// io_uring_enter flags.
const (
	enterGetEvents = 1 << 0 // IORING_ENTER_GETEVENTS
	enterSQWakeup  = 1 << 1 // IORING_ENTER_SQ_WAKEUP
	enterSQWait    = 1 << 2 // IORING_ENTER_SQ_WAIT
	enterExtArg    = 1 << 3 // IORING_ENTER_EXT_ARG
)

// io_uring_register opcodes.
const (
	registerBuffers   = 0 // IORING_REGISTER_BUFFERS
	unregisterBuffers = 1 // IORING_UNREGISTER_BUFFERS
	registerFiles     = 2 // IORING_REGISTER_FILES
	unregisterFiles   = 3 // IORING_UNREGISTER_FILES
)

// Opcodes (enum io_uring_op) used by the prep helpers.
const (
	opNop         = 0  // IORING_OP_NOP
	opFsync       = 3  // IORING_OP_FSYNC
	opReadFixed   = 4  // IORING_OP_READ_FIXED
	opWriteFixed  = 5  // IORING_OP_WRITE_FIXED
	opPollAdd     = 6  // IORING_OP_POLL_ADD
	opAsyncCancel = 14 // IORING_OP_ASYNC_CANCEL
	opFallocate   = 17 // IORING_OP_FALLOCATE
	opRead        = 22 // IORING_OP_READ
	opWrite       = 23 // IORING_OP_WRITE
)

// SQE flags (SQE.Flags).
const (
	SQEFixedFile = 1 << 0 // IOSQE_FIXED_FILE: SQE.Fd is an index into the registered files
	SQEIODrain   = 1 << 1 // IOSQE_IO_DRAIN: start only after everything submitted before it
	SQEIOLink    = 1 << 2 // IOSQE_IO_LINK: the next SQE starts when this one has succeeded
)

// FsyncDatasync makes an FSYNC request an fdatasync (IORING_FSYNC_DATASYNC).
const FsyncDatasync = 1 << 0

// ASYNC_CANCEL flags.
const (
	cancelAll = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	cancelAny = 1 << 2 // IORING_ASYNC_CANCEL_ANY
)

// DiscardMode is the fallocate mode that frees a range of a file without changing its size:
// reads of the range return zeros afterwards.
const DiscardMode = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE

// sqringOffsets is struct io_sqring_offsets.
type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqringOffsets is struct io_cqring_offsets.
type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// params is struct io_uring_params.
type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32 // milliseconds
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqringOffsets
	cqOff        cqringOffsets
}

// getEventsArg is struct io_uring_getevents_arg, passed with IORING_ENTER_EXT_ARG.
type getEventsArg struct {
	sigmask     uint64
	sigmaskSz   uint32
	minWaitUsec uint32
	ts          uint64 // pointer to a struct __kernel_timespec
}

// SQE is a submission queue entry, struct io_uring_sqe (64 bytes). The prep methods fill it; the
// fields are exported for requests the helpers do not cover.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // file offset; addr2 for some opcodes
	Addr        uint64 // buffer address; length for FALLOCATE; target user data for ASYNC_CANCEL
	Len         uint32 // buffer length; mode for FALLOCATE
	OpFlags     uint32 // rw_flags, fsync_flags, cancel_flags, ...
	UserData    uint64 // returned unchanged in the completion
	BufIndex    uint16 // registered buffer index for READ_FIXED and WRITE_FIXED
	Personality uint16
	FileIndex   uint32
	Addr3       uint64
	_           uint64
}

// CQE is a completion queue entry, struct io_uring_cqe (16 bytes): the user data of the request,
// its result (a byte count, or a negated errno) and flags.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Err returns the error the request failed with, or nil when Res is not negative.
func (c CQE) Err() error {
	if c.Res < 0 {
		return unix.Errno(-c.Res)
	}
	return nil
}

// Raw system calls. They return the kernel's errno unchanged (no allocation, no retry): the
// callers decide what EINTR, EAGAIN and EBUSY mean where they are.

func sysSetup(entries uint32, p *params) (int, unix.Errno) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	return int(fd), errno
}

func sysEnter(fd int, toSubmit, minComplete, flags uint32, arg unsafe.Pointer, argSize uintptr) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags), uintptr(arg), argSize)
	return int(n), errno
}

func sysRegister(fd int, opcode uint32, arg unsafe.Pointer, nrArgs uint32) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(opcode),
		uintptr(arg), uintptr(nrArgs), 0, 0)
	return int(n), errno
}
