// Package transport carries messages between the daemons of a cluster: reliable, ordered,
// message-oriented streams from one node to a service on another node, authenticated with the
// cluster key. It is the only way that raft, DRD block shipping and locks talk between nodes.
//
// A Transport is addressed by node id: it reaches a peer through the peer's cluster address, and
// which private link carries the packets is decided below it (the eBPF link selection of the
// interconnect). Memory is an in-process network for pure tests and simulations; TCP is the
// implementation the daemon runs.
//
// # Contract
//
// A stream carries whole messages (up to MaxMessage bytes), in order, without loss or
// duplication while it lives. Send blocks while the stream's send buffer is full (back-pressure)
// or until its context ends. A stream that breaks fails every later call with an error wrapping
// ErrClosed or the cause; what was sent but not yet received when it broke is lost with it, so
// protocols above keep their own acknowledgements (raft does; DRD re-sends in-flight requests
// after reconnecting).
package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// NodeID is a node's id in the cluster, 1 .. 63.
type NodeID uint16

// Service names the component a stream belongs to; each listens for its own.
type Service uint8

// The services of the daemon.
const (
	ServiceRaft  Service = 1   // raft messages between cluster database replicas
	ServiceDRD   Service = 2   // DRD block shipping
	ServiceDLM   Service = 3   // distributed locks (later)
	ServiceBench Service = 200 // bench and test traffic
)

func (s Service) String() string {
	switch s {
	case ServiceRaft:
		return "raft"
	case ServiceDRD:
		return "drd"
	case ServiceDLM:
		return "dlm"
	case ServiceBench:
		return "bench"
	}
	return fmt.Sprintf("service-%d", uint8(s))
}

// MaxMessage is the largest message a stream carries.
const MaxMessage = 16 << 20

// Errors that callers branch on.
var (
	ErrClosed = errors.New("transport: closed")
	// ErrPeerClosed (which wraps ErrClosed) ends a stream that the other end closed: its
	// daemon closed it, or exited and its kernel closed the socket.
	ErrPeerClosed   = fmt.Errorf("%w by the peer", ErrClosed)
	ErrUnknownPeer  = errors.New("transport: unknown peer")
	ErrNotListening = errors.New("transport: no listener for the service on the peer")
	ErrAuth         = errors.New("transport: authentication failed")
	ErrTooLarge     = errors.New("transport: message too large")
)

// Transport opens and accepts streams between this node and its peers.
type Transport interface {
	// Local is this node's id.
	Local() NodeID
	// Dial opens a stream to svc on peer.
	Dial(ctx context.Context, peer NodeID, svc Service) (Conn, error)
	// Listen accepts the streams peers open to svc on this node. One listener per service.
	Listen(svc Service) (Listener, error)
	// Reset breaks every stream between this node and peer, at once: the heartbeat plane
	// reported the peer down, and waiting for the network stack to notice takes seconds.
	// Streams of the services in keep stay. Later Dials are allowed (they fail while the peer
	// stays unreachable).
	Reset(peer NodeID, keep ...Service)
	// Close closes every listener and stream of this transport.
	Close() error
}

// Listener accepts streams for one service.
type Listener interface {
	// Accept returns the next authenticated stream.
	Accept(ctx context.Context) (Conn, error)
	Close() error
}

// Conn is one stream between two nodes.
type Conn interface {
	// Peer is the node at the other end (authenticated).
	Peer() NodeID
	// Service is the service the stream belongs to.
	Service() Service
	// Send queues one message. The stream keeps no reference to msg after Send returns.
	Send(ctx context.Context, msg []byte) error
	// Recv returns the next message. The caller owns the returned slice.
	Recv(ctx context.Context) ([]byte, error)
	// Close ends the stream; the peer's Recv then fails with ErrClosed.
	Close() error
}

// queueListener is the Listener of both implementations: accepted streams wait on a queue.
type queueListener struct {
	queue  chan Conn
	done   chan struct{}
	once   sync.Once
	remove func(*queueListener) // drops it from its transport's table
}

func newQueueListener(depth int, remove func(*queueListener)) *queueListener {
	return &queueListener{queue: make(chan Conn, depth), done: make(chan struct{}), remove: remove}
}

func (l *queueListener) Accept(ctx context.Context) (Conn, error) {
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// shut stops accepting; the transport has already dropped it from its table.
func (l *queueListener) shut() { l.once.Do(func() { close(l.done) }) }

func (l *queueListener) Close() error {
	l.remove(l)
	l.shut()
	return nil
}
