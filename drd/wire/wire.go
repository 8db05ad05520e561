// Package wire is the block shipping protocol of DRD: the messages a client and the serving
// node exchange over a stream (the cluster transport, or a framed unix or TCP socket), and the
// status codes every path (remote, shared memory, NBD) reports. It is pure data: encoding,
// decoding and validation, no I/O.
//
// # Messages
//
// A stream starts with Hello from the client (protocol version, device name) answered by
// Welcome (status, the server's epoch, the device size and block size). Then the client sends
// Requests and the server answers each with one Response carrying the request's tag, in
// completion order, not request order; many requests are in flight at once. All integers are
// little endian.
//
//	Hello:    magic "DRDH" | version u16 | name length u16 | name | [client u64]
//	Welcome:  magic "DRDW" | status u16 | reserved u16 | epoch u64 | size u64 | block u32 |
//	          max io u32 | message length u16 | message
//	Request:  op u8 | flags u8 | reserved u16 | length u32 | epoch u64 | tag u64 | offset u64 |
//	          data (writes only: length bytes)
//	Response: tag u64 | epoch u64 | status u16 | reserved u16 | length u32 | data (reads: length)
//
// # Epochs
//
// Every request carries the epoch the client learned from Welcome. A server that started with
// another epoch (it restarted, or the device moved to another node) refuses the request with
// StatusStaleEpoch and does nothing; the client reconnects, learns the new epoch and re-sends
// every request still in flight. Reads, writes, flushes and discards of whole blocks are
// idempotent, so a request re-sent after it did reach the disk is harmless, provided its first
// copy is finished before the re-sent one runs: otherwise the first copy of a write could land
// after a newer write to the same block that the client issued once the re-sent copy was
// acknowledged, and undo it. So Hello may carry a client id (random, non-zero, the same on every
// reconnection of one client): a server that gets a Hello from a client it still has a session
// with ends that session and waits until its requests in flight are finished before it answers.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the protocol version of Hello.
const Version = 1

// BlockSize is the block size of every DRD device: offsets and lengths are multiples of it.
const BlockSize = 4096

// MaxIO is the largest read or write in one request.
const MaxIO = 1 << 20

// Op is a request's operation.
type Op uint8

// The operations.
const (
	OpRead    Op = 1
	OpWrite   Op = 2
	OpFlush   Op = 3 // fdatasync the backing; offset and length are zero
	OpDiscard Op = 4 // free the blocks (punch a hole); reads return zeros afterwards
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpDiscard:
		return "discard"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Status is the outcome of a request or of Hello.
type Status uint16

// The statuses. StatusIO carries no errno; the server logs the errno.
const (
	StatusOK            Status = 0
	StatusStaleEpoch    Status = 1  // the request's epoch is not the server's: reconnect, re-send
	StatusMisaligned    Status = 2  // offset or length not a multiple of the block size
	StatusOutOfRange    Status = 3  // beyond the end of the device
	StatusBadOp         Status = 4  // unknown operation
	StatusTooLarge      Status = 5  // length above MaxIO (or the slot size on the local path)
	StatusNoDevice      Status = 6  // Hello named a device this server does not serve
	StatusNotSupported  Status = 7  // discard on a backing without hole punching
	StatusIO            Status = 8  // the backing failed the request
	StatusBadVersion    Status = 9  // Hello's version is not spoken here
	StatusShuttingDown  Status = 10 // the server is closing the session
	StatusBadSlot       Status = 11 // local path: slot index out of range
	StatusProtocolError Status = 12 // malformed message
)

var statusText = map[Status]string{
	StatusOK:            "ok",
	StatusStaleEpoch:    "stale epoch (the server restarted or moved; reconnect and re-send)",
	StatusMisaligned:    "offset or length is not a multiple of the 4096-byte block size",
	StatusOutOfRange:    "beyond the end of the device",
	StatusBadOp:         "unknown operation",
	StatusTooLarge:      "request too large",
	StatusNoDevice:      "no such device on this server",
	StatusNotSupported:  "not supported by the backing storage",
	StatusIO:            "i/o error on the backing storage",
	StatusBadVersion:    "protocol version not supported",
	StatusShuttingDown:  "server shutting down",
	StatusBadSlot:       "data slot out of range",
	StatusProtocolError: "malformed message",
}

func (s Status) String() string {
	if t, ok := statusText[s]; ok {
		return t
	}
	return fmt.Sprintf("status %d", uint16(s))
}

// Err returns nil for StatusOK and otherwise an *Error for s.
func (s Status) Err() error {
	if s == StatusOK {
		return nil
	}
	return &Error{Status: s}
}

// ErrStaleEpoch is matched (errors.Is) by an *Error with StatusStaleEpoch.
var ErrStaleEpoch = errors.New("drd: stale epoch")

// Error is a request refused or failed by the server.
type Error struct{ Status Status }

func (e *Error) Error() string { return "drd: " + e.Status.String() }

// Is makes errors.Is(err, ErrStaleEpoch) true for a stale epoch.
func (e *Error) Is(target error) bool { return target == ErrStaleEpoch && e.Status == StatusStaleEpoch }

// Check validates a read, write or discard of length bytes at off against a device of size
// bytes with at most maxIO bytes per read or write, and returns the status the server answers
// (StatusOK when it may proceed). Flush takes no range.
func Check(op Op, off uint64, length uint32, size uint64, maxIO uint32) Status {
	switch op {
	case OpFlush:
		return StatusOK
	case OpRead, OpWrite, OpDiscard:
	default:
		return StatusBadOp
	}
	if off%BlockSize != 0 || length%BlockSize != 0 || length == 0 {
		return StatusMisaligned
	}
	if op != OpDiscard && length > maxIO {
		return StatusTooLarge
	}
	if off > size || uint64(length) > size-off {
		return StatusOutOfRange
	}
	return StatusOK
}

// Sizes of the fixed parts.
const (
	RequestHeader  = 32
	ResponseHeader = 24
	helloHeader    = 8
	welcomeHeader  = 34
	MaxName        = 255
)

// Hello opens a session on a device.
type Hello struct {
	Version uint16
	Device  string
	Client  uint64 // the client's id across reconnections; 0: none (sent only when non-zero)
}

// Welcome answers Hello.
type Welcome struct {
	Status    Status
	Epoch     uint64
	Size      uint64
	BlockSize uint32
	MaxIO     uint32
	Message   string // why Status is not OK, for people
}

// Request is one block request.
type Request struct {
	Op     Op
	Flags  uint8
	Length uint32
	Epoch  uint64
	Tag    uint64
	Offset uint64
	Data   []byte // writes: Length bytes (aliases the decoded message)
}

// Response answers one Request.
type Response struct {
	Tag    uint64
	Epoch  uint64
	Status Status
	Length uint32
	Data   []byte // reads with StatusOK: Length bytes (aliases the decoded message)
}

var le = binary.LittleEndian

// AppendHello encodes h.
func AppendHello(b []byte, h Hello) []byte {
	b = append(b, 'D', 'R', 'D', 'H')
	b = le.AppendUint16(b, h.Version)
	b = le.AppendUint16(b, uint16(len(h.Device)))
	b = append(b, h.Device...)
	if h.Client != 0 {
		b = le.AppendUint64(b, h.Client)
	}
	return b
}

// DecodeHello decodes a Hello message.
func DecodeHello(m []byte) (Hello, error) {
	if len(m) < helloHeader {
		return Hello{}, fmt.Errorf("hello: %d bytes, want at least %d", len(m), helloHeader)
	}
	if string(m[:4]) != "DRDH" {
		return Hello{}, fmt.Errorf("hello: bad magic %q", m[:4])
	}
	n := int(le.Uint16(m[6:]))
	if n == 0 || n > MaxName {
		return Hello{}, fmt.Errorf("hello: device name length %d (want 1 to %d)", n, MaxName)
	}
	h := Hello{Version: le.Uint16(m[4:])}
	switch len(m) {
	case helloHeader + n:
	case helloHeader + n + 8:
		h.Client = le.Uint64(m[helloHeader+n:])
		if h.Client == 0 {
			return Hello{}, errors.New("hello: client id 0 (leave it out instead)")
		}
	default:
		return Hello{}, fmt.Errorf("hello: %d bytes for a %d-byte name (and an optional 8-byte client id)", len(m), n)
	}
	h.Device = string(m[helloHeader : helloHeader+n])
	return h, nil
}

// AppendWelcome encodes w.
func AppendWelcome(b []byte, w Welcome) []byte {
	msg := w.Message
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b = append(b, 'D', 'R', 'D', 'W')
	b = le.AppendUint16(b, uint16(w.Status))
	b = le.AppendUint16(b, 0)
	b = le.AppendUint64(b, w.Epoch)
	b = le.AppendUint64(b, w.Size)
	b = le.AppendUint32(b, w.BlockSize)
	b = le.AppendUint32(b, w.MaxIO)
	b = le.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// DecodeWelcome decodes a Welcome message.
func DecodeWelcome(m []byte) (Welcome, error) {
	if len(m) < welcomeHeader {
		return Welcome{}, fmt.Errorf("welcome: %d bytes, want at least %d", len(m), welcomeHeader)
	}
	if string(m[:4]) != "DRDW" {
		return Welcome{}, fmt.Errorf("welcome: bad magic %q", m[:4])
	}
	n := int(le.Uint16(m[32:]))
	if len(m) != welcomeHeader+n {
		return Welcome{}, fmt.Errorf("welcome: %d bytes for a %d-byte message", len(m), n)
	}
	w := Welcome{Status: Status(le.Uint16(m[4:])), Epoch: le.Uint64(m[8:]), Size: le.Uint64(m[16:]),
		BlockSize: le.Uint32(m[24:]), MaxIO: le.Uint32(m[28:]), Message: string(m[34:])}
	if w.Status == StatusOK && (w.BlockSize != BlockSize || w.MaxIO < BlockSize || w.MaxIO%BlockSize != 0) {
		return Welcome{}, fmt.Errorf("welcome: block size %d, max i/o %d (want %d and a multiple of it)", w.BlockSize, w.MaxIO, BlockSize)
	}
	return w, nil
}

// AppendRequest encodes r's header and, for a write, its data.
func AppendRequest(b []byte, r *Request) []byte {
	b = append(b, byte(r.Op), r.Flags, 0, 0)
	b = le.AppendUint32(b, r.Length)
	b = le.AppendUint64(b, r.Epoch)
	b = le.AppendUint64(b, r.Tag)
	b = le.AppendUint64(b, r.Offset)
	if r.Op == OpWrite {
		b = append(b, r.Data...)
	}
	return b
}

// DecodeRequest decodes a request message. It checks the framing only (a write carries
// exactly Length bytes, the others none); Check judges the range.
func DecodeRequest(m []byte) (Request, error) {
	if len(m) < RequestHeader {
		return Request{}, fmt.Errorf("request: %d bytes, want at least %d", len(m), RequestHeader)
	}
	r := Request{Op: Op(m[0]), Flags: m[1], Length: le.Uint32(m[4:]), Epoch: le.Uint64(m[8:]),
		Tag: le.Uint64(m[16:]), Offset: le.Uint64(m[24:])}
	data := m[RequestHeader:]
	if r.Op == OpWrite {
		if uint64(len(data)) != uint64(r.Length) {
			return r, fmt.Errorf("request tag %d: write of %d bytes carries %d", r.Tag, r.Length, len(data))
		}
		r.Data = data
	} else if len(data) != 0 {
		return r, fmt.Errorf("request tag %d: %v carries %d bytes of data", r.Tag, r.Op, len(data))
	}
	return r, nil
}

// AppendResponse encodes r's header and, for a successful read, its data.
func AppendResponse(b []byte, r *Response) []byte {
	b = le.AppendUint64(b, r.Tag)
	b = le.AppendUint64(b, r.Epoch)
	b = le.AppendUint16(b, uint16(r.Status))
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, uint32(len(r.Data)))
	return append(b, r.Data...)
}

// DecodeResponse decodes a response message.
func DecodeResponse(m []byte) (Response, error) {
	if len(m) < ResponseHeader {
		return Response{}, fmt.Errorf("response: %d bytes, want at least %d", len(m), ResponseHeader)
	}
	r := Response{Tag: le.Uint64(m), Epoch: le.Uint64(m[8:]), Status: Status(le.Uint16(m[16:])),
		Length: le.Uint32(m[20:])}
	if uint64(len(m)-ResponseHeader) != uint64(r.Length) {
		return r, fmt.Errorf("response tag %d: says %d bytes, carries %d", r.Tag, r.Length, len(m)-ResponseHeader)
	}
	r.Data = m[ResponseHeader:]
	return r, nil
}
