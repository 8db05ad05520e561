package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vigil/control/admin"
	"vigil/heartbeat"
	"vigil/internal/nodeconf"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

// The interconnect, end to end: real vigild processes with cluster addresses, the TCX steering
// program, the error-rate rule and the disk heartbeat. Behaviour only; the failover gap is
// measured by `go run ./bench interconnect`.

func interconnectCluster(t *testing.T, ic nodeconf.Interconnect, dh nodeconf.DiskHeartbeat) *vcluster.Cluster {
	t.Helper()
	ic.Network = vcluster.ClusterNetwork
	c := vcluster.New(t, vcluster.Options{
		Nodes: 3, Interval: interval, Multiplier: 10, StallTimeout: stallTimeout,
		Interconnect: ic, DiskHeartbeat: dh,
	})
	waitAllAlive(t, c)
	return c
}

func defaultRule(policy nodeconf.Policy) nodeconf.Interconnect {
	return nodeconf.Interconnect{
		Policy: policy, ErrorThreshold: nodeconf.DefaultErrorThreshold,
		ErrorWindow: nodeconf.DefaultErrorWindow, ErrorClean: nodeconf.DefaultErrorClean,
	}
}

// echoServer accepts TCP connections on node's cluster address and echoes lines.
func echoServer(t *testing.T, c *vcluster.Cluster, node int) string {
	t.Helper()
	addr := fmt.Sprintf("198.18.100.%d:7000", node)
	var ln net.Listener
	if err := c.Net.Node(node).Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on node %d's cluster address: %v", node, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				io.Copy(conn, conn)
			})
		}
	})
	return addr
}

// dialFrom connects from node's namespace.
func dialFrom(t *testing.T, c *vcluster.Cluster, node int, addr string) net.Conn {
	t.Helper()
	var conn net.Conn
	deadline := time.Now().Add(wait)
	for {
		err := c.Net.Node(node).Do(func() (err error) {
			conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		})
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s from node %d: %v", addr, node, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roundTrip sends one line and reads it back within d.
func roundTrip(t *testing.T, conn net.Conn, r *bufio.Reader, msg string, d time.Duration) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(d))
	if _, err := conn.Write([]byte(msg + "\n")); err != nil {
		t.Fatalf("send %q: %v", msg, err)
	}
	line, err := r.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, line, err)
	}
}

// linksOf returns node n's link rows for peer (network links only, by link id) and its disk row.
func linksOf(t *testing.T, n *vcluster.Node, peer int) (map[int]admin.LinkStatus, *admin.LinkStatus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out, err := n.Vigil(ctx, "links", "--json")
	if err != nil {
		t.Fatalf("vigil links: %v\n%s", err, out)
	}
	var rows []admin.LinkStatus
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("vigil links --json: %v\n%s", err, out)
	}
	links := map[int]admin.LinkStatus{}
	var diskRow *admin.LinkStatus
	for _, r := range rows {
		if int(r.Peer) != peer {
			continue
		}
		if r.Kind == admin.LinkDisk {
			diskRow = &r
			continue
		}
		links[int(r.Link)] = r
	}
	return links, diskRow
}

// waitLinks polls node n's links to peer until ok holds.
func waitLinks(t *testing.T, n *vcluster.Node, peer int, what string, ok func(map[int]admin.LinkStatus) bool) map[int]admin.LinkStatus {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		links, _ := linksOf(t, n, peer)
		if ok(links) {
			return links
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d, links to node %d: %s never held: %+v", n.ID, peer, what, links)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func carrying(links map[int]admin.LinkStatus) []int {
	var out []int
	for id := range 2 {
		if links[id].Carrying {
			out = append(out, id)
		}
	}
	return out
}

// Cutting the link that carries a peer's traffic moves it to the other link, with no message
// lost and no node down; restoring it brings the traffic back (primary policy).
func TestInterconnectFailover(t *testing.T) {
	c := interconnectCluster(t, defaultRule(nodeconf.PolicyPrimary), nodeconf.DiskHeartbeat{})
	addr := echoServer(t, c, 2)
	conn := dialFrom(t, c, 1, addr)
	r := bufio.NewReader(conn)
	n1 := c.Node(1)
	mark := n1.LogLines()

	roundTrip(t, conn, r, "hello", wait)
	before := waitLinks(t, n1, 2, "link 0 carries, with traffic", func(l map[int]admin.LinkStatus) bool {
		return fmt.Sprint(carrying(l)) == "[0]" && l[0].TxPackets > 0
	})

	if err := c.Net.LinkDown(1, netns.Private0); err != nil {
		t.Fatal(err)
	}
	// Messages keep flowing while and after the link dies (TCP re-sends what the dead link
	// swallowed); the echo must come back, in order.
	for i := range 50 {
		roundTrip(t, conn, r, fmt.Sprintf("during-%d", i), wait)
		time.Sleep(5 * time.Millisecond)
	}
	waitLinks(t, n1, 2, "link 1 carries after the cut", func(l map[int]admin.LinkStatus) bool {
		return l[0].State == admin.LinkDown && fmt.Sprint(carrying(l)) == "[1]" && l[1].TxPackets > before[1].TxPackets
	})
	noEvent(t, n1, mark, "a peer down", func(ev vcluster.LogEvent) bool { return ev.Msg == "peer down" })

	if err := c.Net.LinkUp(1, netns.Private0); err != nil {
		t.Fatal(err)
	}
	back := waitLinks(t, n1, 2, "link 0 carries again", func(l map[int]admin.LinkStatus) bool {
		return l[0].State == admin.LinkUp && fmt.Sprint(carrying(l)) == "[0]"
	})
	for i := range 20 {
		roundTrip(t, conn, r, fmt.Sprintf("after-%d", i), wait)
	}
	waitLinks(t, n1, 2, "traffic on link 0 again", func(l map[int]admin.LinkStatus) bool {
		return l[0].TxPackets > back[0].TxPackets
	})
}

// Under the spread policy both live links carry; flows land on both.
func TestInterconnectSpread(t *testing.T) {
	c := interconnectCluster(t, defaultRule(nodeconf.PolicySpread), nodeconf.DiskHeartbeat{})
	addr := echoServer(t, c, 2)
	for i := range 16 {
		conn := dialFrom(t, c, 1, addr)
		roundTrip(t, conn, bufio.NewReader(conn), fmt.Sprintf("flow-%d", i), wait)
	}
	waitLinks(t, c.Node(1), 2, "both links carry traffic", func(l map[int]admin.LinkStatus) bool {
		return fmt.Sprint(carrying(l)) == "[0 1]" && l[0].TxPackets > 0 && l[1].TxPackets > 0
	})
	// Traffic that is not for a cluster address is untouched: the private addresses answer.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if out, err := c.Net.Node(1).Run(ctx, "ping", "-c", "1", "-W", "2", netns.Addr(2, netns.Private1).String()); err != nil {
		t.Errorf("ping over the private link: %v\n%s", err, out)
	}
}

// sendBadMACs sends n heartbeat frames with a wrong MAC from node from's link l to node to.
func sendBadMACs(t *testing.T, c *vcluster.Cluster, from, to int, l netns.LinkID, n int) {
	t.Helper()
	f := heartbeat.Frame{
		Flags: heartbeat.FlagEchoRequest, LinkID: uint8(l), ClusterID: nodeconf.DefaultClusterID("test"),
		SrcNode: uint16(from), Incarnation: 1, Seq: 1,
	}
	payload := f.AppendEncode(nil, heartbeat.Key{0xba, 0xd})
	frame := append(append(append([]byte{}, netns.MAC(to, l)...), netns.MAC(from, l)...), 0x88, 0xb5)
	frame = append(frame, payload...)
	err := c.Net.Node(from).Do(func() error {
		proto := int(htons(0x88b5))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(l.String())
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Protocol: htons(0x88b5), Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], netns.MAC(to, l))
		for range n {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send forged frames: %v", err)
	}
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Errors on a link whose heartbeats still pass: more than the threshold take it out of service
// and move the traffic; vigil links clear puts it back; so does a clean period.
func TestInterconnectErrorRate(t *testing.T) {
	rule := defaultRule(nodeconf.PolicyPrimary)
	rule.ErrorClean = 3 * time.Second
	c := interconnectCluster(t, rule, nodeconf.DiskHeartbeat{})
	addr := echoServer(t, c, 2)
	conn := dialFrom(t, c, 1, addr)
	r := bufio.NewReader(conn)
	n1 := c.Node(1)
	roundTrip(t, conn, r, "hello", wait)
	waitLinks(t, n1, 2, "link 0 carries", func(l map[int]admin.LinkStatus) bool { return fmt.Sprint(carrying(l)) == "[0]" })

	// Ten errors are not more than ten.
	sendBadMACs(t, c, 2, 1, netns.Private0, 10)
	waitLinks(t, n1, 2, "ten errors counted", func(l map[int]admin.LinkStatus) bool { return l[0].Errors == 10 })
	if l, _ := linksOf(t, n1, 2); l[0].Bad {
		t.Fatal("ten errors made the link bad")
	}
	sendBadMACs(t, c, 2, 1, netns.Private0, 5)
	moved := waitLinks(t, n1, 2, "link 0 bad, up, traffic on link 1", func(l map[int]admin.LinkStatus) bool {
		return l[0].Bad && l[0].State == admin.LinkUp && l[0].ErrorThreshold == 10 && fmt.Sprint(carrying(l)) == "[1]"
	})
	roundTrip(t, conn, r, "on-link-1", wait)
	waitLinks(t, n1, 2, "traffic counted on link 1", func(l map[int]admin.LinkStatus) bool { return l[1].TxPackets > moved[1].TxPackets })
	// The other peer's traffic moves too: the rule is per link.
	if l, _ := linksOf(t, n1, 3); !l[0].Bad || fmt.Sprint(carrying(l)) != "[1]" {
		t.Errorf("peer 3's links: %+v", l)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out, err := n1.Vigil(ctx, "links", "clear", "priv0")
	if err != nil || !strings.Contains(out, "back in service") {
		t.Fatalf("vigil links clear priv0: %v\n%s", err, out)
	}
	waitLinks(t, n1, 2, "link 0 carries after clear", func(l map[int]admin.LinkStatus) bool {
		return !l[0].Bad && fmt.Sprint(carrying(l)) == "[0]"
	})
	if out, err := n1.Vigil(ctx, "links", "clear", "nope"); err == nil || !strings.Contains(out, `no private link named "nope"`) {
		t.Errorf("clear of an unknown link: %v\n%s", err, out)
	}

	// Bad again, then back by itself after the clean time.
	sendBadMACs(t, c, 2, 1, netns.Private0, 11)
	waitLinks(t, n1, 2, "link 0 bad again", func(l map[int]admin.LinkStatus) bool { return l[0].Bad })
	waitLinks(t, n1, 2, "link 0 back after the clean time", func(l map[int]admin.LinkStatus) bool {
		return !l[0].Bad && fmt.Sprint(carrying(l)) == "[0]"
	})
	roundTrip(t, conn, r, "bye", wait)
}

// waitNode polls node n's view of peer until ok holds.
func waitNode(t *testing.T, n *vcluster.Node, peer int, what string, ok func(admin.NodeStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s, err := n.Peer(peer)
		if err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d about node %d: %s never held: %+v (err %v)", n.ID, peer, what, s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cutting every network link of a node while the disk heartbeat runs: the others report it
// network-partitioned (and in jeopardy), not down; once its disk writes stop as well, down.
func TestDiskHeartbeatPartition(t *testing.T) {
	c := interconnectCluster(t, defaultRule(nodeconf.PolicySpread), nodeconf.DiskHeartbeat{
		Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond,
	})
	n1 := c.Node(1)
	_, diskRow := linksOf(t, n1, 3)
	if diskRow == nil {
		t.Fatal("vigil links shows no disk heartbeat row")
	}
	deadline := time.Now().Add(wait)
	for diskRow.State != admin.LinkUp || diskRow.Seq == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("disk heartbeat of node 3 never up: %+v", diskRow)
		}
		time.Sleep(20 * time.Millisecond)
		_, diskRow = linksOf(t, n1, 3)
	}

	cut, err := c.Net.Partition(netns.PrivateLinks, []int{1, 2}, []int{3})
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Undo()
	waitNode(t, n1, 3, "partitioned, in jeopardy", func(s admin.NodeStatus) bool {
		return s.State == admin.NodePartitioned && s.Jeopardy && s.LinksUp == 0
	})
	// It stays partitioned, not down, while its disk writes go on.
	for range 10 {
		if s, err := n1.Peer(3); err != nil || s.State != admin.NodePartitioned {
			t.Fatalf("node 1 about node 3 during the partition: %+v (err %v)", s, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Node 3 sees the others the same way.
	waitNode(t, c.Node(3), 1, "node 1 partitioned from node 3", func(s admin.NodeStatus) bool {
		return s.State == admin.NodePartitioned
	})

	// Its daemon stops: no more disk writes, and no network: down.
	if err := c.Node(3).Proc().Stop(); err != nil {
		t.Fatal(err)
	}
	waitNode(t, n1, 3, "down", func(s admin.NodeStatus) bool { return s.State == admin.NodeDown })

	if err := c.Node(3).Proc().Cont(); err != nil {
		t.Fatal(err)
	}
	if err := cut.Undo(); err != nil {
		t.Fatal(err)
	}
	waitNode(t, n1, 3, "alive again", func(s admin.NodeStatus) bool { return s.State == admin.NodeAlive })
}
