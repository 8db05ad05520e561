package raftstore

import (
	"bytes"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// BenchmarkSave measures the commit cost of one raft Ready: one 256-byte entry and a new
// HardState, written and fsynced to the disk under the test's temporary directory.
func BenchmarkSave(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"fsync", Options{}},
		{"nosync", Options{NoSync: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openT(b, b.TempDir(), bc.opts)
			data := bytes.Repeat([]byte{0xa5}, 256)
			b.SetBytes(256)
			b.ResetTimer()
			for i := uint64(1); i <= uint64(b.N); i++ {
				e := &raftpb.Entry{Index: new(i), Term: new(uint64(1)), Type: raftpb.EntryNormal.Enum(), Data: data}
				if err := s.Save(hardState(1, 1, i-1), []*raftpb.Entry{e}, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
