package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/test/netns"
	"vigil/test/vcluster"
)

// DRD managed by the cluster database, end to end: real vigild processes serve a device on a
// shared backing file, placed through raft; vigil drd commands; the verifier as a client on a
// node that cannot serve the device (remote path) and on one that can (local path while it
// serves, remote otherwise), across relocations and kill -9 of the serving daemon.

var (
	drdBinOnce sync.Once
	drdBin     string
	drdBinErr  error
)

// vigilDRD builds cmd/vigil-drd once per process.
func vigilDRD(t *testing.T) string {
	t.Helper()
	drdBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-drd-bin-")
		if err != nil {
			drdBinErr = err
			return
		}
		drdBin = filepath.Join(dir, "vigil-drd")
		if out, err := exec.Command("go", "build", "-o", drdBin, "vigil/cmd/vigil-drd").CombinedOutput(); err != nil {
			drdBinErr = fmt.Errorf("go build vigil-drd: %w\n%s", err, out)
		}
	})
	if drdBinErr != nil {
		t.Fatal(drdBinErr)
	}
	return drdBin
}

func drdDevice(t *testing.T, n *vcluster.Node, name string) (admin.DRDDevice, []admin.DRDServed, error) {
	t.Helper()
	cl, err := n.Admin()
	if err != nil {
		return admin.DRDDevice{}, nil, err
	}
	defer cl.Close()
	l, err := cl.DRDList()
	if err != nil {
		return admin.DRDDevice{}, nil, err
	}
	for _, d := range l.Devices {
		if d.Name == name {
			return d, l.Served, nil
		}
	}
	return admin.DRDDevice{}, l.Served, fmt.Errorf("no device %s", name)
}

// waitServed waits until the device is served, ready, at an epoch above after, by a node
// whose daemon says it serves that epoch; it returns the device.
func waitServed(t *testing.T, c *vcluster.Cluster, via int, name string, after uint64) admin.DRDDevice {
	t.Helper()
	deadline := time.Now().Add(clusterWait)
	var last string
	for time.Now().Before(deadline) {
		d, _, err := drdDevice(t, c.Node(via), name)
		last = fmt.Sprintf("%+v %v", d, err)
		if err == nil && d.Ready && d.Node != 0 && d.Epoch > after {
			_, served, err := drdDevice(t, c.Node(d.Node), name)
			for _, s := range served {
				if err == nil && s.Device == name && s.Epoch == d.Epoch && s.Error == "" && s.Size > 0 {
					return d
				}
				last += fmt.Sprintf("; node %d serves %+v", d.Node, s)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("drd device %s not served at an epoch above %d: %s", name, after, last)
	return admin.DRDDevice{}
}

type verifierRun struct {
	proc *netns.Proc
	out  bytes.Buffer
	errb bytes.Buffer
}

func startVerifier(t *testing.T, c *vcluster.Cluster, node int, first uint64) *verifierRun {
	t.Helper()
	v := &verifierRun{}
	n := c.Node(node)
	cmd := n.NS.Command(vigilDRD(t), "verify", "--device", "data0", "--vigild", n.Socket, "--first-block", fmt.Sprint(first),
		"--blocks", "1024", "--workers", "8", "--duration", "5m", "--reconnect", "60s")
	cmd.Stdout, cmd.Stderr = &v.out, &v.errb
	p, err := n.NS.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	v.proc = p
	return v
}

// finish ends the run (SIGINT), waits for the final check and returns its counts.
func (v *verifierRun) finish(t *testing.T, name string) map[string]any {
	t.Helper()
	select {
	case <-v.proc.Done():
		t.Fatalf("verifier %s ended early: %v\n%s\n%s", name, v.proc.Cmd.ProcessState, v.out.String(), tailText(v.errb.String(), 30))
	default:
	}
	if err := v.proc.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.proc.Done():
	case <-time.After(90 * time.Second):
		t.Fatalf("verifier %s did not finish its check", name)
	}
	if !v.proc.Cmd.ProcessState.Success() {
		t.Fatalf("verifier %s failed: %v\n%s\n%s", name, v.proc.Cmd.ProcessState, v.out.String(), tailText(v.errb.String(), 40))
	}
	var res map[string]any
	if err := json.Unmarshal(v.out.Bytes(), &res); err != nil {
		t.Fatalf("verifier %s output %q: %v", name, v.out.String(), err)
	}
	return res
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestDRDManagedFailover(t *testing.T) {
	c := newRaftCluster(t, vcluster.Options{})
	lead := waitQuorum(t, c, 1, 2, 3)
	if out, err := apply(t, c, lead, "c.yaml", clusterYAML(3, "admin")); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	backing, err := c.Net.SharedFile("drd0.img", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	// Bad input is refused with the reason, and changes nothing.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drd", "create", "data0", "--backing", "drd0.img", "--nodes", "node1"}, `drd_devices.data0.backing: "drd0.img" is not an absolute path`},
		{[]string{"drd", "create", "data0", "--backing", backing, "--nodes", "node1,node9"}, `unknown node "node9"`},
		{[]string{"drd", "create", "data0", "--backing", backing, "--nodes", "node1", "--size", "12345"}, "not a multiple of the 4096-byte block"},
		{[]string{"drd", "relocate", "nope", "node2"}, `no device "nope"`},
		{[]string{"drd", "delete", "nope"}, `no device "nope"`},
	} {
		out, err := vigil(t, c.Node(3), tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("vigil %v: %v, %q; want %q", tc.args, err, out, tc.want)
		}
	}
	if out, err := vigil(t, c.Node(3), "drd", "list"); err != nil || !strings.Contains(out, "no drd devices") {
		t.Fatalf("drd list after bad input: %v\n%s", err, out)
	}

	// Defined through node 3, which cannot serve it; placed on node 1 (the first of its nodes).
	if out, err := vigil(t, c.Node(3), "drd", "create", "data0", "--backing", backing, "--nodes", "node1,node2", "--size", "32M"); err != nil {
		t.Fatalf("drd create: %v\n%s", err, out)
	}
	d := waitServed(t, c, 3, "data0", 0)
	if d.Node != 1 || d.Size != 32<<20 {
		t.Fatalf("placed %+v, want node 1 with 32 MiB", d)
	}
	if out, err := vigil(t, c.Node(2), "drd", "list"); err != nil || !strings.Contains(out, "data0   32M   "+backing+"  node1,node2  1 node1") {
		t.Errorf("drd list: %v\n%s", err, out)
	}
	if out, err := vigil(t, c.Node(1), "drd", "status", "data0"); err != nil || !strings.Contains(out, "Here:         serving epoch") {
		t.Errorf("drd status on the serving node: %v\n%s", err, out)
	}

	// Verifiers: one on node 3 (remote path only), one on node 1 (local path while node 1 serves).
	remote := startVerifier(t, c, 3, 0)
	local := startVerifier(t, c, 1, 4096)
	time.Sleep(time.Second)

	const faults = 20
	kills, moves := 0, 0
	epoch := d.Epoch
	for i := range faults {
		cur, _, err := drdDevice(t, c.Node(3), "data0")
		if err != nil {
			t.Fatal(err)
		}
		other := 3 - cur.Node // 1 <-> 2
		if i%2 == 0 {
			out, err := vigil(t, c.Node(3), "drd", "relocate", "data0", fmt.Sprintf("node%d", other))
			if err != nil {
				t.Fatalf("fault %d: relocate to node %d: %v\n%s", i, other, err, out)
			}
			moves++
		} else {
			// kill -9 of the serving daemon: the leader moves the device to the survivor.
			if err := c.Node(cur.Node).Kill(); err != nil {
				t.Fatal(err)
			}
			kills++
			d = waitServed(t, c, 3, "data0", cur.Epoch)
			if d.Node != other {
				t.Fatalf("fault %d: after node %d was killed the device is on node %d", i, cur.Node, d.Node)
			}
			if err := c.Node(cur.Node).Start(); err != nil {
				t.Fatal(err)
			}
			waitQuorum(t, c, 1, 2, 3)
		}
		d = waitServed(t, c, 3, "data0", cur.Epoch)
		if d.Node != other {
			t.Fatalf("fault %d: device on node %d, want %d", i, d.Node, other)
		}
		epoch = d.Epoch
		time.Sleep(300 * time.Millisecond) // I/O on the new server
	}
	r := remote.finish(t, "on node 3")
	l := local.finish(t, "on node 1")
	t.Logf("%d relocations, %d kills, epoch %d; verifier on node 3: %v; on node 1: %v", moves, kills, epoch, r, l)
	for _, res := range []map[string]any{r, l} {
		if res["writes"].(float64) < 100 || res["failed"].(float64) != 0 {
			t.Errorf("verifier counts %v: too few writes, or failed calls", res)
		}
	}
	if epoch < d.Epoch || epoch < faults+1 {
		t.Errorf("epoch %d after %d faults", epoch, faults)
	}

	// Delete: the server stops, the device is gone.
	if out, err := vigil(t, c.Node(2), "drd", "delete", "data0"); err != nil {
		t.Fatalf("drd delete: %v\n%s", err, out)
	}
	deadline := time.Now().Add(clusterWait)
	for {
		_, served, err := drdDevice(t, c.Node(d.Node), "data0")
		if err != nil && len(served) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d still serves a deleted device: %v %+v", d.Node, err, served)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Without quorum, a change is refused with the reason.
	if err := c.Node(2).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(3).Kill(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(clusterWait)
	for {
		st, err := clusterStatus(c.Node(1))
		if err == nil && !st.Quorate {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node 1 alone still quorate: %+v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := vigil(t, c.Node(1), "drd", "create", "data1", "--backing", backing, "--nodes", "node1")
	if err == nil || !strings.Contains(out, "no quorum") {
		t.Errorf("drd create without quorum: %v\n%s", err, out)
	}
}
