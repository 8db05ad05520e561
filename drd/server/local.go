package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"vigil/drd/shm"
	"vigil/drd/uring"
	"vigil/drd/wire"
)

// ServeLocal accepts local-path clients on a unix SOCK_SEQPACKET listener ("unixpacket") until
// it fails or the server closes. Each client sends one message: a wire.Hello naming the
// device, with three descriptors (SCM_RIGHTS): its sealed memfd (drd/shm layout), the eventfd
// the server sleeps on, and the eventfd the client sleeps on. The server answers with a
// wire.Welcome whose MaxIO is the slot size; after that the socket only tells each side that
// the other is alive (it closes when either ends).
func (s *Server) ServeLocal(l *net.UnixListener) error {
	if !s.track(l, l.Close) {
		return l.Close()
	}
	defer s.untrack(l)
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("drd local accept: %w", err)
		}
		s.spawn(c, func() {
			if err := s.serveLocal(c); err != nil {
				s.log.Info("drd local session ended", "err", err)
			}
		})
	}
}

// localSession is the state of one local client.
type localSession struct {
	s      *Server
	dev    *Device
	conn   *net.UnixConn
	sock   *os.File // a dup of the socket, polled for the client's end
	sockFd int
	mem    []byte
	ring   *shm.Server
	srvEfd int
	cliEfd int
	eng    uring.Engine
	// stopped is set when a new session of the same client (the same shared region) fences
	// this one; finished marks this session done once its engine drained.
	stopped  atomic.Bool
	finished func()
	efdMu    sync.Mutex // stop (from another session) against close of srvEfd
}

// regionKey names a local client by its shared region (the memfd it passes on every
// reconnection).
type regionKey struct{ dev, ino uint64 }

func (s *Server) serveLocal(c *net.UnixConn) (err error) {
	if !s.track(c, c.Close) {
		return c.Close()
	}
	defer s.untrack(c)
	ls := &localSession{s: s, conn: c, srvEfd: -1, cliEfd: -1}
	defer func() {
		err = errors.Join(err, ls.close())
		if ls.finished != nil {
			ls.finished() // after close: the engine drained the requests in flight
		}
	}()
	dev, st, msg := ls.setup()
	w := wire.Welcome{Status: st, Message: msg, Epoch: s.cfg.Epoch}
	if st == wire.StatusOK {
		w.Size, w.BlockSize, w.MaxIO = dev.Size, wire.BlockSize, ls.ring.Geometry().SlotSize
	}
	if _, werr := c.Write(wire.AppendWelcome(nil, w)); werr != nil {
		return fmt.Errorf("drd local session: welcome: %w", werr)
	}
	if st != wire.StatusOK {
		return fmt.Errorf("drd local session: %s", msg)
	}
	ls.dev = dev
	if !s.track(ls, func() error { ls.kick(ls.srvEfd); return nil }) {
		return nil
	}
	defer s.untrack(ls)
	return ls.run()
}

// setup receives the hello and the descriptors, maps the region and prepares the engine.
func (ls *localSession) setup() (*Device, wire.Status, string) {
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := ls.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, wire.StatusProtocolError, fmt.Sprintf("read hello: %v", err)
	}
	var fds []int
	if cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, cm := range cmsgs {
			if rights, rerr := unix.ParseUnixRights(&cm); rerr == nil {
				fds = append(fds, rights...)
			}
		}
	}
	keep := 0
	defer func() {
		for _, fd := range fds[keep:] {
			unix.Close(fd)
		}
	}()
	if flags&unix.MSG_CTRUNC != 0 || len(fds) != 3 {
		return nil, wire.StatusProtocolError, fmt.Sprintf("hello carries %d descriptors, want 3 (memfd, server eventfd, client eventfd)", len(fds))
	}
	dev, _, st, msg := ls.s.hello(buf[:n])
	if dev == nil {
		return nil, st, msg
	}
	for i, fd := range fds[1:] {
		if l, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); l != "anon_inode:[eventfd]" {
			return nil, wire.StatusProtocolError, fmt.Sprintf("descriptor %d is %q, not an eventfd", i+2, l)
		}
	}
	var fst unix.Stat_t
	if err := unix.Fstat(fds[0], &fst); err != nil {
		return nil, wire.StatusProtocolError, fmt.Sprintf("fstat shared region: %v", err)
	}
	mem, g, err := shm.Map(fds[0])
	if err != nil {
		return nil, wire.StatusProtocolError, err.Error()
	}
	unix.Close(fds[0])
	ls.mem = mem
	ls.srvEfd, ls.cliEfd = fds[1], fds[2]
	keep = 3
	if ls.ring, err = shm.NewServer(mem, g); err != nil {
		return nil, wire.StatusProtocolError, err.Error()
	}
	if ls.sock, err = ls.conn.File(); err != nil {
		return nil, wire.StatusIO, fmt.Sprintf("dup socket: %v", err)
	}
	ls.sockFd = int(ls.sock.Fd())
	eng, err := uring.NewEngine(uring.Config{QueueDepth: int(g.SQEntries), DisableURing: ls.s.cfg.DisableURing, Align: dev.Align})
	if err != nil {
		return nil, wire.StatusIO, err.Error()
	}
	ls.eng = eng
	if err := eng.RegisterBuffers([][]byte{ls.ring.Data()}); err != nil {
		return nil, wire.StatusIO, err.Error()
	}
	if err := eng.RegisterFiles([]int{dev.Fd()}); err != nil {
		return nil, wire.StatusIO, err.Error()
	}
	// The client re-sends what its previous session left unanswered from the same region: that
	// session must be over, its requests finished, before this one takes any (see fence).
	if ls.finished, err = ls.s.fence(regionKey{uint64(fst.Dev), fst.Ino}, ls.stop); err != nil {
		return nil, wire.StatusShuttingDown, err.Error()
	}
	return dev, wire.StatusOK, ""
}

// stop makes run return soon (a newer session of the same client fences this one).
func (ls *localSession) stop() {
	ls.stopped.Store(true)
	ls.efdMu.Lock()
	defer ls.efdMu.Unlock()
	if ls.srvEfd >= 0 {
		ls.kick(ls.srvEfd)
	}
}

func (ls *localSession) close() error {
	var errs []error
	if ls.eng != nil {
		errs = append(errs, ls.eng.Close())
	}
	if ls.mem != nil {
		errs = append(errs, shm.Unmap(ls.mem))
	}
	ls.efdMu.Lock()
	for _, fd := range []*int{&ls.srvEfd, &ls.cliEfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	ls.efdMu.Unlock()
	if ls.sock != nil {
		ls.sock.Close()
	}
	ls.conn.Close()
	return errors.Join(errs...)
}

type localPend struct {
	userData uint64
	op       wire.Op
	length   uint32
}

// run is the session's loop on its own thread: take new SQEs (as many as the CQ has room
// for), check them, submit them in one batch, reap, post the completions and wake the client
// if it sleeps; sleep on the eventfd only when nothing is in flight and nothing is new.
func (ls *localSession) run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g := ls.ring.Geometry()
	depth := int(g.SQEntries)
	table := make([]localPend, depth)
	free := make([]uint32, depth)
	for i := range free {
		free[i] = uint32(depth - 1 - i)
	}
	data := ls.ring.Data()
	sqes := make([]shm.SQE, depth)
	cqes := make([]uring.CQE, depth)
	reqs := make([]uring.Request, 0, depth)
	var post []shm.CQE
	epoch, size := ls.s.cfg.Epoch, ls.dev.Size
	for ls.s.ctx.Err() == nil && !ls.stopped.Load() {
		cqFree, err := ls.ring.CQFree()
		if err != nil {
			return fmt.Errorf("drd local session: %w", err)
		}
		k := min(cqFree, len(post))
		for _, e := range post[:k] {
			ls.ring.Post(e)
		}
		post = post[:copy(post, post[k:])]
		if k > 0 && ls.ring.Publish() {
			ls.kick(ls.cliEfd)
		}
		budget := min(cqFree-k-(depth-len(free))-len(post), len(free))
		n := 0
		if budget > 0 {
			if n, err = ls.ring.Poll(sqes[:budget]); err != nil {
				return fmt.Errorf("drd local session: %w", err)
			}
		}
		reqs = reqs[:0]
		for _, e := range sqes[:n] {
			if st := shm.CheckSQE(e, g, epoch, size); st != wire.StatusOK {
				post = append(post, shm.CQE{UserData: e.UserData, Status: st})
				continue
			}
			idx := free[len(free)-1]
			free = free[:len(free)-1]
			table[idx] = localPend{userData: e.UserData, op: e.Op, length: e.Length}
			var buf []byte
			if e.Op == wire.OpRead || e.Op == wire.OpWrite {
				off := int(e.Slot) * int(g.SlotSize)
				buf = data[off : off+int(e.Length)]
			}
			reqs = append(reqs, engineRequest(e.Op, e.Offset, e.Length, buf, uint64(idx)))
		}
		progress := k > 0 || n > 0
		// Submit and, unless the client has more for us, wait for a completion in the same
		// system call.
		wait := 0
		if len(post) == 0 && !ls.ring.Pending() && depth-len(free) > 0 {
			wait = 1
		}
		for len(reqs) > 0 || wait > 0 {
			m, err := ls.eng.SubmitWait(reqs, wait)
			wait = 0
			if err != nil && m == len(reqs) {
				// The kernel failed the system call; the requests stay queued in the ring.
				ls.s.log.Error("drd local submit", "device", ls.dev.Name, "err", err)
			} else if err != nil {
				// Checked above and within the engine's depth: a kernel failure.
				ud := reqs[m].UserData
				ls.s.log.Error("drd local submit failed", "device", ls.dev.Name, "err", err)
				post = append(post, shm.CQE{UserData: table[ud].userData, Status: wire.StatusIO})
				free = append(free, uint32(ud))
				m++
			}
			reqs = reqs[:copy(reqs, reqs[m:])]
		}
		if depth-len(free) > 0 {
			r, err := ls.eng.Reap(cqes, 0)
			if err != nil {
				ls.s.log.Error("drd local reap", "device", ls.dev.Name, "err", err)
			}
			for _, c := range cqes[:r] {
				p := table[c.UserData]
				free = append(free, uint32(c.UserData))
				st := resultStatus(p.op, p.length, c.Res)
				res := uint32(0)
				if c.Res > 0 {
					res = uint32(c.Res)
				}
				post = append(post, shm.CQE{UserData: p.userData, Status: st, Result: res})
			}
			continue
		}
		if progress {
			continue
		}
		// Nothing in flight, nothing new. A client at queue depth 1 sends its next request
		// within microseconds of the last completion: look for it for a short while, then
		// sleep until the client rings or leaves.
		// New requests count only while the completion ring has room for them: a client that
		// leaves it full must not keep the server spinning (it wakes the server when it reaps).
		ready := func() bool {
			free, err := ls.ring.CQFree()
			return err != nil || (free > 0 && (len(post) > 0 || ls.ring.Pending()))
		}
		if spinUntil(ready, idleSpin) {
			continue
		}
		ls.ring.SetIdle(true)
		if ready() {
			ls.ring.SetIdle(false)
			continue
		}
		if gone, err := ls.sleep(); gone || err != nil {
			return err
		}
		ls.ring.SetIdle(false)
	}
	return nil
}

// sleep waits for the server eventfd or the client's end (socket readable or hung up).
func (ls *localSession) sleep() (gone bool, err error) {
	pfds := []unix.PollFd{{Fd: int32(ls.srvEfd), Events: unix.POLLIN}, {Fd: int32(ls.sockFd), Events: unix.POLLIN | unix.POLLRDHUP}}
	for {
		_, err := unix.Poll(pfds, 1000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return true, fmt.Errorf("drd local session: poll: %w", err)
		}
		break
	}
	if pfds[1].Revents != 0 {
		return true, nil
	}
	if pfds[0].Revents&unix.POLLIN != 0 {
		var b [8]byte
		unix.Read(ls.srvEfd, b[:])
	}
	return false, nil
}

func (ls *localSession) kick(efd int) {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	unix.Write(efd, b[:])
}

// idleSpin is how long an idle local session looks for new requests before it sleeps.
const idleSpin = 30 * time.Microsecond

// spinUntil polls cond until it holds (true) or d passes (false).
func spinUntil(cond func() bool, d time.Duration) bool {
	start := time.Now()
	for i := 0; ; i++ {
		if cond() {
			return true
		}
		if i%16 == 15 && time.Since(start) > d {
			return false
		}
	}
}
