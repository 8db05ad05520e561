package netns

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// pingStats pings addr from ns count times, interval apart, and returns how many replies came.
func pingStats(t *testing.T, ns *Namespace, addr netip.Addr, count int, interval time.Duration) (sent, received int) {
	t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatalf("needs ping (apt-get install iputils-ping): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*interval+10*time.Second)
	defer cancel()
	out, _ := ns.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count),
		"-i", fmt.Sprintf("%.3f", interval.Seconds()), "-W", "1", addr.String())
	if strings.Contains(out, "Network is unreachable") {
		return count, 0
	}
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ping %s from %s: unexpected output:\n%s", addr, ns.Name, out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

func reachable(t *testing.T, ns *Namespace, addr netip.Addr) bool {
	t.Helper()
	_, got := pingStats(t, ns, addr, 3, 20*time.Millisecond)
	return got > 0
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after 5s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBuildRejectsBadSize(t *testing.T) {
	for _, n := range []int{0, -1, MaxNodes + 1} {
		if c, err := Build(Options{Nodes: n}); err == nil {
			c.Close()
			t.Errorf("Build(Nodes: %d) succeeded, want an error", n)
		}
	}
}

func TestTopologyConnectivity(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: 3})
	for _, n := range c.Nodes {
		for _, l := range AllLinks {
			link := n.Link(l)
			if link.Name != l.String() || link.Addr.Addr() != Addr(n.ID, l) || link.MAC.String() != MAC(n.ID, l).String() {
				t.Errorf("node %d link %v = %+v", n.ID, l, link)
			}
			hub, err := c.hubLink(n.ID, l)
			if err != nil {
				t.Fatal(err)
			}
			// Distinct indexes on the two ends keep carrier events urgent.
			if hub.Attrs().Index == link.Index {
				t.Errorf("node %d link %v: veth ends share index %d", n.ID, l, link.Index)
			}
		}
		for _, p := range c.Nodes {
			if p == n {
				continue
			}
			for _, l := range AllLinks {
				if !reachable(t, &n.Namespace, Addr(p.ID, l)) {
					t.Errorf("node %d cannot reach node %d on %v", n.ID, p.ID, l)
				}
			}
		}
		if !reachable(t, c.Client, Addr(n.ID, Public)) {
			t.Errorf("client cannot reach node %d on the public link", n.ID)
		}
		// The client is not on the private networks.
		if reachable(t, c.Client, Addr(n.ID, Private0)) {
			t.Errorf("client reaches node %d on a private link", n.ID)
		}
	}
}

func TestSmallestAndLargest(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, MaxNodes} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			c := New(t, Options{Nodes: n})
			if len(c.Nodes) != n {
				t.Fatalf("got %d nodes", len(c.Nodes))
			}
			last := c.Node(n)
			if !reachable(t, c.Client, Addr(last.ID, Public)) {
				t.Errorf("client cannot reach node %d", n)
			}
			if n > 1 && !reachable(t, &last.Namespace, Addr(1, Private1)) {
				t.Errorf("node %d cannot reach node 1 on priv1", n)
			}
		})
	}
}

func TestLinkDownUp(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: 3})
	n1 := &c.Node(1).Namespace
	if err := c.LinkDown(2, Private0); err != nil {
		t.Fatal(err)
	}
	if reachable(t, n1, Addr(2, Private0)) {
		t.Error("node 2 reachable on priv0 after its link went down")
	}
	if !reachable(t, n1, Addr(2, Private1)) {
		t.Error("node 2 unreachable on priv1 while only priv0 is down")
	}
	if !reachable(t, n1, Addr(3, Private0)) {
		t.Error("node 3 unreachable on priv0 while only node 2's link is down")
	}
	// The node sees the cable pull as carrier loss on an interface that stays admin-up.
	var oper netlink.LinkOperState
	var adminUp bool
	err := c.Node(2).Do(func() error {
		l, err := netlink.LinkByName("priv0")
		if err != nil {
			return err
		}
		oper, adminUp = l.Attrs().OperState, l.Attrs().RawFlags&syscall.IFF_UP != 0
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if oper == netlink.OperUp || !adminUp {
		t.Errorf("node 2 priv0 after cable pull: oper %v, admin up %v; want carrier lost, admin up", oper, adminUp)
	}
	if err := c.LinkUp(2, Private0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node 2 reachable on priv0 after link up", func() bool { return reachable(t, n1, Addr(2, Private0)) })
}

func TestPartition(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: 3})
	n1, n2 := &c.Node(1).Namespace, &c.Node(2).Namespace
	p, err := c.Partition(PrivateLinks, []int{1}, []int{2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range PrivateLinks {
		if reachable(t, n1, Addr(2, l)) || reachable(t, n1, Addr(3, l)) {
			t.Errorf("node 1 hears the other side on %v during the partition", l)
		}
		if !reachable(t, n2, Addr(3, l)) {
			t.Errorf("nodes 2 and 3 (same side) cannot talk on %v", l)
		}
	}
	if !reachable(t, n1, Addr(2, Public)) {
		t.Error("the public link, not in the partition, is cut")
	}
	if err := p.Undo(); err != nil {
		t.Fatal(err)
	}
	if err := p.Undo(); err != nil {
		t.Fatalf("second Undo: %v", err)
	}
	for _, l := range PrivateLinks {
		if !reachable(t, n1, Addr(2, l)) {
			t.Errorf("node 1 cannot reach node 2 on %v after healing", l)
		}
	}
	if _, err := c.Partition(PrivateLinks, []int{1, 2}, []int{2, 3}); err == nil {
		t.Error("a node on two sides was accepted")
	}
}

func TestLoss(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: 2})
	n1 := &c.Node(1).Namespace
	const count = 1000
	cases := []struct {
		percent float64
		dir     Direction
		want    float64 // expected loss of a ping round trip, in percent
	}{
		{30, Outbound, 30},
		{20, Inbound, 20},
		{20, Both, 100 * (1 - 0.8*0.8)},
	}
	for _, tc := range cases {
		f, err := c.Loss(1, Private0, tc.percent, tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		sent, got := pingStats(t, n1, Addr(2, Private0), count, time.Millisecond)
		if err := f.Undo(); err != nil {
			t.Fatal(err)
		}
		loss := 100 * float64(sent-got) / float64(sent)
		// The binomial standard deviation over 1000 packets is at most 1.6 points; 6 points is
		// almost four of them.
		if sent != count || math.Abs(loss-tc.want) > 6 {
			t.Errorf("loss %v%% dir %d: measured %.1f%% over %d pings, want %.1f%% ± 6", tc.percent, tc.dir, loss, sent, tc.want)
		} else {
			t.Logf("loss %v%% dir %d: measured %.1f%% over %d pings (want %.1f%%)", tc.percent, tc.dir, loss, sent, tc.want)
		}
	}
	if sent, got := pingStats(t, n1, Addr(2, Private0), 200, time.Millisecond); got != sent {
		t.Errorf("after undo: %d of %d pings lost", sent-got, sent)
	}
	// 100% is a link that carries nothing.
	f, err := c.Loss(1, Private0, 100, Outbound)
	if err != nil {
		t.Fatal(err)
	}
	if sent, got := pingStats(t, n1, Addr(2, Private0), 50, time.Millisecond); got != 0 {
		t.Errorf("100%% loss: %d of %d pings answered", got, sent)
	}
	if err := f.Undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Loss(1, Private0, 101, Both); err == nil {
		t.Error("loss of 101% accepted")
	}
}

// lines counts the lines of a file.
func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func TestProcessStopContKill(t *testing.T) {
	t.Parallel()
	c := New(t, Options{Nodes: 1})
	n := c.Node(1)
	out := filepath.Join(t.TempDir(), "ticks")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := n.Command("/bin/sh", "-c", "while :; do echo tick; sleep 0.01; done")
	cmd.Stdout = f
	p, err := n.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	// The process runs in the node's namespace.
	want, _ := netnsInode(n.Path())
	eventually(t, "process enters the node namespace", func() bool {
		got, err := netnsInode(fmt.Sprintf("/proc/%d/ns/net", p.PID()))
		return err == nil && got == want
	})
	eventually(t, "process ticks", func() bool { return lines(t, out) > 5 })
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let a tick in flight land
	before := lines(t, out)
	time.Sleep(300 * time.Millisecond)
	if after := lines(t, out); after != before {
		t.Errorf("stopped process went on ticking: %d -> %d lines", before, after)
	}
	if err := p.Cont(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "process ticks again after SIGCONT", func() bool { return lines(t, out) > before+5 })
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := p.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("after Kill, Wait = %v, want death by SIGKILL", err)
	}
	if err := p.Stop(); err == nil {
		t.Error("Stop of an exited process succeeded")
	}
}

// cpuTicks returns the user+system clock ticks a process has used.
func cpuTicks(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s, nil
}

func TestSaturateCPUs(t *testing.T) {
	c := New(t, Options{Nodes: 1})
	const d = 1500 * time.Millisecond
	l, err := c.SaturateCPUs(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.PIDs()) != runtime.NumCPU() {
		t.Fatalf("%d busy loops for %d CPUs", len(l.PIDs()), runtime.NumCPU())
	}
	time.Sleep(time.Second)
	total := 0
	for _, pid := range l.PIDs() {
		ticks, err := cpuTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		if ticks == 0 {
			t.Errorf("busy loop %d used no CPU in 1s", pid)
		}
		total += ticks
	}
	// USER_HZ is 100 on Linux: one second of one CPU is 100 ticks. Alone, the loops take every
	// CPU; other test packages running at the same time take a share, so ask only for a tenth
	// of one CPU: enough to tell busy loops from processes that sleep.
	if total < 10 {
		t.Errorf("busy loops used %d ticks in 1s on %d CPUs, want >= 10", total, runtime.NumCPU())
	}
	select {
	case <-l.Done():
	case <-time.After(d + 5*time.Second):
		t.Fatal("saturation did not end after its duration")
	}
	for _, pid := range l.PIDs() {
		if processAlive(pid) {
			t.Errorf("busy loop %d outlived the saturation", pid)
		}
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	t.Parallel()
	RequireRoot(t)
	c, err := Build(Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Node(2).Start(c.Node(2).Command("sleep", "600"))
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	if _, err := c.Partition(PrivateLinks, []int{1}, []int{2}); err != nil {
		t.Error(err)
	}
	shared, err := c.SharedFile("disk0", 1<<20)
	if err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if processAlive(p.PID()) {
		t.Errorf("process %d survived Close", p.PID())
	}
	if _, err := os.Stat(shared); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("shared file %s survived Close: %v", shared, err)
	}
	assertGone(t, c.Name)
}

// assertGone checks that `ip netns list` and the root namespace's `ip link` show nothing of the
// cluster named name.
func assertGone(t *testing.T, name string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, name+"-") {
			t.Errorf("namespace left behind: %s", line)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), name+"-") {
		t.Errorf("mount left behind:\n%s", mounts)
	}
	out, err = exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	if regexp.MustCompile(`\d+: (n\dp\d|client|priv\d|pub)[@:]`).Match(out) {
		t.Errorf("harness interfaces in the root namespace:\n%s", out)
	}
}

func TestSweepRemovesLeftovers(t *testing.T) {
	RequireRoot(t)
	// A process that has exited stands in for a killed test run.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.Process.Pid
	if processAlive(pid) {
		t.Skipf("pid %d was reused at once", pid)
	}
	name := fmt.Sprintf("%s%d-1", Prefix, pid)
	if err := addNamespace(name + "-n1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNamespace(name + "-n1") })
	// A live cluster of this process must survive the sweep.
	live := New(t, Options{Nodes: 1})
	orphan := exec.Command("ip", "netns", "exec", name+"-n1", "sleep", "600")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- orphan.Wait() }()
	eventually(t, "orphan enters its namespace", func() bool {
		if !processAlive(orphan.Process.Pid) {
			return true // a concurrent sweep by another test binary was faster
		}
		a, err1 := netnsInode(fmt.Sprintf("/proc/%d/ns/net", orphan.Process.Pid))
		b, err2 := netnsInode(filepath.Join(netnsDir, name+"-n1"))
		return err1 == nil && err2 == nil && a == b
	})
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("the process inside the leftover namespace was not killed")
	}
	assertGone(t, name)
	if !reachable(t, live.Client, Addr(1, Public)) {
		t.Error("the sweep broke a live cluster")
	}
}
