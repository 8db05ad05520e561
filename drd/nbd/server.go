package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"vigil/drd/server"
	"vigil/drd/wire"
)

// Server exports the devices of a DRD server over NBD.
type Server struct {
	backend *server.Server
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewServer returns an NBD front-end for backend.
func NewServer(backend *server.Server, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{backend: backend, log: log, conns: map[io.Closer]struct{}{}}
}

func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Serve accepts NBD clients on l (a unix socket, or TCP on loopback or a private network:
// NBD here has no TLS) until l fails or the server closes.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		return l.Close()
	}
	defer s.untrack(l)
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("nbd accept: %w", err)
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			if err := s.ServeConn(c); err != nil {
				s.log.Info("nbd connection ended", "peer", c.RemoteAddr(), "err", err)
			}
		}()
	}
}

// Close closes the listeners and connections and waits for the connections' requests.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// ServeConn runs the negotiation and then the transmission phase on c, and closes c.
func (s *Server) ServeConn(c net.Conn) error {
	defer c.Close()
	peer := c.RemoteAddr().String()
	r := bufio.NewReaderSize(c, 256<<10)
	c.SetDeadline(time.Now().Add(30 * time.Second)) // negotiation must not hang forever
	if _, err := c.Write(Greeting()); err != nil {
		return fmt.Errorf("nbd %s: greeting: %w", peer, err)
	}
	var flags [4]byte
	if _, err := io.ReadFull(r, flags[:]); err != nil {
		return fmt.Errorf("nbd %s: client flags: %w", peer, err)
	}
	var exports []Export
	for _, e := range s.backend.Exports() {
		exports = append(exports, Export{Name: e.Name, Size: e.Size})
	}
	n := &Negotiator{Exports: exports, MaxIO: uint32(s.backend.MaxIO())}
	if err := n.ClientFlags(flags[:]); err != nil {
		return fmt.Errorf("nbd %s: %w", peer, err)
	}
	var hdr [16]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("nbd %s: option: %w", peer, err)
		}
		opt, length, err := OptionHeader(hdr[:])
		if err != nil {
			return fmt.Errorf("nbd %s: %w", peer, err)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(r, data); err != nil {
			return fmt.Errorf("nbd %s: option %d data: %w", peer, opt, err)
		}
		out := n.Option(opt, data)
		if len(out.Reply) > 0 {
			if _, err := c.Write(out.Reply); err != nil {
				return fmt.Errorf("nbd %s: option reply: %w", peer, err)
			}
		}
		if out.Close {
			return nil
		}
		if out.Export != nil {
			c.SetDeadline(time.Time{})
			return s.transmit(c, r, peer, out.Export.Name, n.Structured)
		}
	}
}

// transmit is the transmission phase: requests are read and started here, replies are sent by
// the session's completions.
func (s *Server) transmit(c net.Conn, r *bufio.Reader, peer, export string, structured bool) error {
	w := bufio.NewWriterSize(c, 256<<10)
	var wmu sync.Mutex
	var werr error
	var pmu sync.Mutex
	pending := map[uint64]Request{}
	var next uint64
	var hdrBuf []byte
	reply := func(req Request, nbdErr uint32, data []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		if werr != nil {
			return
		}
		hdrBuf = AppendReply(hdrBuf[:0], structured, req, nbdErr, len(data))
		w.Write(hdrBuf)
		w.Write(data)
		if err := w.Flush(); err != nil {
			werr = err
			c.Close()
		}
	}
	sess, err := s.backend.NewSession(export, func(tag uint64, st wire.Status, data []byte) {
		pmu.Lock()
		req := pending[tag]
		delete(pending, tag)
		pmu.Unlock()
		e := nbdErrno(st, req.Type)
		if e != 0 {
			data = nil
		}
		reply(req, e, data)
	})
	if err != nil {
		return fmt.Errorf("nbd %s: %w", peer, err)
	}
	defer sess.Close()
	maxIO := uint32(s.backend.MaxIO())
	var hdr [RequestSize]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("nbd %s: request: %w", peer, err)
		}
		req, err := ParseRequest(hdr[:])
		if err != nil {
			return fmt.Errorf("nbd %s: %w", peer, err)
		}
		var op wire.Op
		var write []byte
		switch req.Type {
		case CmdRead:
			op = wire.OpRead
		case CmdWrite:
			op = wire.OpWrite
			if req.Length > maxIO || !req.FlagsValid(structured) {
				// Too large to take, or flags we do not honour; the data is still on the wire and
				// must be consumed.
				if req.Length > 32<<20 {
					return fmt.Errorf("nbd %s: write of %d bytes: too large", peer, req.Length)
				}
				if _, err := io.CopyN(io.Discard, r, int64(req.Length)); err != nil {
					return fmt.Errorf("nbd %s: write data: %w", peer, err)
				}
				reply(req, errInvalid, nil)
				continue
			}
			if cap(buf) < int(req.Length) {
				buf = make([]byte, maxIO)
			}
			write = buf[:req.Length]
			if _, err := io.ReadFull(r, write); err != nil {
				return fmt.Errorf("nbd %s: write data: %w", peer, err)
			}
		case CmdFlush:
			op = wire.OpFlush
		case CmdTrim:
			op = wire.OpDiscard
		case CmdDisc:
			return nil // sess.Close waits for the requests in flight and their replies
		default:
			reply(req, errInvalid, nil)
			continue
		}
		if !req.FlagsValid(structured) {
			reply(req, errInvalid, nil)
			continue
		}
		pmu.Lock()
		next++
		tag := next
		pending[tag] = req
		pmu.Unlock()
		if st := sess.Submit(op, req.Offset, req.Length, write, tag); st != wire.StatusOK {
			pmu.Lock()
			delete(pending, tag)
			pmu.Unlock()
			reply(req, nbdErrno(st, req.Type), nil)
		}
		wmu.Lock()
		failed := werr
		wmu.Unlock()
		if failed != nil {
			return fmt.Errorf("nbd %s: reply: %w", peer, failed)
		}
	}
}

// nbdErrno maps a DRD status to the NBD error of a reply.
func nbdErrno(st wire.Status, cmd uint16) uint32 {
	switch st {
	case wire.StatusOK:
		return 0
	case wire.StatusMisaligned, wire.StatusTooLarge, wire.StatusBadOp:
		return errInvalid
	case wire.StatusOutOfRange:
		if cmd == CmdRead {
			return errInvalid
		}
		return errNoSpace
	case wire.StatusNotSupported:
		return errNotSupported
	case wire.StatusShuttingDown:
		return errShutdown
	}
	return errIO
}
