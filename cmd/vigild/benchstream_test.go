package main

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vigil/control/transport"
	"vigil/internal/nodeconf"
)

func TestBenchFlags(t *testing.T) {
	cfg := &nodeconf.Config{Node: 1, Peers: []nodeconf.Peer{{ID: 2}}}
	noTransport := &daemon{cfg: cfg}
	for _, tc := range []struct {
		name  string
		d     *daemon
		flags benchFlags
		err   string
	}{
		{name: "off", d: noTransport},
		{name: "a peer without a directory", d: noTransport, flags: benchFlags{Peer: 2}, err: "--bench-peer needs --bench-dir"},
		{name: "no transport", d: noTransport, flags: benchFlags{Dir: t.TempDir()}, err: "the cluster transport is off"},
	} {
		b, err := tc.d.benchStreams(tc.flags)
		if tc.err == "" {
			if err != nil || b != nil {
				t.Errorf("%s: %v, %v; want off", tc.name, b, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}
}

// TestBenchStreams runs the bench streams between two daemons' transports on loopback: every
// round trip and one-way message is recorded, and the streams stop when told.
func TestBenchStreams(t *testing.T) {
	key := []byte("0123456789abcdef")
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	b, err := transport.NewTCP(transport.TCPConfig{Local: 2, Key: key, Listen: lo})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := transport.NewTCP(transport.TCPConfig{Local: 1, Key: key, Listen: lo,
		Peers: map[transport.NodeID]netip.AddrPort{2: b.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	log := slog.New(slog.DiscardHandler)
	cfg := &nodeconf.Config{Node: 1, Peers: []nodeconf.Peer{{ID: 2}}}
	dirA, dirB := t.TempDir(), t.TempDir()
	sa, err := (&daemon{cfg: cfg, transport: a, log: log}).benchStreams(benchFlags{Dir: dirA, Peer: 2})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := (&daemon{cfg: &nodeconf.Config{Node: 2, Peers: []nodeconf.Peer{{ID: 1}}}, transport: b, log: log}).benchStreams(benchFlags{Dir: dirB})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doneB := make(chan struct{})
	go func() { sb.run(ctx); close(doneB) }()
	doneA := make(chan struct{})
	go func() { sa.run(ctx); close(doneA) }()
	os.WriteFile(filepath.Join(dirA, "start"), nil, 0o600)
	time.Sleep(200 * time.Millisecond)
	os.WriteFile(filepath.Join(dirA, "stop"), nil, 0o600)
	for !exists(filepath.Join(dirA, "done")) {
		if ctx.Err() != nil {
			t.Fatal("the bench streams did not stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the last one-way messages arrive
	cancel()
	<-doneA
	<-doneB
	read := func(path string, n int) [][]uint64 {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]uint64
		for ; len(raw) >= 8*n; raw = raw[8*n:] {
			r := make([]uint64, n)
			for i := range r {
				r[i] = binary.LittleEndian.Uint64(raw[8*i:])
			}
			out = append(out, r)
		}
		return out
	}
	rr := read(filepath.Join(dirA, "rr.bin"), 2)
	sent := read(filepath.Join(dirA, "ow_sent.bin"), 2)
	recv := read(filepath.Join(dirB, "ow_recv.bin"), 3)
	if len(rr) == 0 || len(sent) == 0 {
		t.Fatalf("%d round trips and %d one-way messages recorded", len(rr), len(sent))
	}
	for _, r := range rr {
		if r[1] < r[0] {
			t.Fatalf("round trip ends before it starts: %v", r)
		}
	}
	if len(recv) != len(sent) {
		t.Fatalf("one-way: %d sent, %d received", len(sent), len(recv))
	}
	for i, r := range recv {
		if r[0] != sent[i][0] || r[1] != sent[i][1] {
			t.Fatalf("one-way message %d received as %v, sent as %v", i, r, sent[i])
		}
	}
}
