package netns

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"vigil/dataplane"
)

// Prefix starts the name of every namespace and temporary directory the harness makes. [Sweep]
// touches nothing without it.
const Prefix = "vgl-"

// MaxNodes is the largest cluster the harness builds.
const MaxNodes = 8

// LinkID names one of a node's three links.
type LinkID int

// The links of a node. Private0 and Private1 form the interconnect; Public faces clients.
const (
	Private0 LinkID = iota
	Private1
	Public
)

// PrivateLinks lists the interconnect links, for faults that apply to all of them.
var PrivateLinks = []LinkID{Private0, Private1}

// AllLinks lists every link of a node.
var AllLinks = []LinkID{Private0, Private1, Public}

// String returns the interface name the link has inside a node namespace.
func (l LinkID) String() string {
	switch l {
	case Private0:
		return "priv0"
	case Private1:
		return "priv1"
	case Public:
		return "pub"
	}
	return "link" + strconv.Itoa(int(l))
}

func (l LinkID) valid() bool { return l >= Private0 && l <= Public }

// ClientID is the node id used for the client namespace in addresses and MACs.
const ClientID = 250

// Addr returns the address of node id (or ClientID) on link l.
func Addr(id int, l LinkID) netip.Addr {
	switch l {
	case Private0, Private1:
		return netip.AddrFrom4([4]byte{198, 18, byte(l) + 1, byte(id)})
	default:
		return netip.AddrFrom4([4]byte{198, 19, 0, byte(id)})
	}
}

// MAC returns the fixed, locally administered MAC address of node id (or ClientID) on link l.
func MAC(id int, l LinkID) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x56, 0x47, byte(l), 0x00, byte(id)}
}

// Options describe a cluster to build.
type Options struct {
	// Nodes is the number of nodes, from 1 to MaxNodes.
	Nodes int
}

// Link is one veth end inside a node (or the client) namespace.
type Link struct {
	ID    LinkID
	Name  string // interface name inside the namespace
	Index int    // interface index inside the namespace
	MAC   net.HardwareAddr
	Addr  netip.Prefix
	// HubPort is the name of the other veth end, a port of the link's bridge in the hub namespace.
	HubPort string
}

// Namespace is a network namespace of the cluster: a node's or the client's.
type Namespace struct {
	Name  string // name under /run/netns
	Links []Link // indexed by LinkID for nodes; the client has only its public link
	c     *Cluster
}

// Path returns the namespace's bind-mount path, for setns(2) or nsenter.
func (ns *Namespace) Path() string { return filepath.Join(netnsDir, ns.Name) }

// Node is one cluster node.
type Node struct {
	Namespace
	ID int
}

// Link returns the node's link l.
func (n *Node) Link(l LinkID) Link { return n.Links[l] }

// Cluster is a built topology. Its methods are safe for concurrent use.
type Cluster struct {
	Name      string // common prefix of the cluster's namespace names
	Hub       string // hub namespace holding the bridges
	Nodes     []*Node
	Client    *Namespace
	SharedDir string // files standing in for shared disks
	// BPFDir is a bpffs mounted for this cluster in the root mount namespace. Processes started
	// with `ip netns exec` get a fresh /sys (and so no /sys/fs/bpf of the host) but inherit this
	// mount, so daemons pin their eBPF objects here and find them again after a restart.
	BPFDir string

	xdp      *dataplane.Stats // the XDP program on every hub port
	xdpLinks []io.Closer

	mu     sync.Mutex
	procs  map[int]*Proc
	faults int // counter for nftables table names
	closed bool
}

// Node returns the node with the given id (1-based).
func (c *Cluster) Node(id int) *Node {
	if id < 1 || id > len(c.Nodes) {
		panic(fmt.Sprintf("netns: no node %d in a %d-node cluster", id, len(c.Nodes)))
	}
	return c.Nodes[id-1]
}

const netnsDir = "/run/netns"

var clusterSeq atomic.Int64

// New builds a cluster for a test and removes it in t.Cleanup. It skips the test when not root.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireRoot(t)
	c, err := Build(opts)
	if err != nil {
		t.Fatalf("build netns cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close netns cluster %s: %v", c.Name, err)
		}
	})
	return c
}

// RequireRoot skips the test when the process is not root, and fails it when root but the
// programs the harness needs are missing (CI runs as root, so a skip must not hide a broken
// install).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veth, bridges and nftables")
	}
	if err := checkTools(); err != nil {
		t.Fatal(err)
	}
}

func checkTools() error {
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("netns harness needs %q (apt-get install iproute2 nftables): %w", tool, err)
		}
	}
	return nil
}

// Build creates a cluster. The caller must Close it. On error nothing is left behind.
func Build(opts Options) (c *Cluster, err error) {
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("netns: nodes = %d, want 1..%d", opts.Nodes, MaxNodes)
	}
	if err := checkTools(); err != nil {
		return nil, err
	}
	if err := Sweep(); err != nil {
		return nil, fmt.Errorf("sweep leftovers: %w", err)
	}
	name := fmt.Sprintf("%s%d-%d", Prefix, os.Getpid(), clusterSeq.Add(1))
	c = &Cluster{Name: name, Hub: name + "-hub", procs: map[int]*Proc{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
			c = nil
		}
	}()
	if c.SharedDir, err = os.MkdirTemp("", name+"-shared-"); err != nil {
		return c, fmt.Errorf("shared dir: %w", err)
	}
	bpfDir := filepath.Join(c.SharedDir, "bpffs")
	if err := os.Mkdir(bpfDir, 0o700); err != nil {
		return c, fmt.Errorf("bpffs dir: %w", err)
	}
	if err := unix.Mount("bpf", bpfDir, "bpf", 0, "mode=0700"); err != nil {
		return c, fmt.Errorf("mount bpffs at %s: %w", bpfDir, err)
	}
	c.BPFDir = bpfDir
	if err := addNamespace(c.Hub); err != nil {
		return c, err
	}
	for id := 1; id <= opts.Nodes; id++ {
		n := &Node{ID: id, Namespace: Namespace{Name: fmt.Sprintf("%s-n%d", name, id), c: c}}
		c.Nodes = append(c.Nodes, n)
		if err := addNamespace(n.Name); err != nil {
			return c, err
		}
	}
	c.Client = &Namespace{Name: name + "-client", c: c}
	if err := addNamespace(c.Client.Name); err != nil {
		return c, err
	}
	if err := c.wire(); err != nil {
		return c, err
	}
	return c, nil
}

// addNamespace creates a named namespace. `ip netns add` sets up /run/netns as a shared mount
// point the way every other tool expects, so it is used rather than a bind mount of our own.
func addNamespace(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func deleteNamespace(name string) error {
	path := filepath.Join(netnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// handle opens a netlink handle inside a named namespace.
func handle(name string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return h, nil
}

// hubIndexBase is the first interface index used for hub-side veth ends. Node-side ends get small
// indexes in their fresh namespaces; keeping the two ranges apart means no veth end has the same
// index as its peer, which would make the kernel treat its carrier changes as non-urgent and
// batch them once a second (linkwatch_urgent_event).
const hubIndexBase = 1000

func (c *Cluster) wire() error {
	hub, err := handle(c.Hub)
	if err != nil {
		return err
	}
	defer hub.Close()
	if err := setLoopbackAndSysctls(c.Hub); err != nil {
		return err
	}
	bridges := map[LinkID]netlink.Link{}
	off := false
	for _, l := range AllLinks {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.String()}, MulticastSnooping: &off}
		if err := hub.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge %s in %s: %w", l, c.Hub, err)
		}
		if err := hub.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge %s up: %w", l, err)
		}
		bridges[l] = br
	}
	next := hubIndexBase
	plug := func(ns *Namespace, id int, l LinkID) error {
		port := fmt.Sprintf("n%dp%d", id, l)
		if ns == c.Client {
			port = "client"
		}
		next++
		if err := c.plug(hub, bridges[l], ns, id, l, port, next); err != nil {
			return fmt.Errorf("plug %s of %s: %w", l, ns.Name, err)
		}
		return nil
	}
	for _, n := range c.Nodes {
		if err := setLoopbackAndSysctls(n.Name); err != nil {
			return err
		}
		for _, l := range AllLinks {
			if err := plug(&n.Namespace, n.ID, l); err != nil {
				return err
			}
		}
	}
	if err := setLoopbackAndSysctls(c.Client.Name); err != nil {
		return err
	}
	if err := plug(c.Client, ClientID, Public); err != nil {
		return err
	}
	if err := c.attachHubXDP(hub); err != nil {
		return err
	}
	return c.addNeighbours()
}

// attachHubXDP gives every hub-side veth end an XDP program (xdp_stats, which passes
// everything). A native XDP program on a veth can send a frame back out with XDP_TX only when
// the peer end runs XDP too; on real NICs this is not needed, but here the heartbeat plane's echo
// replies depend on it.
func (c *Cluster) attachHubXDP(hub *netlink.Handle) error {
	var err error
	if c.xdp, err = dataplane.LoadStats(dataplane.StatsOptions{}); err != nil {
		return err
	}
	links, err := hub.LinkList()
	if err != nil {
		return fmt.Errorf("list hub links: %w", err)
	}
	return inNamespace(c.Hub, func() error {
		for _, l := range links {
			if l.Type() != "veth" {
				continue
			}
			xl, err := c.xdp.Attach(l.Attrs().Index)
			if err != nil {
				return err
			}
			c.xdpLinks = append(c.xdpLinks, xl)
		}
		return nil
	})
}

// plug creates a veth pair: hub end `port` (with an explicit index) on bridge br, and the node
// end named after the link inside ns, with its MAC and address, both up.
func (c *Cluster) plug(hub *netlink.Handle, br netlink.Link, ns *Namespace, id int, l LinkID, port string, index int) error {
	nsh, err := netns.GetFromName(ns.Name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", ns.Name, err)
	}
	defer nsh.Close()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: port, Index: index},
		PeerName:         l.String(),
		PeerHardwareAddr: MAC(id, l),
		PeerNamespace:    netlink.NsFd(nsh),
	}
	if err := hub.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", port, err)
	}
	if err := hub.LinkSetMaster(veth, br); err != nil {
		return fmt.Errorf("enslave %s: %w", port, err)
	}
	if err := hub.LinkSetUp(veth); err != nil {
		return fmt.Errorf("set %s up: %w", port, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", ns.Name, err)
	}
	defer h.Close()
	end, err := h.LinkByName(l.String())
	if err != nil {
		return fmt.Errorf("find %s: %w", l, err)
	}
	prefix := netip.PrefixFrom(Addr(id, l), 24)
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := h.AddrAdd(end, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", prefix, l, err)
	}
	if err := h.LinkSetUp(end); err != nil {
		return fmt.Errorf("set %s up: %w", l, err)
	}
	link := Link{ID: l, Name: l.String(), Index: end.Attrs().Index, MAC: MAC(id, l), Addr: prefix, HubPort: port}
	// Nodes are plugged in LinkID order, so a node's Links are indexed by LinkID.
	ns.Links = append(ns.Links, link)
	return nil
}

// addNeighbours gives every node permanent neighbour entries for all peers on the private links.
func (c *Cluster) addNeighbours() error {
	for _, n := range c.Nodes {
		h, err := handle(n.Name)
		if err != nil {
			return err
		}
		for _, l := range PrivateLinks {
			for _, p := range c.Nodes {
				if p == n {
					continue
				}
				neigh := &netlink.Neigh{
					LinkIndex:    n.Links[l].Index,
					Family:       netlink.FAMILY_V4,
					State:        netlink.NUD_PERMANENT,
					IP:           Addr(p.ID, l).AsSlice(),
					HardwareAddr: MAC(p.ID, l),
				}
				if err := h.NeighSet(neigh); err != nil {
					h.Close()
					return fmt.Errorf("neighbour %s on %s of %s: %w", Addr(p.ID, l), l, n.Name, err)
				}
			}
		}
		h.Close()
	}
	return nil
}

// setLoopbackAndSysctls brings lo up and turns IPv6 off in a namespace, so links carry only what
// tests send (no router solicitations, no DAD).
func setLoopbackAndSysctls(name string) error {
	h, err := handle(name)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return inNamespace(name, func() error {
		for _, key := range []string{"all", "default"} {
			p := "/proc/sys/net/ipv6/conf/" + key + "/disable_ipv6"
			if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("disable ipv6 in %s: %w", name, err)
			}
		}
		return nil
	})
}

// Do runs f on an OS thread switched into the namespace, and switches back before returning.
// Goroutines started by f do not inherit the namespace.
func (ns *Namespace) Do(f func() error) error { return inNamespace(ns.Name, f) }

func inNamespace(name string, f func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked and dies with this goroutine rather than carry the foreign
		// namespace to other goroutines.
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Close ends the cluster's processes, deletes its namespaces and its shared directory. It is
// idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	procs := make([]*Proc, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()

	var errs []error
	for _, p := range procs {
		p.kill()
	}
	for _, l := range c.xdpLinks {
		errs = append(errs, l.Close())
	}
	if c.xdp != nil {
		errs = append(errs, c.xdp.Close())
	}
	names := []string{c.Hub}
	for _, n := range c.Nodes {
		names = append(names, n.Name)
	}
	if c.Client != nil {
		names = append(names, c.Client.Name)
	}
	for _, name := range names {
		if name == "" {
			continue
		}
		if err := deleteNamespace(name); err != nil {
			errs = append(errs, err)
		}
	}
	if c.BPFDir != "" {
		if err := unix.Unmount(c.BPFDir, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount bpffs: %w", err))
		}
	}
	if c.SharedDir != "" {
		if err := os.RemoveAll(c.SharedDir); err != nil {
			errs = append(errs, fmt.Errorf("remove shared dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// SharedFile creates (or truncates) a sparse file of size bytes in the shared directory and
// returns its path. Every node sees the same file, as it would a shared disk.
func (c *Cluster) SharedFile(name string, size int64) (string, error) {
	if name == "" || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("shared file name %q: want a plain file name", name)
	}
	path := filepath.Join(c.SharedDir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("create shared file: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return "", fmt.Errorf("size shared file %s: %w", path, err)
	}
	return path, f.Close()
}
