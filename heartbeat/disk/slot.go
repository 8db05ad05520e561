// Package disk is the disk heartbeat: a non-IP liveness channel through a shared block device
// or file (VCS's heartbeat disk regions, HACMP's disk heartbeat). Every node owns one 4 KiB
// slot, at offset node id × SlotSize, and writes its sequence number and clock into it at the
// heartbeat interval with O_DIRECT; it reads every peer's slot at the same pace. A peer whose
// slot keeps advancing is alive on the disk, whatever the network says: a peer that every
// network link has lost but whose slot still advances is network-partitioned, not down.
//
// slot.go is the on-disk format, tracker.go the pure rule that turns slot readings into peer
// states, disk.go the driver that does the I/O.
package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// SlotSize is the size and alignment of a slot: one page, the unit of O_DIRECT on every
// device and file system Vigil supports.
const SlotSize = 4096

// Version is the slot format's version.
const Version = 1

// magic starts every written slot.
var magic = [8]byte{'V', 'I', 'G', 'I', 'L', 'D', 'H', 'B'}

// Slot is what a node writes into its slot. On disk (little-endian):
//
//	 0  magic "VIGILDHB"
//	 8  version u32
//	12  cluster id u32
//	16  node u16, zero u16, zero u32
//	24  incarnation u64 (the writing daemon's)
//	32  seq u64 (one more at every write)
//	40  wall-clock time of the write, Unix nanoseconds i64 (for display only)
//	48  interval in nanoseconds u64
//	56  CRC-32C of bytes 0..55 u32, zero u32
//	64  zero up to SlotSize
type Slot struct {
	ClusterID   uint32
	Node        uint16
	Incarnation uint64
	Seq         uint64
	WallNS      int64
	IntervalNS  uint64
}

const headerLen = 64

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of Decode.
var (
	ErrEmpty   = errors.New("disk heartbeat slot never written")
	ErrCorrupt = errors.New("disk heartbeat slot corrupt")
	ErrForeign = errors.New("disk heartbeat slot belongs to another cluster or node")
)

// Encode writes s into buf (at least headerLen bytes; the rest of a slot stays as it is, zero
// in the driver's buffer).
func (s Slot) Encode(buf []byte) {
	_ = buf[headerLen-1]
	clear(buf[:headerLen])
	copy(buf[0:8], magic[:])
	le := binary.LittleEndian
	le.PutUint32(buf[8:], Version)
	le.PutUint32(buf[12:], s.ClusterID)
	le.PutUint16(buf[16:], s.Node)
	le.PutUint64(buf[24:], s.Incarnation)
	le.PutUint64(buf[32:], s.Seq)
	le.PutUint64(buf[40:], uint64(s.WallNS))
	le.PutUint64(buf[48:], s.IntervalNS)
	le.PutUint32(buf[56:], crc32.Checksum(buf[:56], castagnoli))
}

// Decode reads the slot of node in a cluster from buf. A slot that was never written is
// ErrEmpty, a torn or damaged one ErrCorrupt, one of another cluster or node ErrForeign.
func Decode(buf []byte, clusterID uint32, node uint16) (Slot, error) {
	if len(buf) < headerLen {
		return Slot{}, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(buf))
	}
	if [8]byte(buf[0:8]) != magic {
		for _, b := range buf[:headerLen] {
			if b != 0 {
				return Slot{}, fmt.Errorf("%w: no magic", ErrCorrupt)
			}
		}
		return Slot{}, ErrEmpty
	}
	le := binary.LittleEndian
	if got, want := le.Uint32(buf[56:]), crc32.Checksum(buf[:56], castagnoli); got != want {
		return Slot{}, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	if v := le.Uint32(buf[8:]); v != Version {
		return Slot{}, fmt.Errorf("%w: version %d, want %d", ErrCorrupt, v, Version)
	}
	if le.Uint16(buf[18:]) != 0 || le.Uint32(buf[20:]) != 0 || le.Uint32(buf[60:]) != 0 {
		return Slot{}, fmt.Errorf("%w: reserved bytes set", ErrCorrupt)
	}
	s := Slot{
		ClusterID: le.Uint32(buf[12:]), Node: le.Uint16(buf[16:]), Incarnation: le.Uint64(buf[24:]),
		Seq: le.Uint64(buf[32:]), WallNS: int64(le.Uint64(buf[40:])), IntervalNS: le.Uint64(buf[48:]),
	}
	if s.ClusterID != clusterID {
		return Slot{}, fmt.Errorf("%w: cluster id %d, want %d", ErrForeign, s.ClusterID, clusterID)
	}
	if s.Node != node {
		return Slot{}, fmt.Errorf("%w: node %d in the slot of node %d", ErrForeign, s.Node, node)
	}
	return s, nil
}
