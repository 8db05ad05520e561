package transport

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemoryQueue is how many messages a Memory stream buffers in each direction before Send
// blocks.
const MemoryQueue = 64

// Memory is an in-process network of transports, for pure tests and simulations: streams are
// pairs of bounded queues, Partition breaks the streams between two nodes and refuses new ones
// until Heal. It is safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	nodes   map[NodeID]*memNode
	blocked map[[2]NodeID]bool
}

// NewMemory returns an empty in-memory network.
func NewMemory() *Memory {
	return &Memory{nodes: map[NodeID]*memNode{}, blocked: map[[2]NodeID]bool{}}
}

// Node returns the transport of node id, creating it on first use. After its Close, Node
// returns a new transport for the same id (a restarted daemon).
func (m *Memory) Node(id NodeID) Transport {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[id]; n != nil {
		return n
	}
	n := &memNode{net: m, id: id, listeners: map[Service]*queueListener{}, conns: map[*memStream]bool{}}
	m.nodes[id] = n
	return n
}

func pairKey(a, b NodeID) [2]NodeID {
	if a > b {
		a, b = b, a
	}
	return [2]NodeID{a, b}
}

// Partition cuts a from b: their streams break and Dial between them fails until Heal.
func (m *Memory) Partition(a, b NodeID) {
	m.mu.Lock()
	m.blocked[pairKey(a, b)] = true
	var broken []*memStream
	for _, id := range []NodeID{a, b} {
		if n := m.nodes[id]; n != nil {
			n.mu.Lock()
			for s := range n.conns {
				if pairKey(s.ends[0].peer, s.ends[1].peer) == pairKey(a, b) {
					broken = append(broken, s)
				}
			}
			n.mu.Unlock()
		}
	}
	m.mu.Unlock()
	for _, s := range broken {
		s.shut(true, fmt.Errorf("%w: partitioned from node %d", ErrClosed, s.ends[0].peer))
	}
}

// Heal undoes Partition(a, b).
func (m *Memory) Heal(a, b NodeID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blocked, pairKey(a, b))
}

type memNode struct {
	net *Memory
	id  NodeID

	mu        sync.Mutex
	closed    bool
	listeners map[Service]*queueListener
	conns     map[*memStream]bool
}

func (n *memNode) Local() NodeID { return n.id }

func (n *memNode) Dial(ctx context.Context, peer NodeID, svc Service) (Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.net.mu.Lock()
	p := n.net.nodes[peer]
	blocked := n.net.blocked[pairKey(n.id, peer)]
	n.net.mu.Unlock()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case p == nil:
		return nil, fmt.Errorf("dial node %d: %w", peer, ErrUnknownPeer)
	case blocked:
		return nil, fmt.Errorf("dial node %d: unreachable (partitioned)", peer)
	}
	p.mu.Lock()
	l := p.listeners[svc]
	p.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial node %d service %s: %w", peer, svc, ErrNotListening)
	}
	s := newMemStream(n, p, svc)
	select {
	case l.queue <- s.ends[1]:
		return s.ends[0], nil
	case <-l.done:
		s.shut(true, ErrClosed)
		return nil, fmt.Errorf("dial node %d service %s: %w", peer, svc, ErrNotListening)
	case <-ctx.Done():
		s.shut(true, ErrClosed)
		return nil, ctx.Err()
	}
}

func (n *memNode) Listen(svc Service) (Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrClosed
	}
	if n.listeners[svc] != nil {
		return nil, fmt.Errorf("listen %s on node %d: already listening", svc, n.id)
	}
	l := newQueueListener(16, func(l *queueListener) {
		n.mu.Lock()
		if n.listeners[svc] == l {
			delete(n.listeners, svc)
		}
		n.mu.Unlock()
	})
	n.listeners[svc] = l
	return l, nil
}

func (n *memNode) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	ls := n.listeners
	n.listeners = map[Service]*queueListener{}
	var streams []*memStream
	for s := range n.conns {
		streams = append(streams, s)
	}
	n.mu.Unlock()
	for _, l := range ls {
		l.shut()
	}
	for _, s := range streams {
		s.shut(true, fmt.Errorf("%w: node %d closed its transport", ErrClosed, n.id))
	}
	n.net.mu.Lock()
	if n.net.nodes[n.id] == n {
		delete(n.net.nodes, n.id)
	}
	n.net.mu.Unlock()
	return nil
}

// memStream is one stream: two ends, each with the queue it receives from.
type memStream struct {
	ends     [2]*memConn
	closedBy *memConn // the end whose Close ended the stream; set before done is closed
	nodes    [2]*memNode
	once     sync.Once
	done     chan struct{} // closed when the stream ends
	err      error         // why; set before done is closed
	abort    bool          // broken rather than closed: queued messages are lost
}

func newMemStream(a, b *memNode, svc Service) *memStream {
	s := &memStream{nodes: [2]*memNode{a, b}, done: make(chan struct{})}
	qa, qb := make(chan []byte, MemoryQueue), make(chan []byte, MemoryQueue)
	s.ends[0] = &memConn{s: s, peer: b.id, svc: svc, in: qa, out: qb}
	s.ends[1] = &memConn{s: s, peer: a.id, svc: svc, in: qb, out: qa}
	for _, n := range s.nodes {
		n.mu.Lock()
		n.conns[s] = true
		n.mu.Unlock()
	}
	return s
}

func (s *memStream) shut(abort bool, err error) { s.shutBy(nil, abort, err) }

func (s *memStream) shutBy(by *memConn, abort bool, err error) {
	s.once.Do(func() {
		s.err, s.abort, s.closedBy = err, abort, by
		close(s.done)
		for _, n := range s.nodes {
			n.mu.Lock()
			delete(n.conns, s)
			n.mu.Unlock()
		}
	})
}

type memConn struct {
	s    *memStream
	peer NodeID
	svc  Service
	in   chan []byte
	out  chan []byte
}

func (c *memConn) Peer() NodeID     { return c.peer }
func (c *memConn) Service() Service { return c.svc }

func (c *memConn) Send(ctx context.Context, msg []byte) error {
	if len(msg) > MaxMessage {
		return fmt.Errorf("send %d bytes to node %d: %w", len(msg), c.peer, ErrTooLarge)
	}
	select {
	case <-c.s.done:
		return c.ended()
	default:
	}
	m := append([]byte(nil), msg...)
	select {
	case c.out <- m:
		return nil
	case <-c.s.done:
		return c.ended()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *memConn) Recv(ctx context.Context) ([]byte, error) {
	select {
	case m := <-c.in:
		if c.isAborted() {
			return nil, c.ended()
		}
		return m, nil
	default:
	}
	select {
	case m := <-c.in:
		if c.isAborted() {
			return nil, c.ended()
		}
		return m, nil
	case <-c.s.done:
		if !c.s.abort {
			// A closed stream still delivers what was sent before the close.
			select {
			case m := <-c.in:
				return m, nil
			default:
			}
		}
		return nil, c.ended()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *memConn) isAborted() bool {
	select {
	case <-c.s.done:
		return c.s.abort
	default:
		return false
	}
}

func (c *memConn) Close() error {
	c.s.shutBy(c, false, ErrClosed)
	return nil
}

// ended is the error of a call on c after the stream ended.
func (c *memConn) ended() error {
	if by := c.s.closedBy; by != nil && by != c {
		return fmt.Errorf("%w: node %d closed the stream", ErrPeerClosed, c.peer)
	}
	return c.s.err
}

func (n *memNode) Reset(peer NodeID, keep ...Service) {
	n.mu.Lock()
	var broken []*memStream
	for s := range n.conns {
		a, b := s.nodes[0].id, s.nodes[1].id
		if (a == n.id && b == peer || a == peer && b == n.id) && !slices.Contains(keep, s.ends[0].svc) {
			broken = append(broken, s)
		}
	}
	n.mu.Unlock()
	for _, s := range broken {
		s.shut(true, fmt.Errorf("%w: stream to node %d reset", ErrClosed, peer))
	}
}
