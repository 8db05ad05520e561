package uring

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestABILayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"io_uring_sqe", unsafe.Sizeof(SQE{}), 64},
		{"io_uring_cqe", unsafe.Sizeof(CQE{}), 16},
		{"io_sqring_offsets", unsafe.Sizeof(sqringOffsets{}), 40},
		{"io_cqring_offsets", unsafe.Sizeof(cqringOffsets{}), 40},
		{"io_uring_params", unsafe.Sizeof(params{}), 120},
		{"io_uring_getevents_arg", unsafe.Sizeof(getEventsArg{}), 24},
		{"sqe.user_data offset", unsafe.Offsetof(SQE{}.UserData), 32},
		{"sqe.buf_index offset", unsafe.Offsetof(SQE{}.BufIndex), 40},
		{"sqe.addr3 offset", unsafe.Offsetof(SQE{}.Addr3), 48},
		{"params.sq_off offset", unsafe.Offsetof(params{}.sqOff), 40},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

func newRing(t *testing.T, entries uint32, opts ...Option) *Ring {
	t.Helper()
	requireURing(t)
	r, err := New(entries, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func TestRingNop(t *testing.T) {
	r := newRing(t, 8)
	if _, ok, err := r.PeekCQE(); ok || err != nil {
		t.Fatalf("peek on an idle ring: ok %v, err %v", ok, err)
	}
	if _, err := r.WaitCQE(); !errors.Is(err, ErrNothingInFlight) {
		t.Fatalf("wait on an idle ring: %v, want ErrNothingInFlight", err)
	}
	sqe, err := r.GetSQE()
	if err != nil {
		t.Fatal(err)
	}
	sqe.PrepNop(42)
	if n, err := r.SubmitAndWait(1); n != 1 || err != nil {
		t.Fatalf("submit and wait: %d, %v", n, err)
	}
	cqe, ok, err := r.PeekCQE()
	if !ok || err != nil || cqe.UserData != 42 || cqe.Res != 0 || cqe.Err() != nil {
		t.Fatalf("peek: %+v %v %v", cqe, ok, err)
	}
	if r.InFlight() != 0 {
		t.Fatalf("in flight %d after reaping", r.InFlight())
	}
}

// TestRingBatch submits 64 SQEs with one io_uring_enter and reaps the 64 completions with no
// system call at all.
func TestRingBatch(t *testing.T) {
	r := newRing(t, 64)
	for i := range 64 {
		sqe, err := r.GetSQE()
		if err != nil {
			t.Fatal(err)
		}
		sqe.PrepNop(uint64(i))
	}
	if r.Pending() != 64 {
		t.Fatalf("pending %d, want 64", r.Pending())
	}
	before := r.Stats()
	if n, err := r.Submit(); n != 64 || err != nil {
		t.Fatalf("submit: %d, %v", n, err)
	}
	mid := r.Stats()
	if d := mid.Enters - before.Enters; d != 1 {
		t.Errorf("submit of 64 SQEs took %d io_uring_enter calls, want 1", d)
	}
	out := make([]CQE, 100)
	n, err := r.ReapCQEs(out)
	if err != nil || n != 64 {
		t.Fatalf("reap: %d, %v", n, err)
	}
	if d := r.Stats().Enters - mid.Enters; d != 0 {
		t.Errorf("reaping ready completions took %d system calls, want 0", d)
	}
	seen := map[uint64]bool{}
	for _, c := range out[:n] {
		if c.Res != 0 || seen[c.UserData] {
			t.Fatalf("bad or duplicate completion %+v", c)
		}
		seen[c.UserData] = true
	}
}

// TestRingSQFull: GetSQE on a full submission queue submits what it holds and carries on.
func TestRingSQFull(t *testing.T) {
	r := newRing(t, 4)
	if r.SQEntries() != 4 {
		t.Fatalf("sq entries %d", r.SQEntries())
	}
	for i := range 5 {
		sqe, err := r.GetSQE()
		if err != nil {
			t.Fatalf("sqe %d: %v", i, err)
		}
		sqe.PrepNop(uint64(i))
	}
	if r.InFlight() != 4 || r.Pending() != 1 {
		t.Fatalf("in flight %d, pending %d; want 4 and 1", r.InFlight(), r.Pending())
	}
	out := make([]CQE, 8)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.WaitCQEs(out, 5); n != 5 || err != nil {
		t.Fatalf("wait: %d, %v", n, err)
	}
}

// TestRingCQOverflow keeps far more requests in flight than the completion queue holds: the
// kernel keeps the excess and the reapers get every completion exactly once.
func TestRingCQOverflow(t *testing.T) {
	f, _ := directFile(t, 1<<20)
	fd := int32(f.Fd())
	for _, tc := range []struct {
		name string
		prep func(sqe *SQE, i int, buf []byte)
	}{
		{"nop", func(sqe *SQE, i int, _ []byte) { sqe.PrepNop(uint64(i)) }},
		{"read", func(sqe *SQE, i int, buf []byte) { sqe.PrepRead(fd, buf, int64(i%256)*4096, uint64(i)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, 8, WithCQEntries(8))
			if r.CQEntries() != 8 {
				t.Fatalf("cq entries %d, want 8", r.CQEntries())
			}
			if r.Features()&FeatNoDrop == 0 {
				t.Skip("kernel without IORING_FEAT_NODROP")
			}
			const total = 512
			mem := alloc(t, total*4096)
			seen := make([]bool, total)
			out := make([]CQE, 64)
			got := 0
			check := func(cs []CQE) {
				for _, c := range cs {
					if c.UserData >= total || seen[c.UserData] {
						t.Fatalf("bad or duplicate completion %+v", c)
					}
					if want := int32(0); tc.name == "read" {
						want = 4096
						if c.Res != want {
							t.Fatalf("completion %+v: res want %d", c, want)
						}
					}
					seen[c.UserData] = true
					got++
				}
			}
			// 64 in flight per round, 8 rounds, against a CQ of 8.
			for round := range total / 64 {
				for i := round * 64; i < (round+1)*64; i++ {
					sqe, err := r.GetSQE()
					if err != nil {
						t.Fatal(err)
					}
					tc.prep(sqe, i, mem[i*4096:(i+1)*4096])
				}
				if _, err := r.Submit(); err != nil {
					t.Fatal(err)
				}
				n, err := r.WaitCQEs(out, 64)
				if err != nil || n != 64 {
					t.Fatalf("round %d: reaped %d, %v", round, n, err)
				}
				check(out[:n])
			}
			if got != total || r.InFlight() != 0 {
				t.Fatalf("got %d of %d, %d in flight", got, total, r.InFlight())
			}
			st := r.Stats()
			if st.Dropped != 0 {
				t.Fatalf("kernel dropped %d completions", st.Dropped)
			}
			t.Logf("stats %+v", st)
		})
	}
}

// TestRingEINTR waits on a read of an empty pipe while the waiting thread is hit by a signal
// every 200µs: the wait must survive every EINTR and return the read when data arrives.
func TestRingEINTR(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, 8)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 16)
	sqe, err := r.GetSQE()
	if err != nil {
		t.Fatal(err)
	}
	sqe.PrepRead(int32(p[0]), buf, -1, 7)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	stop := signalStorm(t, unix.Gettid(), 200*time.Microsecond)
	go func() {
		time.Sleep(300 * time.Millisecond)
		unix.Write(p[1], []byte("hello"))
	}()
	cqe, err := r.WaitCQE()
	sent := stop()
	runtime.KeepAlive(buf)
	if err != nil || cqe.UserData != 7 || cqe.Res != 5 || string(buf[:5]) != "hello" {
		t.Fatalf("wait: %+v, %v, %q", cqe, err, buf[:5])
	}
	st := r.Stats()
	t.Logf("%d signals sent, %d EINTR retried, %d enters", sent, st.EINTR, st.Enters)
	if st.EINTR == 0 {
		t.Fatalf("no EINTR seen in %d signals: the retry path was not exercised", sent)
	}

	// A timed wait is resumed the same way and still times out.
	sqe, _ = r.GetSQE()
	sqe.PrepRead(int32(p[0]), buf, -1, 8)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	stop = signalStorm(t, unix.Gettid(), 200*time.Microsecond)
	start := time.Now()
	var one [1]CQE
	n, err := r.WaitCQEsTimeout(one[:], 1, 100*time.Millisecond)
	stop()
	if n != 0 || !errors.Is(err, ErrTimeout) {
		t.Fatalf("timed wait: %d, %v; want a timeout", n, err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("timed wait returned after %v, before its timeout", el)
	}
	// Close cancels the pending pipe read.
}

// TestRingCloseInFlight closes a ring with a read that can never complete (an empty pipe) and
// direct reads in flight: Close cancels or waits for all of them, and is idempotent.
func TestRingCloseInFlight(t *testing.T) {
	requireURing(t)
	f, _ := directFile(t, 1<<20)
	r, err := New(128, WithCloseTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	pipeBuf := make([]byte, 16)
	mem := alloc(t, 64*4096)
	sqe, _ := r.GetSQE()
	sqe.PrepRead(int32(p[0]), pipeBuf, -1, 1000)
	for i := range 64 {
		sqe, _ := r.GetSQE()
		sqe.PrepRead(int32(f.Fd()), mem[i*4096:(i+1)*4096], int64(i)*4096, uint64(i))
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("close with %d requests in flight took %v", 65, time.Since(start))
	if err := r.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := r.GetSQE(); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetSQE after close: %v", err)
	}
	if _, err := r.Submit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after close: %v", err)
	}
	if _, _, err := r.PeekCQE(); !errors.Is(err, ErrClosed) {
		t.Fatalf("PeekCQE after close: %v", err)
	}
	runtime.KeepAlive(pipeBuf)
}

// TestRingSingleIssuer runs a ring with SINGLE_ISSUER (and DEFER_TASKRUN where available) on a
// locked thread, reaping by polling only, and checks that another thread is refused.
func TestRingSingleIssuer(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, _ := directFile(t, 1<<20)
	r := newRing(t, 32, WithSingleIssuer())
	if kernelAtLeast(6, 1) && r.SetupFlags()&(setupSingleIssuer|setupDeferTaskrun) != setupSingleIssuer|setupDeferTaskrun {
		t.Fatalf("setup flags %#x: want SINGLE_ISSUER|DEFER_TASKRUN on Linux >= 6.1", r.SetupFlags())
	}
	mem := alloc(t, 32*4096)
	for i := range 32 {
		sqe, _ := r.GetSQE()
		sqe.PrepRead(int32(f.Fd()), mem[i*4096:(i+1)*4096], int64(i)*4096, uint64(i))
	}
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	// Poll without waiting: the reaper must notice deferred work through IORING_SQ_TASKRUN.
	out := make([]CQE, 32)
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < 32 && time.Now().Before(deadline) {
		n, err := r.ReapCQEs(out[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if got != 32 {
		t.Fatalf("polling reaped %d of 32 completions in 10s", got)
	}
	for i, c := range out {
		if c.Res != 4096 {
			t.Fatalf("completion %d: %+v", i, c)
		}
		checkBlock(t, mem[c.UserData*4096:(c.UserData+1)*4096], c.UserData, 0)
	}

	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // a thread other than the ring's
		defer runtime.UnlockOSThread()
		sqe, _ := r.GetSQE()
		sqe.PrepNop(1)
		_, err := r.Submit()
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), "LockOSThread") {
		t.Fatalf("submit from another thread: %v, want EEXIST with advice", err)
	}
	// The NOP stays queued; the owner submits it.
	if cqe, err := r.WaitCQE(); err != nil || cqe.UserData != 1 {
		t.Fatalf("owner wait: %+v, %v", cqe, err)
	}
}

func TestRingSQPoll(t *testing.T) {
	f, _ := directFile(t, 1<<20)
	r := newRing(t, 16, WithSQPoll(50*time.Millisecond))
	if r.SetupFlags()&setupSQPoll == 0 {
		t.Fatalf("setup flags %#x without SQPOLL", r.SetupFlags())
	}
	mem := alloc(t, 16*4096)
	out := make([]CQE, 16)
	for round := range 3 {
		for i := range 16 {
			sqe, err := r.GetSQE()
			if err != nil {
				t.Fatal(err)
			}
			sqe.PrepRead(int32(f.Fd()), mem[i*4096:(i+1)*4096], int64(i)*4096, uint64(i))
		}
		if n, err := r.Submit(); n != 16 || err != nil {
			t.Fatalf("round %d: submit %d, %v", round, n, err)
		}
		if n, err := r.WaitCQEs(out, 16); n != 16 || err != nil {
			t.Fatalf("round %d: wait %d, %v", round, n, err)
		}
		for _, c := range out {
			if c.Res != 4096 {
				t.Fatalf("completion %+v", c)
			}
		}
		time.Sleep(100 * time.Millisecond) // let the polling thread go to sleep
	}
}

func TestRingRegisterRules(t *testing.T) {
	r := newRing(t, 8)
	if err := r.UnregisterBuffers(); err == nil {
		t.Fatal("unregister with nothing registered succeeded")
	}
	if err := r.RegisterBuffers([][]byte{{}}); err == nil {
		t.Fatal("registered an empty buffer")
	}
	mem := alloc(t, 8192)
	if err := r.RegisterBuffers([][]byte{mem[:4096], mem[4096:]}); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterBuffers([][]byte{mem}); err == nil {
		t.Fatal("registered buffers twice")
	}
	sqe, _ := r.GetSQE()
	sqe.PrepNop(1)
	r.Submit()
	if err := r.UnregisterBuffers(); err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("unregister with a request in flight: %v", err)
	}
	if _, err := r.WaitCQE(); err != nil {
		t.Fatal(err)
	}
	if err := r.UnregisterBuffers(); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFiles([]int{0, -1}); err != nil {
		t.Fatal(err)
	}
	if r.Files() != 2 {
		t.Fatalf("files %d", r.Files())
	}
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckAligned(t *testing.T) {
	mem := alloc(t, 3*4096)
	a := Alignment{Memory: 512, Offset: 4096}
	for _, c := range []struct {
		name string
		buf  []byte
		off  int64
		want string
	}{
		{"ok", mem[:4096], 8192, ""},
		{"offset", mem[:4096], 1000, "offset 1000 is not a multiple of the 4096-byte block size"},
		{"negative", mem[:4096], -4096, "offset -4096 is negative"},
		{"length", mem[:100], 0, "length 100 is not a multiple of the 4096-byte block size"},
		{"address", mem[256 : 256+4096], 0, "is not aligned to 512 bytes"},
		{"address 512 ok", mem[512 : 512+4096], 0, ""},
	} {
		err := CheckAligned(c.buf, c.off, a)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrMisaligned)):
			t.Errorf("%s: %v, want %q wrapping ErrMisaligned", c.name, err, c.want)
		}
	}
	err := CheckAligned(mem[256:256+4096], 0, a)
	if want := "buffer address 0x"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%v: want prefix %q", err, want)
	}
}

func TestOpenDirect(t *testing.T) {
	f, a := directFile(t, 1<<16)
	t.Logf("%s: %+v", f.Name(), a)
	if a.Offset == 0 || a.Memory == 0 || a.Offset&(a.Offset-1) != 0 || a.Source == "" {
		t.Fatalf("alignment %+v", a)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_DIRECT == 0 {
		t.Fatalf("flags %#x, %v: O_DIRECT not set", fl, err)
	}
	if _, _, err := OpenDirect(f.Name()+".missing", os.O_RDONLY); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestAllocAligned(t *testing.T) {
	for _, c := range []struct{ size, align int }{{1, 4096}, {4096, 512}, {10000, 4096}, {4096, 1 << 21}} {
		b, err := AllocAligned(c.size, c.align)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != c.size || uintptr(unsafe.Pointer(&b[0]))%uintptr(c.align) != 0 {
			t.Fatalf("%+v: len %d at %p", c, len(b), &b[0])
		}
		b[len(b)-1] = 1
		if err := FreeAligned(b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := AllocAligned(4096, 3000); err == nil {
		t.Fatal("alignment 3000 accepted")
	}
}

// TestRingCloseTimeout: when the requests in flight outlive the close timeout, Close says so and
// keeps the registered buffers referenced for good instead of letting them be freed.
func TestRingCloseTimeout(t *testing.T) {
	requireURing(t)
	r, err := New(8, WithCloseTimeout(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	heap := make([]byte, 4096)
	if err := r.RegisterBuffers([][]byte{heap}); err != nil {
		t.Fatal(err)
	}
	sqe, _ := r.GetSQE()
	sqe.PrepReadFixed(int32(p[0]), heap, -1, 0, 1)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	graveyard.Lock()
	buried := len(graveyard.bufs)
	graveyard.Unlock()
	if err := r.Close(); !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("close: %v, want ErrDrainTimeout", err)
	}
	graveyard.Lock()
	defer graveyard.Unlock()
	if len(graveyard.bufs) != buried+1 || &graveyard.bufs[buried][0] != &heap[0] {
		t.Fatalf("registered buffer not kept after a close timeout")
	}
}
