package nodeconf

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseInterconnect(t *testing.T) {
	c, err := Parse("node.yaml", []byte(withMinimal(
		"interconnect: {network: 198.18.100.0/24, policy: primary, error_threshold: 3, error_window: 10s, error_clean: 30s}",
		"disk_heartbeat: {path: /dev/sdb, interval: 10ms, timeout: 200ms}",
	)))
	if err != nil {
		t.Fatal(err)
	}
	want := Interconnect{
		Network: netip.MustParsePrefix("198.18.100.0/24"), Policy: PolicyPrimary,
		ErrorThreshold: 3, ErrorWindow: 10 * time.Second, ErrorClean: 30 * time.Second,
	}
	if c.Interconnect != want {
		t.Errorf("interconnect %+v, want %+v", c.Interconnect, want)
	}
	if got := c.Interconnect.ClusterAddr(7); got != netip.MustParseAddr("198.18.100.7") {
		t.Errorf("cluster address of node 7: %v", got)
	}
	if want := (DiskHeartbeat{Path: "/dev/sdb", Interval: 10 * time.Millisecond, Timeout: 200 * time.Millisecond}); c.DiskHeartbeat != want {
		t.Errorf("disk heartbeat %+v, want %+v", c.DiskHeartbeat, want)
	}

	// Defaults; and both off when absent.
	c, err = Parse("node.yaml", []byte(withMinimal("interconnect: {network: 10.9.0.0/26}", "disk_heartbeat: {path: d}")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interconnect.Policy != PolicySpread || c.Interconnect.ErrorThreshold != 10 ||
		c.Interconnect.ErrorWindow != time.Minute || c.Interconnect.ErrorClean != 5*time.Minute {
		t.Errorf("defaults: %+v", c.Interconnect)
	}
	if c.DiskHeartbeat.Interval != DefaultDiskInterval || c.DiskHeartbeat.Timeout != DefaultDiskTimeout {
		t.Errorf("disk defaults: %+v", c.DiskHeartbeat)
	}
	if got := c.Interconnect.ClusterAddr(63); got != netip.MustParseAddr("10.9.0.63") {
		t.Errorf("node 63 in a /26: %v", got)
	}
	c, err = Parse("node.yaml", []byte(withMinimal()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Interconnect.Enabled() || c.Interconnect.ClusterAddr(1).IsValid() || c.DiskHeartbeat != (DiskHeartbeat{}) {
		t.Errorf("absent sections: %+v %+v", c.Interconnect, c.DiskHeartbeat)
	}

	// Marshal and Parse again.
	c, _ = Parse("node.yaml", []byte(withMinimal("interconnect: {network: 198.18.100.0/24, policy: primary}", "disk_heartbeat: {path: /x}")))
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("m.yaml", out)
	if err != nil || !reflect.DeepEqual(back, c) {
		t.Errorf("round trip: %v\n%s", err, out)
	}
}

func TestParseInterconnectInvalid(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"interconnect: {policy: spread}", `node.yaml:7: interconnect: missing required key "network"`},
		{"interconnect: {network: 198.18.100.0/27}", `node.yaml:7: interconnect.network: "198.18.100.0/27" is too small for node ids up to 63 (want /26 or wider)`},
		{"interconnect: {network: 198.18.100.1/24}", `node.yaml:7: interconnect.network: "198.18.100.1/24" has host bits set (did you mean 198.18.100.0/24?)`},
		{"interconnect: {network: 2001:db8::/64}", `node.yaml:7: interconnect.network: "2001:db8::/64": cluster addresses are IPv4`},
		{"interconnect: {network: 198.18.100.0}", `node.yaml:7: interconnect.network: "198.18.100.0" is not a network like 198.18.100.0/24`},
		{"interconnect: {network: 127.0.0.0/8}", `node.yaml:7: interconnect.network: "127.0.0.0/8" is not a unicast network`},
		{"interconnect: {network: 10.0.0.0/24, policy: roundrobin}", `node.yaml:7: interconnect.policy: "roundrobin" is not a policy (spread or primary)`},
		{"interconnect: {network: 10.0.0.0/24, error_threshold: 0}", `node.yaml:7: interconnect.error_threshold: 0 is not a valid error threshold (1..1000000)`},
		{"interconnect: {network: 10.0.0.0/24, error_window: 0s}", `node.yaml:7: interconnect.error_window: 0s is out of range`},
		{"interconnect: {network: 10.0.0.0/24, error_clean: forever}", `node.yaml:7: interconnect.error_clean: expected a duration`},
		{"interconnect:\n  network: 10.0.0.0/24\n  errors: 3", `node.yaml:9: unknown key "errors" in interconnect`},
		{"interconnect: 10.0.0.0/24", `node.yaml:7: interconnect: expected a mapping`},
		{"disk_heartbeat: {interval: 10ms}", `node.yaml:7: disk_heartbeat: missing required key "path"`},
		{"disk_heartbeat: {path: d, interval: 100ms, timeout: 100ms}", `node.yaml:7: disk_heartbeat.timeout: 100ms must exceed disk_heartbeat.interval (100ms)`},
		{"disk_heartbeat: {path: d, interval: 100us}", `node.yaml:7: disk_heartbeat.interval: 100µs is out of range (1ms..10s)`},
		{"disk_heartbeat:\n  path: d\n  timeout: 1h", `node.yaml:9: disk_heartbeat.timeout: 1h0m0s is out of range (1ms..10m0s)`},
		{"disk_heartbeat: {path: \"\"}", `node.yaml:7: disk_heartbeat.path: empty path`},
	} {
		c, err := Parse("node.yaml", []byte(withMinimal(tc.text)))
		if err == nil || c != nil {
			t.Errorf("%s: accepted", tc.text)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\nerror  %v\nwant   %s", tc.text, err, tc.want)
		}
	}
}
