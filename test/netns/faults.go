package netns

import (
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
)

// LinkDown pulls the cable of one link of one node: the hub-side veth end goes down, so the node
// sees its interface lose carrier while it stays administratively up, as with a real cable pull.
func (c *Cluster) LinkDown(node int, l LinkID) error { return c.setPort(node, l, false) }

// LinkUp plugs the cable back in.
func (c *Cluster) LinkUp(node int, l LinkID) error { return c.setPort(node, l, true) }

func (c *Cluster) setPort(node int, l LinkID, up bool) error {
	if !l.valid() {
		return fmt.Errorf("netns: no link %d", l)
	}
	port := c.Node(node).Links[l].HubPort
	h, err := handle(c.Hub)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(port)
	if err != nil {
		return fmt.Errorf("find hub port %s: %w", port, err)
	}
	if up {
		err = h.LinkSetUp(link)
	} else {
		err = h.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set hub port %s up=%v: %w", port, up, err)
	}
	return nil
}

// Fault is an injected fault that can be undone.
type Fault struct {
	c     *Cluster
	table string // "family name" of the nftables table that implements it
	once  sync.Once
	err   error
}

// Undo removes the fault. It is idempotent.
func (f *Fault) Undo() error {
	f.once.Do(func() { f.err = f.c.nft("delete table " + f.table + "\n") })
	return f.err
}

// nft runs an nftables script in the hub namespace.
func (c *Cluster) nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", c.Hub, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\nscript:\n%s", c.Hub, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}

func (c *Cluster) nextTable(kind string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults++
	return fmt.Sprintf("vgl_%s_%d", kind, c.faults)
}

// Partition makes the given node sets stop hearing each other on the given links: frames
// between nodes of different sets are dropped by the bridges; within a set, and between any node
// and the client, traffic flows. Nodes not named in any set keep hearing everyone.
func (c *Cluster) Partition(links []LinkID, sides ...[]int) (*Fault, error) {
	if len(sides) < 2 {
		return nil, errors.New("netns: a partition needs at least two sides")
	}
	if len(links) == 0 {
		return nil, errors.New("netns: a partition needs at least one link")
	}
	side := map[int]int{}
	for i, s := range sides {
		for _, id := range s {
			c.Node(id) // panics on a bad id, a broken test
			if j, dup := side[id]; dup {
				return nil, fmt.Errorf("netns: node %d is on sides %d and %d", id, j, i)
			}
			side[id] = i
		}
	}
	var rules []string
	for _, l := range links {
		if !l.valid() {
			return nil, fmt.Errorf("netns: no link %d", l)
		}
		for a, sa := range sides {
			for b, sb := range sides {
				if a == b {
					continue
				}
				rules = append(rules, fmt.Sprintf("iifname %s oifname %s drop", c.ports(sa, l), c.ports(sb, l)))
			}
		}
	}
	sort.Strings(rules)
	name := c.nextTable("part")
	script := fmt.Sprintf("table bridge %s {\n chain cut {\n  type filter hook forward priority 0; policy accept;\n  %s\n }\n}\n",
		name, strings.Join(rules, "\n  "))
	if err := c.nft(script); err != nil {
		return nil, err
	}
	return &Fault{c: c, table: "bridge " + name}, nil
}

// ports is an nftables set of the hub ports of nodes ids on link l.
func (c *Cluster) ports(ids []int, l LinkID) string {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = fmt.Sprintf("%q", c.Node(id).Links[l].HubPort)
	}
	return "{ " + strings.Join(names, ", ") + " }"
}

// Direction says which way a fault acts, seen from the node.
type Direction int

// Directions.
const (
	Both     Direction = iota
	Inbound            // frames the node receives
	Outbound           // frames the node sends
)

// Loss drops the given percentage (0 to 100, in steps of 0.01) of the frames on one link of one
// node, chosen at random per frame, in the given direction. It uses nftables `numgen random` in
// the netdev family on the hub-side veth end: its ingress hook sees what the node sends, its
// egress hook what the node receives.
func (c *Cluster) Loss(node int, l LinkID, percent float64, dir Direction) (*Fault, error) {
	if !l.valid() {
		return nil, fmt.Errorf("netns: no link %d", l)
	}
	if percent < 0 || percent > 100 {
		return nil, fmt.Errorf("netns: loss %v%%, want 0..100", percent)
	}
	port := c.Node(node).Links[l].HubPort
	threshold := int(percent*100 + 0.5) // out of 10000
	name := c.nextTable("loss")
	var b strings.Builder
	fmt.Fprintf(&b, "table netdev %s {\n", name)
	hooks := map[Direction][]string{Both: {"ingress", "egress"}, Outbound: {"ingress"}, Inbound: {"egress"}}[dir]
	if hooks == nil {
		return nil, fmt.Errorf("netns: bad direction %d", dir)
	}
	// numgen yields 0..9999, so "< 10000" is out of nft's range: 100% is a plain drop.
	rule := fmt.Sprintf("numgen random mod 10000 < %d drop", threshold)
	if threshold >= 10000 {
		rule = "drop"
	}
	for _, hook := range hooks {
		fmt.Fprintf(&b, " chain lose_%s {\n  type filter hook %s device %q priority 0; policy accept;\n  %s\n }\n",
			hook, hook, port, rule)
	}
	b.WriteString("}\n")
	if err := c.nft(b.String()); err != nil {
		return nil, err
	}
	return &Fault{c: c, table: "netdev " + name}, nil
}

// hubLink reports whether the hub port of node's link l is up; for tests of the harness.
func (c *Cluster) hubLink(node int, l LinkID) (netlink.Link, error) {
	h, err := handle(c.Hub)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.LinkByName(c.Node(node).Links[l].HubPort)
}
