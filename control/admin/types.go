// Package admin is the local admin API of the vigild daemon: the types it reports (node, link and
// daemon status, rejection counters), a server that answers newline-delimited JSON requests on a
// unix socket for a Provider implemented by the daemon, and the Client the vigil CLI uses.
//
// The wire protocol is one JSON object per line in each direction. A request is
// {"method":"links"}, with room for {"method":"...","params":{...}} later; the response is
// {"result":...} or {"error":"..."}. A connection may carry several requests, answered in order.
// Times are RFC 3339 with nanoseconds, durations are integer nanoseconds in fields named *_ns.
package admin

import "time"

// DefaultSocketPath is where vigild listens and where vigil looks for it.
const DefaultSocketPath = "/run/vigil/vigild.sock"

// Limits of the server, chosen so one bad client cannot exhaust the daemon.
const (
	// MaxRequestLine is the longest request line accepted, without its newline. The server answers
	// a longer line with an error and closes the connection.
	MaxRequestLine = 1 << 20
	// DefaultIdleTimeout closes a connection that sends no complete request for this long.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxConns is the number of connections served at once; further ones are answered
	// with an error and closed.
	DefaultMaxConns = 64
)

// Status describes the local daemon.
type Status struct {
	Cluster   string `json:"cluster"`
	ClusterID uint32 `json:"cluster_id"`
	NodeID    uint16 `json:"node_id"`
	NodeName  string `json:"node_name"`
	// Mode is "ebpf" when the XDP heartbeat program runs, "fallback" for raw sockets.
	Mode string `json:"mode"`
	// XDPMode maps each private interface to "native", "generic" or "taken over" (another
	// program was attached there).
	XDPMode           map[string]string `json:"xdp_mode,omitempty"`
	Incarnation       uint64            `json:"incarnation"`
	StartedAt         time.Time         `json:"started_at"`
	HeartbeatInterval time.Duration     `json:"heartbeat_interval_ns"`
	DetectTime        time.Duration     `json:"detect_time_ns"`
	Version           string            `json:"version"`
	// The interconnect: this node's cluster address and the link selection policy; empty
	// when it is off.
	ClusterAddress string `json:"cluster_address,omitempty"`
	Policy         string `json:"policy,omitempty"`
	// DiskHeartbeat is the shared device or file of the disk heartbeat; empty when it is off.
	DiskHeartbeat string `json:"disk_heartbeat,omitempty"`
	// ClusterDB is the cluster database's view (membership, quorum, leader); the vigil CLI
	// fills it in from the "cluster" method, and it is absent when the daemon runs none.
	ClusterDB *ClusterStatus `json:"cluster_db,omitempty"`
}

// Node states reported in NodeStatus.State.
const (
	NodeSelf    = "self"
	NodeAlive   = "alive"
	NodeStalled = "stalled" // the kernel echoes but the daemon stopped sending
	NodeDown    = "down"
	NodeUnknown = "unknown"
)

// NodeStatus is the local view of one cluster node.
type NodeStatus struct {
	ID   uint16 `json:"id"`
	Name string `json:"name"`
	Self bool   `json:"self"`
	// State is one of NodeAlive, NodeStalled, NodeDown, NodeUnknown, or NodeSelf for this node.
	State string `json:"state"`
	// Jeopardy is set when only one link to the node is left.
	Jeopardy bool `json:"jeopardy"`
	LinksUp  int  `json:"links_up"`
	Links    int  `json:"links"`
	// Since is when State began; zero (and omitted) if it never changed.
	Since time.Time `json:"since,omitzero"`
	// LastSeen is when the last frame from the node arrived; zero (and omitted) if never.
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// Link states reported in LinkStatus.State.
const (
	LinkUp   = "up"
	LinkDown = "down"
)

// LinkStatus is the state of one private link to one peer.
type LinkStatus struct {
	Peer     uint16 `json:"peer"`
	PeerName string `json:"peer_name"`
	Link     uint8  `json:"link"`
	LinkName string `json:"link_name"`
	// State is LinkUp or LinkDown.
	State    string    `json:"state"`
	Since    time.Time `json:"since,omitzero"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Round-trip times of echoes: percentiles and the smoothed RTT; zero until the first echo.
	RTTP50      time.Duration `json:"rtt_p50_ns"`
	RTTP99      time.Duration `json:"rtt_p99_ns"`
	SRTT        time.Duration `json:"srtt_ns"`
	Received    uint64        `json:"received"`
	Echoes      uint64        `json:"echoes"`
	Lost        uint64        `json:"lost"`
	LossPercent float64       `json:"loss_percent"`

	// The interconnect (zero when it is off). Kind is "" for a network link and LinkDisk for
	// the disk heartbeat's row (then State is LinkUp while the peer's slot advances).
	Kind string `json:"kind,omitempty"`
	// Carrying is set when the link carries traffic to the peer's cluster address now: the
	// primary under the primary policy, every live link under spread.
	Carrying  bool   `json:"carrying,omitempty"`
	TxPackets uint64 `json:"tx_packets,omitempty"` // packets the steering program sent on it
	TxBytes   uint64 `json:"tx_bytes,omitempty"`
	// Errors counts the link's errors within the error-rate rule's window (the same for every
	// peer: the rule is per link); more than ErrorThreshold make it Bad (out of service).
	Errors         uint64 `json:"errors,omitempty"`
	ErrorThreshold int    `json:"error_threshold,omitempty"`
	Bad            bool   `json:"bad,omitempty"`
	// Seq is the disk heartbeat sequence last read from the peer's slot (Kind LinkDisk).
	Seq uint64 `json:"seq,omitempty"`
}

// LinkDisk is LinkStatus.Kind of the disk heartbeat's rows.
const LinkDisk = "disk"

// NodePartitioned is NodeStatus.State of a peer that every network link has lost while its
// disk heartbeat still advances: cut off, not dead (and in jeopardy).
const NodePartitioned = "partitioned"

// LinkClearer is implemented by a Provider that can return a link taken out of service by the
// error-rate rule (vigil links clear).
type LinkClearer interface {
	// ClearLink returns the named link to service; it fails naming the link if there is none.
	ClearLink(name string) (ClearResult, error)
}

// ClearResult says what clearing a link did.
type ClearResult struct {
	Link    string `json:"link"`
	WasBad  bool   `json:"was_bad"`
	Message string `json:"message"`
}

// Counters holds rejection counters by name: bad_mac, wrong_cluster, ...
type Counters map[string]uint64

// Provider is what the daemon exposes through the admin API. Its methods are called from the
// server's connection goroutines, concurrently, and must return values the caller may keep.
type Provider interface {
	Status() Status
	Nodes() []NodeStatus
	Links() []LinkStatus
	Counters() Counters
}
