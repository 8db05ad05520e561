package nodeconf

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMarshalRoundTrip(t *testing.T) {
	for _, text := range []string{fullExample, withMinimal()} {
		c, err := Parse("node.yaml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse("marshalled.yaml", out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Errorf("round trip changed the config:\n got %+v\nwant %+v\nYAML:\n%s", back, c, out)
		}
	}
}

// TestMarshalZeroMeansDefault builds a Config in Go the way tests and benchmarks do.
func TestMarshalZeroMeansDefault(t *testing.T) {
	c := &Config{
		Cluster: "bench",
		Node:    2,
		KeyFile: "/tmp/k",
		DataDir: "/tmp/d",
		Heartbeat: Heartbeat{
			Interval: time.Millisecond,
		},
		Links: []Link{{Name: "p0"}, {Name: "u0", UDP: netip.MustParseAddrPort("10.0.0.2:5405")}},
		Peers: []Peer{{ID: 1, UDP: []netip.AddrPort{{}, netip.MustParseAddrPort("10.0.0.1:5405")}}},
	}
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"cluster_id:", "\nname:", "admin_socket:", "multiplier:", "sweep:", "mode:"} {
		if strings.Contains("\n"+string(out), absent) {
			t.Errorf("zero field %s written:\n%s", absent, out)
		}
	}
	got, err := Parse("marshalled.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := *c
	want.ClusterID = DefaultClusterID("bench")
	want.Name = "node2"
	want.AdminSocket = DefaultAdminSocket
	want.Heartbeat = Heartbeat{
		Interval:     time.Millisecond,
		Multiplier:   DefaultMultiplier,
		Rise:         DefaultRise,
		StallTimeout: DefaultStallTimeout,
		Sweep:        time.Millisecond,
		Mode:         ModeEBPF,
	}
	want.Peers = []Peer{{ID: 1, Name: "node1", UDP: c.Peers[0].UDP}}
	if !reflect.DeepEqual(got, &want) {
		t.Errorf("Parse(Marshal()):\n got %+v\nwant %+v", got, &want)
	}
}

func TestMarshalInvalid(t *testing.T) {
	valid := func() *Config {
		c, err := Parse("node.yaml", []byte(fullExample))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no cluster", func(c *Config) { c.Cluster = "" }, `cluster: "" is not a valid cluster name`},
		{"bad node", func(c *Config) { c.Node = 64 }, "node: 64 is not a valid node id"},
		{"no links", func(c *Config) { c.Links, c.Peers = nil, nil }, "links: at least one link is required"},
		{"bad interval", func(c *Config) { c.Heartbeat.Interval = time.Minute }, "heartbeat.interval: 1m0s is out of range"},
		{"bad mode", func(c *Config) { c.Heartbeat.Mode = "xdp" }, `heartbeat.mode: "xdp" is not a mode`},
		{"missing endpoint", func(c *Config) { c.Peers[0].UDP = nil }, `peers[0].udp: no endpoint for UDP link "wan0"`},
		{"endpoint beyond links", func(c *Config) {
			c.Peers[0].UDP = append(c.Peers[0].UDP, netip.MustParseAddrPort("10.1.1.1:1"))
		}, "peers[0]: endpoint 10.1.1.1:1 for link 3, but there are 3 links"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(c)
			out, err := c.Marshal()
			if err == nil {
				t.Fatalf("Marshal accepted an invalid config:\n%s", out)
			}
			if out != nil {
				t.Errorf("Marshal returned YAML with its error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
