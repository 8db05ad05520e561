package replica

import "encoding/binary"

// A replicated entry's data is a clusterdb command behind a small header that says who
// proposed it, so the proposer can match the committed entry to the caller that waits for it:
//
//	0x01 | proposer node id (uint64, big endian) | proposal sequence number (uint64) | command
//
// Raft's own empty entries (a new leader's) have no data. The header is not part of the
// command: clusterdb.State.Apply sees the command alone.
const (
	frameVersion = 0x01
	frameHeader  = 1 + 8 + 8
)

func frame(proposer, seq uint64, cmd []byte) []byte {
	b := make([]byte, frameHeader, frameHeader+len(cmd))
	b[0] = frameVersion
	binary.BigEndian.PutUint64(b[1:], proposer)
	binary.BigEndian.PutUint64(b[9:], seq)
	return append(b, cmd...)
}

// unframe splits entry data. Data without a valid header is returned whole as the command
// (proposer 0), so that Apply rejects it as malformed like any other bad entry.
func unframe(data []byte) (proposer, seq uint64, cmd []byte) {
	if len(data) < frameHeader || data[0] != frameVersion {
		return 0, 0, data
	}
	return binary.BigEndian.Uint64(data[1:]), binary.BigEndian.Uint64(data[9:]), data[frameHeader:]
}
