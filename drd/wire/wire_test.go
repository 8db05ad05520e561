package wire

import (
	"bytes"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	h := Hello{Version: Version, Device: "db0"}
	if got, err := DecodeHello(AppendHello(nil, h)); err != nil || got != h {
		t.Fatalf("hello: %+v, %v", got, err)
	}
	h.Client = 0xfeed
	if got, err := DecodeHello(AppendHello(nil, h)); err != nil || got != h {
		t.Fatalf("hello with client id: %+v, %v", got, err)
	}
	if _, err := DecodeHello(append(AppendHello(nil, Hello{Version: Version, Device: "db0"}), 0, 0, 0, 0, 0, 0, 0, 0)); err == nil {
		t.Fatal("hello with client id 0 accepted")
	}
	if _, err := DecodeHello(append(AppendHello(nil, h), 1)); err == nil {
		t.Fatal("hello with a trailing byte accepted")
	}
	w := Welcome{Status: StatusOK, Epoch: 3, Size: 1 << 30, BlockSize: BlockSize, MaxIO: 1 << 18}
	if got, err := DecodeWelcome(AppendWelcome(nil, w)); err != nil || got != w {
		t.Fatalf("welcome: %+v, %v", got, err)
	}
	r := Request{Op: OpWrite, Length: 4096, Epoch: 9, Tag: 77, Offset: 8192, Data: bytes.Repeat([]byte{1}, 4096)}
	got, err := DecodeRequest(AppendRequest(nil, &r))
	if err != nil || got.Tag != 77 || got.Offset != 8192 || got.Epoch != 9 || !bytes.Equal(got.Data, r.Data) {
		t.Fatalf("request: %+v, %v", got, err)
	}
	resp := Response{Tag: 77, Epoch: 9, Status: StatusOK, Data: []byte("abcd")}
	gr, err := DecodeResponse(AppendResponse(nil, &resp))
	if err != nil || gr.Tag != 77 || gr.Length != 4 || string(gr.Data) != "abcd" {
		t.Fatalf("response: %+v, %v", gr, err)
	}
}

func TestCheck(t *testing.T) {
	const size = 1 << 20
	for _, tc := range []struct {
		op     Op
		off    uint64
		length uint32
		want   Status
	}{
		{OpRead, 0, 4096, StatusOK},
		{OpRead, size - 4096, 4096, StatusOK},
		{OpRead, size, 4096, StatusOutOfRange},
		{OpWrite, 1<<64 - 4096, 8192, StatusOutOfRange},
		{OpRead, 1, 4096, StatusMisaligned},
		{OpRead, 0, 4095, StatusMisaligned},
		{OpRead, 0, 0, StatusMisaligned},
		{OpRead, 0, 1 << 19, StatusTooLarge},
		{OpDiscard, 0, size, StatusOK},
		{OpFlush, 12345, 1, StatusOK},
		{0, 0, 4096, StatusBadOp},
	} {
		if got := Check(tc.op, tc.off, tc.length, size, 1<<18); got != tc.want {
			t.Errorf("Check(%v, %d, %d) = %v, want %v", tc.op, tc.off, tc.length, got, tc.want)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to every decoder: none may panic, and what decodes
// re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(AppendHello(nil, Hello{Version: 1, Device: "d"}))
	f.Add(AppendWelcome(nil, Welcome{BlockSize: BlockSize, MaxIO: BlockSize, Message: "x"}))
	f.Add(AppendRequest(nil, &Request{Op: OpWrite, Length: 3, Data: []byte("abc")}))
	f.Add(AppendResponse(nil, &Response{Tag: 1, Data: []byte("abc")}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, m []byte) {
		if h, err := DecodeHello(m); err == nil && !bytes.Equal(AppendHello(nil, h), m) {
			t.Fatalf("hello does not round-trip")
		}
		if w, err := DecodeWelcome(m); err == nil && !bytes.Equal(AppendWelcome(nil, w)[:4], m[:4]) {
			t.Fatalf("welcome magic")
		}
		if r, err := DecodeRequest(m); err == nil {
			if r.Op == OpWrite && len(r.Data) != int(r.Length) {
				t.Fatalf("write data %d for length %d", len(r.Data), r.Length)
			}
			_ = Check(r.Op, r.Offset, r.Length, 1<<30, MaxIO)
		}
		if r, err := DecodeResponse(m); err == nil && len(r.Data) != int(r.Length) {
			t.Fatalf("response data %d for length %d", len(r.Data), r.Length)
		}
	})
}
