package drd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"vigil/drd"
	"vigil/drd/server"
	"vigil/drd/wire"
)

type testEnv struct {
	t       *testing.T
	backing string
	sock    string // local path socket
	tcp     string // remote path address
	mu      sync.Mutex
	srv     *server.Server
	dev     *server.Device
	epoch   uint64
}

func newEnv(t *testing.T, size int64) *testEnv {
	dir, err := os.MkdirTemp("/var/tmp", "drd-client-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &testEnv{t: t, backing: filepath.Join(dir, "disk"), sock: filepath.Join(dir, "drd.sock")}
	if err := os.WriteFile(e.backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.backing, size); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.stop)
	return e
}

// start starts a server incarnation with the next epoch on the same socket and address.
func (e *testEnv) start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.epoch++
	dev, err := server.OpenDevice("d0", e.backing)
	if err != nil {
		e.t.Fatal(err)
	}
	srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: e.epoch, QueueDepth: 16, SlotSize: 64 << 10})
	if err != nil {
		e.t.Fatal(err)
	}
	os.Remove(e.sock)
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
	if err != nil {
		e.t.Fatal(err)
	}
	addr := e.tcp
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var tl net.Listener
	for range 100 { // the previous incarnation's port may linger briefly
		if tl, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.tcp = tl.Addr().String()
	go srv.ServeLocal(ul)
	go srv.ServeNet(tl)
	e.srv, e.dev = srv, dev
}

func (e *testEnv) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		if err := e.srv.Close(); err != nil {
			e.t.Error(err)
		}
		e.dev.Close()
		e.srv = nil
	}
}

func (e *testEnv) dial(ctx context.Context) (wire.Conn, error) {
	var d net.Dialer
	e.mu.Lock()
	addr := e.tcp
	e.mu.Unlock()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return wire.NewFrameConn(c), nil
}

func (e *testEnv) open(t *testing.T, path string) *drd.Device {
	opt := drd.Options{QueueDepth: 8, SlotSize: 64 << 10, ReconnectTimeout: 10 * time.Second}
	if path == "local" {
		opt.LocalSocket = e.sock
	} else {
		opt.Dial = e.dial
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := drd.Open(ctx, "d0", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Path() != path {
		t.Fatalf("path %q, want %q", d.Path(), path)
	}
	return d
}

func TestClientPaths(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 4<<20)
			e.start()
			d := e.open(t, path)
			if d.Size() != 4<<20 || d.Epoch() != 1 {
				t.Fatalf("size %d epoch %d", d.Size(), d.Epoch())
			}
			// Larger than one request: split into several.
			data := make([]byte, 256<<10)
			for i := range data {
				data[i] = byte(i * 7)
			}
			if n, err := d.WriteAt(data, 1<<20); err != nil || n != len(data) {
				t.Fatalf("write: %d, %v", n, err)
			}
			got := make([]byte, len(data))
			if n, err := d.ReadAt(got, 1<<20); err != nil || n != len(got) || !bytes.Equal(got, data) {
				t.Fatalf("read: %d, %v, equal %v", n, err, bytes.Equal(got, data))
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := d.Discard(1<<20, 4096); err != nil {
				t.Fatal(err)
			}
			if _, err := d.ReadAt(got[:4096], 1<<20); err != nil || !bytes.Equal(got[:4096], make([]byte, 4096)) {
				t.Fatalf("read after discard: %v", err)
			}
			// Errors are clear and change nothing.
			var we *wire.Error
			if _, err := d.ReadAt(make([]byte, 4096), 4<<20); !errors.As(err, &we) || we.Status != wire.StatusOutOfRange {
				t.Errorf("read past the end: %v", err)
			}
			if _, err := d.ReadAt(make([]byte, 100), 0); err == nil {
				t.Error("misaligned read accepted")
			}
			// Many calls in flight through the async API.
			done := make(chan *drd.Call, 64)
			for i := range 64 {
				d.Go(&drd.Call{Op: wire.OpRead, Offset: int64(i%16) * 4096, Buf: make([]byte, 4096), Done: done})
			}
			for range 64 {
				if c := <-done; c.Err != nil || c.N != 4096 {
					t.Fatalf("async read: %d, %v", c.N, c.Err)
				}
			}
		})
	}
}

// TestClientSurvivesRestart restarts the server (a new epoch) again and again while writers
// keep many writes in flight, synchronous and asynchronous; every write acknowledged must read
// back.
func TestClientSurvivesRestart(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			e.start()
			d := e.open(t, path)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			const blocks = 256
			var mu sync.Mutex
			acked := map[int64]byte{} // block -> last acknowledged generation
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					gen := byte(1)
					buf := make([]byte, 4096)
					for {
						select {
						case <-stop:
							return
						default:
						}
						blk := int64(w*blocks/4) + rng.Int64N(blocks/4) // writers own disjoint blocks
						gen++
						for i := range buf {
							buf[i] = gen
						}
						// Half the writers use Do (through WriteAt: the caller reads its reply
						// when no other goroutine reads), half the asynchronous Go.
						var err error
						if w%2 == 0 {
							_, err = d.WriteAt(buf, blk*4096)
						} else {
							err = (<-d.Go(&drd.Call{Op: wire.OpWrite, Offset: blk * 4096, Buf: buf}).Done).Err
						}
						if err != nil {
							t.Errorf("write: %v", err)
							return
						}
						mu.Lock()
						acked[blk] = gen
						mu.Unlock()
					}
				}()
			}
			for range 5 {
				time.Sleep(100 * time.Millisecond)
				e.stop()
				time.Sleep(20 * time.Millisecond)
				e.start()
			}
			time.Sleep(100 * time.Millisecond)
			close(stop)
			wg.Wait()
			if ctx.Err() != nil {
				t.Fatal("timed out")
			}
			if d.Epoch() != 6 {
				t.Errorf("epoch %d after 5 restarts, want 6", d.Epoch())
			}
			buf := make([]byte, 4096)
			for blk, gen := range acked {
				if _, err := d.ReadAt(buf, blk*4096); err != nil {
					t.Fatal(err)
				}
				if buf[0] != gen || buf[4095] != gen {
					t.Fatalf("block %d holds generation %d, acknowledged %d", blk, buf[0], gen)
				}
			}
			if len(acked) == 0 {
				t.Fatal("no writes acknowledged")
			}
			t.Logf("%d blocks checked", len(acked))
		})
	}
}

func TestOpenErrors(t *testing.T) {
	e := newEnv(t, 1<<20)
	e.start()
	ctx := context.Background()
	if _, err := drd.Open(ctx, "nope", drd.Options{LocalSocket: e.sock}); err == nil {
		t.Error("opened an unknown device on the local path")
	} else {
		t.Log(err)
	}
	if _, err := drd.Open(ctx, "nope", drd.Options{Dial: e.dial}); err == nil {
		t.Error("opened an unknown device on the remote path")
	}
	// No local server: the remote path is chosen.
	d, err := drd.Open(ctx, "d0", drd.Options{LocalSocket: filepath.Join(t.TempDir(), "none.sock"), Dial: e.dial})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Path() != "remote" {
		t.Errorf("path %s", d.Path())
	}
	_ = fmt.Sprint()
}

// TestNewCall: calls that own their slot read and write through it on both paths.
func TestNewCall(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			e.start()
			d := e.open(t, path)
			c, err := d.NewCall(8192)
			if err != nil {
				t.Fatal(err)
			}
			defer d.FreeCall(c)
			for i := range c.Buf {
				c.Buf[i] = byte(i % 251)
			}
			want := bytes.Clone(c.Buf)
			c.Op, c.Offset = wire.OpWrite, 4096
			if c = <-d.Go(c).Done; c.Err != nil || c.N != 8192 {
				t.Fatalf("write: %d, %v", c.N, c.Err)
			}
			clear(c.Buf)
			c.Op = wire.OpRead
			if c = <-d.Go(c).Done; c.Err != nil || c.N != 8192 || !bytes.Equal(c.Buf, want) {
				t.Fatalf("read: %d, %v", c.N, c.Err)
			}
			got := make([]byte, 8192)
			if _, err := d.ReadAt(got, 4096); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back with ReadAt: %v", err)
			}
			if _, err := d.NewCall(100); err == nil {
				t.Fatal("NewCall(100) accepted")
			}
		})
	}
}

// TestDiscardLengthBeyond32Bits: a discard longer than the u32 length of one request must not
// be cut to its low 32 bits (a discard of 4 GiB + 4096 bytes once freed 4096 bytes and said ok).
func TestDiscardLengthBeyond32Bits(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			e.start()
			d := e.open(t, path)
			data := bytes.Repeat([]byte{0xab}, 4096)
			if _, err := d.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			var we *wire.Error
			if err := d.Discard(0, 1<<32+4096); !errors.As(err, &we) || we.Status != wire.StatusOutOfRange {
				t.Errorf("discard of 4 GiB + 4096 on a 1 MiB device: %v, want out of range", err)
			}
			c := d.Go(&drd.Call{Op: wire.OpDiscard, Offset: 0, Length: 1<<32 + 4096})
			if c = <-c.Done; c.Err == nil {
				t.Error("async discard of 4 GiB + 4096 in one call accepted")
			}
			got := make([]byte, 4096)
			if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
				t.Errorf("block 0 changed by a refused discard: %v", err)
			}
		})
	}
}

// TestShortReadFromServer: a read answered ok with fewer bytes than asked is an error, not a
// short read with a nil error (io.ReaderAt).
func TestShortReadFromServer(t *testing.T) {
	dial := func(ctx context.Context) (wire.Conn, error) {
		a, b := net.Pipe()
		srv := wire.NewFrameConn(b)
		go func() {
			defer srv.Close()
			if _, err := srv.Recv(ctx); err != nil {
				return
			}
			srv.Send(ctx, wire.AppendWelcome(nil, wire.Welcome{Epoch: 1, Size: 1 << 20, BlockSize: wire.BlockSize, MaxIO: 1 << 16}))
			for {
				m, err := srv.Recv(context.Background())
				if err != nil {
					return
				}
				r, _ := wire.DecodeRequest(m)
				srv.Send(context.Background(), wire.AppendResponse(nil, &wire.Response{Tag: r.Tag, Epoch: 1, Data: make([]byte, 100)}))
			}
		}()
		return wire.NewFrameConn(a), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := drd.Open(ctx, "d0", drd.Options{Dial: dial, ReconnectTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, err := d.ReadAt(make([]byte, 4096), 0); err == nil {
		t.Fatalf("read of 4096 bytes answered with 100: n %d, no error", n)
	}
}

// TestCloseWhileReconnecting: Close during a reconnection waits for it, so the reconnection
// never touches the shared region after Close unmapped it.
func TestCloseWhileReconnecting(t *testing.T) {
	e := newEnv(t, 1<<20)
	e.start()
	for i := range 20 {
		opt := drd.Options{LocalSocket: e.sock, QueueDepth: 4, SlotSize: 16 << 10, ReconnectTimeout: 5 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := drd.Open(ctx, "d0", opt)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		e.stop()
		for d.Path() != "" {
			time.Sleep(time.Millisecond)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); e.start() }()
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		start := time.Now()
		d.Close()
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("close took %v", el)
		}
		wg.Wait()
	}
}

// A client never goes back to an earlier server incarnation: after epoch 3 it refuses a server
// at epoch 2 (one that was moved away and has not stopped yet) and waits for a newer one.
func TestClientRefusesOlderEpoch(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			e.epoch = 2
			e.start() // epoch 3
			d := e.open(t, path)
			buf := make([]byte, 4096)
			if _, err := d.WriteAt(buf, 0); err != nil {
				t.Fatal(err)
			}
			e.stop()
			e.mu.Lock()
			e.epoch = 1
			e.mu.Unlock()
			e.start() // epoch 2: older
			done := make(chan error, 1)
			go func() {
				_, err := d.ReadAt(buf, 0)
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("a read completed (%v) with only an older server at epoch %d", err, d.Epoch())
			case <-time.After(300 * time.Millisecond):
			}
			e.stop()
			e.mu.Lock()
			e.epoch = 3
			e.mu.Unlock()
			e.start() // epoch 4
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the read did not complete on the newer server")
			}
			if d.Epoch() != 4 {
				t.Errorf("epoch %d, want 4", d.Epoch())
			}
		})
	}
}

// TestDoWithCallsInFlight: Do runs while asynchronous calls are in flight (a reader goroutine
// runs) and alone (the caller reads its reply and, when calls it did not make are in flight
// once its own reply came, hands the reading over); every call completes with its own data.
func TestDoWithCallsInFlight(t *testing.T) {
	for _, path := range []string{"local", "remote"} {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, 1<<20)
			e.start()
			d := e.open(t, path) // queue depth 8
			block := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, 4096) }
			for i := range 64 {
				if c := d.Do(&drd.Call{Op: wire.OpWrite, Offset: int64(i) * 4096, Buf: block(i)}); c.Err != nil || c.N != 4096 {
					t.Fatalf("Do write %d: %d bytes, %v", i, c.N, c.Err)
				}
			}
			done := make(chan *drd.Call, 64)
			for round := range 20 {
				var async []*drd.Call
				for k := range round % 7 {
					i := (round*7 + k) % 64
					async = append(async, d.Go(&drd.Call{Op: wire.OpRead, Offset: int64(i) * 4096, Buf: make([]byte, 4096), Done: done}))
				}
				i := (round * 13) % 64
				c := d.Do(&drd.Call{Op: wire.OpRead, Offset: int64(i) * 4096, Buf: make([]byte, 4096)})
				if c.Err != nil || !bytes.Equal(c.Buf, block(i)) {
					t.Fatalf("round %d: Do read of block %d: %v, right data %v", round, i, c.Err, bytes.Equal(c.Buf, block(i)))
				}
				for range async {
					select {
					case a := <-done:
						if a.Err != nil || !bytes.Equal(a.Buf, block(int(a.Offset/4096))) {
							t.Fatalf("round %d: async read at %d: %v", round, a.Offset, a.Err)
						}
					case <-time.After(10 * time.Second):
						t.Fatalf("round %d: an asynchronous call never completed", round)
					}
				}
			}
			// A Do whose Done is set keeps it: nothing is sent there.
			own := make(chan *drd.Call, 1)
			if c := d.Do(&drd.Call{Op: wire.OpFlush, Done: own}); c.Err != nil || len(own) != 0 || c.Done != own {
				t.Fatalf("Do flush: %v, %d on Done", c.Err, len(own))
			}
		})
	}
}
