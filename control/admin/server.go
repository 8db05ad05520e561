package admin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrDaemonRunning is returned by Server.Listen when another process already answers on the
// socket path.
var ErrDaemonRunning = errors.New("another vigild is already listening")

// maxSocketPath is the size of sun_path in struct sockaddr_un on Linux.
const maxSocketPath = 108

// Server answers admin API requests on a unix socket. Set Provider and Log, optionally the
// limits, then call Listen, Serve and finally Close. Its methods are safe for concurrent use.
type Server struct {
	Provider Provider
	Log      *slog.Logger
	// IdleTimeout closes a connection that sends no complete request for this long;
	// zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConns caps the connections served at once; zero means DefaultMaxConns.
	MaxConns int

	mu     sync.Mutex
	ln     *net.UnixListener
	path   string
	sock   os.FileInfo // the socket file we created, so Close removes only that one
	conns  map[net.Conn]struct{}
	closed bool
	done   chan struct{} // closed when Close has finished
	wg     sync.WaitGroup
}

// Listen creates the socket at path, usable by root and the running user only (mode 0600, and
// the peer's credentials are checked on every connection). It
// creates the parent directory (0755) if missing and replaces a stale socket left by a daemon
// that died, but fails with ErrDaemonRunning if a live process answers on it.
func (s *Server) Listen(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil || s.closed {
		return fmt.Errorf("admin socket %s: server already listening or closed", path)
	}
	if len(path) > maxSocketPath {
		return fmt.Errorf("admin socket %s: path longer than %d bytes", path, maxSocketPath)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("admin socket %s: create directory: %w", path, err)
	}
	stale, err := checkExisting(path)
	if err != nil {
		return err
	}
	ln, sock, err := listenPrivate(path, stale)
	if err != nil {
		return err
	}
	if stale {
		s.logger().Info("replaced stale admin socket", "path", path)
	}
	s.ln, s.path, s.sock = ln, path, sock
	s.conns = make(map[net.Conn]struct{})
	s.done = make(chan struct{})
	return nil
}

// checkExisting reports whether path holds a stale socket, and fails if it holds anything else
// or a live server answers on it.
func checkExisting(path string) (stale bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return false, fmt.Errorf("admin socket %s: file exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("admin socket %s: %w", path, ErrDaemonRunning)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true, nil
	}
	return false, fmt.Errorf("admin socket %s: check for a running daemon: %w", path, err)
}

// listenPrivate listens on path and makes the socket 0600. A stale socket at path is removed
// first; if another daemon binds path meanwhile, listening fails and nothing is overwritten.
// Between bind and chmod the socket briefly has the umask's mode, so serveConn also checks the
// peer's credentials.
func listenPrivate(path string, stale bool) (*net.UnixListener, os.FileInfo, error) {
	if stale {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("admin socket %s: remove stale socket: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, nil, fmt.Errorf("admin socket %s: %w (it appeared while this one was starting)", path, ErrDaemonRunning)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // Close removes path only if it is still this socket
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(err)
	}
	sock, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, sock, nil
}

// peerAllowed reports whether the process at the other end of c runs as root or as the user
// running the server: the socket is 0600, and this closes the window before the chmod.
func peerAllowed(c *net.UnixConn) (uid uint32, ok bool, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, false, err
	}
	if credErr != nil {
		return 0, false, credErr
	}
	return cred.Uid, cred.Uid == 0 || int(cred.Uid) == os.Geteuid(), nil
}

// Path returns the socket path given to Listen.
func (s *Server) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path
}

// Serve accepts and serves connections until ctx is done or Close is called; both close the
// server, and Serve then returns nil once the socket is removed. It returns an error if Listen was not called or accepting
// fails for good.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return errors.New("admin: Serve called before Listen")
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()

	var backoff time.Duration
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if s.isClosed() {
				<-s.done
				return nil
			}
			if !transientAcceptError(err) {
				return fmt.Errorf("admin socket %s: accept: %w", s.path, err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.logger().Warn("admin accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0

		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.done
			return nil
		}
		if len(s.conns) >= s.maxConns() {
			s.mu.Unlock()
			s.reject(c)
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// transientAcceptError reports accept errors that pass once resources free up.
func transientAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// reject tells a connection over the cap why it is closed.
func (s *Server) reject(c net.Conn) {
	s.logger().Warn("admin connection rejected: too many connections", "limit", s.maxConns())
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write(errorLine(fmt.Sprintf("too many admin connections (limit %d); try again later", s.maxConns())))
	c.Close()
}

// serveConn answers requests on one connection until it closes, idles out, sends an oversized
// line, or the server closes.
func (s *Server) serveConn(c *net.UnixConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.logger().Error("admin: panic while serving a connection", "panic", r, "stack", string(debug.Stack()))
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			c.Write(errorLine("internal error in vigild; see its log"))
		}
	}()

	uid, ok, err := peerAllowed(c)
	if err != nil {
		s.logger().Warn("admin connection: cannot read peer credentials; closing", "err", err)
		return
	}
	if !ok {
		s.logger().Warn("admin connection from another user refused", "uid", uid)
		s.write(c, errorLine("permission denied: only root or the user running vigild may use the admin socket"))
		return
	}

	idle := s.idleTimeout()
	r := bufio.NewReaderSize(c, MaxRequestLine+1) // the line and its newline
	for {
		if err := c.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return
		}
		line, err := r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			s.logger().Debug("admin request line too long; closing connection", "limit", MaxRequestLine)
			s.write(c, errorLine(fmt.Sprintf("request line longer than %d bytes; closing the connection", MaxRequestLine)))
			return
		case err != nil && !errors.Is(err, io.EOF):
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.logger().Debug("admin connection idle; closing", "timeout", idle)
			}
			return
		case err != nil && len(line) == 0: // EOF
			return
		}
		// A last line without a newline before EOF is still answered.
		if !s.write(c, handleLineAs(s.Provider, line, userName(uid))) || err != nil {
			return
		}
	}
}

// userName names the user with uid for the event log: its login name, or uid:N.
func userName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid:" + strconv.FormatUint(uint64(uid), 10)
}

func (s *Server) write(c net.Conn, b []byte) bool {
	if err := c.SetWriteDeadline(time.Now().Add(s.idleTimeout())); err != nil {
		return false
	}
	_, err := c.Write(b)
	return err == nil
}

// Close stops accepting, closes every connection, waits for their goroutines and removes the
// socket file (unless another daemon has replaced it meanwhile). It is safe to call more than
// once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var errs []error
	if s.ln != nil {
		if err := s.ln.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close admin listener: %w", err))
		}
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()

	if s.sock != nil {
		if cur, err := os.Lstat(s.path); err == nil && os.SameFile(cur, s.sock) {
			if err := os.Remove(s.path); err != nil {
				errs = append(errs, fmt.Errorf("remove admin socket: %w", err))
			}
		}
	}
	if s.done != nil {
		close(s.done)
	}
	return errors.Join(errs...)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) maxConns() int {
	if s.MaxConns > 0 {
		return s.MaxConns
	}
	return DefaultMaxConns
}
