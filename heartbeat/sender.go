package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Transmitter puts one heartbeat payload on one link: a raw Ethernet socket, UDP sockets to
// the peers, or a fake in tests.
type Transmitter interface {
	Send(payload []byte) error
	Close() error
}

// SenderConfig configures a Sender.
type SenderConfig struct {
	ClusterID   uint32
	NodeID      uint16
	Key         Key
	Incarnation uint64
	Interval    time.Duration
	// Links are the transmitters, indexed by link id.
	Links []Transmitter
	// Progress returns the daemon's progress counter; nil sends zero.
	Progress func() uint64
	// Now returns CLOCK_MONOTONIC in nanoseconds, the clock the kernel stamps frames with.
	// Nil uses the real clock.
	Now func() uint64
}

// Sender emits one echo-requesting heartbeat per link and interval. SendAll is the pure step;
// Run drives it on a dedicated real-time thread.
type Sender struct {
	cfg    SenderConfig
	seq    [MaxLinks]uint64
	buf    []byte
	sent   [MaxLinks]atomic.Uint64
	errs   [MaxLinks]atomic.Uint64
	lastEr atomic.Pointer[error]
}

// NewSender checks the configuration and returns a sender.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if len(cfg.Links) == 0 || len(cfg.Links) > MaxLinks {
		return nil, fmt.Errorf("sender: %d links, want 1..%d", len(cfg.Links), MaxLinks)
	}
	if cfg.NodeID == 0 || cfg.NodeID >= MaxNodes {
		return nil, fmt.Errorf("sender: node id %d, want 1..%d", cfg.NodeID, MaxNodes-1)
	}
	if cfg.Interval <= 0 {
		return nil, fmt.Errorf("sender: interval %v", cfg.Interval)
	}
	if cfg.Now == nil {
		cfg.Now = MonotonicNow
	}
	if cfg.Progress == nil {
		cfg.Progress = func() uint64 { return 0 }
	}
	return &Sender{cfg: cfg, buf: make([]byte, 0, FrameSize)}, nil
}

// MonotonicNow returns CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns. It reads
// Go's monotonic clock (the same CLOCK_MONOTONIC, through the vDSO: no system call) offset by
// a calibration taken once at start-up.
func MonotonicNow() uint64 { return monoBase + uint64(time.Since(monoEpoch)) }

var monoEpoch, monoBase = calibrateMonotonic()

// calibrateMonotonic pairs a Go time with a CLOCK_MONOTONIC reading taken between two Go times
// no more than a few microseconds apart, keeping the tightest of a few tries.
func calibrateMonotonic() (time.Time, uint64) {
	var best time.Duration = 1<<63 - 1
	var epoch time.Time
	var base uint64
	for range 8 {
		var ts unix.Timespec
		t0 := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error()) // cannot fail on Linux
		}
		t1 := time.Now()
		if d := t1.Sub(t0); d < best {
			best, epoch, base = d, t0.Add(d/2), uint64(ts.Nano())
		}
	}
	return epoch, base
}

// SendAll sends the next frame on every link. A link that fails to send is counted and does
// not stop the others.
func (s *Sender) SendAll() {
	progress := s.cfg.Progress()
	for id, tx := range s.cfg.Links {
		s.seq[id]++
		f := Frame{
			Flags:       FlagEchoRequest,
			LinkID:      uint8(id),
			ClusterID:   s.cfg.ClusterID,
			SrcNode:     s.cfg.NodeID,
			Incarnation: s.cfg.Incarnation,
			Seq:         s.seq[id],
			SendNS:      s.cfg.Now(),
			Progress:    progress,
		}
		s.buf = f.AppendEncode(s.buf[:0], s.cfg.Key)
		if err := tx.Send(s.buf); err != nil {
			s.errs[id].Add(1)
			err = fmt.Errorf("send heartbeat on link %d: %w", id, err)
			s.lastEr.Store(&err)
			continue
		}
		s.sent[id].Add(1)
	}
}

// SenderStats are a sender's counters for one link.
type SenderStats struct {
	Sent, Errors uint64
}

// Stats returns the counters of link id.
func (s *Sender) Stats(id int) SenderStats {
	return SenderStats{Sent: s.sent[id].Load(), Errors: s.errs[id].Load()}
}

// LastError returns the most recent send error, or nil.
func (s *Sender) LastError() error {
	if p := s.lastEr.Load(); p != nil {
		return *p
	}
	return nil
}

// RealtimePriority is the SCHED_FIFO priority Run asks for: above ordinary load, below the
// kernel's own threads (which run at 50 and up for interrupts).
const RealtimePriority = 40

// Run sends at every interval until ctx ends. It runs on its own OS thread, asks for
// SCHED_FIFO so that CPU load cannot delay heartbeats (as corosync does), and sleeps with
// absolute deadlines so that a late wake-up does not shift every later frame. If real-time
// scheduling is refused it carries on at normal priority; the returned channel reports why,
// once, before the first frame.
func (s *Sender) Run(ctx context.Context, realtime chan<- error) {
	runtime.LockOSThread()
	// The thread keeps its real-time policy and dies with the goroutine: never unlocked.
	var rtErr error
	if realtime != nil {
		rtErr = setRealtime(RealtimePriority)
		realtime <- rtErr
	}
	interval := uint64(s.cfg.Interval)
	next := MonotonicNow()
	for ctx.Err() == nil {
		s.SendAll()
		next += interval
		if now := MonotonicNow(); now > next+interval {
			next = now // fell far behind (stopped process): do not burst to catch up
		}
		sleepUntil(next)
	}
}

func setRealtime(priority int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(priority)}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr SCHED_FIFO %d: %w", priority, err)
	}
	return nil
}

func sleepUntil(deadline uint64) {
	ts := unix.NsecToTimespec(int64(deadline))
	for {
		err := unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
