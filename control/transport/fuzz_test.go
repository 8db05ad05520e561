package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func FuzzParseHello(f *testing.F) {
	h := hello{Version: protoVersion, Service: ServiceRaft, From: 1, To: 2}
	f.Add(h.marshal())
	f.Add([]byte("VGT1"))
	f.Add(bytes.Repeat([]byte{0xff}, helloSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseHello(b)
		if err != nil {
			return
		}
		if !bytes.Equal(h.marshal(), b) {
			t.Fatalf("hello %x decodes to %+v, which encodes to %x", b, h, h.marshal())
		}
	})
}

// FuzzTCPListener throws arbitrary bytes at a listening TCP transport, as a hostile or broken
// peer would: it must refuse them without crashing and keep serving honest peers.
func FuzzTCPListener(f *testing.F) {
	good := hello{Version: protoVersion, Service: ServiceRaft, From: 3, To: 1}
	f.Add(good.marshal())
	f.Add(append(good.marshal(), make([]byte, macSize)...))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	tr, err := NewTCP(TCPConfig{Local: 1, Key: testKey, Listen: lo, HandshakeTimeout: 200 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	defer tr.Close()
	l, _ := tr.Listen(ServiceRaft)
	accepted := make(chan Conn, 16)
	go func() {
		for {
			c, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := net.Dial("tcp", tr.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
		var sink [256]byte
		for {
			if _, err := c.Read(sink[:]); err != nil {
				break
			}
		}
		select {
		case c := <-accepted:
			t.Fatalf("a stream from node %d was accepted without the key", c.Peer())
		default:
		}
	})
}

// TestTCPRejectsOversizedFrame: an authenticated peer that announces a message over the limit
// breaks only its own stream, with an error naming it.
func TestTCPRejectsOversizedFrame(t *testing.T) {
	a, b := newTCPPair(t, testKey, testKey)
	ca, cb := connect(t, pair{a: a, b: b}, ServiceRaft)
	ctx := ctxT(t)
	raw := ca.(*tcpConn).c
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxMessage+1)
	raw.Write(hdr[:])
	_, err := cb.Recv(ctx)
	if !errors.Is(err, ErrClosed) || !bytes.Contains([]byte(err.Error()), []byte("node 1")) {
		t.Fatalf("oversized frame: %v, want ErrClosed naming node 1", err)
	}
}

// TestTCPNudgeFrames: nudge frames between messages are invisible to the receiver.
func TestTCPNudgeFrames(t *testing.T) {
	a, b := newTCPPair(t, testKey, testKey)
	ca, cb := connect(t, pair{a: a, b: b}, ServiceRaft)
	ctx := ctxT(t)
	raw := ca.(*tcpConn).c
	var nop [4]byte
	binary.BigEndian.PutUint32(nop[:], nopFrame)
	raw.Write(nop[:])
	ca.Send(ctx, []byte("one"))
	raw.Write(append(nop[:], nop[:]...))
	ca.Send(ctx, []byte("two"))
	for _, want := range []string{"one", "two"} {
		if m, err := cb.Recv(ctx); err != nil || string(m) != want {
			t.Fatalf("got %q, %v; want %q", m, err, want)
		}
	}
	time.Sleep(20 * time.Millisecond) // loopback acknowledges at once
	if n := a.Nudge(2); n != 1 {
		t.Fatalf("nudged %d streams, want the one (idle: one frame carrying its acknowledgements)", n)
	}
	if err := ca.Send(ctx, []byte("three")); err != nil {
		t.Fatal(err)
	}
	if m, err := cb.Recv(ctx); err != nil || string(m) != "three" {
		t.Fatalf("after a nudge pass: %q, %v", m, err)
	}
}
