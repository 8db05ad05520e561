package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"vigil/drd/wire"
)

// Export describes a served device.
type Export struct {
	Name string
	Size uint64
}

// Exports lists the served devices, sorted by name.
func (s *Server) Exports() []Export {
	var out []Export
	for _, d := range s.cfg.Devices {
		out = append(out, Export{Name: d.Name, Size: d.Size})
	}
	slices.SortFunc(out, func(a, b Export) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// MaxIO is the largest read or write of one request of a stream session.
func (s *Server) MaxIO() int { return s.cfg.SlotSize }

// Session runs block requests for a front-end that has its own wire protocol (NBD): requests
// go in with Submit, completions come out through the function given to NewSession, called
// from the session's I/O goroutine with the read data (valid during the call only).
type Session struct {
	s      *Server
	dev    *Device
	loop   *ioLoop
	mu     sync.Mutex
	closed bool
}

// ErrNoDevice is returned by NewSession for a name the server does not serve.
var ErrNoDevice = errors.New("no such device")

// NewSession opens a session on the device name.
func (s *Server) NewSession(name string, done func(tag uint64, st wire.Status, data []byte)) (*Session, error) {
	dev := s.devices[name]
	if dev == nil {
		return nil, fmt.Errorf("session on %q: %w", name, ErrNoDevice)
	}
	ss := &Session{s: s, dev: dev}
	var err error
	ss.loop, err = newIOLoop(dev, s.cfg.QueueDepth, s.cfg.SlotSize, s.cfg.DisableURing, s.log,
		func(r *blockReq, st wire.Status, data []byte) {
			done(r.tag, st, data)
			if r.slot >= 0 {
				ss.loop.free <- r.slot
			}
		})
	if err != nil {
		return nil, err
	}
	go ss.loop.run()
	return ss, nil
}

// Size is the device size.
func (ss *Session) Size() uint64 { return ss.dev.Size }

// Submit checks a request and starts it. A request that fails the checks is not started: its
// status is returned and done is not called for it. Submit blocks while the session's queue
// depth is in flight. write is the data of a write (copied before Submit returns).
func (ss *Session) Submit(op wire.Op, off uint64, length uint32, write []byte, tag uint64) wire.Status {
	if st := wire.Check(op, off, length, ss.dev.Size, uint32(ss.s.cfg.SlotSize)); st != wire.StatusOK {
		return st
	}
	if op == wire.OpWrite && len(write) != int(length) {
		return wire.StatusProtocolError
	}
	br, ok := ss.loop.newReq(op, off, length, write, tag, ss.s.ctx.Done())
	if !ok {
		return wire.StatusShuttingDown
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		if br.slot >= 0 {
			ss.loop.free <- br.slot
		}
		return wire.StatusShuttingDown
	}
	ss.loop.in <- br
	return wire.StatusOK
}

// Close waits for the requests in flight (their completions are delivered) and ends the
// session.
func (ss *Session) Close() {
	ss.mu.Lock()
	if ss.closed {
		ss.mu.Unlock()
		return
	}
	ss.closed = true
	close(ss.loop.in)
	ss.mu.Unlock()
	<-ss.loop.finished
}
