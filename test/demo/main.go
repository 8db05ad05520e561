// Command demo shows Vigil's test topology on this machine: it builds a 3-node cluster in network
// namespaces, prints its links and a reachability matrix, pulls one cable and partitions a node
// to show the fault injection, and tears everything down. `make demo` runs it; it needs root.
package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"vigil/test/netns"
)

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces); try: sudo make demo")
		os.Exit(1)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	start := time.Now()
	c, err := netns.Build(netns.Options{Nodes: 3})
	if err != nil {
		return err
	}
	// Tear down on return and on Ctrl-C.
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
		fmt.Println("\ntorn down: namespaces, links and processes removed")
	}()
	fmt.Printf("built cluster %s in %v: hub namespace %s, client namespace %s\n\n",
		c.Name, time.Since(start).Round(time.Millisecond), c.Hub, c.Client.Name)
	fmt.Printf("%-6s %-22s %-6s %-5s %-18s %-19s\n", "node", "namespace", "link", "index", "address", "mac")
	for _, n := range c.Nodes {
		for _, l := range n.Links {
			fmt.Printf("%-6d %-22s %-6s %-5d %-18s %-19s\n", n.ID, n.Name, l.Name, l.Index, l.Addr, l.MAC)
		}
	}
	fmt.Printf("shared disks directory: %s\n", c.SharedDir)

	fmt.Println("\nreachability from node 1:")
	matrix(c)
	fmt.Println("\npulling the cable of node 2 on priv0 ...")
	if err := c.LinkDown(2, netns.Private0); err != nil {
		return err
	}
	matrix(c)
	if err := c.LinkUp(2, netns.Private0); err != nil {
		return err
	}
	fmt.Println("\npartitioning node 3 from nodes 1 and 2 on both private links ...")
	p, err := c.Partition(netns.PrivateLinks, []int{1, 2}, []int{3})
	if err != nil {
		return err
	}
	matrix(c)
	if err := p.Undo(); err != nil {
		return err
	}
	fmt.Println("\nhealed:")
	matrix(c)
	return nil
}

// matrix prints whether node 1 reaches each peer on each link.
func matrix(c *netns.Cluster) {
	n1 := c.Node(1)
	fmt.Printf("  %-6s", "peer")
	for _, l := range netns.AllLinks {
		fmt.Printf(" %-6s", l)
	}
	fmt.Println()
	for _, p := range c.Nodes[1:] {
		fmt.Printf("  %-6d", p.ID)
		for _, l := range netns.AllLinks {
			fmt.Printf(" %-6s", mark(ping(n1, netns.Addr(p.ID, l))))
		}
		fmt.Println()
	}
}

func ping(n *netns.Node, addr netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := n.Run(ctx, "ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "0.3", addr.String())
	return err == nil && !strings.Contains(out, " 0 received")
}

func mark(ok bool) string {
	if ok {
		return "ok"
	}
	return "--"
}
