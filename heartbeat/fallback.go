package heartbeat

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Fallback is the user-space heartbeat receiver, for hosts where XDP is unavailable or
// disabled: AF_PACKET sockets feed the same Detector the kernel rules are tested against, it
// answers echo requests itself, and a ticker sweeps. It reports the same events as the eBPF
// path, but it runs at the mercy of the scheduler: a starved or stopped daemon stops hearing
// its peers, which is what the eBPF path exists to prevent.
type Fallback struct {
	links  []Link
	sweep  time.Duration
	log    *slog.Logger
	events chan Event

	mu  sync.Mutex // guards det
	det *Detector

	sendMu sync.Mutex // held while sending on or closing events
	closed bool

	tx [MaxLinks]struct{ sent, due, gap atomic.Uint64 } // the sender's stamps (TxStamps)
}

// LoadTx returns the sender's last stamp of link (TxStamps).
func (f *Fallback) LoadTx(link uint8) TxStamp {
	t := &f.tx[link%MaxLinks]
	return TxStamp{SentNS: t.sent.Load(), DueNS: t.due.Load(), GapNS: t.gap.Load()}
}

// StoreTx records the sender's stamp of link (TxStamps); the detector gets it before its next
// Receive or Sweep.
func (f *Fallback) StoreTx(link uint8, s TxStamp) {
	t := &f.tx[link%MaxLinks]
	t.gap.Store(s.GapNS)
	t.sent.Store(s.SentNS)
	t.due.Store(s.DueNS)
}

// syncTx hands the sender's stamps to the detector; f.mu must be held.
func (f *Fallback) syncTx() {
	for l := range uint8(len(f.links)) {
		f.det.SetTx(l, f.LoadTx(l))
	}
}

// NewFallback returns a receiver for det over links (indexed by link id), sweeping every sweep.
func NewFallback(det *Detector, links []Link, sweep time.Duration, log *slog.Logger) *Fallback {
	return &Fallback{det: det, links: links, sweep: sweep, log: log, events: make(chan Event, 4096)}
}

// Events delivers the transitions. It is closed when Run returns.
func (f *Fallback) Events() <-chan Event { return f.events }

// Run receives and sweeps until ctx ends.
func (f *Fallback) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, l := range f.links {
		wg.Go(func() { f.receive(ctx, l) })
	}
	t := time.NewTicker(f.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			f.sendMu.Lock()
			f.closed = true
			close(f.events)
			f.sendMu.Unlock()
			return
		case <-t.C:
			f.sweepNow()
		}
	}
}

func (f *Fallback) sweepNow() {
	f.mu.Lock()
	f.syncTx()
	evs := f.det.Sweep(MonotonicNow())
	f.mu.Unlock()
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	for _, ev := range evs {
		if !f.closed {
			f.events <- ev
		}
	}
}

func (f *Fallback) receive(ctx context.Context, l Link) {
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, src, err := l.Receive(buf, time.Now().Add(100*time.Millisecond))
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
				f.log.Warn("fallback receive", "interface", l.Name(), "err", err)
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		f.mu.Lock()
		f.syncTx()
		_, reply := f.det.Receive(MonotonicNow(), l.Ifindex(), src.MAC, buf[:n])
		f.mu.Unlock()
		if reply != nil {
			if err := l.Reply(reply, src); err != nil && ctx.Err() == nil {
				f.log.Warn("fallback echo reply", "interface", l.Name(), "err", err)
			}
		}
	}
}

// Slot returns the detector's slot of (peer, link).
func (f *Fallback) Slot(peer uint16, link uint8) (Slot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.det.Slot(peer, link), nil
}

// Peer returns the detector's view of a peer.
func (f *Fallback) Peer(id uint16) (Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.det.Peer(id), nil
}

// Counters returns the detector's counters.
func (f *Fallback) Counters() ([NumCounters]uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.det.Counters(), nil
}

// SetLinkDown records a local carrier change and sweeps at once.
func (f *Fallback) SetLinkDown(link uint8, down bool) error {
	f.mu.Lock()
	f.det.SetLinkDown(link, down)
	f.mu.Unlock()
	f.sweepNow()
	return nil
}
