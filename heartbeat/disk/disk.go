package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Options configure Open.
type Options struct {
	Path        string // shared block device or file
	ClusterID   uint32
	Node        uint16 // this node: its slot is at Node × SlotSize
	Incarnation uint64
	Peers       []uint16
	Interval    time.Duration // between two writes (and reads)
	Timeout     time.Duration // a peer's slot standing still this long: Stopped
	// Now is the clock (monotonic, any origin). Nil: time since Open.
	Now func() time.Duration
	// OnEvent is called from Run's goroutine for every state change. Nil: none.
	OnEvent func(Event)
	Log     *slog.Logger
}

// Disk writes this node's slot and reads the peers' at the interval. Status is safe to call
// from other goroutines while Run runs.
type Disk struct {
	opts Options
	f    *os.File
	buf  []byte // one page-aligned slot (mmap), for O_DIRECT
	log  *slog.Logger

	mu                  sync.Mutex
	tracker             *Tracker
	seq                 uint64
	writeErrs, readErrs uint64
	lastErr             error
	paused              bool
}

// Open opens the device or file with O_DIRECT and checks that it holds every configured
// node's slot (a regular file is extended if it is shorter).
func Open(opts Options) (*Disk, error) {
	switch {
	case opts.Node == 0 || opts.Node >= 64:
		return nil, fmt.Errorf("disk heartbeat: node id %d out of range", opts.Node)
	case opts.Interval <= 0 || opts.Timeout <= opts.Interval:
		return nil, fmt.Errorf("disk heartbeat: interval %v and timeout %v: want 0 < interval < timeout", opts.Interval, opts.Timeout)
	}
	if opts.Now == nil {
		start := time.Now()
		opts.Now = func() time.Duration { return time.Since(start) + time.Nanosecond }
	}
	d := &Disk{opts: opts, log: opts.Log}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	fd, err := unix.Open(opts.Path, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("disk heartbeat %s: the file system refuses O_DIRECT: %w", opts.Path, err)
		}
		return nil, fmt.Errorf("disk heartbeat: open %s: %w", opts.Path, err)
	}
	d.f = os.NewFile(uintptr(fd), opts.Path)
	maxID := opts.Node
	for _, p := range opts.Peers {
		maxID = max(maxID, p)
	}
	need := int64(maxID+1) * SlotSize
	fi, err := d.f.Stat()
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("disk heartbeat: stat %s: %w", opts.Path, err)
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = d.f.Seek(0, 2); err != nil {
			d.f.Close()
			return nil, fmt.Errorf("disk heartbeat: size of %s: %w", opts.Path, err)
		}
	}
	if size < need {
		if fi.Mode().IsRegular() {
			if err := d.f.Truncate(need); err != nil {
				d.f.Close()
				return nil, fmt.Errorf("disk heartbeat: extend %s to %d bytes: %w", opts.Path, need, err)
			}
		} else {
			d.f.Close()
			return nil, fmt.Errorf("disk heartbeat: %s holds %d bytes, node %d's slot needs %d", opts.Path, size, maxID, need)
		}
	}
	if d.buf, err = unix.Mmap(-1, 0, SlotSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		d.f.Close()
		return nil, fmt.Errorf("disk heartbeat: aligned buffer: %w", err)
	}
	d.tracker = NewTracker(opts.Timeout, opts.Now(), opts.Peers)
	return d, nil
}

// Beat writes this node's slot once and reads every peer's, feeding the tracker; it returns the
// state changes. Run calls it at the interval; tests may call it directly.
func (d *Disk) Beat() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.paused {
		d.seq++
		clear(d.buf)
		Slot{
			ClusterID: d.opts.ClusterID, Node: d.opts.Node, Incarnation: d.opts.Incarnation, Seq: d.seq,
			WallNS: time.Now().UnixNano(), IntervalNS: uint64(d.opts.Interval),
		}.Encode(d.buf)
		if _, err := d.f.WriteAt(d.buf, int64(d.opts.Node)*SlotSize); err != nil {
			d.writeErrs++
			d.lastErr = fmt.Errorf("write slot of node %d: %w", d.opts.Node, err)
		}
	}
	var out []Event
	for _, p := range d.opts.Peers {
		var s Slot
		_, err := d.f.ReadAt(d.buf, int64(p)*SlotSize)
		if err != nil {
			d.readErrs++
			err = fmt.Errorf("read slot of node %d: %w", p, err)
		} else {
			s, err = Decode(d.buf, d.opts.ClusterID, p)
		}
		out = append(out, d.tracker.Observe(d.opts.Now(), p, s, err)...)
	}
	return out
}

// Run beats at the interval until ctx ends.
func (d *Disk) Run(ctx context.Context) {
	t := time.NewTicker(d.opts.Interval)
	defer t.Stop()
	for {
		for _, ev := range d.Beat() {
			if d.opts.OnEvent != nil {
				d.opts.OnEvent(ev)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SetPaused stops (or resumes) this node's writes while reads go on: for tests and benchmarks
// that make a node's disk heartbeat stop without stopping the node.
func (d *Disk) SetPaused(p bool) {
	d.mu.Lock()
	d.paused = p
	d.mu.Unlock()
}

// Status is the disk heartbeat as a whole.
type Status struct {
	Path        string
	Seq         uint64 // this node's last write
	WriteErrors uint64
	ReadErrors  uint64
	LastError   error
}

// Status returns this node's side and the status of every peer as of the last beat.
func (d *Disk) Status() (Status, map[uint16]PeerStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	peers := map[uint16]PeerStatus{}
	for _, p := range d.opts.Peers {
		peers[p], _ = d.tracker.Peer(p)
	}
	return Status{Path: d.opts.Path, Seq: d.seq, WriteErrors: d.writeErrs, ReadErrors: d.readErrs, LastError: d.lastErr}, peers
}

// Close releases the file and the buffer.
func (d *Disk) Close() error {
	return errors.Join(d.f.Close(), unix.Munmap(d.buf))
}
