package disk

import "time"

// State is a peer's liveness on the disk.
type State int

// The states.
const (
	Unknown State = iota // no advance seen yet
	Alive                // the slot advanced within the timeout
	Stopped              // it did not
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// PeerStatus is what the tracker knows about one peer.
type PeerStatus struct {
	State       State
	Since       time.Duration // when State began
	Seq         uint64        // last sequence read
	Incarnation uint64
	LastAdvance time.Duration // when the slot last advanced; zero if never
	WallNS      int64         // the peer's wall clock at its last write
	Err         error         // the last read's error, nil if it decoded
}

// Event is a change of a peer's state.
type Event struct {
	Peer  uint16
	State State
	Was   State
	At    time.Duration
}

type peerTrack struct {
	PeerStatus
	seen     bool // a valid slot was read once: the baseline
	advanced bool // it advanced since
}

// Tracker turns readings of the peers' slots into states. It is pure: times are given by the
// caller (any monotonic clock). A slot advances when its (incarnation, seq) changes after the
// first valid reading; the first reading is only a baseline, so a slot left on the disk by a
// node that has since died never counts as alive. A peer is Alive while its slot advanced no
// more than timeout ago, Stopped after that (once it has been seen, or timeout after the
// tracker started).
type Tracker struct {
	timeout time.Duration
	start   time.Duration
	peers   map[uint16]*peerTrack
}

// NewTracker tracks the given peers from time start.
func NewTracker(timeout, start time.Duration, peers []uint16) *Tracker {
	t := &Tracker{timeout: timeout, start: start, peers: map[uint16]*peerTrack{}}
	for _, p := range peers {
		t.peers[p] = &peerTrack{PeerStatus: PeerStatus{Since: start}}
	}
	return t
}

// Observe records a reading of peer's slot at now: s when err is nil, otherwise the error of
// the read or of Decode. It returns the peer's state change, if any.
func (t *Tracker) Observe(now time.Duration, peer uint16, s Slot, err error) []Event {
	p, ok := t.peers[peer]
	if !ok {
		return nil
	}
	p.Err = err
	if err == nil {
		if p.seen && (s.Incarnation != p.Incarnation || s.Seq != p.Seq) {
			p.LastAdvance, p.advanced = now, true
		}
		p.seen = true
		p.Incarnation, p.Seq, p.WallNS = s.Incarnation, s.Seq, s.WallNS
	}
	return t.eval(now, peer, p)
}

// Tick re-evaluates every peer at now and returns the changes, ordered by peer id.
func (t *Tracker) Tick(now time.Duration) []Event {
	var out []Event
	for id := range uint16(64) {
		if p, ok := t.peers[id]; ok {
			out = append(out, t.eval(now, id, p)...)
		}
	}
	return out
}

func (t *Tracker) eval(now time.Duration, id uint16, p *peerTrack) []Event {
	st := p.State
	switch {
	case p.advanced && now-p.LastAdvance <= t.timeout:
		st = Alive
	case p.advanced || now-t.start > t.timeout:
		st = Stopped
	}
	if st == p.State {
		return nil
	}
	ev := Event{Peer: id, State: st, Was: p.State, At: now}
	p.State, p.Since = st, now
	return []Event{ev}
}

// Peer returns the status of peer; ok is false for a peer not tracked.
func (t *Tracker) Peer(peer uint16) (PeerStatus, bool) {
	p, ok := t.peers[peer]
	if !ok {
		return PeerStatus{}, false
	}
	return p.PeerStatus, true
}
