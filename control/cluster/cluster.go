// Package cluster runs a node's replica of the cluster database inside vigild: it opens the
// raft log in the node's data directory, founds the cluster or waits to be added to one,
// feeds the heartbeat plane's verdicts to raft, and answers the admin API's cluster methods
// (status, configuration, event log, membership) for the vigil CLI.
//
// # How a cluster starts
//
// The founding nodes are the node itself and the peers of its node.yaml. A node whose data
// directory holds no raft log and that is not started with Join founds the cluster with
// exactly those voters (every founding node must list the same set). It then waits for a
// majority of them to elect a leader; the nodes register themselves in the database and stay
// in admin-wait until a configuration is applied (`vigil config apply cluster.yaml`), which
// must name every node with its id and role. A node added later is first named in the
// configuration and in every node's node.yaml peers, then started with Join (`vigild
// --join`: it founds nothing), then added with `vigil node add ID NAME` on any member. A
// node restarted with its data directory rejoins from its log.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"vigil/control/admin"
	"vigil/control/clusterdb"
	"vigil/control/raftstore"
	"vigil/control/replica"
	"vigil/control/transport"
)

// Options configure a Node.
type Options struct {
	ID   int
	Name string
	Role clusterdb.Role
	// DataDir is the daemon's data directory; the raft log lives in DataDir/raft.
	DataDir string
	// Peers are the other founding nodes (node.yaml's peers), by id.
	Peers []int
	// Join: never found a cluster; wait to be added to an existing one.
	Join bool
	// Transport carries raft messages between the daemons.
	Transport transport.Transport
	// TickInterval, ElectionTicks and HeartbeatTicks set raft's timing (defaults 10ms, 10, 1:
	// an election timeout of 100-200 ms when the heartbeat plane gives no early warning).
	TickInterval                  time.Duration
	ElectionTicks, HeartbeatTicks int
	// ProposalTimeout bounds how long a change waits to be committed (default 3s).
	ProposalTimeout time.Duration
	// SeqStart must exceed what any earlier run of this node used (the incarnation).
	SeqStart uint64
	Log      *slog.Logger
	// Unsettled is called while this node knows no leader and when the leader or quorum
	// changes (replica.ReplicaConfig.Unsettled); nil: not at all.
	Unsettled func()
}

// Node is the running replica of one node.
type Node struct {
	opts  Options
	log   *slog.Logger
	store *raftstore.Store
	rep   *replica.Replica
}

// Start opens the raft log, founds the cluster if this node is a founding node with an empty
// log, and starts the replica.
func Start(o Options) (*Node, error) {
	if o.Role == "" {
		o.Role = clusterdb.RoleMember
	}
	if o.TickInterval == 0 {
		o.TickInterval = 10 * time.Millisecond
	}
	if o.ElectionTicks == 0 {
		o.ElectionTicks = 10
	}
	if o.HeartbeatTicks == 0 {
		o.HeartbeatTicks = 1
	}
	if o.ProposalTimeout == 0 {
		o.ProposalTimeout = 3 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(o.DataDir, "raft")
	store, err := raftstore.Open(dir, raftstore.Options{Logger: o.Log})
	if err != nil {
		return nil, fmt.Errorf("cluster database: %w", err)
	}
	n := &Node{opts: o, log: o.Log, store: store}
	empty, err := replica.IsEmpty(store)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster database: %w", err)
	}
	switch {
	case empty && o.Join:
		o.Log.Info("cluster database empty: waiting to be added to an existing cluster (vigil node add on a member)")
	case empty:
		voters := []uint64{uint64(o.ID)}
		for _, p := range o.Peers {
			voters = append(voters, uint64(p))
		}
		slices.Sort(voters)
		if err := replica.Bootstrap(store, voters); err != nil {
			store.Close()
			return nil, fmt.Errorf("cluster database: found the cluster: %w", err)
		}
		o.Log.Info("cluster database founded", "voters", voters, "dir", dir)
	}
	ticks := int(o.ProposalTimeout / o.TickInterval)
	n.rep, err = replica.StartReplica(replica.ReplicaConfig{
		Core: replica.Config{
			ID: uint64(o.ID), Name: o.Name, Role: o.Role, Storage: store,
			ElectionTick: o.ElectionTicks, HeartbeatTick: o.HeartbeatTicks, ProposalTicks: ticks,
			SeqStart: o.SeqStart,
		},
		Transport: o.Transport, TickInterval: o.TickInterval, Log: o.Log, Unsettled: o.Unsettled,
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("cluster database: %w", err)
	}
	return n, nil
}

// Close stops the replica and closes the log.
func (n *Node) Close() error {
	return errors.Join(n.rep.Close(), n.store.Close())
}

// Replica returns the running replica.
func (n *Node) Replica() *replica.Replica { return n.rep }

// PeerDown passes the heartbeat plane's "down on every link" to raft (early election).
func (n *Node) PeerDown(id int) { n.rep.PeerDown(uint64(id)) }

// PeerStalled passes the heartbeat plane's "stalled" (kernel answers, daemon silent) to raft:
// with the peer's raft stream closed by its end, it is a dead daemon (early election).
func (n *Node) PeerStalled(id int) { n.rep.PeerStalled(uint64(id)) }

// PeerUp passes "alive again".
func (n *Node) PeerUp(id int) { n.rep.PeerUp(uint64(id)) }

func (n *Node) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), n.opts.ProposalTimeout+time.Second)
}

func (n *Node) who(user string) string {
	if user == "" {
		user = "admin"
	}
	return user + "@" + n.opts.Name
}

// ClusterStatus implements admin.ClusterProvider.
func (n *Node) ClusterStatus() admin.ClusterStatus {
	var out admin.ClusterStatus
	n.rep.Inspect(func(_ *clusterdb.State, v clusterdb.View, st replica.Status) { out = clusterStatus(v, st) })
	return out
}

func clusterStatus(v clusterdb.View, st replica.Status) admin.ClusterStatus {
	out := admin.ClusterStatus{
		NodeID: uint16(st.ID), Name: st.Name, Role: string(st.Role), State: string(st.State),
		RaftState: st.RaftState, Term: st.Term, Leader: uint16(st.Leader), Quorate: st.Quorate, Reason: st.Reason,
		Voters: ids16(st.Voters), Reachable: ids16(st.Reachable), Applied: st.Applied, Commit: st.Commit,
		LastIndex: st.LastIndex, SnapshotIndex: st.SnapshotIndex, ConfigIndex: v.ConfigIndex, Error: st.Err,
		Members: []admin.MemberStatus{},
	}
	for _, m := range v.Members {
		out.Members = append(out.Members, admin.MemberStatus{ID: uint16(m.ID), Name: m.Name, Role: string(m.Role),
			State: string(m.State), Since: m.Since, Voter: slices.Contains(st.Voters, uint64(m.ID))})
		if uint64(m.ID) == st.Leader {
			out.LeaderName = m.Name
		}
	}
	return out
}

func ids16(ids []uint64) []uint16 {
	out := make([]uint16, len(ids))
	for i, id := range ids {
		out[i] = uint16(id)
	}
	return out
}

// read returns the database: linearizably when the node has quorum, else the local copy
// marked stale (unless strict, which then fails).
func (n *Node) read(strict bool) (clusterdb.View, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := n.rep.Read(ctx)
	if err == nil {
		return v, nil
	}
	if strict {
		return clusterdb.View{}, err
	}
	v = n.rep.View()
	if !v.Stale {
		v.Stale, v.Reason = true, fmt.Sprintf("read from the local copy: %v", err)
	}
	return v, nil
}

// ConfigShow implements admin.ClusterProvider.
func (n *Node) ConfigShow(linearizable bool) (admin.ConfigText, error) {
	var v clusterdb.View
	if linearizable {
		var err error
		if v, err = n.read(true); err != nil {
			return admin.ConfigText{}, err
		}
	} else {
		v = n.rep.View()
	}
	out := admin.ConfigText{Index: v.ConfigIndex, Stale: v.Stale, Reason: v.Reason}
	if v.Config != nil {
		b, err := v.Config.Marshal()
		if err != nil {
			return out, err
		}
		out.YAML = string(b)
	}
	return out, nil
}

func parse(req admin.ConfigRequest) (*clusterdb.Config, error) {
	name := req.Name
	if name == "" {
		name = "cluster.yaml"
	}
	return clusterdb.ParseConfig(name, []byte(req.Data))
}

// ConfigDiff implements admin.ClusterProvider.
func (n *Node) ConfigDiff(req admin.ConfigRequest) (admin.ConfigChanges, error) {
	c, err := parse(req)
	if err != nil {
		return admin.ConfigChanges{}, err
	}
	v, _ := n.read(false)
	return admin.ConfigChanges{Changes: nonNil(clusterdb.Diff(v.Config, c))}, nil
}

func nonNil(c []clusterdb.Change) []clusterdb.Change {
	if c == nil {
		return []clusterdb.Change{}
	}
	return c
}

// ConfigApply implements admin.ClusterProvider: the whole file is validated, then committed
// as one entry; the database checks it again against the membership, all or nothing.
func (n *Node) ConfigApply(req admin.ConfigRequest, who string) (admin.ConfigChanges, error) {
	c, err := parse(req)
	if err != nil {
		return admin.ConfigChanges{}, err
	}
	return n.applyConfig(c, req.ExpectIndex, who)
}

// applyConfig commits c. When the leader changes before the commit (the proposal may have
// been lost with the old leader), it settles the outcome with a linearizable read through the
// new leader, which has committed everything the old one could have: if the configuration is
// still the one it started from, the proposal was lost and is made again; if it is now c, an
// earlier attempt took effect.
func (n *Node) applyConfig(c *clusterdb.Config, expect uint64, who string) (admin.ConfigChanges, error) {
	before := n.rep.View()
	for attempt := 1; ; attempt++ {
		ctx, cancel := n.ctx()
		res, err := n.rep.Propose(ctx, clusterdb.Command{Who: n.who(who),
			Payload: &clusterdb.ApplyConfig{Config: c, ExpectIndex: expect}})
		cancel()
		if err == nil {
			return admin.ConfigChanges{Changes: nonNil(res.Changes), Index: res.Index, Status: res.Status.String()}, nil
		}
		if !errors.Is(err, replica.ErrLeaderChanged) || errors.Is(err, replica.ErrNoQuorum) || attempt == 3 {
			if res.Err != nil {
				return admin.ConfigChanges{}, res.Err
			}
			return admin.ConfigChanges{}, err
		}
		now, rerr := n.read(true)
		switch {
		case rerr != nil:
			return admin.ConfigChanges{}, fmt.Errorf("%w; and the outcome cannot be read: %w", err, rerr)
		case now.ConfigIndex != before.ConfigIndex && len(clusterdb.Diff(now.Config, c)) == 0:
			return admin.ConfigChanges{Changes: nonNil(clusterdb.Diff(before.Config, c)), Index: now.ConfigIndex,
				Status: clusterdb.StatusApplied.String()}, nil
		case now.ConfigIndex != before.ConfigIndex:
			return admin.ConfigChanges{}, fmt.Errorf("%w; meanwhile another configuration was applied at index %d: check it with vigil config show",
				err, now.ConfigIndex)
		}
		n.log.Info("leader changed before the configuration was committed; proposing it again", "attempt", attempt+1)
	}
}

// ConfigBackup implements admin.ClusterProvider.
func (n *Node) ConfigBackup() (admin.Backup, error) {
	v, _ := n.read(false)
	data, err := v.Snapshot()
	if err != nil {
		return admin.Backup{}, err
	}
	return admin.Backup{Data: json.RawMessage(data), Index: v.AppliedIndex, Stale: v.Stale, Reason: v.Reason}, nil
}

// ConfigRestore implements admin.ClusterProvider: it commits the configuration held in a
// backup as one change. Membership, runtime state and the event log are the live cluster's
// and stay as they are.
func (n *Node) ConfigRestore(req admin.ConfigRequest, who string) (admin.ConfigChanges, error) {
	name := req.Name
	if name == "" {
		name = "backup"
	}
	st, err := clusterdb.Restore([]byte(req.Data))
	if err != nil {
		return admin.ConfigChanges{}, fmt.Errorf("%s: not a vigil backup: %w", name, err)
	}
	if st.Config == nil {
		return admin.ConfigChanges{}, fmt.Errorf("%s: the backup holds no configuration", name)
	}
	return n.applyConfig(st.Config, req.ExpectIndex, who)
}

// EventLog implements admin.ClusterProvider.
func (n *Node) EventLog(q admin.LogQuery) (admin.LogResult, error) {
	if q.Node < 0 || q.Node > clusterdb.MaxNodeID {
		return admin.LogResult{}, fmt.Errorf("node %d is not a valid node id (1..%d)", q.Node, clusterdb.MaxNodeID)
	}
	if q.Limit < 0 {
		return admin.LogResult{}, fmt.Errorf("limit %d is negative", q.Limit)
	}
	eq := clusterdb.EventQuery{Node: q.Node, Since: q.Since, Limit: q.Limit}
	all := clusterdb.EventKinds()
	for _, k := range q.Kinds {
		if !slices.Contains(all, clusterdb.EventKind(k)) {
			names := make([]string, len(all))
			for i, k := range all {
				names[i] = string(k)
			}
			return admin.LogResult{}, fmt.Errorf("unknown event kind %q (kinds: %s)", k, strings.Join(names, ", "))
		}
		eq.Kinds = append(eq.Kinds, clusterdb.EventKind(k))
	}
	deadline := time.Now().Add(time.Duration(q.WaitMS) * time.Millisecond)
	for {
		changed := n.rep.Changed()
		var res admin.LogResult
		n.rep.Inspect(func(st *clusterdb.State, v clusterdb.View, _ replica.Status) {
			res = admin.LogResult{Events: st.Log.Query(eq), Last: st.AppliedIndex, Stale: v.Stale, Reason: v.Reason}
		})
		if len(res.Events) > 0 || q.WaitMS == 0 || time.Now().After(deadline) {
			if res.Events == nil {
				res.Events = []clusterdb.Event{}
			}
			return res, nil
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
		}
	}
}

// NodeAdd implements admin.ClusterProvider.
func (n *Node) NodeAdd(req admin.NodeChange, who string) (admin.NodeChangeResult, error) {
	if req.ID < 1 || req.ID > clusterdb.MaxNodeID {
		return admin.NodeChangeResult{}, fmt.Errorf("node id %d out of range 1..%d", req.ID, clusterdb.MaxNodeID)
	}
	if req.Name == "" {
		return admin.NodeChangeResult{}, fmt.Errorf("node %d: no name (the node's name in cluster.yaml)", req.ID)
	}
	role := clusterdb.Role(req.Role)
	if role == "" {
		role = clusterdb.RoleMember
	}
	if role != clusterdb.RoleMember && role != clusterdb.RoleWitness {
		return admin.NodeChangeResult{}, fmt.Errorf("role %q: want member or witness", req.Role)
	}
	ctx, cancel := n.ctx()
	defer cancel()
	res, err := n.rep.AddNode(ctx, uint64(req.ID), req.Name, role, n.who(who))
	if err != nil {
		return admin.NodeChangeResult{}, err
	}
	if !res.OK() {
		return admin.NodeChangeResult{}, res.Err
	}
	return admin.NodeChangeResult{Index: res.Index}, nil
}

// NodeRemove implements admin.ClusterProvider.
func (n *Node) NodeRemove(req admin.NodeChange, who string) (admin.NodeChangeResult, error) {
	if req.ID < 1 || req.ID > clusterdb.MaxNodeID {
		return admin.NodeChangeResult{}, fmt.Errorf("node id %d out of range 1..%d", req.ID, clusterdb.MaxNodeID)
	}
	ctx, cancel := n.ctx()
	defer cancel()
	res, err := n.rep.RemoveNode(ctx, uint64(req.ID), req.Reason, n.who(who))
	if err != nil {
		return admin.NodeChangeResult{}, err
	}
	if !res.OK() && res.Err != nil {
		// The raft removal went ahead; only the record was missing.
		n.log.Warn("node removed from raft; the database had no record", "node", req.ID, "err", res.Err)
	}
	return admin.NodeChangeResult{Index: res.Index}, nil
}

var _ admin.ClusterProvider = (*Node)(nil)
