// Package replica replicates the cluster database (clusterdb) with raft: a pure Core that
// drives go.etcd.io/raft/v3's RawNode and applies committed entries to a clusterdb.State, a
// Replica that runs a Core in one goroutine over the cluster transport and a ticker, and a
// deterministic simulation harness (Sim) for N cores on an in-memory network.
//
// # The Core and the order of a Ready
//
// Core follows raft's Step/Tick/Ready shape. The caller feeds it Tick (logical time; the
// wall-clock time passed along only stamps the commands the core proposes itself), Step
// (messages from peers), PeerDown/PeerUp (the heartbeat plane's verdicts), and requests
// (Propose, AddNode, RemoveNode, Read), and then calls Ready, which handles each raft Ready in
// the order raft's doc.go prescribes:
//
//  1. Storage.Save(HardState, Entries, Snapshot): durable when it returns;
//  2. the Ready's messages are collected into Output.Messages, which the caller sends after
//     Ready returns, that is after the Save;
//  3. the snapshot (if any) replaces the State, and the committed entries are applied:
//     normal entries through clusterdb.State.Apply, configuration changes through
//     RawNode.ApplyConfChange after the database part in their context was applied;
//  4. RawNode.Advance.
//
// Then it settles proposals (Output.Done), linearizable reads, quorum, and this node's
// membership record, and takes a snapshot and compacts the log every SnapshotEntries entries.
//
// Raft runs with PreVote and CheckQuorum. A proposal on a follower is forwarded to the leader
// by raft; with no leader known it fails at once with ErrNoQuorum; a proposal not applied
// within ProposalTicks fails with ErrNoQuorum (if quorum was lost) or ErrTimeout.
//
// # Quorum and stale reads
//
// A node is quorate when it is the leader and has heard from a majority of the voters
// within an election timeout, or a follower that has heard from its leader within one.
// View marks the database copy stale otherwise, with the reason.
//
// # Early election
//
// When the heartbeat plane reports the leader down on every channel (PeerDown), every
// follower forgets the leader (raft's ForgetLeader: it then grants pre-votes at once instead
// of waiting out its lease), and the voter with the lowest id among those not reported down
// campaigns at once, again on each tick until a leader is known; the next in line campaigns 3
// ticks later, and so on. PreVote stays on: a node that is merely cut off from the others
// campaigns too, but its pre-vote wins no majority, so it cannot disturb the leader.
//
// # Membership
//
// AddNode and RemoveNode are raft configuration changes whose context carries the
// database's NodeJoin or NodeLeave, applied in the same entry. A join the database refuses
// (the node is not in the configuration, or under another name or role) is cancelled in
// raft too. Each node registers itself (NodeJoin) when it finds itself a voter without a
// record and records its state (running, or admin-wait while no configuration exists) once
// it has caught up; the leader marks voters it cannot reach as faulted and records each new
// leadership, with the quorum, in the event log.
//
// # Entry data
//
// Every entry this package proposes is a clusterdb command behind a 17-byte header naming the
// proposer and a sequence number (see framing.go), so the proposer can tell its caller when
// the entry was applied and what Apply said.
package replica
