// Package shm is the shared-memory protocol of DRD's local path: the layout of the memory a
// client on the serving node shares with the server (a sealed memfd passed over a unix socket),
// the two rings in it, and the checks the server applies to everything it reads there.
//
// # Layout
//
// All integers are little endian (the machine's order: both ends run on the same node).
//
//	offset 0      header (4096 bytes)
//	                0  magic u32 "DRDS"     4 version u32
//	                8  SQ entries u32       12 CQ entries u32 (powers of two, CQ >= SQ)
//	               16  slots u32            20 slot size u32 (a multiple of 4096)
//	               64  SQ head u32  (written by the server)
//	              128  SQ tail u32  (written by the client)
//	              192  CQ head u32  (written by the client)
//	              256  CQ tail u32  (written by the server)
//	              320  server idle u32 (server: 1 while it sleeps on its eventfd)
//	              384  client waiting u32 (client: 1 while it sleeps on its eventfd)
//	4096          SQ: SQ entries × 48-byte SQE
//	CQOffset      CQ: CQ entries × 16-byte CQE (SQ end rounded up to 64)
//	DataOffset    slots × slot size, page-aligned: the data slots, registered by the server as
//	              one io_uring fixed buffer, so the disk reads into and writes from them
//
//	SQE: op u8 | flags u8 | reserved u16 | slot u32 | length u32 | reserved u32 | offset u64 |
//	     epoch u64 | user data u64 | reserved u64
//	CQE: user data u64 | status u16 | reserved u16 | result u32 (bytes transferred)
//
// Indices run freely (u32, wrapping); an entry's position is index & (entries-1). A producer
// writes entries, then stores its tail with release order; a consumer loads the tail with
// acquire order, reads the entries, then stores its head with release order (Go's sync/atomic
// is sequentially consistent, which is stronger).
//
// # Wake-ups
//
// While busy neither side makes a system call per request. A side that finds nothing to do
// stores 1 in its idle/waiting word, loads the other side's index once more, and only then
// sleeps in poll on its eventfd (and the session socket, to see the other end die). The other
// side, after publishing a tail or head, loads that word and writes the eventfd when it is 1.
// Both sides store then load (sequentially consistent), so one of them always sees the other.
//
// # Trust
//
// The client may be buggy or malicious; the server must survive anything it writes. The server
// reads the geometry once at setup and keeps its own copy; it keeps its own SQ head and CQ tail
// and never re-reads them; it treats a client SQ tail more than SQ entries ahead of its head,
// or a CQ head not within CQ entries behind its tail, as a broken ring and ends the session;
// it copies each SQE out of shared memory before checking it (CheckSQE: epoch, operation,
// alignment, range, length, slot). The memfd must be sealed against shrinking (F_SEAL_SHRINK),
// so the client cannot make the server's mapping fault.
package shm

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"vigil/drd/wire"
)

// Layout constants.
const (
	Magic      = 0x53445244 // "DRDS" little endian
	Version    = 1
	HeaderSize = 4096
	SQESize    = 48
	CQESize    = 16
	MaxEntries = 4096
	MaxSlots   = 4096
	MaxSize    = 1 << 30 // the whole region; io_uring registers at most 1 GiB per buffer

	offMagic, offVersion, offSQEntries, offCQEntries, offSlots, offSlotSize     = 0, 4, 8, 12, 16, 20
	offSQHead, offSQTail, offCQHead, offCQTail, offServerIdle, offClientWaiting = 64, 128, 192, 256, 320, 384
)

// ErrBroken is wrapped by the errors that end a session because the client broke the rings.
var ErrBroken = errors.New("shared ring broken by the client")

// Geometry is the shape of a shared region.
type Geometry struct {
	SQEntries, CQEntries, Slots, SlotSize uint32
}

func pow2(n uint32) bool { return n != 0 && n&(n-1) == 0 }

// Validate checks the geometry's ranges.
func (g Geometry) Validate() error {
	if !pow2(g.SQEntries) || g.SQEntries > MaxEntries {
		return fmt.Errorf("sq entries %d: want a power of two up to %d", g.SQEntries, MaxEntries)
	}
	if !pow2(g.CQEntries) || g.CQEntries > MaxEntries || g.CQEntries < g.SQEntries {
		return fmt.Errorf("cq entries %d: want a power of two from sq entries (%d) to %d", g.CQEntries, g.SQEntries, MaxEntries)
	}
	if g.Slots == 0 || g.Slots > MaxSlots {
		return fmt.Errorf("slots %d: want 1 to %d", g.Slots, MaxSlots)
	}
	if g.SlotSize < wire.BlockSize || g.SlotSize > wire.MaxIO || g.SlotSize%wire.BlockSize != 0 {
		return fmt.Errorf("slot size %d: want a multiple of %d up to %d", g.SlotSize, wire.BlockSize, wire.MaxIO)
	}
	if g.Size() > MaxSize {
		return fmt.Errorf("region of %d bytes: at most %d", g.Size(), MaxSize)
	}
	return nil
}

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

// SQOffset, CQOffset and DataOffset locate the parts of the region; Size is its length.
func (g Geometry) SQOffset() uint64 { return HeaderSize }
func (g Geometry) CQOffset() uint64 {
	return roundUp(HeaderSize+uint64(g.SQEntries)*SQESize, 64)
}
func (g Geometry) DataOffset() uint64 {
	return roundUp(g.CQOffset()+uint64(g.CQEntries)*CQESize, 4096)
}
func (g Geometry) Size() uint64 { return g.DataOffset() + uint64(g.Slots)*uint64(g.SlotSize) }

func u32(mem []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }

// WriteHeader writes g into a new region's header (the client does this before sharing it).
func WriteHeader(mem []byte, g Geometry) {
	*u32(mem, offMagic) = Magic
	*u32(mem, offVersion) = Version
	*u32(mem, offSQEntries) = g.SQEntries
	*u32(mem, offCQEntries) = g.CQEntries
	*u32(mem, offSlots) = g.Slots
	*u32(mem, offSlotSize) = g.SlotSize
}

// ReadHeader reads and validates the geometry of a region of len(mem) bytes.
func ReadHeader(mem []byte) (Geometry, error) {
	if len(mem) < HeaderSize {
		return Geometry{}, fmt.Errorf("shared region of %d bytes: smaller than the %d-byte header", len(mem), HeaderSize)
	}
	if m := atomic.LoadUint32(u32(mem, offMagic)); m != Magic {
		return Geometry{}, fmt.Errorf("shared region: bad magic %#x", m)
	}
	if v := atomic.LoadUint32(u32(mem, offVersion)); v != Version {
		return Geometry{}, fmt.Errorf("shared region: version %d, this server speaks %d", v, Version)
	}
	g := Geometry{
		SQEntries: atomic.LoadUint32(u32(mem, offSQEntries)),
		CQEntries: atomic.LoadUint32(u32(mem, offCQEntries)),
		Slots:     atomic.LoadUint32(u32(mem, offSlots)),
		SlotSize:  atomic.LoadUint32(u32(mem, offSlotSize)),
	}
	if err := g.Validate(); err != nil {
		return Geometry{}, fmt.Errorf("shared region: %w", err)
	}
	if uint64(len(mem)) < g.Size() {
		return Geometry{}, fmt.Errorf("shared region of %d bytes: geometry needs %d", len(mem), g.Size())
	}
	return g, nil
}

// SQE is a request in the submission ring.
type SQE struct {
	Op       wire.Op
	Flags    uint8
	Slot     uint32
	Length   uint32
	Offset   uint64
	Epoch    uint64
	UserData uint64
}

// CQE is a completion in the completion ring.
type CQE struct {
	UserData uint64
	Status   wire.Status
	Result   uint32
}

func u64(b []byte, off int) uint64 {
	return uint64(b[off]) | uint64(b[off+1])<<8 | uint64(b[off+2])<<16 | uint64(b[off+3])<<24 |
		uint64(b[off+4])<<32 | uint64(b[off+5])<<40 | uint64(b[off+6])<<48 | uint64(b[off+7])<<56
}

func put64(b []byte, off int, v uint64) {
	for i := range 8 {
		b[off+i] = byte(v >> (8 * i))
	}
}

// DecodeSQE copies an SQE out of its 48 bytes.
func DecodeSQE(b []byte) SQE {
	_ = b[SQESize-1]
	return SQE{Op: wire.Op(b[0]), Flags: b[1], Slot: uint32(u64(b, 0) >> 32), Length: uint32(u64(b, 8)),
		Offset: u64(b, 16), Epoch: u64(b, 24), UserData: u64(b, 32)}
}

// EncodeSQE writes e into 48 bytes.
func EncodeSQE(b []byte, e SQE) {
	_ = b[SQESize-1]
	put64(b, 0, uint64(e.Op)|uint64(e.Flags)<<8|uint64(e.Slot)<<32)
	put64(b, 8, uint64(e.Length))
	put64(b, 16, e.Offset)
	put64(b, 24, e.Epoch)
	put64(b, 32, e.UserData)
	put64(b, 40, 0)
}

// DecodeCQE copies a CQE out of its 16 bytes.
func DecodeCQE(b []byte) CQE {
	_ = b[CQESize-1]
	w := u64(b, 8)
	return CQE{UserData: u64(b, 0), Status: wire.Status(uint16(w)), Result: uint32(w >> 32)}
}

// EncodeCQE writes e into 16 bytes.
func EncodeCQE(b []byte, e CQE) {
	_ = b[CQESize-1]
	put64(b, 0, e.UserData)
	put64(b, 8, uint64(e.Status)|uint64(e.Result)<<32)
}

// CheckSQE returns the status the server answers an SQE with (StatusOK: it may go to the disk)
// for a device of size bytes and the server's epoch.
func CheckSQE(e SQE, g Geometry, epoch, size uint64) wire.Status {
	if e.Epoch != epoch {
		return wire.StatusStaleEpoch
	}
	if st := wire.Check(e.Op, e.Offset, e.Length, size, g.SlotSize); st != wire.StatusOK {
		return st
	}
	if (e.Op == wire.OpRead || e.Op == wire.OpWrite) && e.Slot >= g.Slots {
		return wire.StatusBadSlot
	}
	return wire.StatusOK
}

// region is a mapped shared region with its geometry.
type region struct {
	mem []byte
	g   Geometry
}

func (r *region) sqe(i uint32) []byte {
	off := r.g.SQOffset() + uint64(i&(r.g.SQEntries-1))*SQESize
	return r.mem[off : off+SQESize]
}

func (r *region) cqe(i uint32) []byte {
	off := r.g.CQOffset() + uint64(i&(r.g.CQEntries-1))*CQESize
	return r.mem[off : off+CQESize]
}

// Slot returns the memory of data slot i.
func (r *region) Slot(i uint32) []byte {
	off := r.g.DataOffset() + uint64(i)*uint64(r.g.SlotSize)
	return r.mem[off : off+uint64(r.g.SlotSize)]
}

// Data returns the memory of all data slots.
func (r *region) Data() []byte { return r.mem[r.g.DataOffset():r.g.Size()] }

// Geometry returns the region's geometry.
func (r *region) Geometry() Geometry { return r.g }

// Server is the server's side of a region: it consumes the SQ and produces the CQ. Its head
// and tail are its own; what the client writes is only ever compared to them.
type Server struct {
	region
	sqHead, cqTail uint32
}

// NewServer returns the server side of mem, whose geometry the server read (ReadHeader) and
// keeps. Both ends start the session at index 0 (the client resets the region before it
// shares it).
func NewServer(mem []byte, g Geometry) (*Server, error) {
	if uint64(len(mem)) < g.Size() {
		return nil, fmt.Errorf("shared region of %d bytes: geometry needs %d", len(mem), g.Size())
	}
	s := &Server{region: region{mem: mem, g: g}}
	atomic.StoreUint32(u32(mem, offSQHead), 0)
	atomic.StoreUint32(u32(mem, offCQTail), 0)
	return s, nil
}

// Poll copies up to len(out) new SQEs out of the ring and consumes them. It fails with
// ErrBroken when the client's tail is impossible.
func (s *Server) Poll(out []SQE) (int, error) {
	tail := atomic.LoadUint32(u32(s.mem, offSQTail))
	avail := tail - s.sqHead
	if avail > s.g.SQEntries {
		return 0, fmt.Errorf("%w: sq tail %d is %d entries past head %d (ring of %d)", ErrBroken, tail, avail, s.sqHead, s.g.SQEntries)
	}
	n := min(int(avail), len(out))
	for i := range n {
		out[i] = DecodeSQE(s.sqe(s.sqHead + uint32(i)))
	}
	if n > 0 {
		s.sqHead += uint32(n)
		atomic.StoreUint32(u32(s.mem, offSQHead), s.sqHead)
	}
	return n, nil
}

// Pending says whether the client has published SQEs not consumed yet.
func (s *Server) Pending() bool { return atomic.LoadUint32(u32(s.mem, offSQTail)) != s.sqHead }

// CQFree returns how many CQEs the server may post now. It fails with ErrBroken when the
// client's head is impossible.
func (s *Server) CQFree() (int, error) {
	head := atomic.LoadUint32(u32(s.mem, offCQHead))
	used := s.cqTail - head
	if used > s.g.CQEntries {
		return 0, fmt.Errorf("%w: cq head %d is not within %d entries behind tail %d", ErrBroken, head, s.g.CQEntries, s.cqTail)
	}
	return int(s.g.CQEntries - used), nil
}

// Post writes a CQE; the caller checked CQFree. Publish makes posted CQEs visible.
func (s *Server) Post(e CQE) {
	EncodeCQE(s.cqe(s.cqTail), e)
	s.cqTail++
}

// Publish stores the CQ tail and reports whether the client sleeps (it must be woken).
func (s *Server) Publish() bool {
	atomic.StoreUint32(u32(s.mem, offCQTail), s.cqTail)
	return atomic.LoadUint32(u32(s.mem, offClientWaiting)) != 0
}

// SetIdle stores the server's idle word (before sleeping: 1; on waking: 0).
func (s *Server) SetIdle(idle bool) { atomic.StoreUint32(u32(s.mem, offServerIdle), b2u(idle)) }

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Client is the client's side of a region: it produces the SQ and consumes the CQ. The
// client trusts the server.
type Client struct {
	region
	sqTail, cqHead uint32
}

// NewClient lays out a zeroed region of g.Size() bytes and returns its client side.
func NewClient(mem []byte, g Geometry) (*Client, error) {
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if uint64(len(mem)) < g.Size() {
		return nil, fmt.Errorf("shared region of %d bytes: geometry needs %d", len(mem), g.Size())
	}
	WriteHeader(mem, g)
	return &Client{region: region{mem: mem, g: g}}, nil
}

// Reset zeroes the indices and wake words for a new session with a new server (the data slots
// keep their contents, so in-flight writes can be re-sent from them).
func (c *Client) Reset() {
	for _, off := range []int{offSQHead, offSQTail, offCQHead, offCQTail, offServerIdle, offClientWaiting} {
		atomic.StoreUint32(u32(c.mem, off), 0)
	}
	c.sqTail, c.cqHead = 0, 0
}

// SQFree returns how many SQEs the client may push now.
func (c *Client) SQFree() int {
	return int(c.g.SQEntries - (c.sqTail - atomic.LoadUint32(u32(c.mem, offSQHead))))
}

// Push writes an SQE; the caller checked SQFree. Submit makes pushed SQEs visible.
func (c *Client) Push(e SQE) {
	EncodeSQE(c.sqe(c.sqTail), e)
	c.sqTail++
}

// Submit stores the SQ tail and reports whether the server sleeps (it must be woken).
func (c *Client) Submit() bool {
	atomic.StoreUint32(u32(c.mem, offSQTail), c.sqTail)
	return atomic.LoadUint32(u32(c.mem, offServerIdle)) != 0
}

// Reap copies up to len(out) CQEs out and consumes them; it reports whether the server sleeps
// (it waits for CQ space and must be woken).
func (c *Client) Reap(out []CQE) (int, bool) {
	tail := atomic.LoadUint32(u32(c.mem, offCQTail))
	n := min(int(tail-c.cqHead), len(out))
	for i := range n {
		out[i] = DecodeCQE(c.cqe(c.cqHead + uint32(i)))
	}
	if n == 0 {
		return 0, false
	}
	c.cqHead += uint32(n)
	atomic.StoreUint32(u32(c.mem, offCQHead), c.cqHead)
	return n, atomic.LoadUint32(u32(c.mem, offServerIdle)) != 0
}

// Ready says whether CQEs wait.
func (c *Client) Ready() bool { return atomic.LoadUint32(u32(c.mem, offCQTail)) != c.cqHead }

// SetWaiting stores the client's waiting word.
func (c *Client) SetWaiting(w bool) { atomic.StoreUint32(u32(c.mem, offClientWaiting), b2u(w)) }
