package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vigil/drd/server"
)

type env struct {
	unix, tcp string
	backing   string
}

func newEnv(t *testing.T, size int64) *env {
	dir, err := os.MkdirTemp("/var/tmp", "drd-nbd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{backing: filepath.Join(dir, "disk"), unix: filepath.Join(dir, "nbd.sock")}
	os.WriteFile(e.backing, nil, 0o600)
	os.Truncate(e.backing, size)
	dev, err := server.OpenDevice("d0", e.backing)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	ns := NewServer(srv, nil)
	ul, err := net.Listen("unix", e.unix)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.tcp = tl.Addr().String()
	go ns.Serve(ul)
	go ns.Serve(tl)
	t.Cleanup(func() {
		ns.Close()
		srv.Close()
		dev.Close()
	})
	return e
}

func (e *env) uri() string { return "nbd+unix:///d0?socket=" + e.unix }

func need(t *testing.T, tool string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s not installed (Debian: libnbd-bin, fio; .ci/run installs them)", tool)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestNbdinfo(t *testing.T) {
	need(t, "nbdinfo")
	e := newEnv(t, 8<<20)
	out := run(t, "nbdinfo", e.uri())
	for _, want := range []string{"export-size: 8388608", "block_size_minimum: 4096", "can_flush: true", "can_trim: true"} {
		if !strings.Contains(out, want) {
			t.Errorf("nbdinfo output lacks %q:\n%s", want, out)
		}
	}
	out = run(t, "nbdinfo", "--list", "nbd://"+e.tcp)
	if !strings.Contains(out, "export=\"d0\"") && !strings.Contains(out, "export=d0") && !strings.Contains(out, "d0") {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
}

func TestNbdcopy(t *testing.T) {
	need(t, "nbdcopy")
	e := newEnv(t, 8<<20)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := make([]byte, 8<<20)
	rand.Read(data)
	os.WriteFile(src, data, 0o600)
	run(t, "nbdcopy", src, e.uri())
	run(t, "nbdcopy", "nbd://"+e.tcp+"/d0", dst)
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("data copied in and out through NBD differs")
	}
	disk, _ := os.ReadFile(e.backing)
	if !bytes.Equal(disk, data) {
		t.Fatal("backing differs from what nbdcopy wrote")
	}
}

func TestFioNBD(t *testing.T) {
	need(t, "fio")
	if out, _ := exec.Command("fio", "--enghelp").CombinedOutput(); !strings.Contains(string(out), "nbd") {
		t.Fatal("fio is installed without its nbd engine")
	}
	e := newEnv(t, 16<<20)
	// fio saves its verify state in the working directory: not in the source tree.
	out := run(t, "fio", "--name=drd", "--ioengine=nbd", "--uri="+e.uri(), "--rw=randwrite", "--bs=4k",
		"--iodepth=16", "--size=16M", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0",
		"--output-format=terse")
	if f := strings.Split(out, ";"); len(f) < 10 || f[4] != "0" {
		t.Fatalf("fio: %s", out)
	}
}

// rawNegotiate runs a client by hand over the unix socket.
func rawConn(t *testing.T, e *env) (net.Conn, []byte) {
	c, err := net.Dial("unix", e.unix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	g := make([]byte, 18)
	if _, err := io.ReadFull(c, g); err != nil {
		t.Fatal(err)
	}
	return c, g
}

func option(c net.Conn, opt uint32, data []byte) {
	b := be.AppendUint64(nil, optMagic)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	c.Write(append(b, data...))
}

func readOptReply(t *testing.T, c net.Conn) (opt, typ uint32, data []byte) {
	t.Helper()
	h := make([]byte, 20)
	if _, err := io.ReadFull(c, h); err != nil {
		t.Fatal(err)
	}
	if be.Uint64(h) != repMagic {
		t.Fatalf("reply magic %#x", be.Uint64(h))
	}
	data = make([]byte, be.Uint32(h[16:]))
	io.ReadFull(c, data)
	return be.Uint32(h[8:]), be.Uint32(h[12:]), data
}

// TestNegotiationErrors: unknown options, bad data and unknown exports get error replies and
// the connection goes on; garbage ends the connection, and the server serves the next one.
func TestNegotiationErrors(t *testing.T) {
	e := newEnv(t, 1<<20)
	c, g := rawConn(t, e)
	if be.Uint64(g) != nbdMagic || be.Uint64(g[8:]) != optMagic {
		t.Fatalf("greeting %x", g)
	}
	c.Write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes))
	option(c, 99, nil)
	if _, typ, _ := readOptReply(t, c); typ != repErrUnsup {
		t.Errorf("unknown option: reply %#x", typ)
	}
	info := be.AppendUint32(nil, 4)
	info = append(info, "nope"...)
	info = be.AppendUint16(info, 0)
	option(c, OptInfo, info)
	if _, typ, msg := readOptReply(t, c); typ != repErrUnknown {
		t.Errorf("unknown export: reply %#x %s", typ, msg)
	}
	option(c, OptInfo, []byte{0, 0, 0, 200, 1})
	if _, typ, _ := readOptReply(t, c); typ != repErrInvalid {
		t.Errorf("bad info data: reply %#x", typ)
	}
	option(c, OptStructuredReply, nil)
	if _, typ, _ := readOptReply(t, c); typ != repAck {
		t.Errorf("structured reply: %#x", typ)
	}
	// GO on d0, then a misaligned read and an out-of-range write get errors; a good read works.
	goData := be.AppendUint32(nil, 2)
	goData = append(goData, "d0"...)
	goData = be.AppendUint16(goData, 0)
	option(c, OptGo, goData)
	for {
		_, typ, _ := readOptReply(t, c)
		if typ == repAck {
			break
		}
		if typ != repInfo {
			t.Fatalf("go: reply %#x", typ)
		}
	}
	c.Write(AppendRequest(nil, Request{Type: CmdRead, Cookie: 1, Offset: 100, Length: 4096}))
	chunk := make([]byte, 20)
	io.ReadFull(c, chunk)
	if be.Uint16(chunk[6:]) != replyTypeError || be.Uint64(chunk[8:]) != 1 {
		t.Fatalf("misaligned read: chunk %x", chunk)
	}
	payload := make([]byte, be.Uint32(chunk[16:]))
	io.ReadFull(c, payload)
	if be.Uint32(payload) != errInvalid {
		t.Fatalf("misaligned read: error %d", be.Uint32(payload))
	}
	c.Write(append(AppendRequest(nil, Request{Type: CmdWrite, Cookie: 2, Offset: 1 << 20, Length: 4096}), make([]byte, 4096)...))
	io.ReadFull(c, chunk)
	payload = make([]byte, be.Uint32(chunk[16:]))
	io.ReadFull(c, payload)
	if be.Uint16(chunk[6:]) != replyTypeError || be.Uint32(payload) != errNoSpace {
		t.Fatalf("write past the end: chunk %x payload %x", chunk, payload)
	}
	c.Write(AppendRequest(nil, Request{Type: CmdRead, Cookie: 3, Offset: 4096, Length: 4096}))
	io.ReadFull(c, chunk)
	if be.Uint16(chunk[6:]) != replyTypeData || be.Uint32(chunk[16:]) != 8+4096 {
		t.Fatalf("read: chunk %x", chunk)
	}
	io.ReadFull(c, make([]byte, 8+4096))
	// FUA was not offered: a write asking for it is refused (not done without the flush it
	// asks for), and so is an unknown flag; the write's data is consumed and nothing changes.
	for i, flags := range []uint16{cmdFlagFUA, 1 << 9} {
		c.Write(append(AppendRequest(nil, Request{Type: CmdWrite, Flags: flags, Cookie: uint64(10 + i), Length: 4096}), bytes.Repeat([]byte{0xee}, 4096)...))
		io.ReadFull(c, chunk)
		payload = make([]byte, be.Uint32(chunk[16:]))
		io.ReadFull(c, payload)
		if be.Uint16(chunk[6:]) != replyTypeError || be.Uint64(chunk[8:]) != uint64(10+i) || be.Uint32(payload) != errInvalid {
			t.Fatalf("write with flags %#x: chunk %x payload %x", flags, chunk, payload)
		}
	}
	c.Write(AppendRequest(nil, Request{Type: CmdRead, Cookie: 4, Offset: 0, Length: 4096}))
	io.ReadFull(c, chunk)
	got := make([]byte, 8+4096)
	io.ReadFull(c, got)
	if be.Uint16(chunk[6:]) != replyTypeData || !bytes.Equal(got[8:], make([]byte, 4096)) {
		t.Fatalf("block 0 after refused writes: chunk %x, data %x...", chunk, got[8:16])
	}
	c.Write(AppendRequest(nil, Request{Type: CmdDisc}))

	// Garbage instead of an option: the connection ends.
	c2, _ := rawConn(t, e)
	c2.Write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle))
	c2.Write(bytes.Repeat([]byte{0xff}, 16))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("connection still open after garbage: %d, %v", n, err)
	}
	// Old-style client flags: refused.
	c3, _ := rawConn(t, e)
	c3.Write([]byte{0, 0, 0, 0})
	if n, err := c3.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("connection still open after zero flags: %d, %v", n, err)
	}
	// The server still serves.
	need(t, "nbdinfo")
	run(t, "nbdinfo", e.uri())
}

// FuzzNegotiation drives the negotiator with arbitrary option streams.
func FuzzNegotiation(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 2, 'd', '0', 0, 0})
	f.Add([]byte{0, 0, 0, 6, 0, 0, 0, 5, 0, 0, 0, 9, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		n := &Negotiator{Exports: []Export{{Name: "d0", Size: 1 << 20}}, MaxIO: 1 << 18}
		if err := n.ClientFlags([]byte{0, 0, 0, 3}); err != nil {
			t.Fatal(err)
		}
		for len(b) >= 8 {
			hdr := be.AppendUint64(nil, optMagic)
			hdr = append(hdr, b[:8]...)
			opt, length, err := OptionHeader(hdr)
			b = b[8:]
			if err != nil {
				return
			}
			if uint64(length) > uint64(len(b)) {
				return
			}
			out := n.Option(opt, b[:length])
			b = b[length:]
			if out.Close || out.Export != nil {
				return
			}
		}
	})
}

// FuzzRequest parses arbitrary request headers and replies to them.
func FuzzRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Type: CmdRead, Length: 4096}))
	f.Add(make([]byte, RequestSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRequest(nil, r), b) {
			t.Fatal("request does not round-trip")
		}
		_ = AppendReply(nil, true, r, nbdErrno(0, r.Type), int(r.Length%(1<<20)))
		_ = AppendReply(nil, false, r, 5, 0)
	})
}

func TestQemuImg(t *testing.T) {
	need(t, "qemu-img")
	e := newEnv(t, 8<<20)
	out := run(t, "qemu-img", "info", "--output=json", e.uri())
	if !strings.Contains(out, `"virtual-size": 8388608`) {
		t.Fatalf("qemu-img info:\n%s", out)
	}
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	data := make([]byte, 8<<20)
	rand.Read(data[:4<<20]) // the second half stays zero
	os.WriteFile(src, data, 0o600)
	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, e.uri())
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd://"+e.tcp+"/d0", dst)
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, data) {
		t.Fatal("data copied in and out with qemu-img differs")
	}
}
