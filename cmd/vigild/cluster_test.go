package main

import (
	"net/netip"
	"strings"
	"testing"

	"vigil/control/transport"
	"vigil/internal/nodeconf"
)

func TestRaftAddrs(t *testing.T) {
	raw := &nodeconf.Config{Node: 1, Links: []nodeconf.Link{{Name: "priv0"}}, Peers: []nodeconf.Peer{{ID: 2}, {ID: 3}}}
	udp := &nodeconf.Config{Node: 1,
		Links: []nodeconf.Link{{Name: "priv0"}, {Name: "wan0", UDP: netip.MustParseAddrPort("10.0.0.1:5405")}},
		Peers: []nodeconf.Peer{
			{ID: 2, UDP: []netip.AddrPort{{}, netip.MustParseAddrPort("10.0.0.2:5405")}},
			{ID: 3, UDP: []netip.AddrPort{{}, netip.MustParseAddrPort("10.0.0.3:5405")}},
		}}
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name   string
		cfg    *nodeconf.Config
		flags  clusterFlags
		listen string // "" means off
		peers  map[transport.NodeID]netip.AddrPort
		err    string
	}{
		{name: "raw links, no flags: off", cfg: raw},
		{name: "raw links with flags", cfg: raw,
			flags:  clusterFlags{Listen: "198.18.1.1", Peers: []string{"2=198.18.1.2", "3=198.18.1.3:7000"}},
			listen: "198.18.1.1:7405", peers: map[transport.NodeID]netip.AddrPort{2: ap("198.18.1.2:7405"), 3: ap("198.18.1.3:7000")}},
		{name: "udp links", cfg: udp, listen: "10.0.0.1:7405",
			peers: map[transport.NodeID]netip.AddrPort{2: ap("10.0.0.2:7405"), 3: ap("10.0.0.3:7405")}},
		{name: "udp links, one peer moved", cfg: udp, flags: clusterFlags{Peers: []string{"3=10.9.9.9:1"}}, listen: "10.0.0.1:7405",
			peers: map[transport.NodeID]netip.AddrPort{2: ap("10.0.0.2:7405"), 3: ap("10.9.9.9:1")}},
		{name: "a peer without address", cfg: raw, flags: clusterFlags{Listen: "198.18.1.1", Peers: []string{"2=198.18.1.2"}},
			err: "no cluster transport address for peer 3: give --raft-peer 3=ADDR:PORT"},
		{name: "unknown peer", cfg: raw, flags: clusterFlags{Listen: "198.18.1.1", Peers: []string{"9=198.18.1.9"}},
			err: `--raft-peer "9=198.18.1.9": node 9 is not a peer in the node configuration`},
		{name: "bad id", cfg: raw, flags: clusterFlags{Peers: []string{"x=1.2.3.4"}}, err: `--raft-peer "x=1.2.3.4": want ID=ADDR:PORT with ID 1..63`},
		{name: "no =", cfg: raw, flags: clusterFlags{Peers: []string{"2"}}, err: `--raft-peer "2": want ID=ADDR:PORT`},
		{name: "bad address", cfg: raw, flags: clusterFlags{Peers: []string{"2=host:1"}}, err: `--raft-peer "2=host:1": not an address or address:port`},
		{name: "bad listen", cfg: raw, flags: clusterFlags{Listen: "nowhere"}, err: `--raft-listen "nowhere": not an address or address:port`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen, peers, err := raftAddrs(tc.cfg, tc.flags)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.listen == "" {
				if listen.IsValid() {
					t.Fatalf("listen %v, want off", listen)
				}
				return
			}
			if listen.String() != tc.listen || len(peers) != len(tc.peers) {
				t.Fatalf("listen %v peers %v, want %s %v", listen, peers, tc.listen, tc.peers)
			}
			for id, a := range tc.peers {
				if peers[id] != a {
					t.Errorf("peer %d at %v, want %v", id, peers[id], a)
				}
			}
		})
	}
}
