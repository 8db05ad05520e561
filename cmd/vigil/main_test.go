package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/internal/nodeconf"
)

// now is the injected clock of every test.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

// parse parses args like main does, recording kong's exit status instead of exiting.
func parse(t *testing.T, args ...string) (cli *CLI, command string, exit int, stdout, stderr string, err error) {
	t.Helper()
	cli = &CLI{}
	var out, errOut bytes.Buffer
	exit = -1
	parser, err := newParser(cli, &out, &errOut, clock, func(code int) { exit = code })
	if err != nil {
		t.Fatalf("kong.New: %v", err)
	}
	ctx, err := parser.Parse(args)
	if err != nil {
		parser.FatalIfErrorf(err)
	} else {
		command = ctx.Command()
	}
	return cli, command, exit, out.String(), errOut.String(), err
}

func TestParse(t *testing.T) {
	t.Setenv("VIGIL_SOCKET", "")
	os.Unsetenv("VIGIL_SOCKET")
	for _, tc := range []struct {
		args       []string
		command    string
		socket     string
		json       bool
		socketFrom string // VIGIL_SOCKET, if set
	}{
		{args: []string{"status"}, command: "status", socket: admin.DefaultSocketPath},
		{args: []string{"nodes", "--json"}, command: "nodes", socket: admin.DefaultSocketPath, json: true},
		{args: []string{"--json", "links"}, command: "links list", socket: admin.DefaultSocketPath, json: true},
		{args: []string{"links", "clear", "priv0"}, command: "links clear <link>", socket: admin.DefaultSocketPath},
		{args: []string{"counters", "--socket", "/tmp/v.sock"}, command: "counters", socket: "/tmp/v.sock"},
		{args: []string{"--socket=/tmp/v.sock", "version"}, command: "version", socket: "/tmp/v.sock"},
		{args: []string{"version", "--json"}, command: "version", socket: admin.DefaultSocketPath, json: true},
		{args: []string{"nodes"}, command: "nodes", socket: "/env/v.sock", socketFrom: "/env/v.sock"},
		{args: []string{"nodes", "--socket", "/flag/v.sock"}, command: "nodes", socket: "/flag/v.sock", socketFrom: "/env/v.sock"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			if tc.socketFrom != "" {
				t.Setenv("VIGIL_SOCKET", tc.socketFrom)
			}
			cli, command, exit, _, _, err := parse(t, tc.args...)
			if err != nil || exit != -1 {
				t.Fatalf("parse: %v (exit %d)", err, exit)
			}
			if command != tc.command || cli.Socket != tc.socket || cli.JSON != tc.json {
				t.Errorf("got command %q socket %q json %v; want %q %q %v", command, cli.Socket, cli.JSON, tc.command, tc.socket, tc.json)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "vigil: error: unexpected argument frobnicate"},
		{[]string{"nodes", "--verbose"}, "vigil: error: unknown flag --verbose"},
		{[]string{"--jsn", "nodes"}, "vigil: error: unknown flag --jsn, did you mean \"--json\"?"},
		{[]string{}, "vigil: error: expected one of"},
		{[]string{"links", "extra"}, "vigil: error: unexpected argument extra"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, exit, stdout, stderr, err := parse(t, tc.args...)
			if err == nil || exit == 0 || exit == -1 {
				t.Fatalf("parse succeeded or exited %d: %v", exit, err)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q lacks %q", stderr, tc.want)
			}
			if !strings.Contains(stdout, "Usage: vigil") {
				t.Errorf("no usage on error; stdout %q", stdout)
			}
			// run, as main uses it, exits the same way.
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut, clock); code != exit || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("run: exit %d, stderr %q; want %d and %q", code, errOut.String(), exit, tc.want)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, &out, &errOut, clock); code != 0 {
		t.Fatalf("--help exited %d: %s", code, errOut.String())
	}
	for _, want := range []string{"status", "nodes", "links", "counters", "version", "--socket=PATH", "$VIGIL_SOCKET", admin.DefaultSocketPath} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}

// fake serves data whose times are relative to now.
type fake struct{}

func (fake) Status() admin.Status {
	return admin.Status{
		Cluster: "prod", ClusterID: 7, NodeID: 1, NodeName: "alpha", Mode: "ebpf",
		XDPMode:     map[string]string{"veth-b": "generic", "veth-a": "native"},
		Incarnation: 42, StartedAt: now.Add(-12*time.Minute - 500*time.Millisecond),
		HeartbeatInterval: 10 * time.Millisecond, DetectTime: 30 * time.Millisecond, Version: "v0.1.0",
	}
}

func (fake) Nodes() []admin.NodeStatus {
	return []admin.NodeStatus{
		{ID: 3, Name: "gamma", State: admin.NodeDown, Links: 2, Since: now.Add(-3 * time.Second), LastSeen: now.Add(-3200 * time.Millisecond)},
		{ID: 1, Name: "alpha", Self: true, State: admin.NodeSelf},
		{ID: 2, Name: "beta", State: admin.NodeAlive, LinksUp: 2, Links: 2, Since: now.Add(-12 * time.Minute), LastSeen: now.Add(-400 * time.Microsecond)},
		{ID: 4, Name: "delta", State: admin.NodeStalled, Jeopardy: true, LinksUp: 1, Links: 2, Since: now.Add(-90 * time.Minute), LastSeen: now.Add(-2 * time.Second)},
		{ID: 5, Name: "epsilon", State: admin.NodeUnknown, Links: 2},
	}
}

func (fake) Links() []admin.LinkStatus {
	return []admin.LinkStatus{
		{Peer: 3, PeerName: "gamma", Link: 0, LinkName: "veth-a", State: admin.LinkDown, Since: now.Add(-3 * time.Second),
			LastSeen: now.Add(-3200 * time.Millisecond), RTTP50: 41 * time.Microsecond, RTTP99: 95 * time.Microsecond,
			Received: 90000, Echoes: 89000, Lost: 1000, LossPercent: 1.1111},
		{Peer: 2, PeerName: "beta", Link: 1, LinkName: "veth-b", State: admin.LinkUp, Since: now.Add(-12 * time.Minute),
			LastSeen: now.Add(-900 * time.Microsecond), RTTP50: 120 * time.Microsecond, RTTP99: 2500 * time.Microsecond,
			SRTT: 130 * time.Microsecond, Received: 72000, Echoes: 71990, Lost: 5, LossPercent: 0.0069},
		{Peer: 2, PeerName: "beta", Link: 0, LinkName: "veth-a", State: admin.LinkUp, Since: now.Add(-12 * time.Minute),
			LastSeen: now.Add(-400 * time.Microsecond), RTTP50: 38 * time.Microsecond, RTTP99: 7 * time.Microsecond / 2,
			SRTT: 40 * time.Microsecond, Received: 72000, Echoes: 72000},
		{Peer: 5, Link: 0, State: admin.LinkDown},
	}
}

func (fake) Counters() admin.Counters {
	return admin.Counters{"wrong_cluster": 2, "bad_mac": 17, "replay": 0}
}

// serveFake starts an admin server with the fake provider and returns its socket path.
func serveFake(t *testing.T) string { return serveProvider(t, fake{}) }

// serveProvider serves p on an admin socket in a temporary directory until the test ends, and
// returns the socket's path.
func serveProvider(t *testing.T, p admin.Provider) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vigild.sock")
	s := &admin.Server{Provider: p, Log: slog.New(slog.DiscardHandler)}
	if err := s.Listen(path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// runOK runs vigil with args and returns its standard output.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut, clock); code != 0 {
		t.Fatalf("vigil %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
	}
	if errOut.Len() > 0 {
		t.Errorf("vigil %s wrote to stderr: %s", strings.Join(args, " "), errOut.String())
	}
	return out.String()
}

func TestTables(t *testing.T) {
	sock := serveFake(t)
	for _, tc := range []struct {
		command string
		want    string
	}{
		{"status", `
Cluster:      prod (id 7)
Node:         1 alpha
Mode:         ebpf
XDP:          veth-a native, veth-b generic
Incarnation:  42
Started:      2026-03-01 11:47:59 UTC (12m ago)
Heartbeat:    every 10ms, failure detected within 30ms
Version:      v0.1.0
`},
		{"nodes", `
NODE  NAME     STATE    JEOPARDY  LINKS  SINCE      LAST SEEN
1     alpha    self     -         -      -          -
2     beta     alive    no        2/2    12m ago    0.4ms ago
3     gamma    down     -         0/2    3s ago     3.2s ago
4     delta    stalled  yes       1/2    1h30m ago  2s ago
5     epsilon  unknown  -         0/2    -          never
`},
		{"links", `
PEER   LINK    STATE  SINCE    LAST SEEN  RTT P50  RTT P99  LOSS
beta   veth-a  up     12m ago  0.4ms ago  38µs     3.5µs    0%
beta   veth-b  up     12m ago  0.9ms ago  0.12ms   2.5ms    0.01%
gamma  veth-a  down   3s ago   3.2s ago   41µs     95µs     1.1%
5      0       down   -        never      -        -        0%
`},
		{"counters", `
COUNTER        VALUE
bad_mac        17
replay         0
wrong_cluster  2
`},
	} {
		t.Run(tc.command, func(t *testing.T) {
			got := runOK(t, "--socket", sock, tc.command)
			if want := strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("vigil %s:\n%s\nwant:\n%s", tc.command, got, want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	sock := serveFake(t)
	check := func(command string, got, want any) {
		t.Helper()
		out := runOK(t, command, "--socket", sock, "--json")
		if !strings.HasPrefix(out, "{\n  \"") && !strings.HasPrefix(out, "[\n  {\n    \"") {
			t.Errorf("vigil %s --json is not pretty-printed:\n%s", command, out)
		}
		if err := json.Unmarshal([]byte(out), got); err != nil {
			t.Fatalf("vigil %s --json: %v\n%s", command, err, out)
		}
		if !reflect.DeepEqual(reflect.ValueOf(got).Elem().Interface(), want) {
			t.Errorf("vigil %s --json decodes to %+v, want %+v", command, got, want)
		}
	}
	check("status", new(admin.Status), fake{}.Status())
	check("nodes", new([]admin.NodeStatus), fake{}.Nodes())
	check("links", new([]admin.LinkStatus), fake{}.Links())
	check("counters", new(admin.Counters), fake{}.Counters())

	// Field names are the API's: snake_case, durations in nanoseconds.
	out := runOK(t, "links", "--socket", sock, "--json")
	for _, want := range []string{`"peer_name": "gamma"`, `"rtt_p50_ns": 41000`, `"since": "2026-03-01T11:59:57Z"`} {
		if !strings.Contains(out, want) {
			t.Errorf("vigil links --json lacks %s:\n%s", want, out)
		}
	}
}

func TestVersion(t *testing.T) {
	if out := runOK(t, "version"); !strings.HasPrefix(out, "vigil ") {
		t.Errorf("vigil version: %q", out)
	}
	var v struct{ Version string }
	if err := json.Unmarshal([]byte(runOK(t, "version", "--json")), &v); err != nil || v.Version == "" {
		t.Errorf("vigil version --json: %+v, %v", v, err)
	}
}

func TestDaemonNotRunning(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "vigild.sock")
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for _, tc := range []struct{ socket, want string }{
		{missing, "vigil: vigild is not running (no socket at " + missing + "); start it with: vigild --config /etc/vigil/node.yaml\n"},
		{stale, "vigil: vigild is not running (nothing listens on " + stale + "); start it with: vigild --config /etc/vigil/node.yaml\n"},
	} {
		for _, command := range []string{"status", "nodes", "links", "counters"} {
			var out, errOut bytes.Buffer
			code := run([]string{command, "--socket", tc.socket}, &out, &errOut, clock)
			if code != 1 || errOut.String() != tc.want || out.Len() != 0 {
				t.Errorf("vigil %s with %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", command, tc.socket, code, out.String(), errOut.String(), tc.want)
			}
		}
	}
}

// TestDependencies keeps the CLI free of the kernel door: it must not link cilium/ebpf, the
// dataplane or the heartbeat plane.
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", "vigil/cmd/vigil")
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	for _, dep := range deps {
		for _, banned := range []string{"github.com/cilium/ebpf", "vigil/dataplane", "vigil/heartbeat"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") {
				t.Errorf("vigil/cmd/vigil depends on %s", dep)
			}
		}
	}
}

func TestKeygen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cluster.key")
	if out := runOK(t, "keygen", path); !strings.Contains(out, path) {
		t.Errorf("vigil keygen: %q", out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, fi.Mode())
	}
	if _, err := nodeconf.LoadKey(path); err != nil {
		t.Errorf("generated key does not load: %v", err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"keygen", path}, &out, &errOut, clock); code != 1 || !strings.Contains(errOut.String(), "exist") {
		t.Errorf("keygen over an existing key: exit %d, stderr %q", code, errOut.String())
	}
}
