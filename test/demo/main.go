// Command demo shows Vigil's main job on one machine: it starts a 3-node cluster of real vigild
// daemons in network namespaces, shows `vigil nodes` and `vigil links`, then pulls a cable,
// cuts a node off and kills a daemon, and shows what each node detected and how fast, before
// tearing everything down. `make demo` runs it; it needs root.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"vigil/heartbeat"
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
	c, err := vcluster.Start(vcluster.Options{Nodes: 3, Interval: interval, Multiplier: multiplier, StallTimeout: stallTimeout})
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
	show(n1, "nodes")
	show(n1, "links")

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

	step("cutting node 3 off (both private cables)")
	mark = n1.LogLines()
	t0 = heartbeat.MonotonicNow()
	for _, l := range netns.PrivateLinks {
		if err := c.Net.LinkDown(3, l); err != nil {
			return err
		}
	}
	if err := report(n1, mark, t0, "peer down", 3); err != nil {
		return err
	}
	show(n1, "nodes")
	for _, l := range netns.PrivateLinks {
		if err := c.Net.LinkUp(3, l); err != nil {
			return err
		}
	}
	if _, err := n1.WaitEvent(mark, 10*time.Second, match("peer alive", 3)); err != nil {
		return err
	}
	fmt.Println("  cables back: node 3 alive again")

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
	show(n1, "nodes")
	return nil
}

func step(what string) { fmt.Printf("\n== %s\n", what) }

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
	fmt.Printf("  node 1 detected %q for node %d %v after the fault\n", what, peer,
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
