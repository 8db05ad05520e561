package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"vigil/control/admin"
	"vigil/control/clusterdb"
	"vigil/control/replica"
)

// The DRD methods of the admin API that change the cluster database: devices are defined in the
// configuration (drd_devices), changed with a compare-and-swap on the configuration's index so
// that a concurrent `vigil config apply` is not overwritten, and placed through DRDPlace
// commands (clusterdb/drd.go). vigild's DRD manager (cmd/vigild/drd.go) serves what is placed.

// DRDDevices returns the devices of the database with their placement.
func (n *Node) DRDDevices() admin.DRDList {
	v, _ := n.read(false)
	return admin.DRDList{Devices: DRDDevices(v.State), Served: []admin.DRDServed{}, Stale: v.Stale, Reason: v.Reason}
}

// DRDDevices lists the DRD devices of st with their placement.
func DRDDevices(st *clusterdb.State) []admin.DRDDevice {
	out := []admin.DRDDevice{}
	if st == nil || st.Config == nil {
		return out
	}
	for _, d := range st.Config.DRDDevices {
		out = append(out, drdDevice(st, d))
	}
	return out
}

func drdDevice(st *clusterdb.State, d clusterdb.DRDDevice) admin.DRDDevice {
	a := admin.DRDDevice{Name: d.Name, Backing: d.Backing, Nodes: append([]string{}, d.Nodes...), Size: d.Size,
		BlockSize: clusterdb.DRDBlockSize}
	if p, ok := st.DRD(d.Name); ok {
		a.Node, a.Epoch, a.Releasing, a.Ready, a.Since = p.Node, p.Epoch, p.Releasing, p.Ready(), p.Since
		if nd, ok := st.Config.NodeByID(p.Node); ok {
			a.NodeName = nd.Name
		}
	}
	return a
}

// WithDRDDevice returns c with the device req added, checked as the whole configuration is.
func WithDRDDevice(c *clusterdb.Config, req admin.DRDDefine) (*clusterdb.Config, error) {
	if c == nil {
		return nil, errors.New("no cluster configuration yet: apply one first (vigil config apply)")
	}
	if req.Name == "" {
		return nil, errors.New("no device name")
	}
	if _, ok := c.DRDDevice(req.Name); ok {
		return nil, fmt.Errorf("device %s exists already (vigil drd delete %s first)", req.Name, req.Name)
	}
	out := c.Clone()
	out.DRDDevices = append(out.DRDDevices, clusterdb.DRDDevice{Name: req.Name, Backing: req.Backing,
		Nodes: append([]string{}, req.Nodes...), Size: req.Size})
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// WithoutDRDDevice returns c without the device named name.
func WithoutDRDDevice(c *clusterdb.Config, name string) (*clusterdb.Config, error) {
	if _, ok := c.DRDDevice(name); !ok {
		return nil, fmt.Errorf("no device %q", name)
	}
	out := c.Clone()
	for i, d := range out.DRDDevices {
		if d.Name == name {
			out.DRDDevices = append(out.DRDDevices[:i], out.DRDDevices[i+1:]...)
			break
		}
	}
	return out, nil
}

// Relocation works out the DRDPlace that moves a device to node (a name or an id): the node
// must be one of the device's nodes and running; the current server, if it is running, must
// release the device first.
func Relocation(st *clusterdb.State, name, node string) (*clusterdb.DRDPlace, error) {
	if st == nil || st.Config == nil {
		return nil, errors.New("no cluster configuration yet")
	}
	d, ok := st.Config.DRDDevice(name)
	if !ok {
		return nil, fmt.Errorf("no device %q", name)
	}
	target, ok := st.Config.Node(node)
	if !ok {
		id, err := strconv.Atoi(node)
		if err == nil {
			target, ok = st.Config.NodeByID(id)
		}
		if !ok {
			return nil, fmt.Errorf("no node %q in the configuration", node)
		}
	}
	found := false
	for _, id := range st.Config.DRDNodeIDs(d) {
		found = found || id == target.ID
	}
	if !found {
		return nil, fmt.Errorf("node %s cannot serve device %s: it is not one of its nodes (%v)", target.Name, name, d.Nodes)
	}
	if m, ok := st.Member(target.ID); !ok || m.State != clusterdb.NodeRunning {
		state := "not a member"
		if ok {
			state = string(m.State)
		}
		return nil, fmt.Errorf("node %s cannot serve device %s: it is %s, not running", target.Name, name, state)
	}
	cur, placed := st.DRD(name)
	switch {
	case placed && cur.Node == target.ID:
		return nil, fmt.Errorf("device %s is served by node %s already (epoch %d)", name, target.Name, cur.Epoch)
	case placed && cur.Releasing != 0:
		return nil, fmt.Errorf("device %s is still moving: node %d has not stopped serving it yet", name, cur.Releasing)
	}
	p := &clusterdb.DRDPlace{Device: name, Node: target.ID, ExpectEpoch: cur.Epoch, Reason: "relocated by an administrator"}
	if m, ok := st.Member(cur.Node); placed && ok && m.State == clusterdb.NodeRunning {
		p.From = cur.Node
	}
	return p, nil
}

// DRDCreate implements admin.DRDProvider.
func (n *Node) DRDCreate(req admin.DRDDefine, who string) (admin.DRDChange, error) {
	v, err := n.read(true)
	if err != nil {
		return admin.DRDChange{}, err
	}
	c, err := WithDRDDevice(v.Config, req)
	if err != nil {
		return admin.DRDChange{}, err
	}
	return n.commitDRDConfig(c, v.ConfigIndex, who)
}

// DRDDelete implements admin.DRDProvider.
func (n *Node) DRDDelete(req admin.DRDRef, who string) (admin.DRDChange, error) {
	v, err := n.read(true)
	if err != nil {
		return admin.DRDChange{}, err
	}
	if v.Config == nil {
		return admin.DRDChange{}, errors.New("no cluster configuration yet")
	}
	c, err := WithoutDRDDevice(v.Config, req.Name)
	if err != nil {
		return admin.DRDChange{}, err
	}
	return n.commitDRDConfig(c, v.ConfigIndex, who)
}

func (n *Node) commitDRDConfig(c *clusterdb.Config, expect uint64, who string) (admin.DRDChange, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	res, err := n.rep.Propose(ctx, clusterdb.Command{Who: n.who(who),
		Payload: &clusterdb.ApplyConfig{Config: c, ExpectIndex: expect}})
	if err != nil {
		return admin.DRDChange{}, err
	}
	if !res.OK() {
		return admin.DRDChange{}, res.Err
	}
	return admin.DRDChange{Index: res.Index}, nil
}

// DRDRelocate implements admin.DRDProvider: it commits the new placement and, with WaitMS,
// waits until the old server has stopped and the new node may serve.
func (n *Node) DRDRelocate(req admin.DRDMove, who string) (admin.DRDChange, error) {
	v, err := n.read(true)
	if err != nil {
		return admin.DRDChange{}, err
	}
	p, err := Relocation(v.State, req.Name, req.Node)
	if err != nil {
		return admin.DRDChange{}, err
	}
	ctx, cancel := n.ctx()
	res, err := n.rep.Propose(ctx, clusterdb.Command{Who: n.who(who), Payload: p})
	cancel()
	if err != nil {
		return admin.DRDChange{}, err
	}
	if !res.OK() {
		return admin.DRDChange{}, res.Err
	}
	out := admin.DRDChange{Index: res.Index}
	deadline := time.Now().Add(time.Duration(req.WaitMS) * time.Millisecond)
	for {
		changed := n.rep.Changed()
		var dev admin.DRDDevice
		var ok bool
		n.rep.Inspect(func(st *clusterdb.State, _ clusterdb.View, _ replica.Status) {
			var d clusterdb.DRDDevice
			if d, ok = st.Config.DRDDevice(req.Name); ok {
				dev = drdDevice(st, d)
			}
		})
		if !ok {
			return out, fmt.Errorf("device %s was deleted meanwhile", req.Name)
		}
		out.Device = &dev
		if dev.Ready || dev.Epoch != p.ExpectEpoch+1 || !time.Now().Before(deadline) {
			return out, nil
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
		}
	}
}

// ProposeDRD commits a DRD placement command for the daemon's DRD manager (who: vigild@node).
func (n *Node) ProposeDRD(ctx context.Context, p clusterdb.Payload) (clusterdb.Result, error) {
	res, err := n.rep.Propose(ctx, clusterdb.Command{Who: n.who("vigild"), Payload: p})
	if err == nil && !res.OK() {
		err = res.Err
	}
	return res, err
}
