package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"vigil/control/admin"
	"vigil/control/cluster"
	"vigil/control/clusterdb"
	"vigil/control/replica"
	"vigil/control/transport"
	"vigil/drd/server"
	"vigil/drd/wire"
)

// DefaultDRDPort is the TCP port of the DRD block shipping listener when --drd-listen gives
// none; it listens on the cluster transport's address.
const DefaultDRDPort = 7406

// The DRD manager serves the DRD devices that the cluster database places on this node and
// keeps the placements of the cluster up to date:
//
//   - a placement on this node that is ready (no earlier server still to stop) is served: the
//     backing is opened (waiting for the flock of a predecessor on this machine), and a server
//     with the placement's epoch listens on the local path's unix socket
//     (DIR/drd/DEVICE.sock, next to the admin socket) and takes remote sessions from the
//     cluster transport's DRD service and from the framed TCP listener (--drd-listen). An epoch
//     is served at most once per node (data_dir/drd-epochs.json): a restarted daemon first
//     commits a new placement on itself, so that every server incarnation has its own epoch;
//   - a device served here that is placed elsewhere (relocated) or deleted is stopped: its
//     server closes, the requests in flight finish, the backing is closed, and then the node
//     commits DRDReleased so that the new node may start;
//   - the leader places devices that have no placement, and moves a device whose serving node
//     is not running (faulted, exited) to the first running node of the device's nodes, with a
//     new epoch and no release to wait for: the dead node's server died with it. It also
//     releases on behalf of a releasing node that is not running.
//
// Clients find the serving node with the admin API's drd.locate (vigil-drd verify --vigild).
type drdManager struct {
	log      *slog.Logger
	me       int
	node     *cluster.Node
	tr       transport.Transport // nil: no cluster transport
	sockDir  string
	epochs   string // the file of served epochs
	listen   netip.AddrPort
	peers    map[int]netip.AddrPort // DRD listeners of the peers
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	tcp      net.Listener
	trListen transport.Listener
	kick     chan struct{}

	mu      sync.Mutex
	served  map[string]*drdServed // running or starting, by device
	pending map[string]bool       // proposals in flight, by key
	last    map[string]uint64     // the highest epoch served per device (persisted)
}

// drdServed is one device served here.
type drdServed struct {
	device  string
	epoch   uint64
	backing string
	size    uint64
	since   time.Time
	srv     *server.Server
	dev     *server.Device
	local   *net.UnixListener
	sock    string
	ready   chan struct{} // closed once started (or failed: err)
	err     error
	stopped bool
}

// startDRD starts the manager; the cluster database must be running.
func (d *daemon) startDRD(f clusterFlags, listen string) error {
	if d.cluster == nil {
		return nil
	}
	raftListen, raftPeers, err := raftAddrs(d.cfg, f)
	if err != nil {
		return err
	}
	m := &drdManager{
		log: d.log.With("component", "drd"), me: d.cfg.Node, node: d.cluster,
		sockDir: filepath.Join(filepath.Dir(d.cfg.AdminSocket), "drd"),
		epochs:  filepath.Join(d.cfg.DataDir, "drd-epochs.json"),
		listen:  netip.AddrPortFrom(raftListen.Addr(), DefaultDRDPort),
		peers:   map[int]netip.AddrPort{},
		served:  map[string]*drdServed{}, pending: map[string]bool{}, last: map[string]uint64{},
		kick: make(chan struct{}, 1),
	}
	if d.transport != nil {
		m.tr = d.transport
	}
	for id, a := range raftPeers {
		m.peers[int(id)] = netip.AddrPortFrom(a.Addr(), DefaultDRDPort)
	}
	if listen != "" {
		if m.listen, err = parsePort(listen, DefaultDRDPort); err != nil {
			return fmt.Errorf("--drd-listen %q: %w", listen, err)
		}
	}
	if err := m.loadEpochs(); err != nil {
		return err
	}
	if err := os.MkdirAll(m.sockDir, 0o755); err != nil {
		return fmt.Errorf("drd: %w", err)
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	if m.tcp, err = net.Listen("tcp", m.listen.String()); err != nil {
		return fmt.Errorf("drd: listen for block shipping: %w", err)
	}
	m.wg.Go(func() { m.acceptTCP() })
	if m.tr != nil {
		if m.trListen, err = m.tr.Listen(transport.ServiceDRD); err != nil {
			m.tcp.Close()
			return fmt.Errorf("drd: listen on the cluster transport: %w", err)
		}
		m.wg.Go(func() { m.acceptTransport() })
	}
	m.wg.Go(func() { m.run() })
	d.drd = m
	m.log.Info("drd manager started", "listen", m.listen.String(), "sockets", m.sockDir)
	return nil
}

func parsePort(s string, port uint16) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(s); err == nil {
		return a, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("not an address or address:port")
	}
	return netip.AddrPortFrom(a, port), nil
}

// close stops every server and the listeners. It does not release placements: a daemon that
// stops is not running, and the leader moves its devices.
func (m *drdManager) close() error {
	m.cancel()
	var errs []error
	if m.tcp != nil {
		errs = append(errs, m.tcp.Close())
	}
	if m.trListen != nil {
		errs = append(errs, m.trListen.Close())
	}
	m.mu.Lock()
	var all []*drdServed
	for _, s := range m.served {
		all = append(all, s)
	}
	m.mu.Unlock()
	for _, s := range all {
		<-s.ready
		errs = append(errs, m.stop(s))
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// run reconciles at every change of the database, and every 50 ms (quorum is not a change of
// the database: a node that loses it must stop serving before the leader, three election
// timeouts after it last heard from the node, moves its devices).
func (m *drdManager) run() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		changed := m.node.Replica().Changed()
		m.reconcile()
		select {
		case <-m.ctx.Done():
			return
		case <-changed:
		case <-m.kick:
		case <-t.C:
		}
	}
}

// drdView copies what the DRD manager reads of the database (not the event log) and the
// replica's status.
func drdView(n *cluster.Node) (clusterdb.View, replica.Status) {
	var v clusterdb.View
	var st replica.Status
	n.Replica().Inspect(func(s *clusterdb.State, view clusterdb.View, status replica.Status) {
		v = clusterdb.View{State: &clusterdb.State{SchemaVersion: s.SchemaVersion, Config: s.Config.Clone(),
			Members: slices.Clone(s.Members), DRDPlacements: slices.Clone(s.DRDPlacements)}, Stale: view.Stale, Reason: view.Reason}
		st = status
	})
	return v, st
}

func (m *drdManager) reconcile() {
	v, st := drdView(m.node)
	var devices []clusterdb.DRDDevice
	if v.Config != nil {
		devices = v.Config.DRDDevices
	}
	me, _ := v.Member(m.me)
	running := me.State == clusterdb.NodeRunning && st.State == clusterdb.NodeRunning

	// Stop what is no longer placed here, and everything when this node has no quorum: the
	// others may place its devices elsewhere meanwhile. (That they do so only after this
	// server stopped needs the lease fencing of a later issue: today the leader moves the
	// device of a node it has not heard from for three election timeouts, and a node that
	// cannot reach a majority learns it within about one.)
	m.mu.Lock()
	var stop []*drdServed
	for name, s := range m.served {
		p, placed := v.DRD(name)
		dev, defined := v.Config.DRDDevice(name)
		if !st.Quorate || !defined || !placed || p.Node != m.me || p.Epoch != s.epoch || dev.Backing != s.backing || dev.Size != s.size {
			stop = append(stop, s)
			delete(m.served, name)
			m.pending["stop "+name] = true
		}
	}
	m.mu.Unlock()
	for _, s := range stop {
		m.wg.Go(func() {
			<-s.ready
			if err := m.stop(s); err != nil {
				m.log.Warn("drd stop", "device", s.device, "epoch", s.epoch, "err", err)
			}
			m.log.Info("drd stopped serving", "device", s.device, "epoch", s.epoch)
			m.mu.Lock()
			delete(m.pending, "stop "+s.device)
			m.mu.Unlock()
			m.changed()
		})
	}
	if v.Stale || !running {
		return
	}
	for _, d := range devices {
		p, placed := v.DRD(d.Name)
		m.mu.Lock()
		s := m.served[d.Name]
		last := m.last[d.Name]
		m.mu.Unlock()
		switch {
		case placed && p.Releasing == m.me && s == nil && !m.stopping(d.Name):
			m.propose(fmt.Sprintf("release %s %d", d.Name, p.Epoch), &clusterdb.DRDReleased{Device: d.Name, Node: m.me, Epoch: p.Epoch})
		case placed && p.Node == m.me && p.Ready() && s == nil && p.Epoch <= last:
			// Served before by this node (an earlier run): a new epoch first.
			m.propose(fmt.Sprintf("place %s %d", d.Name, p.Epoch), &clusterdb.DRDPlace{Device: d.Name, Node: m.me,
				ExpectEpoch: p.Epoch, Reason: "the server restarted"})
		case placed && p.Node == m.me && p.Ready() && s == nil && !m.stopping(d.Name):
			m.start(d, p.Epoch)
		}
	}
	if uint64(m.me) != st.Leader || !st.Quorate {
		return
	}
	for _, d := range devices {
		p, placed := v.DRD(d.Name)
		alive := func(id int) bool { mb, ok := v.Member(id); return ok && mb.State == clusterdb.NodeRunning }
		switch {
		case placed && alive(p.Node) && p.Releasing != 0 && !alive(p.Releasing):
			m.propose(fmt.Sprintf("release %s %d", d.Name, p.Epoch), &clusterdb.DRDReleased{Device: d.Name, Node: p.Releasing,
				Epoch: p.Epoch})
		case placed && alive(p.Node):
		default:
			target := 0
			for _, id := range v.Config.DRDNodeIDs(d) {
				if alive(id) {
					target = id
					break
				}
			}
			if target == 0 {
				continue // no node can serve it now
			}
			reason := "placed"
			if placed {
				mb, _ := v.Member(p.Node)
				reason = fmt.Sprintf("node %d is %s", p.Node, orState(mb.State))
			}
			m.propose(fmt.Sprintf("place %s %d", d.Name, p.Epoch), &clusterdb.DRDPlace{Device: d.Name, Node: target,
				ExpectEpoch: p.Epoch, Reason: reason})
		}
	}
}

func orState(s clusterdb.NodeState) string {
	if s == "" {
		return "not a member"
	}
	return string(s)
}

// stopping reports whether a server of the device is still being stopped.
func (m *drdManager) stopping(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending["stop "+name]
}

// changed makes run reconcile soon (a stop finished).
func (m *drdManager) changed() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// propose commits a command in the background, once at a time per key.
func (m *drdManager) propose(key string, p clusterdb.Payload) {
	m.mu.Lock()
	if m.pending[key] {
		m.mu.Unlock()
		return
	}
	m.pending[key] = true
	m.mu.Unlock()
	m.wg.Go(func() {
		defer func() {
			m.mu.Lock()
			delete(m.pending, key)
			m.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(m.ctx, 3*time.Second)
		defer cancel()
		res, err := m.node.ProposeDRD(ctx, p)
		if err != nil && !errors.Is(err, clusterdb.ErrConflict) {
			m.log.Info("drd proposal not committed", "what", key, "err", err)
			return
		}
		if res.Event != nil {
			m.log.Info("drd", "event", res.Event.What, "index", res.Index)
		}
	})
}

// start opens the device and starts its server in the background.
func (m *drdManager) start(d clusterdb.DRDDevice, epoch uint64) {
	s := &drdServed{device: d.Name, epoch: epoch, backing: d.Backing, size: d.Size, ready: make(chan struct{}),
		sock: filepath.Join(m.sockDir, d.Name+".sock")}
	m.mu.Lock()
	m.served[d.Name] = s
	m.mu.Unlock()
	m.wg.Go(func() {
		defer close(s.ready)
		if s.err = m.open(s); s.err != nil {
			m.log.Warn("drd cannot serve", "device", d.Name, "epoch", epoch, "err", s.err)
			// Try again later (with a new epoch if this one was recorded as served).
			m.wg.Go(func() {
				select {
				case <-m.ctx.Done():
				case <-time.After(2 * time.Second):
				}
				m.mu.Lock()
				if m.served[d.Name] == s {
					delete(m.served, d.Name)
				}
				m.mu.Unlock()
				m.changed()
			})
			return
		}
		m.log.Info("drd serving", "device", d.Name, "epoch", epoch, "size", s.dev.Size, "local", s.sock)
	})
}

// open opens the backing, records the epoch as served, and starts the server.
func (m *drdManager) open(s *drdServed) error {
	dev, err := server.OpenDevice(s.device, s.backing)
	if err != nil {
		return err
	}
	if s.size != 0 {
		if dev.Size < s.size {
			return errors.Join(fmt.Errorf("device %s: backing %s has %d bytes, the device is %d", s.device, s.backing, dev.Size, s.size),
				dev.Close())
		}
		dev.Size = s.size
	}
	if err := m.recordEpoch(s.device, s.epoch); err != nil {
		return errors.Join(err, dev.Close())
	}
	srv, err := server.New(server.Config{Devices: []*server.Device{dev}, Epoch: s.epoch, Logger: m.log})
	if err != nil {
		return errors.Join(err, dev.Close())
	}
	os.Remove(s.sock)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.sock, Net: "unixpacket"})
	if err != nil {
		return errors.Join(fmt.Errorf("device %s: local socket: %w", s.device, err), srv.Close(), dev.Close())
	}
	s.dev, s.srv, s.local, s.since = dev, srv, l, time.Now()
	m.wg.Go(func() {
		if err := srv.ServeLocal(l); err != nil {
			m.log.Warn("drd local path", "device", s.device, "err", err)
		}
	})
	return nil
}

// stop closes a server (its requests in flight finish first) and its backing.
func (m *drdManager) stop(s *drdServed) error {
	m.mu.Lock()
	done := s.err != nil || s.stopped
	s.stopped = true
	m.mu.Unlock()
	if done {
		return nil
	}
	err := errors.Join(s.srv.Close(), s.dev.Close())
	os.Remove(s.sock)
	return err
}

// recordEpoch records that this node serves epoch of the device, durably, before it does.
func (m *drdManager) recordEpoch(device string, epoch uint64) error {
	m.mu.Lock()
	m.last[device] = max(m.last[device], epoch)
	data, err := json.Marshal(m.last)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := m.epochs + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("drd epochs: %w", err)
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return fmt.Errorf("drd epochs: %w", err)
	}
	if err := os.Rename(tmp, m.epochs); err != nil {
		return fmt.Errorf("drd epochs: %w", err)
	}
	return nil
}

func (m *drdManager) loadEpochs() error {
	data, err := os.ReadFile(m.epochs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("drd epochs: %w", err)
	}
	if err := json.Unmarshal(data, &m.last); err != nil {
		return fmt.Errorf("drd epochs %s: %w", m.epochs, err)
	}
	return nil
}

// helloConn is a stream whose first message (the Hello) was read to route it.
type helloConn struct {
	wire.Conn
	first []byte
}

func (c *helloConn) Recv(ctx context.Context) ([]byte, error) {
	if m := c.first; m != nil {
		c.first = nil
		return m, nil
	}
	return c.Conn.Recv(ctx)
}

// Unwrap returns the stream under c: the DRD server's socket event loop reads it directly once
// the Hello was read.
func (c *helloConn) Unwrap() wire.Conn { return c.Conn }

// route reads a remote session's Hello and hands the stream to the server of its device.
func (m *drdManager) route(c wire.Conn, peer string) {
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	msg, err := c.Recv(ctx)
	cancel()
	if err != nil {
		c.Close()
		return
	}
	h, err := wire.DecodeHello(msg)
	if err != nil {
		m.refuse(c, wire.StatusProtocolError, err.Error())
		return
	}
	m.mu.Lock()
	s := m.served[h.Device]
	m.mu.Unlock()
	if s != nil {
		select {
		case <-s.ready:
		case <-m.ctx.Done():
		}
	}
	m.mu.Lock()
	stopped := s != nil && s.stopped
	m.mu.Unlock()
	if s == nil || stopped || s.err != nil || s.srv == nil {
		m.refuse(c, wire.StatusNoDevice, fmt.Sprintf("node %d does not serve device %q now", m.me, h.Device))
		return
	}
	s.srv.Go(&helloConn{Conn: c, first: msg}, peer)
}

func (m *drdManager) refuse(c wire.Conn, st wire.Status, msg string) {
	ctx, cancel := context.WithTimeout(m.ctx, time.Second)
	c.Send(ctx, wire.AppendWelcome(nil, wire.Welcome{Status: st, Message: msg}))
	cancel()
	c.Close()
}

func (m *drdManager) acceptTCP() {
	for {
		c, err := m.tcp.Accept()
		if err != nil {
			return
		}
		m.wg.Go(func() { m.route(wire.NewFrameConn(c), c.RemoteAddr().String()) })
	}
}

func (m *drdManager) acceptTransport() {
	for {
		c, err := m.trListen.Accept(m.ctx)
		if err != nil {
			return
		}
		m.wg.Go(func() { m.route(c, fmt.Sprintf("node %d", c.Peer())) })
	}
}

// DRDList implements admin.DRDProvider: the database's devices and what this node serves.
func (d *daemon) DRDList() (admin.DRDList, error) {
	out := d.cluster.DRDDevices()
	if d.drd == nil {
		return out, nil
	}
	d.drd.mu.Lock()
	defer d.drd.mu.Unlock()
	for _, s := range d.drd.served {
		select {
		case <-s.ready:
		default:
			continue
		}
		a := admin.DRDServed{Device: s.device, Epoch: s.epoch, Local: s.sock, Remote: d.drd.listen.String()}
		if s.err != nil {
			a.Error = s.err.Error()
		} else {
			a.Size, a.Since = s.dev.Size, s.since.UTC().Format(time.RFC3339Nano)
		}
		out.Served = append(out.Served, a)
	}
	slices.SortFunc(out.Served, func(a, b admin.DRDServed) int { return cmpString(a.Device, b.Device) })
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// DRDLocate implements admin.DRDProvider: where a client on this node reaches the device.
func (d *daemon) DRDLocate(req admin.DRDRef) (admin.DRDLocation, error) {
	if d.drd == nil {
		return admin.DRDLocation{}, errors.New("drd is off on this node")
	}
	v, _ := drdView(d.cluster)
	if _, ok := v.Config.DRDDevice(req.Name); !ok {
		return admin.DRDLocation{}, fmt.Errorf("no device %q", req.Name)
	}
	out := admin.DRDLocation{Device: req.Name, Local: filepath.Join(d.drd.sockDir, req.Name+".sock")}
	p, ok := v.DRD(req.Name)
	if !ok {
		return out, nil
	}
	out.Node, out.Epoch, out.Ready = p.Node, p.Epoch, p.Ready()
	if p.Node == d.cfg.Node {
		out.Remote = d.drd.listen.String()
	} else if a, ok := d.drd.peers[p.Node]; ok {
		out.Remote = a.String()
	}
	return out, nil
}

// The admin API's DRD methods come from the daemon (list, locate) and the cluster node
// (create, delete, relocate); see provider.
var _ admin.DRDProvider = struct {
	*daemon
	*cluster.Node
}{}
