package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

// Membership, quorum and the replicated cluster database, end to end: real vigild processes
// in the netns harness, raft over the TCP cluster transport on the first private link, the
// vigil CLI. Bounds are generous; failover times are measured by `go run ./bench membership`.

const clusterWait = 20 * time.Second

func newRaftCluster(t *testing.T, opts vcluster.Options) *vcluster.Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	opts.Interval, opts.Multiplier, opts.StallTimeout = interval, 10, stallTimeout
	c := vcluster.New(t, opts)
	return c
}

func clusterStatus(n *vcluster.Node) (admin.ClusterStatus, error) {
	cl, err := n.Admin()
	if err != nil {
		return admin.ClusterStatus{}, err
	}
	defer cl.Close()
	return cl.ClusterStatus()
}

// waitQuorum waits until every node in ids is quorate under one leader among them, and
// returns the leader.
func waitQuorum(t *testing.T, c *vcluster.Cluster, ids ...int) int {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	var last []string
	for time.Now().Before(deadline) {
		last = last[:0]
		lead, ok := 0, true
		for _, id := range ids {
			st, err := clusterStatus(c.Node(id))
			last = append(last, fmt.Sprintf("node %d: %+v %v", id, st, err))
			if err != nil || !st.Quorate || !slices.Contains(ids, int(st.Leader)) || lead != 0 && int(st.Leader) != lead {
				ok = false
				continue
			}
			lead = int(st.Leader)
		}
		if ok {
			return lead
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no quorum under one leader among %v:\n%s", ids, strings.Join(last, "\n"))
	return 0
}

// clusterYAML names nodes 1..n as vcluster runs them (node<id>), with the witnesses.
func clusterYAML(n int, user string, witnesses ...int) string {
	var b strings.Builder
	b.WriteString("version: 1\nnodes:\n")
	for id := 1; id <= n; id++ {
		role := ""
		for _, w := range witnesses {
			if w == id {
				role = ", role: witness"
			}
		}
		fmt.Fprintf(&b, "  node%d: {id: %d%s}\n", id, id, role)
	}
	fmt.Fprintf(&b, "users:\n  %s: {role: admin}\n", user)
	return b.String()
}

func writeFile(t *testing.T, c *vcluster.Cluster, name, data string) string {
	t.Helper()
	path := filepath.Join(c.Net.SharedDir, name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func vigil(t *testing.T, n *vcluster.Node, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	return n.Vigil(ctx, args...)
}

// apply applies a configuration with `vigil config apply` through node n.
func apply(t *testing.T, c *vcluster.Cluster, n int, name, data string) (string, error) {
	t.Helper()
	return vigil(t, c.Node(n), "config", "apply", writeFile(t, c, name, data))
}

// configUser returns the user name in node n's configuration (the register the tests write),
// read linearizably unless local.
func configUser(t *testing.T, n *vcluster.Node, local bool) string {
	t.Helper()
	cl, err := n.Admin()
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ct, err := cl.ConfigShow(!local)
	if err != nil {
		return "error: " + err.Error()
	}
	i := strings.Index(ct.YAML, "users:\n")
	if i < 0 {
		return ""
	}
	rest := strings.TrimSpace(ct.YAML[i+len("users:\n"):])
	name, _, _ := strings.Cut(rest, ":")
	return name
}

func waitUser(t *testing.T, n *vcluster.Node, want string, local bool) {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	got := ""
	for time.Now().Before(deadline) {
		if got = configUser(t, n, local); got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("node %d: configuration user %q, want %q", n.ID, got, want)
}

func TestMembershipFormsAndReplicates(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{})
	waitQuorum(t, c, 1, 2, 3)
	// Before any configuration the nodes wait in admin-wait, and status says so.
	out, err := vigil(t, c.Node(1), "status")
	if err != nil || !strings.Contains(out, "Quorum:       yes, ") ||
		!strings.Contains(out, "no configuration yet") {
		t.Fatalf("vigil status: %v\n%s", err, out)
	}

	// A bad file: the error names file and line; nothing changes.
	bad := strings.Replace(clusterYAML(3, "alice"), "users:", "usres:", 1)
	out, err = apply(t, c, 2, "bad.yaml", bad)
	if err == nil || !strings.Contains(out, `bad.yaml:6: unknown key "usres" (did you mean "users"?)`) {
		t.Fatalf("apply of a bad file: %v\n%s", err, out)
	}
	// A file naming a node under another name is refused by the database, as a whole.
	wrong := strings.Replace(clusterYAML(3, "alice"), "node3: {id: 3}", "gamma: {id: 3}", 1)
	out, err = apply(t, c, 2, "wrong.yaml", wrong)
	if err == nil || !strings.Contains(out, "node 3 is gamma in the configuration, not node3") {
		t.Fatalf("apply of a configuration contradicting the members: %v\n%s", err, out)
	}
	if out, err := vigil(t, c.Node(3), "config", "show"); err == nil || !strings.Contains(out, "no configuration has been applied") {
		t.Fatalf("config show after refused applies: %v\n%s", err, out)
	}

	// Applied on node 2, visible on all.
	out, err = apply(t, c, 2, "cluster.yaml", clusterYAML(3, "alice"))
	if err != nil || !strings.Contains(out, "added users.alice") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		waitUser(t, n, "alice", false)
	}
	// diff, backup, restore.
	out, err = vigil(t, c.Node(3), "config", "diff", writeFile(t, c, "bob.yaml", clusterYAML(3, "bob")))
	if err != nil || !strings.Contains(out, "added users.bob") || !strings.Contains(out, "removed users.alice") {
		t.Fatalf("config diff: %v\n%s", err, out)
	}
	backup := filepath.Join(c.Net.SharedDir, "backup.json")
	if out, err := vigil(t, c.Node(1), "config", "backup", backup); err != nil {
		t.Fatalf("config backup: %v\n%s", err, out)
	}
	if out, err := apply(t, c, 3, "bob.yaml", clusterYAML(3, "bob")); err != nil {
		t.Fatalf("apply bob: %v\n%s", err, out)
	}
	waitUser(t, c.Node(1), "bob", false)
	if out, err := vigil(t, c.Node(1), "config", "restore", backup); err != nil || !strings.Contains(out, "added users.alice") {
		t.Fatalf("config restore: %v\n%s", err, out)
	}
	waitUser(t, c.Node(2), "alice", false)
	// The event log has it all: joins, states, the leader, the configuration changes, by whom.
	out, err = vigil(t, c.Node(3), "log", "--kind", "config")
	if err != nil || strings.Count(out, "config") < 3 || !strings.Contains(out, "@node2") {
		t.Fatalf("vigil log --kind config: %v\n%s", err, out)
	}
	out, err = vigil(t, c.Node(3), "log", "--node", "1")
	if err != nil || !strings.Contains(out, "node 1 (node1) joined as member") || !strings.Contains(out, "-> running") {
		t.Fatalf("vigil log --node 1: %v\n%s", err, out)
	}
	if out, err := vigil(t, c.Node(3), "log", "--kind", "nonsense"); err == nil || !strings.Contains(out, `unknown event kind "nonsense"`) {
		t.Fatalf("vigil log --kind nonsense: %v\n%s", err, out)
	}
}

func TestMembershipLeaderKilled(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{})
	lead := waitQuorum(t, c, 1, 2, 3)
	if out, err := apply(t, c, lead, "a.yaml", clusterYAML(3, "acked")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// kill -9 of the leader: the others elect a new one, which commits; the acknowledged
	// change is there.
	if err := c.Node(lead).Kill(); err != nil {
		t.Fatal(err)
	}
	var rest []int
	for id := 1; id <= 3; id++ {
		if id != lead {
			rest = append(rest, id)
		}
	}
	newLead := waitQuorum(t, c, rest...)
	if newLead == lead {
		t.Fatalf("the killed node %d is still the leader", lead)
	}
	// The new leader's first commit is the record of its leadership (what the membership
	// bench times): it must come, whatever the old leader had in flight.
	deadline := time.Now().Add(clusterWait)
	for {
		out, err := vigil(t, c.Node(newLead), "log", "--kind", "leader", "--node", fmt.Sprint(newLead))
		if err == nil && strings.Contains(out, fmt.Sprintf("node %d (node%d) is the leader", newLead, newLead)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leadership record of the new leader %d: %v\n%s", newLead, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitUser(t, c.Node(rest[0]), "acked", false)
	if out, err := apply(t, c, rest[1], "b.yaml", clusterYAML(3, "after")); err != nil {
		t.Fatalf("apply after the leader died: %v\n%s", err, out)
	}
	// The dead node is recorded faulted.
	deadline = time.Now().Add(clusterWait)
	for {
		out, err := vigil(t, c.Node(rest[0]), "log", "--kind", "node-state", "--node", fmt.Sprint(lead))
		if err == nil && strings.Contains(out, "-> faulted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of the dead leader: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Restarted from its data directory, it rejoins and catches up.
	if err := c.Node(lead).Start(); err != nil {
		t.Fatal(err)
	}
	waitQuorum(t, c, 1, 2, 3)
	waitUser(t, c.Node(lead), "after", true)
}

func TestMembershipPartition(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{})
	waitQuorum(t, c, 1, 2, 3)
	if out, err := apply(t, c, 1, "a.yaml", clusterYAML(3, "before")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	p, err := c.Net.Partition(netns.PrivateLinks, []int{1}, []int{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	// The pair keeps working.
	waitQuorum(t, c, 2, 3)
	if out, err := apply(t, c, 2, "b.yaml", clusterYAML(3, "pair")); err != nil {
		t.Fatalf("apply in the majority: %v\n%s", err, out)
	}
	// The single node says it has no quorum, and refuses changes.
	deadline := time.Now().Add(clusterWait)
	for {
		st, err := clusterStatus(c.Node(1))
		if err == nil && !st.Quorate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 cut off still quorate: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := vigil(t, c.Node(1), "status")
	if err != nil || !strings.Contains(out, "Quorum:       NO") {
		t.Fatalf("status of the cut-off node: %v\n%s", err, out)
	}
	out, err = apply(t, c, 1, "c.yaml", clusterYAML(3, "lonely"))
	if err == nil || !strings.Contains(out, "no quorum") {
		t.Fatalf("apply on the cut-off node: %v\n%s", err, out)
	}
	if got := configUser(t, c.Node(1), true); got != "before" {
		t.Fatalf("the cut-off node's copy: %q", got)
	}
	// Healing converges.
	if err := p.Undo(); err != nil {
		t.Fatal(err)
	}
	waitQuorum(t, c, 1, 2, 3)
	waitUser(t, c.Node(1), "pair", true)
}

func TestMembershipWitness(t *testing.T) {
	// Two data nodes and a witness survive the death of either data node.
	c := newRaftCluster(t, vcluster.Options{Witnesses: []int{3}})
	waitQuorum(t, c, 1, 2, 3)
	if out, err := apply(t, c, 1, "a.yaml", clusterYAML(3, "start", 3)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	st, err := clusterStatus(c.Node(3))
	if err != nil || st.Role != "witness" {
		t.Fatalf("witness status: %+v %v", st, err)
	}
	for i, dead := range []int{1, 2} {
		alive := 3 - dead
		if err := c.Node(dead).Kill(); err != nil {
			t.Fatal(err)
		}
		waitQuorum(t, c, alive, 3)
		user := fmt.Sprintf("survivor%d", i)
		if out, err := apply(t, c, alive, user+".yaml", clusterYAML(3, user, 3)); err != nil {
			t.Fatalf("apply with node %d dead: %v\n%s", dead, err, out)
		}
		if err := c.Node(dead).Start(); err != nil {
			t.Fatal(err)
		}
		waitQuorum(t, c, 1, 2, 3)
		waitUser(t, c.Node(dead), user, true)
	}
}

func TestMembershipNodeRemove(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{})
	waitQuorum(t, c, 1, 2, 3)
	if out, err := apply(t, c, 1, "a.yaml", clusterYAML(3, "x")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	// Bad input changes nothing.
	for _, args := range [][]string{
		{"node", "add", "9", "node9"}, // not in the configuration
		{"node", "add", "64", "big"},  // not a node id
		{"node", "add", "2", "node2"}, // already a member
		{"node", "remove", "7"},       // not a member
		{"node", "add", "x", "node4"}, // not a number
		{"config", "apply", "/nonexistent.yaml"},
	} {
		if out, err := vigil(t, c.Node(1), args...); err == nil {
			t.Errorf("vigil %v succeeded:\n%s", args, out)
		}
	}
	st, err := clusterStatus(c.Node(2))
	if err != nil || len(st.Voters) != 3 {
		t.Fatalf("voters after refused changes: %+v %v", st, err)
	}
	// Removing node 3: it exits; the other two go on as a cluster of two.
	if out, err := vigil(t, c.Node(1), "node", "remove", "3", "--reason", "decommissioned"); err != nil {
		t.Fatalf("node remove: %v\n%s", err, out)
	}
	waitQuorum(t, c, 1, 2)
	deadline := time.Now().Add(clusterWait)
	for {
		st, err := clusterStatus(c.Node(3))
		if err == nil && st.State == "exited" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("removed node 3: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := apply(t, c, 2, "b.yaml", clusterYAML(2, "y")); err != nil {
		t.Fatalf("apply without node 3: %v\n%s", err, out)
	}
	out, err := vigil(t, c.Node(1), "log", "--kind", "node-leave")
	if err != nil || !strings.Contains(out, "node 3 (node3) left the cluster: decommissioned") {
		t.Fatalf("log: %v\n%s", err, out)
	}
}
