package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A snapshot file is snapMagic, the CRC32C of the payload (uint32), four zero bytes, the
// payload length (uint64), then the payload: a marshalled raftpb.Snapshot.
const (
	snapMagic      = "VGLSNP01"
	snapHeaderSize = len(snapMagic) + 16
	snapSuffix     = ".snap"
	tmpSuffix      = ".tmp"
)

func snapName(term, index uint64) string {
	return fmt.Sprintf("%016x-%016x%s", term, index, snapSuffix)
}

func parseSnapName(name string) (term, index uint64, ok bool) {
	base, ok := strings.CutSuffix(name, snapSuffix)
	t, i, ok2 := strings.Cut(base, "-")
	if !ok || !ok2 || len(t) != 16 || len(i) != 16 {
		return 0, 0, false
	}
	term, err1 := strconv.ParseUint(t, 16, 64)
	index, err2 := strconv.ParseUint(i, 16, 64)
	return term, index, err1 == nil && err2 == nil
}

func encodeSnapshot(snap *raftpb.Snapshot) ([]byte, error) {
	payload, err := proto.Marshal(snap)
	if err != nil {
		return nil, fmt.Errorf("marshal snapshot: %w", err)
	}
	b := make([]byte, 0, snapHeaderSize+len(payload))
	b = append(b, snapMagic...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(payload)))
	return append(b, payload...), nil
}

// readSnapshot reads and checks the snapshot file at path, which must hold the snapshot
// described by want.
func readSnapshot(path string, want *raftpb.SnapshotMetadata) (*raftpb.Snapshot, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, corruptf(path, -1, "snapshot at index %d term %d recorded in the log, but its file is missing", want.GetIndex(), want.GetTerm())
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if len(b) < snapHeaderSize || string(b[:len(snapMagic)]) != snapMagic {
		return nil, corruptf(path, 0, "not a vigil raft snapshot file")
	}
	sum := binary.LittleEndian.Uint32(b[8:12])
	size := binary.LittleEndian.Uint64(b[16:24])
	payload := b[snapHeaderSize:]
	if uint64(len(payload)) != size {
		return nil, corruptf(path, 16, "snapshot payload is %d bytes, header says %d", len(payload), size)
	}
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, corruptf(path, int64(snapHeaderSize), "snapshot payload checksum mismatch")
	}
	snap := new(raftpb.Snapshot)
	if err := proto.Unmarshal(payload, snap); err != nil {
		return nil, corruptf(path, int64(snapHeaderSize), "decode snapshot: %v", err)
	}
	m := snap.GetMetadata()
	if m.GetIndex() != want.GetIndex() || m.GetTerm() != want.GetTerm() {
		return nil, corruptf(path, -1, "snapshot is at index %d term %d, the log recorded index %d term %d",
			m.GetIndex(), m.GetTerm(), want.GetIndex(), want.GetTerm())
	}
	return snap, nil
}

// writeSnapshot writes snap into dir atomically and durably (unless sync is nil): a
// temporary file, synced, renamed into place, and the directory synced.
func writeSnapshot(dir string, snap *raftpb.Snapshot, sync func(*os.File) error) (string, error) {
	b, err := encodeSnapshot(snap)
	if err != nil {
		return "", err
	}
	m := snap.GetMetadata()
	path := filepath.Join(dir, snapName(m.GetTerm(), m.GetIndex()))
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("write snapshot: %w", err)
	}
	_, err = f.Write(b)
	if err == nil && sync != nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && sync != nil {
		err = syncDir(dir, sync)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("write snapshot %s: %w", path, err)
	}
	return path, nil
}

func syncDir(dir string, sync func(*os.File) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = sync(d)
	return errors.Join(err, d.Close())
}
