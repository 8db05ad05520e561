package heartbeat

import "testing"

// Reference outputs from the SipHash paper (key 00 01 .. 0f, message 00 01 .. n-1).
func TestSipHashVectors(t *testing.T) {
	var key Key
	for i := range key {
		key[i] = byte(i)
	}
	msg := make([]byte, 15)
	for i := range msg {
		msg[i] = byte(i)
	}
	k0, k1 := key.halves()
	for _, tc := range []struct {
		n    int
		want uint64
	}{
		{0, 0x726fdb47dd0e0e31},
		{1, 0x74f839c593dc67fd},
		{15, 0xa129ca6149be45e5},
	} {
		if got := sipHash24(k0, k1, msg[:tc.n]); got != tc.want {
			t.Errorf("siphash of %d bytes = %#x, want %#x", tc.n, got, tc.want)
		}
	}
}
