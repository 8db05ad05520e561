package nbd

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"vigil/drd/server"
)

// FuzzServeConn feeds arbitrary client byte streams (after the client flags) to a real server
// session on a real backing file: negotiation and transmission must end cleanly (no panic, no
// hang) whatever arrives.
func FuzzServeConn(f *testing.F) {
	goData := be.AppendUint32(nil, 2)
	goData = append(goData, "d0"...)
	goData = be.AppendUint16(goData, 0)
	opt := func(o uint32, data []byte) []byte {
		b := be.AppendUint64(nil, optMagic)
		b = be.AppendUint32(b, o)
		b = be.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	flags := be.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes)
	session := append(append(append([]byte{}, flags...), opt(OptStructuredReply, nil)...), opt(OptGo, goData)...)
	write := append(AppendRequest(nil, Request{Type: CmdWrite, Cookie: 1, Offset: 4096, Length: 4096}), make([]byte, 4096)...)
	f.Add(append(append([]byte{}, session...), AppendRequest(nil, Request{Type: CmdRead, Cookie: 2, Length: 4096})...))
	f.Add(append(append([]byte{}, session...), write...))
	f.Add(append(append([]byte{}, session...), AppendRequest(nil, Request{Type: CmdRead, Offset: 1 << 40, Length: 1 << 31})...))
	f.Add(append(append([]byte{}, session...), AppendRequest(nil, Request{Type: CmdWrite, Length: 1 << 30})...))
	f.Add(append(append([]byte{}, flags...), opt(OptList, nil)...))
	f.Add(append(append([]byte{}, flags...), opt(OptExportName, []byte("d0"))...))
	f.Add([]byte{0, 0, 0, 1, 0xff})

	dir, err := os.MkdirTemp("/var/tmp", "drd-nbd-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backing := filepath.Join(dir, "disk")
	os.WriteFile(backing, nil, 0o600)
	os.Truncate(backing, 1<<20)
	dev, err := server.OpenDevice("d0", backing)
	if err != nil {
		f.Fatal(err)
	}
	defer dev.Close()
	srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: 1, QueueDepth: 4, SlotSize: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	ns := NewServer(srv, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() {
			ns.ServeConn(a)
			close(done)
		}()
		go io.Copy(io.Discard, b) // the replies
		b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		b.Write(in)
		b.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end after the client left")
		}
	})
}
