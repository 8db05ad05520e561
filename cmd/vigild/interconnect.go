package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"vigil/control/admin"
	"vigil/dataplane"
	"vigil/heartbeat"
	"vigil/heartbeat/disk"
	"vigil/heartbeat/linkrule"
	"vigil/internal/nodeconf"
)

// interconnect is the daemon's side of the interconnect: this node's cluster address and the
// routes to the peers' (set up here, removed on shutdown), the TCX steering program that puts
// their traffic on a live link, and the error-rate rule fed from the heartbeat plane's error
// counters, whose verdicts go into the steering program's map.
type interconnect struct {
	cfg   *nodeconf.Config
	log   *slog.Logger
	plane plane
	hb    *dataplane.Heartbeat // nil on the fallback path: no bad-MAC counts, link state copied
	steer *dataplane.Steer
	self  netip.Addr
	// The network state made here, undone by close.
	addr   *netlink.Addr
	routes []netlink.Route
	neighs []netlink.Neigh

	mu      sync.Mutex
	rule    *linkrule.Rule
	gaps    linkrule.Gaps
	lastMAC [4]uint64
	macBase bool
}

// newInterconnect sets up the cluster address and routes, and loads and attaches the steering
// program (reading the eBPF plane's slots, or on the fallback path its own, which sync fills).
// links are the daemon's heartbeat links by link id.
func newInterconnect(cfg *nodeconf.Config, hb *dataplane.Heartbeat, p plane, links []heartbeat.Link,
	pinDir string, log *slog.Logger) (ic *interconnect, err error) {
	icfg := cfg.Interconnect
	rule, err := linkrule.New(linkrule.Config{
		Threshold: icfg.ErrorThreshold, Window: icfg.ErrorWindow, Clean: icfg.ErrorClean,
	}, len(cfg.Links))
	if err != nil {
		return nil, fmt.Errorf("interconnect: %w", err)
	}
	ic = &interconnect{
		cfg: cfg, log: log, plane: p, hb: hb, rule: rule, self: icfg.ClusterAddr(cfg.Node),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, ic.close(true))
			ic = nil
		}
	}()
	if err := ic.setupRoutes(links); err != nil {
		return ic, err
	}
	if hb == nil {
		log.Warn("interconnect on the fallback path: the steering program reads link state that the daemon copies from its user-space detector, so failover waits for the daemon")
	}
	if ic.steer, err = dataplane.LoadSteer(dataplane.SteerOptions{Heartbeat: hb, PinDir: pinDir, Logger: log}); err != nil {
		return ic, err
	}
	policy := dataplane.SteerSpread
	if icfg.Policy == nodeconf.PolicyPrimary {
		policy = dataplane.SteerPrimary
	}
	sl := make([]dataplane.SteerLink, len(links))
	for id, l := range links {
		ifi, err := net.InterfaceByIndex(l.Ifindex())
		if err != nil {
			return ic, fmt.Errorf("interconnect: link %d: %w", id, err)
		}
		sl[id] = dataplane.SteerLink{Ifindex: ifi.Index, MAC: ifi.HardwareAddr}
	}
	if err := ic.steer.SetConfig(policy, sl); err != nil {
		return ic, err
	}
	dests := map[netip.Addr]uint16{}
	for _, peer := range cfg.Peers {
		dests[icfg.ClusterAddr(peer.ID)] = uint16(peer.ID)
	}
	if err := ic.steer.SetDests(dests); err != nil {
		return ic, err
	}
	for id := range links {
		if err := ic.steer.SetBad(uint8(id), false); err != nil {
			return ic, err
		}
	}
	ic.sync()
	for _, l := range links {
		if err := ic.steer.Attach(l.Ifindex()); err != nil {
			return ic, err
		}
	}
	log.Info("interconnect up", "cluster_address", ic.self, "policy", string(icfg.Policy),
		"error_threshold", icfg.ErrorThreshold, "error_window", icfg.ErrorWindow, "error_clean", icfg.ErrorClean)
	return ic, nil
}

// setupRoutes puts this node's cluster address on lo and routes every peer's cluster address
// out of every link (the lowest link id preferred: the kernel picks one, the steering program
// moves the packet to the right one), with a permanent placeholder neighbour so that nothing
// ever ARPs for a cluster address. Reverse-path filtering on the links becomes loose, since a
// peer's packets arrive on whichever link its steering program chose.
func (ic *interconnect) setupRoutes(links []heartbeat.Link) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("interconnect: find lo: %w", err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: ic.self.AsSlice(), Mask: net.CIDRMask(32, 32)}, Label: "lo"}
	if err := netlink.AddrReplace(lo, a); err != nil {
		return fmt.Errorf("interconnect: cluster address %v on lo: %w", ic.self, err)
	}
	ic.addr = a
	for id, l := range links {
		name := ic.cfg.Links[id].Name
		if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", name, "rp_filter"), []byte("2"), 0); err != nil {
			return fmt.Errorf("interconnect: loose reverse-path filter on %s: %w", name, err)
		}
		for _, p := range ic.cfg.Peers {
			dst := ic.cfg.Interconnect.ClusterAddr(p.ID)
			n := netlink.Neigh{
				LinkIndex: l.Ifindex(), Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: dst.AsSlice(), HardwareAddr: dataplane.PlaceholderMAC,
			}
			if err := netlink.NeighSet(&n); err != nil {
				return fmt.Errorf("interconnect: neighbour %v on %s: %w", dst, name, err)
			}
			ic.neighs = append(ic.neighs, n)
			r := netlink.Route{
				LinkIndex: l.Ifindex(), Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(32, 32)},
				Src: ic.self.AsSlice(), Scope: netlink.SCOPE_LINK, Priority: 100 + id,
			}
			if err := netlink.RouteReplace(&r); err != nil {
				return fmt.Errorf("interconnect: route to %v via %s: %w", dst, name, err)
			}
			ic.routes = append(ic.routes, r)
		}
	}
	return nil
}

// sync copies the user-space detector's link state into the steering program's own slots (the
// fallback path; with the eBPF plane the program reads the kernel's slots and this does
// nothing). The daemon calls it at every heartbeat event and every sample.
func (ic *interconnect) sync() {
	if ic.hb != nil || ic.steer == nil {
		return
	}
	for _, p := range ic.cfg.Peers {
		for l := range ic.cfg.Links {
			s, err := ic.plane.Slot(uint16(p.ID), uint8(l))
			if err != nil {
				continue
			}
			if err := ic.steer.SetSlot(uint16(p.ID), uint8(l), s.State == heartbeat.LinkUp, s.PeerMAC, max(s.LastDataNS, s.LastEchoNS)); err != nil {
				ic.log.Error("interconnect: copy link state", "peer", p.ID, "link", l, "err", err)
				return
			}
		}
	}
}

// sample feeds the error-rate rule with the errors counted since the last sample and applies
// its verdicts. Errors are heartbeat sequence gaps on a link that stayed up (a gap across a
// down period is a link failure, already handled) and frames with a wrong MAC. Transport
// retransmissions are not counted: TCP does not know which link lost a segment.
func (ic *interconnect) sample(now time.Duration) {
	ic.sync()
	ic.mu.Lock()
	defer ic.mu.Unlock()
	errs := make([]uint64, len(ic.cfg.Links))
	for _, p := range ic.cfg.Peers {
		for l := range ic.cfg.Links {
			s, err := ic.plane.Slot(uint16(p.ID), uint8(l))
			if err != nil {
				continue
			}
			errs[l] += ic.gaps.Errors(p.ID, l, s.Lost, s.State == heartbeat.LinkUp, s.SinceNS)
		}
	}
	if ic.hb != nil {
		if mac, err := ic.hb.LinkBadMAC(); err == nil {
			for l := range errs {
				if ic.macBase && mac[l] > ic.lastMAC[l] {
					errs[l] += mac[l] - ic.lastMAC[l]
				}
			}
			ic.lastMAC, ic.macBase = mac, true
		}
	}
	var verdicts []linkrule.Verdict
	for l, n := range errs {
		verdicts = append(verdicts, ic.rule.Observe(now, l, n)...)
	}
	ic.apply(verdicts)
}

// apply writes verdicts into the steering program's map and logs them. Called with mu held.
func (ic *interconnect) apply(verdicts []linkrule.Verdict) {
	for _, v := range verdicts {
		name := ic.cfg.Links[v.Link].Name
		if ic.steer != nil {
			if err := ic.steer.SetBad(uint8(v.Link), v.Bad); err != nil {
				ic.log.Error("interconnect: apply the error-rate verdict", "link", v.Link, "interface", name, "err", err)
			}
		}
		if v.Bad {
			ic.log.Warn("link bad: too many errors, traffic moves off it", "link", v.Link, "interface", name,
				"errors", v.Errors, "threshold", ic.rule.Config().Threshold, "window", ic.rule.Config().Window)
		} else {
			ic.log.Info("link back in service", "link", v.Link, "interface", name, "reason", string(v.Reason))
		}
	}
}

// clearLink implements vigil links clear.
func (ic *interconnect) clearLink(name string, now time.Duration) (admin.ClearResult, error) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for id, l := range ic.cfg.Links {
		if l.Name != name {
			continue
		}
		was := ic.rule.Link(id).Bad
		ic.apply(ic.rule.Clear(now, id))
		msg := "link was in service; its error count is reset"
		if was {
			msg = "link back in service"
		}
		return admin.ClearResult{Link: name, WasBad: was, Message: msg}, nil
	}
	return admin.ClearResult{}, fmt.Errorf("no private link named %q", name)
}

// decorate adds the interconnect's view to the link rows: which links carry traffic to each
// peer, the traffic counters, errors against the threshold.
func (ic *interconnect) decorate(rows []admin.LinkStatus) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	thr := ic.rule.Config().Threshold
	// live[peer] is the bit set of links the steering program may use, as it computes it.
	live, up, recent := map[uint16]uint32{}, map[uint16]uint32{}, map[uint16]admin.LinkStatus{}
	for _, r := range rows {
		if last, ok := recent[r.Peer]; !r.LastSeen.IsZero() && (!ok || r.LastSeen.After(last.LastSeen)) {
			recent[r.Peer] = r
		}
		if r.State == admin.LinkUp {
			up[r.Peer] |= 1 << r.Link
			if !ic.rule.Link(int(r.Link)).Bad {
				live[r.Peer] |= 1 << r.Link
			}
		}
	}
	for i := range rows {
		r := &rows[i]
		st := ic.rule.Link(int(r.Link))
		r.Errors, r.ErrorThreshold, r.Bad = st.Errors, thr, st.Bad
		set := live[r.Peer]
		if set == 0 {
			set = up[r.Peer]
		}
		if last, ok := recent[r.Peer]; set == 0 && ok {
			set = 1 << last.Link // blind, on the link heard last
		}
		if ic.cfg.Interconnect.Policy == nodeconf.PolicyPrimary {
			set &= -set // the lowest
		}
		r.Carrying = set&(1<<r.Link) != 0
		if c, err := ic.steer.Traffic(r.Peer, r.Link); err == nil {
			r.TxPackets, r.TxBytes = c.Packets, c.Bytes
		}
	}
}

// counters adds the steering program's counters.
func (ic *interconnect) counters(out admin.Counters) {
	c, err := ic.steer.Counters()
	if err != nil {
		return
	}
	for i, v := range c {
		out["steer_"+dataplane.SteerCounter(i).String()] = v
	}
}

// close removes what newInterconnect made; detach also removes the pinned steering state.
func (ic *interconnect) close(detach bool) error {
	var errs []error
	if ic.steer != nil {
		if detach {
			errs = append(errs, ic.steer.Detach())
		}
		errs = append(errs, ic.steer.Close())
	}
	if !detach {
		return errors.Join(errs...)
	}
	for _, r := range ic.routes {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, os.ErrNotExist) {
			ic.log.Debug("interconnect: remove route", "dst", r.Dst, "err", err)
		}
	}
	for _, n := range ic.neighs {
		if err := netlink.NeighDel(&n); err != nil {
			ic.log.Debug("interconnect: remove neighbour", "ip", n.IP, "err", err)
		}
	}
	if ic.addr != nil {
		if lo, err := netlink.LinkByName("lo"); err == nil {
			if err := netlink.AddrDel(lo, ic.addr); err != nil {
				ic.log.Debug("interconnect: remove cluster address", "err", err)
			}
		}
	}
	return errors.Join(errs...)
}

// diskBeat is the daemon's disk heartbeat: the driver and the log of its transitions.
type diskBeat struct {
	d   *disk.Disk
	log *slog.Logger
}

func newDiskBeat(cfg *nodeconf.Config, clusterID uint32, incarnation uint64, peerNames map[uint16]string, log *slog.Logger) (*diskBeat, error) {
	dh := cfg.DiskHeartbeat
	peers := make([]uint16, len(cfg.Peers))
	for i, p := range cfg.Peers {
		peers[i] = uint16(p.ID)
	}
	b := &diskBeat{log: log}
	var err error
	b.d, err = disk.Open(disk.Options{
		Path: dh.Path, ClusterID: clusterID, Node: uint16(cfg.Node), Incarnation: incarnation,
		Peers: peers, Interval: dh.Interval, Timeout: dh.Timeout,
		Now: func() time.Duration { return time.Duration(heartbeat.MonotonicNow()) },
		OnEvent: func(ev disk.Event) {
			level := slog.LevelInfo
			if ev.State == disk.Stopped {
				level = slog.LevelWarn
			}
			log.Log(context.Background(), level, "disk heartbeat "+ev.State.String(), "peer", ev.Peer,
				"peer_name", peerNames[ev.Peer], "state", ev.State.String(), "was", ev.Was.String())
		},
		Log: log,
	})
	if err != nil {
		return nil, err
	}
	log.Info("disk heartbeat started", "path", dh.Path, "interval", dh.Interval, "timeout", dh.Timeout)
	return b, nil
}

// peer returns the disk state of a peer.
func (b *diskBeat) peer(id uint16) disk.PeerStatus {
	_, peers := b.d.Status()
	return peers[id]
}

// rows returns one LinkStatus row per peer for the disk heartbeat.
func (b *diskBeat) rows(cfg *nodeconf.Config, peerNames map[uint16]string) []admin.LinkStatus {
	st, peers := b.d.Status()
	var out []admin.LinkStatus
	for _, p := range cfg.Peers {
		id := uint16(p.ID)
		ps := peers[id]
		state := admin.LinkDown
		if ps.State == disk.Alive {
			state = admin.LinkUp
		}
		r := admin.LinkStatus{
			Peer: id, PeerName: peerNames[id], Link: heartbeat.LinkNone, LinkName: "disk:" + filepath.Base(st.Path),
			Kind: admin.LinkDisk, State: state, Since: wall(uint64(ps.Since)), Seq: ps.Seq,
		}
		if ps.LastAdvance != 0 {
			r.LastSeen = wall(uint64(ps.LastAdvance))
		}
		out = append(out, r)
	}
	return out
}

// nodeState combines the network's verdict on a peer with its disk heartbeat: a peer that the
// network calls down while its slot still advances is partitioned, and in jeopardy.
func nodeState(net heartbeat.PeerState, diskAlive bool) (state string, jeopardy bool) {
	if net == heartbeat.PeerDown && diskAlive {
		return admin.NodePartitioned, true
	}
	return net.String(), false
}

// ClearLink implements admin.LinkClearer.
func (d *daemon) ClearLink(name string) (admin.ClearResult, error) {
	if d.ic == nil {
		return admin.ClearResult{}, errors.New("no interconnect configured: add the interconnect key to the node configuration")
	}
	return d.ic.clearLink(name, time.Duration(heartbeat.MonotonicNow()))
}
