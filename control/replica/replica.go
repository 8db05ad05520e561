package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"vigil/control/clusterdb"
	"vigil/control/transport"
)

// ReplicaConfig configures a Replica.
type ReplicaConfig struct {
	Core      Config
	Transport transport.Transport
	// TickInterval is the length of one raft tick (default 10ms).
	TickInterval time.Duration
	Log          *slog.Logger
	// Now is the wall clock (default time.Now); it stamps the core's own commands.
	Now func() time.Time
	// Unsettled, when set, is called after each Ready in which this node knows no leader
	// (an election may be on) or noted a change of leader or quorum: the daemon gives the
	// raft work that follows all its CPU (heartbeat.Sender.ReleaseUntil). It runs under the
	// replica's lock and must not block.
	Unsettled func()
}

// Replica runs a Core: one goroutine feeds it ticks and the raft messages peers send over
// the transport, and sends what it hands back; callers propose and read through it. All calls
// on the Core are serialised by one mutex, so every Ready is handled in order.
type Replica struct {
	cfg  ReplicaConfig
	log  *slog.Logger
	tr   transport.Transport
	self uint64

	mu      sync.Mutex
	core    *Core
	waiters map[uint64]chan Done
	peers   map[uint64]*peerSender
	watch   []chan struct{} // woken after every applied change (vigil log --follow)
	closed  bool
	nudging bool // a goroutine repeats the early election's campaign (see nudge)

	inbox  chan received
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// peerSender carries this node's messages to one peer on its own stream.
type peerSender struct {
	id    uint64
	queue chan outMsg
}

// received is what a stream hands the loop, in the order the stream delivered it: a raft
// message, or (m nil) the end of the stream, closed by the peer's end (Core.StreamClosed).
// The end goes through the same queue as the messages: were it handed to the core directly,
// it could overtake the stream's last messages still queued, and a message stepped after the
// closure says the closure was not the peer's last word (a killed leader would not be taken
// for gone).
type received struct {
	m      *raftpb.Message
	closed uint64
}

type outMsg struct {
	data     []byte
	snap     bool
	election bool // one of an election's messages (logged when it cannot be sent)
}

const (
	inboxSize     = 4096
	peerQueueSize = 1024
)

// slowSave is how long a save of raft's state may take before the replica logs it (debug):
// on this project's test machines an fsync takes about 0.2 ms, and now and then 15-35 ms
// (the virtual disk's flush), which a failover's trace must show.
const slowSave = 2 * time.Millisecond

// timedStorage logs the saves that took slowSave or longer.
type timedStorage struct {
	Storage
	log *slog.Logger
}

func (t timedStorage) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	start := time.Now()
	err := t.Storage.Save(hs, ents, snap)
	if d := time.Since(start); d >= slowSave {
		t.log.Debug("raft state saved slowly", "took_ms", float64(d.Microseconds())/1000,
			"entries", len(ents), "term", hs.GetTerm(), "vote", hs.GetVote())
	}
	return err
}

// StartReplica restores the core from its storage and starts the loop. The caller must Close
// it.
func StartReplica(cfg ReplicaConfig) (*Replica, error) {
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 10 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	coreCfg := cfg.Core
	coreCfg.Storage = timedStorage{Storage: cfg.Core.Storage, log: cfg.Log}
	core, err := NewCore(coreCfg)
	if err != nil {
		return nil, err
	}
	ln, err := cfg.Transport.Listen(transport.ServiceRaft)
	if err != nil {
		return nil, fmt.Errorf("replica: listen for raft messages: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Replica{
		cfg: cfg, log: cfg.Log, tr: cfg.Transport, self: cfg.Core.ID, core: core,
		waiters: map[uint64]chan Done{}, peers: map[uint64]*peerSender{},
		inbox: make(chan received, inboxSize), ctx: ctx, cancel: cancel,
	}
	st := core.Status()
	r.log.Info("cluster database opened", "applied", st.Applied, "last_index", st.LastIndex,
		"snapshot_index", st.SnapshotIndex, "voters", st.Voters, "role", string(cfg.Core.Role))
	r.wg.Go(func() { r.accept(ctx, ln) })
	r.wg.Go(func() { r.loop(ctx) })
	return r, nil
}

// Close stops the replica; waiting callers get ErrStopped.
func (r *Replica) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	for seq, ch := range r.waiters {
		ch <- Done{Seq: seq, Err: ErrStopped}
		delete(r.waiters, seq)
	}
	for _, w := range r.watch {
		close(w)
	}
	r.watch = nil
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	return nil
}

func (r *Replica) loop(ctx context.Context) {
	t := time.NewTicker(r.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			r.core.Tick(r.cfg.Now())
			r.process()
			r.mu.Unlock()
		case in := <-r.inbox:
			r.mu.Lock()
			for {
				r.step(in)
				// Step everything that arrived before one Ready: fewer fsyncs under load.
				select {
				case in = <-r.inbox:
					continue
				default:
				}
				break
			}
			r.process()
			r.mu.Unlock()
		}
	}
}

// step hands the core one message or stream end. r.mu is held.
func (r *Replica) step(in received) {
	if in.m == nil {
		r.core.StreamClosed(in.closed)
		return
	}
	if electionMsg(in.m.GetType()) {
		r.log.Debug("raft election message in", "from", in.m.GetFrom(), "type", in.m.GetType().String(),
			"term", in.m.GetTerm(), "reject", in.m.GetReject())
	}
	if err := r.core.Step(in.m); err != nil && !errors.Is(err, ErrFaulted) {
		r.log.Debug("raft message refused", "from", in.m.GetFrom(), "type", in.m.GetType().String(), "err", err)
	}
}

// electionMsg reports whether t is one of the messages of an election. They are few (a
// handful per election), and a slow failover's trace needs each of them: the driver logs them
// (debug) as they come in and go out.
func electionMsg(t raftpb.MessageType) bool {
	switch t {
	case raftpb.MsgPreVote, raftpb.MsgPreVoteResp, raftpb.MsgVote, raftpb.MsgVoteResp:
		return true
	}
	return false
}

// process runs the core's Ready and dispatches its output: the messages raft lets go before
// the save are queued as the core hands them over, and their senders run before the save
// (handoff), so they travel while the fsync runs; the others go after it, and their senders
// run before the notes are logged. r.mu is held.
//
// Queuing alone is not enough. Of the two scheduler Ps of a 2-CPU node, the heartbeat sender
// holds one; a sender goroutine made runnable here would wait on the other, which this
// goroutine keeps through the fsync (a blocking system call gives its P up only when sysmon
// takes it back, after 20 µs to 10 ms). In a full bench run of kill -9 failovers (2026-12-05,
// 30 runs) the candidate's "early" vote requests reached the voter only after the candidate's
// save in 22 runs, 0.5–1.3 ms after they were queued: the two fsyncs ran one after the other.
// runtime.Gosched puts this goroutine behind the runnable ones, so the senders write to their
// sockets first (each a few microseconds); it does not block.
func (r *Replica) process() {
	var unsent []*raftpb.Message
	queue := func(m *raftpb.Message) {
		if !r.enqueue(m) {
			unsent = append(unsent, m)
		}
	}
	out, err := r.core.ReadyTo(queue, runtime.Gosched)
	for _, m := range out.Messages {
		queue(m)
	}
	if len(out.Messages) > 0 {
		runtime.Gosched()
	}
	for _, m := range unsent {
		r.dropped(m)
	}
	for _, d := range out.Done {
		if ch, ok := r.waiters[d.Seq]; ok {
			ch <- d
			delete(r.waiters, d.Seq)
		}
	}
	changed, unsettled := false, r.core.Leader() == 0
	for _, n := range out.Notes {
		r.logNote(n)
		changed = changed || n.Kind == NoteEvent || n.Kind == NoteSnapshot
		unsettled = unsettled || n.Kind == NoteLeader || n.Kind == NoteQuorum
	}
	if unsettled && r.cfg.Unsettled != nil {
		r.cfg.Unsettled()
	}
	if changed {
		for _, w := range r.watch {
			close(w)
		}
		r.watch = nil
	}
	if err != nil && len(out.Notes) == 0 {
		r.log.Debug("cluster database faulted", "err", err)
	}
	if !r.nudging && !r.closed && r.core.Campaigning() {
		r.nudging = true
		r.wg.Go(r.nudge)
	}
}

// nudge repeats the campaign of an early election every millisecond until a leader is known:
// the other voters ignore a pre-vote until they have seen the leader go too.
func (r *Replica) nudge() {
	defer func() {
		r.mu.Lock()
		r.nudging = false
		r.mu.Unlock()
	}()
	for range 2 * r.core.cfg.ElectionTick * int(max(r.cfg.TickInterval/time.Millisecond, 1)) {
		select {
		case <-r.ctx.Done():
			return
		case <-time.After(time.Millisecond):
		}
		r.mu.Lock()
		again := !r.closed && r.core.Nudge()
		if again {
			r.process()
		}
		r.mu.Unlock()
		if !again {
			return
		}
	}
}

func (r *Replica) logNote(n Note) {
	switch n.Kind {
	case NoteLeader:
		if n.Leader == 0 {
			r.log.Warn("raft: no leader", "term", n.Term)
		} else {
			r.log.Info("raft leader", "leader", n.Leader, "term", n.Term, "self", n.Leader == r.self)
		}
	case NoteQuorum:
		if n.Quorate {
			r.log.Info("quorum gained", "detail", n.Text, "leader", n.Leader, "term", n.Term)
		} else {
			r.log.Warn("quorum lost: changes are refused and reads are stale", "detail", n.Text, "term", n.Term)
		}
	case NoteState:
		r.log.Info("membership state", "state", string(n.State))
	case NoteEvent:
		e := n.Event
		r.log.Info("cluster event", "index", e.Index, "kind", string(e.Kind), "about_node", e.Node, "who", e.Who, "what", e.What)
	case NoteRejected:
		r.log.Warn("cluster database refused an entry", "index", n.Index, "err", n.Err)
	case NoteConf:
		r.log.Info("raft configuration changed", "index", n.Index, "change", n.Text, "voters", n.Voters)
	case NoteFault:
		r.log.Error("cluster database faulted: this node no longer takes part", "err", n.Err)
	case NoteCampaign:
		r.log.Info("early election", "detail", n.Text)
	case NoteLeaderGone:
		r.log.Info("leader gone", "detail", n.Text)
	case NoteGoneIgnored:
		r.log.Debug("peer reported gone, no early election", "detail", n.Text, "term", n.Term)
	case NoteRaftState:
		r.log.Debug("raft state", "state", n.Text, "term", n.Term)
	case NoteSnapshot:
		r.log.Debug("snapshot", "index", n.Index, "detail", n.Text)
	case NoteReconciled:
		r.log.Debug("membership record", "detail", n.Text)
	}
}

// dropped tells raft that m did not go: the peer is unreachable, and so is a snapshot.
func (r *Replica) dropped(m *raftpb.Message) {
	r.core.ReportUnreachable(m.GetTo())
	if m.GetType() == raftpb.MsgSnap {
		r.core.ReportSnapshot(m.GetTo(), false)
	}
}

// enqueue queues m for its peer and reports whether it was queued (false: the peer's queue
// is full, or m could not be marshalled; raft re-sends, and process reports the peer
// unreachable). It does not call into the core, so it may run in the middle of a Ready
// (Core.ReadyTo's early messages). r.mu is held: raft's messages are marshalled here, inside
// the loop, as raft's doc.go asks.
func (r *Replica) enqueue(m *raftpb.Message) bool {
	to := m.GetTo()
	if to == r.self {
		return true
	}
	data, err := proto.Marshal(m)
	if err != nil {
		r.log.Error("marshal raft message", "err", err)
		return false
	}
	p := r.peers[to]
	if p == nil {
		p = &peerSender{id: to, queue: make(chan outMsg, peerQueueSize)}
		r.peers[to] = p
		r.wg.Go(func() { r.sender(r.ctx, p) })
	}
	election := electionMsg(m.GetType())
	select {
	case p.queue <- outMsg{data: data, snap: m.GetType() == raftpb.MsgSnap, election: election}:
		if election {
			r.log.Debug("raft election message out", "to", to, "type", m.GetType().String(),
				"term", m.GetTerm(), "reject", m.GetReject())
		}
		return true
	default:
		if election {
			r.log.Debug("raft election message dropped: the peer's queue is full", "to", to,
				"type", m.GetType().String(), "term", m.GetTerm())
		}
		return false
	}
}

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// sender keeps one stream to the peer and writes the queued messages to it.
//
// A stream the peer's end has closed (its daemon broke its streams to this node on a false
// "peer down", or restarted) would swallow the next message whole: the write succeeds, the
// peer's kernel answers with a reset. So a goroutine waits on each stream for its end (the peer
// sends nothing on it), which fails the stream, and a message whose write fails is written
// again once on a new stream: a failed write handed no whole frame to the peer, so the second
// is never a duplicate. (Raft re-sends most messages on its own, but never a vote request: a
// lost one made the election wait for raft's election timeout.)
func (r *Replica) sender(ctx context.Context, p *peerSender) {
	var conn transport.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	backoff := time.Duration(0)
	for {
		var m outMsg
		select {
		case <-ctx.Done():
			return
		case m = <-p.queue:
		}
		sent := false
		for attempt := 0; attempt < 2 && !sent; attempt++ {
			fresh := conn == nil
			if fresh {
				dctx, cancel := context.WithTimeout(ctx, time.Second)
				c, err := r.tr.Dial(dctx, transport.NodeID(p.id), transport.ServiceRaft)
				cancel()
				if err != nil {
					break
				}
				conn, backoff = c, 0
				r.wg.Go(func() { watchEnd(ctx, c) })
			}
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Send(sctx, m.data)
			cancel()
			if err == nil {
				sent = true
				break
			}
			conn.Close()
			conn = nil
			if fresh || ctx.Err() != nil {
				break // a stream just opened failed: the peer is not there
			}
		}
		if !sent {
			if m.election {
				r.log.Debug("raft election message not sent: no stream to the peer", "to", p.id)
			}
			r.unreachable(p.id, m.snap)
			if conn == nil && ctx.Err() == nil {
				// Drop what is queued meanwhile: raft re-sends on its own.
				backoff = min(max(2*backoff, 5*time.Millisecond), 100*time.Millisecond)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				r.drain(p)
			}
			continue
		}
		if m.snap {
			r.mu.Lock()
			if !r.closed {
				r.core.ReportSnapshot(p.id, true)
			}
			r.mu.Unlock()
		}
	}
}

// watchEnd waits for the end of a stream this node opened: the peer sends nothing on it, so
// Recv returns only when the stream fails (the peer closed it, or this node did), and a failed
// stream refuses the next Send before writing anything.
func watchEnd(ctx context.Context, c transport.Conn) {
	for {
		if _, err := c.Recv(ctx); err != nil {
			return
		}
	}
}

func (r *Replica) drain(p *peerSender) {
	for {
		select {
		case m := <-p.queue:
			if m.snap {
				r.unreachable(p.id, true)
			}
			if m.election {
				r.log.Debug("raft election message dropped: the peer was unreachable", "to", p.id)
			}
		default:
			return
		}
	}
}

func (r *Replica) unreachable(id uint64, snap bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.core.ReportUnreachable(id)
	if snap {
		r.core.ReportSnapshot(id, false)
	}
}

// accept receives the streams peers open to this node's raft service.
func (r *Replica) accept(ctx context.Context, ln transport.Listener) {
	defer ln.Close()
	for {
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		r.wg.Go(func() { r.receive(ctx, c) })
	}
}

func (r *Replica) receive(ctx context.Context, c transport.Conn) {
	defer c.Close()
	peer := uint64(c.Peer())
	for {
		data, err := c.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && closedByPeer(err) {
				// Behind the messages this stream delivered (see received).
				select {
				case r.inbox <- received{closed: peer}:
				case <-ctx.Done():
				}
			}
			return
		}
		m := &raftpb.Message{}
		if err := proto.Unmarshal(data, m); err != nil {
			r.log.Warn("bad raft message; closing the stream", "peer", peer, "err", err)
			return
		}
		if m.GetFrom() != peer || m.GetTo() != r.self {
			r.log.Warn("raft message with wrong addresses; closing the stream", "peer", peer,
				"from", m.GetFrom(), "to", m.GetTo())
			return
		}
		select {
		case r.inbox <- received{m: m}:
		case <-ctx.Done():
			return
		}
	}
}

// wait registers a waiter for seq. r.mu is held.
func (r *Replica) waiter(seq uint64) chan Done {
	ch := make(chan Done, 1)
	r.waiters[seq] = ch
	return ch
}

func (r *Replica) await(ctx context.Context, seq uint64, ch chan Done) (Done, error) {
	select {
	case d := <-ch:
		return d, d.Err
	case <-ctx.Done():
		// Say why when the node lost its quorum meanwhile (ErrNoQuorum), not only that time ran out.
		r.mu.Lock()
		delete(r.waiters, seq)
		err := r.core.expired()
		r.mu.Unlock()
		return Done{}, fmt.Errorf("%w: %w", err, ctx.Err())
	}
}

// do runs a request on the core and waits for its outcome. While no leader is known (an
// election is under way), it waits up to two election timeouts for one before it gives up with
// ErrNoQuorum: nothing was proposed yet, so waiting is safe.
func (r *Replica) do(ctx context.Context, f func(c *Core) (uint64, error)) (Done, error) {
	wait := time.Now().Add(time.Duration(2*r.core.cfg.ElectionTick) * r.cfg.TickInterval)
	var seq uint64
	for {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return Done{}, ErrStopped
		}
		var err error
		seq, err = f(r.core)
		if err == nil {
			break
		}
		leaderless := r.core.Leader() == 0 && r.core.Status().State != "exited"
		r.mu.Unlock()
		if !errors.Is(err, ErrNoQuorum) || !leaderless || time.Now().After(wait) {
			return Done{}, err
		}
		select {
		case <-ctx.Done():
			return Done{}, err
		case <-time.After(r.cfg.TickInterval):
		}
	}
	ch := r.waiter(seq)
	r.process()
	r.mu.Unlock()
	return r.await(ctx, seq, ch)
}

// Propose commits a command and returns what the database did with it: Result.Err says why
// it was refused (ErrRejected, ErrConflict, ...). Without quorum it fails with ErrNoQuorum.
func (r *Replica) Propose(ctx context.Context, cmd clusterdb.Command) (clusterdb.Result, error) {
	if cmd.At.IsZero() {
		cmd.At = r.cfg.Now()
	}
	d, err := r.do(ctx, func(c *Core) (uint64, error) { return c.Propose(cmd) })
	return d.Result, err
}

// AddNode adds a voting member (see Core.AddNode).
func (r *Replica) AddNode(ctx context.Context, id uint64, name string, role clusterdb.Role, who string) (clusterdb.Result, error) {
	d, err := r.do(ctx, func(c *Core) (uint64, error) { return c.AddNode(id, name, role, who) })
	return d.Result, err
}

// RemoveNode removes a member (see Core.RemoveNode).
func (r *Replica) RemoveNode(ctx context.Context, id uint64, reason, who string) (clusterdb.Result, error) {
	d, err := r.do(ctx, func(c *Core) (uint64, error) { return c.RemoveNode(id, reason, who) })
	return d.Result, err
}

// Read returns the database after a linearizable read: every change committed before Read
// was called is in it. Without quorum it fails; View then still gives the local copy.
func (r *Replica) Read(ctx context.Context) (clusterdb.View, error) {
	if _, err := r.do(ctx, func(c *Core) (uint64, error) { return c.Read() }); err != nil {
		return clusterdb.View{}, err
	}
	return r.View(), nil
}

// View returns the local copy of the database, marked stale when this node is not quorate.
func (r *Replica) View() clusterdb.View {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.View()
}

// Inspect calls f with the local database, its staleness and the core's status, under the
// replica's lock: f must not keep st or change it. It spares a copy of the database for reads
// of a few fields.
func (r *Replica) Inspect(f func(st *clusterdb.State, view clusterdb.View, status Status)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := clusterdb.View{State: r.core.State()}
	if !r.core.Quorate() {
		v.Stale, v.Reason = true, "no quorum: "+r.core.reason()
	}
	f(r.core.State(), v, r.core.Status())
}

// Status returns the core's status.
func (r *Replica) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.Status()
}

// Changed returns a channel closed after the next change to the database (or on Close).
func (r *Replica) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return closedCh
	}
	ch := make(chan struct{})
	r.watch = append(r.watch, ch)
	return ch
}

// closedByPeer reports whether a stream ended because the other end closed it: its daemon
// exited, or was killed and its kernel closed the socket.
func closedByPeer(err error) bool { return errors.Is(err, transport.ErrPeerClosed) }

// report hands the core one verdict about a peer and acts on what it decides.
func (r *Replica) report(verdict func(c *Core)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	verdict(r.core)
	r.process()
}

// PeerDown passes the heartbeat plane's verdict (peer down on every channel) to the core,
// which starts an early election if the peer led.
func (r *Replica) PeerDown(id uint64) { r.report(func(c *Core) { c.PeerDown(id) }) }

// PeerStalled passes the heartbeat plane's "stalled" (the peer's kernel answers, its daemon
// is silent) to the core (see Core.PeerStalled).
func (r *Replica) PeerStalled(id uint64) { r.report(func(c *Core) { c.PeerStalled(id) }) }

// PeerUp withdraws a PeerDown or a PeerStalled.
func (r *Replica) PeerUp(id uint64) { r.report(func(c *Core) { c.PeerUp(id) }) }
