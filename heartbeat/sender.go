package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

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
	// Stamps, when set, receives a TxStamp per link before every send of Run, so that the
	// detector counts echo silence only while this node was sending. Run starts from the
	// stamps it loads (a restarted daemon continues its predecessor's GapNS).
	Stamps TxStamps
	// Waiting, when set, reports whether work waits that only the Go scheduler picks up: the
	// heartbeat plane's events in the kernel's ring buffer, whose reader is parked in the
	// network poller. Run asks at every wake-up and then parks for that interval instead of
	// sleeping raw (see Run). It must be cheap and must never block.
	Waiting func() bool
}

// TxStamps is where the sender publishes its TxStamps: the kernel's txstamps map, or the
// user-space fallback. StoreTx is called from the sender's real-time thread and must not
// block.
type TxStamps interface {
	LoadTx(link uint8) TxStamp
	StoreTx(link uint8, t TxStamp)
}

// Sender emits one echo-requesting heartbeat per link and interval. SendAll is the pure step;
// Run drives it on a dedicated real-time thread.
type Sender struct {
	cfg    SenderConfig
	seq    [MaxLinks]uint64
	frames [][]byte // the last frame of each link
	sent   [MaxLinks]atomic.Uint64
	errs   [MaxLinks]atomic.Uint64
	lastEr atomic.Pointer[error]
	// Wake-ups more than an interval after their deadline, and the worst since TakeLate.
	late, worstLate, worstAt atomic.Uint64
	tx                       [MaxLinks]TxStamp // the last stamps, owned by Run
	// releaseUntil is the CLOCK_MONOTONIC time until which Run's raw sleeps give the P back
	// (ReleaseUntil); released counts the sleeps that did; parked counts the sleeps parked
	// because work waited (SenderConfig.Waiting).
	releaseUntil, released, parked atomic.Uint64
}

// ReleaseUntil makes Run sleep the ordinary way, handing its P back to the Go scheduler while
// asleep, until CLOCK_MONOTONIC time t (or a later t given before); it takes effect from Run's
// next sleep. The daemon calls it while the cluster changes (a peer or link event, an
// election): there the rest of the daemon needs every P, on a machine with few CPUs all of
// them, while in a steady cluster the raw sleeps are cheaper (see Run). Safe from any
// goroutine; it never blocks.
func (s *Sender) ReleaseUntil(t uint64) {
	for {
		cur := s.releaseUntil.Load()
		if t <= cur || s.releaseUntil.CompareAndSwap(cur, t) {
			return
		}
	}
}

// ReleasedCount returns how many of Run's sleeps gave the P back at intervals where it would
// otherwise have kept it (ReleaseUntil).
func (s *Sender) ReleasedCount() uint64 { return s.released.Load() }

// ParkedCount returns how many of Run's sleeps parked in the Go scheduler because work waited
// (SenderConfig.Waiting).
func (s *Sender) ParkedCount() uint64 { return s.parked.Load() }

// stampTx publishes, before the sends of a wake-up at now, that the next send is due by due.
// It runs before the send so that an echo recorded after it sees the gap this send closes.
func (s *Sender) stampTx(now, due uint64) {
	if s.cfg.Stamps == nil {
		return
	}
	for id := range s.cfg.Links {
		s.tx[id] = s.tx[id].Next(now, due)
		s.cfg.Stamps.StoreTx(uint8(id), s.tx[id])
	}
}

// LateStats says how often the sender woke up more than an interval after a deadline.
type LateStats struct {
	Count   uint64 // since start
	WorstNS uint64 // the latest wake-up since the previous TakeLate, ns after its deadline; 0 none
	AtNS    uint64 // when it woke up (CLOCK_MONOTONIC)
}

// TakeLate returns the late wake-ups and resets the worst one.
func (s *Sender) TakeLate() LateStats {
	at := s.worstAt.Swap(0)
	return LateStats{Count: s.late.Load(), WorstNS: s.worstLate.Swap(0), AtNS: at}
}

// LateCount returns how many wake-ups came more than an interval after their deadline.
func (s *Sender) LateCount() uint64 { return s.late.Load() }

// noteLate records a wake-up late ns after its deadline, at now.
func (s *Sender) noteLate(late, now uint64) {
	s.late.Add(1)
	if late > s.worstLate.Load() {
		// Only the sender writes a larger value; TakeLate may reset it meanwhile, which at
		// worst reports this one next time without its time: keep them together.
		s.worstAt.Store(now)
		s.worstLate.Store(late)
	}
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
	frames := make([][]byte, len(cfg.Links))
	for i := range frames {
		frames[i] = make([]byte, 0, FrameSize)
	}
	return &Sender{cfg: cfg, frames: frames}, nil
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

// SendAll sends the next frame on every link through its Transmitter. A link that fails to
// send is counted and does not stop the others.
func (s *Sender) SendAll() {
	s.encodeAll()
	for id, tx := range s.cfg.Links {
		s.count(id, tx.Send(s.frames[id]))
	}
}

// encodeAll puts the next frame of every link in s.frames.
func (s *Sender) encodeAll() {
	progress := s.cfg.Progress()
	for id := range s.cfg.Links {
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
		s.frames[id] = f.AppendEncode(s.frames[id][:0], s.cfg.Key)
	}
}

func (s *Sender) count(id int, err error) {
	if err != nil {
		s.errs[id].Add(1)
		err = fmt.Errorf("send heartbeat on link %d: %w", id, err)
		s.lastEr.Store(&err)
		return
	}
	s.sent[id].Add(1)
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
//
// At intervals up to RawSleepMax the loop never gives its thread back to the Go scheduler: it
// sleeps and sends with raw system calls (the frames of all raw Ethernet links in one
// sendmmsg), so that each period costs the kernel's timer wake-up and two system calls and
// nothing else. A blocking system call every millisecond would make the runtime hand the
// thread's P to another thread and take it back each time, and keep sysmon awake; measured in
// bench/README.md. Holding the P while asleep delays a stop-the-world of the garbage collector
// by at most one interval, hence the limit; longer intervals sleep the ordinary way. It also
// leaves the rest of the daemon one P fewer: with GOMAXPROCS 2, one. While the cluster
// changes that one P is the bottleneck of a failover (the election's messages, saves and
// commits queue on it), so for a time set with ReleaseUntil the loop sleeps the ordinary way.
//
// Neither way lets the Go scheduler look at its network poller while the rest of the daemon
// is busy: with this P held and the other one's thread in a system call (a snapshot's writes
// and fsync, a log write waiting for the journal), the poller is looked at only when sysmon
// takes a P back, and sysmon, finding nothing to take for a while, sleeps 10 ms at a time.
// A heartbeat event raised then (the leader found dead) waited 5 to 25 ms in the ring
// buffer before raft heard of it, measured with perf in the membership bench. So at every
// wake-up the loop asks SenderConfig.Waiting whether such work waits, and if it does parks
// the goroutine on a Go timer for that interval: the runtime hands the P to a thread that
// polls the network at once and runs what it finds.
func (s *Sender) Run(ctx context.Context, realtime chan<- error) {
	runtime.LockOSThread()
	// The thread keeps its real-time policy and dies with the goroutine: never unlocked.
	var rtErr error
	if realtime != nil {
		rtErr = setRealtime(RealtimePriority)
		realtime <- rtErr
	}
	var stop atomic.Bool
	defer context.AfterFunc(ctx, func() { stop.Store(true) })()
	b, err := s.newBatch()
	if err != nil {
		err = fmt.Errorf("heartbeat sender: raw batch socket (sending link by link instead): %w", err)
		s.lastEr.Store(&err)
	}
	defer b.close()
	interval := uint64(s.cfg.Interval)
	raw := s.cfg.Interval <= RawSleepMax
	if s.cfg.Stamps != nil {
		for id := range s.cfg.Links {
			s.tx[id] = s.cfg.Stamps.LoadTx(uint8(id))
		}
	}
	slack := interval / TxSlackDiv
	next := MonotonicNow()
	for !stop.Load() {
		now := MonotonicNow()
		if now > next+interval {
			next = now // fell far behind (stopped process): do not burst to catch up
		}
		s.stampTx(now, next+interval+slack)
		s.sendBatch(b)
		next += interval
		switch {
		case !raw:
			sleepUntil(next)
		case s.cfg.Waiting != nil && s.cfg.Waiting():
			s.parked.Add(1)
			parkUntil(next)
		case now < s.releaseUntil.Load():
			s.released.Add(1)
			sleepUntil(next)
		default:
			rawSleepUntil(next)
		}
		if now := MonotonicNow(); now > next+interval {
			s.noteLate(now-next, now)
		}
	}
}

// RawSleepMax is the longest interval at which Run sleeps without releasing its P.
const RawSleepMax = 2 * time.Millisecond

// frameLink is a transmitter of raw Ethernet frames that the sender may address directly by
// interface index, from its own socket.
type frameLink interface {
	frameIfindex() int
}

// batch sends the frames of all raw Ethernet links with one sendmmsg on a send-only AF_PACKET
// socket (protocol 0: it receives nothing). The message headers point at the sender's frame
// buffers, which encodeAll refills in place.
type batch struct {
	fd    int
	links []int // link ids, in message order
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	addrs []unix.RawSockaddrLinklayer
}

// newBatch opens the batch socket for the raw links, or returns nil (no error) if there are
// none. A nil batch sends every link through its Transmitter.
func (s *Sender) newBatch() (*batch, error) {
	var links, ifindexes []int
	for id, tx := range s.cfg.Links {
		if fl, ok := tx.(frameLink); ok {
			links = append(links, id)
			ifindexes = append(ifindexes, fl.frameIfindex())
		}
	}
	if len(links) == 0 {
		return nil, nil
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket(AF_PACKET, SOCK_DGRAM, 0): %w", err)
	}
	b := &batch{fd: fd, links: links, msgs: make([]unix.Mmsghdr, len(links)),
		iovs: make([]unix.Iovec, len(links)), addrs: make([]unix.RawSockaddrLinklayer, len(links))}
	for i, ifindex := range ifindexes {
		b.addrs[i] = unix.RawSockaddrLinklayer{Family: unix.AF_PACKET, Protocol: htons(EtherType),
			Ifindex: int32(ifindex), Halen: 6, Addr: [8]uint8{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
		b.msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.addrs[i]))
		b.msgs[i].Hdr.Namelen = unix.SizeofSockaddrLinklayer
		b.msgs[i].Hdr.Iov = &b.iovs[i]
		b.msgs[i].Hdr.Iovlen = 1
	}
	return b, nil
}

func (b *batch) close() {
	if b != nil {
		unix.Close(b.fd)
	}
}

// sendBatch encodes the next frames and sends them: the raw links' with one raw sendmmsg,
// any others through their Transmitters.
func (s *Sender) sendBatch(b *batch) {
	if b == nil {
		s.SendAll()
		return
	}
	s.encodeAll()
	for i, id := range b.links {
		b.iovs[i].Base = unsafe.SliceData(s.frames[id])
		b.iovs[i].SetLen(len(s.frames[id]))
	}
	for i := 0; i < len(b.msgs); {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(b.fd), uintptr(unsafe.Pointer(&b.msgs[i])),
			uintptr(len(b.msgs)-i), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e != 0 || r == 0:
			// The message at i failed; the ones after it were not tried.
			s.count(b.links[i], fmt.Errorf("sendmmsg: %w", e))
			i++
		default:
			for range r {
				s.count(b.links[i], nil)
				i++
			}
		}
	}
	if len(b.links) < len(s.cfg.Links) {
		raw := 0
		for id, tx := range s.cfg.Links {
			if raw < len(b.links) && b.links[raw] == id {
				raw++
				continue
			}
			s.count(id, tx.Send(s.frames[id]))
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

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

// parkUntil sleeps on a Go timer: the goroutine parks and the scheduler runs other work (and
// polls the network) on its P meanwhile.
func parkUntil(deadline uint64) {
	if now := MonotonicNow(); deadline > now {
		time.Sleep(time.Duration(deadline - now))
	}
}

// rawSleepUntil sleeps like sleepUntil without telling the Go scheduler: the thread keeps its
// P. Signals (the runtime's preemption requests among them) interrupt the sleep, which then
// goes on to the same absolute deadline.
func rawSleepUntil(deadline uint64) {
	ts := unix.NsecToTimespec(int64(deadline))
	for {
		_, _, e := unix.RawSyscall6(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME,
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != unix.EINTR {
			return
		}
	}
}
