package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// fakeProvider serves fixed data.
type fakeProvider struct {
	status   Status
	nodes    []NodeStatus
	links    []LinkStatus
	counters Counters
}

func (f *fakeProvider) Status() Status      { return f.status }
func (f *fakeProvider) Nodes() []NodeStatus { return f.nodes }
func (f *fakeProvider) Links() []LinkStatus { return f.links }
func (f *fakeProvider) Counters() Counters  { return f.counters }

func newFake() *fakeProvider {
	return &fakeProvider{
		status: Status{
			Cluster: "prod", ClusterID: 7, NodeID: 1, NodeName: "alpha", Mode: "ebpf",
			XDPMode:     map[string]string{"eth1": "native", "eth2": "generic"},
			Incarnation: 42, StartedAt: t0, HeartbeatInterval: 10 * time.Millisecond,
			DetectTime: 30 * time.Millisecond, Version: "v0.1.0",
		},
		nodes: []NodeStatus{
			{ID: 1, Name: "alpha", Self: true, State: NodeSelf},
			{ID: 2, Name: "beta", State: NodeAlive, LinksUp: 2, Links: 2, Since: t0, LastSeen: t0.Add(time.Minute)},
			{ID: 3, Name: "gamma", State: NodeDown, LinksUp: 0, Links: 2, Since: t0.Add(time.Second)},
		},
		links: []LinkStatus{
			{Peer: 2, PeerName: "beta", Link: 0, LinkName: "eth1", State: LinkUp, Since: t0, LastSeen: t0.Add(time.Minute),
				RTTP50: 38 * time.Microsecond, RTTP99: 120 * time.Microsecond, SRTT: 41 * time.Microsecond,
				Received: 1000, Echoes: 998, Lost: 2, LossPercent: 0.2},
		},
		counters: Counters{"bad_mac": 3, "wrong_cluster": 0},
	}
}

// startServer serves p on a socket in a fresh temporary directory and returns the server.
func startServer(t *testing.T, p Provider, configure func(*Server)) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "vigild.sock")
	s := &Server{Provider: p, Log: slog.New(slog.DiscardHandler)}
	if configure != nil {
		configure(s)
	}
	if err := s.Listen(path); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	serve(t, s)
	return s
}

// serve runs s.Serve until the test ends and checks that it returns nil.
func serve(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// rawConn is a connection that speaks the wire protocol by hand.
type rawConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) readLine() (string, error) {
	return c.r.ReadString('\n')
}

// roundTrip sends line (a newline is added) and decodes the response.
func (c *rawConn) roundTrip(line string) response {
	c.t.Helper()
	c.send(line + "\n")
	got, err := c.readLine()
	if err != nil {
		c.t.Fatalf("read response to %q: %v", line, err)
	}
	var resp response
	if err := json.Unmarshal([]byte(got), &resp); err != nil {
		c.t.Fatalf("response %q is not JSON: %v", got, err)
	}
	return resp
}

func (c *rawConn) expectEOF() {
	c.t.Helper()
	if line, err := c.readLine(); !errors.Is(err, io.EOF) {
		c.t.Fatalf("want the server to close the connection, got %q, %v", line, err)
	}
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRoundTrip(t *testing.T) {
	p := newFake()
	s := startServer(t, p, nil)
	c := dial(t, s.Path())

	st, err := c.Status()
	if err != nil || !reflect.DeepEqual(st, p.status) {
		t.Errorf("Status() = %+v, %v; want %+v", st, err, p.status)
	}
	nodes, err := c.Nodes()
	if err != nil || !reflect.DeepEqual(nodes, p.nodes) {
		t.Errorf("Nodes() = %+v, %v; want %+v", nodes, err, p.nodes)
	}
	links, err := c.Links()
	if err != nil || !reflect.DeepEqual(links, p.links) {
		t.Errorf("Links() = %+v, %v; want %+v", links, err, p.links)
	}
	ctr, err := c.Counters()
	if err != nil || !reflect.DeepEqual(ctr, p.counters) {
		t.Errorf("Counters() = %+v, %v; want %+v", ctr, err, p.counters)
	}
}

func TestWireFormat(t *testing.T) {
	s := startServer(t, newFake(), nil)
	c := dialRaw(t, s.Path())
	for _, tc := range []struct {
		method string
		want   []string
		absent []string
	}{
		{"status", []string{`"cluster_id":7`, `"started_at":"2026-03-01T12:00:00.123456789Z"`,
			`"heartbeat_interval_ns":10000000`, `"detect_time_ns":30000000`, `"xdp_mode":{"eth1":"native","eth2":"generic"}`}, nil},
		{"nodes", []string{`"links_up":2`, `"since":"2026-03-01T12:00:00.123456789Z"`, `"last_seen":"2026-03-01T12:01:00.123456789Z"`},
			[]string{`"since":"0001`, `"last_seen":"0001`}},
		{"links", []string{`"peer_name":"beta"`, `"rtt_p50_ns":38000`, `"rtt_p99_ns":120000`, `"srtt_ns":41000`, `"loss_percent":0.2`}, nil},
		{"counters", []string{`{"result":{"bad_mac":3,"wrong_cluster":0}}`}, nil},
	} {
		c.send(`{"method":"` + tc.method + `"}` + "\n")
		line, err := c.readLine()
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: response lacks %s:\n%s", tc.method, w, line)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(line, a) {
				t.Errorf("%s: response has %s:\n%s", tc.method, a, line)
			}
		}
	}
}

func TestEmptyResultsAreNotNull(t *testing.T) {
	s := startServer(t, &fakeProvider{}, nil)
	c := dialRaw(t, s.Path())
	for method, want := range map[string]string{"nodes": "[]", "links": "[]", "counters": "{}"} {
		if got := c.roundTrip(`{"method":"` + method + `"}`); string(got.Result) != want {
			t.Errorf("%s: result %s, want %s", method, got.Result, want)
		}
	}
}

func TestSocketFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "vigil")
	path := filepath.Join(dir, "vigild.sock")
	s := &Server{Provider: newFake()}
	if err := s.Listen(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want socket 0600", fi.Mode())
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v (%v), want 0755", di.Mode(), err)
	}
	serve(t, s)
	dial(t, path) // served under its final name
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// staleSocket leaves a socket file at path that nobody listens on, as a killed daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigild.sock")
	staleSocket(t, path)
	if _, err := Dial(path); !errors.Is(err, ErrDaemonNotRunning) {
		t.Fatalf("Dial to a stale socket: %v, want ErrDaemonNotRunning", err)
	}
	s := &Server{Provider: newFake()}
	if err := s.Listen(path); err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	serve(t, s)
	if _, err := dial(t, path).Status(); err != nil {
		t.Fatal(err)
	}
}

func TestAlreadyRunning(t *testing.T) {
	first := startServer(t, newFake(), nil)
	second := &Server{Provider: newFake()}
	err := second.Listen(first.Path())
	if !errors.Is(err, ErrDaemonRunning) {
		t.Fatalf("second Listen: %v, want ErrDaemonRunning", err)
	}
	if !strings.Contains(err.Error(), first.Path()) {
		t.Errorf("error %q does not name the socket", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	// The first daemon keeps its socket.
	if _, err := dial(t, first.Path()).Nodes(); err != nil {
		t.Fatalf("first server after the second one failed: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigild.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{Provider: newFake()}
	if err := s.Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("Listen touched a regular file")
	}
}

func TestBadRequestsKeepConnection(t *testing.T) {
	s := startServer(t, newFake(), nil)
	c := dialRaw(t, s.Path())
	for _, tc := range []struct{ line, want string }{
		{`{"method":`, "invalid JSON"},
		{`not json`, "invalid JSON"},
		{`{"method":"reboot"}`, `unknown method "reboot"; known methods: cluster, config.apply, config.backup, config.diff, config.restore, config.show, counters, drd.create, drd.delete, drd.list, drd.locate, drd.relocate, links, links.clear, log, node.add, node.remove, nodes, status`},
		{`{"method":"links","verbose":true}`, `method "links": unknown field "verbose"`},
		{`{"Method":"links"}`, `missing "method"`},
		{`{"method":"links","params":{"peer":2}}`, `method "links": takes no params`},
		{`{"method":"links","params":[1]}`, `"params" must be a JSON object`},
		{`{"method":3}`, `"method" must be a string`},
		{`["status"]`, "want a JSON object"},
		{`{"method":"status"} {"method":"status"}`, "invalid JSON"},
		{``, "empty request"},
	} {
		resp := c.roundTrip(tc.line)
		if !strings.Contains(resp.Error, tc.want) || resp.Result != nil {
			t.Errorf("%q: got error %q result %s, want error containing %q", tc.line, resp.Error, resp.Result, tc.want)
		}
	}
	for _, ok := range []string{`{"method":"status"}`, `{"method":"nodes","params":{}}`, `{"method":"links","params":null}`, " {\"method\":\"counters\"}\r"} {
		if resp := c.roundTrip(ok); resp.Error != "" || resp.Result == nil {
			t.Errorf("%q after bad requests: %+v", ok, resp)
		}
	}
}

func TestOversizedLine(t *testing.T) {
	s := startServer(t, newFake(), nil)

	// Exactly the limit is fine.
	c := dialRaw(t, s.Path())
	req := `{"method":"status"}`
	if resp := c.roundTrip(req + strings.Repeat(" ", MaxRequestLine-len(req))); resp.Error != "" {
		t.Fatalf("line of exactly %d bytes: %s", MaxRequestLine, resp.Error)
	}

	// One byte more is answered with an error, then the connection is closed.
	// Written concurrently: the server may close before reading all of it, failing the write.
	go io.WriteString(c.Conn, req+strings.Repeat(" ", MaxRequestLine+1-len(req))+"\n")
	line, err := c.readLine()
	if err != nil {
		t.Fatal(err)
	}
	var resp response
	if err := json.Unmarshal([]byte(line), &resp); err != nil || !strings.Contains(resp.Error, fmt.Sprintf("longer than %d bytes", MaxRequestLine)) {
		t.Fatalf("oversized line: %q, %v", line, err)
	}
	// The server closes with the rest of the line unread, which the kernel may report as a reset.
	if line, err := c.readLine(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed, got %q, %v", line, err)
	}

	// The server is fine.
	if _, err := dial(t, s.Path()).Status(); err != nil {
		t.Fatal(err)
	}
}

func TestLastLineWithoutNewline(t *testing.T) {
	s := startServer(t, newFake(), nil)
	c := dialRaw(t, s.Path())
	c.send(`{"method":"counters"}`)
	c.Conn.(*net.UnixConn).CloseWrite()
	line, err := c.readLine()
	if err != nil || !strings.HasPrefix(line, `{"result":`) {
		t.Fatalf("got %q, %v", line, err)
	}
	c.expectEOF()
}

func TestConcurrencyCap(t *testing.T) {
	s := startServer(t, newFake(), func(s *Server) { s.MaxConns = 2 })
	a, b := dialRaw(t, s.Path()), dialRaw(t, s.Path())
	for _, c := range []*rawConn{a, b} {
		if resp := c.roundTrip(`{"method":"status"}`); resp.Error != "" {
			t.Fatal(resp.Error)
		}
	}

	over := dialRaw(t, s.Path())
	line, err := over.readLine()
	if err != nil || !strings.Contains(line, "too many admin connections (limit 2)") {
		t.Fatalf("connection over the cap: %q, %v", line, err)
	}
	over.expectEOF()

	// The admitted connections still work, and a freed slot is reused.
	if resp := b.roundTrip(`{"method":"nodes"}`); resp.Error != "" {
		t.Fatal(resp.Error)
	}
	a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(s.Path())
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Status()
		c.Close()
		if err == nil {
			break
		}
		// Still over the cap: the refusal line, or, when the server's refusal and close beat
		// the request, a write into the closed socket.
		refused := strings.Contains(err.Error(), "too many") || strings.Contains(err.Error(), "broken pipe") ||
			strings.Contains(err.Error(), "connection reset")
		if !refused || time.Now().After(deadline) {
			t.Fatalf("after freeing a slot: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestIdleTimeout(t *testing.T) {
	s := startServer(t, newFake(), func(s *Server) { s.IdleTimeout = 50 * time.Millisecond })
	c := dialRaw(t, s.Path())
	c.expectEOF()
}

type panicProvider struct{ fakeProvider }

func (panicProvider) Links() []LinkStatus { panic("boom") }

// syncBuffer is a bytes.Buffer safe for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProviderPanicIsContained(t *testing.T) {
	var logs syncBuffer
	s := startServer(t, &panicProvider{*newFake()}, func(s *Server) { s.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	c := dialRaw(t, s.Path())
	if resp := c.roundTrip(`{"method":"links"}`); !strings.Contains(resp.Error, "internal error") {
		t.Fatalf("got %+v", resp)
	}
	c.expectEOF()
	if !strings.Contains(logs.String(), "panic") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged: %s", logs.String())
	}
	if _, err := dial(t, s.Path()).Status(); err != nil {
		t.Fatal(err)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigild.sock")
	s := &Server{Provider: newFake()}
	if err := s.Listen(path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	c := dialRaw(t, path) // an open connection must not keep Serve alive
	if resp := c.roundTrip(`{"method":"status"}`); resp.Error != "" {
		t.Fatal(resp.Error)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Serve returned: %v", err)
	}
	c.expectEOF()
}

func TestServeBeforeListen(t *testing.T) {
	if err := (&Server{}).Serve(context.Background()); err == nil {
		t.Fatal("Serve without Listen succeeded")
	}
}

func TestDialNotRunning(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "missing.sock"))
	if !errors.Is(err, ErrDaemonNotRunning) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Dial to a missing socket: %v", err)
	}
}

func TestDialPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may connect to any socket; run as an unprivileged user to test permission errors")
	}
	s := startServer(t, newFake(), nil)
	if err := os.Chmod(s.Path(), 0o000); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(s.Path())
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "root") {
		t.Fatalf("Dial without permission: %v", err)
	}
}

func TestClientReportsServerError(t *testing.T) {
	s := startServer(t, &panicProvider{*newFake()}, nil)
	_, err := dial(t, s.Path()).Links()
	if err == nil || !strings.Contains(err.Error(), "admin links: vigild answered: internal error") {
		t.Fatalf("Links: %v", err)
	}
}

func TestPeerAllowedForOwnUser(t *testing.T) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	uid, ok, err := peerAllowed(sc)
	if err != nil || !ok || int(uid) != os.Geteuid() {
		t.Fatalf("peerAllowed = %d, %v, %v; want own uid %d allowed", uid, ok, err, os.Geteuid())
	}
}
