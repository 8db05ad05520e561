package nodeconf

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"vigil/internal/yamlfile"

	"go.yaml.in/yaml/v3"
)

// parse is Parse with relative paths resolved against baseDir, unless it is empty.
func parse(file string, data []byte, baseDir string) (*Config, error) {
	root, err := yamlfile.Decode(file, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file, baseDir: baseDir}
	c := p.config(root)
	if err := p.errs.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

type parser struct {
	file    string
	baseDir string
	errs    yamlfile.Errors
}

// errorf records an error at the line of n.
func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	var err error
	if n.Line > 0 {
		err = fmt.Errorf("%s:%d: %s", p.file, n.Line, msg)
	} else {
		err = fmt.Errorf("%s: %s", p.file, msg)
	}
	p.errs.Add(n.Line, err)
}

// field is one key of a mapping with its value.
type field struct{ key, val *yaml.Node }

// mapping checks that n is a mapping whose keys are among known, each at most once, and returns
// its fields by key; nil if n is not a mapping. path names n in errors ("" at the top level).
func (p *parser) mapping(n *yaml.Node, path string, known ...string) map[string]field {
	n = yamlfile.Deref(n)
	if n.Kind != yaml.MappingNode {
		if path == "" {
			p.errorf(n, "expected a mapping of keys at the top level, got %s", yamlfile.Describe(n))
		} else {
			p.errorf(n, "%s: expected a mapping, got %s", path, yamlfile.Describe(n))
		}
		return nil
	}
	in := ""
	if path != "" {
		in = " in " + path
	}
	fields := make(map[string]field, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlfile.Deref(n.Content[i]), n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k, "expected a key%s, got %s", in, yamlfile.Describe(k))
		case k.ShortTag() == "!!merge":
			p.errorf(k, "merge keys (<<) are not supported%s", in)
		case !slices.Contains(known, k.Value):
			p.errorf(k, "unknown key %q%s", k.Value, in)
		default:
			if prev, dup := fields[k.Value]; dup {
				p.errorf(k, "duplicate key %q%s (first on line %d)", k.Value, in, prev.key.Line)
				continue
			}
			fields[k.Value] = field{k, v}
		}
	}
	return fields
}

// require reports the keys of required missing from the mapping n.
func (p *parser) require(n *yaml.Node, path string, fields map[string]field, required ...string) {
	for _, k := range required {
		if _, ok := fields[k]; ok {
			continue
		}
		if path == "" {
			p.errorf(n, "missing required key %q", k)
		} else {
			p.errorf(n, "%s: missing required key %q", path, k)
		}
	}
}

// sequence checks that n is a list and returns its items.
func (p *parser) sequence(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	n = yamlfile.Deref(n)
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s: expected a list, got %s", path, yamlfile.Describe(n))
		return nil, false
	}
	return n.Content, true
}

// str returns the text of a scalar. Any scalar that YAML reads as a string, number, boolean or
// timestamp is taken as written; null, binary and custom tags are errors.
func (p *parser) str(n *yaml.Node, path string) (string, bool) {
	n = yamlfile.Deref(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
			return n.Value, true
		}
	}
	p.errorf(n, "%s: expected a string, got %s", path, yamlfile.Describe(n))
	return "", false
}

// integer returns the value of an integer scalar.
func (p *parser) integer(n *yaml.Node, path string) (int64, bool) {
	n = yamlfile.Deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		p.errorf(n, "%s: expected an integer, got %s", path, yamlfile.Describe(n))
		return 0, false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		p.errorf(n, "%s: %s is out of range", path, n.Value)
		return 0, false
	}
	return v, true
}

// intIn returns the value of an integer scalar in lo..hi; what names the value in errors.
func (p *parser) intIn(n *yaml.Node, path, what string, lo, hi int64) (int64, bool) {
	v, ok := p.integer(n, path)
	if ok && (v < lo || v > hi) {
		p.errorf(n, "%s: %d is not a valid %s (%d..%d)", path, v, what, lo, hi)
		return 0, false
	}
	return v, ok
}

// duration returns the value of a duration scalar ("10ms", or 0).
func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	n = yamlfile.Deref(n)
	if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!str" || n.ShortTag() == "!!int") {
		if d, err := time.ParseDuration(n.Value); err == nil {
			return d, true
		}
	}
	p.errorf(n, "%s: expected a duration like 10ms, 250us or 1.5s, got %s", path, yamlfile.Describe(n))
	return 0, false
}

// durationIn returns the value of a duration scalar in lo..hi.
func (p *parser) durationIn(n *yaml.Node, path string, lo, hi time.Duration) (time.Duration, bool) {
	d, ok := p.duration(n, path)
	if ok && (d < lo || d > hi) {
		p.errorf(n, "%s: %v is out of range (%v..%v)", path, d, lo, hi)
		return 0, false
	}
	return d, ok
}

// name returns a cluster or node name: 1..63 characters from a-z, 0-9 and "-".
func (p *parser) name(n *yaml.Node, path, what string) (string, bool) {
	s, ok := p.str(n, path)
	if ok && !validName(s) {
		p.errorf(n, "%s: %q is not a valid %s (1..63 characters from a-z, 0-9 and -)", path, s, what)
		return "", false
	}
	return s, ok
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// ifName returns a Linux interface name.
func (p *parser) ifName(n *yaml.Node, path string) (string, bool) {
	s, ok := p.str(n, path)
	if ok && !validIfName(s) {
		p.errorf(n, "%s: %q is not a valid interface name (1..15 bytes; no '/', ':' or whitespace; not . or ..)", path, s)
		return "", false
	}
	return s, ok
}

// validIfName is the kernel's dev_valid_name (net/core/dev.c): 1..15 bytes, not "." or "..",
// without '/', ':' or a byte the kernel's isspace accepts (which includes 0xA0).
func validIfName(s string) bool {
	if len(s) < 1 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range []byte(s) {
		switch c {
		case 0, '/', ':', ' ', '\t', '\n', '\v', '\f', '\r', 0xA0:
			return false
		}
	}
	return true
}

// path returns a file system path, resolved against the base directory when relative.
func (p *parser) path(n *yaml.Node, path string) (string, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return "", false
	}
	switch {
	case s == "":
		p.errorf(n, "%s: empty path", path)
		return "", false
	case strings.ContainsFunc(s, unicode.IsControl):
		p.errorf(n, "%s: %q contains a control character", path, s)
		return "", false
	}
	if p.baseDir != "" && !filepath.IsAbs(s) {
		s = filepath.Join(p.baseDir, s)
	}
	return s, true
}

// endpoint returns a unicast ip:port with a non-zero port.
func (p *parser) endpoint(n *yaml.Node, path string) (netip.AddrPort, bool) {
	s, ok := p.str(n, path)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(s)
	switch {
	case err != nil:
		p.errorf(n, "%s: %q is not an ip:port endpoint", path, s)
	case ap.Port() == 0:
		p.errorf(n, "%s: %q: port 0 is not allowed", path, s)
	case ap.Addr().IsUnspecified() || ap.Addr().IsMulticast():
		p.errorf(n, "%s: %q is not a unicast address", path, s)
	default:
		return ap, true
	}
	return netip.AddrPort{}, false
}

// config walks the top-level mapping.
func (p *parser) config(root *yaml.Node) *Config {
	f := p.mapping(root, "", "cluster", "cluster_id", "node", "name", "key_file", "data_dir",
		"admin_socket", "heartbeat", "links", "peers", "interconnect", "disk_heartbeat")
	if f == nil {
		return nil
	}
	p.require(root, "", f, "cluster", "node", "key_file", "data_dir", "links")
	c := &Config{AdminSocket: DefaultAdminSocket}
	if e, ok := f["cluster"]; ok {
		c.Cluster, _ = p.name(e.val, "cluster", "cluster name")
	}
	if e, ok := f["cluster_id"]; ok {
		id, _ := p.intIn(e.val, "cluster_id", "cluster id", 1, math.MaxUint32)
		c.ClusterID = uint32(id)
	} else if c.Cluster != "" {
		c.ClusterID = DefaultClusterID(c.Cluster)
	}
	if e, ok := f["node"]; ok {
		id, _ := p.intIn(e.val, "node", "node id", 1, MaxNodeID)
		c.Node = int(id)
	}
	if e, ok := f["name"]; ok {
		c.Name, _ = p.name(e.val, "name", "node name")
	} else if c.Node != 0 {
		c.Name = defaultName(c.Node)
	}
	if e, ok := f["key_file"]; ok {
		c.KeyFile, _ = p.path(e.val, "key_file")
	}
	if e, ok := f["data_dir"]; ok {
		c.DataDir, _ = p.path(e.val, "data_dir")
	}
	if e, ok := f["admin_socket"]; ok {
		if s, ok := p.path(e.val, "admin_socket"); ok {
			if len(s) > maxSocketPath {
				p.errorf(e.val, "admin_socket: %q is %d bytes long; a unix socket path holds at most %d",
					s, len(s), maxSocketPath)
			}
			c.AdminSocket = s
		}
	}
	var hbNode *yaml.Node
	if e, ok := f["heartbeat"]; ok {
		hbNode = e.val
	}
	c.Heartbeat = p.heartbeat(hbNode, root)
	if e, ok := f["links"]; ok {
		c.Links = p.links(e)
	}
	if e, ok := f["peers"]; ok {
		c.Peers = p.peers(e, c)
	}
	if e, ok := f["interconnect"]; ok {
		c.Interconnect = p.interconnect(e.val)
	}
	if e, ok := f["disk_heartbeat"]; ok {
		c.DiskHeartbeat = p.diskHeartbeat(e.val)
	}
	return c
}

// interconnect walks the interconnect mapping and applies its defaults.
func (p *parser) interconnect(n *yaml.Node) Interconnect {
	ic := Interconnect{
		Policy: PolicySpread, ErrorThreshold: DefaultErrorThreshold,
		ErrorWindow: DefaultErrorWindow, ErrorClean: DefaultErrorClean,
	}
	f := p.mapping(n, "interconnect", "network", "policy", "error_threshold", "error_window", "error_clean")
	if f == nil {
		return ic
	}
	p.require(yamlfile.Deref(n), "interconnect", f, "network")
	if e, ok := f["network"]; ok {
		if s, ok := p.str(e.val, "interconnect.network"); ok {
			pfx, err := netip.ParsePrefix(s)
			switch {
			case err != nil:
				p.errorf(e.val, "interconnect.network: %q is not a network like 198.18.100.0/24", s)
			case !pfx.Addr().Is4():
				p.errorf(e.val, "interconnect.network: %q: cluster addresses are IPv4", s)
			case pfx.Masked() != pfx:
				p.errorf(e.val, "interconnect.network: %q has host bits set (did you mean %v?)", s, pfx.Masked())
			case pfx.Bits() > 32-6:
				p.errorf(e.val, "interconnect.network: %q is too small for node ids up to %d (want /26 or wider)", s, MaxNodeID)
			case pfx.Addr().IsMulticast() || pfx.Addr().IsUnspecified() || pfx.Addr().IsLoopback():
				p.errorf(e.val, "interconnect.network: %q is not a unicast network", s)
			default:
				ic.Network = pfx
			}
		}
	}
	if e, ok := f["policy"]; ok {
		if s, ok := p.str(e.val, "interconnect.policy"); ok {
			switch pol := Policy(s); pol {
			case PolicySpread, PolicyPrimary:
				ic.Policy = pol
			default:
				p.errorf(e.val, "interconnect.policy: %q is not a policy (spread or primary)", s)
			}
		}
	}
	if e, ok := f["error_threshold"]; ok {
		v, _ := p.intIn(e.val, "interconnect.error_threshold", "error threshold", 1, MaxErrorThreshold)
		ic.ErrorThreshold = int(v)
	}
	if e, ok := f["error_window"]; ok {
		ic.ErrorWindow, _ = p.durationIn(e.val, "interconnect.error_window", time.Millisecond, MaxErrorTime)
	}
	if e, ok := f["error_clean"]; ok {
		ic.ErrorClean, _ = p.durationIn(e.val, "interconnect.error_clean", time.Millisecond, MaxErrorTime)
	}
	return ic
}

// diskHeartbeat walks the disk_heartbeat mapping and applies its defaults.
func (p *parser) diskHeartbeat(n *yaml.Node) DiskHeartbeat {
	dh := DiskHeartbeat{Interval: DefaultDiskInterval, Timeout: DefaultDiskTimeout}
	f := p.mapping(n, "disk_heartbeat", "path", "interval", "timeout")
	if f == nil {
		return dh
	}
	p.require(yamlfile.Deref(n), "disk_heartbeat", f, "path")
	if e, ok := f["path"]; ok {
		dh.Path, _ = p.path(e.val, "disk_heartbeat.path")
	}
	okI, okT := true, true
	if e, ok := f["interval"]; ok {
		dh.Interval, okI = p.durationIn(e.val, "disk_heartbeat.interval", MinDiskInterval, MaxDiskInterval)
	}
	if e, ok := f["timeout"]; ok {
		dh.Timeout, okT = p.durationIn(e.val, "disk_heartbeat.timeout", MinDiskInterval, MaxDiskTimeout)
	}
	if okI && okT && dh.Timeout <= dh.Interval {
		at := yamlfile.Deref(n)
		if e, ok := f["timeout"]; ok {
			at = e.val
		} else if e, ok := f["interval"]; ok {
			at = e.val
		}
		p.errorf(at, "disk_heartbeat.timeout: %v must exceed disk_heartbeat.interval (%v)", dh.Timeout, dh.Interval)
	}
	return dh
}

func defaultName(id int) string { return "node" + strconv.Itoa(id) }

// heartbeat walks the heartbeat mapping (n is nil when absent) and applies the defaults. Errors
// about defaults that do not fit are reported at at.
func (p *parser) heartbeat(n, at *yaml.Node) Heartbeat {
	hb := Heartbeat{
		Interval:     DefaultInterval,
		Multiplier:   DefaultMultiplier,
		Rise:         DefaultRise,
		StallTimeout: DefaultStallTimeout,
		Mode:         ModeEBPF,
	}
	var f map[string]field
	if n != nil {
		f = p.mapping(n, "heartbeat", "interval", "multiplier", "rise", "stall_timeout",
			"progress_timeout", "sweep", "mode")
		if f == nil {
			return hb
		}
		at = yamlfile.Deref(n)
	}
	// ok stays true while every value the cross checks need is valid.
	ok := true
	check := func(good bool) { ok = ok && good }
	if e, found := f["interval"]; found {
		var good bool
		hb.Interval, good = p.durationIn(e.val, "heartbeat.interval", MinInterval, MaxInterval)
		check(good)
	}
	if e, found := f["multiplier"]; found {
		v, good := p.intIn(e.val, "heartbeat.multiplier", "multiplier", MinMultiplier, MaxMultiplier)
		hb.Multiplier = int(v)
		check(good)
	}
	if e, found := f["rise"]; found {
		v, _ := p.intIn(e.val, "heartbeat.rise", "rise", MinRise, MaxRise)
		hb.Rise = int(v)
	}
	if e, found := f["stall_timeout"]; found {
		var good bool
		hb.StallTimeout, good = p.duration(e.val, "heartbeat.stall_timeout")
		check(good)
	}
	if e, found := f["progress_timeout"]; found {
		var good bool
		hb.ProgressTimeout, good = p.duration(e.val, "heartbeat.progress_timeout")
		check(good)
	}
	hb.Sweep = hb.Interval
	if e, found := f["sweep"]; found {
		var good bool
		hb.Sweep, good = p.duration(e.val, "heartbeat.sweep")
		check(good)
	}
	if e, found := f["mode"]; found {
		if s, good := p.str(e.val, "heartbeat.mode"); good {
			switch m := Mode(s); m {
			case ModeEBPF, ModeFallback:
				hb.Mode = m
			default:
				p.errorf(e.val, "heartbeat.mode: %q is not a mode (ebpf or fallback)", s)
			}
		}
	}
	if !ok {
		return hb
	}
	// where returns the node to blame for a relation between values: the first key given.
	where := func(keys ...string) *yaml.Node {
		for _, k := range keys {
			if e, found := f[k]; found {
				return e.val
			}
		}
		return at
	}
	detect := hb.Interval * time.Duration(hb.Multiplier)
	if hb.StallTimeout <= detect {
		p.errorf(where("stall_timeout", "interval", "multiplier"),
			"heartbeat.stall_timeout: %v must exceed interval*multiplier (%v)", hb.StallTimeout, detect)
	}
	if hb.ProgressTimeout < 0 || hb.ProgressTimeout != 0 && hb.ProgressTimeout <= detect {
		p.errorf(where("progress_timeout"),
			"heartbeat.progress_timeout: %v must be 0 (off) or exceed interval*multiplier (%v)",
			hb.ProgressTimeout, detect)
	}
	if hb.Sweep < MinSweep || hb.Sweep > hb.Interval {
		p.errorf(where("sweep", "interval"), "heartbeat.sweep: %v is out of range (%v..interval, %v)",
			hb.Sweep, MinSweep, hb.Interval)
	}
	return hb
}

// links walks the list of links.
func (p *parser) links(e field) []Link {
	items, ok := p.sequence(e.val, "links")
	if !ok {
		return nil
	}
	switch {
	case len(items) == 0:
		p.errorf(e.key, "links: at least one link is required")
	case len(items) > MaxLinks:
		p.errorf(e.key, "links: %d links, at most %d are supported", len(items), MaxLinks)
	}
	links := make([]Link, len(items))
	names := make(map[string]int)
	locals := make(map[netip.AddrPort]int)
	for i, item := range items {
		path := fmt.Sprintf("links[%d]", i)
		f := p.mapping(item, path, "name", "udp")
		if f == nil {
			continue
		}
		p.require(yamlfile.Deref(item), path, f, "name")
		if e, ok := f["name"]; ok {
			if s, ok := p.ifName(e.val, path+".name"); ok {
				if j, dup := names[s]; dup {
					p.errorf(e.val, "%s.name: %q is already used by links[%d]", path, s, j)
				} else {
					names[s] = i
				}
				links[i].Name = s
			}
		}
		if e, ok := f["udp"]; ok {
			uf := p.mapping(e.val, path+".udp", "local")
			if uf == nil {
				continue
			}
			p.require(yamlfile.Deref(e.val), path+".udp", uf, "local")
			if le, ok := uf["local"]; ok {
				if ap, ok := p.endpoint(le.val, path+".udp.local"); ok {
					if j, dup := locals[ap]; dup {
						p.errorf(le.val, "%s.udp.local: %v is already used by links[%d]", path, ap, j)
					} else {
						locals[ap] = i
					}
					links[i].UDP = ap
				}
			}
		}
	}
	return links
}

// peers walks the list of peers; c holds the node's id and name and the links.
func (p *parser) peers(e field, c *Config) []Peer {
	items, ok := p.sequence(e.val, "peers")
	if !ok {
		return nil
	}
	if len(items) > MaxPeers {
		p.errorf(e.key, "peers: %d peers, at most %d are supported", len(items), MaxPeers)
	}
	if len(items) == 0 {
		return nil
	}
	linkByName := make(map[string]int, len(c.Links))
	for i, l := range c.Links {
		if l.Name != "" {
			linkByName[l.Name] = i
		}
	}
	ids := map[int]string{}
	if c.Node != 0 {
		ids[c.Node] = "this node (node)"
	}
	names := map[string]string{}
	if c.Name != "" {
		names[c.Name] = "this node (name)"
	}
	// used[link][endpoint] is the peer that has the endpoint on the link.
	used := make([]map[netip.AddrPort]int, len(c.Links))
	for i := range used {
		used[i] = make(map[netip.AddrPort]int)
	}
	peers := make([]Peer, len(items))
	for i, item := range items {
		path := fmt.Sprintf("peers[%d]", i)
		f := p.mapping(item, path, "id", "name", "udp")
		if f == nil {
			continue
		}
		item = yamlfile.Deref(item)
		p.require(item, path, f, "id")
		peer := &peers[i]
		if e, ok := f["id"]; ok {
			if v, ok := p.intIn(e.val, path+".id", "node id", 1, MaxNodeID); ok {
				peer.ID = int(v)
				if by, dup := ids[peer.ID]; dup {
					p.errorf(e.val, "%s.id: %d is already used by %s", path, v, by)
				} else {
					ids[peer.ID] = path
				}
			}
		}
		nameAt, defaulted := item, ""
		if e, ok := f["name"]; ok {
			peer.Name, _ = p.name(e.val, path+".name", "node name")
			nameAt = e.val
		} else if peer.ID != 0 {
			peer.Name, defaulted = defaultName(peer.ID), " (default)"
		}
		if peer.Name != "" {
			if by, dup := names[peer.Name]; dup {
				p.errorf(nameAt, "%s.name: %q%s is already used by %s", path, peer.Name, defaulted, by)
			} else {
				names[peer.Name] = path
			}
		}
		peer.UDP = make([]netip.AddrPort, len(c.Links))
		udpAt := item
		if e, ok := f["udp"]; ok {
			udpAt = yamlfile.Deref(e.val)
			p.peerUDP(e.val, i, c.Links, linkByName, peer, used)
		}
		for j, l := range c.Links {
			if l.IsUDP() && !peer.UDP[j].IsValid() {
				p.errorf(udpAt, "%s.udp: no endpoint for UDP link %q", path, l.Name)
			}
		}
	}
	return peers
}

// peerUDP walks the mapping from link names to endpoints of peers[idx] into peer.UDP.
func (p *parser) peerUDP(n *yaml.Node, idx int, links []Link, linkByName map[string]int, peer *Peer, used []map[netip.AddrPort]int) {
	path := fmt.Sprintf("peers[%d].udp", idx)
	n = yamlfile.Deref(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s: expected a mapping from link names to endpoints, got %s", path, yamlfile.Describe(n))
		return
	}
	seen := make(map[string]bool)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamlfile.Deref(n.Content[i]), n.Content[i+1]
		name, ok := p.str(k, path+" key")
		if !ok {
			continue
		}
		if seen[name] {
			p.errorf(k, "%s: duplicate key %q", path, name)
			continue
		}
		seen[name] = true
		j, ok := linkByName[name]
		if !ok {
			p.errorf(k, "%s: %q is not the name of a link", path, name)
			continue
		}
		if !links[j].IsUDP() {
			p.errorf(k, "%s: link %q is a raw Ethernet link; endpoints are only for UDP links", path, name)
			continue
		}
		at := path + "." + name
		ap, ok := p.endpoint(v, at)
		if !ok {
			continue
		}
		if ap.Addr().Is4() != links[j].UDP.Addr().Is4() {
			p.errorf(v, "%s: %v and the link's local endpoint %v are of different address families",
				at, ap, links[j].UDP)
			continue
		}
		if by, dup := used[j][ap]; dup {
			p.errorf(v, "%s: %v is already used by peers[%d]", at, ap, by)
			continue
		}
		if ap == links[j].UDP {
			p.errorf(v, "%s: %v is this node's own endpoint on the link", at, ap)
			continue
		}
		used[j][ap] = idx
		peer.UDP[j] = ap
	}
}
