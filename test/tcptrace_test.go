package test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A small packet capture for the interconnect tests: AF_PACKET sockets on a node's links that
// record the TCP segments of the cluster transport with the kernel's receive (or transmit)
// timestamps, to show what happens to a stream at a cut (who sent what on which link, the
// acknowledgements and selective acknowledgements). Only what a node receives shows: the
// segments that the steering program redirects did not show as outgoing on these links, so a
// segment lost on the dead link is seen by its absence.

type segment struct {
	at       time.Time
	node     int
	dev      string
	out      bool
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	payload  int
	nop      bool // the payload is only the transport's no-op frames (a nudge)
	sack     [][2]uint32
	window   uint16
	ipID     uint16
}

func (s segment) String() string {
	dir := "in "
	if s.out {
		dir = "out"
	}
	f := ""
	for i, n := range "FSRPAU" {
		if s.flags&(1<<i) != 0 {
			f += string(n)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "n%d %-5s %s %v > %v [%s] seq %d ack %d len %d", s.node, s.dev, dir, s.src, s.dst, f, s.seq, s.ack, s.payload)
	if s.nop {
		sb.WriteString(" (nudge)")
	}
	for _, b := range s.sack {
		fmt.Fprintf(&sb, " sack %d-%d", b[0], b[1])
	}
	return sb.String()
}

// capture records the TCP segments to or from port on the named devices of the calling
// thread's namespace until stop is called, which returns them in time order.
type capture struct {
	mu   sync.Mutex
	segs []segment
	fds  []int
	wg   sync.WaitGroup
	done atomic.Bool
}

func startCapture(node int, devs []string, port uint16) (*capture, error) {
	c := &capture{}
	for _, dev := range devs {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			c.stop()
			return nil, fmt.Errorf("capture socket: %w", err)
		}
		c.fds = append(c.fds, fd)
		idx, err := ifindex(dev)
		if err != nil {
			c.stop()
			return nil, err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: idx}); err != nil {
			c.stop()
			return nil, fmt.Errorf("capture bind %s: %w", dev, err)
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
		c.wg.Go(func() { c.read(node, dev, fd, port) })
	}
	return c, nil
}

func ifindex(dev string) (int, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return 0, fmt.Errorf("capture: %w", err)
	}
	return ifi.Index, nil
}

func (c *capture) read(node int, dev string, fd int, port uint16) {
	buf := make([]byte, 256)
	oob := make([]byte, 128)
	for !c.done.Load() {
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			if (err == unix.EAGAIN || err == unix.EINTR) && !c.done.Load() {
				continue
			}
			return
		}
		at := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
					at = time.Unix(int64(binary.NativeEndian.Uint64(m.Data)), int64(binary.NativeEndian.Uint64(m.Data[8:])))
				}
			}
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		s, ok := parseSegment(buf[:min(n, len(buf))], n, port)
		if !ok {
			continue
		}
		s.at, s.node, s.dev = at, node, dev
		s.out = ll != nil && ll.Pkttype == unix.PACKET_OUTGOING
		c.mu.Lock()
		c.segs = append(c.segs, s)
		c.mu.Unlock()
	}
}

// parseSegment reads an Ethernet frame of wire length n holding IPv4 TCP to or from port.
func parseSegment(b []byte, n int, port uint16) (segment, bool) {
	var s segment
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != unix.ETH_P_IP {
		return s, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0xf) * 4
	if ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 {
		return s, false
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	s.ipID = binary.BigEndian.Uint16(ip[4:])
	tcp := ip[ihl:]
	src, dst := binary.BigEndian.Uint16(tcp), binary.BigEndian.Uint16(tcp[2:])
	if src != port && dst != port {
		return s, false
	}
	s.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), src)
	s.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), dst)
	s.seq, s.ack = binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint32(tcp[8:])
	doff := int(tcp[12]>>4) * 4
	s.flags = tcp[13]
	s.window = binary.BigEndian.Uint16(tcp[14:])
	s.payload = total - ihl - doff
	if len(tcp) >= doff {
		opts := tcp[20:doff]
		for len(opts) > 0 {
			k := opts[0]
			if k == 0 {
				break
			}
			if k == 1 {
				opts = opts[1:]
				continue
			}
			if len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts) {
				break
			}
			if k == 5 {
				for o := 2; o+8 <= int(opts[1]); o += 8 {
					s.sack = append(s.sack, [2]uint32{binary.BigEndian.Uint32(opts[o:]), binary.BigEndian.Uint32(opts[o+4:])})
				}
			}
			opts = opts[opts[1]:]
		}
		if p := tcp[doff:]; s.payload > 0 && s.payload%4 == 0 && len(p) >= s.payload {
			s.nop = true
			for i := 0; i < s.payload; i += 4 {
				if binary.BigEndian.Uint32(p[i:]) != 0xffffffff {
					s.nop = false
				}
			}
		}
	}
	return s, true
}

func (c *capture) stop() []segment {
	c.done.Store(true)
	c.wg.Wait()
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sort.Slice(c.segs, func(i, j int) bool { return c.segs[i].at.Before(c.segs[j].at) })
	return c.segs
}

func sortSegments(s []segment) {
	sort.Slice(s, func(i, j int) bool { return s[i].at.Before(s[j].at) })
}

// tcpExt reads the TcpExt counters of the calling thread's network namespace.
func tcpExt() (map[string]int64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/netstat")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	out := map[string]int64{}
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
			continue
		}
		for j := 1; j < len(names); j++ {
			var v int64
			fmt.Sscan(values[j], &v)
			out[names[j]] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("no TcpExt counters in /proc/net/netstat")
}
