// Command demo shows Vigil's main job on one machine: it starts a 3-node cluster of real vigild
// daemons in network namespaces (cluster addresses on the interconnect, the cluster database
// replicated with raft), shows `vigil status`, `vigil nodes` and `vigil links`, applies a
// cluster configuration on one node and reads it on another, then pulls a cable, cuts the
// leader's node off and kills a daemon, and shows what was detected and how fast, and how
// long the survivors took to elect a new leader, before tearing everything down. `make demo`
// runs it; it needs root.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"vigil/control/admin"
	"vigil/heartbeat"
	"vigil/internal/nodeconf"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

const (
	interval     = time.Millisecond
	multiplier   = 3
	stallTimeout = 2 * time.Second
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces, eBPF); try: sudo make demo")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	fmt.Println("building vigild and vigil ...")
	if _, err := vcluster.Binaries(); err != nil {
		return err
	}
	start := time.Now()
	c, err := vcluster.Start(vcluster.Options{Nodes: 3, Interval: interval, Multiplier: multiplier, StallTimeout: stallTimeout,
		Interconnect: nodeconf.Interconnect{Network: vcluster.ClusterNetwork, Policy: nodeconf.PolicySpread,
			ErrorThreshold: nodeconf.DefaultErrorThreshold, ErrorWindow: nodeconf.DefaultErrorWindow,
			ErrorClean: nodeconf.DefaultErrorClean}})
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		c.Close()
		os.Exit(130)
	}()
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
		fmt.Println("\ntorn down: daemons stopped, namespaces and links removed")
	}()
	fmt.Printf("started 3 vigild daemons in %v (namespaces %s-n1..n3), heartbeats every %v, failure after %d missed\n",
		time.Since(start).Round(time.Millisecond), c.Net.Name, interval, multiplier)
	if err := waitAlive(c); err != nil {
		return err
	}
	n1 := c.Node(1)
	leader, err := waitLeader(c, 1, 2, 3)
	if err != nil {
		return err
	}
	show(n1, "status")
	show(n1, "nodes")
	show(n1, "links")

	step("applying a cluster configuration on node 2, reading it on node 3")
	cfgFile := filepath.Join(c.Net.SharedDir, "cluster.yaml")
	if err := os.WriteFile(cfgFile, []byte(demoConfig), 0o600); err != nil {
		return err
	}
	fmt.Printf("\n$ cat cluster.yaml\n%s", demoConfig)
	show(c.Node(2), "config", "apply", cfgFile)
	show(c.Node(3), "config", "show")

	step("pulling the cable of node 2 on priv0")
	mark := n1.LogLines()
	t0 := heartbeat.MonotonicNow()
	if err := c.Net.LinkDown(2, netns.Private0); err != nil {
		return err
	}
	if err := report(n1, mark, t0, "link down", 2); err != nil {
		return err
	}
	if err := report(n1, mark, t0, "peer in jeopardy: one link left", 2); err != nil {
		return err
	}
	fmt.Println("  node 2 stays alive: a link failure is not a node failure")
	show(n1, "nodes")
	if err := c.Net.LinkUp(2, netns.Private0); err != nil {
		return err
	}
	mark = n1.LogLines()
	if _, err := n1.WaitEvent(mark, 10*time.Second, match("peer out of jeopardy", 2)); err != nil {
		return err
	}
	fmt.Println("  cable back: link up again, node 2 out of jeopardy")

	// Cut the leader's node off; observe from the lowest-numbered survivor.
	obs := c.Node(1)
	if leader == 1 {
		obs = c.Node(2)
	}
	var survivors []int
	for _, n := range c.Nodes {
		if n.ID != leader {
			survivors = append(survivors, n.ID)
		}
	}
	step(fmt.Sprintf("cutting node %d, the raft leader, off (both private cables)", leader))
	mark = obs.LogLines()
	t0 = heartbeat.MonotonicNow()
	w0 := time.Now()
	for _, l := range netns.PrivateLinks {
		if err := c.Net.LinkDown(leader, l); err != nil {
			return err
		}
	}
	if err := report(obs, mark, t0, "peer down", leader); err != nil {
		return err
	}
	newLeader, err := waitLeader(c, survivors...)
	if err != nil {
		return err
	}
	fmt.Printf("  nodes %v elected node %d leader; quorate again %v after the fault (seen by polling vigil status)\n",
		survivors, newLeader, time.Since(w0).Round(time.Millisecond))
	show(obs, "status")
	for _, l := range netns.PrivateLinks {
		if err := c.Net.LinkUp(leader, l); err != nil {
			return err
		}
	}
	if _, err := obs.WaitEvent(mark, 10*time.Second, match("peer alive", leader)); err != nil {
		return err
	}
	if _, err := waitLeader(c, 1, 2, 3); err != nil {
		return err
	}
	fmt.Printf("  cables back: node %d alive again and back in the quorum as a follower\n", leader)

	step("kill -9 of vigild on node 2 (its kernel keeps answering echoes)")
	mark = n1.LogLines()
	t0 = heartbeat.MonotonicNow()
	if err := c.Node(2).Kill(); err != nil {
		return err
	}
	if err := report(n1, mark, t0, "peer stalled", 2); err != nil {
		return err
	}
	fmt.Printf("  the node is not declared down yet: its kernel answers; waiting the stall timeout (%v) ...\n", stallTimeout)
	if err := report(n1, mark, t0, "peer down", 2); err != nil {
		return err
	}
	if ev, err := n1.WaitEvent(mark, 0, match("peer down", 2)); err == nil && time.Duration(ev.KernelNS-t0) < stallTimeout {
		// The echo replies of node 2's kernel answer node 1's own requests: when node 1's
		// sender does not run for longer than the detection time (a vCPU stall of this VM,
		// see bench/README.md), nothing answers, and the stalled node goes down early.
		fmt.Printf("  that was before the stall timeout: node 1 heard nothing from node 2's kernel for %v either",
			time.Duration(ev.KernelNS-ev.LastSeenNS).Round(10*time.Microsecond))
		if logged(n1, mark, `"msg":"heartbeat sender ran late"`) {
			fmt.Printf(" (node 1's own sender ran late meanwhile, so its echo requests stopped)")
		}
		fmt.Println()
	}
	show(n1, "nodes")
	return nil
}

func step(what string) { fmt.Printf("\n== %s\n", what) }

// demoConfig is the cluster configuration the demo applies: the three nodes as vcluster names
// them, one service group and the users.
const demoConfig = `version: 1
nodes:
  node1: {id: 1}
  node2: {id: 2}
  node3: {id: 3}
resource_types:
  ip:
    agent: builtin:ip
    parameters:
      address: {required: true}
      device: {required: true}
groups:
  web:
    nodes: [node1, node2, node3]
    resources:
      vip: {type: ip, params: {address: 198.19.0.100, device: pub}}
users:
  root: {role: admin}
`

// waitLeader waits until every node in ids is quorate under one leader among them, and
// returns the leader.
func waitLeader(c *vcluster.Cluster, ids ...int) (int, error) {
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		lead, ok := 0, true
		for _, id := range ids {
			st, err := clusterStatus(c.Node(id))
			if err != nil || !st.Quorate || !slices.Contains(ids, int(st.Leader)) || lead != 0 && int(st.Leader) != lead {
				ok, last = false, fmt.Sprintf("node %d: leader %d, quorate %v, %v", id, st.Leader, st.Quorate, err)
				break
			}
			lead = int(st.Leader)
		}
		if ok {
			return lead, nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("no quorum under one leader among nodes %v after 20s (%s)", ids, last)
}

// logged reports whether node n's log holds text after line mark.
func logged(n *vcluster.Node, mark int, text string) bool {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return mark < len(lines) && strings.Contains(strings.Join(lines[mark:], "\n"), text)
}

func clusterStatus(n *vcluster.Node) (admin.ClusterStatus, error) {
	cl, err := n.Admin()
	if err != nil {
		return admin.ClusterStatus{}, err
	}
	defer cl.Close()
	return cl.ClusterStatus()
}

func match(msg string, peer int) func(vcluster.LogEvent) bool {
	return func(ev vcluster.LogEvent) bool { return ev.Msg == msg && ev.Peer == peer }
}

// report waits for node n's event and prints how long after the fault (t0) the kernel saw it.
func report(n *vcluster.Node, mark int, t0 uint64, msg string, peer int) error {
	ev, err := n.WaitEvent(mark, 10*time.Second, match(msg, peer))
	if err != nil {
		return err
	}
	what := msg
	if ev.Link != nil {
		what = fmt.Sprintf("%s (link %d)", msg, *ev.Link)
	}
	fmt.Printf("  node %d detected %q for node %d %v after the fault\n", n.ID, what, peer,
		time.Duration(ev.KernelNS-t0).Round(10*time.Microsecond))
	return nil
}

func waitAlive(c *vcluster.Cluster) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, n := range c.Nodes {
			for _, p := range c.Nodes {
				if p != n {
					s, err := n.Peer(p.ID)
					ok = ok && err == nil && s.State == "alive" && s.LinksUp == 2
				}
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not all alive after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// show runs a vigil command on node n and prints it the way a user would see it.
func show(n *vcluster.Node, args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Vigil(ctx, args...)
	fmt.Printf("\n$ vigil %s        # on node %d\n", strings.Join(args, " "), n.ID)
	fmt.Print(out)
	if err != nil {
		fmt.Println("  error:", err)
	}
}
