package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"vigil/control/admin"
)

// StatusCmd shows the local daemon's status.
type StatusCmd struct{}

// Run prints the status.
func (StatusCmd) Run(g *Globals, out io.Writer, now func() time.Time) error {
	st, err := query(g, (*admin.Client).Status)
	if err != nil {
		return err
	}
	cs, hasCluster, err := clusterStatus(g)
	if err != nil {
		return err
	}
	if hasCluster {
		st.ClusterDB = &cs
	}
	if g.JSON {
		return printJSON(out, st)
	}
	n := now()
	xdp := "-"
	if len(st.XDPMode) > 0 {
		var parts []string
		for _, ifc := range slices.Sorted(maps.Keys(st.XDPMode)) {
			parts = append(parts, ifc+" "+st.XDPMode[ifc])
		}
		xdp = strings.Join(parts, ", ")
	}
	started := "-"
	if !st.StartedAt.IsZero() {
		started = st.StartedAt.In(n.Location()).Format("2006-01-02 15:04:05 MST") + " (" + ago(n, st.StartedAt) + ")"
	}
	tw := table(out)
	fmt.Fprintf(tw, "Cluster:\t%s (id %d)\n", st.Cluster, st.ClusterID)
	fmt.Fprintf(tw, "Node:\t%d %s\n", st.NodeID, st.NodeName)
	fmt.Fprintf(tw, "Mode:\t%s\n", st.Mode)
	fmt.Fprintf(tw, "XDP:\t%s\n", xdp)
	fmt.Fprintf(tw, "Incarnation:\t%d\n", st.Incarnation)
	fmt.Fprintf(tw, "Started:\t%s\n", started)
	fmt.Fprintf(tw, "Heartbeat:\tevery %s, failure detected within %s\n", humanDuration(st.HeartbeatInterval), humanDuration(st.DetectTime))
	if st.ClusterAddress != "" {
		fmt.Fprintf(tw, "Interconnect:\tcluster address %s, policy %s\n", st.ClusterAddress, st.Policy)
	}
	if st.DiskHeartbeat != "" {
		fmt.Fprintf(tw, "Disk heartbeat:\t%s\n", st.DiskHeartbeat)
	}
	fmt.Fprintf(tw, "Version:\t%s\n", st.Version)
	if st.ClusterDB == nil {
		return tw.Flush()
	}
	printClusterLines(tw, *st.ClusterDB)
	if err := tw.Flush(); err != nil {
		return err
	}
	return printMembers(out, *st.ClusterDB)
}

// NodesCmd lists the cluster nodes.
type NodesCmd struct{}

// Run prints the nodes, ordered by ID.
func (NodesCmd) Run(g *Globals, out io.Writer, now func() time.Time) error {
	nodes, err := query(g, (*admin.Client).Nodes)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, nodes)
	}
	slices.SortFunc(nodes, func(a, b admin.NodeStatus) int { return cmp.Compare(a.ID, b.ID) })
	n := now()
	tw := table(out)
	fmt.Fprintln(tw, "NODE\tNAME\tSTATE\tJEOPARDY\tLINKS\tSINCE\tLAST SEEN")
	for _, nd := range nodes {
		if nd.Self {
			fmt.Fprintf(tw, "%d\t%s\t%s\t-\t-\t-\t-\n", nd.ID, nd.Name, admin.NodeSelf)
			continue
		}
		jeopardy := "-"
		if nd.State == admin.NodeAlive || nd.State == admin.NodeStalled || nd.State == admin.NodePartitioned {
			jeopardy = yesNo(nd.Jeopardy)
		}
		lastSeen := "never"
		if !nd.LastSeen.IsZero() {
			lastSeen = ago(n, nd.LastSeen)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d\t%s\t%s\n",
			nd.ID, nd.Name, nd.State, jeopardy, nd.LinksUp, nd.Links, agoOrDash(n, nd.Since), lastSeen)
	}
	return tw.Flush()
}

// LinksCmd lists the private links to every peer (the default), or clears one.
type LinksCmd struct {
	List  LinksListCmd  `cmd:"" default:"1" hidden:"" help:"List the links (the default)."`
	Clear LinksClearCmd `cmd:"" help:"Return a link that the error-rate rule took out of service to service."`
}

// LinksClearCmd is vigil links clear LINK.
type LinksClearCmd struct {
	Link string `arg:"" help:"The link's interface name, as in vigil links."`
}

// Run clears the link.
func (c LinksClearCmd) Run(g *Globals, out io.Writer) error {
	r, err := query(g, func(cl *admin.Client) (admin.ClearResult, error) { return cl.ClearLink(c.Link) })
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, r)
	}
	_, err = fmt.Fprintf(out, "%s: %s\n", r.Link, r.Message)
	return err
}

// LinksListCmd lists the links.
type LinksListCmd struct{}

// Run prints the links, ordered by peer and link (the disk heartbeat last). The interconnect's
// columns (traffic, errors) appear when the daemon runs one.
func (LinksListCmd) Run(g *Globals, out io.Writer, now func() time.Time) error {
	links, err := query(g, (*admin.Client).Links)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, links)
	}
	slices.SortFunc(links, func(a, b admin.LinkStatus) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Peer, b.Peer), cmp.Compare(a.Link, b.Link))
	})
	n := now()
	ic := slices.ContainsFunc(links, func(l admin.LinkStatus) bool { return l.ErrorThreshold > 0 || l.Kind != "" })
	tw := table(out)
	if ic {
		fmt.Fprintln(tw, "PEER\tLINK\tSTATE\tSINCE\tLAST SEEN\tRTT P50\tRTT P99\tLOSS\tTRAFFIC\tTX PKTS\tERRORS")
	} else {
		fmt.Fprintln(tw, "PEER\tLINK\tSTATE\tSINCE\tLAST SEEN\tRTT P50\tRTT P99\tLOSS")
	}
	for _, l := range links {
		peer := l.PeerName
		if peer == "" {
			peer = fmt.Sprint(l.Peer)
		}
		link := l.LinkName
		if link == "" {
			link = fmt.Sprint(l.Link)
		}
		lastSeen := "never"
		if !l.LastSeen.IsZero() {
			lastSeen = ago(n, l.LastSeen)
		}
		if !ic {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", peer, link, l.State, agoOrDash(n, l.Since), lastSeen,
				rtt(l.RTTP50), rtt(l.RTTP99), lossPercent(l.LossPercent))
			continue
		}
		if l.Kind == admin.LinkDisk {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t-\t-\t-\theartbeat only\tseq %d\t-\n", peer, link, l.State,
				agoOrDash(n, l.Since), lastSeen, l.Seq)
			continue
		}
		traffic := "-"
		if l.Carrying {
			traffic = "carrying"
		}
		errs := fmt.Sprintf("%d/%d", l.Errors, l.ErrorThreshold)
		if l.Bad {
			errs += " BAD"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", peer, link, l.State, agoOrDash(n, l.Since), lastSeen,
			rtt(l.RTTP50), rtt(l.RTTP99), lossPercent(l.LossPercent), traffic, l.TxPackets, errs)
	}
	return tw.Flush()
}

// CountersCmd shows the rejection counters.
type CountersCmd struct{}

// Run prints the counters, ordered by name.
func (CountersCmd) Run(g *Globals, out io.Writer) error {
	ctr, err := query(g, (*admin.Client).Counters)
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, ctr)
	}
	tw := table(out)
	fmt.Fprintln(tw, "COUNTER\tVALUE")
	for _, name := range slices.Sorted(maps.Keys(ctr)) {
		fmt.Fprintf(tw, "%s\t%d\n", name, ctr[name])
	}
	return tw.Flush()
}

func table(out io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
}

func printJSON(out io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
