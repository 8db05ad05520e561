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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vigil/control/admin"
	"vigil/control/cluster"
	"vigil/control/transport"
	"vigil/dataplane"
	"vigil/heartbeat"
	"vigil/heartbeat/disk"
	"vigil/internal/attention"
	"vigil/internal/buildinfo"
	"vigil/internal/nodeconf"
)

// plane is the heartbeat plane as the daemon reads it: the kernel's (dataplane) or the
// user-space fallback's.
type plane interface {
	Slot(peer uint16, link uint8) (heartbeat.Slot, error)
	Peer(id uint16) (heartbeat.Peer, error)
	Counters() ([heartbeat.NumCounters]uint64, error)
	SetLinkDown(link uint8, down bool) error
}

type daemonOptions struct {
	BPFDir  string
	Log     *slog.Logger
	Cluster clusterFlags
	Bench   benchFlags
	// DRDListen is the address of the DRD block shipping listener (--drd-listen).
	DRDListen string
}

type daemon struct {
	cfg         *nodeconf.Config
	log         *slog.Logger
	incarnation uint64
	startedAt   time.Time
	links       []heartbeat.Link // by link id
	ifLinks     map[int]uint8    // ifindex -> link id
	peerNames   map[uint16]string
	sender      *heartbeat.Sender
	plane       plane
	bpf         *dataplane.Heartbeat // nil on the fallback path
	fallback    *heartbeat.Fallback  // nil on the eBPF path
	xdpMode     map[string]string
	admin       *admin.Server
	progress    atomic.Uint64
	cluster     *cluster.Node  // the cluster database; nil when off (see cluster.go)
	transport   *transport.TCP // the cluster transport; nil when off
	ic          *interconnect  // nil without an interconnect key
	disk        *diskBeat      // nil without a disk_heartbeat key
	drd         *drdManager    // DRD devices placed here (drd.go); nil without the cluster database
	bench       *benchStreams  // nil unless --bench-dir (see benchstream.go)
	attn        *attention.Set // raft's streams, for the heartbeat sender's Waiting; nil if epoll failed
	noNudge     bool           // --no-nudge

	mu  sync.Mutex
	rtt map[[2]uint16]*rttWindow // by (peer, link)
	// downGen counts each peer's down and alive verdicts: a deferred reset of its raft
	// streams goes ahead only if no verdict came since (see clusterHeartbeat).
	downGen map[int]uint64
}

// newDaemon sets everything up or nothing: on error it releases what it made.
func newDaemon(cfg *nodeconf.Config, key [16]byte, opts daemonOptions) (d *daemon, err error) {
	d = &daemon{
		cfg: cfg, log: opts.Log, startedAt: time.Now(), ifLinks: map[int]uint8{},
		peerNames: map[uint16]string{}, xdpMode: map[string]string{}, rtt: map[[2]uint16]*rttWindow{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.release(true))
			d = nil
		}
	}()
	for _, p := range cfg.Peers {
		d.peerNames[uint16(p.ID)] = peerName(p)
	}
	var udpPort uint16
	for _, l := range cfg.Links {
		if !l.IsUDP() {
			continue
		}
		// The XDP program recognises UDP heartbeats by one destination port.
		if udpPort != 0 && l.UDP.Port() != udpPort {
			return d, fmt.Errorf("link %s: UDP port %d differs from another UDP link's %d: all UDP links must use one port",
				l.Name, l.UDP.Port(), udpPort)
		}
		udpPort = l.UDP.Port()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return d, fmt.Errorf("data dir: %w", err)
	}
	if d.incarnation, err = nextIncarnation(cfg.DataDir); err != nil {
		return d, err
	}
	for id, l := range cfg.Links {
		var hl heartbeat.Link
		if l.IsUDP() {
			var peers []netip.AddrPort
			for _, p := range cfg.Peers {
				peers = append(peers, p.UDP[id])
			}
			hl, err = heartbeat.OpenUDPLink(l.Name, l.UDP, peers)
		} else {
			hl, err = heartbeat.OpenRawLink(l.Name)
		}
		if err != nil {
			return d, fmt.Errorf("link %d (%s): %w", id, l.Name, err)
		}
		d.links = append(d.links, hl)
		d.ifLinks[hl.Ifindex()] = uint8(id)
	}
	hb := cfg.Heartbeat
	detect := uint64(hb.Interval) * uint64(hb.Multiplier)
	start := heartbeat.MonotonicNow()
	peers := make([]uint16, len(cfg.Peers))
	for i, p := range cfg.Peers {
		peers[i] = uint16(p.ID)
	}
	clusterID := cfg.ClusterID
	if clusterID == 0 {
		clusterID = nodeconf.DefaultClusterID(cfg.Cluster)
	}
	var pinDir string
	if hb.Mode == nodeconf.ModeFallback {
		hc := heartbeat.Config{
			ClusterID: clusterID, NodeID: uint16(cfg.Node), Key: key, Incarnation: d.incarnation,
			DetectNS: detect, StallTimeoutNS: uint64(hb.StallTimeout), ProgressNS: uint64(hb.ProgressTimeout),
			Rise: uint32(hb.Rise), NLinks: uint32(len(cfg.Links)), StartNS: start,
			CatchupNS: uint64(hb.Interval), // pause compensation: one interval to catch up
		}
		ifaces := map[int]heartbeat.Iface{}
		for _, hl := range d.links {
			ifi, err := net.InterfaceByIndex(hl.Ifindex())
			if err != nil {
				return d, err
			}
			var mac [6]byte
			copy(mac[:], ifi.HardwareAddr)
			ifaces[hl.Ifindex()] = heartbeat.Iface{LinkID: d.ifLinks[hl.Ifindex()], MAC: mac}
		}
		det, err := heartbeat.NewDetector(hc, peers, ifaces)
		if err != nil {
			return d, err
		}
		d.fallback = heartbeat.NewFallback(det, d.links, hb.Sweep, d.log)
		d.plane = d.fallback
	} else {
		pinDir = filepath.Join(opts.BPFDir, fmt.Sprintf("%s-node%d", cfg.Cluster, cfg.Node))
		if d.bpf, err = dataplane.LoadHeartbeat(dataplane.HeartbeatOptions{PinDir: pinDir, Logger: d.log}); err != nil {
			return d, fmt.Errorf("%w (run with --fallback to receive heartbeats in user space)", err)
		}
		d.plane = d.bpf
		err = d.bpf.SetConfig(dataplane.KernelConfig{
			Key: key, ClusterID: clusterID, NodeID: uint16(cfg.Node), Incarnation: d.incarnation,
			DetectNS: detect, StallTimeoutNS: uint64(hb.StallTimeout), ProgressNS: uint64(hb.ProgressTimeout),
			SweepNS: uint64(hb.Sweep), StartNS: start, Rise: uint32(hb.Rise), NLinks: uint32(len(cfg.Links)),
			UDPPort: udpPort, CatchupNS: uint64(hb.Interval), // pause compensation: one interval to catch up
		})
		if err != nil {
			return d, err
		}
		if err := d.bpf.SetPeers(peers); err != nil {
			return d, err
		}
		for _, hl := range d.links {
			ifi, err := net.InterfaceByIndex(hl.Ifindex())
			if err != nil {
				return d, err
			}
			if err := d.bpf.SetInterface(ifi.Index, d.ifLinks[ifi.Index], ifi.HardwareAddr); err != nil {
				return d, err
			}
			mode, err := d.bpf.Attach(ifi.Index)
			if err != nil {
				return d, err
			}
			d.xdpMode[ifi.Name] = mode
		}
		if err := d.bpf.Start(); err != nil {
			return d, err
		}
	}
	if cfg.Interconnect.Enabled() {
		if d.ic, err = newInterconnect(cfg, d.bpf, d.plane, d.links, pinDir, d.log); err != nil {
			return d, err
		}
	}
	if cfg.DiskHeartbeat.Path != "" {
		if d.disk, err = newDiskBeat(cfg, clusterID, d.incarnation, d.peerNames, d.log); err != nil {
			return d, err
		}
	}
	tx := make([]heartbeat.Transmitter, len(d.links))
	for i, hl := range d.links {
		tx[i] = hl
	}
	// The sender stamps its send times where the detector reads them (echo silence counts
	// only while it sends).
	var stamps heartbeat.TxStamps = d.fallback
	if d.bpf != nil {
		stamps = d.bpf
	}
	// The sender parks for an interval when heartbeat events or raft's messages wait to be
	// read (see heartbeat.Sender.Run): its held P must not keep them from raft.
	if d.attn, err = attention.New(); err != nil {
		d.log.Warn("raft's input may wait for the heartbeat sender's P", "err", err)
		err = nil
	}
	waiting := func() bool {
		return d.bpf != nil && d.bpf.EventsWaiting() || d.attn != nil && d.attn.Pending()
	}
	d.sender, err = heartbeat.NewSender(heartbeat.SenderConfig{
		ClusterID: clusterID, NodeID: uint16(cfg.Node), Key: key, Incarnation: d.incarnation,
		Interval: hb.Interval, Links: tx, Progress: d.progress.Load, Stamps: stamps, Waiting: waiting,
	})
	if err != nil {
		return d, err
	}
	if err := d.startCluster(opts.Cluster, key); err != nil {
		return d, err
	}
	if err := d.startDRD(opts.Cluster, opts.DRDListen); err != nil {
		return d, err
	}
	d.noNudge = opts.Bench.NoNudge
	if d.bench, err = d.benchStreams(opts.Bench); err != nil {
		return d, err
	}
	d.admin = &admin.Server{Provider: d.provider(), Log: d.log}
	if err := d.admin.Listen(cfg.AdminSocket); err != nil {
		return d, err
	}
	d.log.Info("vigild started", "cluster", cfg.Cluster, "cluster_id", clusterID, "name", cfg.Name,
		"mode", string(hb.Mode), "xdp", d.xdpMode, "incarnation", d.incarnation,
		"interval", hb.Interval, "multiplier", hb.Multiplier, "links", len(cfg.Links), "peers", len(cfg.Peers),
		"admin_socket", cfg.AdminSocket, "version", buildinfo.Version())
	return d, nil
}

func peerName(p nodeconf.Peer) string {
	if p.Name != "" {
		return p.Name
	}
	return "node" + strconv.Itoa(p.ID)
}

// nextIncarnation returns a number greater than any earlier daemon of this node used: the
// stored one plus one, or the wall clock in nanoseconds if that is greater (so a lost data
// directory does not make peers take the new daemon's frames for replays).
func nextIncarnation(dir string) (uint64, error) {
	path := filepath.Join(dir, "incarnation")
	var last uint64
	if b, err := os.ReadFile(path); err == nil {
		last, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("read incarnation: %w", err)
	}
	next := max(last+1, uint64(time.Now().UnixNano()))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("write incarnation: %w", err)
	}
	_, werr := fmt.Fprintln(f, next)
	if err := errors.Join(werr, f.Sync(), f.Close(), os.Rename(tmp, path)); err != nil {
		return 0, fmt.Errorf("write incarnation: %w", err)
	}
	return next, nil
}

// run runs the daemon until ctx ends.
func (d *daemon) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if err := realtimeProcess(runtimePriority); err != nil {
		d.log.Warn("vigild runs without real-time priority; CPU load can delay it and its heartbeats", "reason", err)
	}
	rt := make(chan error, 1)
	wg.Go(func() { d.sender.Run(ctx, rt) })
	if err := <-rt; err != nil {
		d.log.Warn("heartbeat sender runs without real-time priority; CPU load can delay heartbeats", "reason", err)
	}
	if err := watchCarrier(ctx, d.ifLinks, d.plane.SetLinkDown, d.log); err != nil {
		d.log.Warn("no netlink carrier confirmation", "err", err)
	}
	events := make(chan heartbeat.Event, 1024)
	if d.fallback != nil {
		wg.Go(func() { d.fallback.Run(ctx) })
		wg.Go(func() {
			for ev := range d.fallback.Events() {
				events <- ev
			}
		})
	} else {
		wg.Go(func() {
			for {
				ev, err := d.bpf.WaitEvent() // parked in the network poller: holds no P meanwhile
				if err != nil {
					if !errors.Is(err, os.ErrClosed) {
						d.log.Error("read heartbeat events", "err", err)
					}
					return
				}
				d.nudge(ev)
				events <- ev
			}
		})
	}
	if d.disk != nil {
		wg.Go(func() { d.disk.d.Run(ctx) })
	}
	if d.bench != nil {
		wg.Go(func() { d.bench.run(ctx) })
	}
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- d.admin.Serve(ctx) })

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		case ev := <-events:
			d.logEvent(ev)
			if d.ic != nil {
				d.ic.sync()
			}
			if d.fallback != nil {
				// On the fallback path the steering follows the link state only once sync
				// copied it; on the eBPF path the event reader nudged already.
				d.nudge(ev)
			}
			d.clusterHeartbeat(ev)
		case <-tick.C:
			d.progress.Add(1)
			d.sampleRTT()
			if d.ic != nil {
				d.ic.sample(time.Duration(heartbeat.MonotonicNow()))
			}
			if l := d.sender.TakeLate(); l.WorstNS != 0 {
				d.log.Warn("heartbeat sender ran late", "woke_ns", l.AtNS, "late", time.Duration(l.WorstNS),
					"late_ns", l.WorstNS, "late_total", l.Count)
			}
		case e := <-serveErr:
			if e == nil {
				// Serve returns nil only once ctx has ended and closed it: a shutdown.
				err = ctx.Err()
				break loop
			}
			err = fmt.Errorf("admin server: %w", e)
			break loop
		}
	}
	cancel()
	if d.bpf != nil {
		// Unblocks the event reader; the kernel objects stay until shutdown.
		d.bpf.CloseEvents()
	}
	wg.Wait()
	return err
}

// logEvent writes one transition to the log, with how long the peer had been silent.
func (d *daemon) logEvent(ev heartbeat.Event) {
	attrs := []any{"peer", ev.Peer, "peer_name", d.peerNames[ev.Peer], "links_up", ev.LinksUp,
		"kernel_ns", ev.NowNS, "last_seen_ns", ev.LastSeenNS}
	if ev.LastSeenNS != 0 && ev.NowNS >= ev.LastSeenNS {
		attrs = append(attrs, "silent_for", time.Duration(ev.NowNS-ev.LastSeenNS))
	}
	switch ev.Kind {
	case heartbeat.EventLink:
		attrs = append(attrs, "link", ev.Link, "interface", d.linkName(ev.Link),
			"state", heartbeat.LinkState(ev.State).String(), "was", heartbeat.LinkState(ev.OldState).String())
		level := slog.LevelInfo
		if ev.State == uint32(heartbeat.LinkDown) {
			level = slog.LevelWarn
		}
		d.log.Log(context.Background(), level, "link "+heartbeat.LinkState(ev.State).String(), attrs...)
	case heartbeat.EventPeer:
		state := heartbeat.PeerState(ev.State)
		attrs = append(attrs, "state", state.String(), "was", heartbeat.PeerState(ev.OldState).String())
		level := slog.LevelInfo
		if state == heartbeat.PeerDown || state == heartbeat.PeerStalled {
			level = slog.LevelWarn
		}
		d.log.Log(context.Background(), level, "peer "+state.String(), attrs...)
		if state == heartbeat.PeerDown && d.disk != nil && d.disk.peer(ev.Peer).State == disk.Alive {
			d.log.Warn("peer network-partitioned: every network link lost, its disk heartbeat goes on", attrs...)
		}
	case heartbeat.EventJeopardy:
		msg := "peer out of jeopardy"
		level := slog.LevelInfo
		if ev.State != 0 {
			msg, level = "peer in jeopardy: one link left", slog.LevelWarn
		}
		d.log.Log(context.Background(), level, msg, attrs...)
	}
}

func (d *daemon) linkName(id uint8) string {
	if int(id) < len(d.cfg.Links) {
		return d.cfg.Links[id].Name
	}
	return "?"
}

// shutdown detaches the heartbeat plane (nothing stays pinned) and releases everything.
func (d *daemon) shutdown() error {
	err := d.release(true)
	d.log.Info("vigild stopped")
	return err
}

// release closes what newDaemon made; detach also removes the pinned kernel state.
func (d *daemon) release(detach bool) error {
	var errs []error
	if d.admin != nil {
		errs = append(errs, d.admin.Close())
	}
	if d.drd != nil {
		errs = append(errs, d.drd.close())
	}
	errs = append(errs, d.stopCluster())
	if d.ic != nil {
		errs = append(errs, d.ic.close(detach))
	}
	if d.disk != nil {
		errs = append(errs, d.disk.d.Close())
	}
	if d.bpf != nil {
		if detach {
			errs = append(errs, d.bpf.Detach())
		}
		errs = append(errs, d.bpf.Close())
	}
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	if d.attn != nil {
		errs = append(errs, d.attn.Close())
	}
	return errors.Join(errs...)
}

// rttWindow keeps the last round-trip samples of one (peer, link).
type rttWindow struct {
	lastEcho uint64
	samples  []time.Duration
	next     int
}

const rttSamples = 1024

func (w *rttWindow) add(d time.Duration) {
	if len(w.samples) < rttSamples {
		w.samples = append(w.samples, d)
		return
	}
	w.samples[w.next] = d
	w.next = (w.next + 1) % rttSamples
}

func (w *rttWindow) quantile(q float64) time.Duration {
	if w == nil || len(w.samples) == 0 {
		return 0
	}
	s := slices.Clone(w.samples)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// sampleRTT records the latest echo round trip of every slot that got a new echo since the
// last sample. Reading the slots costs no syscall on the eBPF path (mmapped map).
func (d *daemon) sampleRTT() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.cfg.Peers {
		for l := range d.cfg.Links {
			s, err := d.plane.Slot(uint16(p.ID), uint8(l))
			if err != nil {
				continue
			}
			k := [2]uint16{uint16(p.ID), uint16(l)}
			w := d.rtt[k]
			if w == nil {
				w = &rttWindow{}
				d.rtt[k] = w
			}
			if s.RxEcho != w.lastEcho {
				w.lastEcho = s.RxEcho
				w.add(time.Duration(s.LastRTTNS))
			}
		}
	}
}

// wall converts a CLOCK_MONOTONIC time of the kernel into wall-clock time; zero stays zero.
func wall(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	now := heartbeat.MonotonicNow()
	if ns > now {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(now - ns))
}

// Status implements admin.Provider.
func (d *daemon) Status() admin.Status {
	mode := "ebpf"
	if d.fallback != nil {
		mode = "fallback"
	}
	hb := d.cfg.Heartbeat
	clusterID := d.cfg.ClusterID
	if clusterID == 0 {
		clusterID = nodeconf.DefaultClusterID(d.cfg.Cluster)
	}
	name := d.cfg.Name
	if name == "" {
		name = "node" + strconv.Itoa(d.cfg.Node)
	}
	st := admin.Status{
		Cluster: d.cfg.Cluster, ClusterID: clusterID, NodeID: uint16(d.cfg.Node), NodeName: name,
		Mode: mode, XDPMode: d.xdpMode, Incarnation: d.incarnation, StartedAt: d.startedAt,
		HeartbeatInterval: hb.Interval, DetectTime: hb.Interval * time.Duration(hb.Multiplier),
		Version: buildinfo.Version(), DiskHeartbeat: d.cfg.DiskHeartbeat.Path,
	}
	if ic := d.cfg.Interconnect; ic.Enabled() {
		st.ClusterAddress, st.Policy = ic.ClusterAddr(d.cfg.Node).String(), string(ic.Policy)
	}
	return st
}

// Nodes implements admin.Provider.
func (d *daemon) Nodes() []admin.NodeStatus {
	st := d.Status()
	out := []admin.NodeStatus{{ID: st.NodeID, Name: st.NodeName, Self: true, State: admin.NodeSelf, Links: len(d.cfg.Links), LinksUp: len(d.cfg.Links)}}
	for _, p := range d.cfg.Peers {
		id := uint16(p.ID)
		ps, err := d.plane.Peer(id)
		if err != nil {
			continue
		}
		var seen uint64
		for l := range d.cfg.Links {
			if s, err := d.plane.Slot(id, uint8(l)); err == nil {
				seen = max(seen, s.LastDataNS, s.LastEchoNS)
			}
		}
		state, jeopardy := ps.State.String(), ps.Jeopardy
		if d.disk != nil {
			var j bool
			state, j = nodeState(ps.State, d.disk.peer(id).State == disk.Alive)
			jeopardy = jeopardy || j
		}
		out = append(out, admin.NodeStatus{
			ID: id, Name: d.peerNames[id], State: state, Jeopardy: jeopardy,
			LinksUp: int(ps.LinksUp), Links: len(d.cfg.Links), Since: wall(ps.SinceNS), LastSeen: wall(seen),
		})
	}
	return out
}

// Links implements admin.Provider.
func (d *daemon) Links() []admin.LinkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []admin.LinkStatus
	for _, p := range d.cfg.Peers {
		id := uint16(p.ID)
		for l, link := range d.cfg.Links {
			s, err := d.plane.Slot(id, uint8(l))
			if err != nil {
				continue
			}
			w := d.rtt[[2]uint16{id, uint16(l)}]
			loss := 0.0
			if total := s.RxData + s.Lost; total > 0 {
				loss = 100 * float64(s.Lost) / float64(total)
			}
			out = append(out, admin.LinkStatus{
				Peer: id, PeerName: d.peerNames[id], Link: uint8(l), LinkName: link.Name,
				State: s.State.String(), Since: wall(s.SinceNS), LastSeen: wall(max(s.LastDataNS, s.LastEchoNS)),
				RTTP50: w.quantile(0.5), RTTP99: w.quantile(0.99), SRTT: time.Duration(s.SRTTNS),
				Received: s.RxData, Echoes: s.RxEcho, Lost: s.Lost, LossPercent: loss,
			})
		}
	}
	if d.ic != nil {
		d.ic.decorate(out)
	}
	if d.disk != nil {
		out = append(out, d.disk.rows(d.cfg, d.peerNames)...)
	}
	return out
}

// Counters implements admin.Provider.
func (d *daemon) Counters() admin.Counters {
	c, err := d.plane.Counters()
	out := admin.Counters{}
	if err != nil {
		return out
	}
	for i, v := range c {
		out[heartbeat.Counter(i).String()] = v
	}
	if d.ic != nil {
		d.ic.counters(out)
	}
	for id := range d.links {
		st := d.sender.Stats(id)
		out[fmt.Sprintf("sent_link%d", id)] = st.Sent
		out[fmt.Sprintf("send_errors_link%d", id)] = st.Errors
	}
	out["sender_late_wakeups"] = d.sender.LateCount()
	out["sender_released_sleeps"] = d.sender.ReleasedCount()
	out["sender_parked_sleeps"] = d.sender.ParkedCount()
	return out
}
