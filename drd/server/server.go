// Package server is DRD's block shipping server: it serves DRD devices (a backing file or block
// device each, 4096-byte blocks, O_DIRECT) through drd/uring to three kinds of client: remote
// clients over a message stream (the cluster transport, or a framed socket), local clients
// through rings in shared memory (see drd/shm), and the NBD front-end (drd/nbd).
//
// Every session has its own io_uring (or the synchronous fallback engine) with the device
// registered as a fixed file and the session's data memory registered as a fixed buffer, driven
// by one goroutine locked to its thread; sessions share nothing but the device's descriptor, so
// they never wait on each other's locks.
//
// Every request is checked before it reaches the disk: its epoch (StatusStaleEpoch when the
// client speaks to an earlier incarnation of the server), its operation, alignment, length and
// range. A bad request gets a status naming what is wrong and changes nothing; a malformed
// message or a broken shared ring ends that client's session only.
//
// The epoch check keeps a client that spoke to an earlier incarnation from having its requests
// run by a later one without re-learning the epoch; it does not stop an earlier incarnation that
// is still running (a device relocated away from a live node). That fence belongs to whoever
// places the device: the old server must be closed (its placement lease lapsed) before the new
// one serves. In a cluster, vigild's DRD manager closes the old server and has its node commit
// the release before the new node serves (cmd/vigild/drd.go); cmd/vigil-drd leaves it to its
// operator.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"vigil/control/transport"
	"vigil/drd/wire"
)

// Config configures a Server.
type Config struct {
	Devices []*Device
	// Epoch identifies this incarnation of the server; it must differ from every earlier one
	// for the same devices (cmd/vigil-drd keeps a counter in a state file).
	Epoch uint64
	// QueueDepth is the most requests in flight per stream session (default 64).
	QueueDepth int
	// SlotSize is the largest read or write per request of a stream session (default 256 KiB,
	// a multiple of 4096, at most wire.MaxIO).
	SlotSize int
	// DisableURing selects the synchronous pread/pwrite engine.
	DisableURing bool
	Logger       *slog.Logger
}

// Server serves devices. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	devices map[string]*Device
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc

	mu       sync.Mutex
	closers  map[any]func() error
	owners   map[any]*owner // the live session of each client that says who it is
	sessions sync.WaitGroup
	closed   bool
}

// New returns a server for cfg.Devices. The server does not own the devices: close them after
// Close.
func New(cfg Config) (*Server, error) {
	if cfg.QueueDepth == 0 {
		cfg.QueueDepth = 64
	}
	if cfg.SlotSize == 0 {
		cfg.SlotSize = 256 << 10
	}
	if cfg.QueueDepth < 1 || cfg.QueueDepth > 4096 {
		return nil, fmt.Errorf("drd server: queue depth %d (want 1 to 4096)", cfg.QueueDepth)
	}
	if cfg.SlotSize < wire.BlockSize || cfg.SlotSize > wire.MaxIO || cfg.SlotSize%wire.BlockSize != 0 {
		return nil, fmt.Errorf("drd server: slot size %d (want a multiple of %d up to %d)", cfg.SlotSize, wire.BlockSize, wire.MaxIO)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, devices: map[string]*Device{}, log: cfg.Logger, closers: map[any]func() error{}, owners: map[any]*owner{}}
	for _, d := range cfg.Devices {
		if _, dup := s.devices[d.Name]; dup {
			return nil, fmt.Errorf("drd server: device %s given twice", d.Name)
		}
		s.devices[d.Name] = d
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Epoch returns the server's epoch.
func (s *Server) Epoch() uint64 { return s.cfg.Epoch }

// Device returns the device named name, or nil.
func (s *Server) Device(name string) *Device { return s.devices[name] }

// track registers a closer that Close calls; it returns false once the server is closed.
func (s *Server) track(key any, closer func() error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closers[key] = closer
	return true
}

func (s *Server) untrack(key any) {
	s.mu.Lock()
	delete(s.closers, key)
	s.mu.Unlock()
}

// owner is the live session of one client: a remote client by its Hello's client id, a local
// one by its shared region.
type owner struct {
	stop func()        // makes the session end soon
	done chan struct{} // closed once its requests in flight are finished
}

// clientKey names a remote client of a device.
type clientKey struct {
	device string
	client uint64
}

// fence ends the earlier session of the same client, if one is still running, and waits until
// the requests it had in flight are finished; then it records the new session. A client
// re-sends its unanswered requests on its new session: without the fence, the earlier copy of a
// write still queued or in flight on the old session could land after a newer write to the same
// block, issued once the re-sent copy was acknowledged, and undo it. The returned function marks
// the new session finished: call it after its last request completed.
func (s *Server) fence(key any, stop func()) (func(), error) {
	me := &owner{stop: stop, done: make(chan struct{})}
	for {
		s.mu.Lock()
		old := s.owners[key]
		if old == nil {
			s.owners[key] = me
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				if s.owners[key] == me {
					delete(s.owners, key)
				}
				s.mu.Unlock()
				close(me.done)
			}, nil
		}
		s.mu.Unlock()
		old.stop()
		select {
		case <-old.done:
		case <-s.ctx.Done():
			return nil, errors.New("server closing")
		}
	}
}

// Close stops accepting, ends every session (their requests in flight complete first) and
// waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for _, c := range s.closers {
		if err := c(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	s.mu.Unlock()
	s.sessions.Wait()
	return errors.Join(errs...)
}

// ServeNet accepts framed message streams (wire.FrameConn) on l until l fails or the server
// closes, and serves each as a remote session.
func (s *Server) ServeNet(l net.Listener) error {
	if !s.track(l, l.Close) {
		return l.Close()
	}
	defer s.untrack(l)
	for {
		c, err := l.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("drd accept: %w", err)
		}
		s.goServe(wire.NewFrameConn(c), c.RemoteAddr().String())
	}
}

// ServeTransport accepts cluster transport streams on l until l fails or the server closes.
func (s *Server) ServeTransport(l transport.Listener) error {
	if !s.track(l, l.Close) {
		return l.Close()
	}
	defer s.untrack(l)
	for {
		c, err := l.Accept(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("drd accept: %w", err)
		}
		s.goServe(c, fmt.Sprintf("node %d", c.Peer()))
	}
}

// Go serves one remote session on c in a goroutine that Close waits for (with the requests
// it has in flight), like a session accepted by ServeNet. A front that reads the Hello itself
// to pick a server hands the stream over with the Hello put back (see ServeConn); if its
// wrapper has a method Unwrap() wire.Conn returning the stream under it, and that is a
// wire.FrameConn on a socket, the session runs in the socket's event loop once the Hello is
// read.
func (s *Server) Go(c wire.Conn, peer string) { s.goServe(c, peer) }

func (s *Server) goServe(c wire.Conn, peer string) {
	s.spawn(c, func() {
		if err := s.ServeConn(c, peer); err != nil {
			s.log.Info("drd session ended", "peer", peer, "err", err)
		}
	})
}

// spawn runs a session on c in a goroutine that Close waits for; once the server is closed it
// closes c instead (counting a session only under mu, so no Add races with Close's Wait).
func (s *Server) spawn(c interface{ Close() error }, session func()) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.sessions.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.sessions.Done()
		session()
	}()
}

// ServeConn serves one remote session on c until the client leaves, the stream breaks or the
// server closes; it closes c. peer names the client in errors and logs.
func (s *Server) ServeConn(c wire.Conn, peer string) error {
	// A framed socket runs in an event loop of its own (serveSocket), which takes the socket
	// over: it is stopped with a shutdown that wakes it, and closes the socket when it returns.
	fc, rc := rawSocket(c)
	if s.cfg.DisableURing {
		rc = nil
	}
	stop := c.Close
	var ss *sockStop
	if rc != nil {
		ss = &sockStop{rc: rc, fd: -1}
		stop = ss.stop
	}
	if !s.track(c, stop) {
		return c.Close()
	}
	defer s.untrack(c)
	defer c.Close()
	ctx := s.ctx
	m, err := c.Recv(ctx)
	if err != nil {
		return fmt.Errorf("drd session from %s: %w", peer, err)
	}
	dev, h, st, msg := s.hello(m)
	if dev != nil && h.Client != 0 {
		finished, err := s.fence(clientKey{dev.Name, h.Client}, func() { stop() })
		if err != nil {
			return fmt.Errorf("drd session from %s: %w", peer, err)
		}
		defer finished() // deferred first: runs after the loop's requests completed
	}
	w := wire.Welcome{Status: st, Message: msg, Epoch: s.cfg.Epoch}
	if dev != nil {
		w.Size, w.BlockSize, w.MaxIO = dev.Size, wire.BlockSize, uint32(s.cfg.SlotSize)
	}
	if err := c.Send(ctx, wire.AppendWelcome(nil, w)); err != nil {
		return fmt.Errorf("drd session from %s: welcome: %w", peer, err)
	}
	if dev == nil {
		return fmt.Errorf("drd session from %s: %s", peer, msg)
	}
	if rc != nil {
		err := s.serveSocket(fc, ss, dev, peer)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNoRing) {
			return fmt.Errorf("drd session from %s: %w", peer, err)
		}
	}
	var sendMu sync.Mutex
	var sendErr error
	send := func(r *wire.Response, buf []byte) []byte {
		buf = wire.AppendResponse(buf[:0], r)
		sendMu.Lock()
		if sendErr == nil {
			if err := c.Send(ctx, buf); err != nil {
				sendErr = err
				c.Close() // the receiver then stops
			}
		}
		sendMu.Unlock()
		return buf
	}
	var loop *ioLoop
	var respBuf []byte
	loop, err = newIOLoop(dev, s.cfg.QueueDepth, s.cfg.SlotSize, s.cfg.DisableURing, s.log,
		func(r *blockReq, st wire.Status, data []byte) {
			respBuf = send(&wire.Response{Tag: r.tag, Epoch: s.cfg.Epoch, Status: st, Data: data}, respBuf)
			if r.slot >= 0 {
				loop.free <- r.slot
			}
		})
	if err != nil {
		return fmt.Errorf("drd session from %s: %w", peer, err)
	}
	go loop.run()
	defer func() { close(loop.in); <-loop.finished }()
	var errBuf []byte
	for {
		m, err := c.Recv(ctx)
		if err != nil {
			sendMu.Lock()
			serr := sendErr
			sendMu.Unlock()
			if serr != nil {
				return fmt.Errorf("drd session from %s: send: %w", peer, serr)
			}
			return fmt.Errorf("drd session from %s: %w", peer, err)
		}
		r, err := wire.DecodeRequest(m)
		st := wire.StatusOK
		switch {
		case err != nil:
			s.log.Warn("drd malformed request", "peer", peer, "err", err)
			st = wire.StatusProtocolError
		case r.Epoch != s.cfg.Epoch:
			st = wire.StatusStaleEpoch
		default:
			st = wire.Check(r.Op, r.Offset, r.Length, dev.Size, uint32(s.cfg.SlotSize))
		}
		if st != wire.StatusOK {
			errBuf = send(&wire.Response{Tag: r.Tag, Epoch: s.cfg.Epoch, Status: st}, errBuf)
			continue
		}
		br, ok := loop.newReq(r.Op, r.Offset, r.Length, r.Data, r.Tag, ctx.Done())
		if !ok {
			return fmt.Errorf("drd session from %s: server closing", peer)
		}
		loop.in <- br
	}
}

// hello checks a Hello message and returns the device it names and the hello, or the status
// and message of the refusal.
func (s *Server) hello(m []byte) (*Device, wire.Hello, wire.Status, string) {
	h, err := wire.DecodeHello(m)
	if err != nil {
		return nil, h, wire.StatusProtocolError, err.Error()
	}
	if h.Version != wire.Version {
		return nil, h, wire.StatusBadVersion, fmt.Sprintf("protocol version %d, this server speaks %d", h.Version, wire.Version)
	}
	dev := s.devices[h.Device]
	if dev == nil {
		return nil, h, wire.StatusNoDevice, fmt.Sprintf("no device %q on this server", h.Device)
	}
	return dev, h, wire.StatusOK, ""
}
