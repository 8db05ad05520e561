package server

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vigil/drd/wire"
)

// newBacking creates a sparse backing file of size bytes in a temporary directory on a file
// system with O_DIRECT (not tmpfs).
func newBacking(t testing.TB, size int64) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "drd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "disk")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestServer(t testing.TB, sync bool) (*Server, *Device) {
	t.Helper()
	dev, err := OpenDevice("d0", newBacking(t, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Devices: []*Device{dev}, Epoch: 7, QueueDepth: 8, SlotSize: 64 << 10, DisableURing: sync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		dev.Close()
	})
	return s, dev
}

type rawClient struct {
	t *testing.T
	c *wire.FrameConn
}

func dialPipe(t *testing.T, s *Server) *rawClient {
	a, b := net.Pipe()
	go s.ServeConn(wire.NewFrameConn(a), "pipe")
	c := wire.NewFrameConn(b)
	t.Cleanup(func() { c.Close() })
	return &rawClient{t, c}
}

// socketPair returns the two ends of a TCP connection on loopback.
func socketPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return server, client
}

// dialSocket serves a session on a TCP socket: with io_uring, the event loop of serveSocket.
// ended receives ServeConn's result.
func dialSocket(t *testing.T, s *Server) (c *rawClient, raw net.Conn, ended chan error) {
	srv, cli := socketPair(t)
	fc := wire.NewFrameConn(srv)
	if _, rc := rawSocket(fc); rc == nil {
		t.Fatal("a TCP FrameConn does not take the event loop")
	}
	ended = make(chan error, 1)
	go func() { ended <- s.ServeConn(fc, "socket") }()
	return &rawClient{t, wire.NewFrameConn(cli)}, cli, ended
}

// transports are the ways a test reaches a remote session: a pipe (the general path, a session
// reader handing requests to an io loop) and a socket (the event loop; with the synchronous
// engine the general path again).
var transports = []struct {
	name string
	dial func(*testing.T, *Server) *rawClient
}{
	{"pipe", dialPipe},
	{"socket", func(t *testing.T, s *Server) *rawClient { c, _, _ := dialSocket(t, s); return c }},
	{"routed", dialRouted},
}

// helloWrap is a stream whose Hello a front read to route it, put back (as vigild does).
type helloWrap struct {
	wire.Conn
	first []byte
}

func (c *helloWrap) Recv(ctx context.Context) ([]byte, error) {
	if m := c.first; m != nil {
		c.first = nil
		return m, nil
	}
	return c.Conn.Recv(ctx)
}

func (c *helloWrap) Unwrap() wire.Conn { return c.Conn }

// dialRouted serves a socket session that a front routed: the event loop reads the socket
// under the wrapper once the Hello is read.
func dialRouted(t *testing.T, s *Server) *rawClient {
	srv, cli := socketPair(t)
	fc := wire.NewFrameConn(srv)
	if _, rc := rawSocket(&helloWrap{Conn: fc}); rc == nil {
		t.Fatal("a routed TCP FrameConn does not take the event loop")
	}
	go func() {
		m, err := fc.Recv(context.Background())
		if err != nil {
			fc.Close()
			return
		}
		s.Go(&helloWrap{Conn: fc, first: m}, "routed")
	}()
	return &rawClient{t, wire.NewFrameConn(cli)}
}

func (c *rawClient) hello(name string, version uint16) wire.Welcome {
	c.t.Helper()
	ctx := context.Background()
	if err := c.c.Send(ctx, wire.AppendHello(nil, wire.Hello{Version: version, Device: name})); err != nil {
		c.t.Fatal(err)
	}
	m, err := c.c.Recv(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	w, err := wire.DecodeWelcome(m)
	if err != nil {
		c.t.Fatal(err)
	}
	return w
}

func (c *rawClient) do(r wire.Request) wire.Response {
	c.t.Helper()
	ctx := context.Background()
	if err := c.c.Send(ctx, wire.AppendRequest(nil, &r)); err != nil {
		c.t.Fatal(err)
	}
	m, err := c.c.Recv(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := wire.DecodeResponse(m)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.Tag != r.Tag {
		c.t.Fatalf("response tag %d for request %d", resp.Tag, r.Tag)
	}
	return resp
}

func TestRemoteSession(t *testing.T) {
	for _, tr := range transports {
		for _, sync := range []bool{false, true} {
			t.Run(tr.name+"/"+map[bool]string{false: "uring", true: "sync"}[sync], func(t *testing.T) {
				testRemoteSession(t, sync, tr.dial)
			})
		}
	}
}

func testRemoteSession(t *testing.T, sync bool, dial func(*testing.T, *Server) *rawClient) {
	s, dev := newTestServer(t, sync)
	c := dial(t, s)
	w := c.hello("d0", wire.Version)
	if w.Status != wire.StatusOK || w.Epoch != 7 || w.Size != dev.Size || w.MaxIO != 64<<10 {
		t.Fatalf("welcome %+v", w)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 2*4096/16)
	if r := c.do(wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: 1, Offset: 8192, Length: 8192, Data: data}); r.Status != wire.StatusOK {
		t.Fatalf("write: %v", r.Status)
	}
	r := c.do(wire.Request{Op: wire.OpRead, Epoch: 7, Tag: 2, Offset: 8192, Length: 8192})
	if r.Status != wire.StatusOK || !bytes.Equal(r.Data, data) {
		t.Fatalf("read back: %v, %d bytes, equal %v", r.Status, len(r.Data), bytes.Equal(r.Data, data))
	}
	if r := c.do(wire.Request{Op: wire.OpFlush, Epoch: 7, Tag: 3}); r.Status != wire.StatusOK {
		t.Fatalf("flush: %v", r.Status)
	}
	if r := c.do(wire.Request{Op: wire.OpDiscard, Epoch: 7, Tag: 4, Offset: 8192, Length: 4096}); r.Status != wire.StatusOK {
		t.Fatalf("discard: %v", r.Status)
	}
	r = c.do(wire.Request{Op: wire.OpRead, Epoch: 7, Tag: 5, Offset: 8192, Length: 8192})
	if r.Status != wire.StatusOK || !bytes.Equal(r.Data[:4096], make([]byte, 4096)) || !bytes.Equal(r.Data[4096:], data[4096:]) {
		t.Fatalf("read after discard: %v", r.Status)
	}
	for _, tc := range []struct {
		name string
		req  wire.Request
		want wire.Status
	}{
		{"stale epoch", wire.Request{Op: wire.OpRead, Epoch: 6, Offset: 0, Length: 4096}, wire.StatusStaleEpoch},
		{"misaligned offset", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 512, Length: 4096}, wire.StatusMisaligned},
		{"misaligned length", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 0, Length: 100}, wire.StatusMisaligned},
		{"zero length", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 0, Length: 0}, wire.StatusMisaligned},
		{"past the end", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 1 << 20, Length: 4096}, wire.StatusOutOfRange},
		{"across the end", wire.Request{Op: wire.OpDiscard, Epoch: 7, Offset: 1<<20 - 4096, Length: 8192}, wire.StatusOutOfRange},
		{"huge offset", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 1<<64 - 4096, Length: 8192}, wire.StatusOutOfRange},
		{"too large", wire.Request{Op: wire.OpRead, Epoch: 7, Offset: 0, Length: 128 << 10}, wire.StatusTooLarge},
		{"unknown op", wire.Request{Op: 99, Epoch: 7}, wire.StatusBadOp},
	} {
		tc.req.Tag = 100
		if r := c.do(tc.req); r.Status != tc.want {
			t.Errorf("%s: status %v, want %v", tc.name, r.Status, tc.want)
		}
	}
	// A write whose data does not match its length is malformed; the session goes on.
	m := wire.AppendRequest(nil, &wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: 9, Length: 4096, Data: make([]byte, 10)})
	if err := c.c.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	mr, _ := c.c.Recv(context.Background())
	if resp, _ := wire.DecodeResponse(mr); resp.Status != wire.StatusProtocolError || resp.Tag != 9 {
		t.Fatalf("malformed write: %+v", resp)
	}
	if r := c.do(wire.Request{Op: wire.OpRead, Epoch: 7, Tag: 10, Offset: 0, Length: 4096}); r.Status != wire.StatusOK {
		t.Fatalf("read after errors: %v", r.Status)
	}
}

func TestRemoteHelloRefused(t *testing.T) {
	s, _ := newTestServer(t, false)
	if w := dialPipe(t, s).hello("nope", wire.Version); w.Status != wire.StatusNoDevice || w.Message == "" {
		t.Fatalf("unknown device: %+v", w)
	}
	if w := dialPipe(t, s).hello("d0", 99); w.Status != wire.StatusBadVersion {
		t.Fatalf("bad version: %+v", w)
	}
	c := dialPipe(t, s)
	c.c.Send(context.Background(), []byte("garbage"))
	m, err := c.c.Recv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := wire.DecodeWelcome(m); w.Status != wire.StatusProtocolError {
		t.Fatalf("garbage hello: %+v", w)
	}
}

// TestRemotePipelined keeps many requests in flight on one session and checks every answer.
func TestRemotePipelined(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) { testRemotePipelined(t, tr.dial) })
	}
}

func testRemotePipelined(t *testing.T, dial func(*testing.T, *Server) *rawClient) {
	s, _ := newTestServer(t, false)
	c := dial(t, s)
	c.hello("d0", wire.Version)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 200
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			b := bytes.Repeat([]byte{byte(i)}, 4096)
			r := wire.Request{Op: wire.OpWrite, Epoch: 7, Tag: uint64(i), Offset: uint64(i%256) * 4096, Length: 4096, Data: b}
			if err := c.c.Send(ctx, wire.AppendRequest(nil, &r)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	seen := map[uint64]bool{}
	for range n {
		m, err := c.c.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r, err := wire.DecodeResponse(m)
		if err != nil || r.Status != wire.StatusOK || seen[r.Tag] {
			t.Fatalf("response %+v, %v", r, err)
		}
		seen[r.Tag] = true
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestOpenDeviceErrors(t *testing.T) {
	if _, err := OpenDevice("x", "/nonexistent/disk"); err == nil {
		t.Fatal("opened a missing backing")
	}
	if _, err := OpenDevice("x", newBacking(t, 100)); err == nil {
		t.Fatal("opened a backing smaller than a block")
	}
	_, err := New(Config{SlotSize: 100})
	if err == nil {
		t.Fatal("accepted a slot size of 100")
	}
	var we *wire.Error
	if errors.As(wire.StatusStaleEpoch.Err(), &we); !errors.Is(we, wire.ErrStaleEpoch) {
		t.Fatal("stale epoch error does not match ErrStaleEpoch")
	}
}
