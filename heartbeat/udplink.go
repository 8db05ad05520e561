package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UDPLink carries heartbeats in UDP datagrams over one interface, for private links that are
// routed: it sends each heartbeat to every peer's endpoint on the link. The socket is bound to
// the interface, so heartbeats never leave through another one.
type UDPLink struct {
	iface *net.Interface
	conn  *net.UDPConn
	peers []netip.AddrPort
}

// OpenUDPLink binds local on the named interface, to send to peers.
func OpenUDPLink(name string, local netip.AddrPort, peers []netip.AddrPort) (*UDPLink, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("open udp link: %w", err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = errors.Join(
				unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, name),
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20),
			)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", local.String())
	if err != nil {
		return nil, fmt.Errorf("open udp link on %s at %v: %w", name, local, err)
	}
	return &UDPLink{iface: ifi, conn: pc.(*net.UDPConn), peers: peers}, nil
}

// Send sends one heartbeat payload to every peer. It tries them all and returns the errors.
func (l *UDPLink) Send(payload []byte) error {
	var errs []error
	for _, p := range l.peers {
		if _, err := l.conn.WriteToUDPAddrPort(payload, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ifindex returns the interface index.
func (l *UDPLink) Ifindex() int { return l.iface.Index }

// Name returns the interface name.
func (l *UDPLink) Name() string { return l.iface.Name }

// Receive reads one heartbeat payload and its sender's endpoint.
func (l *UDPLink) Receive(buf []byte, deadline time.Time) (int, Source, error) {
	if err := l.conn.SetReadDeadline(deadline); err != nil {
		return 0, Source{}, err
	}
	n, from, err := l.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return 0, Source{}, err
	}
	return n, Source{Addr: from}, nil
}

// Reply sends a payload back to a sender's endpoint.
func (l *UDPLink) Reply(payload []byte, to Source) error {
	_, err := l.conn.WriteToUDPAddrPort(payload, to.Addr)
	return err
}

// Close closes the socket.
func (l *UDPLink) Close() error { return l.conn.Close() }
