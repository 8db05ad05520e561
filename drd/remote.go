package drd

import (
	"context"
	"fmt"
	"sync"

	"vigil/drd/wire"
)

// remoteLink is a block shipping session over a message stream.
//
// Responses are read by one goroutine at a time, the reader, and only while calls are in
// flight: a goroutine started when an asynchronous call finds no reader (it stops once nothing
// is in flight), or the caller of Device.Do itself, which reads until its own response came. At
// queue depth 1 the reply then reaches the waiting goroutine straight from the socket, without
// a receiving goroutine waking it through a channel (a wake-up of another thread, which costs
// tens of microseconds on a small VM).
type remoteLink struct {
	d    *Device
	conn wire.Conn
	mu   sync.Mutex // serializes sends and guards buf
	buf  []byte
	once sync.Once

	rmu     sync.Mutex
	idle    *sync.Cond // signalled when reading turns false
	reading bool       // a goroutine holds the reader role
	closed  bool
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
	l := &remoteLink{d: d, conn: conn}
	l.idle = sync.NewCond(&l.rmu)
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

// started makes sure a reader runs for calls sent on l: it starts a reader goroutine unless a
// goroutine already reads (or l is closed: the calls are then re-sent on the next link).
func (l *remoteLink) started() {
	l.rmu.Lock()
	if l.reading || l.closed {
		l.rmu.Unlock()
		return
	}
	l.reading = true
	l.rmu.Unlock()
	go l.readLoop()
}

// readLoop is the reader goroutine: it reads until nothing is in flight on l or l breaks.
func (l *remoteLink) readLoop() {
	for l.readOne() {
		if !l.keepReading(false) {
			return
		}
	}
	l.stopReading()
}

// keepReading decides, under rmu, whether the reader goes on: while calls are in flight on
// l, it does (spawn: in a new reader goroutine, the present reader being a Do caller whose call
// is finished); otherwise it gives the role up. A call registered before the check is seen by
// it; one registered after finds no reader and starts one (started).
func (l *remoteLink) keepReading(spawn bool) bool {
	l.rmu.Lock()
	defer l.rmu.Unlock()
	if !l.closed && l.d.busy(l) {
		if spawn {
			go l.readLoop()
		}
		return true
	}
	l.reading = false
	l.idle.Broadcast()
	return false
}

func (l *remoteLink) stopReading() {
	l.rmu.Lock()
	l.reading = false
	l.idle.Broadcast()
	l.rmu.Unlock()
}

// readOne reads one response and completes its call. It returns false when l is broken (it
// has then called Device.broken).
func (l *remoteLink) readOne() bool {
	m, err := l.conn.Recv(context.Background())
	if err != nil {
		l.d.broken(l, err)
		return false
	}
	r, err := wire.DecodeResponse(m)
	if err != nil {
		l.d.broken(l, err)
		return false
	}
	return l.d.complete(l, r.Tag, r.Status, r.Data)
}

// await waits until c (sent on l) is finished and takes it from c.Done. With no reader running,
// the caller becomes the reader: it reads responses (completing whichever calls they answer)
// until its own came, then hands the role to a reader goroutine if other calls are in flight.
func (l *remoteLink) await(c *Call) {
	l.rmu.Lock()
	if l.reading || l.closed {
		l.rmu.Unlock()
		<-c.Done
		return
	}
	l.reading = true
	l.rmu.Unlock()
	for {
		select {
		case <-c.Done:
			l.keepReading(true)
			return
		default:
		}
		if !l.readOne() {
			// Broken: c is re-sent on the next link (or fails with the device).
			l.stopReading()
			<-c.Done
			return
		}
	}
}

func (l *remoteLink) close() {
	l.once.Do(func() {
		l.rmu.Lock()
		l.closed = true
		l.rmu.Unlock()
		l.conn.Close()
	})
}

// wait returns once no goroutine reads from l; after close, none starts again.
func (l *remoteLink) wait() {
	l.rmu.Lock()
	for l.reading {
		l.idle.Wait()
	}
	l.rmu.Unlock()
}
