package heartbeat

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// The types below restate those of bpf/heartbeat.h field for field, so that the kernel path
// (dataplane/) can convert what the XDP program and its sweep record into them and both paths
// hand the same values to the control layer.

// LinkNone is Event.Link in peer and jeopardy events.
const LinkNone = 0xff

// LinkState is the state of one (peer, link) slot (enum hb_link_state).
type LinkState uint32

// Link states.
const (
	LinkDown LinkState = 0
	LinkUp   LinkState = 1
)

func (s LinkState) String() string {
	switch s {
	case LinkDown:
		return "down"
	case LinkUp:
		return "up"
	}
	return fmt.Sprintf("LinkState(%d)", uint32(s))
}

// PeerState is what the detector believes about a peer (enum hb_peer_state).
type PeerState uint32

// Peer states.
const (
	PeerUnknown PeerState = 0 // nothing heard yet, within the start-up grace
	PeerAlive   PeerState = 1
	PeerStalled PeerState = 2 // its kernel answers on some link, its daemon does not
	PeerDown    PeerState = 3
)

func (s PeerState) String() string {
	switch s {
	case PeerUnknown:
		return "unknown"
	case PeerAlive:
		return "alive"
	case PeerStalled:
		return "stalled"
	case PeerDown:
		return "down"
	}
	return fmt.Sprintf("PeerState(%d)", uint32(s))
}

// Counter is the fate of one received heartbeat payload, or (CounterCatchup) a sweep
// that ran late (enum hb_counter, same order).
type Counter int

// Counters. The first three count work done; the others name the check that rejected a frame,
// listed in the order Receive applies them (after CounterNotConfigured, which comes first).
const (
	CounterData          Counter = iota // valid data frames recorded
	CounterEchoReply                    // valid echo replies recorded
	CounterEchoSent                     // echo replies handed back to the caller to send
	CounterMalformed                    // short, reserved bytes set, bad flags or link id
	CounterVersion                      // unknown frame version
	CounterCluster                      // another cluster's frame
	CounterBadMAC                       // not authenticated by the cluster key
	CounterUnknownPeer                  // a node id that is not a configured peer
	CounterWrongLink                    // link id differs from the receiving interface's
	CounterReplay                       // old incarnation or sequence number
	CounterNotConfigured                // received on an interface that carries no link
	// CounterCatchup counts no frame: sweeps of a peer that ran late and opened a catch-up
	// window (pause compensation).
	CounterCatchup
	// CounterHeld counts, in those sweeps, the UP links that were stale and held: link downs
	// that pause compensation withheld.
	CounterHeld
	NumCounters
)

var counterNames = [NumCounters]string{
	"data", "echo_reply", "echo_sent", "malformed", "version", "cluster", "bad_mac",
	"unknown_peer", "wrong_link", "replay", "not_configured", "catchup", "held",
}

// String returns the counter's name, the suffix of its HB_C_ constant in lower case.
func (c Counter) String() string {
	if c >= 0 && c < NumCounters {
		return counterNames[c]
	}
	return fmt.Sprintf("Counter(%d)", int(c))
}

// EventKind says what an Event is about (enum hb_event_kind).
type EventKind uint8

// Event kinds.
const (
	EventLink     EventKind = 1 // State and OldState are LinkStates
	EventPeer     EventKind = 2 // State and OldState are PeerStates
	EventJeopardy EventKind = 3 // State is 1 when entered, 0 when left
)

func (k EventKind) String() string {
	switch k {
	case EventLink:
		return "link"
	case EventPeer:
		return "peer"
	case EventJeopardy:
		return "jeopardy"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one transition seen by a sweep (struct hb_event).
type Event struct {
	NowNS      uint64 // time of the sweep that saw it
	LastSeenNS uint64 // last valid frame on the link (link events) or on any link (the others)
	Peer       uint16
	Link       uint8 // LinkNone unless Kind is EventLink
	Kind       EventKind
	State      uint32
	OldState   uint32
	LinksUp    uint32 // the peer's links up once the sweep is done
}

// String describes the transition for logs, for example "peer 2 link 0 down (was up; 1 link
// up)".
func (e Event) String() string {
	links := "links"
	if e.LinksUp == 1 {
		links = "link"
	}
	switch e.Kind {
	case EventLink:
		return fmt.Sprintf("peer %d link %d %v (was %v; %d %s up)",
			e.Peer, e.Link, LinkState(e.State), LinkState(e.OldState), e.LinksUp, links)
	case EventPeer:
		return fmt.Sprintf("peer %d %v (was %v; %d %s up)",
			e.Peer, PeerState(e.State), PeerState(e.OldState), e.LinksUp, links)
	case EventJeopardy:
		verb := "out of"
		if e.State != 0 {
			verb = "in"
		}
		return fmt.Sprintf("peer %d %s jeopardy (%d %s up)", e.Peer, verb, e.LinksUp, links)
	}
	return fmt.Sprintf("peer %d %v event %d->%d", e.Peer, e.Kind, e.OldState, e.State)
}

// Slot is what the detector knows of one (peer, link) (struct hb_slot). Times are the
// receiver's CLOCK_MONOTONIC in nanoseconds; zero means never.
type Slot struct {
	LastDataNS  uint64 // last valid data frame
	LastEchoNS  uint64 // last valid echo reply
	Incarnation uint64 // the peer's, from its data frames
	LastSeq     uint64 // last data seq accepted
	LastEchoSeq uint64 // our seq in the last echo reply accepted
	RxData      uint64
	RxEcho      uint64
	Lost        uint64 // data frames missing by sequence gaps
	LastRTTNS   uint64
	SRTTNS      uint64 // smoothed: SRTTNS += (rtt - SRTTNS) / 8
	Progress    uint64 // the peer's last progress counter
	ProgressNS  uint64 // when Progress last changed
	SinceNS     uint64 // when State last changed
	State       LinkState
	Rise        uint32 // frames in a row, no more than DetectNS apart
	PeerMAC     [6]byte
	EchoGapNS   uint64 // the sender's TxStamp.GapNS when the last echo was recorded
}

// TxStamp is what this node's sender tells the detector about its sending on one link (struct
// hb_tx): echo replies answer our own requests, so their silence is evidence only for the time
// we were sending (bpf/heartbeat.h, "Echo silence counts only while this node was sending").
type TxStamp struct {
	SentNS uint64 // the last send
	DueNS  uint64 // the next send is due by then; zero: no sender (plain echo ages)
	GapNS  uint64 // the total time sends came after the DueNS before them
}

// Next returns the stamp after a send at now that promises the next send by due: a send
// after the previous DueNS adds its lateness to GapNS.
func (t TxStamp) Next(now, due uint64) TxStamp {
	gap := t.GapNS
	if t.DueNS != 0 && now > t.DueNS {
		gap += now - t.DueNS
	}
	return TxStamp{SentNS: now, DueNS: due, GapNS: gap}
}

// TxSlack is how long after its next deadline a send still counts as punctual, as a fraction
// of the interval: TxStamp.DueNS = next deadline + interval / TxSlackDiv.
const TxSlackDiv = 2

// seen is the time of the last valid frame of either kind.
func (s *Slot) seen() uint64 { return max(s.LastDataNS, s.LastEchoNS) }

// Peer is what the detector believes about one peer (struct hb_peer).
type Peer struct {
	SinceNS    uint64 // when State last changed
	StalledNS  uint64 // when it last became STALLED; zero once ALIVE again
	State      PeerState
	LinksUp    uint32
	Jeopardy   bool
	Configured bool
	SweptNS    uint64 // the last Sweep that examined it
	// HoldFromNS and HoldUntilNS are the pause compensation's catch-up window: what was
	// fresh at HoldFromNS (the sweep before a late one) is held until HoldUntilNS.
	HoldFromNS, HoldUntilNS uint64
}

// Config is the detector's configuration (the part of struct hb_config it reads). Times are
// CLOCK_MONOTONIC nanoseconds.
type Config struct {
	ClusterID   uint32
	NodeID      uint16 // this node, 1 .. MaxNodes-1
	Key         Key
	Incarnation uint64 // this daemon's; echo replies must carry it
	// DetectNS is how long a link may stay silent before it is down: interval × multiplier.
	DetectNS uint64
	// StallTimeoutNS is how long a peer may stay STALLED before it is DOWN.
	StallTimeoutNS uint64
	// ProgressNS is how long a peer's progress counter may stand still before the peer is
	// STALLED; zero turns the check off.
	ProgressNS uint64
	Rise       uint32 // frames in a row that bring a link up
	NLinks     uint32 // links 0 .. NLinks-1 are configured
	StartNS    uint64 // when detection started: peers stay UNKNOWN until DetectNS after it
	// CatchupNS turns pause compensation on (zero: off): a Sweep that finds the previous one
	// more than DetectNS/2 ago ran late, and for CatchupNS after it a link that was fresh at
	// the previous Sweep is not taken down (bpf/heartbeat.h, "Pause compensation"). The
	// daemon uses one interval.
	CatchupNS uint64
}

// NewConfig returns a Config for a node that sends one frame per link every interval and
// declares a link down when multiplier intervals pass without one. Rise is set to multiplier:
// a link must carry as many frames in a row as it may miss before it comes back. The caller
// fills in the identity, key, links, stall timeout and start time.
func NewConfig(interval time.Duration, multiplier uint32) Config {
	var detect uint64
	if interval > 0 {
		hi, lo := bits.Mul64(uint64(interval), uint64(multiplier))
		detect = lo
		if hi != 0 {
			detect = math.MaxUint64 // Validate cannot see an overflow; saturate instead
		}
	}
	return Config{DetectNS: detect, Rise: multiplier}
}

// Validate reports the first problem of the configuration.
func (c Config) Validate() error {
	switch {
	case c.NodeID == 0 || c.NodeID >= MaxNodes:
		return fmt.Errorf("heartbeat config: node id %d, want 1..%d", c.NodeID, MaxNodes-1)
	case c.Key == Key{}:
		return errors.New("heartbeat config: no cluster key")
	case c.Incarnation == 0:
		// Zero is an empty slot's incarnation: a restarted daemon would look like a replay.
		return errors.New("heartbeat config: incarnation 0")
	case c.DetectNS == 0:
		return errors.New("heartbeat config: zero detection time")
	case c.StallTimeoutNS == 0:
		return errors.New("heartbeat config: zero stall timeout")
	case c.Rise == 0:
		return errors.New("heartbeat config: rise 0")
	case c.NLinks == 0 || c.NLinks > MaxLinks:
		return fmt.Errorf("heartbeat config: %d links, want 1..%d", c.NLinks, MaxLinks)
	}
	return nil
}

// Iface is a local interface that carries a link (struct hb_iface).
type Iface struct {
	LinkID uint8
	MAC    [6]byte // the interface's own address, source of the echo replies sent on it
}

// Detector is the failure detector of one node: the pure-Go twin of the XDP program and its
// sweep. It is a deterministic function of its configuration, the frames given to Receive and
// the times given to Receive and Sweep; it does no I/O and reads no clock.
//
// The driver feeds it every heartbeat payload received on a local interface (Receive), sends
// back the echo reply Receive may return, calls Sweep every sweep period (no longer than the
// interval) and hands the events to the control layer, calls SetLinkDown when netlink
// reports that a local interface lost or regained its carrier, and SetTx with this node's
// sender's latest stamps before Receive and Sweep. Times are CLOCK_MONOTONIC nanoseconds,
// never zero (zero means never) and never decreasing. A Detector is not safe for concurrent
// use.
type Detector struct {
	cfg       Config
	ifaces    map[int]Iface
	linksDown uint32 // bit per link without local carrier (hb_config.links_down)
	tx        [MaxLinks]TxStamp
	slots     [MaxNodes][MaxLinks]Slot
	peers     [MaxNodes]Peer
	counters  [NumCounters]uint64
}

// NewDetector returns a detector for the given peers, receiving on ifaces (by ifindex, or any
// index the driver passes to Receive). Every peer starts UNKNOWN and every link DOWN.
func NewDetector(cfg Config, peers []uint16, ifaces map[int]Iface) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, ifaces: make(map[int]Iface, len(ifaces))}
	for _, id := range peers {
		switch {
		case id == 0 || id >= MaxNodes:
			return nil, fmt.Errorf("heartbeat detector: peer id %d, want 1..%d", id, MaxNodes-1)
		case id == cfg.NodeID:
			return nil, fmt.Errorf("heartbeat detector: peer %d is this node", id)
		case d.peers[id].Configured:
			return nil, fmt.Errorf("heartbeat detector: peer %d listed twice", id)
		}
		d.peers[id].Configured = true
	}
	for ifindex, iface := range ifaces {
		if uint32(iface.LinkID) >= cfg.NLinks {
			return nil, fmt.Errorf("heartbeat detector: interface %d on link %d, want 0..%d",
				ifindex, iface.LinkID, cfg.NLinks-1)
		}
		d.ifaces[ifindex] = iface
	}
	return d, nil
}

// Counters returns how many payloads ended up in each counter since the detector was made.
func (d *Detector) Counters() [NumCounters]uint64 { return d.counters }

// Slot returns the state of (peer, link); the zero Slot for ids out of range.
func (d *Detector) Slot(peer uint16, link uint8) Slot {
	if peer >= MaxNodes || link >= MaxLinks {
		return Slot{}
	}
	return d.slots[peer][link]
}

// Peer returns the state of peer id; the zero Peer for an id out of range.
func (d *Detector) Peer(id uint16) Peer {
	if id >= MaxNodes {
		return Peer{}
	}
	return d.peers[id]
}

// Receive processes one heartbeat payload (the bytes after the Ethernet header, or a UDP
// datagram's payload) received at now on interface ifindex from srcMAC, exactly as the XDP
// program does, and counts it. The verdict is CounterData or CounterEchoReply for a frame
// recorded, otherwise the check that rejected it; a rejected frame changes nothing but its
// counter. For a data frame that asks for an echo, reply is the reflected frame (also counted
// as CounterEchoSent), which the caller sends back to srcMAC from the interface's MAC.
func (d *Detector) Receive(now uint64, ifindex int, srcMAC [6]byte, payload []byte) (verdict Counter, reply []byte) {
	verdict, reply = d.receive(now, ifindex, srcMAC, payload)
	d.counters[verdict]++
	if reply != nil {
		d.counters[CounterEchoSent]++
	}
	return verdict, reply
}

func (d *Detector) receive(now uint64, ifindex int, srcMAC [6]byte, payload []byte) (Counter, []byte) {
	// The interface comes first: without a link there is nothing to check the frame against,
	// and the kernel does not spend a SipHash on traffic it was not configured for.
	iface, ok := d.ifaces[ifindex]
	if !ok {
		return CounterNotConfigured, nil
	}
	f, err := Decode(payload, d.cfg.ClusterID, d.cfg.Key)
	switch {
	case err == nil:
	case errors.Is(err, ErrMalformed):
		return CounterMalformed, nil
	case errors.Is(err, ErrVersion):
		return CounterVersion, nil
	case errors.Is(err, ErrCluster):
		return CounterCluster, nil
	case errors.Is(err, ErrBadMAC):
		return CounterBadMAC, nil
	default:
		panic("heartbeat: Decode returned an unexpected error: " + err.Error())
	}
	if f.Flags&FlagEchoReply != 0 {
		return d.recordEcho(now, iface, &f), nil
	}
	verdict := d.recordData(now, iface, srcMAC, &f)
	if verdict != CounterData || f.Flags&FlagEchoRequest == 0 {
		return verdict, nil
	}
	// Reflect it as XDP does in place: only the flags, echo fields and MAC change.
	f.Flags = FlagEchoReply
	f.EchoNode = d.cfg.NodeID
	f.EchoNS = now
	return verdict, f.AppendEncode(make([]byte, 0, FrameSize), d.cfg.Key)
}

// recordData checks and records a data frame from the peer f.SrcNode.
func (d *Detector) recordData(now uint64, iface Iface, srcMAC [6]byte, f *Frame) Counter {
	// A data frame names no reflector; one that does is not from a peer speaking our protocol.
	if f.EchoNode != 0 || !d.isPeer(f.SrcNode) {
		return CounterUnknownPeer
	}
	if f.LinkID != iface.LinkID {
		return CounterWrongLink
	}
	s := &d.slots[f.SrcNode][f.LinkID]
	if f.Incarnation < s.Incarnation || f.Incarnation == s.Incarnation && f.Seq <= s.LastSeq {
		return CounterReplay
	}
	d.bumpRise(s, now)
	if f.Incarnation > s.Incarnation || s.RxData == 0 {
		// A restarted daemon (or the first frame): its sequence and progress counter start
		// afresh, so neither a gap nor an unchanged progress value means anything yet.
		s.Incarnation = f.Incarnation
		s.Progress = f.Progress
		s.ProgressNS = now
	} else {
		s.Lost += f.Seq - s.LastSeq - 1
		if f.Progress != s.Progress {
			s.Progress = f.Progress
			s.ProgressNS = now
		}
	}
	s.LastSeq = f.Seq
	s.LastDataNS = now
	s.RxData++
	s.PeerMAC = srcMAC
	return CounterData
}

// recordEcho checks and records the reflection of one of our own frames by peer f.EchoNode.
func (d *Detector) recordEcho(now uint64, iface Iface, f *Frame) Counter {
	if f.SrcNode != d.cfg.NodeID || !d.isPeer(f.EchoNode) {
		return CounterUnknownPeer
	}
	if f.LinkID != iface.LinkID {
		return CounterWrongLink
	}
	s := &d.slots[f.EchoNode][f.LinkID]
	if f.Incarnation != d.cfg.Incarnation || f.Seq <= s.LastEchoSeq {
		return CounterReplay
	}
	d.bumpRise(s, now)
	rtt := age(now, f.SendNS)
	switch {
	case s.RxEcho == 0:
		s.SRTTNS = rtt
	case rtt >= s.SRTTNS:
		s.SRTTNS += (rtt - s.SRTTNS) / 8
	default:
		// (rtt - srtt) / 8 is negative here: unsigned, it would wrap around.
		s.SRTTNS -= (s.SRTTNS - rtt) / 8
	}
	s.LastRTTNS = rtt
	s.EchoGapNS = d.tx[f.LinkID].GapNS
	s.LastEchoSeq = f.Seq
	s.LastEchoNS = now
	s.RxEcho++
	return CounterEchoReply
}

// isPeer reports whether id is a configured peer (which excludes 0, this node and ids out of
// range).
func (d *Detector) isPeer(id uint16) bool {
	return id < MaxNodes && d.peers[id].Configured
}

// bumpRise counts a valid frame in the slot's run of frames no more than DetectNS apart. It
// runs before the frame's time is recorded. The counter may wrap after 2^32 frames; that is
// harmless because the sweep reads it only for a link that is down, and a link that keeps
// receiving frames does not stay down.
func (d *Detector) bumpRise(s *Slot, now uint64) {
	if d.fresh(now, s.seen()) {
		s.Rise++
	} else {
		s.Rise = 1
	}
}

// fresh reports whether an event at t (zero: never) happened no more than DetectNS before now.
func (d *Detector) fresh(now, t uint64) bool {
	return t != 0 && age(now, t) <= d.cfg.DetectNS
}

// age is now - t, or zero when t is later than now. In the kernel a frame stamped on another
// CPU can be later than the sweep's clock; such a t is as fresh as it gets.
func age(now, t uint64) uint64 {
	if now > t {
		return now - t
	}
	return 0
}

// SetLinkDown records whether the local interface of link is without carrier, as netlink
// reports it (hb_config.links_down in the kernel). While it is, no slot of the link counts as
// fresh and its data frames do not keep a peer ALIVE, so the next Sweep takes the link down
// for every peer without waiting for DetectNS of silence; call Sweep at once to act on it.
// Frames that still arrive are recorded, and count towards rise: once the carrier is back the
// link comes up at the first Sweep where it has Rise frames in a row. A link outside
// 0..NLinks-1 is ignored.
//
// The state is a level rather than a mark on the slots: a frame processed after the carrier
// loss (one already queued) cannot keep the link up, and the down events still carry the
// time a frame was really last seen.
func (d *Detector) SetLinkDown(link uint8, down bool) {
	if uint32(link) >= d.cfg.NLinks {
		return
	}
	if down {
		d.linksDown |= 1 << link
	} else {
		d.linksDown &^= 1 << link
	}
}

// SetTx records what this node's sender last stamped for link (the txstamps map in the
// kernel). The driver calls it before Receive and Sweep with the sender's latest stamp; a
// link that never gets one keeps the plain echo age. A link outside 0..MaxLinks-1 is ignored.
func (d *Detector) SetTx(link uint8, tx TxStamp) {
	if link < MaxLinks {
		d.tx[link] = tx
	}
}

// echoAge is how long the echoes of s (on link) have been missing while this node's sender
// was sending: now - LastEchoNS less the time the sender was quiet since.
func (d *Detector) echoAge(s *Slot, link uint32, now uint64) uint64 {
	a := age(now, s.LastEchoNS)
	tx := d.tx[link]
	if tx.DueNS == 0 {
		return a
	}
	quiet := age(now, tx.DueNS)
	if tx.GapNS > s.EchoGapNS {
		quiet += tx.GapNS - s.EchoGapNS
	}
	return age(a, quiet)
}

// linkFresh reports whether slot s of link was heard from within DetectNS at now: its newest
// frame, or, when the slot is echo-only (its echoes outlived its last data frame by more than
// DetectNS: a STALLED peer's), its echo age.
func (d *Detector) linkFresh(s *Slot, link uint32, now uint64) bool {
	return d.fresh(now, s.seen()) ||
		s.LastEchoNS > s.LastDataNS+d.cfg.DetectNS && d.echoAge(s, link, now) <= d.cfg.DetectNS
}

// Sweep applies the detection rules of bpf/heartbeat.h at now and returns the transitions, in
// the kernel's order: peers by id, and for each its link events by link id, then its peer
// event, then its jeopardy event.
func (d *Detector) Sweep(now uint64) []Event {
	var events []Event
	for id := range d.peers {
		if d.peers[id].Configured {
			events = d.sweepPeer(events, uint16(id), now)
		}
	}
	return events
}

func (d *Detector) sweepPeer(events []Event, id uint16, now uint64) []Event {
	cfg := &d.cfg
	p := &d.peers[id]
	var (
		linksUp    uint32
		dataFresh  bool
		peerSeen   uint64
		progressNS uint64 // the latest progress change on any link
		changed    [MaxLinks]bool
		old        [MaxLinks]LinkState
		holding    bool
		late       bool // this sweep opened the window
	)
	if cfg.CatchupNS != 0 {
		if p.SweptNS != 0 && age(now, p.SweptNS) > cfg.DetectNS/2 {
			// A late pass: the sweep could not run, and neither, perhaps, could the receive path
			// or the senders on its CPU. Open a catch-up window.
			d.counters[CounterCatchup]++
			late = true
			p.HoldFromNS, p.HoldUntilNS = p.SweptNS, now+cfg.CatchupNS
		}
		holding = now < p.HoldUntilNS
	}
	p.SweptNS = now
	// held: t was fresh at the sweep before the late one, and the catch-up window is open.
	held := func(t uint64) bool { return holding && t != 0 && age(p.HoldFromNS, t) <= cfg.DetectNS }
	for link := range cfg.NLinks {
		s := &d.slots[id][link]
		carrier := d.linksDown&(1<<link) == 0
		fresh := carrier && d.linkFresh(s, link, now)
		old[link] = s.State
		switch {
		case s.State == LinkUp && !fresh && carrier && held(s.seen()):
			if late {
				d.counters[CounterHeld]++
			}
		case s.State == LinkUp && !fresh:
			s.State = LinkDown
			s.Rise = 0
		case s.State == LinkDown && fresh && s.Rise >= cfg.Rise:
			s.State = LinkUp
		}
		if s.State != old[link] {
			s.SinceNS = now
			changed[link] = true
		}
		if s.State == LinkUp {
			linksUp++
		}
		// The daemon still speaks on this link if its data is fresh, or if the link is fresh
		// and the echoes have not outlived its last data frame by more than DetectNS: when a
		// node is cut off, its last echo can arrive an interval after its last data frame,
		// and that is no stall.
		speaks := d.fresh(now, s.LastDataNS) || held(s.LastDataNS) ||
			fresh && s.LastDataNS != 0 && s.LastEchoNS <= s.LastDataNS+cfg.DetectNS
		dataFresh = dataFresh || carrier && speaks
		peerSeen = max(peerSeen, s.seen())
		progressNS = max(progressNS, s.ProgressNS)
	}
	// Link events go out once the peer's links are all swept, so that each carries the number
	// of links the peer is left with.
	for link := range cfg.NLinks {
		if changed[link] {
			s := &d.slots[id][link]
			events = append(events, Event{
				NowNS: now, LastSeenNS: s.seen(), Peer: id, Link: uint8(link), Kind: EventLink,
				State: uint32(s.State), OldState: uint32(old[link]), LinksUp: linksUp,
			})
		}
	}

	frozen := cfg.ProgressNS != 0 && age(now, progressNS) > cfg.ProgressNS
	state := p.State
	switch {
	case linksUp == 0:
		// Unreachable. A peer never heard of gets DetectNS from the start to show up, so that
		// a node starting with its peers does not see them all down first.
		if state != PeerUnknown || age(now, cfg.StartNS) > cfg.DetectNS {
			state = PeerDown
		}
	case dataFresh && !frozen:
		state = PeerAlive
	case state == PeerDown:
		// Only its daemon speaking again brings a DOWN peer back. Its kernel answering alone
		// would only send it through STALLED to DOWN again, after the control layer has
		// already acted on the DOWN.
	case state != PeerStalled:
		state = PeerStalled
		p.StalledNS = now
	case age(now, p.StalledNS) > cfg.StallTimeoutNS:
		state = PeerDown
	}
	if state == PeerAlive {
		p.StalledNS = 0
	}
	if state != p.State {
		events = append(events, Event{
			NowNS: now, LastSeenNS: peerSeen, Peer: id, Link: LinkNone, Kind: EventPeer,
			State: uint32(state), OldState: uint32(p.State), LinksUp: linksUp,
		})
		p.State = state
		p.SinceNS = now
	}
	p.LinksUp = linksUp

	if jeopardy := linksUp == 1 && cfg.NLinks >= 2; jeopardy != p.Jeopardy {
		events = append(events, Event{
			NowNS: now, LastSeenNS: peerSeen, Peer: id, Link: LinkNone, Kind: EventJeopardy,
			State: b2u(jeopardy), OldState: b2u(p.Jeopardy), LinksUp: linksUp,
		})
		p.Jeopardy = jeopardy
	}
	return events
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}
