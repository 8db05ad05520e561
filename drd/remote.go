package drd

import (
	"context"
	"fmt"
	"sync"

	"vigil/drd/wire"
)

// remoteLink is a block shipping session over a message stream.
type remoteLink struct {
	d    *Device
	conn wire.Conn
	mu   sync.Mutex // serializes sends and guards buf
	buf  []byte
	done chan struct{}
	once sync.Once
}

func dialRemote(ctx context.Context, d *Device) (*remoteLink, wire.Welcome, error) {
	conn, err := d.opt.Dial(ctx)
	if err != nil {
		return nil, wire.Welcome{}, err
	}
	w, err := handshake(ctx, conn, wire.Hello{Version: wire.Version, Device: d.name, Client: d.id})
	if err != nil {
		conn.Close()
		return nil, w, err
	}
	l := &remoteLink{d: d, conn: conn, done: make(chan struct{})}
	go l.recv()
	return l, w, nil
}

// handshake sends Hello and reads Welcome.
func handshake(ctx context.Context, conn wire.Conn, h wire.Hello) (wire.Welcome, error) {
	name := h.Device
	if err := conn.Send(ctx, wire.AppendHello(nil, h)); err != nil {
		return wire.Welcome{}, fmt.Errorf("hello: %w", err)
	}
	m, err := conn.Recv(ctx)
	if err != nil {
		return wire.Welcome{}, fmt.Errorf("welcome: %w", err)
	}
	w, err := wire.DecodeWelcome(m)
	if err != nil {
		return w, err
	}
	if w.Status != wire.StatusOK {
		return w, fmt.Errorf("server refused device %s: %v: %s", name, w.Status, w.Message)
	}
	return w, nil
}

func (l *remoteLink) kind() string { return "remote" }

func (l *remoteLink) send(tag uint64, c *Call, epoch uint64) error {
	r := wire.Request{Op: c.Op, Epoch: epoch, Tag: tag, Offset: uint64(c.Offset)}
	switch c.Op {
	case wire.OpRead, wire.OpWrite:
		r.Length = uint32(len(c.Buf))
		r.Data = c.Buf
	case wire.OpDiscard:
		r.Length = uint32(c.Length)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = wire.AppendRequest(l.buf[:0], &r)
	return l.conn.Send(context.Background(), l.buf)
}

func (l *remoteLink) recv() {
	defer close(l.done)
	for {
		m, err := l.conn.Recv(context.Background())
		if err != nil {
			l.d.broken(l, err)
			return
		}
		r, err := wire.DecodeResponse(m)
		if err != nil {
			l.d.broken(l, err)
			return
		}
		if !l.d.complete(l, r.Tag, r.Status, r.Data) {
			return
		}
	}
}

func (l *remoteLink) close() { l.once.Do(func() { l.conn.Close() }) }
func (l *remoteLink) wait()  { <-l.done }
