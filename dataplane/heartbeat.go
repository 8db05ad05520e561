//go:build linux

package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"vigil/heartbeat"
)

// KernelConfig is the configuration of the heartbeat programs (struct hb_config in
// bpf/heartbeat.h; times are CLOCK_MONOTONIC nanoseconds).
type KernelConfig struct {
	Key            [16]byte
	ClusterID      uint32
	NodeID         uint16
	Incarnation    uint64
	DetectNS       uint64 // interval x multiplier
	StallTimeoutNS uint64
	ProgressNS     uint64 // 0: progress freeze detection off
	SweepNS        uint64 // bpf_timer period; 0 stops the timer
	StartNS        uint64
	Rise           uint32
	NLinks         uint32
	UDPPort        uint16
	// LinksDown has bit i set when link i lost carrier locally (netlink): its slots count as
	// stale at the next sweep.
	LinksDown uint32
	// CatchupNS turns on pause compensation: the catch-up window after a sweep that ran
	// late (bpf/heartbeat.h); 0: off. The daemon uses one interval.
	CatchupNS uint64
	// NowNS, when non-zero, replaces the kernel clock: tests only.
	NowNS uint64
}

// HeartbeatOptions configures LoadHeartbeat.
type HeartbeatOptions struct {
	// PinDir, when set, is a directory on a bpffs where the maps and XDP links are pinned, so
	// that a restarted daemon finds the state (and the kernel keeps echoing and sweeping while
	// no daemon runs). Empty: nothing is pinned and Close removes everything.
	PinDir string
	// Logger receives attach decisions. Nil: discard.
	Logger *slog.Logger
}

// Heartbeat is the loaded heartbeat plane: the XDP program, the sweep timer programs and their
// maps. Its methods are safe for concurrent use.
type Heartbeat struct {
	objs   heartbeatObjects
	opts   HeartbeatOptions
	log    *slog.Logger
	slots  *ebpf.Memory
	peers  *ebpf.Memory
	tx     *ebpf.Memory
	txBuf  [txSize]byte // StoreTx's encoding buffer: only the sender calls it
	events *ringbuf.Reader

	closeEvents sync.Once
	eventsErr   error
	wait        eventWait // see WaitEvent

	mu    sync.Mutex
	cfg   KernelConfig
	links map[int]attached // by ifindex
}

type attached struct {
	link link.Link
	pin  string
	mode string
}

// ErrNotSupported wraps failures caused by a kernel without the needed eBPF features.
var ErrNotSupported = ebpf.ErrNotSupported

// LoadHeartbeat loads the heartbeat programs and maps (reusing pinned maps when PinDir holds
// them). Nothing is attached until Attach. The caller must Close the result.
func LoadHeartbeat(opts HeartbeatOptions) (*Heartbeat, error) {
	h := &Heartbeat{opts: opts, log: opts.Logger, links: map[int]attached{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	spec, err := loadHeartbeat()
	if err != nil {
		return nil, fmt.Errorf("load heartbeat spec: %w", err)
	}
	var copts ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := ensureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		for name, m := range spec.Maps {
			// The state maps; not the .bss that only carries type information.
			if !strings.HasPrefix(name, ".") {
				m.Pinning = ebpf.PinByName
			}
		}
		copts.Maps.PinPath = opts.PinDir
	}
	if err := spec.LoadAndAssign(&h.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load heartbeat programs: the maps pinned in %s come from an incompatible build; remove that directory and start again: %w", opts.PinDir, err)
		}
		return nil, fmt.Errorf("load heartbeat programs: %w", err)
	}
	if h.slots, err = h.objs.Slots.Memory(); err != nil {
		h.objs.Close()
		return nil, fmt.Errorf("map slots memory: %w", err)
	}
	if h.peers, err = h.objs.Peers.Memory(); err != nil {
		h.objs.Close()
		return nil, fmt.Errorf("map peers memory: %w", err)
	}
	if h.tx, err = h.objs.Txstamps.Memory(); err != nil {
		h.objs.Close()
		return nil, fmt.Errorf("map txstamps memory: %w", err)
	}
	if h.events, err = ringbuf.NewReader(h.objs.Events); err != nil {
		h.objs.Close()
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	return h, nil
}

// ensureBPFFS creates dir and checks that it lies on a bpffs, mounting one at dir if not.
func ensureBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("%s is not on a bpffs and mounting one failed: %w", dir, err)
	}
	return nil
}

// SetConfig writes the configuration the programs read.
func (h *Heartbeat) SetConfig(c KernelConfig) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.setConfigLocked(c)
}

// SetLinkDown marks link id down (or up again) after a local carrier change, and sweeps at
// once so that the transition does not wait for the detection time.
func (h *Heartbeat) SetLinkDown(id uint8, down bool) error {
	h.mu.Lock()
	c := h.cfg
	if down {
		c.LinksDown |= 1 << id
	} else {
		c.LinksDown &^= 1 << id
	}
	err := h.setConfigLocked(c)
	h.mu.Unlock()
	if err != nil {
		return err
	}
	return h.Sweep()
}

func (h *Heartbeat) setConfigLocked(c KernelConfig) error {
	kc := heartbeatHbConfig{
		K0:             binary.LittleEndian.Uint64(c.Key[:8]),
		K1:             binary.LittleEndian.Uint64(c.Key[8:]),
		Incarnation:    c.Incarnation,
		DetectNs:       c.DetectNS,
		StallTimeoutNs: c.StallTimeoutNS,
		ProgressNs:     c.ProgressNS,
		SweepNs:        c.SweepNS,
		StartNs:        c.StartNS,
		NowNs:          c.NowNS,
		ClusterId:      c.ClusterID,
		Rise:           c.Rise,
		Nlinks:         c.NLinks,
		NodeId:         c.NodeID,
		UdpPort:        c.UDPPort,
		LinksDown:      c.LinksDown,
		CatchupNs:      c.CatchupNS,
	}
	if err := h.objs.Config.Put(uint32(0), &kc); err != nil {
		return fmt.Errorf("write heartbeat config: %w", err)
	}
	h.cfg = c
	return nil
}

// SetInterface tells the XDP program that ifindex carries link linkID and owns mac.
func (h *Heartbeat) SetInterface(ifindex int, linkID uint8, mac net.HardwareAddr) error {
	v := heartbeatHbIface{LinkId: uint32(linkID)}
	copy(v.Mac[:], mac)
	if err := h.objs.Ifaces.Put(uint32(ifindex), &v); err != nil {
		return fmt.Errorf("register interface %d as link %d: %w", ifindex, linkID, err)
	}
	return nil
}

// SetPeers marks the given node ids as the configured peers and every other id as unknown.
func (h *Heartbeat) SetPeers(ids []uint16) error {
	want := map[uint32]bool{}
	for _, id := range ids {
		want[uint32(id)] = true
	}
	for id := uint32(1); id < h.objs.Peers.MaxEntries(); id++ {
		var p heartbeatHbPeer
		if err := h.objs.Peers.Lookup(id, &p); err != nil {
			return fmt.Errorf("read peer %d: %w", id, err)
		}
		configured := uint32(0)
		if want[id] {
			configured = 1
		}
		if p.Configured == configured {
			continue
		}
		p.Configured = configured
		if err := h.objs.Peers.Put(id, &p); err != nil {
			return fmt.Errorf("write peer %d: %w", id, err)
		}
	}
	return nil
}

// Attach attaches the XDP program to the interface, in native mode when the driver supports
// it and in generic mode otherwise (the reason is logged). With a PinDir the attachment is
// pinned, and a pinned attachment left by an earlier daemon is taken over. It returns the mode.
func (h *Heartbeat) Attach(ifindex int) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := h.links[ifindex]; ok {
		return a.mode, nil
	}
	iface, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("attach xdp: interface %d: %w", ifindex, err)
	}
	a := attached{}
	if h.opts.PinDir != "" {
		a.pin = filepath.Join(h.opts.PinDir, "xdp_"+iface.Name)
		if l, err := link.LoadPinnedLink(a.pin, nil); err == nil {
			if err := l.Update(h.objs.HbXdp); err != nil {
				l.Close()
				return "", fmt.Errorf("take over pinned xdp link on %s: %w", iface.Name, err)
			}
			a.link, a.mode = l, "taken over"
			h.links[ifindex] = a
			h.log.Info("xdp attachment taken over", "interface", iface.Name)
			return a.mode, nil
		}
	}
	a.link, err = link.AttachXDP(link.XDPOptions{Program: h.objs.HbXdp, Interface: ifindex, Flags: link.XDPDriverMode})
	a.mode = "native"
	if err != nil {
		h.log.Warn("native xdp refused, using generic mode", "interface", iface.Name, "reason", err)
		a.link, err = link.AttachXDP(link.XDPOptions{Program: h.objs.HbXdp, Interface: ifindex, Flags: link.XDPGenericMode})
		a.mode = "generic"
		if err != nil {
			return "", fmt.Errorf("attach xdp to %s: %w", iface.Name, err)
		}
	}
	if a.pin != "" {
		if err := a.link.Pin(a.pin); err != nil {
			a.link.Close()
			return "", fmt.Errorf("pin xdp link of %s: %w", iface.Name, err)
		}
	}
	h.links[ifindex] = a
	h.log.Info("xdp attached", "interface", iface.Name, "mode", a.mode)
	return a.mode, nil
}

// Start arms the bpf_timer sweep (config SweepNS must be set).
func (h *Heartbeat) Start() error {
	ret, err := h.objs.HbStart.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		return fmt.Errorf("start sweep timer: %w", err)
	}
	if ret != 2 /* XDP_PASS */ {
		return fmt.Errorf("start sweep timer: program returned %d (is sweep_ns set?)", ret)
	}
	return nil
}

// Sweep runs one sweep now, in addition to the timer's.
func (h *Heartbeat) Sweep() error {
	ret, err := h.objs.HbSweep.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if ret != 2 {
		return fmt.Errorf("sweep: program returned %d (no config?)", ret)
	}
	return nil
}

// RunXDP runs the XDP program on one frame through BPF_PROG_TEST_RUN (as received on the
// loopback interface, ifindex 1) and returns its verdict and the frame as it left.
func (h *Heartbeat) RunXDP(frame []byte) (uint32, []byte, error) {
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := h.objs.HbXdp.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run xdp: %w", err)
	}
	return ret, opts.DataOut, nil
}

// LoadTx reads the sender's stamp of link from the mmapped txstamps map (heartbeat.TxStamps).
// Pinned, it holds what the previous daemon stamped last.
func (h *Heartbeat) LoadTx(link uint8) heartbeat.TxStamp {
	var b [txSize]byte
	if _, err := h.tx.ReadAt(b[:], int64(link%maxLinks)*txSize); err != nil {
		return heartbeat.TxStamp{}
	}
	return heartbeat.TxStamp{
		SentNS: binary.LittleEndian.Uint64(b[0:]),
		DueNS:  binary.LittleEndian.Uint64(b[8:]),
		GapNS:  binary.LittleEndian.Uint64(b[16:]),
	}
}

// StoreTx writes the sender's stamp of link into the mmapped txstamps map, without a system
// call (heartbeat.TxStamps). Only one goroutine, the sender, may call it.
func (h *Heartbeat) StoreTx(link uint8, t heartbeat.TxStamp) {
	b := h.txBuf[:]
	binary.LittleEndian.PutUint64(b[0:], t.SentNS)
	binary.LittleEndian.PutUint64(b[8:], t.DueNS)
	binary.LittleEndian.PutUint64(b[16:], t.GapNS)
	// The gap first, then the due time: the sweep reads due_ns before gap_ns, so it never
	// sees a new due_ns with the old gap_ns (which would count the gap a send just closed as
	// echo silence). link%maxLinks keeps both writes inside the map, so they cannot fail.
	off := int64(link%maxLinks) * txSize
	_, _ = h.tx.WriteAt(b[16:24], off+16)
	_, _ = h.tx.WriteAt(b[0:16], off)
}

const (
	txSize   = 24  // sizeof(struct hb_tx)
	slotSize = 128 // sizeof(struct hb_slot)
	peerSize = 56  // sizeof(struct hb_peer)
	maxLinks = 4   // HB_MAX_LINKS
)

// Slot reads the slot of (peer, link) from the mmapped map, without a syscall.
func (h *Heartbeat) Slot(peer uint16, linkID uint8) (heartbeat.Slot, error) {
	var k heartbeatHbSlot
	buf := make([]byte, slotSize)
	if _, err := h.slots.ReadAt(buf, int64((int(peer)*maxLinks+int(linkID))*slotSize)); err != nil {
		return heartbeat.Slot{}, fmt.Errorf("read slot %d/%d: %w", peer, linkID, err)
	}
	if _, err := binary.Decode(buf, binary.LittleEndian, &k); err != nil {
		return heartbeat.Slot{}, err
	}
	return heartbeat.Slot{
		LastDataNS: k.LastDataNs, LastEchoNS: k.LastEchoNs, Incarnation: k.Incarnation,
		LastSeq: k.LastSeq, LastEchoSeq: k.LastEchoSeq, RxData: k.RxData, RxEcho: k.RxEcho,
		Lost: k.Lost, LastRTTNS: k.LastRttNs, SRTTNS: k.SrttNs, Progress: k.Progress,
		ProgressNS: k.ProgressNs, SinceNS: k.SinceNs, State: heartbeat.LinkState(k.State),
		Rise: k.Rise, PeerMAC: k.PeerMac, EchoGapNS: k.EchoGapNs,
	}, nil
}

// Peer reads the state of a peer from the mmapped map, without a syscall.
func (h *Heartbeat) Peer(id uint16) (heartbeat.Peer, error) {
	var k heartbeatHbPeer
	buf := make([]byte, peerSize)
	if _, err := h.peers.ReadAt(buf, int64(int(id)*peerSize)); err != nil {
		return heartbeat.Peer{}, fmt.Errorf("read peer %d: %w", id, err)
	}
	if _, err := binary.Decode(buf, binary.LittleEndian, &k); err != nil {
		return heartbeat.Peer{}, err
	}
	return heartbeat.Peer{
		SinceNS: k.SinceNs, StalledNS: k.StalledNs, State: heartbeat.PeerState(k.State),
		LinksUp: k.LinksUp, Jeopardy: k.Jeopardy != 0, Configured: k.Configured != 0,
		SweptNS: k.SweptNs, HoldFromNS: k.HoldFromNs, HoldUntilNS: k.HoldUntilNs,
	}, nil
}

// Counters returns the counters of enum hb_counter, summed over CPUs.
func (h *Heartbeat) Counters() ([heartbeat.NumCounters]uint64, error) {
	var out [heartbeat.NumCounters]uint64
	for i := range uint32(heartbeat.NumCounters) {
		var perCPU []uint64
		if err := h.objs.Counters.Lookup(i, &perCPU); err != nil {
			return out, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// ReadEvent blocks until the sweep emits a transition, or the reader is closed (then it
// returns an error wrapping os.ErrClosed).
func (h *Heartbeat) ReadEvent() (heartbeat.Event, error) {
	rec, err := h.events.Read()
	if err != nil {
		return heartbeat.Event{}, err
	}
	var k heartbeatHbEvent
	if _, err := binary.Decode(rec.RawSample, binary.LittleEndian, &k); err != nil {
		return heartbeat.Event{}, fmt.Errorf("decode event: %w", err)
	}
	return heartbeat.Event{
		NowNS: k.NowNs, LastSeenNS: k.LastSeenNs, Peer: k.Peer, Link: k.Link,
		Kind: heartbeat.EventKind(k.Kind), State: k.State, OldState: k.OldState, LinksUp: k.LinksUp,
	}, nil
}

// EventsWaiting reports whether events wait in the ring buffer: two atomic loads of its
// mmapped positions, safe from any goroutine, never blocking (the sender's Waiting).
func (h *Heartbeat) EventsWaiting() bool { return h.events.AvailableBytes() > 0 }

// PendingEvents returns the events waiting in the ring buffer without blocking.
func (h *Heartbeat) PendingEvents() ([]heartbeat.Event, error) {
	var out []heartbeat.Event
	for h.events.AvailableBytes() > 0 {
		ev, err := h.ReadEvent()
		if err != nil {
			return out, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// Detach stops the sweep timer, detaches every XDP attachment and removes every pin, so
// nothing of this node's heartbeat plane stays in the kernel. Use it for a clean shutdown;
// Close alone leaves pinned state for the next daemon.
func (h *Heartbeat) Detach() error {
	var errs []error
	h.mu.Lock()
	c := h.cfg
	c.SweepNS = 0 // the callback does not re-arm
	errs = append(errs, h.setConfigLocked(c))
	for ifindex, a := range h.links {
		if a.pin != "" {
			errs = append(errs, a.link.Unpin())
		}
		errs = append(errs, a.link.Close())
		delete(h.links, ifindex)
	}
	h.mu.Unlock()
	if h.opts.PinDir != "" {
		for _, m := range []*ebpf.Map{h.objs.Config, h.objs.Ifaces, h.objs.Slots, h.objs.Peers, h.objs.Counters, h.objs.Events, h.objs.Timers, h.objs.LinkBadMac, h.objs.Txstamps} {
			if err := m.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Close releases this process's handles. Pinned attachments and maps stay in the kernel.
func (h *Heartbeat) Close() error {
	var errs []error
	h.mu.Lock()
	for ifindex, a := range h.links {
		errs = append(errs, a.link.Close())
		delete(h.links, ifindex)
	}
	h.mu.Unlock()
	errs = append(errs, h.CloseEvents(), h.objs.Close())
	return errors.Join(errs...)
}

// CloseEvents closes the event reader, so that a blocked ReadEvent returns. It is idempotent.
func (h *Heartbeat) CloseEvents() error {
	h.closeEvents.Do(func() { h.eventsErr = errors.Join(h.wait.close(), h.events.Close()) })
	return h.eventsErr
}
