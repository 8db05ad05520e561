package replica

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"vigil/control/clusterdb"
)

// SimOptions describe a simulated cluster.
type SimOptions struct {
	Nodes int    // voters, 1..9
	Seed  uint64 // the whole run is a function of the seed
	// Loss is the probability that a message is dropped; MaxDelay the most rounds a message
	// may be delayed (each message gets a uniform delay 0..MaxDelay).
	Loss     float64
	MaxDelay int
	// ElectionTick and HeartbeatTick of every core (defaults 10 and 1).
	ElectionTick, HeartbeatTick int
	// SnapshotEntries and KeepEntries of every core (defaults 40 and 5: small, so that
	// snapshots are sent).
	SnapshotEntries, KeepEntries uint64
	// Witnesses are the nodes that run as witnesses (vote, store the log, host nothing).
	Witnesses []uint64
	// DetectRounds is how many rounds after a node dies or is cut off the heartbeat plane
	// reports it down to the nodes that cannot reach it (PeerDown); 0 disables the reports.
	DetectRounds int
}

// SimNode is one node of a Sim: a Core over a MemoryStorage that survives its crashes.
type SimNode struct {
	ID      uint64
	Core    *Core
	Storage *MemoryStorage
	Up      bool
	// crashAtSave: the node crashes in its next Ready, after the messages raft lets go before
	// the save went out, before the save.
	crashAtSave bool
	// checked is the highest committed index already compared with the cluster's history;
	// hashed the applied index whose database was compared last.
	checked, hashed uint64
}

// Sim runs N cores on an in-memory network with seeded message loss, delay, partitions and
// crashes, and a fake clock, checking raft's safety properties as it goes: at most one leader
// per term, no committed entry lost or changed, and every node that applied up to the same
// index holds the same database. Check failures are returned as errors by the methods that
// drive it. It is deterministic: the same options give the same run.
type Sim struct {
	Opts  SimOptions
	Rng   *rand.Rand
	Nodes []*SimNode
	Round int
	Now   time.Time

	queue     []simMsg
	group     map[uint64]int // partition: nodes talk only within the same group
	downSince map[[2]uint64]int
	reported  map[[2]uint64]bool
	// killed: nodes whose daemon died while their kernel still answers the heartbeat plane
	// (kill -9): their peers see them stalled, not down. fins: stream closures on their way.
	killed map[uint64]bool
	fins   []simFin
	// stalledRep: pairs reported stalled (not down); they turn down once the node's kernel no
	// longer answers either (it restarted cut off, or a partition came between).
	stalledRep map[[2]uint64]bool

	leaders   map[uint64]uint64 // term -> leader
	committed map[uint64][]byte // index -> entry as committed (term, type, data)
	states    map[uint64]uint64 // clusterdb AppliedIndex -> hash of the snapshot bytes

	// OnDone receives the outcome of every proposal and read, by node.
	OnDone func(node uint64, d Done)
	// OnNote receives every note, by node.
	OnNote func(node uint64, n Note)
	// Drop, if set, loses the messages it returns true for (a test's targeted loss).
	Drop func(m *raftpb.Message) bool

	Stats SimStats
}

// SimStats count what a run exercised.
type SimStats struct {
	Messages, Dropped, Crashes, Partitions, Elections, EarlyCampaigns, Snapshots, Committed int
	// SaveCrashes counts the crashes between a Ready's early messages and its save.
	SaveCrashes int
}

// simFin is the end of node from's raft stream reaching node to in round at.
type simFin struct {
	from, to uint64
	at       int
}

type simMsg struct {
	m  *raftpb.Message
	at int // round it is delivered in
}

// NewSim bootstraps a cluster of opts.Nodes voters.
func NewSim(opts SimOptions) (*Sim, error) {
	if opts.Nodes < 1 || opts.Nodes > 9 {
		return nil, fmt.Errorf("sim: %d nodes", opts.Nodes)
	}
	if opts.ElectionTick == 0 {
		opts.ElectionTick = 10
	}
	if opts.HeartbeatTick == 0 {
		opts.HeartbeatTick = 1
	}
	if opts.SnapshotEntries == 0 {
		opts.SnapshotEntries = 40
	}
	if opts.KeepEntries == 0 {
		opts.KeepEntries = 5
	}
	s := &Sim{
		Opts: opts, Rng: rand.New(rand.NewPCG(opts.Seed, 0x5157)),
		Now:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		group: map[uint64]int{}, downSince: map[[2]uint64]int{}, reported: map[[2]uint64]bool{}, killed: map[uint64]bool{},
		stalledRep: map[[2]uint64]bool{},
		leaders:    map[uint64]uint64{}, committed: map[uint64][]byte{}, states: map[uint64]uint64{},
	}
	var voters []uint64
	for id := uint64(1); id <= uint64(opts.Nodes); id++ {
		voters = append(voters, id)
	}
	for _, id := range voters {
		n := &SimNode{ID: id, Storage: NewMemoryStorage()}
		if err := Bootstrap(n.Storage, voters); err != nil {
			return nil, err
		}
		s.Nodes = append(s.Nodes, n)
		if err := s.start(n); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SimNodeName is the name of simulated node id.
func SimNodeName(id uint64) string { return fmt.Sprintf("n%d", id) }

func (s *Sim) start(n *SimNode) error {
	role := clusterdb.RoleMember
	if slices.Contains(s.Opts.Witnesses, n.ID) {
		role = clusterdb.RoleWitness
	}
	c, err := NewCore(Config{
		ID: n.ID, Name: SimNodeName(n.ID), Role: role, Storage: simStorage{n.Storage, n},
		ElectionTick: s.Opts.ElectionTick, HeartbeatTick: s.Opts.HeartbeatTick,
		SnapshotEntries: s.Opts.SnapshotEntries, KeepEntries: s.Opts.KeepEntries,
		SeqStart: uint64(s.Round+1) << 32,
	})
	if err != nil {
		return fmt.Errorf("node %d: %w", n.ID, err)
	}
	n.Core, n.Up, n.checked, n.hashed = c, true, 0, 0
	// A new core knows none of the heartbeat plane's earlier reports: they are made again.
	for k := range s.reported {
		if k[0] == n.ID {
			delete(s.reported, k)
			delete(s.stalledRep, k)
			delete(s.downSince, k)
		}
	}
	return s.check(n)
}

// AddNode adds node id (the next one: len(Nodes)+1) with empty storage, as a node that joins
// an existing cluster starts; it takes part once a member proposes AddNode for it.
func (s *Sim) AddNode() (uint64, error) {
	n := &SimNode{ID: uint64(len(s.Nodes) + 1), Storage: NewMemoryStorage()}
	s.Nodes = append(s.Nodes, n)
	return n.ID, s.start(n)
}

// Node returns node id.
func (s *Sim) Node(id uint64) *SimNode { return s.Nodes[id-1] }

// Crash stops node id: what it had not saved is lost, what it saved stays.
func (s *Sim) Crash(id uint64) {
	n := s.Node(id)
	if !n.Up {
		return
	}
	n.Up, n.crashAtSave = false, false
	n.Core = nil
	s.Stats.Crashes++
}

// CrashAtSave makes node id crash in its next Ready that saves, between the messages raft
// lets go before its state is durable (a candidate's vote requests, a leader's appends: see
// Core.ReadyTo) and the save: they are on their way, what they follow from is lost.
func (s *Sim) CrashAtSave(id uint64) {
	if n := s.Node(id); n.Up {
		n.crashAtSave = true
	}
}

// DisarmCrashAtSave withdraws every CrashAtSave not yet carried out (before a liveness check,
// which must not lose a node to a crash armed earlier).
func (s *Sim) DisarmCrashAtSave() {
	for _, n := range s.Nodes {
		n.crashAtSave = false
	}
}

// errSimCrash is the save of a node that crashes at it (CrashAtSave).
var errSimCrash = errors.New("sim: crashed before the save")

// simStorage is a node's MemoryStorage, with the crash of CrashAtSave.
type simStorage struct {
	*MemoryStorage
	n *SimNode
}

func (st simStorage) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	if st.n.crashAtSave {
		st.n.crashAtSave = false
		return errSimCrash
	}
	return st.MemoryStorage.Save(hs, ents, snap)
}

// Kill stops node id's daemon as kill -9 does: like Crash, but its kernel keeps answering, so
// the heartbeat plane of its peers reports it stalled (DetectRounds later), not down; and the
// kernel closes its raft streams, which each peer in its partition sees finRounds rounds later
// (StreamClosed; a negative finRounds: never).
func (s *Sim) Kill(id uint64, finRounds int) {
	if !s.Node(id).Up {
		return
	}
	s.Crash(id)
	s.killed[id] = true
	if finRounds < 0 {
		return
	}
	for _, n := range s.Nodes {
		if n.ID != id && s.sameGroup(id, n.ID) {
			s.fins = append(s.fins, simFin{from: id, to: n.ID, at: s.Round + finRounds})
		}
	}
}

// LoseStreamEnd drops the end of node from's raft stream on its way to node to (a kill -9 whose
// stream to that peer had just been broken and not replaced, say): that peer never sees it.
func (s *Sim) LoseStreamEnd(from, to uint64) {
	s.fins = slices.DeleteFunc(s.fins, func(f simFin) bool { return f.from == from && f.to == to })
}

// CloseStreams makes node id close its raft streams to every up peer in its partition and
// carry on on new ones (a replaced stream): each peer sees StreamClosed at once.
func (s *Sim) CloseStreams(id uint64) error {
	for _, n := range s.Nodes {
		if n.ID != id && n.Up && s.Connected(id, n.ID) {
			n.Core.StreamClosed(id)
			if err := s.ready(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// ReportStalled makes the heartbeat plane of node to report node about stalled, whatever
// about does (a false report: its heartbeat sender was starved, say).
func (s *Sim) ReportStalled(to, about uint64) error {
	n := s.Node(to)
	if !n.Up {
		return fmt.Errorf("node %d is down", to)
	}
	n.Core.PeerStalled(about)
	return s.ready(n)
}

// sameGroup reports whether a and b are in the same partition group, up or not.
func (s *Sim) sameGroup(a, b uint64) bool {
	if len(s.group) == 0 {
		return true
	}
	ga, oka := s.group[a]
	gb, okb := s.group[b]
	return oka && okb && ga == gb || a == b
}

// Restart starts a crashed node again from its storage.
func (s *Sim) Restart(id uint64) error {
	n := s.Node(id)
	if n.Up {
		return nil
	}
	delete(s.killed, id)
	return s.start(n)
}

// Partition splits the nodes into groups that cannot talk to each other; nodes not listed
// form a group of their own each. Partition() heals.
func (s *Sim) Partition(groups ...[]uint64) {
	clear(s.group)
	for i, g := range groups {
		for _, id := range g {
			s.group[id] = i + 1
		}
	}
	if len(groups) > 0 {
		s.Stats.Partitions++
	}
}

// Connected reports whether a and b can talk (both up and in the same group).
func (s *Sim) Connected(a, b uint64) bool {
	if !s.Node(a).Up || !s.Node(b).Up {
		return false
	}
	ga, oka := s.group[a]
	gb, okb := s.group[b]
	if len(s.group) == 0 {
		return true
	}
	if !oka || !okb {
		return a == b
	}
	return ga == gb
}

// Leader returns the up node that leads with the highest term, 0 if none.
func (s *Sim) Leader() uint64 {
	var best, term uint64
	for _, n := range s.Nodes {
		if n.Up && n.Core.raftState == raft.StateLeader && n.Core.term >= term {
			best, term = n.ID, n.Core.term
		}
	}
	return best
}

// Do runs f on node id's core (if up) and then its Ready.
func (s *Sim) Do(id uint64, f func(c *Core) error) error {
	n := s.Node(id)
	if !n.Up {
		return fmt.Errorf("node %d is down", id)
	}
	ferr := f(n.Core)
	if err := s.ready(n); err != nil {
		return err
	}
	return ferr
}

// Run runs rounds: every up node ticks, then the messages due are delivered (those sent
// with no delay in the same round too), and the heartbeat plane's reports are made.
func (s *Sim) Run(rounds int) error {
	for range rounds {
		if err := s.round(); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sim) round() error {
	s.Round++
	s.Now = s.Now.Add(10 * time.Millisecond)
	for _, n := range s.Nodes {
		if n.Up {
			n.Core.Tick(s.Now)
			if err := s.ready(n); err != nil {
				return err
			}
		}
	}
	for guard := 0; guard < 100; guard++ {
		var due []simMsg
		rest := s.queue[:0]
		for _, m := range s.queue {
			if m.at <= s.Round {
				due = append(due, m)
			} else {
				rest = append(rest, m)
			}
		}
		s.queue = rest
		if len(due) == 0 {
			break
		}
		s.Rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
		for _, m := range due {
			if err := s.deliver(m.m); err != nil {
				return err
			}
		}
	}
	rest := s.fins[:0]
	var due []simFin
	for _, f := range s.fins {
		if f.at <= s.Round {
			due = append(due, f)
		} else {
			rest = append(rest, f)
		}
	}
	s.fins = rest
	for _, f := range due {
		if n := s.Node(f.to); n.Up {
			n.Core.StreamClosed(f.from)
			if err := s.ready(n); err != nil {
				return err
			}
		}
	}
	return s.detect()
}

func (s *Sim) deliver(m *raftpb.Message) error {
	from, to := s.Node(m.GetFrom()), s.Node(m.GetTo())
	// A message on its way arrives even if its sender has crashed since (the early messages of
	// a node that crashed at its save: CrashAtSave).
	ok := to.Up && s.sameGroup(from.ID, to.ID) && (s.Opts.Loss == 0 || s.Rng.Float64() >= s.Opts.Loss) && (s.Drop == nil || !s.Drop(m))
	if m.GetType() == raftpb.MsgSnap && from.Up {
		from.Core.ReportSnapshot(to.ID, ok)
		if ok {
			s.Stats.Snapshots++
		}
		if err := s.ready(from); err != nil {
			return err
		}
	}
	if !ok {
		s.Stats.Dropped++
		return nil
	}
	s.Stats.Messages++
	if err := to.Core.Step(proto.Clone(m).(*raftpb.Message)); err != nil {
		return fmt.Errorf("node %d: step %v from %d: %w", to.ID, m.GetType(), from.ID, err)
	}
	return s.ready(to)
}

// detect plays the heartbeat plane: DetectRounds after a node stopped being reachable from
// another, that one is told (PeerDown); PeerUp when it is reachable again.
func (s *Sim) detect() error {
	if s.Opts.DetectRounds == 0 {
		return nil
	}
	for _, a := range s.Nodes {
		if !a.Up {
			continue
		}
		for _, b := range s.Nodes {
			if a == b {
				continue
			}
			k := [2]uint64{a.ID, b.ID}
			if s.Connected(a.ID, b.ID) {
				delete(s.downSince, k)
				if s.reported[k] {
					delete(s.reported, k)
					delete(s.stalledRep, k)
					a.Core.PeerUp(b.ID)
				}
				continue
			}
			since, ok := s.downSince[k]
			if !ok {
				s.downSince[k] = s.Round
				continue
			}
			kernel := s.killed[b.ID] && s.sameGroup(a.ID, b.ID) // its kernel still answers a
			if s.reported[k] && s.stalledRep[k] && !kernel {
				delete(s.stalledRep, k) // stalled, and now its kernel is silent too: down
				a.Core.PeerDown(b.ID)
				if err := s.ready(a); err != nil {
					return err
				}
				if !a.Up {
					break // it crashed at its save (CrashAtSave)
				}
			}
			if !s.reported[k] && s.Round-since >= s.Opts.DetectRounds {
				s.reported[k] = true
				if kernel {
					s.stalledRep[k] = true
					a.Core.PeerStalled(b.ID)
				} else {
					a.Core.PeerDown(b.ID)
				}
				if err := s.ready(a); err != nil {
					return err
				}
				if !a.Up {
					break
				}
			}
		}
	}
	return nil
}

func (s *Sim) note(id uint64, n Note) {
	switch n.Kind {
	case NoteCampaign:
		s.Stats.EarlyCampaigns++
	case NoteLeader:
		if n.Leader == id {
			s.Stats.Elections++
		}
	}
	if s.OnNote != nil {
		s.OnNote(id, n)
	}
}

// ready runs node n's Ready the way the daemon does (Core.ReadyTo): the messages raft lets
// go before the save are posted first, the others after it.
func (s *Sim) ready(n *SimNode) error {
	out, err := n.Core.ReadyTo(s.post, nil)
	for _, note := range out.Notes {
		s.note(n.ID, note)
	}
	if errors.Is(err, errSimCrash) {
		// Its clients learn nothing more: their writes' outcomes are unknown.
		s.done(n.ID, out.Done)
		s.Crash(n.ID)
		s.Stats.SaveCrashes++
		return nil
	}
	if err != nil {
		return fmt.Errorf("node %d: %w", n.ID, err)
	}
	for _, m := range out.Messages {
		s.post(m)
	}
	s.done(n.ID, out.Done)
	return s.check(n)
}

// post puts m on the network, with a random delay.
func (s *Sim) post(m *raftpb.Message) {
	delay := 0
	if s.Opts.MaxDelay > 0 {
		delay = s.Rng.IntN(s.Opts.MaxDelay + 1)
	}
	s.queue = append(s.queue, simMsg{m: m, at: s.Round + delay})
}

func (s *Sim) done(id uint64, ds []Done) {
	for _, d := range ds {
		if s.OnDone != nil {
			s.OnDone(id, d)
		}
	}
}

// check verifies the safety properties on node n after a Ready.
func (s *Sim) check(n *SimNode) error {
	c := n.Core
	if c.raftState == raft.StateLeader {
		if l, ok := s.leaders[c.term]; ok && l != n.ID {
			return fmt.Errorf("round %d: two leaders in term %d: nodes %d and %d", s.Round, c.term, l, n.ID)
		}
		s.leaders[c.term] = n.ID
	}
	// Every entry this node holds at or below its commit index must be the one committed
	// everywhere else at that index.
	hs, _, _ := n.Storage.InitialState()
	commit := hs.GetCommit()
	first, _ := n.Storage.FirstIndex()
	lo := max(n.checked+1, first)
	if lo <= commit {
		ents, err := n.Storage.Entries(lo, commit+1, 1<<62)
		if err != nil {
			return fmt.Errorf("node %d: read entries %d..%d: %w", n.ID, lo, commit, err)
		}
		for _, e := range ents {
			b := entryBytes(e)
			if prev, ok := s.committed[e.GetIndex()]; !ok {
				s.committed[e.GetIndex()] = b
				s.Stats.Committed++
			} else if !bytes.Equal(prev, b) {
				return fmt.Errorf("round %d: node %d: committed entry %d changed", s.Round, n.ID, e.GetIndex())
			}
		}
	}
	n.checked = max(n.checked, commit)
	// The same applied index means the same database.
	st := c.State()
	if st.AppliedIndex == n.hashed {
		return nil
	}
	n.hashed = st.AppliedIndex
	data, err := st.Snapshot()
	if err != nil {
		return err
	}
	h := fnv.New64a()
	h.Write(data)
	if prev, ok := s.states[st.AppliedIndex]; !ok {
		s.states[st.AppliedIndex] = h.Sum64()
	} else if prev != h.Sum64() {
		return fmt.Errorf("round %d: node %d: database at applied index %d differs from another node's", s.Round, n.ID, st.AppliedIndex)
	}
	return nil
}

func entryBytes(e *raftpb.Entry) []byte {
	b := fmt.Appendf(nil, "%d/%d/", e.GetTerm(), e.GetType())
	return append(b, e.GetData()...)
}

// Heal ends partitions and restarts crashed nodes.
func (s *Sim) Heal() error {
	s.Partition()
	for _, n := range s.Nodes {
		if err := s.Restart(n.ID); err != nil {
			return err
		}
	}
	return nil
}

// Converged reports whether the up nodes in the group of node id (all up nodes if there is
// no partition) agree on a leader among them and have all applied the same index.
func (s *Sim) Converged(ids []uint64) (bool, string) {
	var lead, applied uint64
	for i, id := range ids {
		n := s.Node(id)
		if !n.Up {
			return false, fmt.Sprintf("node %d down", id)
		}
		st := n.Core.Status()
		if i == 0 {
			lead, applied = st.Leader, st.Applied
		}
		if st.Leader == 0 || st.Leader != lead || !slices.Contains(ids, st.Leader) {
			return false, fmt.Sprintf("node %d: leader %d", id, st.Leader)
		}
		if st.Applied != applied || st.Applied < st.Commit {
			return false, fmt.Sprintf("node %d: applied %d, commit %d (node %d applied %d)", id, st.Applied, st.Commit, ids[0], applied)
		}
		if !n.Core.Quorate() {
			return false, fmt.Sprintf("node %d: not quorate: %s", id, st.Reason)
		}
	}
	return true, ""
}

// Config returns a valid cluster configuration naming nodes 1..nodes (with the sim's
// witnesses), carrying value as a user name ("v<value>"), so that the configuration is a
// register clients write and read.
func (s *Sim) Config(nodes, value int) *clusterdb.Config {
	c := &clusterdb.Config{
		Version: clusterdb.ConfigVersion,
		Heartbeat: clusterdb.Heartbeat{Interval: 10 * time.Millisecond, Multiplier: 3,
			StallTimeout: 5 * time.Second},
		Users: []clusterdb.User{{Name: fmt.Sprintf("v%d", value), Role: clusterdb.UserRole("guest")}},
	}
	for id := 1; id <= nodes; id++ {
		role := clusterdb.RoleMember
		if slices.Contains(s.Opts.Witnesses, uint64(id)) {
			role = clusterdb.RoleWitness
		}
		c.Nodes = append(c.Nodes, clusterdb.Node{Name: SimNodeName(uint64(id)), ID: id, Role: role})
	}
	return c
}

// SimValue reads the register value of SimConfig back from a database (-1: no configuration).
func SimValue(st *clusterdb.State) int {
	if st.Config == nil || len(st.Config.Users) == 0 {
		return -1
	}
	var v int
	if _, err := fmt.Sscanf(st.Config.Users[0].Name, "v%d", &v); err != nil {
		return -2
	}
	return v
}
