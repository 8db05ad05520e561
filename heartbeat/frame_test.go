package heartbeat

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics, that whatever it accepts re-encodes to the same
// bytes, and that any Frame with valid flags and link id survives an encode-decode round trip
// (and is rejected for the right reason otherwise).
func FuzzDecode(f *testing.F) {
	valid := Frame{Flags: FlagEchoRequest, LinkID: 1, ClusterID: testCluster, SrcNode: 2,
		Incarnation: 5, Seq: 9, SendNS: 1e9, Progress: 3}
	f.Add(valid.AppendEncode(nil, testKey), valid.Flags, valid.LinkID, valid.ClusterID,
		valid.SrcNode, valid.EchoNode, valid.Incarnation, valid.Seq, valid.SendNS, valid.Progress,
		valid.EchoNS)
	f.Add([]byte{}, FlagEchoReply, uint8(4), uint32(0), uint16(0), uint16(3), uint64(0),
		uint64(0), uint64(0), uint64(0), uint64(1))
	f.Add(bytes.Repeat([]byte{1}, 80), uint8(3), uint8(0), uint32(testCluster), uint16(1),
		uint16(2), uint64(1), uint64(2), uint64(3), uint64(4), uint64(5))

	f.Fuzz(func(t *testing.T, raw []byte, flags, link uint8, cluster uint32, src, echo uint16,
		inc, seq, send, progress, echoNS uint64) {
		// Arbitrary bytes.
		got, err := Decode(raw, testCluster, testKey)
		switch {
		case err == nil:
			if again := got.AppendEncode(nil, testKey); !bytes.Equal(again, raw[:FrameSize]) {
				t.Fatalf("accepted % x, re-encoded as % x", raw[:FrameSize], again)
			}
		case !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) &&
			!errors.Is(err, ErrCluster) && !errors.Is(err, ErrBadMAC):
			t.Fatalf("Decode error %v is none of the sentinels", err)
		}

		// An encoded Frame.
		fr := Frame{Flags: flags, LinkID: link, ClusterID: cluster, SrcNode: src, EchoNode: echo,
			Incarnation: inc, Seq: seq, SendNS: send, Progress: progress, EchoNS: echoNS}
		b := fr.AppendEncode([]byte("prefix"), testKey)
		if len(b) != len("prefix")+FrameSize || string(b[:6]) != "prefix" {
			t.Fatalf("AppendEncode produced %d bytes or clobbered the prefix", len(b))
		}
		b = b[6:]
		got, err = Decode(b, cluster, testKey)
		validFlags := flags&^(FlagEchoRequest|FlagEchoReply) == 0 &&
			flags != FlagEchoRequest|FlagEchoReply
		if !validFlags || link >= MaxLinks {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("flags %#x link %d: got %v, want ErrMalformed", flags, link, err)
			}
			return
		}
		if err != nil || got != fr {
			t.Fatalf("round trip of %+v: got %+v, %v", fr, got, err)
		}
		if _, err := Decode(b, cluster+1, testKey); !errors.Is(err, ErrCluster) {
			t.Fatalf("another cluster: got %v, want ErrCluster", err)
		}
		if _, err := Decode(b, cluster, otherKey); !errors.Is(err, ErrBadMAC) {
			t.Fatalf("another key: got %v, want ErrBadMAC", err)
		}
	})
}
