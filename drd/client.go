package drd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/shm"
	"vigil/drd/wire"
)

// Options configure Open.
type Options struct {
	// LocalSocket is the unix socket (SOCK_SEQPACKET) of the local path on this node; empty
	// when no server runs here.
	LocalSocket string
	// Dial opens a message stream to the serving node (a cluster transport stream, or a
	// wire.FrameConn on a socket); nil when only the local path may be used.
	Dial func(ctx context.Context) (wire.Conn, error)
	// QueueDepth is the most calls in flight (default 32).
	QueueDepth int
	// SlotSize is the size of each data slot of the local path (default 128 KiB).
	SlotSize int
	// ReconnectTimeout is how long to keep trying to reach a server after losing it
	// (default 30 s).
	ReconnectTimeout time.Duration
	Logger           *slog.Logger
}

// ErrClosed is returned for calls on a closed Device.
var ErrClosed = errors.New("drd: device closed")

// Call is one asynchronous request.
type Call struct {
	Op     wire.Op
	Offset int64
	Buf    []byte // reads fill it, writes write it (whole blocks)
	Length int64  // discards only
	N      int    // bytes transferred
	Err    error
	Done   chan *Call // receives the call when it completes (made with room for one if nil)

	slot  int
	owned bool       // the call holds its slot for life (NewCall): Buf is the slot itself
	own   chan *Call // Done while Do runs the call
}

// Device is an open DRD device. Its methods are safe for concurrent use.
type Device struct {
	name  string
	id    uint64 // the client id of every Hello, so a server fences our previous session
	opt   Options
	log   *slog.Logger
	slots chan int
	// The local path's region, made when LocalSocket is set and kept across reconnections,
	// so writes in flight are re-sent from their slots.
	memfd  int
	region *shm.Client

	mu       sync.Mutex
	link     link // nil while reconnecting
	epoch    uint64
	size     uint64
	maxIO    int
	inflight map[uint64]*Call
	order    []uint64 // tags in the order the calls started (pruned lazily)
	nextTag  uint64
	closed   bool
	failed   error
	// reconnects counts the reconnecting goroutines: Close waits for them before it unmaps the
	// region they use.
	reconnects sync.WaitGroup
}

// link is one connection to a server.
type link interface {
	send(tag uint64, c *Call, epoch uint64) error
	// started is called after calls were sent, so that their answers are read.
	started()
	// await waits until c, sent on the link, is finished, and takes it from c.Done.
	await(c *Call)
	close()
	wait() // until its goroutines are gone
	kind() string
}

// Open connects to device name. It tries the local path first, then the remote path.
func Open(ctx context.Context, name string, opt Options) (*Device, error) {
	if opt.QueueDepth == 0 {
		opt.QueueDepth = 32
	}
	if opt.SlotSize == 0 {
		opt.SlotSize = 128 << 10
	}
	if opt.ReconnectTimeout == 0 {
		opt.ReconnectTimeout = 30 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.QueueDepth < 1 || opt.QueueDepth > shm.MaxEntries {
		return nil, fmt.Errorf("drd open %s: queue depth %d (want 1 to %d)", name, opt.QueueDepth, shm.MaxEntries)
	}
	if opt.LocalSocket == "" && opt.Dial == nil {
		return nil, fmt.Errorf("drd open %s: neither a local socket nor a dialer", name)
	}
	d := &Device{name: name, id: rand.Uint64() | 1, opt: opt, log: opt.Logger, memfd: -1, slots: make(chan int, opt.QueueDepth),
		inflight: map[uint64]*Call{}}
	for i := range opt.QueueDepth {
		d.slots <- i
	}
	if opt.LocalSocket != "" {
		entries := uint32(1)
		for entries < uint32(opt.QueueDepth) {
			entries <<= 1
		}
		g := shm.Geometry{SQEntries: entries, CQEntries: entries, Slots: uint32(opt.QueueDepth), SlotSize: uint32(opt.SlotSize)}
		fd, c, err := shm.Create(name, g)
		if err != nil {
			return nil, fmt.Errorf("drd open %s: %w", name, err)
		}
		d.memfd, d.region = fd, c
	}
	// mu is held until the link is recorded: a link that breaks at once must find itself the
	// current link (broken reconnects only then), not a nil one.
	d.mu.Lock()
	l, w, err := d.connect(ctx)
	if err != nil {
		d.mu.Unlock()
		d.release()
		return nil, fmt.Errorf("drd open %s: %w", name, err)
	}
	d.link, d.epoch, d.size, d.maxIO = l, w.Epoch, w.Size, int(w.MaxIO)
	d.mu.Unlock()
	return d, nil
}

func (d *Device) release() {
	if d.region != nil {
		shm.Unmap(d.region.Mem())
		unix.Close(d.memfd)
		d.region = nil
	}
}

// connect tries the local path, then the remote one.
func (d *Device) connect(ctx context.Context) (link, wire.Welcome, error) {
	var errs []error
	if d.opt.LocalSocket != "" {
		l, w, err := dialLocal(ctx, d, d.opt.LocalSocket)
		if err == nil {
			return l, w, nil
		}
		errs = append(errs, fmt.Errorf("local path: %w", err))
	}
	if d.opt.Dial != nil {
		l, w, err := dialRemote(ctx, d)
		if err == nil {
			return l, w, nil
		}
		errs = append(errs, fmt.Errorf("remote path: %w", err))
	}
	return nil, wire.Welcome{}, errors.Join(errs...)
}

// Size is the device size in bytes.
func (d *Device) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(d.size)
}

// Path says which path the device uses now: "local" or "remote" ("" while reconnecting).
func (d *Device) Path() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link == nil {
		return ""
	}
	return d.link.kind()
}

// Epoch is the epoch of the server the device speaks to now.
func (d *Device) Epoch() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.epoch
}

// MaxIO is the largest read or write of one call.
func (d *Device) MaxIO() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.region != nil {
		return min(d.maxIO, d.opt.SlotSize)
	}
	return d.maxIO
}

func (c *Call) finish(err error) {
	c.Err = err
	c.Done <- c
}

// Go starts c; c.Done receives it when it completes. It blocks while QueueDepth calls are in
// flight.
func (d *Device) Go(c *Call) *Call {
	if c.Done == nil {
		c.Done = make(chan *Call, 1)
	}
	if l := d.start(c); l != nil {
		l.started()
	}
	return c
}

// Do runs c and returns it once it completed (c.Done is left alone). On the remote path, when
// no other call is in flight, the calling goroutine reads the reply itself, which spares a
// queue depth 1 caller the hand-off from a receiving goroutine.
func (d *Device) Do(c *Call) *Call {
	done := c.Done
	if c.own == nil {
		c.own = make(chan *Call, 1)
	}
	c.Done = c.own
	if l := d.start(c); l != nil {
		l.await(c)
	} else {
		<-c.Done
	}
	c.Done = done
	return c
}

// start checks c, registers it and sends it on the current link. It returns that link, or nil
// when c is finished already (refused) or waits for a reconnection, which re-sends it.
func (d *Device) start(c *Call) link {
	c.N, c.Err = 0, nil
	var length int
	switch c.Op {
	case wire.OpRead, wire.OpWrite:
		length = len(c.Buf)
		if length > d.MaxIO() {
			c.finish(fmt.Errorf("drd %v of %d bytes: at most %d per call", c.Op, length, d.MaxIO()))
			return nil
		}
	case wire.OpDiscard:
		// A request carries a u32 length: a longer discard must not be cut to its low bits.
		if c.Length > maxDiscard {
			c.finish(fmt.Errorf("drd discard of %d bytes: at most %d per call", c.Length, maxDiscard))
			return nil
		}
		length = int(c.Length)
	case wire.OpFlush:
	default:
		c.finish(fmt.Errorf("drd: unknown operation %v", c.Op))
		return nil
	}
	if c.Op != wire.OpFlush && (c.Offset < 0 || c.Offset%wire.BlockSize != 0 || length%wire.BlockSize != 0 || length == 0) {
		c.finish(fmt.Errorf("drd %v of %d bytes at %d: %w", c.Op, length, c.Offset, wire.StatusMisaligned.Err()))
		return nil
	}
	if !c.owned {
		c.slot = <-d.slots
		if c.Op == wire.OpWrite && d.region != nil {
			copy(d.region.Slot(uint32(c.slot)), c.Buf)
		}
	}
	d.mu.Lock()
	if d.closed || d.failed != nil {
		err := d.failed
		if d.closed {
			err = ErrClosed
		}
		d.mu.Unlock()
		d.releaseSlot(c)
		c.finish(err)
		return nil
	}
	d.nextTag++
	tag := d.nextTag
	d.inflight[tag] = c
	d.order = append(d.order, tag)
	if len(d.order) > 4*len(d.inflight)+1024 {
		d.order = slices.DeleteFunc(d.order, func(t uint64) bool { return d.inflight[t] == nil })
	}
	l, ep := d.link, d.epoch
	d.mu.Unlock()
	if l == nil {
		return nil
	}
	if err := l.send(tag, c, ep); err != nil {
		d.broken(l, err)
		return nil
	}
	return l
}

// busy reports whether l is the current link and calls are in flight.
func (d *Device) busy(l link) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.link == l && len(d.inflight) > 0
}

// complete ends the call of tag with st; data are a read's bytes. It returns false when the
// link must be dropped (stale epoch).
func (d *Device) complete(l link, tag uint64, st wire.Status, data []byte) bool {
	if st == wire.StatusStaleEpoch {
		d.broken(l, wire.ErrStaleEpoch)
		return false
	}
	d.mu.Lock()
	c := d.inflight[tag]
	if c == nil || d.link != l {
		d.mu.Unlock()
		return true
	}
	delete(d.inflight, tag)
	d.mu.Unlock()
	c.N = 0
	err := st.Err()
	if st == wire.StatusOK {
		switch c.Op {
		case wire.OpRead:
			c.N = len(c.Buf)
			if !c.owned || d.region == nil || l.kind() != "local" {
				c.N = copy(c.Buf, data)
				if len(data) != len(c.Buf) {
					c.N = 0
					err = fmt.Errorf("drd read of %d bytes at %d: the server answered %d bytes: %w",
						len(c.Buf), c.Offset, len(data), wire.StatusProtocolError.Err())
				}
			}
		case wire.OpWrite:
			c.N = len(c.Buf)
		}
	}
	d.releaseSlot(c)
	c.finish(err)
	return true
}

// releaseSlot returns the slot of a call that does not own one.
func (d *Device) releaseSlot(c *Call) {
	if !c.owned {
		d.slots <- c.slot
	}
}

// NewCall returns a call that holds one data slot until FreeCall, with Buf (size bytes, at
// most MaxIO) inside it: on the local path the server's io_uring reads into and writes from Buf
// itself, without the copies Go makes for other calls. Each such call takes one of the
// QueueDepth slots for its whole life.
func (d *Device) NewCall(size int) (*Call, error) {
	if size <= 0 || size%wire.BlockSize != 0 || size > d.MaxIO() {
		return nil, fmt.Errorf("drd new call: size %d (want a multiple of %d up to %d)", size, wire.BlockSize, d.MaxIO())
	}
	slot := <-d.slots
	c := &Call{slot: slot, owned: true}
	if d.region != nil {
		c.Buf = d.region.Slot(uint32(slot))[:size]
	} else {
		c.Buf = make([]byte, size)
	}
	return c, nil
}

// FreeCall returns the slot of a call from NewCall; the call must not be in flight.
func (d *Device) FreeCall(c *Call) {
	if c.owned {
		c.owned = false
		d.slots <- c.slot
	}
}

// broken drops l (if it is still the current link) and starts reconnecting.
func (d *Device) broken(l link, err error) {
	d.mu.Lock()
	if d.link != l || l == nil {
		d.mu.Unlock()
		return
	}
	d.link = nil
	closed := d.closed
	if !closed {
		d.reconnects.Add(1) // under mu: Close sets closed under mu before it waits
	}
	d.mu.Unlock()
	l.close()
	if closed {
		return
	}
	d.log.Warn("drd connection lost; reconnecting", "device", d.name, "err", err)
	go func() {
		defer d.reconnects.Done()
		d.reconnect(l)
	}()
}

func (d *Device) reconnect(old link) {
	old.wait()
	deadline := time.Now().Add(d.opt.ReconnectTimeout)
	backoff := 5 * time.Millisecond
	for {
		d.mu.Lock()
		closed := d.closed
		d.mu.Unlock()
		if closed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l, w, err := d.connect(ctx)
		cancel()
		if err == nil && w.Epoch < d.Epoch() {
			// An earlier incarnation than the one this device spoke to last (a server that
			// was moved away and has not stopped yet, or a stale location): never go back.
			err = fmt.Errorf("server at epoch %d, older than epoch %d seen before", w.Epoch, d.Epoch())
			l.close()
			l.wait()
		}
		if err == nil {
			d.mu.Lock()
			if d.closed {
				d.mu.Unlock()
				l.close()
				l.wait()
				return
			}
			d.link, d.epoch, d.size, d.maxIO = l, w.Epoch, w.Size, int(w.MaxIO)
			var resend []uint64
			kept := d.order[:0]
			for _, tag := range d.order {
				if d.inflight[tag] != nil {
					resend = append(resend, tag)
					kept = append(kept, tag)
				}
			}
			d.order = kept
			calls := make([]*Call, len(resend))
			for i, tag := range resend {
				calls[i] = d.inflight[tag]
			}
			d.mu.Unlock()
			d.log.Info("drd reconnected", "device", d.name, "path", l.kind(), "epoch", w.Epoch, "resent", len(resend))
			for i, tag := range resend {
				if err := l.send(tag, calls[i], w.Epoch); err != nil {
					d.broken(l, err)
					return
				}
			}
			if len(resend) > 0 {
				l.started()
			}
			return
		}
		if time.Now().After(deadline) {
			d.fail(fmt.Errorf("drd %s: no server within %v: %w", d.name, d.opt.ReconnectTimeout, err))
			return
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// fail ends every call in flight with err and makes the device unusable.
func (d *Device) fail(err error) {
	d.mu.Lock()
	d.failed = err
	calls := d.inflight
	d.inflight = map[uint64]*Call{}
	d.order = nil
	d.mu.Unlock()
	for _, c := range calls {
		d.releaseSlot(c)
		c.finish(err)
	}
}

// Close ends the connection. Calls still in flight fail with ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	l := d.link
	d.link = nil
	d.mu.Unlock()
	if l != nil {
		l.close()
		l.wait()
	}
	d.reconnects.Wait() // a reconnection in progress uses the region
	d.fail(ErrClosed)
	d.release()
	return nil
}

// run runs calls and waits for them all.
func (d *Device) run(calls []*Call) (int, error) {
	if len(calls) == 1 {
		c := d.Do(calls[0])
		return c.N, c.Err
	}
	done := make(chan *Call, len(calls))
	for _, c := range calls {
		c.Done = done
		d.Go(c)
	}
	n := 0
	var errs []error
	for range calls {
		c := <-done
		n += c.N
		if c.Err != nil {
			errs = append(errs, c.Err)
		}
	}
	return n, errors.Join(errs...)
}

func (d *Device) split(op wire.Op, p []byte, off int64) []*Call {
	max := d.MaxIO()
	var calls []*Call
	for i := 0; i < len(p) || (i == 0 && len(p) == 0); i += max {
		calls = append(calls, &Call{Op: op, Offset: off + int64(i), Buf: p[i:min(i+max, len(p))]})
		if len(p) == 0 {
			break
		}
	}
	return calls
}

// ReadAt reads len(p) bytes at off (whole blocks).
func (d *Device) ReadAt(p []byte, off int64) (int, error) { return d.rw(wire.OpRead, p, off) }

// WriteAt writes p at off (whole blocks); when it returns nil, the data is on the backing.
func (d *Device) WriteAt(p []byte, off int64) (int, error) { return d.rw(wire.OpWrite, p, off) }

func (d *Device) rw(op wire.Op, p []byte, off int64) (int, error) {
	calls := d.split(op, p, off)
	// Sorted by offset already; run them in windows of the queue depth so one call cannot
	// hold every slot.
	n := 0
	for w := range slices.Chunk(calls, d.opt.QueueDepth) {
		m, err := d.run(w)
		n += m
		if err != nil {
			return n, fmt.Errorf("drd %s %v at %d: %w", d.name, op, off, err)
		}
	}
	return n, nil
}

// Flush makes the writes completed so far durable on the backing (fdatasync).
func (d *Device) Flush() error {
	if _, err := d.run([]*Call{{Op: wire.OpFlush}}); err != nil {
		return fmt.Errorf("drd %s flush: %w", d.name, err)
	}
	return nil
}

// maxDiscard is the longest discard of one call (the u32 length of a request, in whole blocks).
const maxDiscard = 1<<32 - wire.BlockSize

// Discard frees length bytes at off (whole blocks); they read as zeros afterwards. A range that
// does not fit the device is refused whole, before any part of it is freed.
func (d *Device) Discard(off, length int64) error {
	if off >= 0 && length > 0 && (off > d.Size() || length > d.Size()-off) {
		return fmt.Errorf("drd %s discard of %d bytes at %d: %w", d.name, length, off, wire.StatusOutOfRange.Err())
	}
	var calls []*Call
	for done := int64(0); done < length || len(calls) == 0; {
		n := min(length-done, maxDiscard)
		calls = append(calls, &Call{Op: wire.OpDiscard, Offset: off + done, Length: n})
		if n <= 0 {
			break
		}
		done += n
	}
	if _, err := d.run(calls); err != nil {
		return fmt.Errorf("drd %s discard: %w", d.name, err)
	}
	return nil
}
