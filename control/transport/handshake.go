package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// The TCP handshake authenticates both ends with the cluster key before a stream carries
// anything (a challenge and response each way, bound to both nonces and to the hello):
//
//	dialer → listener  hello    magic "VGT1", version, service, from, to, dialer nonce (16)
//	listener → dialer  challenge listener nonce (16), HMAC-SHA256(key, "listener" | hello | listener nonce)
//	dialer → listener  response HMAC-SHA256(key, "dialer" | hello | listener nonce)
//	listener → dialer  verdict   one byte: accepted, not listening, wrong node
//
// The listener says nothing about itself before the dialer proved it holds the key, and
// neither side accepts a proof computed over another hello or nonce, so a recorded
// handshake cannot be replayed and a proof cannot be reflected. Messages after the handshake
// are framed as a 4-byte big-endian length and the payload; the length 0xffffffff is a frame
// without payload that the receiver skips (see TCP.Nudge).

const (
	helloSize     = 4 + 1 + 1 + 2 + 2 + nonceSize
	nonceSize     = 16
	macSize       = sha256.Size
	challengeSize = nonceSize + macSize
	protoVersion  = 1
)

var helloMagic = [4]byte{'V', 'G', 'T', '1'}

// verdicts
const (
	verdictAccepted     byte = 0
	verdictNotListening byte = 1
	verdictWrongNode    byte = 2
)

type hello struct {
	Version  uint8
	Service  Service
	From, To NodeID
	Nonce    [nonceSize]byte
}

func (h hello) marshal() []byte {
	b := make([]byte, helloSize)
	copy(b, helloMagic[:])
	b[4] = h.Version
	b[5] = byte(h.Service)
	binary.BigEndian.PutUint16(b[6:], uint16(h.From))
	binary.BigEndian.PutUint16(b[8:], uint16(h.To))
	copy(b[10:], h.Nonce[:])
	return b
}

var errBadHello = errors.New("bad hello")

// parseHello decodes a hello; it checks the framing, not the ids or the service.
func parseHello(b []byte) (hello, error) {
	var h hello
	if len(b) != helloSize {
		return h, fmt.Errorf("%w: %d bytes, want %d", errBadHello, len(b), helloSize)
	}
	if [4]byte(b[:4]) != helloMagic {
		return h, fmt.Errorf("%w: magic %q, not a vigil transport", errBadHello, b[:4])
	}
	h.Version = b[4]
	if h.Version != protoVersion {
		return h, fmt.Errorf("%w: version %d, this node speaks %d", errBadHello, h.Version, protoVersion)
	}
	h.Service = Service(b[5])
	h.From = NodeID(binary.BigEndian.Uint16(b[6:]))
	h.To = NodeID(binary.BigEndian.Uint16(b[8:]))
	copy(h.Nonce[:], b[10:])
	if h.From == 0 || h.To == 0 {
		return h, fmt.Errorf("%w: node id 0", errBadHello)
	}
	return h, nil
}

// proof is the HMAC one side sends to show it holds the key.
func proof(key []byte, role string, helloBytes []byte, nonce []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("vigil transport " + role))
	m.Write(helloBytes)
	m.Write(nonce)
	return m.Sum(nil)
}
