package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is two connected transports of one implementation, plus what the implementation can
// do to them.
type pair struct {
	a, b Transport
	// cut breaks the network between a and b (nil: the implementation cannot).
	cut func()
}

type impl struct {
	name string
	new  func(t *testing.T) pair
}

var testKey = []byte("0123456789abcdef")

func impls() []impl {
	return []impl{
		{"memory", func(t *testing.T) pair {
			m := NewMemory()
			p := pair{a: m.Node(1), b: m.Node(2), cut: func() { m.Partition(1, 2) }}
			t.Cleanup(func() { p.a.Close(); p.b.Close() })
			return p
		}},
		{"tcp", func(t *testing.T) pair {
			a, b := newTCPPair(t, testKey, testKey)
			return pair{a: a, b: b}
		}},
	}
}

func newTCPPair(t *testing.T, keyA, keyB []byte) (*TCP, *TCP) {
	t.Helper()
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := NewTCP(TCPConfig{Local: 1, Key: keyA, Listen: lo})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewTCP(TCPConfig{Local: 2, Key: keyB, Listen: lo, Peers: map[NodeID]netip.AddrPort{1: a.Addr()}})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	a.SetPeer(2, b.Addr())
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return a, b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect dials svc on b from a and returns both ends.
func connect(t *testing.T, p pair, svc Service) (Conn, Conn) {
	t.Helper()
	ctx := ctxT(t)
	l, err := p.b.Listen(svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type res struct {
		c   Conn
		err error
	}
	acc := make(chan res, 1)
	go func() { c, err := l.Accept(ctx); acc <- res{c, err} }()
	ca, err := p.a.Dial(ctx, p.b.Local(), svc)
	if err != nil {
		t.Fatal(err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatal(r.err)
	}
	if ca.Peer() != p.b.Local() || r.c.Peer() != p.a.Local() || ca.Service() != svc || r.c.Service() != svc {
		t.Fatalf("ends: dialer sees node %d %s, listener sees node %d %s", ca.Peer(), ca.Service(), r.c.Peer(), r.c.Service())
	}
	return ca, r.c
}

func forEach(t *testing.T, f func(t *testing.T, p pair)) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) { f(t, im.new(t)) })
	}
}

func TestOrderedMessagesBothWays(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceRaft)
		ctx := ctxT(t)
		const n = 500
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range n {
				if err := ca.Send(ctx, msgOf(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // the echo: b sends back what it gets
			defer wg.Done()
			for i := range n {
				m, err := cb.Recv(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(m, msgOf(i)) {
					t.Errorf("message %d: got %q", i, m)
					return
				}
				if err := cb.Send(ctx, m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		for i := range n {
			m, err := ca.Recv(ctx)
			if err != nil || !bytes.Equal(m, msgOf(i)) {
				t.Fatalf("reply %d: %q, %v", i, m, err)
			}
		}
		wg.Wait()
	})
}

// msgOf is message i: its sizes run from empty to several KiB.
func msgOf(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%d;", i)), i%7*(i%500))
}

func TestLargeMessageAndLimit(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceDRD)
		ctx := ctxT(t)
		big := bytes.Repeat([]byte{0xa5}, MaxMessage)
		done := make(chan error, 1)
		go func() { done <- ca.Send(ctx, big) }()
		m, err := cb.Recv(ctx)
		if err != nil || !bytes.Equal(m, big) {
			t.Fatalf("largest message: %d bytes, %v", len(m), err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := ca.Send(ctx, make([]byte, MaxMessage+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("oversized send: %v, want ErrTooLarge", err)
		}
		// The stream still works after a refused send.
		go func() { done <- ca.Send(ctx, []byte("after")) }()
		if m, err := cb.Recv(ctx); err != nil || string(m) != "after" {
			t.Fatalf("after the refused send: %q, %v", m, err)
		}
		<-done
	})
}

func TestBackPressureAndCancel(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceBench)
		// Nobody receives: Send must block at some point, and its context must end it.
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		msg := make([]byte, 64<<10)
		sent := 0
		var err error
		for sent < 1<<30/len(msg) {
			if err = ca.Send(ctx, msg); err != nil {
				break
			}
			sent++
		}
		if err == nil {
			t.Fatalf("sent %d messages of 64 KiB without ever blocking", sent)
		}
		if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked send ended with %v", err)
		}
		// Everything that Send accepted is received, in order, even if the stream was broken
		// by a send cut short (then the last message may be missing, and the stream ends).
		rctx := ctxT(t)
		got := 0
		for got < sent {
			m, err := cb.Recv(rctx)
			if err != nil {
				if errors.Is(err, ErrClosed) && got >= sent-1 {
					break
				}
				t.Fatalf("after %d of %d messages: %v", got, sent, err)
			}
			if len(m) != len(msg) {
				t.Fatalf("message %d: %d bytes", got, len(m))
			}
			got++
		}
		// A Recv with a context that ends returns the context's error and keeps the stream.
		short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel2()
		if _, err := cb.Recv(short); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrClosed) {
			t.Fatalf("idle recv: %v", err)
		}
	})
}

func TestRecvResumesAfterCancel(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceRaft)
		for i := range 3 {
			short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
			if _, err := cb.Recv(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("recv %d on an idle stream: %v", i, err)
			}
			cancel()
		}
		ctx := ctxT(t)
		if err := ca.Send(ctx, []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if m, err := cb.Recv(ctx); err != nil || string(m) != "hello" {
			t.Fatalf("after cancelled receives: %q, %v", m, err)
		}
	})
}

func TestCloseDeliversThenEnds(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceRaft)
		ctx := ctxT(t)
		for i := range 5 {
			if err := ca.Send(ctx, msgOf(i)); err != nil {
				t.Fatal(err)
			}
		}
		ca.Close()
		for i := range 5 {
			if m, err := cb.Recv(ctx); err != nil || !bytes.Equal(m, msgOf(i)) {
				t.Fatalf("message %d after close: %q, %v", i, m, err)
			}
		}
		if _, err := cb.Recv(ctx); !errors.Is(err, ErrPeerClosed) || !errors.Is(err, ErrClosed) {
			t.Fatalf("recv after the peer closed: %v, want ErrPeerClosed", err)
		}
		if err := ca.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerClosed) {
			t.Fatalf("send on a stream this end closed: %v, want ErrClosed (not by the peer)", err)
		}
	})
}

// Reset with services to keep breaks the other services' streams to the peer and leaves
// those.
func TestResetKeepsServices(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		raftA, raftB := connect(t, p, ServiceRaft)
		drdA, _ := connect(t, p, ServiceDRD)
		ctx := ctxT(t)
		p.a.Reset(p.b.Local(), ServiceRaft)
		if err := drdA.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
			t.Fatalf("send on the DRD stream after the reset: %v", err)
		}
		if err := raftA.Send(ctx, []byte("kept")); err != nil {
			t.Fatalf("send on the raft stream after a reset that keeps it: %v", err)
		}
		if m, err := raftB.Recv(ctx); err != nil || string(m) != "kept" {
			t.Fatalf("raft stream after a reset that keeps it: %q, %v", m, err)
		}
	})
}

func TestResetBreaksStreams(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ca, cb := connect(t, p, ServiceRaft)
		ctx := ctxT(t)
		errc := make(chan error, 1)
		go func() { _, err := cb.Recv(ctx); errc <- err }()
		p.a.Reset(p.b.Local())
		if err := ca.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
			t.Fatalf("send after reset: %v", err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("peer's recv after reset: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the peer's Recv did not end after Reset")
		}
		// A new stream works.
		l, err := p.b.Listen(ServiceDLM)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept(ctx)
			if err == nil {
				m, _ := c.Recv(ctx)
				c.Send(ctx, m)
			}
		}()
		c, err := p.a.Dial(ctx, p.b.Local(), ServiceDLM)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(ctx, []byte("again"))
		if m, err := c.Recv(ctx); err != nil || string(m) != "again" {
			t.Fatalf("new stream after reset: %q, %v", m, err)
		}
	})
}

func TestDialErrors(t *testing.T) {
	forEach(t, func(t *testing.T, p pair) {
		ctx := ctxT(t)
		if _, err := p.a.Dial(ctx, p.b.Local(), ServiceDRD); !errors.Is(err, ErrNotListening) {
			t.Fatalf("dial without listener: %v, want ErrNotListening", err)
		}
		if _, err := p.a.Dial(ctx, 9, ServiceDRD); !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("dial unknown node: %v, want ErrUnknownPeer", err)
		}
		l, err := p.b.Listen(ServiceDRD)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.Listen(ServiceDRD); err == nil {
			t.Fatal("second listener for one service accepted")
		}
		l.Close()
		if _, err := p.a.Dial(ctx, p.b.Local(), ServiceDRD); !errors.Is(err, ErrNotListening) {
			t.Fatalf("dial after the listener closed: %v", err)
		}
		p.b.Close()
		if _, err := p.b.Listen(ServiceRaft); !errors.Is(err, ErrClosed) {
			t.Fatalf("listen on a closed transport: %v", err)
		}
		if _, err := p.a.Dial(ctx, p.b.Local(), ServiceRaft); err == nil {
			t.Fatal("dial to a closed transport succeeded")
		}
	})
}

func TestMemoryPartition(t *testing.T) {
	m := NewMemory()
	p := pair{a: m.Node(1), b: m.Node(2)}
	ca, cb := connect(t, p, ServiceRaft)
	ctx := ctxT(t)
	ca.Send(ctx, []byte("lost"))
	m.Partition(1, 2)
	if _, err := cb.Recv(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("recv across a partition: %v (a message queued before the cut is lost with the stream)", err)
	}
	if _, err := p.a.Dial(ctx, 2, ServiceRaft); err == nil {
		t.Fatal("dial across a partition succeeded")
	}
	m.Heal(1, 2)
	l2, _ := p.b.Listen(ServiceDLM)
	defer l2.Close()
	go l2.Accept(ctx)
	if _, err := p.a.Dial(ctx, 2, ServiceDLM); err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
}

func TestTCPWrongKey(t *testing.T) {
	a, b := newTCPPair(t, testKey, []byte("fedcba9876543210"))
	ctx := ctxT(t)
	if _, err := a.Listen(ServiceRaft); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Listen(ServiceRaft); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Dial(ctx, 2, ServiceRaft); !errors.Is(err, ErrAuth) {
		t.Fatalf("a dials b with another key: %v, want ErrAuth", err)
	}
	if _, err := b.Dial(ctx, 1, ServiceRaft); !errors.Is(err, ErrAuth) {
		t.Fatalf("b dials a with another key: %v, want ErrAuth", err)
	}
}

func TestTCPWrongNode(t *testing.T) {
	a, b := newTCPPair(t, testKey, testKey)
	ctx := ctxT(t)
	b.Listen(ServiceRaft)
	a.SetPeer(3, b.Addr()) // node 3's address actually reaches node 2
	if _, err := a.Dial(ctx, 3, ServiceRaft); err == nil {
		t.Fatal("dial of node 3 answered by node 2 succeeded")
	}
}

func TestTCPConfigErrors(t *testing.T) {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	for _, cfg := range []TCPConfig{
		{Key: testKey, Listen: lo},
		{Local: 1, Key: []byte("short"), Listen: lo},
		{Local: 1, Key: testKey},
	} {
		if tr, err := NewTCP(cfg); err == nil {
			tr.Close()
			t.Errorf("NewTCP(%+v) accepted", cfg)
		}
	}
}

// Watch is given each stream's descriptor, with its service, on both ends: the descriptor
// of the socket the stream's messages arrive on.
func TestTCPWatch(t *testing.T) {
	type seen struct {
		svc Service
		fd  int
	}
	var mu sync.Mutex
	got := map[NodeID][]seen{}
	watch := func(id NodeID) func(Service, int) {
		return func(svc Service, fd int) {
			mu.Lock()
			defer mu.Unlock()
			got[id] = append(got[id], seen{svc, fd})
		}
	}
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	a, err := NewTCP(TCPConfig{Local: 1, Key: testKey, Listen: lo, Watch: watch(1)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewTCP(TCPConfig{Local: 2, Key: testKey, Listen: lo, Peers: map[NodeID]netip.AddrPort{1: a.Addr()}, Watch: watch(2)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a.SetPeer(2, b.Addr())
	ca, cb := connect(t, pair{a: a, b: b}, ServiceRaft)
	defer ca.Close()
	defer cb.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, id := range []NodeID{1, 2} {
		if len(got[id]) != 1 || got[id][0].svc != ServiceRaft || got[id][0].fd < 0 {
			t.Fatalf("node %d: watched %+v, want one raft stream", id, got[id])
		}
		// The descriptor is the stream's socket: a peer's message makes it readable.
		var st unix.Stat_t
		if err := unix.Fstat(got[id][0].fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
			t.Fatalf("node %d: descriptor %d is not a socket (%v)", id, got[id][0].fd, err)
		}
	}
}
