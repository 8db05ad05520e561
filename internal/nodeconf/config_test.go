package nodeconf

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// lines joins its arguments into a file, one a line, so that tests can count lines.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// minimal is the smallest valid file; cases below append to it from line 7 on.
var minimal = []string{
	"cluster: prod-a",          // 1
	"node: 1",                  // 2
	"key_file: cluster.key",    // 3
	"data_dir: /var/lib/vigil", // 4
	"links:",                   // 5
	"  - name: priv0",          // 6
}

func withMinimal(more ...string) string {
	return lines(append(append([]string{}, minimal...), more...)...)
}

// fullExample is a file that sets every key.
const fullExample = `cluster: prod-a
cluster_id: 4711
node: 1
name: alpha
key_file: /etc/vigil/cluster.key
data_dir: /var/lib/vigil
admin_socket: /run/vigil/admin.sock
heartbeat:
  interval: 1ms
  multiplier: 3
  rise: 2
  stall_timeout: 5s
  progress_timeout: 1s
  sweep: 500us
  mode: fallback
links:
  - name: priv0
  - name: wan0
    udp: {local: 198.18.1.1:5405}
  - name: wan6
    udp:
      local: "[2001:db8::1]:5405"
peers:
  - id: 2
    name: beta
    udp: {wan0: 198.18.1.2:5405, wan6: "[2001:db8::2]:5405"}
  - id: 3
    udp: {wan6: "[2001:db8::3]:5405", wan0: 198.18.1.3:5405}
`

func fullExampleConfig() *Config {
	ap := netip.MustParseAddrPort
	return &Config{
		Cluster:     "prod-a",
		ClusterID:   4711,
		Node:        1,
		Name:        "alpha",
		KeyFile:     "/etc/vigil/cluster.key",
		DataDir:     "/var/lib/vigil",
		AdminSocket: "/run/vigil/admin.sock",
		Heartbeat: Heartbeat{
			Interval:        time.Millisecond,
			Multiplier:      3,
			Rise:            2,
			StallTimeout:    5 * time.Second,
			ProgressTimeout: time.Second,
			Sweep:           500 * time.Microsecond,
			Mode:            ModeFallback,
		},
		Links: []Link{
			{Name: "priv0"},
			{Name: "wan0", UDP: ap("198.18.1.1:5405")},
			{Name: "wan6", UDP: ap("[2001:db8::1]:5405")},
		},
		Peers: []Peer{
			{ID: 2, Name: "beta", UDP: []netip.AddrPort{{}, ap("198.18.1.2:5405"), ap("[2001:db8::2]:5405")}},
			{ID: 3, Name: "node3", UDP: []netip.AddrPort{{}, ap("198.18.1.3:5405"), ap("[2001:db8::3]:5405")}},
		},
	}
}

func TestParseFullExample(t *testing.T) {
	c, err := Parse("node.yaml", []byte(fullExample))
	if err != nil {
		t.Fatal(err)
	}
	if want := fullExampleConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse("node.yaml", []byte(withMinimal()))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Cluster:     "prod-a",
		ClusterID:   DefaultClusterID("prod-a"),
		Node:        1,
		Name:        "node1",
		KeyFile:     "cluster.key", // Parse leaves paths as written
		DataDir:     "/var/lib/vigil",
		AdminSocket: "/run/vigil/vigild.sock",
		Heartbeat: Heartbeat{
			Interval:     10 * time.Millisecond,
			Multiplier:   3,
			Rise:         3,
			StallTimeout: 5 * time.Second,
			Sweep:        10 * time.Millisecond,
			Mode:         ModeEBPF,
		},
		Links: []Link{{Name: "priv0"}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", c, want)
	}
	if c.ClusterID != 0xe9b93d0e {
		t.Errorf("default cluster id of prod-a = %#x, want 0xe9b93d0e (FNV-1a, as documented)", c.ClusterID)
	}

	// The sweep follows the interval when not given; peers get one UDP slot per link.
	c, err = Parse("node.yaml", []byte(withMinimal(
		"heartbeat: {interval: 2ms}",
		"peers: [{id: 2}]",
	)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Heartbeat.Sweep != 2*time.Millisecond {
		t.Errorf("sweep = %v, want the interval 2ms", c.Heartbeat.Sweep)
	}
	if want := []Peer{{ID: 2, Name: "node2", UDP: make([]netip.AddrPort, 1)}}; !reflect.DeepEqual(c.Peers, want) {
		t.Errorf("peers = %+v, want %+v", c.Peers, want)
	}
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		check      func(*Config) error
	}{
		{"zero duration as 0", withMinimal("heartbeat: {progress_timeout: 0}"), nil},
		{"bounds", lines(
			"cluster: "+strings.Repeat("a", 63),
			"cluster_id: 4294967295",
			"node: 63",
			"key_file: k",
			"data_dir: d",
			"heartbeat: {interval: 100us, multiplier: 100, rise: 100, sweep: 20us, stall_timeout: 10001us}",
			"links: [{name: a23456789012345}, {name: b}, {name: c}, {name: d}]",
		), nil},
		{"upper interval", withMinimal("heartbeat: {interval: 10s, multiplier: 2, stall_timeout: 21s}"), nil},
		{"numbers as names", lines(
			"cluster: 4711",
			"node: 1",
			"name: '1'",
			"key_file: 2024-01-01",
			"data_dir: /d",
			"links: [{name: '0'}]",
		), func(c *Config) error {
			if c.Cluster != "4711" || c.Name != "1" || c.KeyFile != "2024-01-01" || c.Links[0].Name != "0" {
				return fmt.Errorf("got %+v", c)
			}
			return nil
		}},
		{"anchors and aliases", lines(
			"cluster: &c prod-a",
			"node: 1",
			"name: *c",
			"key_file: k",
			"data_dir: d",
			"links: [&l {name: priv0}]",
		), func(c *Config) error {
			if c.Name != "prod-a" {
				return fmt.Errorf("name = %q", c.Name)
			}
			return nil
		}},
		{"no peers", withMinimal("peers: []"), func(c *Config) error {
			if c.Peers != nil {
				return fmt.Errorf("peers = %#v, want nil", c.Peers)
			}
			return nil
		}},
		{"62 peers", withMinimal("peers: [" + peerList(2, 63) + "]"), func(c *Config) error {
			if len(c.Peers) != 62 {
				return fmt.Errorf("%d peers", len(c.Peers))
			}
			return nil
		}},
		{"document markers", "---\n" + withMinimal() + "...\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("node.yaml", []byte(tc.text))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, tc.text)
			}
			if tc.check != nil {
				if err := tc.check(c); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// peerList returns flow mappings for peers with ids lo..hi.
func peerList(lo, hi int) string {
	var s []string
	for id := lo; id <= hi; id++ {
		s = append(s, fmt.Sprintf("{id: %d}", id))
	}
	return strings.Join(s, ", ")
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string // each must appear in the error, which starts with the file name
	}{
		// Structure and types.
		{"unknown key", withMinimal("clustre: x"), []string{`node.yaml:7: unknown key "clustre"`}},
		{"unknown heartbeat key", withMinimal("heartbeat:", "  intervall: 1ms"),
			[]string{`node.yaml:8: unknown key "intervall" in heartbeat`}},
		{"unknown link key", withMinimal("  - name: priv1", "    mtu: 9000"),
			[]string{`node.yaml:8: unknown key "mtu" in links[1]`}},
		{"unknown udp key", withMinimal("  - name: priv1", "    udp: {local: 10.0.0.1:5405, remote: 10.0.0.2:5405}"),
			[]string{`node.yaml:8: unknown key "remote" in links[1].udp`}},
		{"duplicate key", withMinimal("node: 2"), []string{`node.yaml:7: duplicate key "node" (first on line 2)`}},
		{"merge key", withMinimal("heartbeat:", "  <<: {rise: 2}"),
			[]string{`node.yaml:8: merge keys (<<) are not supported in heartbeat`}},
		{"missing keys", lines("cluster: prod-a", "name: x"), []string{
			`node.yaml:1: missing required key "node"`,
			`node.yaml:1: missing required key "key_file"`,
			`node.yaml:1: missing required key "data_dir"`,
			`node.yaml:1: missing required key "links"`,
		}},
		{"missing cluster", lines("node: 1", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:1: missing required key "cluster"`}},
		{"quoted integer", lines("cluster: a", `node: "1"`, "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:2: node: expected an integer, got "1"`}},
		{"float node", lines("cluster: a", "node: 1.5", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:2: node: expected an integer, got 1.5`}},
		{"null string", withMinimal("name:"), []string{`node.yaml:7: name: expected a string, got null`}},
		{"list for string", withMinimal("admin_socket: [a]"), []string{`node.yaml:7: admin_socket: expected a string, got a list`}},
		{"binary string", withMinimal("name: !!binary YWJj"), []string{`node.yaml:7: name: expected a string, got !!binary "YWJj"`}},
		{"heartbeat not a mapping", withMinimal("heartbeat: 10ms"),
			[]string{`node.yaml:7: heartbeat: expected a mapping, got "10ms"`}},
		{"links not a list", lines("cluster: a", "node: 1", "key_file: k", "data_dir: d", "links: {name: a}"),
			[]string{`node.yaml:5: links: expected a list, got a mapping`}},
		{"top level list", "- a\n- b\n", []string{`node.yaml:1: expected a mapping of keys at the top level, got a list`}},
		{"empty", "", []string{`node.yaml: empty configuration`}},
		{"only comments", "# nothing\n", []string{`node.yaml: empty configuration`}},
		{"unclosed flow mapping", withMinimal("heartbeat: {interval: 1ms"),
			[]string{`node.yaml:7: did not find expected ',' or '}'`}},
		{"list item in mapping", withMinimal("- priv1"), []string{`node.yaml:7: did not find expected key`}},
		{"nested mapping value", withMinimal("name: a: b"), []string{`node.yaml:7: mapping values are not allowed in this context`}},
		{"unknown anchor", withMinimal("name: *x"), []string{`node.yaml: unknown anchor 'x' referenced`}},
		{"tab indent", withMinimal("heartbeat:", "\tinterval: 1ms"), []string{`node.yaml:8: found character that cannot start any token`}},
		{"two documents", withMinimal("---", "cluster: b"), []string{`node.yaml:7: a second YAML document`}},

		// Top-level values.
		{"cluster name chars", lines("cluster: Prod_A", "node: 1", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:1: cluster: "Prod_A" is not a valid cluster name (1..63 characters from a-z, 0-9 and -)`}},
		{"cluster name long", lines("cluster: "+strings.Repeat("a", 64), "node: 1", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:1: cluster: "aaaa`, "is not a valid cluster name"}},
		{"cluster name empty", lines("cluster: ''", "node: 1", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:1: cluster: "" is not a valid cluster name`}},
		{"cluster id zero", withMinimal("cluster_id: 0"), []string{`node.yaml:7: cluster_id: 0 is not a valid cluster id (1..4294967295)`}},
		{"cluster id big", withMinimal("cluster_id: 4294967296"), []string{`node.yaml:7: cluster_id: 4294967296 is not a valid cluster id (1..4294967295)`}},
		{"cluster id negative", withMinimal("cluster_id: -1"), []string{`node.yaml:7: cluster_id: -1 is not a valid cluster id`}},
		{"cluster id huge", withMinimal("cluster_id: 99999999999999999999"), []string{`node.yaml:7: cluster_id: `}},
		{"node zero", lines("cluster: a", "node: 0", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:2: node: 0 is not a valid node id (1..63)`}},
		{"node 64", lines("cluster: a", "node: 64", "key_file: k", "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:2: node: 64 is not a valid node id (1..63)`}},
		{"node name", withMinimal("name: Alpha"), []string{`node.yaml:7: name: "Alpha" is not a valid node name`}},
		{"empty path", lines("cluster: a", "node: 1", `key_file: ""`, "data_dir: d", "links: [{name: a}]"),
			[]string{`node.yaml:3: key_file: empty path`}},
		{"control character in path", lines("cluster: a", "node: 1", "key_file: k", `data_dir: "/var/\tx"`, "links: [{name: a}]"),
			[]string{`node.yaml:4: data_dir: "/var/\tx" contains a control character`}},
		{"socket path too long", withMinimal("admin_socket: /" + strings.Repeat("s", 107)),
			[]string{`node.yaml:7: admin_socket: "/sss`, `is 108 bytes long; a unix socket path holds at most 107`}},

		// Heartbeat.
		{"interval short", withMinimal("heartbeat: {interval: 50us}"),
			[]string{`node.yaml:7: heartbeat.interval: 50µs is out of range (100µs..10s)`}},
		{"interval long", withMinimal("heartbeat:", "  interval: 11s"),
			[]string{`node.yaml:8: heartbeat.interval: 11s is out of range (100µs..10s)`}},
		{"interval negative", withMinimal("heartbeat: {interval: -1ms}"),
			[]string{`node.yaml:7: heartbeat.interval: -1ms is out of range`}},
		{"interval no unit", withMinimal("heartbeat:", "  interval: 10"),
			[]string{`node.yaml:8: heartbeat.interval: expected a duration like 10ms, 250us or 1.5s, got 10`}},
		{"interval bad", withMinimal("heartbeat:", "  interval: 1 ms"),
			[]string{`node.yaml:8: heartbeat.interval: expected a duration like 10ms, 250us or 1.5s, got "1 ms"`}},
		{"multiplier", withMinimal("heartbeat:", "  multiplier: 1"),
			[]string{`node.yaml:8: heartbeat.multiplier: 1 is not a valid multiplier (2..100)`}},
		{"multiplier big", withMinimal("heartbeat:", "  multiplier: 101"),
			[]string{`node.yaml:8: heartbeat.multiplier: 101 is not a valid multiplier (2..100)`}},
		{"rise", withMinimal("heartbeat:", "  rise: 0"), []string{`node.yaml:8: heartbeat.rise: 0 is not a valid rise (1..100)`}},
		{"stall timeout short", withMinimal("heartbeat:", "  interval: 10ms", "  stall_timeout: 30ms"),
			[]string{`node.yaml:9: heartbeat.stall_timeout: 30ms must exceed interval*multiplier (30ms)`}},
		{"default stall timeout short", withMinimal("heartbeat:", "  interval: 10s"),
			[]string{`node.yaml:8: heartbeat.stall_timeout: 5s must exceed interval*multiplier (30s)`}},
		{"default stall timeout short by multiplier", withMinimal("heartbeat:", "  multiplier: 100", "  interval: 100ms"),
			[]string{`node.yaml:9: heartbeat.stall_timeout: 5s must exceed interval*multiplier (10s)`}},
		{"progress timeout short", withMinimal("heartbeat:", "  progress_timeout: 20ms"),
			[]string{`node.yaml:8: heartbeat.progress_timeout: 20ms must be 0 (off) or exceed interval*multiplier (30ms)`}},
		{"progress timeout negative", withMinimal("heartbeat:", "  progress_timeout: -1s"),
			[]string{`node.yaml:8: heartbeat.progress_timeout: -1s must be 0 (off)`}},
		{"sweep long", withMinimal("heartbeat:", "  interval: 1ms", "  sweep: 2ms"),
			[]string{`node.yaml:9: heartbeat.sweep: 2ms is out of range (20µs..interval, 1ms)`}},
		{"sweep short", withMinimal("heartbeat:", "  sweep: 10us"),
			[]string{`node.yaml:8: heartbeat.sweep: 10µs is out of range (20µs..interval, 10ms)`}},
		{"mode", withMinimal("heartbeat:", "  mode: xdp"), []string{`node.yaml:8: heartbeat.mode: "xdp" is not a mode (ebpf or fallback)`}},

		// Links.
		{"no links", lines("cluster: a", "node: 1", "key_file: k", "data_dir: d", "links: []"),
			[]string{`node.yaml:5: links: at least one link is required`}},
		{"five links", lines("cluster: a", "node: 1", "key_file: k", "data_dir: d", "links: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]"),
			[]string{`node.yaml:5: links: 5 links, at most 4 are supported`}},
		{"link without name", withMinimal("  - udp: {local: 10.0.0.1:1}"), []string{`node.yaml:7: links[1]: missing required key "name"`}},
		{"link not a mapping", withMinimal("  - priv1"), []string{`node.yaml:7: links[1]: expected a mapping, got "priv1"`}},
		{"interface slash", withMinimal("  - name: eth/0"), []string{`node.yaml:7: links[1].name: "eth/0" is not a valid interface name`}},
		{"interface colon", withMinimal("  - name: eth0:1"), []string{`node.yaml:7: links[1].name: "eth0:1" is not a valid interface name`}},
		{"interface space", withMinimal("  - name: 'eth 0'"), []string{`node.yaml:7: links[1].name: "eth 0" is not a valid interface name`}},
		{"interface long", withMinimal("  - name: a234567890123456"), []string{`node.yaml:7: links[1].name: "a234567890123456" is not a valid interface name (1..15 bytes; no '/', ':' or whitespace; not . or ..)`}},
		{"interface dot", withMinimal("  - name: ."), []string{`node.yaml:7: links[1].name: "." is not a valid interface name`}},
		{"interface dotdot", withMinimal("  - name: .."), []string{`node.yaml:7: links[1].name: ".." is not a valid interface name`}},
		{"interface empty", withMinimal("  - name: ''"), []string{`node.yaml:7: links[1].name: "" is not a valid interface name`}},
		{"duplicate link", withMinimal("  - name: priv0"), []string{`node.yaml:7: links[1].name: "priv0" is already used by links[0]`}},
		{"udp without local", withMinimal("  - name: wan0", "    udp: {}"), []string{`node.yaml:8: links[1].udp: missing required key "local"`}},
		{"udp not a mapping", withMinimal("  - name: wan0", "    udp: 10.0.0.1:5405"), []string{`node.yaml:8: links[1].udp: expected a mapping, got "10.0.0.1:5405"`}},
		{"udp no port", withMinimal("  - name: wan0", "    udp: {local: 10.0.0.1}"),
			[]string{`node.yaml:8: links[1].udp.local: "10.0.0.1" is not an ip:port endpoint`}},
		{"udp host name", withMinimal("  - name: wan0", "    udp: {local: 'beta:5405'}"),
			[]string{`node.yaml:8: links[1].udp.local: "beta:5405" is not an ip:port endpoint`}},
		{"udp port zero", withMinimal("  - name: wan0", "    udp: {local: 10.0.0.1:0}"),
			[]string{`node.yaml:8: links[1].udp.local: "10.0.0.1:0": port 0 is not allowed`}},
		{"udp unspecified", withMinimal("  - name: wan0", "    udp: {local: 0.0.0.0:5405}"),
			[]string{`node.yaml:8: links[1].udp.local: "0.0.0.0:5405" is not a unicast address`}},
		{"udp duplicate local", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"  - name: wan1", "    udp: {local: 10.0.0.1:5405}"),
			[]string{`node.yaml:10: links[2].udp.local: 10.0.0.1:5405 is already used by links[1]`}},

		// Peers.
		{"peers not a list", withMinimal("peers: {id: 2}"), []string{`node.yaml:7: peers: expected a list, got a mapping`}},
		{"peer without id", withMinimal("peers:", "  - name: beta"), []string{`node.yaml:8: peers[0]: missing required key "id"`}},
		{"peer id zero", withMinimal(
			"peers:",
			"  - id: 2",
			"    name: beta",
			"  - id: 0",
			"    name: gamma",
		), []string{`node.yaml:10: peers[1].id: 0 is not a valid node id (1..63)`}},
		{"peer id is this node", withMinimal("peers:", "  - id: 1"),
			[]string{`node.yaml:8: peers[0].id: 1 is already used by this node (node)`}},
		{"duplicate peer id", withMinimal("peers:", "  - id: 2", "  - id: 2"),
			[]string{`node.yaml:9: peers[1].id: 2 is already used by peers[0]`}},
		{"duplicate peer name", withMinimal("peers:", "  - {id: 2, name: beta}", "  - {id: 3, name: beta}"),
			[]string{`node.yaml:9: peers[1].name: "beta" is already used by peers[0]`}},
		{"peer name is this node's", withMinimal("name: alpha", "peers:", "  - {id: 2, name: alpha}"),
			[]string{`node.yaml:9: peers[0].name: "alpha" is already used by this node (name)`}},
		{"default peer name taken", withMinimal("peers:", "  - {id: 2, name: node3}", "  - {id: 3}"),
			[]string{`node.yaml:9: peers[1].name: "node3" (default) is already used by peers[0]`}},
		{"too many peers", withMinimal("peers: [" + peerList(2, 63) + ", {id: 2}]"),
			[]string{`node.yaml:7: peers: 63 peers, at most 62 are supported`}},
		{"peer missing endpoint", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - id: 2",
		), []string{`node.yaml:10: peers[0].udp: no endpoint for UDP link "wan0"`}},
		{"peer missing endpoint with udp", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"  - name: wan1", "    udp: {local: 10.0.1.1:5405}",
			"peers:",
			"  - id: 2",
			"    udp:",
			"      wan0: 10.0.0.2:5405",
		), []string{`node.yaml:14: peers[0].udp: no endpoint for UDP link "wan1"`}},
		{"peer endpoint on raw link", withMinimal("peers:", "  - {id: 2, udp: {priv0: 10.0.0.2:5405}}"),
			[]string{`node.yaml:8: peers[0].udp: link "priv0" is a raw Ethernet link; endpoints are only for UDP links`}},
		{"peer endpoint unknown link", withMinimal("peers:", "  - {id: 2, udp: {wan9: 10.0.0.2:5405}}"),
			[]string{`node.yaml:8: peers[0].udp: "wan9" is not the name of a link`}},
		{"peer endpoint family", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - id: 2",
			`    udp: {wan0: "[2001:db8::2]:5405"}`,
		), []string{`node.yaml:11: peers[0].udp.wan0: [2001:db8::2]:5405 and the link's local endpoint 10.0.0.1:5405 are of different address families`}},
		{"peer endpoint bad", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - id: 2",
			"    udp: {wan0: 10.0.0.2:99999}",
		), []string{`node.yaml:11: peers[0].udp.wan0: "10.0.0.2:99999" is not an ip:port endpoint`}},
		{"peer endpoint duplicate", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - {id: 2, udp: {wan0: 10.0.0.2:5405}}",
			"  - {id: 3, udp: {wan0: 10.0.0.2:5405}}",
		), []string{`node.yaml:11: peers[1].udp.wan0: 10.0.0.2:5405 is already used by peers[0]`}},
		{"peer endpoint is own", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - {id: 2, udp: {wan0: 10.0.0.1:5405}}",
		), []string{`node.yaml:10: peers[0].udp.wan0: 10.0.0.1:5405 is this node's own endpoint on the link`}},
		{"peer udp not a mapping", withMinimal("peers:", "  - {id: 2, udp: [10.0.0.2:5405]}"),
			[]string{`node.yaml:8: peers[0].udp: expected a mapping from link names to endpoints, got a list`}},
		{"peer udp duplicate link", withMinimal(
			"  - name: wan0", "    udp: {local: 10.0.0.1:5405}",
			"peers:",
			"  - {id: 2, udp: {wan0: 10.0.0.2:5405, wan0: 10.0.0.3:5405}}",
		), []string{`node.yaml:10: peers[0].udp: duplicate key "wan0"`}},

		// Several errors at once, reported in line order.
		{"several", lines(
			"cluster: Bad",
			"node: 0",
			"key_file: k",
			"data_dir: d",
			"heartbeat: {rise: 0, bogus: 1}",
			"links: [{name: a/b}]",
			"peers: [{id: 99}]",
		), []string{
			"node.yaml:1: cluster: \"Bad\" is not a valid cluster name (1..63 characters from a-z, 0-9 and -)\n" +
				"node.yaml:2: node: 0 is not a valid node id (1..63)\n",
			`node.yaml:5: unknown key "bogus" in heartbeat`,
			`node.yaml:5: heartbeat.rise: 0 is not a valid rise (1..100)`,
			"node.yaml:6: links[0].name: \"a/b\" is not a valid interface name (1..15 bytes; no '/', ':' or whitespace; not . or ..)\n" +
				"node.yaml:7: peers[0].id: 99 is not a valid node id (1..63)",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("node.yaml", []byte(tc.text))
			if err == nil {
				t.Fatalf("Parse accepted\n%s", tc.text)
			}
			if c != nil {
				t.Errorf("Parse returned a Config with the error")
			}
			msg := err.Error()
			for _, line := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(line, "node.yaml:") {
					t.Errorf("error line %q does not start with the file name", line)
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\ndoes not contain\n%s", msg, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.yaml")
	text := lines(
		"cluster: a",
		"node: 1",
		"key_file: keys/cluster.key",
		"data_dir: data",
		"admin_socket: /run/x.sock",
		"links: [{name: priv0}]",
	)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "keys", "cluster.key"); c.KeyFile != want {
		t.Errorf("KeyFile = %q, want %q", c.KeyFile, want)
	}
	if want := filepath.Join(dir, "data"); c.DataDir != want {
		t.Errorf("DataDir = %q, want %q", c.DataDir, want)
	}
	if c.AdminSocket != "/run/x.sock" {
		t.Errorf("AdminSocket = %q, want it as written", c.AdminSocket)
	}

	// A path relative to the working directory resolves against the file's directory too.
	t.Chdir(dir)
	c, err = Load("node.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "keys", "cluster.key"); c.KeyFile != want {
		t.Errorf("KeyFile = %q, want %q", c.KeyFile, want)
	}

	// Errors name the path as given.
	if err := os.WriteFile(path, []byte(text+"bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+`:7: unknown key "bogus"`) {
		t.Errorf("Load = %v, want an unknown key error on %s:7", err, path)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestDefaultClusterID(t *testing.T) {
	for name, want := range map[string]uint32{
		"":       0x811c9dc5, // the FNV-1a offset basis
		"a":      0xe40c292c,
		"prod-a": 0xe9b93d0e,
	} {
		if got := DefaultClusterID(name); got != want {
			t.Errorf("DefaultClusterID(%q) = %#x, want %#x", name, got, want)
		}
	}
}

// TestDocExample parses the example in the package documentation, so that it stays valid.
func TestDocExample(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var example []string
	in := false
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(l, "//\t"):
			if in || strings.HasPrefix(l, "//\tcluster:") {
				in = true
				example = append(example, strings.TrimPrefix(l, "//\t"))
			}
		case in:
			in = false
		}
		if !in && example != nil {
			break
		}
	}
	if len(example) < 20 {
		t.Fatalf("found no example in doc.go (%d lines)", len(example))
	}
	c, err := Parse("doc.go example", []byte(lines(example...)))
	if err != nil {
		t.Fatal(err)
	}
	if c.ClusterID != 4711 || len(c.Links) != 2 || len(c.Peers) != 2 || c.Peers[1].Name != "node3" {
		t.Errorf("doc example parsed as %+v", c)
	}
}
