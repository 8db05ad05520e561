// Package metrics exports what vigild knows in the Prometheus text exposition format (version
// 0.0.4): the heartbeat plane (peer and link states, round-trip times, frames, losses), the
// data path counters, the interconnect (which link carries traffic, steering counters, the
// error-rate rule) and the cluster database (quorum, leader, term, indexes, membership).
// vigild serves it over HTTP at /metrics when started with --metrics-listen.
//
// The values come from the same admin.Provider the admin socket answers from, so `vigil
// status`, `vigil nodes`, `vigil links` and a scrape always agree. Rendering is a pure function
// of one snapshot (Write); Handler takes the snapshot at each scrape.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"vigil/control/admin"
)

// Snapshot is everything one scrape reports. Cluster is nil when the daemon runs no cluster
// database.
type Snapshot struct {
	Status   admin.Status
	Nodes    []admin.NodeStatus
	Links    []admin.LinkStatus
	Counters admin.Counters
	Cluster  *admin.ClusterStatus
}

// ClusterStatuser is the part of admin.ClusterProvider a scrape reads.
type ClusterStatuser interface {
	ClusterStatus() admin.ClusterStatus
}

// Take reads a snapshot from the daemon's provider; the cluster part when it runs a cluster
// database (implements ClusterStatuser).
func Take(p admin.Provider) Snapshot {
	s := Snapshot{Status: p.Status(), Nodes: p.Nodes(), Links: p.Links(), Counters: p.Counters()}
	if cp, ok := p.(ClusterStatuser); ok {
		cs := cp.ClusterStatus()
		s.Cluster = &cs
	}
	return s
}

// The states a node can be in, as reported by vigil nodes; each gets a 0/1 series so that
// alerts can match on the state label without knowing the others.
var nodeStates = []string{admin.NodeAlive, admin.NodeStalled, admin.NodePartitioned, admin.NodeDown, admin.NodeUnknown}

// The membership states of the cluster database (VCS system states).
var memberStates = []string{"initing", "discovering", "building", "running", "admin-wait", "leaving", "exited", "faulted"}

// family is one metric: its help text, type and samples, written together as the format asks.
type family struct {
	name, help, typ string
	samples         []sample
}

type sample struct {
	labels []string // name, value, name, value, ...
	value  float64
}

type writer struct {
	fams  []*family
	index map[string]*family
}

func (w *writer) add(name, typ, help string, value float64, labels ...string) {
	if w.index == nil {
		w.index = map[string]*family{}
	}
	f := w.index[name]
	if f == nil {
		f = &family{name: name, help: help, typ: typ}
		w.index[name] = f
		w.fams = append(w.fams, f)
	}
	f.samples = append(f.samples, sample{labels: labels, value: value})
}

func (w *writer) gauge(name, help string, v float64, labels ...string) {
	w.add(name, "gauge", help, v, labels...)
}

func (w *writer) counter(name, help string, v float64, labels ...string) {
	w.add(name, "counter", help, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func seconds(d time.Duration) float64 { return d.Seconds() }

func id(n uint16) string { return strconv.FormatUint(uint64(n), 10) }

// Write renders the snapshot. Series appear in a fixed order (families as below, samples in
// the order of the snapshot's slices), so two scrapes of an unchanged daemon are identical.
func Write(out io.Writer, s Snapshot) error {
	var w writer
	st := s.Status
	node := id(st.NodeID)
	w.gauge("vigil_build_info", "Always 1; the labels name the build and this node.", 1,
		"version", st.Version, "cluster", st.Cluster, "node", node, "node_name", st.NodeName, "mode", st.Mode)
	if !st.StartedAt.IsZero() {
		w.gauge("vigil_start_time_seconds", "When this vigild started, in seconds since the Unix epoch.",
			float64(st.StartedAt.UnixNano())/1e9)
	}
	w.gauge("vigil_heartbeat_interval_seconds", "Heartbeat interval of the node's profile.", seconds(st.HeartbeatInterval))
	w.gauge("vigil_heartbeat_detect_seconds", "Silence after which a link is declared down (interval × multiplier).", seconds(st.DetectTime))
	for _, ifc := range slices.Sorted(maps.Keys(st.XDPMode)) {
		w.gauge("vigil_xdp_attached", "1 for each private interface and the XDP mode of its heartbeat program.", 1,
			"interface", ifc, "xdp_mode", st.XDPMode[ifc])
	}

	for _, n := range s.Nodes {
		if n.Self {
			continue
		}
		peer := []string{"peer", id(n.ID), "peer_name", n.Name}
		for _, state := range nodeStates {
			w.gauge("vigil_peer_state", "1 for the state this node sees the peer in (alive, stalled, partitioned, down, unknown), 0 for the others.",
				b2f(n.State == state), append(slices.Clone(peer), "state", state)...)
		}
		w.gauge("vigil_peer_jeopardy", "1 when only one channel to the peer is left.", b2f(n.Jeopardy), peer...)
		w.gauge("vigil_peer_links_up", "Private links on which the peer is heard.", float64(n.LinksUp), peer...)
		w.gauge("vigil_peer_links", "Private links to the peer.", float64(n.Links), peer...)
		if !n.Since.IsZero() {
			w.gauge("vigil_peer_state_since_seconds", "When the peer entered its current state, in seconds since the Unix epoch.",
				float64(n.Since.UnixNano())/1e9, peer...)
		}
	}

	for _, l := range s.Links {
		labels := []string{"peer", id(l.Peer), "peer_name", l.PeerName, "link", strconv.Itoa(int(l.Link)), "link_name", l.LinkName}
		if l.Kind == admin.LinkDisk {
			w.gauge("vigil_disk_heartbeat_up", "1 while the peer's slot of the disk heartbeat advances.", b2f(l.State == admin.LinkUp), "peer", id(l.Peer), "peer_name", l.PeerName)
			w.gauge("vigil_disk_heartbeat_sequence", "Last sequence read from the peer's disk heartbeat slot.", float64(l.Seq), "peer", id(l.Peer), "peer_name", l.PeerName)
			continue
		}
		w.gauge("vigil_link_up", "1 while heartbeats from the peer arrive on the link.", b2f(l.State == admin.LinkUp), labels...)
		w.counter("vigil_link_frames_received_total", "Valid heartbeat frames received from the peer on the link.", float64(l.Received), labels...)
		w.counter("vigil_link_echoes_total", "Echo replies received from the peer's kernel on the link.", float64(l.Echoes), labels...)
		w.counter("vigil_link_frames_lost_total", "Heartbeat frames lost on the link, from sequence gaps.", float64(l.Lost), labels...)
		if l.SRTT > 0 {
			w.gauge("vigil_link_rtt_seconds", "Round-trip time of echoes on the link: percentiles of the recent samples.", seconds(l.RTTP50), append(slices.Clone(labels), "quantile", "0.5")...)
			w.gauge("vigil_link_rtt_seconds", "", seconds(l.RTTP99), append(slices.Clone(labels), "quantile", "0.99")...)
			w.gauge("vigil_link_srtt_seconds", "Smoothed round-trip time of echoes on the link.", seconds(l.SRTT), labels...)
		}
		if st.ClusterAddress != "" {
			w.gauge("vigil_link_carrying", "1 when the link carries traffic to the peer's cluster address.", b2f(l.Carrying), labels...)
			w.counter("vigil_link_tx_packets_total", "Packets the steering program sent to the peer on the link.", float64(l.TxPackets), labels...)
			w.counter("vigil_link_tx_bytes_total", "Bytes the steering program sent to the peer on the link.", float64(l.TxBytes), labels...)
			w.gauge("vigil_link_errors", "Errors on the link within the error-rate rule's window.", float64(l.Errors), labels...)
			w.gauge("vigil_link_error_threshold", "Errors within the window that take the link out of service.", float64(l.ErrorThreshold), labels...)
			w.gauge("vigil_link_bad", "1 when the error-rate rule took the link out of service.", b2f(l.Bad), labels...)
		}
	}

	for _, name := range slices.Sorted(maps.Keys(s.Counters)) {
		w.counter("vigil_datapath_total", "Data path counters by name: heartbeat frames rejected (bad_mac, wrong_cluster, replay, ...), pause compensation, steering.",
			float64(s.Counters[name]), "counter", name)
	}

	if c := s.Cluster; c != nil {
		w.gauge("vigil_cluster_quorate", "1 when this node is in a partition with a raft majority; without it the node refuses changes and its reads are stale.", b2f(c.Quorate))
		w.gauge("vigil_cluster_leader", "Node id of the raft leader this node knows, 0 when none.", float64(c.Leader))
		w.gauge("vigil_cluster_is_leader", "1 when this node leads the cluster database.", b2f(c.Leader != 0 && c.Leader == c.NodeID))
		w.gauge("vigil_cluster_term", "Raft term.", float64(c.Term))
		w.gauge("vigil_cluster_commit_index", "Raft commit index.", float64(c.Commit))
		w.gauge("vigil_cluster_applied_index", "Last raft entry applied to this node's copy of the cluster database.", float64(c.Applied))
		w.gauge("vigil_cluster_last_index", "Last raft entry in this node's log.", float64(c.LastIndex))
		w.gauge("vigil_cluster_snapshot_index", "Raft entry of this node's latest snapshot.", float64(c.SnapshotIndex))
		w.gauge("vigil_cluster_config_index", "Raft entry that applied the cluster configuration, 0 when none was applied (admin-wait).", float64(c.ConfigIndex))
		w.gauge("vigil_cluster_voters", "Voting members of the cluster database.", float64(len(c.Voters)))
		w.gauge("vigil_cluster_voters_reachable", "Voting members this node reaches, itself included.", float64(len(c.Reachable)))
		for _, state := range memberStates {
			w.gauge("vigil_cluster_node_state", "1 for this node's membership state (initing, discovering, building, running, admin-wait, leaving, exited, faulted), 0 for the others.",
				b2f(c.State == state), "state", state, "role", c.Role)
		}
		for _, m := range c.Members {
			w.gauge("vigil_cluster_member", "1 for every member of the cluster database, with its role, membership state and whether it votes.", 1,
				"member", id(m.ID), "member_name", m.Name, "role", m.Role, "state", m.State, "voter", strconv.FormatBool(m.Voter))
		}
	}

	bw := bufio.NewWriter(out)
	for _, f := range w.fams {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.typ)
		for _, smp := range f.samples {
			bw.WriteString(f.name)
			if len(smp.labels) > 0 {
				bw.WriteByte('{')
				for i := 0; i+1 < len(smp.labels); i += 2 {
					if i > 0 {
						bw.WriteByte(',')
					}
					fmt.Fprintf(bw, "%s=\"%s\"", smp.labels[i], escapeLabel(smp.labels[i+1]))
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(formatValue(smp.value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// escapeHelp escapes a HELP text: backslash and newline.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabel escapes a label value: backslash, double quote and newline.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
