package nodeconf

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// Limits and defaults of the configuration. Node and link id bounds restate those of the
// heartbeat frame format (bpf/heartbeat.h).
const (
	MaxNodeID = 63 // node ids are 1..MaxNodeID
	MaxLinks  = 4  // link ids are 0..MaxLinks-1
	MaxPeers  = MaxNodeID - 1

	DefaultAdminSocket  = "/run/vigil/vigild.sock"
	DefaultInterval     = 10 * time.Millisecond
	DefaultMultiplier   = 3
	DefaultRise         = 3
	DefaultStallTimeout = 5 * time.Second

	MinInterval   = 100 * time.Microsecond
	MaxInterval   = 10 * time.Second
	MinSweep      = 20 * time.Microsecond // the shortest bpf_timer period known to work
	MinMultiplier = 2
	MaxMultiplier = 100
	MinRise       = 1
	MaxRise       = 100
)

// maxSocketPath is the longest unix socket path: sun_path holds 108 bytes with the NUL.
const maxSocketPath = 107

// Config is a node's configuration. Parse and Load return it with every default filled in.
type Config struct {
	Cluster     string // cluster name
	ClusterID   uint32 // carried in every heartbeat frame; zero means DefaultClusterID(Cluster)
	Node        int    // this node's id, 1..MaxNodeID
	Name        string // this node's name; empty means "node<id>"
	KeyFile     string // path of the cluster key file, see LoadKey
	DataDir     string // the daemon's data directory
	AdminSocket string // the admin API's unix socket; empty means DefaultAdminSocket
	Heartbeat   Heartbeat
	Links       []Link // the private links; the index is the link id
	Peers       []Peer // the other nodes, in file order
}

// Heartbeat holds the timing of the heartbeat plane. Zero fields mean their defaults.
type Heartbeat struct {
	Interval        time.Duration // between two frames on a link
	Multiplier      int           // frames missed before a link is down
	Rise            int           // frames in a row that bring a link up
	StallTimeout    time.Duration // "daemon stalled" before it counts as down
	ProgressTimeout time.Duration // a peer's progress counter may stand still this long; 0 = off
	Sweep           time.Duration // period of the kernel sweep; zero means Interval
	Mode            Mode          // where heartbeats are received; empty means ModeEBPF
}

// Mode says where heartbeat frames are received.
type Mode string

// The modes.
const (
	// ModeEBPF receives and echoes frames in the XDP program (the default).
	ModeEBPF Mode = "ebpf"
	// ModeFallback receives frames on an AF_PACKET socket in user space, where XDP is unusable.
	ModeFallback Mode = "fallback"
)

// Link is one private link.
type Link struct {
	Name string // the local interface
	// UDP is the local endpoint of a link that carries heartbeats in UDP; the zero value (not
	// IsValid) for a raw Ethernet link.
	UDP netip.AddrPort
}

// IsUDP reports whether the link carries heartbeats in UDP rather than raw Ethernet frames.
func (l Link) IsUDP() bool { return l.UDP.IsValid() }

// Peer is another node of the cluster.
type Peer struct {
	ID   int    // 1..MaxNodeID
	Name string // empty means "node<id>"
	// UDP holds the peer's endpoint on each link, indexed by link id: after Parse it has one
	// entry per link, the zero value at raw Ethernet links.
	UDP []netip.AddrPort
}

// DefaultClusterID is the cluster id of a cluster whose configuration gives none: the 32-bit
// FNV-1a hash of the name, or 1 if that is 0.
func DefaultClusterID(cluster string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(cluster))
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

// Load reads, parses and validates the configuration file at path, and resolves its relative
// paths against the file's directory. Errors name the file as path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load node config: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load node config %s: %w", path, err)
	}
	return parse(path, data, dir)
}

// Parse parses and validates a configuration; name stands for the file in error messages.
// Paths are left as written. On any error the Config is nil.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, "")
}
