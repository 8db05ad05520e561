package uring

import (
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The engine tests run every scenario on each engine, so the synchronous fallback is held to
// the same behaviour as io_uring.
var engineCases = []struct {
	name string
	cfg  Config
	kind Kind
}{
	{"uring", Config{}, KindURing},
	{"uring-single-issuer", Config{RingOptions: []Option{WithSingleIssuer()}}, KindURing},
	{"sync", Config{DisableURing: true}, KindSync},
}

func forEachEngine(t *testing.T, cfg Config, fn func(t *testing.T, e Engine)) {
	for _, c := range engineCases {
		t.Run(c.name, func(t *testing.T) {
			// WithSingleIssuer needs the thread locked; the others do not mind.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if c.kind == KindURing {
				requireURing(t)
			}
			cc := cfg
			cc.DisableURing = c.cfg.DisableURing
			cc.RingOptions = append(append([]Option(nil), cfg.RingOptions...), c.cfg.RingOptions...)
			e, err := NewEngine(cc)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := e.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if e.Kind() != c.kind {
				t.Fatalf("engine %v (%s), want %v", e.Kind(), e.Reason(), c.kind)
			}
			fn(t, e)
		})
	}
}

// runAll submits reqs (as many per call as the engine takes) and reaps until nothing is in
// flight. It returns the completions by user data and how often the queue was full.
func runAll(t *testing.T, e Engine, reqs []Request) (map[uint64]CQE, int) {
	t.Helper()
	got := make(map[uint64]CQE, len(reqs))
	out := make([]CQE, 64)
	full := 0
	for len(reqs) > 0 || e.InFlight() > 0 {
		if len(reqs) > 0 {
			n, err := e.Submit(reqs)
			reqs = reqs[n:]
			if errors.Is(err, ErrQueueFull) {
				full++
			} else if err != nil {
				t.Fatalf("submit: %v", err)
			}
		}
		n, err := e.Reap(out, 1)
		if err != nil {
			t.Fatalf("reap: %v", err)
		}
		for _, c := range out[:n] {
			if _, dup := got[c.UserData]; dup {
				t.Fatalf("second completion for user data %d", c.UserData)
			}
			got[c.UserData] = c
		}
	}
	return got, full
}

// submitBatch submits reqs in a single call and reaps all their completions.
func submitBatch(t *testing.T, e Engine, reqs []Request) map[uint64]CQE {
	t.Helper()
	if n, err := e.Submit(reqs); n != len(reqs) || err != nil {
		t.Fatalf("submit of %d: %d, %v", len(reqs), n, err)
	}
	got, _ := runAll(t, e, nil)
	if len(got) != len(reqs) {
		t.Fatalf("%d completions for %d requests", len(got), len(reqs))
	}
	return got
}

func expectRes(t *testing.T, got map[uint64]CQE, res int32) {
	t.Helper()
	for ud, c := range got {
		if c.Res != res {
			t.Fatalf("user data %d: result %d (%v), want %d", ud, c.Res, c.Err(), res)
		}
	}
}

// TestEngineReadWrite writes 64 blocks in one batch, syncs, and reads them back in one batch,
// with plain and registered buffers and files.
func TestEngineReadWrite(t *testing.T) {
	const blocks = 64
	for _, v := range []struct {
		name                      string
		fixedBuf, fixedFile, heap bool
	}{
		{"plain", false, false, false},
		{"fixed-buffers", true, false, false},
		{"fixed-files", false, true, false},
		{"fixed-both", true, true, false},
		{"go-heap-fixed-buffers", true, false, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			f, a := directFile(t, blocks*4096)
			forEachEngine(t, Config{Align: a}, func(t *testing.T, e Engine) {
				mem := alloc(t, 2*blocks*4096)
				if v.heap {
					// A large Go allocation is page-aligned; the Ring keeps it referenced.
					mem = make([]byte, 2*blocks*4096)
					if err := CheckAligned(mem, 0, a); err != nil {
						t.Skipf("Go heap memory not aligned for O_DIRECT: %v", err)
					}
				}
				fd := int32(f.Fd())
				if v.fixedBuf {
					if err := e.RegisterBuffers([][]byte{mem[:blocks*4096], mem[blocks*4096:]}); err != nil {
						t.Fatal(err)
					}
				}
				if v.fixedFile {
					if err := e.RegisterFiles([]int{-1, int(f.Fd())}); err != nil {
						t.Fatal(err)
					}
					fd = 1
				}
				for gen := uint64(1); gen <= 3; gen++ {
					w := make([]Request, blocks)
					r := make([]Request, blocks)
					for i := range blocks {
						wb := mem[i*4096 : (i+1)*4096]
						rb := mem[(blocks+i)*4096 : (blocks+i+1)*4096]
						fillBlock(wb, uint64(i), gen)
						clear(rb)
						w[i] = Request{Op: OpWrite, Fd: fd, FixedFile: v.fixedFile, Buf: wb, FixedBuf: v.fixedBuf,
							BufIndex: 0, Offset: int64(i) * 4096, UserData: uint64(i)}
						r[i] = Request{Op: OpRead, Fd: fd, FixedFile: v.fixedFile, Buf: rb, FixedBuf: v.fixedBuf,
							BufIndex: 1, Offset: int64(i) * 4096, UserData: uint64(1000 + i)}
					}
					expectRes(t, submitBatch(t, e, w), 4096)
					expectRes(t, submitBatch(t, e, []Request{{Op: OpSync, Fd: fd, FixedFile: v.fixedFile, UserData: 99}}), 0)
					expectRes(t, submitBatch(t, e, r), 4096)
					for i := range blocks {
						checkBlock(t, mem[(blocks+i)*4096:(blocks+i+1)*4096], uint64(i), gen)
					}
				}
				if v.fixedBuf {
					if err := e.UnregisterBuffers(); err != nil {
						t.Fatal(err)
					}
				}
				if v.fixedFile {
					if err := e.UnregisterFiles(); err != nil {
						t.Fatal(err)
					}
				}
			})
		})
	}
}

// TestEngineDiscard punches a hole and reads zeros back; the file keeps its size.
func TestEngineDiscard(t *testing.T) {
	const blocks = 16
	f, a := directFile(t, blocks*4096)
	forEachEngine(t, Config{Align: a}, func(t *testing.T, e Engine) {
		mem := alloc(t, blocks*4096)
		fd := int32(f.Fd())
		w := make([]Request, blocks)
		for i := range blocks {
			fillBlock(mem[i*4096:(i+1)*4096], uint64(i), 7)
			w[i] = Request{Op: OpWrite, Fd: fd, Buf: mem[i*4096 : (i+1)*4096], Offset: int64(i) * 4096, UserData: uint64(i)}
		}
		expectRes(t, submitBatch(t, e, w), 4096)
		d := submitBatch(t, e, []Request{{Op: OpDiscard, Fd: fd, Offset: 4 * 4096, Length: 4 * 4096, UserData: 1}})
		if c := d[1]; c.Res == -int32(unix.EOPNOTSUPP) {
			t.Skipf("file system cannot punch holes: %v", c.Err())
		}
		expectRes(t, d, 0)
		r := make([]Request, blocks)
		for i := range blocks {
			for j := range 4096 {
				mem[i*4096+j] = 0xAA
			}
			r[i] = Request{Op: OpRead, Fd: fd, Buf: mem[i*4096 : (i+1)*4096], Offset: int64(i) * 4096, UserData: uint64(i)}
		}
		expectRes(t, submitBatch(t, e, r), 4096)
		zero := make([]byte, 4096)
		for i := range blocks {
			b := mem[i*4096 : (i+1)*4096]
			if i >= 4 && i < 8 {
				if string(b) != string(zero) {
					t.Fatalf("block %d not zero after discard", i)
				}
			} else {
				checkBlock(t, b, uint64(i), 7)
			}
		}
		if st, err := f.Stat(); err != nil || st.Size() != blocks*4096 {
			t.Fatalf("size after discard: %v, %v", st.Size(), err)
		}
	})
}

func TestEngineNop(t *testing.T) {
	forEachEngine(t, Config{}, func(t *testing.T, e Engine) {
		reqs := make([]Request, 100)
		for i := range reqs {
			reqs[i] = Request{Op: OpNop, UserData: uint64(i)}
		}
		expectRes(t, submitBatch(t, e, reqs), 0)
		if n, err := e.Reap(make([]CQE, 4), 4); n != 0 || err != nil {
			t.Fatalf("reap with nothing in flight: %d, %v", n, err)
		}
	})
}

// TestEngineValidation: bad requests are refused with a clear error before anything reaches
// the kernel, and the requests before them still run.
func TestEngineValidation(t *testing.T) {
	f, _ := directFile(t, 16*4096)
	align := Alignment{Memory: 512, Offset: 4096}
	forEachEngine(t, Config{Align: align}, func(t *testing.T, e Engine) {
		mem := alloc(t, 4*4096)
		fd := int32(f.Fd())
		good := Request{Op: OpRead, Fd: fd, Buf: mem[:4096], UserData: 1}
		for _, c := range []struct {
			name string
			bad  Request
			want string
			mis  bool
		}{
			{"offset", Request{Op: OpWrite, Fd: fd, Buf: mem[4096:8192], Offset: 1000},
				"request 1 (user data 2): offset 1000 is not a multiple of the 4096-byte block size", true},
			{"length", Request{Op: OpWrite, Fd: fd, Buf: mem[4096 : 4096+100]},
				"request 1 (user data 2): length 100 is not a multiple of the 4096-byte block size", true},
			{"address", Request{Op: OpWrite, Fd: fd, Buf: mem[4096+256 : 8192+256]},
				"request 1 (user data 2): buffer address 0x", true},
			{"unregistered buffer", Request{Op: OpRead, Fd: fd, Buf: mem[4096:8192], FixedBuf: true},
				"fixed buffer 0 not registered (0 registered)", false},
			{"unregistered file", Request{Op: OpRead, Fd: 3, FixedFile: true, Buf: mem[4096:8192]},
				"fixed file 3 not registered (0 registered)", false},
			{"bad fd", Request{Op: OpSync, Fd: -1}, "bad file descriptor -1", false},
			{"bad discard", Request{Op: OpDiscard, Fd: fd, Length: 0}, "must be positive", false},
			{"unknown op", Request{Op: Op(99), Fd: fd}, "unknown operation op(99)", false},
		} {
			c.bad.UserData = 2
			n, err := e.Submit([]Request{good, c.bad, good})
			if n != 1 || err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, ErrMisaligned) != c.mis {
				t.Errorf("%s: submitted %d, %v; want 1 and %q (misaligned %v)", c.name, n, err, c.want, c.mis)
			}
			got, _ := runAll(t, e, nil)
			if len(got) != 1 || got[1].Res != 4096 {
				t.Fatalf("%s: completions %+v, want the one good read", c.name, got)
			}
		}
		// A buffer outside the registered one.
		if err := e.RegisterBuffers([][]byte{mem[:4096]}); err != nil {
			t.Fatal(err)
		}
		_, err := e.Submit([]Request{{Op: OpRead, Fd: fd, Buf: mem[4096:8192], FixedBuf: true, UserData: 5}})
		if err == nil || !strings.Contains(err.Error(), "buffer is not inside registered buffer 0") {
			t.Fatalf("buffer outside the registered one: %v", err)
		}
		if e.InFlight() != 0 {
			t.Fatalf("%d in flight after refused requests", e.InFlight())
		}
	})
}

// TestEngineBackPressure keeps 256 reads going through a queue of depth 8.
func TestEngineBackPressure(t *testing.T) {
	const blocks, total = 64, 256
	f, a := directFile(t, blocks*4096)
	forEachEngine(t, Config{Align: a, QueueDepth: 8}, func(t *testing.T, e Engine) {
		mem := alloc(t, total*4096)
		reqs := make([]Request, total)
		for i := range reqs {
			reqs[i] = Request{Op: OpRead, Fd: int32(f.Fd()), Buf: mem[i*4096 : (i+1)*4096],
				Offset: int64(i%blocks) * 4096, UserData: uint64(i)}
		}
		got, full := runAll(t, e, reqs)
		if len(got) != total {
			t.Fatalf("%d completions, want %d", len(got), total)
		}
		expectRes(t, got, 4096)
		for i := range total {
			checkBlock(t, mem[i*4096:(i+1)*4096], uint64(i%blocks), 0)
		}
		if full == 0 {
			t.Fatal("queue of 8 never reported full with 256 requests")
		}
	})
}

// TestEngineSignals runs batches while the thread is hit by a signal every 100µs.
func TestEngineSignals(t *testing.T) {
	const blocks = 64
	f, a := directFile(t, blocks*4096)
	forEachEngine(t, Config{Align: a, QueueDepth: 32}, func(t *testing.T, e Engine) {
		mem := alloc(t, blocks*4096)
		stop := signalStorm(t, unix.Gettid(), 100*time.Microsecond)
		deadline := time.Now().Add(300 * time.Millisecond)
		for gen := uint64(1); time.Now().Before(deadline); gen++ {
			reqs := make([]Request, blocks)
			for i := range blocks {
				fillBlock(mem[i*4096:(i+1)*4096], uint64(i), gen)
				reqs[i] = Request{Op: OpWrite, Fd: int32(f.Fd()), Buf: mem[i*4096 : (i+1)*4096], Offset: int64(i) * 4096, UserData: uint64(i)}
			}
			got, _ := runAll(t, e, reqs)
			expectRes(t, got, 4096)
			for i := range reqs {
				reqs[i].Op = OpRead
				clear(mem[i*4096 : (i+1)*4096])
			}
			got, _ = runAll(t, e, reqs)
			expectRes(t, got, 4096)
			for i := range blocks {
				checkBlock(t, mem[i*4096:(i+1)*4096], uint64(i), gen)
			}
		}
		t.Logf("%d signals", stop())
	})
}

// TestEngineCloseInFlight closes engines with reads and writes in flight.
func TestEngineCloseInFlight(t *testing.T) {
	const blocks = 64
	f, a := directFile(t, blocks*4096)
	for _, c := range engineCases {
		t.Run(c.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if c.kind == KindURing {
				requireURing(t)
			}
			cfg := c.cfg
			cfg.Align = a
			e, err := NewEngine(cfg)
			if err != nil {
				t.Fatal(err)
			}
			mem := alloc(t, 2*blocks*4096)
			reqs := make([]Request, 2*blocks)
			for i := range reqs {
				op := OpRead
				if i%2 == 1 {
					op = OpWrite
				}
				reqs[i] = Request{Op: op, Fd: int32(f.Fd()), Buf: mem[i*4096 : (i+1)*4096], Offset: int64(i%blocks) * 4096, UserData: uint64(i)}
			}
			if n, err := e.Submit(reqs); n != len(reqs) || err != nil {
				t.Fatalf("submit: %d, %v", n, err)
			}
			if err := e.Close(); err != nil {
				t.Fatalf("close with %d in flight: %v", len(reqs), err)
			}
			if err := e.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if _, err := e.Submit(reqs[:1]); !errors.Is(err, ErrClosed) {
				t.Fatalf("submit after close: %v", err)
			}
			if _, err := e.Reap(make([]CQE, 1), 0); !errors.Is(err, ErrClosed) {
				t.Fatalf("reap after close: %v", err)
			}
		})
	}
}

// TestNewEngineChoice checks which engine NewEngine picks and the reason it gives.
func TestNewEngineChoice(t *testing.T) {
	e, err := NewEngine(Config{DisableURing: true})
	if err != nil || e.Kind() != KindSync || !strings.Contains(e.Reason(), "disabled by configuration") {
		t.Fatalf("disabled: %v, %v", e, err)
	}
	e.Close()

	defer func() { setupSyscall = sysSetup }()
	for _, c := range []struct {
		errno unix.Errno
		kind  Kind
	}{{unix.ENOSYS, KindSync}, {unix.EPERM, KindSync}, {unix.ENOMEM, 0}} {
		setupSyscall = func(uint32, *params) (int, unix.Errno) { return -1, c.errno }
		e, err := NewEngine(Config{})
		switch {
		case c.kind == 0:
			if err == nil || !errors.Is(err, c.errno) {
				t.Errorf("%v: engine %v, error %v; want the error", c.errno, e, err)
			}
		case err != nil || e.Kind() != c.kind || !strings.Contains(e.Reason(), c.errno.Error()):
			t.Errorf("%v: %v, %v", c.errno, e, err)
		default:
			t.Logf("%v: %s", c.errno, e.Reason())
			e.Close()
		}
	}
	setupSyscall = sysSetup

	requireURing(t)
	e, err = NewEngine(Config{})
	if err != nil || e.Kind() != KindURing {
		t.Fatalf("default: %v, %v", e, err)
	}
	t.Log(e.Reason())
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []int{-1, 40000} {
		if _, err := NewEngine(Config{QueueDepth: d}); err == nil {
			t.Errorf("queue depth %d accepted", d)
		}
	}
}

// Benchmarks: 4 KiB random O_DIRECT reads over a 128 MiB file, keeping qd requests in flight.
// Run with: go test -run='^$' -bench=. -benchtime=3s ./drd/uring/

func BenchmarkRandRead4K_QD1(b *testing.B)  { benchRandRead(b, 1) }
func BenchmarkRandRead4K_QD32(b *testing.B) { benchRandRead(b, 32) }

func benchRandRead(b *testing.B, qd int) {
	const fileSize = 128 << 20
	f, a := directFile(b, fileSize)
	nblocks := uint64(fileSize / 4096)
	for _, c := range []struct {
		name  string
		cfg   Config
		fixed bool
	}{
		{"uring", Config{}, false},
		{"uring-fixed", Config{}, true},
		{"uring-single-issuer", Config{RingOptions: []Option{WithSingleIssuer()}}, true},
		{"sync", Config{DisableURing: true}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if !c.cfg.DisableURing {
				requireURing(b)
			}
			cfg := c.cfg
			cfg.QueueDepth, cfg.Align = qd, a
			e, err := NewEngine(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			mem := alloc(b, qd*4096)
			fd := int32(f.Fd())
			if c.fixed {
				if err := errors.Join(e.RegisterBuffers([][]byte{mem}), e.RegisterFiles([]int{int(f.Fd())})); err != nil {
					b.Fatal(err)
				}
				fd = 0
			}
			rng := uint64(88172645463325252)
			mk := func(slot int) Request {
				rng ^= rng << 13
				rng ^= rng >> 7
				rng ^= rng << 17
				return Request{Op: OpRead, Fd: fd, FixedFile: c.fixed, Buf: mem[slot*4096 : (slot+1)*4096],
					FixedBuf: c.fixed, Offset: int64(rng%nblocks) * 4096, UserData: uint64(slot)}
			}
			reqs := make([]Request, 0, qd)
			out := make([]CQE, qd)
			b.SetBytes(4096)
			b.ReportAllocs()
			b.ResetTimer()
			issued, done := 0, 0
			for ; issued < qd && issued < b.N; issued++ {
				reqs = append(reqs, mk(issued))
			}
			for done < b.N {
				if len(reqs) > 0 {
					if n, err := e.Submit(reqs); n != len(reqs) || err != nil {
						b.Fatalf("submit: %d of %d, %v", n, len(reqs), err)
					}
				}
				n, err := e.Reap(out, 1)
				if err != nil {
					b.Fatal(err)
				}
				reqs = reqs[:0]
				for _, c := range out[:n] {
					if c.Res != 4096 {
						b.Fatalf("read: %d (%v)", c.Res, c.Err())
					}
					done++
					if issued < b.N {
						reqs = append(reqs, mk(int(c.UserData)))
						issued++
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
		})
	}
}

// BenchmarkNopBatch64 measures the layer's own cost per request: 64 NOPs per io_uring_enter.
func BenchmarkNopBatch64(b *testing.B) {
	requireURing(b)
	e, err := NewEngine(Config{QueueDepth: 64})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	reqs := make([]Request, 64)
	for i := range reqs {
		reqs[i] = Request{Op: OpNop, UserData: uint64(i)}
	}
	out := make([]CQE, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		if _, err := e.Submit(reqs); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < 64; {
			n, err := e.Reap(out, 64-got)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
		done += 64
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/nop")
}

// TestSubmitWait: after SubmitWait(reqs, len(reqs)) every completion is ready, so Reap with
// want 0 returns them all.
func TestSubmitWait(t *testing.T) {
	forEachEngine(t, Config{}, func(t *testing.T, e Engine) {
		reqs := make([]Request, 8)
		for i := range reqs {
			reqs[i] = Request{Op: OpNop, UserData: uint64(i)}
		}
		if n, err := e.SubmitWait(reqs, 8); n != 8 || err != nil {
			t.Fatalf("submit wait: %d, %v", n, err)
		}
		out := make([]CQE, 16)
		if n, err := e.Reap(out, 0); n != 8 || err != nil {
			t.Fatalf("reap after submit wait: %d, %v", n, err)
		}
	})
}

// TestEnginePoll: a poll completes with the events that hold: at once when one holds already,
// else when it comes (io_uring; the synchronous engine waits in Submit, so it is asked only
// about an event that holds).
func TestEnginePoll(t *testing.T) {
	forEachEngine(t, Config{}, func(t *testing.T, e Engine) {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[0])
		defer unix.Close(p[1])
		got := submitBatch(t, e, []Request{{Op: OpPoll, Fd: int32(p[1]), Length: unix.POLLOUT, UserData: 1}})
		if got[1].Res&unix.POLLOUT == 0 {
			t.Errorf("poll for room in an empty pipe: result %#x", got[1].Res)
		}
		if e.Kind() == KindURing {
			if n, err := e.Submit([]Request{{Op: OpPoll, Fd: int32(p[0]), Length: unix.POLLIN, UserData: 2}}); n != 1 || err != nil {
				t.Fatal(n, err)
			}
			out := make([]CQE, 1)
			if n, _ := e.Reap(out, 0); n != 0 {
				t.Fatalf("poll for input on an empty pipe completed: %#x", out[0].Res)
			}
		}
		if _, err := unix.Write(p[1], []byte("x")); err != nil {
			t.Fatal(err)
		}
		if e.Kind() != KindURing {
			submitBatch(t, e, []Request{{Op: OpPoll, Fd: int32(p[0]), Length: unix.POLLIN, UserData: 2}})
			return
		}
		out := make([]CQE, 1)
		if n, err := e.Reap(out, 1); n != 1 || err != nil || out[0].UserData != 2 || out[0].Res&unix.POLLIN == 0 {
			t.Fatalf("poll for input after a write: %d completions, %+v, %v", n, out[0], err)
		}
		if _, err := e.Submit([]Request{{Op: OpPoll, Fd: 0, Length: 0}}); err == nil {
			t.Error("a poll without events was accepted")
		}
	})
}
