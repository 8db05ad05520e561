package raftstore

import (
	"bytes"
	"testing"
)

// FuzzReadRecord feeds arbitrary bytes to the record decoder, the payload decoders and the
// segment scanner: they may reject them, never panic, and what they accept must encode back
// to the same bytes.
func FuzzReadRecord(f *testing.F) {
	valid := [][]byte{
		appendRecord(nil, recHeader, segmentHeader{seq: 3, lastIndex: 10, lastTerm: 2}.marshal()),
		appendProto(nil, recEntry, entry(7, 2, "seven")),
		appendProto(nil, recHardState, hardState(2, 1, 6)),
		appendProto(nil, recSnapApplied, snapshot(9, 2, "", 1, 2, 3).GetMetadata()),
		appendProto(nil, recSnapCreated, snapshot(9, 2, "", 1).GetMetadata()),
		appendRecord(nil, recCompact, indexTerm{index: 5, term: 1}.marshal()),
	}
	for _, v := range valid {
		f.Add(v)
		f.Add(v[:len(v)-1])
		f.Add(v[:recordHeaderSize/2])
	}
	f.Add(bytes.Join(valid, nil))
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, payload, n, err := readRecord(b)
		if err == nil {
			if n != recordHeaderSize+len(payload) || n > len(b) {
				t.Fatalf("readRecord: n = %d with a payload of %d and %d bytes of input", n, len(payload), len(b))
			}
			if got := appendRecord(nil, typ, payload); !bytes.Equal(got, b[:n]) {
				t.Fatalf("record does not encode back to its bytes:\n%x\n%x", got, b[:n])
			}
			_, _ = decodePayload(typ, payload)
		}
		// The same bytes as a string of well-checksummed records of any type and content,
		// to reach the replay logic.
		var seg []byte
		for rest := b; len(rest) >= 2; {
			typ, size := recType(rest[0]%7), min(int(rest[1]), len(rest)-2)
			seg = appendRecord(seg, typ, rest[2:2+size])
			rest = rest[2+size:]
		}
		r := &replay{}
		if _, err := scanSegment("fuzz", seg, true, func(_ int64, d decoded) error { return r.apply(d) }); err == nil {
			_ = r.lastIndex()
		}
		r = &replay{}
		for _, last := range []bool{false, true} {
			end, _ := scanSegment("fuzz", b, last, func(_ int64, d decoded) error { return r.apply(d) })
			if end < 0 || end > int64(len(b)) {
				t.Fatalf("scanSegment end %d outside [0, %d]", end, len(b))
			}
		}
	})
}
