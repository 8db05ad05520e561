package dataplane

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"vigil/heartbeat"
)

// eventWait waits for the event ring buffer through Go's network poller, on a non-blocking
// duplicate of the ring buffer map's descriptor (which supports poll: readable while records
// wait). A goroutine parked in the poller holds no scheduler P; one blocked in the ring buffer
// reader's own epoll_wait keeps its P until sysmon takes it back, up to 20 ms later. vigild's
// heartbeat sender keeps the other P of a 2-CPU machine while it sleeps (by design), so every
// goroutine that the event reader woke (the main loop handing "peer down" to raft), and every
// timer and socket of the daemon, waited for that retake: the membership bench's traces showed
// heartbeat events reaching raft 8-20 ms after the kernel raised them.
type eventWait struct {
	once sync.Once
	file *os.File
	conn syscall.RawConn
	err  error
}

func (w *eventWait) init(h *Heartbeat) error {
	w.once.Do(func() {
		fd, err := unix.FcntlInt(uintptr(h.objs.Events.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			w.err = fmt.Errorf("duplicate the event ring buffer descriptor: %w", err)
			return
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			w.err = fmt.Errorf("event ring buffer descriptor non-blocking: %w", err)
			return
		}
		w.file = os.NewFile(uintptr(fd), "heartbeat-events")
		if w.conn, w.err = w.file.SyscallConn(); w.err != nil {
			w.file.Close()
			w.file = nil
		}
	})
	return w.err
}

func (w *eventWait) close() error {
	w.once.Do(func() { w.err = os.ErrClosed }) // never opened: nothing to close, none to open
	if w.file != nil {
		return w.file.Close()
	}
	return nil
}

// WaitEvent reads the next heartbeat event like ReadEvent, but waits for it in Go's network
// poller, holding no scheduler P meanwhile (see eventWait). If the poller cannot watch the ring
// buffer it falls back to ReadEvent. CloseEvents ends a wait with an error wrapping
// os.ErrClosed.
func (h *Heartbeat) WaitEvent() (heartbeat.Event, error) {
	if err := h.wait.init(h); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return heartbeat.Event{}, fmt.Errorf("read heartbeat events: %w", os.ErrClosed)
		}
		return h.ReadEvent()
	}
	err := h.wait.conn.Read(func(uintptr) bool { return h.events.AvailableBytes() > 0 })
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return heartbeat.Event{}, fmt.Errorf("read heartbeat events: %w", os.ErrClosed)
		}
		// Not pollable after all (the poller refused the descriptor): block the old way.
		return h.ReadEvent()
	}
	return h.ReadEvent() // a record waits: the reader's own epoll_wait returns at once
}
