package verify_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vigil/drd"
	"vigil/drd/verify"
	"vigil/drd/wire"
	"vigil/test/netns"
)

func TestBlockFormat(t *testing.T) {
	buf := make([]byte, verify.BlockSize)
	if g, err := verify.Parse(buf, 5); g != 0 || err != nil {
		t.Fatalf("zero block: %d, %v", g, err)
	}
	verify.Fill(buf, 5, 9)
	if g, err := verify.Parse(buf, 5); g != 9 || err != nil {
		t.Fatalf("block 5 gen 9: %d, %v", g, err)
	}
	if _, err := verify.Parse(buf, 6); err == nil {
		t.Fatal("block 5's data accepted as block 6")
	}
	buf[100] ^= 1
	if _, err := verify.Parse(buf, 5); err == nil {
		t.Fatal("corrupt block accepted")
	}
	torn := make([]byte, verify.BlockSize)
	verify.Fill(torn, 5, 10)
	verify.Fill(buf, 5, 9)
	copy(torn[2048:], buf[2048:]) // half of each generation
	if _, err := verify.Parse(torn, 5); err == nil {
		t.Fatal("torn block accepted")
	}
}

// buildServer builds cmd/vigil-drd.
func buildServer(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "vigil-drd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "vigil/cmd/vigil-drd").CombinedOutput()
	if err != nil {
		t.Fatalf("build vigil-drd: %v\n%s", err, out)
	}
	return bin
}

// TestKillsAndRelocations runs two verifiers, one on node 2 (remote path) and one on node 1
// (local path while the server runs there, remote otherwise), while the server process is
// killed with SIGKILL 24 times: restarted on the same node, or relocated between nodes 1 and 3
// (the backing file stands in for a disk both reach). Afterwards every acknowledged write is on
// the disk.
func TestKillsAndRelocations(t *testing.T) {
	netns.RequireRoot(t)
	bin := buildServer(t)
	c := netns.New(t, netns.Options{Nodes: 3})
	// The backing lives on a file system with O_DIRECT (/var/tmp, not a possible tmpfs /tmp);
	// every namespace sees the same file, as every node would see a shared disk.
	dir, err := os.MkdirTemp("/var/tmp", "drd-verify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	backing := filepath.Join(dir, "disk")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, 16<<20); err != nil {
		t.Fatal(err)
	}
	const port = 7790
	addr := func(node int) string {
		return net.JoinHostPort(netns.Addr(node, netns.Private0).String(), fmt.Sprint(port))
	}
	sock := func(node int) string { return filepath.Join(dir, fmt.Sprintf("node%d.sock", node)) }
	var srv *netns.Proc
	start := func(node int) uint64 {
		t.Helper()
		cmd := c.Node(node).Command(bin, "serve", "--device", "d0="+backing, "--epoch-file", filepath.Join(dir, "epoch"),
			"--local", sock(node), "--listen", addr(node))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if srv, err = c.Node(node).Start(cmd); err != nil {
			t.Fatal(err)
		}
		ready := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			ready <- line
		}()
		select {
		case line := <-ready:
			var epoch uint64
			if _, err := fmt.Sscanf(line, "ready epoch=%d", &epoch); err != nil {
				t.Fatalf("server on node %d: %q: %v\n%s", node, line, err, stderr.String())
			}
			return epoch
		case <-time.After(30 * time.Second):
			t.Fatalf("server on node %d not ready\n%s", node, stderr.String())
		}
		return 0
	}
	// A dialer that runs inside a node's namespace and tries the nodes that may serve.
	dialFrom := func(node int) func(ctx context.Context) (wire.Conn, error) {
		return func(ctx context.Context) (wire.Conn, error) {
			var conn net.Conn
			err := c.Node(node).Do(func() error {
				var errs []string
				for _, n := range []int{1, 3} {
					d := net.Dialer{Timeout: 200 * time.Millisecond}
					cn, err := d.DialContext(ctx, "tcp", addr(n))
					if err == nil {
						conn = cn
						return nil
					}
					errs = append(errs, err.Error())
				}
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			})
			if err != nil {
				return nil, err
			}
			return wire.NewFrameConn(conn), nil
		}
	}
	start(1)
	open := func(opt drd.Options) *drd.Device {
		opt.ReconnectTimeout, opt.QueueDepth = 20*time.Second, 16
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d, err := drd.Open(ctx, "d0", opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	remote := open(drd.Options{Dial: dialFrom(2)})
	local := open(drd.Options{LocalSocket: sock(1), Dial: dialFrom(1)})
	if remote.Path() != "remote" || local.Path() != "local" {
		t.Fatalf("paths %s and %s", remote.Path(), local.Path())
	}
	vr, err := verify.New(remote, verify.Config{FirstBlock: 0, Blocks: 1024, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	vl, err := verify.New(local, verify.Config{FirstBlock: 1024, Blocks: 1024, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- vr.Run(ctx) }()
	go func() { errs <- vl.Run(ctx) }()

	node, kills, relocations := 1, 0, 0
	var lastEpoch uint64
	for i := range 24 {
		time.Sleep(150 * time.Millisecond)
		if err := srv.Kill(); err != nil {
			t.Fatal(err)
		}
		kills++
		if i%3 == 2 { // every third kill moves the device to the other node
			node = 4 - node
			relocations++
		}
		lastEpoch = start(node)
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("during the run: %v", err)
		}
	}
	for name, v := range map[string]*verify.Verifier{"remote": vr, "local": vl} {
		if err := v.Check(); err != nil {
			t.Errorf("%s verifier: %v", name, err)
		}
		t.Logf("%s verifier: %d writes, %d reads, %d failed, %d blocks written", name,
			v.Stats.Writes.Load(), v.Stats.Reads.Load(), v.Stats.Failed.Load(), v.Acked())
		if v.Stats.Failed.Load() != 0 {
			t.Errorf("%s verifier: %d calls failed; clients should have re-sent them", name, v.Stats.Failed.Load())
		}
		if v.Stats.Writes.Load() == 0 {
			t.Errorf("%s verifier wrote nothing", name)
		}
	}
	if remote.Epoch() != lastEpoch || local.Epoch() != lastEpoch {
		t.Errorf("clients at epochs %d and %d, server at %d", remote.Epoch(), local.Epoch(), lastEpoch)
	}
	t.Logf("%d kills, %d relocations, final epoch %d, local client on the %s path", kills, relocations, lastEpoch, local.Path())
}
