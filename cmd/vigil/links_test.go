package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
)

// icFake is a daemon with an interconnect and a disk heartbeat.
type icFake struct{ fake }

func (icFake) Links() []admin.LinkStatus {
	return []admin.LinkStatus{
		{Peer: 2, PeerName: "beta", Link: 1, LinkName: "priv1", State: admin.LinkUp, Since: now.Add(-time.Minute),
			LastSeen: now.Add(-time.Millisecond), RTTP50: 40 * time.Microsecond, RTTP99: 90 * time.Microsecond,
			Carrying: true, TxPackets: 1234, TxBytes: 99999, Errors: 0, ErrorThreshold: 10},
		{Peer: 2, PeerName: "beta", Link: 0, LinkName: "priv0", State: admin.LinkUp, Since: now.Add(-time.Minute),
			LastSeen: now.Add(-time.Millisecond), RTTP50: 40 * time.Microsecond, RTTP99: 90 * time.Microsecond,
			TxPackets: 7, Errors: 12, ErrorThreshold: 10, Bad: true},
		{Peer: 2, PeerName: "beta", Link: 255, LinkName: "disk:shared", Kind: admin.LinkDisk, State: admin.LinkUp,
			Since: now.Add(-time.Minute), LastSeen: now.Add(-20 * time.Millisecond), Seq: 4711},
	}
}

func (icFake) ClearLink(name string) (admin.ClearResult, error) {
	if name != "priv0" {
		return admin.ClearResult{}, fmt.Errorf("no private link named %q", name)
	}
	return admin.ClearResult{Link: name, WasBad: true, Message: "link back in service"}, nil
}

func TestLinksInterconnect(t *testing.T) {
	path := serveProvider(t, icFake{})

	want := `PEER  LINK         STATE  SINCE   LAST SEEN  RTT P50  RTT P99  LOSS  TRAFFIC         TX PKTS   ERRORS
beta  priv0        up     1m ago  1ms ago    40µs     90µs     0%    -               7         12/10 BAD
beta  priv1        up     1m ago  1ms ago    40µs     90µs     0%    carrying        1234      0/10
beta  disk:shared  up     1m ago  20ms ago   -        -        -     heartbeat only  seq 4711  -
`
	if got := runOK(t, "--socket", path, "links"); got != want {
		t.Errorf("vigil links:\n%s\nwant:\n%s", got, want)
	}
	if got := runOK(t, "--socket", path, "links", "clear", "priv0"); got != "priv0: link back in service\n" {
		t.Errorf("vigil links clear: %q", got)
	}
	if got := runOK(t, "--socket", path, "links", "clear", "priv0", "--json"); !strings.Contains(got, `"was_bad": true`) {
		t.Errorf("vigil links clear --json: %q", got)
	}
	var out, errOut strings.Builder
	if code := run([]string{"--socket", path, "links", "clear", "nope"}, &out, &errOut, clock); code != 1 ||
		!strings.Contains(errOut.String(), `no private link named \"nope\"`) && !strings.Contains(errOut.String(), `no private link named "nope"`) {
		t.Errorf("clear of an unknown link: exit %d, %q", code, errOut.String())
	}
}

func (icFake) Status() admin.Status {
	st := fake{}.Status()
	st.ClusterAddress, st.Policy, st.DiskHeartbeat = "198.18.100.1", "spread", "/dev/sdb"
	return st
}

func TestStatusInterconnect(t *testing.T) {
	path := serveProvider(t, icFake{})
	got := runOK(t, "--socket", path, "status")
	for _, want := range []string{"Interconnect:    cluster address 198.18.100.1, policy spread\n", "Disk heartbeat:  /dev/sdb\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("vigil status lacks %q:\n%s", want, got)
		}
	}
}
