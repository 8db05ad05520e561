//go:build linux

package dataplane

import (
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Class is the traffic class the xdp_stats program counts a frame in, chosen
// by its ethertype. The values come from enum stats_class in bpf/stats.h.
type Class uint32

// The classes of xdp_stats. A frame shorter than an Ethernet header (14
// bytes) is ClassMalformed and dropped; every other frame is passed.
const (
	ClassIPv4      = Class(statsStatsClassSTATS_CLASS_IPV4)
	ClassIPv6      = Class(statsStatsClassSTATS_CLASS_IPV6)
	ClassARP       = Class(statsStatsClassSTATS_CLASS_ARP)
	ClassHeartbeat = Class(statsStatsClassSTATS_CLASS_HEARTBEAT) // ethertype 0x88B5
	ClassOther     = Class(statsStatsClassSTATS_CLASS_OTHER)     // VLAN-tagged frames too
	ClassMalformed = Class(statsStatsClassSTATS_CLASS_MALFORMED)
)

// NumClasses is the number of classes; classes run from 0 to NumClasses-1.
const NumClasses = int(statsStatsClassSTATS_CLASS_MAX)

var classNames = [NumClasses]string{
	ClassIPv4:      "ipv4",
	ClassIPv6:      "ipv6",
	ClassARP:       "arp",
	ClassHeartbeat: "heartbeat",
	ClassOther:     "other",
	ClassMalformed: "malformed",
}

func (c Class) String() string {
	if int(c) < NumClasses {
		return classNames[c]
	}
	return fmt.Sprintf("Class(%d)", uint32(c))
}

// Counter counts frames and their bytes. Bytes are what XDP sees of a frame:
// from the Ethernet header to the end of the linear data, without FCS.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// StatsTotals holds the counters of every class, indexed by Class.
type StatsTotals [NumClasses]Counter

// StatsOptions configures LoadStats. The zero value loads with defaults.
type StatsOptions struct {
	// Collection is passed to the loader (verifier log level, map pin
	// path, ...). Nil means the library's defaults.
	Collection *ebpf.CollectionOptions
}

// Stats is the xdp_stats program and its counters, loaded into the kernel
// but not attached to any interface. Close releases both.
type Stats struct {
	// Program is xdp_stats, ready for link.AttachXDP or Program.Run.
	Program *ebpf.Program
	// Counters is the per-CPU array of stats_counter, indexed by Class.
	Counters *ebpf.Map
}

// LoadStats loads the xdp_stats program and its map without attaching it.
// The caller must Close the result.
func LoadStats(opts StatsOptions) (*Stats, error) {
	var objs statsObjects
	if err := loadStatsObjects(&objs, opts.Collection); err != nil {
		// LoadAndAssign closes whatever it created before failing.
		return nil, fmt.Errorf("load stats program: %w", err)
	}
	return &Stats{Program: objs.XdpStats, Counters: objs.StatsCounters}, nil
}

// Close releases the program and the map. Closing twice is harmless.
func (s *Stats) Close() error {
	var errs []error
	if s.Program != nil {
		if err := s.Program.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close stats program: %w", err))
		}
	}
	if s.Counters != nil {
		if err := s.Counters.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close stats map: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Totals reads the counters of every class, summed over all CPUs.
func (s *Stats) Totals() (StatsTotals, error) {
	var totals StatsTotals
	var perCPU []statsStatsCounter
	for c := range NumClasses {
		if err := s.Counters.Lookup(uint32(c), &perCPU); err != nil {
			return StatsTotals{}, fmt.Errorf("read stats of class %v: %w", Class(c), err)
		}
		for _, v := range perCPU {
			totals[c].Packets += v.Packets
			totals[c].Bytes += v.Bytes
		}
	}
	return totals, nil
}

// Attach attaches xdp_stats to an interface of the calling thread's network namespace, in
// native mode. Besides counting, this gives a veth end an XDP program, which a native XDP
// program on its peer needs for XDP_TX to deliver (the test topology attaches it to the bridge
// side of every veth for that reason). Close the returned link to detach.
func (s *Stats) Attach(ifindex int) (io.Closer, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: s.Program, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach xdp_stats to interface %d: %w", ifindex, err)
	}
	return l, nil
}
