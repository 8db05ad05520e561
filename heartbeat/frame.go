package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire format is defined once, in bpf/heartbeat.h; these constants restate its numbers
// for Go, and a test in dataplane/ fails when the two drift apart.
const (
	// EtherType carries heartbeat frames on raw Ethernet links.
	EtherType = 0x88B5
	// Version is the frame format version.
	Version = 1
	// FrameSize is the length of a frame on the wire.
	FrameSize = 64
	// MaxNodes bounds node ids: valid ids are 1 .. MaxNodes-1.
	MaxNodes = 64
	// MaxLinks bounds link ids: valid ids are 0 .. MaxLinks-1.
	MaxLinks  = 4
	macOffset = 56
)

// Flags of a frame.
const (
	FlagEchoRequest uint8 = 1 << 0 // the receiver's kernel reflects it
	FlagEchoReply   uint8 = 1 << 1 // this frame is a reflection
)

// Frame is one heartbeat (see bpf/heartbeat.h for the meaning of each field).
type Frame struct {
	Flags       uint8
	LinkID      uint8
	ClusterID   uint32
	SrcNode     uint16 // sender of the original frame
	EchoNode    uint16 // reflector of an echo reply, zero otherwise
	Incarnation uint64
	Seq         uint64
	SendNS      uint64 // sender's CLOCK_MONOTONIC at send
	Progress    uint64 // sender daemon's progress counter
	EchoNS      uint64 // reflector's CLOCK_MONOTONIC, zero in requests
}

// Errors of Decode. Each matches one rejection counter of the XDP program.
var (
	ErrMalformed = errors.New("malformed heartbeat frame")
	ErrVersion   = errors.New("unsupported heartbeat version")
	ErrCluster   = errors.New("heartbeat from another cluster")
	ErrBadMAC    = errors.New("heartbeat MAC mismatch")
)

// AppendEncode appends the frame, authenticated with key, to b.
func (f *Frame) AppendEncode(b []byte, key Key) []byte {
	start := len(b)
	b = append(b, Version, f.Flags, f.LinkID, 0)
	b = binary.LittleEndian.AppendUint32(b, f.ClusterID)
	b = binary.LittleEndian.AppendUint16(b, f.SrcNode)
	b = binary.LittleEndian.AppendUint16(b, f.EchoNode)
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, v := range []uint64{f.Incarnation, f.Seq, f.SendNS, f.Progress, f.EchoNS} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	k0, k1 := key.halves()
	return binary.LittleEndian.AppendUint64(b, sipHash24(k0, k1, b[start:start+macOffset]))
}

// Decode parses and authenticates a frame for the given cluster. Bytes past FrameSize (Ethernet
// padding) are ignored. The checks and their order are those of the XDP program.
func Decode(b []byte, clusterID uint32, key Key) (Frame, error) {
	if len(b) < FrameSize {
		return Frame{}, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), FrameSize)
	}
	b = b[:FrameSize]
	if b[0] != Version {
		return Frame{}, fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	if b[3] != 0 || binary.LittleEndian.Uint32(b[12:]) != 0 {
		return Frame{}, fmt.Errorf("%w: reserved bytes set", ErrMalformed)
	}
	f := Frame{
		Flags:       b[1],
		LinkID:      b[2],
		ClusterID:   binary.LittleEndian.Uint32(b[4:]),
		SrcNode:     binary.LittleEndian.Uint16(b[8:]),
		EchoNode:    binary.LittleEndian.Uint16(b[10:]),
		Incarnation: binary.LittleEndian.Uint64(b[16:]),
		Seq:         binary.LittleEndian.Uint64(b[24:]),
		SendNS:      binary.LittleEndian.Uint64(b[32:]),
		Progress:    binary.LittleEndian.Uint64(b[40:]),
		EchoNS:      binary.LittleEndian.Uint64(b[48:]),
	}
	if f.Flags&^(FlagEchoRequest|FlagEchoReply) != 0 || f.Flags == FlagEchoRequest|FlagEchoReply {
		return Frame{}, fmt.Errorf("%w: flags %#x", ErrMalformed, f.Flags)
	}
	if f.LinkID >= MaxLinks {
		return Frame{}, fmt.Errorf("%w: link id %d", ErrMalformed, f.LinkID)
	}
	if f.ClusterID != clusterID {
		return Frame{}, fmt.Errorf("%w: cluster id %d, want %d", ErrCluster, f.ClusterID, clusterID)
	}
	k0, k1 := key.halves()
	if binary.LittleEndian.Uint64(b[macOffset:]) != sipHash24(k0, k1, b[:macOffset]) {
		return Frame{}, ErrBadMAC
	}
	return f, nil
}
