// Package verify checks that a DRD device loses no acknowledged write: workers write
// self-checking blocks (magic, block number, write generation, CRC32C) and read them back while
// the server is killed, restarted or moved, and Check reads every block at the end.
//
// Each block belongs to one worker, so its history is a sequence: the worker knows the last
// generation acknowledged (acked) and the last one started (issued, greater when a write
// failed or is in flight). A block must always hold a generation g with acked <= g <= issued
// and a correct checksum for its own block number; anything else is a lost or torn write, or
// data from the wrong place.
package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"vigil/drd"
)

// BlockSize is the size of a self-checking block.
const BlockSize = 4096

const magic = "DRDVRFY1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Fill writes the self-checking content of generation gen of block into buf (4096 bytes).
func Fill(buf []byte, block, gen uint64) {
	copy(buf, magic)
	binary.LittleEndian.PutUint64(buf[8:], block)
	binary.LittleEndian.PutUint64(buf[16:], gen)
	x := block*0x9e3779b97f4a7c15 ^ gen*0xbf58476d1ce4e5b9 | 1
	for i := 24; i < BlockSize-4; i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(buf[i:], x)
	}
	binary.LittleEndian.PutUint32(buf[BlockSize-4:], crc32.Checksum(buf[:BlockSize-4], castagnoli))
}

// Parse returns the generation held by buf, which was read from block: 0 for a block never
// written (all zeros), or an error when the content is not a valid block of that number.
func Parse(buf []byte, block uint64) (uint64, error) {
	if len(buf) != BlockSize {
		return 0, fmt.Errorf("block %d: %d bytes", block, len(buf))
	}
	if string(buf[:8]) != magic {
		for _, b := range buf {
			if b != 0 {
				return 0, fmt.Errorf("block %d: no magic and not zero", block)
			}
		}
		return 0, nil
	}
	if sum := crc32.Checksum(buf[:BlockSize-4], castagnoli); sum != binary.LittleEndian.Uint32(buf[BlockSize-4:]) {
		return 0, fmt.Errorf("block %d: checksum mismatch (torn or corrupt write)", block)
	}
	if got := binary.LittleEndian.Uint64(buf[8:]); got != block {
		return 0, fmt.Errorf("block %d holds block %d's data", block, got)
	}
	return binary.LittleEndian.Uint64(buf[16:]), nil
}

// Config says which blocks a verifier owns and how it works.
type Config struct {
	FirstBlock, Blocks uint64
	Workers            int     // default 8
	WriteShare         float64 // share of writes among operations (default 0.7)
	Seed               uint64
}

// Stats count the operations of a run.
type Stats struct {
	Writes, Reads, Failed atomic.Int64
}

// Verifier runs the workload on one device.
type Verifier struct {
	dev    *drd.Device
	cfg    Config
	mu     sync.Mutex
	acked  []uint64
	issued []uint64
	Stats  Stats
}

// New returns a verifier of cfg's blocks on dev.
func New(dev *drd.Device, cfg Config) (*Verifier, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.WriteShare == 0 {
		cfg.WriteShare = 0.7
	}
	if cfg.Blocks < uint64(cfg.Workers) {
		return nil, fmt.Errorf("verify: %d blocks for %d workers", cfg.Blocks, cfg.Workers)
	}
	if (cfg.FirstBlock+cfg.Blocks)*BlockSize > uint64(dev.Size()) {
		return nil, fmt.Errorf("verify: blocks %d..%d beyond the device's %d bytes", cfg.FirstBlock, cfg.FirstBlock+cfg.Blocks, dev.Size())
	}
	return &Verifier{dev: dev, cfg: cfg, acked: make([]uint64, cfg.Blocks), issued: make([]uint64, cfg.Blocks)}, nil
}

// Run runs the workers until ctx ends. It returns the first violation found by a read, or nil.
// Failed calls are counted (Stats.Failed), not fatal: a write that failed may or may not have
// reached the disk, which Check allows for.
func (v *Verifier) Run(ctx context.Context) error {
	errc := make(chan error, v.cfg.Workers)
	var wg sync.WaitGroup
	for w := range v.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := v.worker(ctx, w); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func (v *Verifier) worker(ctx context.Context, w int) error {
	rng := rand.New(rand.NewPCG(v.cfg.Seed, uint64(w)))
	buf := make([]byte, BlockSize)
	n := int(v.cfg.Blocks) / v.cfg.Workers
	for ctx.Err() == nil {
		i := uint64(rng.IntN(n)*v.cfg.Workers + w) // blocks i ≡ w (mod workers) belong to w
		block := v.cfg.FirstBlock + i
		if rng.Float64() < v.cfg.WriteShare {
			v.mu.Lock()
			v.issued[i]++
			gen := v.issued[i]
			v.mu.Unlock()
			Fill(buf, block, gen)
			if _, err := v.dev.WriteAt(buf, int64(block*BlockSize)); err != nil {
				v.Stats.Failed.Add(1)
				continue
			}
			v.Stats.Writes.Add(1)
			v.mu.Lock()
			v.acked[i] = gen
			v.mu.Unlock()
			continue
		}
		if _, err := v.dev.ReadAt(buf, int64(block*BlockSize)); err != nil {
			v.Stats.Failed.Add(1)
			continue
		}
		v.Stats.Reads.Add(1)
		if err := v.check(i, buf); err != nil {
			return err
		}
	}
	return nil
}

func (v *Verifier) check(i uint64, buf []byte) error {
	block := v.cfg.FirstBlock + i
	gen, err := Parse(buf, block)
	if err != nil {
		return err
	}
	v.mu.Lock()
	acked, issued := v.acked[i], v.issued[i]
	v.mu.Unlock()
	if gen < acked {
		return fmt.Errorf("block %d holds generation %d, but generation %d was acknowledged: lost write", block, gen, acked)
	}
	if gen > issued {
		return fmt.Errorf("block %d holds generation %d, never written (last issued %d)", block, gen, issued)
	}
	return nil
}

// Check reads every block (after Run returned) and returns every violation.
func (v *Verifier) Check() error {
	var errs []error
	buf := make([]byte, BlockSize)
	for i := range v.cfg.Blocks {
		if _, err := v.dev.ReadAt(buf, int64((v.cfg.FirstBlock+i)*BlockSize)); err != nil {
			return fmt.Errorf("verify check: %w", err)
		}
		if err := v.check(i, buf); err != nil {
			errs = append(errs, err)
			if len(errs) == 20 {
				errs = append(errs, errors.New("(more not shown)"))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Acked returns how many blocks hold an acknowledged write.
func (v *Verifier) Acked() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, a := range v.acked {
		if a > 0 {
			n++
		}
	}
	return n
}
