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
	// Interconnect configures cluster addresses and link selection; the zero value (no
	// interconnect key) leaves them off.
	Interconnect Interconnect
	// DiskHeartbeat configures the disk heartbeat; the zero value (no key) leaves it off.
	DiskHeartbeat DiskHeartbeat
}

// Interconnect holds the cluster addresses and the link selection of the private links.
type Interconnect struct {
	// Network holds the cluster addresses: node N's is the network's address plus N. IPv4,
	// host bits zero, room for node id 63 (a /26 or wider). Invalid (zero): interconnect off.
	Network netip.Prefix
	Policy  Policy
	// The error-rate rule: more than ErrorThreshold errors within ErrorWindow take a link out of
	// service; it returns after ErrorClean without errors.
	ErrorThreshold int
	ErrorWindow    time.Duration
	ErrorClean     time.Duration
}

// Enabled reports whether the interconnect is configured.
func (ic Interconnect) Enabled() bool { return ic.Network.IsValid() }

// ClusterAddr returns node id's cluster address; the zero Addr when the interconnect is off.
func (ic Interconnect) ClusterAddr(id int) netip.Addr {
	if !ic.Enabled() {
		return netip.Addr{}
	}
	a := ic.Network.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(id)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Policy is how traffic to a peer is spread over the live links.
type Policy string

// The policies.
const (
	// PolicySpread hashes each flow onto one of the live links (VCS LLT). The default.
	PolicySpread Policy = "spread"
	// PolicyPrimary sends everything on the live link with the lowest id (TruCluster MEMORY
	// CHANNEL's primary and secondary).
	PolicyPrimary Policy = "primary"
)

// DiskHeartbeat is the disk heartbeat on a shared device or file.
type DiskHeartbeat struct {
	Path     string        // shared block device or file; empty: off
	Interval time.Duration // between two writes
	Timeout  time.Duration // a peer's slot standing still this long: stopped
}

// Defaults and limits of the interconnect and the disk heartbeat.
const (
	DefaultErrorThreshold = 10
	DefaultErrorWindow    = time.Minute
	DefaultErrorClean     = 5 * time.Minute
	MaxErrorThreshold     = 1_000_000
	MaxErrorTime          = 24 * time.Hour

	DefaultDiskInterval = 100 * time.Millisecond
	DefaultDiskTimeout  = time.Second
	MinDiskInterval     = time.Millisecond
	MaxDiskInterval     = 10 * time.Second
	MaxDiskTimeout      = 10 * time.Minute
)

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
