package drd_test

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"vigil/control/transport"
	"vigil/drd"
	"vigil/drd/server"
	"vigil/drd/wire"
)

// TestRemoteOverClusterTransport runs the remote path on the in-memory cluster transport; a
// partition breaks the stream, and after healing the client re-sends and carries on.
func TestRemoteOverClusterTransport(t *testing.T) {
	e := newEnv(t, 1<<20)
	dev, err := server.OpenDevice("d0", e.backing)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	net := transport.NewMemory()
	l, err := net.Node(1).Listen(transport.ServiceDRD)
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTransport(l)
	client := net.Node(2)
	d, err := drd.Open(context.Background(), "d0", drd.Options{ReconnectTimeout: 10 * time.Second,
		Dial: func(ctx context.Context) (wire.Conn, error) { return client.Dial(ctx, 1, transport.ServiceDRD) }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte{7}, 64<<10)
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	net.Partition(1, 2)
	done := make(chan error, 1)
	go func() {
		_, err := d.WriteAt(bytes.Repeat([]byte{9}, 4096), 8192)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	net.Heal(1, 2)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write did not complete after the partition healed")
	}
	got := make([]byte, 64<<10)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	copy(data[8192:], bytes.Repeat([]byte{9}, 4096))
	if !bytes.Equal(got, data) {
		t.Fatal("data differs after the partition")
	}
}

// TestRemoteOverTCPTransport runs the remote path on the daemon's TCP transport (HMAC
// handshake with the cluster key) on loopback, with a server restart in the middle.
func TestRemoteOverTCPTransport(t *testing.T) {
	e := newEnv(t, 1<<20)
	key := bytes.Repeat([]byte{0x5a}, 16)
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	t1, err := transport.NewTCP(transport.TCPConfig{Local: 1, Key: key, Listen: lo})
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Close()
	t2, err := transport.NewTCP(transport.TCPConfig{Local: 2, Key: key, Listen: lo,
		Peers: map[transport.NodeID]netip.AddrPort{1: t1.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Close()
	l, err := t1.Listen(transport.ServiceDRD)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(epoch uint64) (*server.Server, *server.Device) {
		dev, err := server.OpenDevice("d0", e.backing)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeTransport(l)
		return srv, dev
	}
	srv, dev := serve(1)
	d, err := drd.Open(context.Background(), "d0", drd.Options{ReconnectTimeout: 10 * time.Second,
		Dial: func(ctx context.Context) (wire.Conn, error) { return t2.Dial(ctx, 1, transport.ServiceDRD) }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte{3}, 128<<10)
	if _, err := d.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	// A new incarnation on the same listener (ServeTransport of the old one ends with Close,
	// which closes the listener: take a new one).
	srv.Close()
	dev.Close()
	if l, err = t1.Listen(transport.ServiceDRD); err != nil {
		t.Fatal(err)
	}
	srv, dev = serve(2)
	defer dev.Close()
	defer srv.Close()
	got := make([]byte, len(data))
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after restart: %v", err)
	}
	if d.Epoch() != 2 {
		t.Fatalf("epoch %d after restart", d.Epoch())
	}
}
