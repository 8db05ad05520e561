package heartbeat

import (
	"fmt"
	"net"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// RawLink is an AF_PACKET socket on one interface for ethertype 0x88B5: it sends heartbeats to
// the link's broadcast address and, on the user-space fallback path, receives them. It does
// not see the frames it sends itself (PACKET_IGNORE_OUTGOING).
type RawLink struct {
	Iface *net.Interface
	conn  *packet.Conn
	dst   *packet.Addr
}

// OpenRawLink opens the socket on the named interface.
func OpenRawLink(name string) (*RawLink, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("open raw link: %w", err)
	}
	conn, err := packet.Listen(ifi, packet.Datagram, EtherType, nil)
	if err != nil {
		return nil, fmt.Errorf("open raw link on %s: %w", name, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("raw link on %s: %w", name, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
		if serr == nil {
			// Room for bursts while the fallback receiver is not scheduled.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
		}
	}); err != nil || serr != nil {
		conn.Close()
		return nil, fmt.Errorf("raw link on %s: socket options: %v %v", name, err, serr)
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	return &RawLink{Iface: ifi, conn: conn, dst: &packet.Addr{HardwareAddr: bcast}}, nil
}

// Send broadcasts one heartbeat payload.
func (l *RawLink) Send(payload []byte) error {
	_, err := l.conn.WriteTo(payload, l.dst)
	return err
}

// Ifindex returns the interface index.
func (l *RawLink) Ifindex() int { return l.Iface.Index }

// Name returns the interface name.
func (l *RawLink) Name() string { return l.Iface.Name }

// Receive reads one heartbeat payload and its sender's MAC, waiting at most until deadline
// (zero: no deadline).
func (l *RawLink) Receive(buf []byte, deadline time.Time) (int, Source, error) {
	if err := l.conn.SetReadDeadline(deadline); err != nil {
		return 0, Source{}, err
	}
	n, addr, err := l.conn.ReadFrom(buf)
	if err != nil {
		return 0, Source{}, err
	}
	var src Source
	copy(src.MAC[:], addr.(*packet.Addr).HardwareAddr)
	return n, src, nil
}

// Reply sends a payload to one station (echo replies of the fallback path).
func (l *RawLink) Reply(payload []byte, to Source) error {
	_, err := l.conn.WriteTo(payload, &packet.Addr{HardwareAddr: net.HardwareAddr(to.MAC[:])})
	return err
}

// Close closes the socket.
func (l *RawLink) Close() error { return l.conn.Close() }

// frameIfindex lets the sender address this link's interface from its own batch socket.
func (l *RawLink) frameIfindex() int { return l.Iface.Index }
