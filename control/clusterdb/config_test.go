package clusterdb

import (
	"errors"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// lines joins its arguments into a file, one a line, so that tests can count lines.
func lines(l ...string) string { return strings.Join(l, "\n") + "\n" }

// base is a small valid file; cases append to it from line 24 on.
var base = []string{
	"version: 1",                      // 1
	"nodes:",                          // 2
	"  alpha: {id: 1}",                // 3
	"  beta: {id: 2}",                 // 4
	"  gamma: {id: 3, role: witness}", // 5
	"resource_types:",                 // 6
	"  ip:",                           // 7
	"    agent: builtin:ip",           // 8
	"    parameters:",                 // 9
	"      address: {required: true}", // 10
	"      prefix: {type: integer, default: 24}", // 11
	"  nic:",                                // 12
	"    agent: builtin:ip",                 // 13
	"    category: persistent",              // 14
	"groups:",                               // 15
	"  web:",                                // 16
	"    nodes: [alpha, beta]",              // 17
	"    resources:",                        // 18
	"      nic0: {type: nic}",               // 19
	"      ip:",                             // 20
	"        type: ip",                      // 21
	"        params: {address: 192.0.2.10}", // 22
	"        requires: [nic0]",              // 23
}

func withBase(more ...string) string { return lines(append(append([]string{}, base...), more...)...) }

// replace returns base with line n (1-based) replaced by the given lines.
func replace(n int, with ...string) string {
	l := append([]string{}, base[:n-1]...)
	l = append(l, with...)
	return lines(append(l, base[n:]...)...)
}

// docExample returns the cluster.yaml of the package doc.
func docExample(t testing.TB) string {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	i := strings.Index(s, "//\tversion: 1")
	j := strings.Index(s[i:], "\n//\n")
	if i < 0 || j < 0 {
		t.Fatal("no example in doc.go")
	}
	var b strings.Builder
	for _, l := range strings.Split(s[i:i+j], "\n") {
		b.WriteString(strings.TrimPrefix(l, "//\t") + "\n")
	}
	return b.String()
}

func TestParseDocExample(t *testing.T) {
	c, err := ParseConfig("cluster.yaml", []byte(docExample(t)))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := c.Group("web")
	if !ok || g.Kind != GroupFailover || !g.AutoStart || len(g.Resources) != 3 {
		t.Fatalf("group web = %+v", g)
	}
	if n, _ := c.Node("gamma"); n.Role != RoleWitness || n.ID != 3 {
		t.Errorf("gamma = %+v", n)
	}
	params, ok := c.Params("web", "ip")
	if want := map[string]string{"address": "192.0.2.10", "device": "eth0", "prefix": "24"}; !ok || !reflect.DeepEqual(params, want) {
		t.Errorf("Params(web, ip) = %v, want %v", params, want)
	}
	if params, _ := c.Params("web", "server"); params["stop_timeout"] != "30s" || params["configfile"] != "/etc/httpd/httpd.conf" {
		t.Errorf("Params(web, server) = %v", params)
	}
	if _, ok := c.Params("web", "nope"); ok {
		t.Error("Params of an unknown resource reports true")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseBase(t *testing.T) {
	c, err := ParseConfig("cluster.yaml", []byte(withBase()))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Version:   1,
		Heartbeat: Heartbeat{Interval: 10 * time.Millisecond, Multiplier: 3, StallTimeout: 5 * time.Second},
		Nodes: []Node{
			{Name: "alpha", ID: 1, Role: RoleMember},
			{Name: "beta", ID: 2, Role: RoleMember},
			{Name: "gamma", ID: 3, Role: RoleWitness},
		},
		ResourceTypes: []ResourceType{
			{Name: "ip", Agent: "builtin:ip", Category: CategoryOnOff, Parameters: []Parameter{
				{Name: "address", Type: ParamString, Required: true},
				{Name: "prefix", Type: ParamInteger, Default: "24"},
			}},
			{Name: "nic", Agent: "builtin:ip", Category: CategoryPersistent},
		},
		Groups: []Group{{
			Name: "web", Kind: GroupFailover, Nodes: []string{"alpha", "beta"}, AutoStart: true,
			Resources: []Resource{
				{Name: "nic0", Type: "nic"},
				{Name: "ip", Type: "ip", Params: map[string]string{"address": "192.0.2.10"}, Requires: []string{"nic0"}},
			},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ParseConfig:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		check      func(*Config) string
	}{
		{"canonical values", replace(11,
			"      prefix: {type: integer, default: 0x18}",
			"      hold: {type: duration, default: 90s}",
			"      gratuitous: {type: boolean, default: True}",
			"      label: {default: 42}",
		), func(c *Config) string {
			t, _ := c.ResourceType("ip")
			got := []string{t.Parameters[1].Default, t.Parameters[2].Default, t.Parameters[3].Default, t.Parameters[4].Default}
			if want := []string{"24", "1m30s", "true", "42"}; !reflect.DeepEqual(got, want) {
				return strings.Join(got, ",")
			}
			return ""
		}},
		{"typed values from strings", replace(22, "        params: {address: 192.0.2.10, prefix: '16'}"), func(c *Config) string {
			g, _ := c.Group("web")
			if r, _ := g.Resource("ip"); r.Params["prefix"] != "16" {
				return r.Params["prefix"]
			}
			return ""
		}},
		{"everything optional", withBase(
			"heartbeat: {interval: 1ms, multiplier: 3, stall_timeout: 1s}",
			"drd_devices:",
			"  data0: {backing: /dev/vg0/data0, nodes: [beta, alpha]}",
			"users:",
			"  root: {role: admin}",
			"  ops: {role: operator}",
			"  audit: {}",
		), func(c *Config) string {
			if c.Heartbeat.Interval != time.Millisecond || c.Users[2].Role != UserGuest || c.DRDDevices[0].Nodes[0] != "beta" {
				return "wrong values"
			}
			return ""
		}},
		{"parallel group without autostart or resources", withBase(
			"  db:",
			"    kind: parallel",
			"    nodes: [beta]",
			"    autostart: false",
		), func(c *Config) string {
			g, _ := c.Group("db")
			if g.Kind != GroupParallel || g.AutoStart || g.Resources != nil {
				return "wrong group"
			}
			return ""
		}},
		{"numbers as names", lines(
			"version: 1",
			"nodes: {1: {id: 1}}",
			"groups: {2024: {nodes: [1]}}",
		), func(c *Config) string {
			if c.Nodes[0].Name != "1" || c.Groups[0].Nodes[0] != "1" {
				return "names"
			}
			return ""
		}},
		{"anchors and aliases", lines(
			"version: 1",
			"nodes: {alpha: &n {id: 1}, beta: {id: 2}}",
			"groups:",
			"  a: &g {nodes: &l [alpha, beta]}",
			"  b: *g",
			"drd_devices: {d: {backing: /d, nodes: *l}}",
		), func(c *Config) string {
			if len(c.Groups) != 2 || len(c.DRDDevices[0].Nodes) != 2 {
				return "aliases not followed"
			}
			return ""
		}},
		{"bounds", lines(
			"version: 1",
			"heartbeat: {interval: 100us, multiplier: 100, stall_timeout: 1h}",
			"nodes: {"+strings.Repeat("a", 63)+": {id: 63}}",
		), nil},
		{"diamond dependencies", withBase(
			"      a: {type: nic, requires: [b, c]}",
			"      b: {type: nic, requires: [d]}",
			"      c: {type: nic, requires: [d]}",
			"      d: {type: nic}",
		), nil},
		{"empty lists and maps", withBase(
			"      e: {type: nic, params: {}, requires: []}",
			"drd_devices: {}",
			"users: {}",
		), func(c *Config) string {
			g, _ := c.Group("web")
			if r, _ := g.Resource("e"); r.Params != nil || r.Requires != nil {
				return "empty params or requires are not nil"
			}
			if c.DRDDevices != nil || c.Users != nil {
				return "empty sections"
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("cluster.yaml", []byte(tc.text))
			if err != nil {
				t.Fatalf("ParseConfig: %v\n%s", err, tc.text)
			}
			if tc.check != nil {
				if msg := tc.check(c); msg != "" {
					t.Errorf("%s: %+v", msg, c)
				}
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			roundTrip(t, c)
		})
	}
}

// roundTrip checks that Marshal writes c so that ParseConfig reads it back unchanged.
func roundTrip(t *testing.T, c *Config) {
	t.Helper()
	out, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := ParseConfig("marshalled.yaml", out)
	if err != nil {
		t.Fatalf("ParseConfig(Marshal()): %v\n%s", err, out)
	}
	if d := Diff(c, back); len(d) > 0 || !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip changed the config: %v\n got %+v\nwant %+v\nYAML:\n%s", d, back, c, out)
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []string // every error line, in order, without the "cluster.yaml:" prefix
	}{
		// The YAML itself.
		{"empty file", "", []string{" empty configuration"}},
		{"only a comment", "# nothing\n", []string{" empty configuration"}},
		{"syntax error", "version: 1\nnodes: [\n", []string{
			"3: did not find expected node content"}},
		{"tab indentation", "version: 1\nnodes:\n\talpha: {id: 1}\n", []string{
			"3: found character that cannot start any token"}},
		{"two documents", withBase("---", "version: 1"), []string{
			"24: a second YAML document; the file must hold only one"}},
		{"top level is a list", "- version: 1\n", []string{
			"1: expected a mapping, got a list"}},

		// Keys.
		{"unknown top-level key", replace(2, "nodez:"), []string{
			"1: missing required key \"nodes\"",
			"2: unknown key \"nodez\" (did you mean \"nodes\"?)"}},
		{"unknown key in a node", replace(3, "  alpha: {id: 1, rol: witness}"), []string{
			"3: nodes.alpha: unknown key \"rol\" (did you mean \"role\"?)"}},
		{"unknown key in a resource", replace(23, "        require: [nic0]"), []string{
			"23: groups.web.resources.ip: unknown key \"require\" (did you mean \"requires\"?)"}},
		{"unknown key without a suggestion", withBase("cluster: prod"), []string{
			"24: unknown key \"cluster\""}},
		{"duplicate top-level key", withBase("version: 1"), []string{
			"24: duplicate key \"version\" (first on line 1)"}},
		{"duplicate node name", replace(4, "  beta: {id: 2}", "  alpha: {id: 4}"), []string{
			"5: nodes: duplicate key \"alpha\" (first on line 3)"}},
		{"duplicate resource name", withBase("      ip: {type: nic}"), []string{
			"24: groups.web.resources: duplicate key \"ip\" (first on line 20)"}},
		{"missing version", lines(base[1:]...), []string{
			"1: missing required key \"version\""}},
		{"missing node id", replace(4, "  beta: {role: member}"), []string{
			"4: nodes.beta: missing required key \"id\""}},
		{"merge key", replace(4, "  beta: {<<: {id: 2}}"), []string{
			"4: nodes.beta: merge keys (<<) are not supported",
			"4: nodes.beta: missing required key \"id\""}},
		{"a list as a key", withBase("users: {[a]: {role: admin}}"), []string{
			"24: users: expected a name as key, got a list"}},

		// Types and ranges.
		{"version is a string", replace(1, "version: one"), []string{
			"1: version: expected an integer, got \"one\""}},
		{"version newer", replace(1, "version: 2"), []string{
			"1: version: version 2 is newer than this build understands (1); upgrade vigil"}},
		{"version 0", replace(1, "version: 0"), []string{
			"1: version: 0 is not a valid version (this build reads version 1)"}},
		{"node id is a string", replace(3, "  alpha: {id: one}"), []string{
			"3: nodes.alpha.id: expected an integer, got \"one\""}},
		{"node id too large", replace(3, "  alpha: {id: 64}"), []string{
			"3: nodes.alpha.id: 64 is not a valid node id (1..63)"}},
		{"node id 0", replace(3, "  alpha: {id: 0}"), []string{
			"3: nodes.alpha.id: 0 is not a valid node id (1..63)"}},
		{"node id beyond int64", replace(3, "  alpha: {id: 99999999999999999999}"), []string{
			"3: nodes.alpha.id: expected an integer, got 99999999999999999999"}},
		{"duplicate node id", replace(4, "  beta: {id: 1}"), []string{
			"4: nodes.beta.id: node id 1 is already used by node alpha"}},
		{"invalid node name", replace(3, "  Alpha: {id: 1}"), []string{
			"3: nodes.Alpha: \"Alpha\" is not a valid node name (1..63 characters from a-z, 0-9 and -)",
			"17: groups.web.nodes: unknown node \"alpha\""}},
		{"unknown role", replace(5, "  gamma: {id: 3, role: quorum}"), []string{
			"5: nodes.gamma.role: \"quorum\" is not a role (member or witness)"}},
		{"no member", lines("version: 1", "nodes:", "  w: {id: 1, role: witness}"), []string{
			"2: nodes: at least one node must have role member (witnesses host no services)"}},
		{"nodes is a list", lines("version: 1", "nodes: [alpha, beta]", "x: 1", "groups: {web: {nodes: [alpha]}}"), []string{
			"2: nodes: expected a mapping from node names to nodes, got a list",
			"3: unknown key \"x\""}},
		{"a node is a scalar", replace(4, "  beta: 2"), []string{
			"4: nodes.beta: expected a mapping, got 2"}},
		{"heartbeat interval out of range", withBase("heartbeat: {interval: 20s}"), []string{
			"24: heartbeat.interval: 20s is out of range (100µs..10s)"}},
		{"heartbeat interval not a duration", withBase("heartbeat: {interval: fast}"), []string{
			"24: heartbeat.interval: expected a duration like 10ms, 250us or 1.5s, got \"fast\""}},
		{"heartbeat multiplier too small", withBase("heartbeat:", "  multiplier: 1"), []string{
			"25: heartbeat.multiplier: 1 is out of range (2..100)"}},
		{"stall timeout too short", withBase("heartbeat:", "  interval: 1s", "  stall_timeout: 2s"), []string{
			"26: heartbeat.stall_timeout: 2s must exceed interval*multiplier (3s)"}},
		{"heartbeat is a list", withBase("heartbeat: [1ms]"), []string{
			"24: heartbeat: expected a mapping, got a list"}},

		// Resource types.
		{"missing agent", replace(13, "    agenda: builtin:ip"), []string{
			"12: resource_types.nic: missing required key \"agent\"",
			"13: resource_types.nic: unknown key \"agenda\" (did you mean \"agent\"?)"}},
		{"unknown builtin agent", replace(13, "    agent: builtin:nfs"), []string{
			"13: resource_types.nic.agent: \"builtin:nfs\" is not a built-in agent (builtin:ip, builtin:process or builtin:mount)"}},
		{"bad OCF agent", replace(13, "    agent: ocf:heartbeat"), []string{
			"13: resource_types.nic.agent: \"ocf:heartbeat\" is not an OCF agent (ocf:PROVIDER:NAME, each of A-Z, a-z, 0-9, ., _ and -)"}},
		{"relative script", replace(13, "    agent: script:bin/nic.sh"), []string{
			"13: resource_types.nic.agent: \"script:bin/nic.sh\": \"bin/nic.sh\" is not an absolute path"}},
		{"unknown agent kind", replace(13, "    agent: lsb:nic"), []string{
			"13: resource_types.nic.agent: \"lsb:nic\" is not an agent (builtin:ip, builtin:process, builtin:mount, ocf:PROVIDER:NAME or script:/path)"}},
		{"unknown category", replace(14, "    category: onoff"), []string{
			"14: resource_types.nic.category: \"onoff\" is not a category (on-off, on-only or persistent)"}},
		{"unknown parameter type", replace(11, "      prefix: {type: int, default: 24}"), []string{
			"11: resource_types.ip.parameters.prefix.type: \"int\" is not a parameter type (string, integer, boolean or duration)"}},
		{"required with default", replace(10, "      address: {required: true, default: 192.0.2.1}"), []string{
			"10: resource_types.ip.parameters.address.default: a required parameter has no default"}},
		{"default of the wrong type", replace(11, "      prefix: {type: integer, default: wide}"), []string{
			"11: resource_types.ip.parameters.prefix.default: \"wide\" is not an integer"}},
		{"required is not a boolean", replace(10, "      address: {required: yes}"), []string{
			"10: resource_types.ip.parameters.address.required: expected true or false, got \"yes\""}},
		{"invalid parameter name", replace(11, "      1prefix: {type: integer}"), []string{
			"11: resource_types.ip.parameters.1prefix: \"1prefix\" is not a valid parameter name (1..63 characters from A-Z, a-z, 0-9 and _, not starting with a digit)"}},

		// Groups.
		{"group without nodes", replace(17, "    autostart: true"), []string{
			"16: groups.web: missing required key \"nodes\""}},
		{"group with an empty node list", replace(17, "    nodes: []"), []string{
			"17: groups.web.nodes: at least one node is required"}},
		{"dangling group node", replace(17, "    nodes: [alpha, delta]"), []string{
			"17: groups.web.nodes: unknown node \"delta\""}},
		{"witness in a group", replace(17, "    nodes: [alpha,", "      gamma]"), []string{
			"18: groups.web.nodes: node \"gamma\" is a witness; witnesses host no services"}},
		{"node listed twice", replace(17, "    nodes: [alpha, beta, alpha]"), []string{
			"17: groups.web.nodes: node \"alpha\" is listed twice"}},
		{"group nodes not a list", replace(17, "    nodes: alpha"), []string{
			"17: groups.web.nodes: expected a list, got \"alpha\""}},
		{"group node not a string", replace(17, "    nodes: [alpha, {beta: 1}]"), []string{
			"17: groups.web.nodes[1]: expected a string, got a mapping"}},
		{"unknown group kind", replace(17, "    kind: hybrid", "    nodes: [alpha]"), []string{
			"17: groups.web.kind: \"hybrid\" is not a group kind (failover or parallel)"}},
		{"autostart is a string", replace(17, "    nodes: [alpha]", "    autostart: 'true'"), []string{
			"18: groups.web.autostart: expected true or false, got \"true\""}},
		{"invalid group name", withBase("  Web_2: {nodes: [alpha]}"), []string{
			"24: groups.Web_2: \"Web_2\" is not a valid group name (1..63 characters from a-z, 0-9, - and _, starting with a letter or digit)"}},
		{"resources is a list", lines("version: 1", "nodes: {a: {id: 1}}", "groups:", "  web:", "    nodes: [a]", "    resources: [nic0]"), []string{
			"6: groups.web.resources: expected a mapping from resource names to resources, got a list"}},

		// Resources.
		{"dangling resource type", replace(19, "      nic0: {type: nick}"), []string{
			"19: groups.web.resources.nic0.type: unknown resource type \"nick\""}},
		{"resource without type", replace(19, "      nic0: {}"), []string{
			"19: groups.web.resources.nic0: missing required key \"type\""}},
		{"unknown parameter", replace(22, "        params: {address: 192.0.2.10, adress: 192.0.2.11}"), []string{
			"22: groups.web.resources.ip.params.adress: not a parameter of type ip (it has address, prefix)"}},
		{"parameter of a type without any", replace(19, "      nic0: {type: nic, params: {device: eth0}}"), []string{
			"19: groups.web.resources.nic0.params.device: not a parameter of type nic (it has no parameters)"}},
		{"missing required parameter", replace(22, "        params: {prefix: 24}"), []string{
			"22: groups.web.resources.ip.params: missing required parameter \"address\" of type ip"}},
		{"missing required parameter, no params", replace(22), []string{
			"20: groups.web.resources.ip.params: missing required parameter \"address\" of type ip"}},
		{"parameter of the wrong type", replace(22, "        params: {address: 192.0.2.10, prefix: /24}"), []string{
			"22: groups.web.resources.ip.params.prefix: \"/24\" is not an integer"}},
		{"parameter with a control character", replace(22, "        params: {address: \"192.0.2.10\\n\"}"), []string{
			"22: groups.web.resources.ip.params.address: \"192.0.2.10\\n\" contains a control character"}},
		{"parameter is a list", replace(22, "        params: {address: [192.0.2.10]}"), []string{
			"22: groups.web.resources.ip.params.address: expected a string, got a list"}},
		{"requires an unknown resource", replace(23, "        requires: [nic1]"), []string{
			"23: groups.web.resources.ip.requires: unknown resource \"nic1\""}},
		{"requires a resource twice", replace(23, "        requires:", "          - nic0", "          - nic0"), []string{
			"25: groups.web.resources.ip.requires: resource \"nic0\" is listed twice"}},
		{"requires itself", replace(23, "        requires: [ip]"), []string{
			"23: groups.web.resources.ip.requires: dependency cycle ip -> ip"}},
		{"dependency cycle", withBase(
			"      a: {type: nic, requires: [b]}",
			"      b: {type: nic, requires: [c]}",
			"      c: {type: nic, requires: [nic0, a]}",
		), []string{
			"24: groups.web.resources.a.requires: dependency cycle a -> b -> c -> a"}},
		{"requires in another group", withBase(
			"  db:",
			"    nodes: [beta]",
			"    resources: {x: {type: nic, requires: [ip]}}",
		), []string{
			"26: groups.db.resources.x.requires: unknown resource \"ip\""}},

		// DRD devices and users.
		{"drd device without backing", withBase("drd_devices: {d0: {nodes: [alpha]}}"), []string{
			"24: drd_devices.d0: missing required key \"backing\""}},
		{"drd device with a relative backing", withBase("drd_devices: {d0: {backing: data/d0, nodes: [alpha]}}"), []string{
			"24: drd_devices.d0.backing: \"data/d0\" is not an absolute path"}},
		{"drd device with an unclean backing", withBase("drd_devices: {d0: {backing: /dev//d0, nodes: [alpha]}}"), []string{
			"24: drd_devices.d0.backing: \"/dev//d0\" is not a clean path (/dev/d0)"}},
		{"drd devices sharing a backing", withBase("drd_devices:",
			"  d0: {backing: /dev/d0, nodes: [alpha]}",
			"  d1: {backing: /dev/d0, nodes: [alpha]}"), []string{
			"26: drd_devices.d1.backing: /dev/d0 is already the backing of drd_devices.d0"}},
		{"drd device on a witness and an unknown node", withBase("drd_devices: {d0: {backing: /dev/d0, nodes: [gamma, zeta]}}"), []string{
			"24: drd_devices.d0.nodes: node \"gamma\" is a witness; witnesses host no services",
			"24: drd_devices.d0.nodes: unknown node \"zeta\""}},
		{"unknown user role", withBase("users:", "  bob: {role: root}"), []string{
			"25: users.bob.role: \"root\" is not a user role (admin, operator or guest)"}},
		{"invalid user name", withBase("users:", "  Bob: {role: admin}"), []string{
			"25: users.Bob: \"Bob\" is not a valid user name (1..63 characters from a-z, 0-9, - and _, starting with a letter or digit)"}},

		// Several errors at once, in line order.
		{"several errors", lines(
			"version: 1",
			"nodes:",
			"  alpha: {id: 70}",
			"  beta: {id: 2, role: witness}",
			"groups:",
			"  web:",
			"    nodes: [beta, delta]",
			"    resources:",
			"      ip: {type: ip, requires: [nic]}",
			"users: {bob: {role: boss}}",
		), []string{
			"3: nodes.alpha.id: 70 is not a valid node id (1..63)",
			"7: groups.web.nodes: node \"beta\" is a witness; witnesses host no services",
			"7: groups.web.nodes: unknown node \"delta\"",
			"9: groups.web.resources.ip.type: unknown resource type \"ip\"",
			"9: groups.web.resources.ip.requires: unknown resource \"nic\"",
			"10: users.bob.role: \"boss\" is not a user role (admin, operator or guest)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("cluster.yaml", []byte(tc.text))
			if err == nil {
				t.Fatalf("ParseConfig succeeded:\n%s", tc.text)
			}
			if c != nil {
				t.Error("ParseConfig returned a Config with an error")
			}
			got := strings.Split(err.Error(), "\n")
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = "cluster.yaml:" + w
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	c, err := ParseConfig("cluster.yaml", []byte(withBase()))
	if err != nil {
		t.Fatal(err)
	}
	c.Nodes[0].ID = 0
	c.Groups[0].Resources[1].Requires = append(c.Groups[0].Resources[1].Requires, "nic1")
	c.Users = append(c.Users, User{Name: "bob"})
	err = c.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
	}
	want := []string{
		"invalid cluster configuration: nodes.alpha.id: 0 is not a valid node id (1..63)",
		"invalid cluster configuration: groups.web.resources.ip.requires: unknown resource \"nic1\"",
		"invalid cluster configuration: users.bob.role: \"\" is not a user role (admin, operator or guest)",
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate:\n got %q\nwant %q", got, want)
	}
	if _, err := c.Marshal(); err == nil {
		t.Error("Marshal of an invalid config succeeded")
	}
	if err := (*Config)(nil).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate(nil) = %v", err)
	}
	// A Config in Go must give every field; zero values are not defaults.
	if err := (&Config{Version: 1, Heartbeat: defaultHeartbeat, Nodes: []Node{{Name: "a", ID: 1}}}).Validate(); err == nil {
		t.Error("Validate accepted a node without a role")
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, text := range []string{docExample(t), withBase()} {
		c, err := ParseConfig("cluster.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
	}
	// Values that YAML would read as other types come back as strings.
	c, err := ParseConfig("cluster.yaml", []byte(withBase(
		"  'true':",
		"    nodes: ['1']",
		"drd_devices: {'0': {backing: '/a b: #c', nodes: [beta]}}",
		"users: {'null': {role: guest}}",
	)))
	if err == nil {
		roundTrip(t, c)
	} else if !strings.Contains(err.Error(), "unknown node") {
		t.Fatal(err)
	}
	// Text that needs quoting, long lines, blanks at the ends, non-ASCII.
	for _, value := range []string{
		`'yes, "no" # 1'`,
		"'" + strings.Repeat("word ", 40) + "end'",
		"' lead and trail '",
		`"ünïcødé ☃ \u00a0x"`,
		"'*a'",
		"'- x'",
		"''",
	} {
		roundTrip(t, mustParse(t, replace(22, "        params: {address: "+value+"}")))
	}
}

func TestMarshalOutput(t *testing.T) {
	c, err := ParseConfig("cluster.yaml", []byte(withBase("users: {root: {role: admin}}")))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `version: 1
heartbeat:
  interval: 10ms
  multiplier: 3
  stall_timeout: 5s
nodes:
  alpha: {id: 1}
  beta: {id: 2}
  gamma: {id: 3, role: witness}
resource_types:
  ip:
    agent: builtin:ip
    parameters:
      address: {required: true}
      prefix: {type: integer, default: 24}
  nic:
    agent: builtin:ip
    category: persistent
groups:
  web:
    nodes: [alpha, beta]
    resources:
      nic0:
        type: nic
      ip:
        type: ip
        params: {address: 192.0.2.10}
        requires: [nic0]
users:
  root: {role: admin}
`
	if string(out) != want {
		t.Errorf("Marshal:\n%s\nwant:\n%s", out, want)
	}
}

func TestDiff(t *testing.T) {
	old, err := ParseConfig("old.yaml", []byte(withBase(
		"drd_devices: {d0: {backing: /dev/d0, nodes: [alpha]}}",
		"users: {bob: {role: operator}, eve: {role: guest}}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	new, err := ParseConfig("new.yaml", []byte(lines(
		"version: 1",
		"heartbeat: {interval: 1ms}",
		"users: {bob: {role: admin}, carol: {}}", // reordered sections are no change
		"nodes:",
		"  beta: {id: 2}", // reordered keys are no change
		"  alpha: {id: 1}",
		"  delta: {id: 4}",
		"resource_types:",
		"  ip:",
		"    agent: ocf:heartbeat:IPaddr2",
		"    parameters:",
		"      address: {required: true}",
		"      prefix: {type: integer, default: 16}",
		"      nic: {}",
		"  nic: {agent: builtin:ip, category: persistent}",
		"groups:",
		"  web:",
		"    nodes: [beta, alpha]",
		"    autostart: false",
		"    resources:",
		"      nic0: {type: nic}",
		"      ip: {type: ip, params: {address: 192.0.2.11, prefix: 24, nic: eth0}}",
		"  db: {nodes: [delta]}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range Diff(old, new) {
		got = append(got, c.String())
	}
	want := []string{
		"changed heartbeat.interval: 10ms -> 1ms",
		"added nodes.delta",
		"removed nodes.gamma",
		"changed resource_types.ip.agent: builtin:ip -> ocf:heartbeat:IPaddr2",
		"changed resource_types.ip.parameters.prefix.default: 24 -> 16",
		"added resource_types.ip.parameters.nic",
		"changed groups.web.nodes: [alpha, beta] -> [beta, alpha]",
		"changed groups.web.autostart: true -> false",
		"changed groups.web.resources.ip.params.address: 192.0.2.10 -> 192.0.2.11",
		"added groups.web.resources.ip.params.nic: eth0",
		"added groups.web.resources.ip.params.prefix: 24",
		"removed groups.web.resources.ip.requires: [nic0]",
		"added groups.db",
		"removed drd_devices.d0",
		"changed users.bob.role: operator -> admin",
		"added users.carol",
		"removed users.eve",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff:\n got %q\nwant %q", got, want)
	}
	if d := Diff(old, old.Clone()); d != nil {
		t.Errorf("Diff of equal configs = %v", d)
	}
	all := Diff(nil, old)
	if len(all) == 0 || all[0].String() != "added version: 1" || all[len(all)-1].String() != "added users.eve" {
		t.Errorf("Diff(nil, c) = %v", all)
	}
	if gone := Diff(old, nil); gone[len(gone)-1].String() != "removed users.eve" {
		t.Errorf("Diff(c, nil) = %v", gone)
	}
}

func TestParseTooComplex(t *testing.T) {
	// 200 groups of 100 resources each, written out: large, but no aliases, so fine.
	var b strings.Builder
	b.WriteString("version: 1\nnodes: {a: {id: 1}}\nresource_types: {t: {agent: builtin:ip, parameters: {" + list(50, "p%d: {}") + "}}}\n")
	b.WriteString("groups:\n")
	for i := 0; i < 200; i++ {
		b.WriteString("  g" + itoa(i) + ": {nodes: [a], resources: {" + list(100, "r%d: {type: t, params: {p1: x, p2: y}}") + "}}\n")
	}
	if _, err := ParseConfig("big.yaml", []byte(b.String())); err != nil {
		t.Fatalf("a large file: %v", err)
	}
	// 300 groups that share 1000 resources: 300000 resources once the aliases are followed.
	b.Reset()
	b.WriteString("version: 1\nnodes: {a: {id: 1}}\nresource_types: {t: {agent: builtin:ip}}\n")
	b.WriteString("groups:\n")
	b.WriteString("  g0: &g {nodes: [a], resources: {" + list(1000, "r%d: &r {type: t}") + "}}\n")
	for i := 1; i < 300; i++ {
		b.WriteString("  g" + itoa(i) + ": *g\n")
	}
	_, err := ParseConfig("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "too complex") {
		t.Fatalf("alias bomb: %v", err)
	}
}

func list(n int, format string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = strings.ReplaceAll(format, "%d", itoa(i))
	}
	return strings.Join(items, ", ")
}

func itoa(i int) string { return strconv.Itoa(i) }
