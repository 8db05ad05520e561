package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a message stream: the part of the cluster transport's Conn (vigil/control/transport)
// that DRD uses, so a transport stream serves as is and a plain socket serves through
// FrameConn.
type Conn interface {
	Send(ctx context.Context, msg []byte) error
	Recv(ctx context.Context) ([]byte, error)
	Close() error
}

// MaxFrame is the largest message FrameConn accepts.
const MaxFrame = RequestHeader + MaxIO

// FrameConn carries messages on a byte stream (unix or TCP socket, net.Pipe), each preceded by
// its length as a little-endian u32. It is the interim transport of the standalone server and
// of tests; inside the cluster, DRD runs on the cluster transport. Send may be called from
// several goroutines; Recv from one at a time. The context only bounds a call that is waiting
// to start; a stuck peer is cut off by Close.
type FrameConn struct {
	c    net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	w    *bufio.Writer
	hdr  [4]byte
	rhdr [4]byte
}

// NewFrameConn wraps c.
func NewFrameConn(c net.Conn) *FrameConn {
	var r io.Reader = c
	var w io.Writer = c
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r, w = rawReader{rc}, rawWriter{rc}
		}
	}
	return &FrameConn{c: c, r: bufio.NewReaderSize(r, 256<<10), w: bufio.NewWriterSize(w, 256<<10)}
}

// rawReader and rawWriter do a socket's reads and writes as raw system calls, waiting in Go's
// network poller like net.Conn when the socket has nothing to give or no room: the socket is
// non-blocking, so neither call blocks. A plain net.Conn read or write goes through the
// runtime's syscall entry, which wakes the runtime's monitor thread when the process was idle:
// at queue depth 1, where the process is idle between every request and its reply, that is one
// more wake-up of another CPU per request.
type rawReader struct{ rc syscall.RawConn }

func (r rawReader) Read(p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			r0, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
			if e == syscall.EINTR {
				continue
			}
			n, errno = int(r0), e
			return e != syscall.EAGAIN
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

type rawWriter struct{ rc syscall.RawConn }

func (w rawWriter) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := w.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			rest := p[done:]
			r0, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)))
			switch e {
			case 0:
				done += int(r0)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = errno
	}
	return done, err
}

// Send writes one message.
func (f *FrameConn) Send(ctx context.Context, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(msg) > MaxFrame {
		return fmt.Errorf("send: message of %d bytes (at most %d)", len(msg), MaxFrame)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	binary.LittleEndian.PutUint32(f.hdr[:], uint32(len(msg)))
	f.w.Write(f.hdr[:])
	f.w.Write(msg)
	if err := f.w.Flush(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// Recv reads one message into a new slice.
func (f *FrameConn) Recv(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(f.r, f.rhdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("truncated frame header: %w", err)
		}
		return nil, fmt.Errorf("recv: %w", err)
	}
	n := binary.LittleEndian.Uint32(f.rhdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("recv: frame of %d bytes (at most %d)", n, MaxFrame)
	}
	m := make([]byte, n)
	if _, err := io.ReadFull(f.r, m); err != nil {
		return nil, fmt.Errorf("recv: frame of %d bytes: %w", n, err)
	}
	return m, nil
}

// Detach returns the connection under f and the bytes f has read from it but not returned yet,
// for a caller that takes over reading the stream (frames continue in the same format). f must
// not be read from afterwards; Send and Close still work.
func (f *FrameConn) Detach() (net.Conn, []byte) {
	b, _ := f.r.Peek(f.r.Buffered())
	return f.c, b
}

// Close closes the socket.
func (f *FrameConn) Close() error { return f.c.Close() }
