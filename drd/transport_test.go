package drd_test

import (
	"bytes"
	"context"
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
