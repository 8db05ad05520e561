package main

import (
	"fmt"
	"io"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"vigil/test/netns"
)

// runHarness measures the cluster harness itself: how long a 3-node cluster takes to build and to
// tear down, and how soon a node hears of a pulled cable through netlink (which the harness keeps
// prompt by giving veth ends distinct interface indexes).
func runHarness(cfg config, out io.Writer) (metrics, error) {
	runs := 30
	if cfg.quick {
		runs = 5
	}
	var build, teardown, carrier sample
	for range runs {
		start := time.Now()
		c, err := netns.Build(netns.Options{Nodes: 3})
		if err != nil {
			return nil, err
		}
		build = append(build, time.Since(start))
		d, err := carrierLatency(c, 2, netns.Private0)
		if err != nil {
			c.Close()
			return nil, err
		}
		carrier = append(carrier, d)
		start = time.Now()
		if err := c.Close(); err != nil {
			return nil, err
		}
		teardown = append(teardown, time.Since(start))
	}
	table(out, [][]string{
		{"metric", "n", "p50 ms", "p99 ms", "max ms"},
		build.row("build 3-node cluster"),
		teardown.row("tear down 3-node cluster"),
		carrier.row("cable pull -> netlink carrier loss"),
	})
	m := metrics{}
	build.record(m, "netns_build_3node")
	teardown.record(m, "netns_close_3node")
	carrier.record(m, "netns_carrier_loss_notify")
	return m, nil
}

// carrierLatency pulls node's cable on link l and returns the time until the node's netlink
// socket reports the interface without carrier; then plugs it back.
func carrierLatency(c *netns.Cluster, node int, l netns.LinkID) (time.Duration, error) {
	ns, err := vnetns.GetFromPath(c.Node(node).Path())
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeAt(ns, updates, done); err != nil {
		return 0, fmt.Errorf("subscribe to links of node %d: %w", node, err)
	}
	index := c.Node(node).Link(l).Index
	start := time.Now()
	if err := c.LinkDown(node, l); err != nil {
		return 0, err
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case u := <-updates:
			if int(u.Index) == index && u.Attrs().OperState != netlink.OperUp {
				d := time.Since(start)
				return d, c.LinkUp(node, l)
			}
		case <-timeout:
			return 0, fmt.Errorf("no carrier-loss event for %v of node %d within 5s", l, node)
		}
	}
}
