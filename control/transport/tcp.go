package transport

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// TCPConfig configures a TCP transport.
type TCPConfig struct {
	// Local is this node's id.
	Local NodeID
	// Key is the cluster key (the heartbeat key file's 16 bytes); both ends prove they hold it.
	Key []byte
	// Listen is where peers reach this node: its cluster address and the transport port.
	// Port 0 picks a free port (tests). A specific address is also the source of Dials.
	Listen netip.AddrPort
	// Peers maps each peer to its address; SetPeer changes it later.
	Peers map[NodeID]netip.AddrPort
	// HandshakeTimeout bounds connecting and authenticating (default 2 s).
	HandshakeTimeout time.Duration
	// UserTimeout breaks a stream whose sent data stays unacknowledged this long
	// (TCP_USER_TIMEOUT; default 5 s). Reset breaks it at once when the heartbeat plane knows.
	UserTimeout time.Duration
	// RTOMin, when set, lowers the socket's minimum retransmission timeout (TCP_RTO_MIN_US,
	// Linux ≥ 6.15), so that a segment lost on a link that failed is re-sent in milliseconds,
	// not after the default 200 ms.
	RTOMin time.Duration
	// Logger receives rejected handshakes; nil discards.
	Logger *slog.Logger
	// Watch, when set, is given the descriptor of every stream as it opens (after its
	// handshake), with the stream's service: the daemon watches raft's for input its
	// heartbeat sender must not keep waiting (internal/attention). The descriptor stays the
	// transport's: Watch must not read, write or close it.
	Watch func(svc Service, fd int)
}

// TCP is the transport the daemon runs: one TCP connection per stream, authenticated by the
// handshake in handshake.go.
type TCP struct {
	cfg TCPConfig
	log *slog.Logger
	ln  *net.TCPListener

	mu        sync.Mutex
	closed    bool
	peers     map[NodeID]netip.AddrPort
	listeners map[Service]*queueListener
	conns     map[*tcpConn]struct{}
	wg        sync.WaitGroup
}

// NewTCP checks cfg, listens and returns the transport.
func NewTCP(cfg TCPConfig) (*TCP, error) {
	if cfg.Local == 0 {
		return nil, errors.New("tcp transport: local node id 0")
	}
	if len(cfg.Key) < 16 {
		return nil, fmt.Errorf("tcp transport: key of %d bytes, want at least 16", len(cfg.Key))
	}
	if !cfg.Listen.IsValid() {
		return nil, errors.New("tcp transport: no listen address")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 2 * time.Second
	}
	if cfg.UserTimeout <= 0 {
		cfg.UserTimeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &TCP{cfg: cfg, log: log, peers: map[NodeID]netip.AddrPort{},
		listeners: map[Service]*queueListener{}, conns: map[*tcpConn]struct{}{}}
	for id, a := range cfg.Peers {
		t.peers[id] = a
	}
	lc := net.ListenConfig{Control: t.control, KeepAliveConfig: keepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Listen.String())
	if err != nil {
		return nil, fmt.Errorf("tcp transport: listen on %s: %w", cfg.Listen, err)
	}
	t.ln = ln.(*net.TCPListener)
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

var keepAlive = net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 3}

// control sets the socket options of every stream's socket.
func (t *TCP) control(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(t.cfg.UserTimeout/time.Millisecond))
		if serr == nil && t.cfg.RTOMin > 0 {
			if e := unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_RTO_MIN_US, int(t.cfg.RTOMin/time.Microsecond)); e != nil {
				serr = fmt.Errorf("TCP_RTO_MIN_US: %w", e)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Addr is the address the transport listens on (with the port picked when Listen had 0).
func (t *TCP) Addr() netip.AddrPort { return t.ln.Addr().(*net.TCPAddr).AddrPort() }

// Local is this node's id.
func (t *TCP) Local() NodeID { return t.cfg.Local }

// SetPeer sets where peer id is reached (a node added to the cluster, or moved).
func (t *TCP) SetPeer(id NodeID, addr netip.AddrPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.peers[id] = addr
}

// RemovePeer forgets peer id and breaks its streams.
func (t *TCP) RemovePeer(id NodeID) {
	t.mu.Lock()
	delete(t.peers, id)
	t.mu.Unlock()
	t.Reset(id)
}

// Dial opens an authenticated stream to svc on peer.
func (t *TCP) Dial(ctx context.Context, peer NodeID, svc Service) (Conn, error) {
	t.mu.Lock()
	addr, ok := t.peers[peer]
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok {
		return nil, fmt.Errorf("dial node %d: %w", peer, ErrUnknownPeer)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	d := net.Dialer{Control: t.control, KeepAliveConfig: keepAlive}
	if a := t.cfg.Listen.Addr(); !a.IsUnspecified() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
	}
	nc, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("dial node %d at %s: %w", peer, addr, err)
	}
	c := nc.(*net.TCPConn)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	err = t.clientHandshake(c, peer, svc)
	if !stop() || err != nil {
		c.Close()
		if ctx.Err() != nil && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)) {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("dial node %d at %s service %s: %w", peer, addr, svc, err)
	}
	c.SetDeadline(time.Time{})
	return t.track(c, peer, svc)
}

func (t *TCP) clientHandshake(c *net.TCPConn, peer NodeID, svc Service) error {
	h := hello{Version: protoVersion, Service: svc, From: t.cfg.Local, To: peer}
	rand.Read(h.Nonce[:])
	hb := h.marshal()
	if _, err := c.Write(hb); err != nil {
		return err
	}
	var ch [challengeSize]byte
	if _, err := io.ReadFull(c, ch[:]); err != nil {
		return fmt.Errorf("read challenge: %w", err)
	}
	nonce, mac := ch[:nonceSize], ch[nonceSize:]
	if !hmac.Equal(mac, proof(t.cfg.Key, "listener", hb, nonce)) {
		return fmt.Errorf("%w: the listener did not prove the cluster key", ErrAuth)
	}
	if _, err := c.Write(proof(t.cfg.Key, "dialer", hb, nonce)); err != nil {
		return err
	}
	var v [1]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return fmt.Errorf("read verdict: %w", err)
	}
	switch v[0] {
	case verdictAccepted:
		return nil
	case verdictNotListening:
		return ErrNotListening
	case verdictWrongNode:
		return fmt.Errorf("the listener is not node %d", peer)
	}
	return fmt.Errorf("unknown verdict %d", v[0])
}

func (t *TCP) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("transport accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			if err := t.serverHandshake(c); err != nil {
				t.log.Warn("transport handshake refused", "remote", c.RemoteAddr().String(), "err", err)
				c.Close()
			}
		}()
	}
}

func (t *TCP) serverHandshake(c *net.TCPConn) error {
	c.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var hb [helloSize]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	h, err := parseHello(hb[:])
	if err != nil {
		return err
	}
	var ch [challengeSize]byte
	rand.Read(ch[:nonceSize])
	copy(ch[nonceSize:], proof(t.cfg.Key, "listener", hb[:], ch[:nonceSize]))
	if _, err := c.Write(ch[:]); err != nil {
		return err
	}
	var resp [macSize]byte
	if _, err := io.ReadFull(c, resp[:]); err != nil {
		return fmt.Errorf("claimed node %d: read response: %w", h.From, err)
	}
	if !hmac.Equal(resp[:], proof(t.cfg.Key, "dialer", hb[:], ch[:nonceSize])) {
		return fmt.Errorf("claimed node %d: %w: wrong cluster key", h.From, ErrAuth)
	}
	if h.To != t.cfg.Local {
		c.Write([]byte{verdictWrongNode})
		return fmt.Errorf("node %d dialled node %d, this is node %d", h.From, h.To, t.cfg.Local)
	}
	t.mu.Lock()
	l := t.listeners[h.Service]
	t.mu.Unlock()
	if l == nil {
		c.Write([]byte{verdictNotListening})
		return fmt.Errorf("node %d: no listener for service %s", h.From, h.Service)
	}
	if _, err := c.Write([]byte{verdictAccepted}); err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	conn, err := t.track(c, h.From, h.Service)
	if err != nil {
		return err
	}
	select {
	case l.queue <- conn:
	case <-l.done:
		conn.Close()
	}
	return nil
}

func (t *TCP) track(c *net.TCPConn, peer NodeID, svc Service) (*tcpConn, error) {
	conn := &tcpConn{t: t, c: c, peer: peer, svc: svc, br: bufio.NewReaderSize(c, 64<<10)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return nil, ErrClosed
	}
	t.conns[conn] = struct{}{}
	if t.cfg.Watch != nil {
		if rc, err := c.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { t.cfg.Watch(svc, int(fd)) })
		}
	}
	return conn, nil
}

// Listen accepts streams for svc.
func (t *TCP) Listen(svc Service) (Listener, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.listeners[svc] != nil {
		return nil, fmt.Errorf("listen %s on node %d: already listening", svc, t.cfg.Local)
	}
	l := newQueueListener(0, func(l *queueListener) {
		t.mu.Lock()
		if t.listeners[svc] == l {
			delete(t.listeners, svc)
		}
		t.mu.Unlock()
	})
	t.listeners[svc] = l
	return l, nil
}

// Reset breaks every stream to peer, but those of the services in keep.
func (t *TCP) Reset(peer NodeID, keep ...Service) {
	t.mu.Lock()
	var cs []*tcpConn
	for c := range t.conns {
		if c.peer == peer && !slices.Contains(keep, c.svc) {
			cs = append(cs, c)
		}
	}
	t.mu.Unlock()
	for _, c := range cs {
		c.fail(fmt.Errorf("%w: stream to node %d reset", ErrClosed, peer))
	}
}

// Close stops listening and breaks every stream.
func (t *TCP) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	ls, cs := t.listeners, t.conns
	t.listeners, t.conns = map[Service]*queueListener{}, map[*tcpConn]struct{}{}
	t.mu.Unlock()
	err := t.ln.Close()
	for _, l := range ls {
		l.shut()
	}
	for c := range cs {
		c.fail(ErrClosed)
	}
	t.wg.Wait()
	return err
}

// tcpConn is one stream. Send may be called concurrently; Recv from one goroutine at a time.
// A Recv cut short by its context keeps the part of the message already read, so the next
// Recv continues where it stopped; a Send cut short in the middle of a message breaks the
// stream (the peer could not find the next message's start).
type tcpConn struct {
	t    *TCP
	c    *net.TCPConn
	peer NodeID
	svc  Service

	wmu sync.Mutex

	rmu   sync.Mutex
	br    *bufio.Reader
	hdr   [4]byte
	hdrN  int
	body  []byte
	bodyN int

	emu sync.Mutex
	err error // sticky: why the stream ended
}

func (c *tcpConn) Peer() NodeID     { return c.peer }
func (c *tcpConn) Service() Service { return c.svc }

func (c *tcpConn) failure() error {
	c.emu.Lock()
	defer c.emu.Unlock()
	return c.err
}

// fail ends the stream with err (the first cause wins) and returns the stream's error.
func (c *tcpConn) fail(err error) error {
	c.emu.Lock()
	if c.err == nil {
		c.err = err
		c.c.Close()
	}
	err = c.err
	c.emu.Unlock()
	c.t.mu.Lock()
	delete(c.t.conns, c)
	c.t.mu.Unlock()
	return err
}

var longAgo = time.Unix(1, 0)

// arm sets the deadline of one call from ctx and returns the function that disarms it.
func arm(ctx context.Context, set func(time.Time) error) func() {
	d, _ := ctx.Deadline()
	set(d)
	if ctx.Done() == nil {
		return func() {}
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { set(longAgo); close(fired) })
	return func() {
		if !stop() {
			<-fired // it runs or ran: let it finish before the next call sets its deadline
		}
	}
}

// ctxCause returns ctx's error when err is a deadline that ctx set (the socket's deadline can
// fire a moment before ctx's own timer), and nil when err has another cause.
func ctxCause(ctx context.Context, err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *tcpConn) Send(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("send %d bytes to node %d: %w", len(msg), c.peer, ErrTooLarge)
	}
	if err := c.failure(); err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	disarm := arm(ctx, c.c.SetWriteDeadline)
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
	bufs := net.Buffers{hdr[:], msg}
	n, err := bufs.WriteTo(c.c)
	disarm()
	if err == nil {
		return nil
	}
	if cerr := ctxCause(ctx, err); cerr != nil {
		if n == 0 {
			return cerr // nothing written: the stream is intact
		}
		return c.fail(fmt.Errorf("%w: send to node %d cut short by %v", ErrClosed, c.peer, cerr))
	}
	return c.fail(fmt.Errorf("%w: send to node %d: %v", ErrClosed, c.peer, err))
}

func (c *tcpConn) Recv(ctx context.Context) ([]byte, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if err := c.failure(); err != nil {
		return nil, err
	}
	disarm := arm(ctx, c.c.SetReadDeadline)
	defer disarm()
	for {
		for c.hdrN < len(c.hdr) {
			n, err := c.br.Read(c.hdr[c.hdrN:])
			c.hdrN += n
			if err != nil {
				return nil, c.readError(ctx, err)
			}
		}
		if c.body != nil || binary.BigEndian.Uint32(c.hdr[:]) != nopFrame {
			break
		}
		c.hdrN = 0 // a nudge: nothing for the caller
	}
	if c.body == nil {
		size := binary.BigEndian.Uint32(c.hdr[:])
		if size > MaxMessage {
			return nil, c.fail(fmt.Errorf("%w: node %d sent a %d-byte message (limit %d)", ErrClosed, c.peer, size, MaxMessage))
		}
		c.body = make([]byte, size)
	}
	for c.bodyN < len(c.body) {
		n, err := c.br.Read(c.body[c.bodyN:])
		c.bodyN += n
		if err != nil {
			return nil, c.readError(ctx, err)
		}
	}
	msg := c.body
	c.hdrN, c.body, c.bodyN = 0, nil, 0
	return msg, nil
}

func (c *tcpConn) readError(ctx context.Context, err error) error {
	if cerr := ctxCause(ctx, err); cerr != nil {
		return cerr // the partial message stays for the next Recv
	}
	if ferr := c.failure(); ferr != nil {
		return ferr
	}
	if errors.Is(err, io.EOF) {
		if c.hdrN == 0 {
			return c.fail(fmt.Errorf("%w: node %d closed the stream", ErrPeerClosed, c.peer))
		}
		return c.fail(fmt.Errorf("%w: node %d closed the stream in the middle of a message", ErrPeerClosed, c.peer))
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return c.fail(fmt.Errorf("%w: node %d reset the stream", ErrPeerClosed, c.peer))
	}
	return c.fail(fmt.Errorf("%w: receive from node %d: %v", ErrClosed, c.peer, err))
}

// A nudge sends as many no-op frames, each its own segment, as TCP's duplicate threshold on
// the stream (its reordering degree, 3 unless it saw reordering): then RACK marks the hole
// lost at once, instead of waiting a reordering window that its jiffy timer rounds up to
// milliseconds.
const (
	nudgeMinSegments = 3
	nudgeMaxSegments = 16
)

// nopFrame is the length word of a frame without payload that Recv skips: the nudge.
const nopFrame = 0xffffffff

// Nudge makes TCP re-send at once what a failed link lost on the streams to peer. Call it
// on both ends when the heartbeat plane reports a link to peer down: the eBPF link selection
// has already moved the packets to a live link, but a segment that went out on the failed link
// just before is only re-sent when TCP notices the loss, and with nothing sent after it that
// takes a loss probe or a retransmission timeout (200 ms by default, RTOMin at the least).
// Nudge sends no-op frames on every stream to peer over the live link: on a stream with
// unacknowledged data, as many as TCP's duplicate threshold, so that the peer's selective
// acknowledgements of them show the hole and RACK re-sends the lost segment within a round
// trip; on a stream with nothing in flight, one, which carries this end's own (selective)
// acknowledgements to the peer, whose earlier ones the failed link may have swallowed (the
// two ends detect a failure at different moments). A stream busy sending is skipped: its own
// next segment does the same. It returns how many streams it nudged.
func (t *TCP) Nudge(peer NodeID) int {
	t.mu.Lock()
	var cs []*tcpConn
	for c := range t.conns {
		if c.peer == peer {
			cs = append(cs, c)
		}
	}
	t.mu.Unlock()
	n := 0
	for _, c := range cs {
		if c.nudge() {
			n++
		}
	}
	return n
}

func (c *tcpConn) nudge() bool {
	if !c.wmu.TryLock() {
		return false
	}
	defer c.wmu.Unlock()
	if c.failure() != nil {
		return false
	}
	// With nothing of ours in flight, one frame: it carries this end's acknowledgement and
	// selective acknowledgements over the live link, for the peer's segments the failed link
	// swallowed (or its SACKs that went the same way).
	segments := uint32(1)
	if unacked, reordering := c.lossState(); unacked > 0 {
		segments = min(max(reordering, nudgeMinSegments), nudgeMaxSegments)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], nopFrame)
	c.c.SetWriteDeadline(time.Now().Add(time.Millisecond))
	rc, err := c.c.SyscallConn()
	if err != nil {
		return false
	}
	for range segments {
		n, err := c.c.Write(hdr[:])
		if err != nil {
			if n > 0 {
				c.fail(fmt.Errorf("%w: nudge to node %d cut short: %v", ErrClosed, c.peer, err))
			}
			return false
		}
		// Setting TCP_NODELAY pushes the frame out now: TCP's autocorking would otherwise
		// merge the small frames into one segment.
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) })
	}
	return true
}

// lossState returns how many segments are sent and not yet acknowledged, and TCP's current
// duplicate threshold (its reordering degree: 3 unless it saw reordering on this stream).
func (c *tcpConn) lossState() (unacked, reordering uint32) {
	rc, err := c.c.SyscallConn()
	if err != nil {
		return 0, 0
	}
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			unacked, reordering = info.Unacked, info.Reordering
		}
	})
	return unacked, reordering
}

func (c *tcpConn) Close() error {
	c.fail(ErrClosed)
	return nil
}
