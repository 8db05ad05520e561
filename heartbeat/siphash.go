package heartbeat

import (
	"encoding/binary"
	"math/bits"
)

// Key is the 128-bit cluster key. Frames are authenticated with SipHash-2-4 under it.
type Key [16]byte

// halves returns the key as SipHash's two 64-bit words (little-endian).
func (k Key) halves() (k0, k1 uint64) {
	return binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein, 2012) of msg under (k0, k1). The eBPF
// program computes the same function in bpf/heartbeat.c; TestSipHashVectors checks this one
// against the reference vectors of the paper.
func sipHash24(k0, k1 uint64, msg []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(msg)
	for len(msg) >= 8 {
		m := binary.LittleEndian.Uint64(msg)
		v3 ^= m
		round()
		round()
		v0 ^= m
		msg = msg[8:]
	}
	// The last block: the remaining bytes, and the length mod 256 in the top byte.
	var last [8]byte
	copy(last[:], msg)
	m := binary.LittleEndian.Uint64(last[:]) | uint64(n)<<56
	v3 ^= m
	round()
	round()
	v0 ^= m
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
