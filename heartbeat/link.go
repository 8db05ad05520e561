package heartbeat

import (
	"net/netip"
	"time"
)

// Link is one private link's socket: it sends this node's heartbeats and, on the user-space
// fallback path, receives the peers' and answers their echo requests. RawLink carries them in
// raw Ethernet frames, UDPLink in UDP datagrams for routed links.
type Link interface {
	Transmitter
	Ifindex() int
	Name() string
	// Receive reads one heartbeat payload, waiting at most until deadline.
	Receive(buf []byte, deadline time.Time) (int, Source, error)
	// Reply sends a payload back to where a received one came from.
	Reply(payload []byte, to Source) error
}

// Source is where a received heartbeat came from: a MAC address on raw links, an IP endpoint
// on UDP links.
type Source struct {
	MAC  [6]byte
	Addr netip.AddrPort
}
