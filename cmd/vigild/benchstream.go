package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"vigil/control/transport"
	"vigil/internal/nodeconf"
)

// Bench streams: the interconnect benchmark's message streams, run inside the daemon on its own
// cluster transport (hidden flags --bench-dir and --bench-peer), so that the daemon's own
// reaction to the heartbeat plane's events (the nudge on a link-down) is what the benchmark
// measures, with no outside process in the loop.
//
// With --bench-dir DIR, the daemon accepts ServiceBench streams. The first message of a stream
// names its kind: "rr" streams are echoed (request/response), "ow" streams are a sink whose
// messages (sequence, send time) are recorded with their arrival time in DIR/ow_recv.bin.
// With --bench-peer N as well, once the file DIR/start exists the daemon opens one stream of
// each kind to node N: request/response with 64-byte messages back to back, each round trip
// recorded (start, end) in DIR/rr.bin, and one-way with one 64-byte message per millisecond,
// each recorded (sequence, send time) in DIR/ow_sent.bin. Once DIR/stop exists the streams
// stop, the files are flushed and DIR/done is created. Records are little-endian uint64 pairs
// or triples of wall-clock nanoseconds (the benchmark compares them with its own clock).
//
// This is test traffic: a daemon runs it only when told to.

const (
	benchMsgSize = 64
	benchRate    = time.Millisecond
	benchPoll    = 10 * time.Millisecond
	benchFlush   = 100 * time.Millisecond
	// benchDrain is how long the streams stay open after the last message was sent, so that
	// what is still in flight (a loss being repaired) arrives before Close discards it.
	benchDrain = 300 * time.Millisecond
)

type benchStreams struct {
	dir  string
	peer transport.NodeID // 0: only accept
	t    *transport.TCP
	log  *slog.Logger
}

// recorder appends fixed-size records to a file, flushed every benchFlush and at close.
type recorder struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

func newRecorder(path string) (*recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("bench record: %w", err)
	}
	return &recorder{f: f, w: bufio.NewWriterSize(f, 256<<10)}, nil
}

func (r *recorder) add(vs ...uint64) {
	var b [8]byte
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range vs {
		binary.LittleEndian.PutUint64(b[:], v)
		r.w.Write(b[:])
	}
}

func (r *recorder) flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.Flush()
}

func (r *recorder) close() error {
	return errors.Join(r.flush(), r.f.Close())
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func now() uint64 { return uint64(time.Now().UnixNano()) }

// run serves and (with a peer) drives the bench streams until ctx ends.
func (b *benchStreams) run(ctx context.Context) {
	if err := b.serve(ctx); err != nil {
		b.log.Error("bench streams", "err", err)
	}
}

func (b *benchStreams) serve(ctx context.Context) error {
	recv, err := newRecorder(filepath.Join(b.dir, "ow_recv.bin"))
	if err != nil {
		return err
	}
	ln, err := b.t.Listen(transport.ServiceBench)
	if err != nil {
		recv.close()
		return err
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
		if err := recv.close(); err != nil {
			b.log.Error("bench streams", "err", err)
		}
	}()
	wg.Go(func() { flushEvery(ctx, recv) })
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { b.sink(ctx, conn, recv) })
		}
	})
	if b.peer == 0 {
		<-ctx.Done()
		return nil
	}
	for !exists(filepath.Join(b.dir, "start")) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(benchPoll):
		}
	}
	return b.drive(ctx)
}

func flushEvery(ctx context.Context, rs ...*recorder) {
	tick := time.NewTicker(benchFlush)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			for _, r := range rs {
				r.flush()
			}
		}
	}
}

// sink serves one accepted stream: echo ("rr") or record ("ow").
func (b *benchStreams) sink(ctx context.Context, conn transport.Conn, recv *recorder) {
	defer conn.Close()
	kind, err := conn.Recv(ctx)
	if err != nil {
		return
	}
	for {
		msg, err := conn.Recv(ctx)
		if err != nil {
			return
		}
		switch string(kind) {
		case "rr":
			if conn.Send(ctx, msg) != nil {
				return
			}
		case "ow":
			if len(msg) >= 16 {
				recv.add(binary.LittleEndian.Uint64(msg), binary.LittleEndian.Uint64(msg[8:]), now())
			}
		}
	}
}

// drive opens the two streams to the peer and runs them until DIR/stop exists.
func (b *benchStreams) drive(ctx context.Context) error {
	rrRec, err := newRecorder(filepath.Join(b.dir, "rr.bin"))
	if err != nil {
		return err
	}
	owRec, err := newRecorder(filepath.Join(b.dir, "ow_sent.bin"))
	if err != nil {
		rrRec.close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// The senders stop on stopSend; the streams close only after benchDrain more, so that
	// every message recorded as sent can arrive.
	stopSend := make(chan struct{})
	var senders sync.WaitGroup
	defer func() {
		cancel()
		senders.Wait()
		wg.Wait()
		err := errors.Join(rrRec.close(), owRec.close())
		if err == nil {
			err = os.WriteFile(filepath.Join(b.dir, "done"), nil, 0o600)
		}
		if err != nil {
			b.log.Error("bench streams", "err", err)
		}
	}()
	dial := func(kind string) (transport.Conn, error) {
		for {
			conn, err := b.t.Dial(ctx, b.peer, transport.ServiceBench)
			if err == nil {
				if err = conn.Send(ctx, []byte(kind)); err == nil {
					return conn, nil
				}
				conn.Close()
			}
			b.log.Debug("bench streams: dial", "peer", b.peer, "err", err)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(benchPoll):
			}
		}
	}
	rr, err := dial("rr")
	if err != nil {
		return nil
	}
	defer rr.Close()
	ow, err := dial("ow")
	if err != nil {
		return nil
	}
	defer ow.Close()
	b.log.Info("bench streams running", "peer", b.peer)
	wg.Go(func() { flushEvery(ctx, rrRec, owRec) })
	senders.Go(func() {
		msg := make([]byte, benchMsgSize)
		for ctx.Err() == nil {
			select {
			case <-stopSend:
				return
			default:
			}
			t0 := now()
			if err := rr.Send(ctx, msg); err != nil {
				b.failed(ctx, "request/response", err)
				return
			}
			if _, err := rr.Recv(ctx); err != nil {
				b.failed(ctx, "request/response", err)
				return
			}
			rrRec.add(t0, now())
		}
	})
	senders.Go(func() {
		tick := time.NewTicker(benchRate)
		defer tick.Stop()
		msg := make([]byte, benchMsgSize)
		for seq := uint64(1); ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-stopSend:
				return
			case <-tick.C:
			}
			t := now()
			binary.LittleEndian.PutUint64(msg, seq)
			binary.LittleEndian.PutUint64(msg[8:], t)
			if err := ow.Send(ctx, msg); err != nil {
				b.failed(ctx, "one-way", err)
				return
			}
			owRec.add(seq, t)
		}
	})
	for !exists(filepath.Join(b.dir, "stop")) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(benchPoll):
		}
	}
	close(stopSend)
	stopped := make(chan struct{})
	go func() { senders.Wait(); close(stopped) }()
	select { // a request whose response is lost for good would hold the wait
	case <-stopped:
	case <-ctx.Done():
	case <-time.After(10 * benchDrain):
	}
	select {
	case <-ctx.Done():
	case <-time.After(benchDrain):
	}
	return nil
}

func (b *benchStreams) failed(ctx context.Context, stream string, err error) {
	if ctx.Err() == nil {
		b.log.Error("bench stream broke", "stream", stream, "peer", b.peer, "err", err)
	}
}

// benchFlags are the hidden flags that turn the bench streams on.
type benchFlags struct {
	Dir     string
	Peer    int
	NoNudge bool // the daemon does not nudge on link-down events (a control)
}

// benchStreams checks the flags and returns the bench streams, nil when off.
func (d *daemon) benchStreams(f benchFlags) (*benchStreams, error) {
	if f.Dir == "" {
		if f.Peer != 0 {
			return nil, errors.New("--bench-peer needs --bench-dir")
		}
		return nil, nil
	}
	if d.transport == nil {
		return nil, errors.New("--bench-dir: the cluster transport is off")
	}
	if f.Peer != 0 && !slices.ContainsFunc(d.cfg.Peers, func(p nodeconf.Peer) bool { return p.ID == f.Peer }) {
		return nil, fmt.Errorf("--bench-peer %d: not a peer in the node configuration", f.Peer)
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("--bench-dir: %w", err)
	}
	return &benchStreams{dir: f.Dir, peer: transport.NodeID(f.Peer), t: d.transport, log: d.log}, nil
}
