package server

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"vigil/drd/wire"
)

// FuzzRemoteSession sends arbitrary messages (the input cut into messages by its own length
// bytes) to a real remote session after a valid hello: the session answers or ends, never
// panics or hangs.
func FuzzRemoteSession(f *testing.F) {
	req := func(r wire.Request) []byte {
		m := wire.AppendRequest(nil, &r)
		return append([]byte{byte(len(m))}, m...)
	}
	f.Add(req(wire.Request{Op: wire.OpRead, Epoch: 7, Length: 4096}))
	f.Add(req(wire.Request{Op: wire.OpWrite, Epoch: 7, Length: 8, Data: make([]byte, 8)}))
	f.Add(append(req(wire.Request{Op: wire.OpFlush, Epoch: 7}), req(wire.Request{Op: wire.OpDiscard, Epoch: 7, Length: 1 << 20})...))
	f.Add([]byte{3, 1, 2, 3})
	s, _ := newTestServer(f, false)
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.ServeConn(wire.NewFrameConn(a), "fuzz")
			close(done)
		}()
		c := wire.NewFrameConn(b)
		go io.Copy(io.Discard, b)
		ctx := context.Background()
		b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.Send(ctx, wire.AppendHello(nil, wire.Hello{Version: wire.Version, Device: "d0"}))
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			if c.Send(ctx, in[1:1+n]) != nil {
				break
			}
			in = in[1+n:]
		}
		b.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end after the client left")
		}
	})
}

// FuzzSocketSession sends an arbitrary byte stream (frames or not) after a valid hello to a
// session on a TCP socket, the socket event loop with io_uring: the session answers or ends,
// never panics or hangs, and ends once the client leaves.
func FuzzSocketSession(f *testing.F) {
	frame := func(r wire.Request) []byte {
		m := wire.AppendRequest(nil, &r)
		return append(binary.LittleEndian.AppendUint32(nil, uint32(len(m))), m...)
	}
	f.Add(frame(wire.Request{Op: wire.OpRead, Epoch: 7, Length: 4096}))
	f.Add(append(frame(wire.Request{Op: wire.OpWrite, Epoch: 7, Length: 4096, Data: make([]byte, 4096)}), frame(wire.Request{Op: wire.OpFlush, Epoch: 7})...))
	f.Add(frame(wire.Request{Op: wire.OpDiscard, Epoch: 6, Length: 1 << 20}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 1, 2})
	f.Add([]byte{40, 0, 0, 0, 1})
	s, _ := newTestServer(f, false)
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := socketPair(t)
		done := make(chan struct{})
		go func() {
			s.ServeConn(wire.NewFrameConn(srv), "fuzz")
			close(done)
		}()
		go io.Copy(io.Discard, cli)
		cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		wire.NewFrameConn(cli).Send(context.Background(), wire.AppendHello(nil, wire.Hello{Version: wire.Version, Device: "d0"}))
		cli.Write(in)
		cli.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end after the client left")
		}
	})
}
