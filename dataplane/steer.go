//go:build linux

package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// SteerPolicy is how the steering program spreads a peer's traffic over its live links
// (enum st_policy in bpf/steer.h).
type SteerPolicy uint32

// The policies.
const (
	// SteerSpread hashes each flow onto one of the live links (VCS LLT's traffic distribution).
	SteerSpread = SteerPolicy(steerStPolicyST_POLICY_SPREAD)
	// SteerPrimary sends everything on the live link with the lowest id (TruCluster MEMORY
	// CHANNEL's primary and secondary).
	SteerPrimary = SteerPolicy(steerStPolicyST_POLICY_PRIMARY)
)

func (p SteerPolicy) String() string {
	switch p {
	case SteerSpread:
		return "spread"
	case SteerPrimary:
		return "primary"
	}
	return fmt.Sprintf("SteerPolicy(%d)", uint32(p))
}

// SteerCounter indexes the steering program's counters (enum st_counter).
type SteerCounter int

// The counters.
const (
	SteerSteered     = SteerCounter(steerStCounterST_C_STEERED)      // passed on the link it left on
	SteerRedirected  = SteerCounter(steerStCounterST_C_REDIRECTED)   // redirected to another link
	SteerNoLink      = SteerCounter(steerStCounterST_C_NO_LINK)      // dropped: no MAC learned on any link
	SteerBadFallback = SteerCounter(steerStCounterST_C_BAD_FALLBACK) // sent on a bad link: all up links bad
	SteerAlready     = SteerCounter(steerStCounterST_C_ALREADY)      // second pass that raced a change
	SteerBlind       = SteerCounter(steerStCounterST_C_BLIND)        // no link up: sent on the link heard last
	NumSteerCounters = int(steerStCounterST_C_MAX)
)

var steerCounterNames = [NumSteerCounters]string{
	"steered", "redirected", "no_link", "bad_fallback", "already_steered", "blind",
}

func (c SteerCounter) String() string {
	if c >= 0 && int(c) < NumSteerCounters {
		return steerCounterNames[c]
	}
	return fmt.Sprintf("SteerCounter(%d)", int(c))
}

// PlaceholderMAC is the MAC of the permanent neighbour entries that vigild gives peers'
// cluster addresses: the kernel never ARPs for them, and the steering program replaces it with
// the MAC learned by the heartbeat plane. It is a locally administered address no interface
// uses.
var PlaceholderMAC = net.HardwareAddr{0x02, 0x56, 0x47, 0xff, 0xff, 0xfe}

// SteerLink is one private link of this node, by link id.
type SteerLink struct {
	Ifindex int              // 0: not configured
	MAC     net.HardwareAddr // the interface's own MAC
}

// SteerOptions configures LoadSteer.
type SteerOptions struct {
	// Heartbeat is the loaded heartbeat plane whose link state (its slots map) the program
	// reads. Required.
	Heartbeat *Heartbeat
	// PinDir, when set, is a bpffs directory where the steering maps and TCX links are pinned
	// (use the heartbeat plane's), so that traffic keeps flowing while no daemon runs.
	PinDir string
	// Logger receives attach decisions. Nil: discard.
	Logger *slog.Logger
}

// Steer is the loaded steering program and its maps. Its methods are safe for concurrent use.
type Steer struct {
	objs steerObjects
	opts SteerOptions
	log  *slog.Logger

	mu    sync.Mutex
	links map[int]attached // by ifindex
}

// LoadSteer loads the TCX egress steering program, sharing the heartbeat plane's slots map.
// Nothing is attached until Attach. The caller must Close the result.
func LoadSteer(opts SteerOptions) (*Steer, error) {
	if opts.Heartbeat == nil {
		return nil, errors.New("load steering program: no heartbeat plane to read link state from")
	}
	s := &Steer{opts: opts, log: opts.Logger, links: map[int]attached{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("load steering spec: %w", err)
	}
	copts := ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{"slots": opts.Heartbeat.objs.Slots},
	}
	if opts.PinDir != "" {
		if err := ensureBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
		for name, m := range spec.Maps {
			if strings.HasPrefix(name, "steer_") {
				m.Pinning = ebpf.PinByName
			}
		}
		copts.Maps.PinPath = opts.PinDir
	}
	if err := spec.LoadAndAssign(&s.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load steering program: the maps pinned in %s come from an incompatible build; remove that directory and start again: %w", opts.PinDir, err)
		}
		return nil, fmt.Errorf("load steering program: %w", err)
	}
	return s, nil
}

// SetConfig writes the policy and the links (indexed by link id, at most 4).
func (s *Steer) SetConfig(policy SteerPolicy, links []SteerLink) error {
	var c steerStConfig
	if len(links) > len(c.Links) {
		return fmt.Errorf("steering config: %d links, at most %d", len(links), len(c.Links))
	}
	c.Policy, c.Nlinks = uint32(policy), uint32(len(links))
	for i, l := range links {
		c.Links[i].Ifindex = uint32(l.Ifindex)
		copy(c.Links[i].Mac[:], l.MAC)
	}
	if err := s.objs.SteerConfig.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write steering config: %w", err)
	}
	return nil
}

// SetDests makes the given cluster addresses (IPv4) the only ones steered, each to its peer.
func (s *Steer) SetDests(dests map[netip.Addr]uint16) error {
	want := map[uint32]uint32{}
	for a, peer := range dests {
		if !a.Is4() {
			return fmt.Errorf("steering destination %v: not an IPv4 address", a)
		}
		b := a.As4()
		want[binary.NativeEndian.Uint32(b[:])] = uint32(peer) // the packet's bytes as the kernel reads them
	}
	var (
		k, v  uint32
		stale []uint32
	)
	it := s.objs.SteerDests.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read steering destinations: %w", err)
	}
	for _, k := range stale {
		if err := s.objs.SteerDests.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove steering destination: %w", err)
		}
	}
	for k, v := range want {
		if err := s.objs.SteerDests.Put(k, v); err != nil {
			return fmt.Errorf("write steering destination for peer %d: %w", v, err)
		}
	}
	return nil
}

// SetBad takes link out of service (bad) or puts it back, for every peer: the error-rate
// rule's verdict.
func (s *Steer) SetBad(linkID uint8, bad bool) error {
	v := uint32(0)
	if bad {
		v = 1
	}
	if err := s.objs.SteerBad.Put(uint32(linkID), v); err != nil {
		return fmt.Errorf("mark link %d bad=%v: %w", linkID, bad, err)
	}
	return nil
}

// Attach attaches the program to the egress of the interface with TCX. With a PinDir the
// attachment is pinned, and one left by an earlier daemon is taken over.
func (s *Steer) Attach(ifindex int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.links[ifindex]; ok {
		return nil
	}
	iface, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("attach tcx egress: interface %d: %w", ifindex, err)
	}
	a := attached{mode: "tcx"}
	if s.opts.PinDir != "" {
		a.pin = filepath.Join(s.opts.PinDir, "tcx_"+iface.Name)
		if l, err := link.LoadPinnedLink(a.pin, nil); err == nil {
			if err := l.Update(s.objs.SteerEgress); err != nil {
				l.Close()
				return fmt.Errorf("take over pinned tcx link on %s: %w", iface.Name, err)
			}
			a.link, a.mode = l, "taken over"
			s.links[ifindex] = a
			s.log.Info("tcx steering attachment taken over", "interface", iface.Name)
			return nil
		}
	}
	a.link, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: s.objs.SteerEgress, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		return fmt.Errorf("attach tcx egress to %s: %w", iface.Name, err)
	}
	if a.pin != "" {
		if err := a.link.Pin(a.pin); err != nil {
			a.link.Close()
			return fmt.Errorf("pin tcx link of %s: %w", iface.Name, err)
		}
	}
	s.links[ifindex] = a
	s.log.Info("tcx steering attached", "interface", iface.Name)
	return nil
}

// Traffic returns the packets and bytes the program sent to peer on link, summed over CPUs.
func (s *Steer) Traffic(peer uint16, linkID uint8) (Counter, error) {
	var perCPU []steerStStats
	if err := s.objs.SteerStats.Lookup(uint32(peer)*maxLinks+uint32(linkID), &perCPU); err != nil {
		return Counter{}, fmt.Errorf("read traffic of peer %d link %d: %w", peer, linkID, err)
	}
	var c Counter
	for _, v := range perCPU {
		c.Packets += v.Packets
		c.Bytes += v.Bytes
	}
	return c, nil
}

// Counters returns the counters of enum st_counter, summed over CPUs.
func (s *Steer) Counters() ([NumSteerCounters]uint64, error) {
	var out [NumSteerCounters]uint64
	for i := range uint32(NumSteerCounters) {
		var perCPU []uint64
		if err := s.objs.SteerCounters.Lookup(i, &perCPU); err != nil {
			return out, fmt.Errorf("read steering counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// TC verdicts the steering program returns.
const (
	TCNext     = -1 // not a cluster packet: the next program (or the stack) decides
	TCPass     = 0
	TCDrop     = 2
	TCRedirect = 7
)

// Run runs the program on one frame through BPF_PROG_TEST_RUN, as if it left through the
// interface ifindex (which must exist; 1 is the loopback), and returns the verdict and the
// frame as it left. A redirect is not carried out: the verdict is TCRedirect.
func (s *Steer) Run(frame []byte, ifindex int) (int32, []byte, error) {
	// struct __sk_buff up to and including ifindex (offset 40); the kernel takes a prefix.
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[40:], uint32(ifindex))
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
	ret, err := s.objs.SteerEgress.Run(&opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run steering program: %w", err)
	}
	return int32(ret), opts.DataOut, nil
}

// Detach detaches every TCX attachment and removes every pin of the steering program.
func (s *Steer) Detach() error {
	var errs []error
	s.mu.Lock()
	for ifindex, a := range s.links {
		if a.pin != "" {
			errs = append(errs, a.link.Unpin())
		}
		errs = append(errs, a.link.Close())
		delete(s.links, ifindex)
	}
	s.mu.Unlock()
	if s.opts.PinDir != "" {
		for _, m := range []*ebpf.Map{s.objs.SteerConfig, s.objs.SteerDests, s.objs.SteerBad, s.objs.SteerStats, s.objs.SteerCounters} {
			if err := m.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Close releases this process's handles. Pinned attachments and maps stay in the kernel.
func (s *Steer) Close() error {
	var errs []error
	s.mu.Lock()
	for ifindex, a := range s.links {
		errs = append(errs, a.link.Close())
		delete(s.links, ifindex)
	}
	s.mu.Unlock()
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

// LinkBadMAC returns, per link id, the heartbeat frames received on the link whose MAC was
// wrong, summed over CPUs: an input of the interconnect's error-rate rule.
func (h *Heartbeat) LinkBadMAC() ([maxLinks]uint64, error) {
	var out [maxLinks]uint64
	for i := range uint32(maxLinks) {
		var perCPU []uint64
		if err := h.objs.LinkBadMac.Lookup(i, &perCPU); err != nil {
			return out, fmt.Errorf("read bad-MAC counter of link %d: %w", i, err)
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// Cost runs the program repeat times on frame in the kernel (BPF_PROG_TEST_RUN, leaving
// through the loopback interface) and returns the mean time per run.
func (s *Steer) Cost(frame []byte, repeat int) (time.Duration, error) {
	_, d, err := s.objs.SteerEgress.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, fmt.Errorf("run steering program: %w", err)
	}
	return d, nil
}

// SetLinkStateForTest writes the state and learned MAC of (peer, link) into the heartbeat
// plane's slots the way the sweep and XDP would; for benchmarks and tests of the steering
// program without traffic.
func (h *Heartbeat) SetLinkStateForTest(peer uint16, linkID uint8, up bool, mac net.HardwareAddr) error {
	var slot heartbeatHbSlot
	idx := uint32(peer)*maxLinks + uint32(linkID)
	if err := h.objs.Slots.Lookup(idx, &slot); err != nil {
		return err
	}
	slot.State = 0
	if up {
		slot.State = 1
	}
	slot.PeerMac = [6]byte{}
	copy(slot.PeerMac[:], mac)
	return h.objs.Slots.Put(idx, &slot)
}
