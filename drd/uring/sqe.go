package uring

import "unsafe"

// The Prep methods fill a zeroed SQE from GetSQE. The kernel reads the buffer address from the
// SQE only as a number: the caller keeps buf referenced, unmoved and untouched until the
// request's completion has been reaped (see the package documentation).

func bufAddr(buf []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf)))) }

func (s *SQE) prepRW(op uint8, fd int32, buf []byte, off int64, userData uint64) {
	s.Opcode = op
	s.Fd = fd
	s.Off = uint64(off)
	s.Addr = bufAddr(buf)
	s.Len = uint32(len(buf))
	s.UserData = userData
}

// PrepNop prepares a request that does nothing and completes with result 0.
func (s *SQE) PrepNop(userData uint64) {
	s.Opcode = opNop
	s.Fd = -1
	s.UserData = userData
}

// PrepRead prepares a read of len(buf) bytes at offset off (IORING_OP_READ). The result is the
// number of bytes read.
func (s *SQE) PrepRead(fd int32, buf []byte, off int64, userData uint64) {
	s.prepRW(opRead, fd, buf, off, userData)
}

// PrepWrite prepares a write of buf at offset off (IORING_OP_WRITE).
func (s *SQE) PrepWrite(fd int32, buf []byte, off int64, userData uint64) {
	s.prepRW(opWrite, fd, buf, off, userData)
}

// PrepReadFixed prepares a read into buf, which lies inside the registered buffer bufIndex
// (IORING_OP_READ_FIXED): the kernel skips mapping and pinning the pages.
func (s *SQE) PrepReadFixed(fd int32, buf []byte, off int64, bufIndex uint16, userData uint64) {
	s.prepRW(opReadFixed, fd, buf, off, userData)
	s.BufIndex = bufIndex
}

// PrepWriteFixed prepares a write from buf, inside the registered buffer bufIndex
// (IORING_OP_WRITE_FIXED).
func (s *SQE) PrepWriteFixed(fd int32, buf []byte, off int64, bufIndex uint16, userData uint64) {
	s.prepRW(opWriteFixed, fd, buf, off, userData)
	s.BufIndex = bufIndex
}

// PrepFsync prepares an fsync of the whole file (IORING_OP_FSYNC); with flags FsyncDatasync it
// is an fdatasync.
func (s *SQE) PrepFsync(fd int32, flags uint32, userData uint64) {
	s.Opcode = opFsync
	s.Fd = fd
	s.OpFlags = flags
	s.UserData = userData
}

// PrepFallocate prepares fallocate(fd, mode, off, length) (IORING_OP_FALLOCATE). The kernel
// takes the length from Addr and the mode from Len.
func (s *SQE) PrepFallocate(fd int32, mode uint32, off, length int64, userData uint64) {
	s.Opcode = opFallocate
	s.Fd = fd
	s.Off = uint64(off)
	s.Addr = uint64(length)
	s.Len = mode
	s.UserData = userData
}

// PrepDiscard prepares the release of a range of a file (fallocate with DiscardMode): the file
// keeps its size and the range reads back as zeros.
func (s *SQE) PrepDiscard(fd int32, off, length int64, userData uint64) {
	s.PrepFallocate(fd, DiscardMode, off, length, userData)
}

// PrepPollAdd prepares a one-shot wait until fd reports one of the poll events in mask
// (IORING_OP_POLL_ADD; POLLIN, POLLOUT, ...). The result is the events that happened; it
// completes at once when one of them holds already.
func (s *SQE) PrepPollAdd(fd int32, mask uint32, userData uint64) {
	s.Opcode = opPollAdd
	s.Fd = fd
	s.OpFlags = mask // poll32_events, little endian
	s.UserData = userData
}

// PrepCancel prepares the cancellation of the request with user data target
// (IORING_OP_ASYNC_CANCEL). Its own result is 0, or -ENOENT, or -EALREADY when the request is
// already running and cannot be stopped.
func (s *SQE) PrepCancel(target, userData uint64) {
	s.Opcode = opAsyncCancel
	s.Fd = -1
	s.Addr = target
	s.UserData = userData
}

// PrepCancelAll prepares the cancellation of every request in flight
// (IORING_ASYNC_CANCEL_ANY|IORING_ASYNC_CANCEL_ALL, Linux 5.19). Its result is the number of
// requests cancelled.
func (s *SQE) PrepCancelAll(userData uint64) {
	s.Opcode = opAsyncCancel
	s.Fd = -1
	s.OpFlags = cancelAny | cancelAll
	s.UserData = userData
}

// SetFixedFile marks the SQE's Fd as an index into the registered files (IOSQE_FIXED_FILE).
func (s *SQE) SetFixedFile() { s.Flags |= SQEFixedFile }
