package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// recType says what a log record's payload holds.
type recType uint8

const (
	// recHeader opens every segment: segmentHeader, fixed binary.
	recHeader recType = 1
	// recEntry is one raftpb.Entry. An index at or below the log's last index truncates the
	// log before it is appended.
	recEntry recType = 2
	// recHardState is a raftpb.HardState.
	recHardState recType = 3
	// recSnapApplied is the raftpb.SnapshotMetadata of a snapshot received through raft. Its
	// file is durable, and the log restarts after it: entries held before are dropped.
	recSnapApplied recType = 4
	// recSnapCreated is the raftpb.SnapshotMetadata of a snapshot made by CreateSnapshot (or
	// the current snapshot, repeated at the start of a segment). The log is unchanged.
	recSnapCreated recType = 5
	// recCompact drops the entries up to an index: indexTerm, fixed binary.
	recCompact recType = 6
)

func (t recType) String() string {
	switch t {
	case recHeader:
		return "segment header"
	case recEntry:
		return "entry"
	case recHardState:
		return "hardstate"
	case recSnapApplied:
		return "snapshot applied"
	case recSnapCreated:
		return "snapshot created"
	case recCompact:
		return "compaction"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

const (
	// recordHeaderSize is the size of a record's header: payload length (4), type (1),
	// reserved zero (3), payload CRC32C (4), header CRC32C over the first 12 bytes (4).
	recordHeaderSize = 16
	// maxPayload bounds a record's payload; a longer length is damage, not data.
	maxPayload = 1 << 28
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Reasons readRecord gives for bytes that are not a record.
var (
	errShort           = errors.New("record cut short")
	errHeaderChecksum  = errors.New("record header checksum mismatch")
	errPayloadChecksum = errors.New("record payload checksum mismatch")
	errRecordType      = errors.New("unknown record type")
	errRecordSize      = errors.New("record length out of range")
)

// appendRecordFunc appends a record of type t to dst, letting fill append the payload after
// the header.
func appendRecordFunc(dst []byte, t recType, fill func([]byte) []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, recordHeaderSize)...)
	dst = fill(dst)
	payload := dst[start+recordHeaderSize:]
	h := dst[start : start+recordHeaderSize]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	h[4] = byte(t)
	binary.LittleEndian.PutUint32(h[8:12], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(h[12:16], crc32.Checksum(h[:12], castagnoli))
	return dst
}

// appendRecord appends a record of type t carrying payload to dst.
func appendRecord(dst []byte, t recType, payload []byte) []byte {
	return appendRecordFunc(dst, t, func(b []byte) []byte { return append(b, payload...) })
}

// appendProto appends a record of type t carrying m's protobuf encoding.
func appendProto(dst []byte, t recType, m proto.Message) []byte {
	var err error
	dst = appendRecordFunc(dst, t, func(b []byte) []byte {
		b, err = proto.MarshalOptions{}.MarshalAppend(b, m)
		return b
	})
	if err != nil {
		// raftpb messages have no required fields: marshalling cannot fail.
		panic(fmt.Sprintf("raftstore: marshal %s: %v", t, err))
	}
	return dst
}

// readRecord decodes the record at the start of b, returning its type, its payload (aliasing
// b) and the number of bytes it occupies. The error is one of the err* reasons above.
func readRecord(b []byte) (t recType, payload []byte, n int, err error) {
	if len(b) < recordHeaderSize {
		return 0, nil, 0, errShort
	}
	h := b[:recordHeaderSize]
	if crc32.Checksum(h[:12], castagnoli) != binary.LittleEndian.Uint32(h[12:16]) {
		return 0, nil, 0, errHeaderChecksum
	}
	size := binary.LittleEndian.Uint32(h[0:4])
	t = recType(h[4])
	if t < recHeader || t > recCompact || h[5] != 0 || h[6] != 0 || h[7] != 0 {
		return 0, nil, 0, errRecordType
	}
	if size > maxPayload {
		return 0, nil, 0, errRecordSize
	}
	n = recordHeaderSize + int(size)
	if len(b) < n {
		return 0, nil, 0, errShort
	}
	payload = b[recordHeaderSize:n]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[8:12]) {
		return 0, nil, 0, errPayloadChecksum
	}
	return t, payload, n, nil
}

// segmentHeader is the payload of a recHeader record.
type segmentHeader struct {
	seq       uint64 // the segment's sequence number, also its file name
	lastIndex uint64 // the log's last index when the segment was started
	lastTerm  uint64 // and that entry's term
}

// segmentMagic starts every segment header, and says which format the file is in.
const segmentMagic = "VGLWAL01"

const segmentHeaderSize = len(segmentMagic) + 3*8

func (h segmentHeader) marshal() []byte {
	b := make([]byte, 0, segmentHeaderSize)
	b = append(b, segmentMagic...)
	b = binary.LittleEndian.AppendUint64(b, h.seq)
	b = binary.LittleEndian.AppendUint64(b, h.lastIndex)
	b = binary.LittleEndian.AppendUint64(b, h.lastTerm)
	return b
}

func unmarshalSegmentHeader(b []byte) (segmentHeader, error) {
	if len(b) != segmentHeaderSize || string(b[:len(segmentMagic)]) != segmentMagic {
		return segmentHeader{}, errors.New("not a vigil raft log segment header")
	}
	b = b[len(segmentMagic):]
	return segmentHeader{
		seq:       binary.LittleEndian.Uint64(b[0:8]),
		lastIndex: binary.LittleEndian.Uint64(b[8:16]),
		lastTerm:  binary.LittleEndian.Uint64(b[16:24]),
	}, nil
}

// indexTerm is the payload of a recCompact record.
type indexTerm struct{ index, term uint64 }

func (it indexTerm) marshal() []byte {
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, 16), it.index)
	return binary.LittleEndian.AppendUint64(b, it.term)
}

func unmarshalIndexTerm(b []byte) (indexTerm, error) {
	if len(b) != 16 {
		return indexTerm{}, fmt.Errorf("compaction record of %d bytes, want 16", len(b))
	}
	return indexTerm{binary.LittleEndian.Uint64(b[0:8]), binary.LittleEndian.Uint64(b[8:16])}, nil
}

// decoded is one record's payload, decoded.
type decoded struct {
	t      recType
	header segmentHeader
	entry  *raftpb.Entry
	hs     *raftpb.HardState
	snap   *raftpb.SnapshotMetadata
	it     indexTerm
}

// decodePayload decodes the payload of a record of type t.
func decodePayload(t recType, payload []byte) (decoded, error) {
	d := decoded{t: t}
	var err error
	switch t {
	case recHeader:
		d.header, err = unmarshalSegmentHeader(payload)
	case recEntry:
		d.entry = new(raftpb.Entry)
		err = proto.Unmarshal(payload, d.entry)
	case recHardState:
		d.hs = new(raftpb.HardState)
		err = proto.Unmarshal(payload, d.hs)
	case recSnapApplied, recSnapCreated:
		d.snap = new(raftpb.SnapshotMetadata)
		err = proto.Unmarshal(payload, d.snap)
	case recCompact:
		d.it, err = unmarshalIndexTerm(payload)
	default:
		err = errRecordType
	}
	if err != nil {
		return d, fmt.Errorf("decode %s record: %w", t, err)
	}
	return d, nil
}
