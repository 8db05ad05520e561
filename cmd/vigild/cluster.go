package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"vigil/control/admin"
	"vigil/control/cluster"
	"vigil/control/clusterdb"
	"vigil/control/transport"
	"vigil/heartbeat"
	"vigil/internal/nodeconf"
)

// DefaultRaftPort is the TCP port of the cluster transport when --raft-listen gives none.
const DefaultRaftPort = 7405

// clusterFlags are vigild's flags for the cluster database.
type clusterFlags struct {
	Witness bool
	Join    bool
	Listen  string
	Peers   []string
	Tick    time.Duration
}

// raftAddrs works out where this node listens for the cluster transport and where it reaches
// each peer: from --raft-listen and --raft-peer, else from the cluster addresses of the
// interconnect (so that the eBPF link selection carries the streams over every private
// link), else from the UDP heartbeat links (the first one's addresses); the port is
// DefaultRaftPort. An invalid listen address means the cluster database is off (no way to
// reach the peers was given).
func raftAddrs(cfg *nodeconf.Config, f clusterFlags) (netip.AddrPort, map[transport.NodeID]netip.AddrPort, error) {
	peers := map[transport.NodeID]netip.AddrPort{}
	var listen netip.AddrPort
	if ic := cfg.Interconnect; ic.Enabled() {
		listen = netip.AddrPortFrom(ic.ClusterAddr(cfg.Node), DefaultRaftPort)
		for _, p := range cfg.Peers {
			peers[transport.NodeID(p.ID)] = netip.AddrPortFrom(ic.ClusterAddr(p.ID), DefaultRaftPort)
		}
	}
	for l, link := range cfg.Links {
		if !link.IsUDP() || listen.IsValid() {
			continue
		}
		listen = netip.AddrPortFrom(link.UDP.Addr(), DefaultRaftPort)
		for _, p := range cfg.Peers {
			if p.UDP[l].IsValid() {
				peers[transport.NodeID(p.ID)] = netip.AddrPortFrom(p.UDP[l].Addr(), DefaultRaftPort)
			}
		}
		break
	}
	if f.Listen != "" {
		a, err := parseAddr(f.Listen)
		if err != nil {
			return listen, nil, fmt.Errorf("--raft-listen %q: %w", f.Listen, err)
		}
		listen = a
	}
	known := map[int]bool{}
	for _, p := range cfg.Peers {
		known[p.ID] = true
	}
	for _, s := range f.Peers {
		id, addr, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(id)
		if !ok || err != nil || n < 1 || n > nodeconf.MaxNodeID {
			return listen, nil, fmt.Errorf("--raft-peer %q: want ID=ADDR:PORT with ID 1..%d", s, nodeconf.MaxNodeID)
		}
		if !known[n] {
			return listen, nil, fmt.Errorf("--raft-peer %q: node %d is not a peer in the node configuration", s, n)
		}
		a, err := parseAddr(addr)
		if err != nil {
			return listen, nil, fmt.Errorf("--raft-peer %q: %w", s, err)
		}
		peers[transport.NodeID(n)] = a
	}
	if listen.IsValid() {
		for _, p := range cfg.Peers {
			if _, ok := peers[transport.NodeID(p.ID)]; !ok {
				return listen, nil, fmt.Errorf("no cluster transport address for peer %d: give --raft-peer %d=ADDR:PORT", p.ID, p.ID)
			}
		}
	}
	return listen, peers, nil
}

func parseAddr(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(s); err == nil {
		return a, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("not an address or address:port")
	}
	return netip.AddrPortFrom(a, DefaultRaftPort), nil
}

// startCluster starts the transport and this node's replica of the cluster database.
func (d *daemon) startCluster(f clusterFlags, key [16]byte) error {
	listen, peers, err := raftAddrs(d.cfg, f)
	if err != nil {
		return err
	}
	if !listen.IsValid() {
		d.log.Warn("cluster database off: no address for the cluster transport (give --raft-listen and --raft-peer, or use UDP links)")
		return nil
	}
	tc := transport.TCPConfig{
		Local: transport.NodeID(d.cfg.Node), Key: key[:], Listen: listen, Peers: peers,
		RTOMin: 5 * time.Millisecond, Logger: d.log,
	}
	if d.attn != nil {
		tc.Watch = func(svc transport.Service, fd int) {
			if svc == transport.ServiceRaft {
				if err := d.attn.Add(fd); err != nil {
					d.log.Warn("raft stream not watched for the heartbeat sender", "err", err)
				}
			}
		}
	}
	d.transport, err = transport.NewTCP(tc)
	if err != nil {
		// TCP_RTO_MIN_US needs Linux 6.15: go on with the default minimum RTO.
		tc.RTOMin = 0
		var err2 error
		if d.transport, err2 = transport.NewTCP(tc); err2 != nil {
			return err2
		}
		d.log.Warn("cluster transport: default minimum retransmission timeout (200 ms)", "reason", err)
	}
	role := clusterdb.RoleMember
	if f.Witness {
		role = clusterdb.RoleWitness
	}
	var ids []int
	for _, p := range d.cfg.Peers {
		ids = append(ids, p.ID)
	}
	name := d.cfg.Name
	if name == "" {
		name = "node" + strconv.Itoa(d.cfg.Node)
	}
	d.cluster, err = cluster.Start(cluster.Options{
		ID: d.cfg.Node, Name: name, Role: role, DataDir: d.cfg.DataDir, Peers: ids, Join: f.Join,
		Transport: d.transport, TickInterval: f.Tick, SeqStart: d.incarnation, Log: d.log,
		Unsettled: d.unsettle,
	})
	if err != nil {
		d.transport.Close()
		d.transport = nil
		return err
	}
	d.log.Info("cluster database started", "role", string(role), "listen", listen.String(), "join", f.Join)
	return nil
}

// provider is what the admin API serves: the daemon, with the cluster methods when the
// cluster database runs.
func (d *daemon) provider() admin.Provider {
	if d.cluster == nil {
		return d
	}
	return struct {
		*daemon
		*cluster.Node
	}{d, d.cluster}
}

// nudge makes the streams to a peer re-send at once what a failed link lost, when the heartbeat
// plane reports a link to that peer down: the eBPF link selection has already moved their
// packets to a live link (transport.TCP.Nudge). It runs on the goroutine that reads the events,
// before they are handed to the daemon's loop: that hand-off, one goroutine waking another
// that then waits for a free P, took 10-20 ms on a busy 2-CPU machine (measured in
// TestInterconnectTraceCut), longer than the whole failover budget.
func (d *daemon) nudge(ev heartbeat.Event) {
	if d.transport == nil || d.noNudge || ev.Kind != heartbeat.EventLink || heartbeat.LinkState(ev.State) != heartbeat.LinkDown {
		return
	}
	n := d.transport.Nudge(transport.NodeID(ev.Peer))
	d.log.Debug("nudged the streams to a peer", "peer", ev.Peer, "link", ev.Link, "streams", n,
		"after_ns", heartbeat.MonotonicNow()-ev.NowNS)
}

// clusterHeartbeat passes the heartbeat plane's verdicts on peers to the transport and raft: a
// peer down on every channel breaks its streams at once (but raft's) and, if it led, starts an
// election; a stalled peer (its kernel answers, its daemon is silent) that also closed its raft
// stream to this node is a dead daemon, and if it led an election starts too.
//
// Raft's streams are broken only if the peer is still down raftResetDelay later: raft needs no
// stream broken to act on a dead peer (the verdict itself starts the election), while at
// 1 ms × 3 on a busy machine the verdict is sometimes false for a few milliseconds, and
// breaking the streams then lost the vote requests and answers in flight in the middle of an
// election. The deferred reset spares the streams to a node that really went away from being
// found stale, losing a message, when it comes back.
func (d *daemon) clusterHeartbeat(ev heartbeat.Event) {
	if d.cluster == nil || ev.Kind != heartbeat.EventPeer {
		return
	}
	switch heartbeat.PeerState(ev.State) {
	case heartbeat.PeerDown:
		peer := transport.NodeID(ev.Peer)
		d.transport.Reset(peer, transport.ServiceRaft)
		gen := d.peerVerdict(int(ev.Peer))
		time.AfterFunc(raftResetDelay, func() {
			d.mu.Lock()
			still := d.downGen[int(peer)] == gen
			d.mu.Unlock()
			if still {
				d.transport.Reset(peer)
			}
		})
		d.cluster.PeerDown(int(ev.Peer))
	case heartbeat.PeerStalled:
		d.cluster.PeerStalled(int(ev.Peer))
	case heartbeat.PeerAlive:
		d.peerVerdict(int(ev.Peer))
		d.cluster.PeerUp(int(ev.Peer))
	}
}

// unsettle gives the daemon every P for unsettledFor from now: the heartbeat sender stops
// holding one while it sleeps (heartbeat.Sender.ReleaseUntil). Raft calls it (replica's
// Unsettled) while this node knows no leader and when the leader or quorum changes: a
// failover's election and first commit then run with all of the machine's CPUs instead of the
// one P the sender leaves the rest of the daemon on a 2-CPU node. In a steady cluster the
// sender keeps its cheaper raw sleeps.
//
// The heartbeat plane's own news does not call it: the verdicts that matter to a failover
// (the leader down, or stalled with its stream closed) make raft forget the leader in the same
// instant, and the others (a follower stalled for a moment, a link down and up) come every
// few seconds at 1 ms × 3 on this project's busy VMs and need no CPU in a hurry; releasing
// on them too cost the CPU benchmark's daemons 11.8 % of a CPU against 9.6 %.
func (d *daemon) unsettle() {
	d.sender.ReleaseUntil(heartbeat.MonotonicNow() + uint64(unsettledFor))
}

// unsettledFor is how long a call keeps the sender's P released: longer than a raft tick
// (10 ms: raft calls again at every tick for as long as no leader is known) and than a new
// leader's first commits (2-15 ms here), and short because on this project's VMs a follower
// takes the leader for down for a moment every second or two at 1 ms × 3, and each time it
// opens the window.
const unsettledFor = 50 * time.Millisecond

// raftResetDelay is how long a peer must stay down before its raft streams are broken: far
// longer than a false "down" lasts (a few milliseconds), far shorter than a restart.
const raftResetDelay = 50 * time.Millisecond

// peerVerdict counts a down or alive verdict on peer and returns the count.
func (d *daemon) peerVerdict(peer int) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.downGen == nil {
		d.downGen = map[int]uint64{}
	}
	d.downGen[peer]++
	return d.downGen[peer]
}

// stopCluster stops the replica and the transport.
func (d *daemon) stopCluster() error {
	var err error
	if d.cluster != nil {
		err = d.cluster.Close()
	}
	if d.transport != nil {
		if e := d.transport.Close(); err == nil {
			err = e
		}
	}
	return err
}
