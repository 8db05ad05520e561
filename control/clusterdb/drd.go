package clusterdb

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// DRDBlockSize is the block size of every DRD device (the wire protocol's block).
const DRDBlockSize = 4096

// DRDPlacement is the runtime record of a DRD device: which node serves it and with which
// epoch. The device itself (backing, size, the nodes that reach the backing) is in
// Config.DRDDevices; a placement exists once a node has been chosen.
//
// Every placement has a new epoch, one more than the previous placement of the device, so a
// server incarnation is known by (device, epoch) across the cluster: a node starts a server
// only for a placement on itself, with that placement's epoch, and never twice for the same
// epoch (a restarted node proposes a new placement on itself first).
//
// Releasing is the node that served the device before a relocation and has not yet confirmed
// that its server stopped (DRDReleased): the new node must not serve until it is 0, so the
// old server's writes in flight cannot land after the new server's. It is 0 after a failover
// from a node that is not running (its server died with it).
type DRDPlacement struct {
	Device    string `json:"device"`
	Node      int    `json:"node"`
	Epoch     uint64 `json:"epoch"`
	Releasing int    `json:"releasing,omitempty"`
	Since     uint64 `json:"since"` // the entry that made the placement
}

// Ready reports whether the serving node may serve: no earlier server is still to stop.
func (p DRDPlacement) Ready() bool { return p.Node != 0 && p.Releasing == 0 }

// DRDPlace places a DRD device on Node with the next epoch (ExpectEpoch+1). It fails with
// ErrConflict unless the device's current epoch is ExpectEpoch (0: never placed), so two
// proposers cannot both move a device. Node must be one of the device's nodes and running.
// From is the node that serves the device now and must stop first (a relocation away from a
// live node); 0 when there is none: the first placement, a new epoch on the same node, or a
// failover away from a node that is not running.
type DRDPlace struct {
	Device      string `json:"device"`
	Node        int    `json:"node"`
	ExpectEpoch uint64 `json:"expect_epoch"`
	From        int    `json:"from,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// DRDReleased records that Node stopped serving Device, so the placement of Epoch on another
// node may serve. A stale one (another epoch, or no release pending from Node) changes nothing.
type DRDReleased struct {
	Device string `json:"device"`
	Node   int    `json:"node"`
	Epoch  uint64 `json:"epoch"`
}

func (*DRDPlace) commandType() CommandType    { return TypeDRDPlace }
func (*DRDReleased) commandType() CommandType { return TypeDRDReleased }

// DRDDevice returns the device named name of the configuration.
func (c *Config) DRDDevice(name string) (DRDDevice, bool) {
	if c == nil {
		return DRDDevice{}, false
	}
	for _, d := range c.DRDDevices {
		if d.Name == name {
			return d, true
		}
	}
	return DRDDevice{}, false
}

// DRDNodeIDs returns the ids of the device's nodes, in the device's order of preference.
func (c *Config) DRDNodeIDs(d DRDDevice) []int {
	var ids []int
	for _, name := range d.Nodes {
		if n, ok := c.Node(name); ok {
			ids = append(ids, n.ID)
		}
	}
	return ids
}

// DRD returns the placement of the device, if it has one.
func (s *State) DRD(device string) (DRDPlacement, bool) {
	i, ok := s.drdIndex(device)
	if !ok {
		return DRDPlacement{}, false
	}
	return s.DRDPlacements[i], true
}

func (s *State) drdIndex(device string) (int, bool) {
	return slices.BinarySearchFunc(s.DRDPlacements, device, func(p DRDPlacement, d string) int {
		return strings.Compare(p.Device, d)
	})
}

// ErrNotServing is wrapped by rejections of placements on nodes that cannot serve.
var ErrNotServing = errors.New("node cannot serve the device")

func (s *State) planDRDPlace(index uint64, p *DRDPlace) (change, error) {
	if s.Config == nil {
		return change{}, rejectf("drd-place: no configuration yet")
	}
	dev, ok := s.Config.DRDDevice(p.Device)
	if !ok {
		return change{}, rejectf("drd-place: unknown device %q", p.Device)
	}
	if msg := checkText(p.Reason); msg != "" || len(p.Reason) > maxWhatLen/2 {
		return change{}, rejectf("drd-place: reason: %s", orElse(msg, "too long"))
	}
	ids := s.Config.DRDNodeIDs(dev)
	if !slices.Contains(ids, p.Node) {
		return change{}, fmt.Errorf("%w: %w: drd-place: node %d is not one of the nodes of device %s (%s)",
			ErrRejected, ErrNotServing, p.Node, dev.Name, strings.Join(dev.Nodes, ", "))
	}
	m, ok := s.Member(p.Node)
	if !ok || m.State != NodeRunning {
		st := "not a member"
		if ok {
			st = string(m.State)
		}
		return change{}, fmt.Errorf("%w: %w: drd-place: node %d is %s, not running", ErrRejected, ErrNotServing, p.Node, st)
	}
	cur, placed := s.DRD(p.Device)
	if p.ExpectEpoch != cur.Epoch {
		return change{}, fmt.Errorf("%w: device %s is at epoch %d, not %d", ErrConflict, p.Device, cur.Epoch, p.ExpectEpoch)
	}
	switch {
	case p.From != 0 && (!placed || p.From != cur.Node):
		return change{}, rejectf("drd-place: device %s is not served by node %d", p.Device, p.From)
	case p.From != 0 && p.From == p.Node:
		return change{}, rejectf("drd-place: device %s: node %d cannot release to itself", p.Device, p.Node)
	case p.From != 0 && cur.Releasing != 0:
		return change{}, rejectf("drd-place: device %s is still moving (node %d has not stopped serving it)",
			p.Device, cur.Releasing)
	}
	np := DRDPlacement{Device: p.Device, Node: p.Node, Epoch: cur.Epoch + 1, Releasing: p.From, Since: index}
	what := fmt.Sprintf("drd device %s: node %d serves at epoch %d", p.Device, p.Node, np.Epoch)
	if placed && cur.Node != p.Node {
		what += fmt.Sprintf(" (was node %d)", cur.Node)
	}
	if p.From != 0 {
		what += fmt.Sprintf(" once node %d stopped", p.From)
	}
	return change{
		kind: EventDRD,
		node: p.Node,
		what: withReason(what, p.Reason),
		commit: func() {
			i, found := s.drdIndex(p.Device)
			if found {
				s.DRDPlacements[i] = np
			} else {
				s.DRDPlacements = slices.Insert(s.DRDPlacements, i, np)
			}
		},
	}, nil
}

func (s *State) planDRDReleased(p *DRDReleased) (change, error) {
	if _, ok := s.Config.DRDDevice(p.Device); !ok {
		return change{}, rejectf("drd-released: unknown device %q", p.Device)
	}
	i, ok := s.drdIndex(p.Device)
	if !ok || s.DRDPlacements[i].Epoch != p.Epoch || s.DRDPlacements[i].Releasing != p.Node || p.Node == 0 {
		return change{}, nil // stale: nothing to do
	}
	cur := s.DRDPlacements[i]
	return change{
		kind:   EventDRD,
		node:   p.Node,
		what:   fmt.Sprintf("drd device %s: node %d stopped serving; node %d serves at epoch %d", p.Device, p.Node, cur.Node, cur.Epoch),
		commit: func() { s.DRDPlacements[i].Releasing = 0 },
	}, nil
}

// pruneDRD drops the placements of devices the configuration no longer has, and of nodes no
// longer among their device's nodes; a release from such a node is forgotten.
func (s *State) pruneDRD() {
	s.DRDPlacements = slices.DeleteFunc(s.DRDPlacements, func(p DRDPlacement) bool {
		d, ok := s.Config.DRDDevice(p.Device)
		return !ok || !slices.Contains(s.Config.DRDNodeIDs(d), p.Node)
	})
	for i := range s.DRDPlacements {
		p := &s.DRDPlacements[i]
		d, _ := s.Config.DRDDevice(p.Device)
		if p.Releasing != 0 && !slices.Contains(s.Config.DRDNodeIDs(d), p.Releasing) {
			p.Releasing = 0
		}
	}
}

// checkDRD checks the invariants of the placements.
func (s *State) checkDRD() string {
	for i, p := range s.DRDPlacements {
		if i > 0 && s.DRDPlacements[i-1].Device >= p.Device {
			return fmt.Sprintf("drd placements not in order of device at %q", p.Device)
		}
		d, ok := s.Config.DRDDevice(p.Device)
		switch {
		case !ok:
			return fmt.Sprintf("drd placement of unknown device %q", p.Device)
		case !slices.Contains(s.Config.DRDNodeIDs(d), p.Node):
			return fmt.Sprintf("drd device %s placed on node %d, not one of its nodes", p.Device, p.Node)
		case p.Releasing != 0 && (p.Releasing == p.Node || !slices.Contains(s.Config.DRDNodeIDs(d), p.Releasing)):
			return fmt.Sprintf("drd device %s released by node %d", p.Device, p.Releasing)
		case p.Epoch == 0:
			return fmt.Sprintf("drd device %s placed with epoch 0", p.Device)
		case p.Since == 0 || p.Since > s.AppliedIndex:
			return fmt.Sprintf("drd device %s: since %d with applied index %d", p.Device, p.Since, s.AppliedIndex)
		}
	}
	return ""
}
