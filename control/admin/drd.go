package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// DRDDevice is a DRD device as the cluster database holds it: its definition and where it is
// served.
type DRDDevice struct {
	Name      string   `json:"name"`
	Backing   string   `json:"backing"`
	Nodes     []string `json:"nodes"`          // the nodes that reach the backing, by preference
	Size      uint64   `json:"size,omitempty"` // bytes; 0: the backing's size
	BlockSize int      `json:"block_size"`
	// Node serves the device (0: not placed yet), with Epoch; NodeName is its name.
	Node     int    `json:"node"`
	NodeName string `json:"node_name,omitempty"`
	Epoch    uint64 `json:"epoch"`
	// Releasing is the node that served the device before a relocation and has not yet
	// confirmed that it stopped; the new node serves once it has (Ready).
	Releasing int  `json:"releasing,omitempty"`
	Ready     bool `json:"ready"`
	// Since is the entry that made the placement.
	Since uint64 `json:"since,omitempty"`
}

// DRDServed is what this node's daemon serves of a device.
type DRDServed struct {
	Device string `json:"device"`
	Epoch  uint64 `json:"epoch"`
	Size   uint64 `json:"size"`
	// Local is the unix socket of the local path; Remote the block shipping address.
	Local  string `json:"local"`
	Remote string `json:"remote,omitempty"`
	Since  string `json:"since"` // RFC 3339
	Error  string `json:"error,omitempty"`
}

// DRDList is the DRD devices of the cluster database and what this node serves.
type DRDList struct {
	Devices []DRDDevice `json:"devices"`
	// Served lists the devices this node serves now.
	Served []DRDServed `json:"served"`
	Stale  bool        `json:"stale"`
	Reason string      `json:"reason,omitempty"`
}

// DRDDefine defines a new DRD device (vigil drd create).
type DRDDefine struct {
	Name    string   `json:"name"`
	Backing string   `json:"backing"`
	Nodes   []string `json:"nodes"`
	Size    uint64   `json:"size,omitempty"`
}

// DRDRef names a device (vigil drd delete, locate).
type DRDRef struct {
	Name string `json:"name"`
}

// DRDMove moves a device to another node (vigil drd relocate). Node is a node name or id.
type DRDMove struct {
	Name string `json:"name"`
	Node string `json:"node"`
	// WaitMS waits up to this long for the new node to be ready to serve (0: do not wait).
	WaitMS int `json:"wait_ms,omitempty"`
}

// DRDChange says where a DRD change was committed.
type DRDChange struct {
	Index uint64 `json:"index"`
	// Device is the device after the change (relocate); empty for delete.
	Device *DRDDevice `json:"device,omitempty"`
}

// DRDLocation tells a DRD client where a device is served: Remote is the block shipping
// address of the serving node (framed TCP), Local the local path's socket when this node
// serves it.
type DRDLocation struct {
	Device string `json:"device"`
	Node   int    `json:"node"`
	Epoch  uint64 `json:"epoch"`
	Ready  bool   `json:"ready"`
	Remote string `json:"remote,omitempty"`
	Local  string `json:"local,omitempty"`
}

// DRDProvider is implemented by a daemon that runs the cluster database and DRD.
type DRDProvider interface {
	DRDList() (DRDList, error)
	DRDCreate(req DRDDefine, who string) (DRDChange, error)
	DRDDelete(req DRDRef, who string) (DRDChange, error)
	DRDRelocate(req DRDMove, who string) (DRDChange, error)
	DRDLocate(req DRDRef) (DRDLocation, error)
}

var errNoDRD = errors.New("this vigild runs no cluster database, so no DRD devices")

// drdMethods are the DRD methods, answered by a DRDProvider.
var drdMethods = map[string]func(d DRDProvider, params json.RawMessage, who string) (any, error){
	"drd.list": func(d DRDProvider, p json.RawMessage, _ string) (any, error) {
		if err := noParams(p); err != nil {
			return nil, err
		}
		return d.DRDList()
	},
	"drd.create": func(d DRDProvider, p json.RawMessage, who string) (any, error) {
		var req DRDDefine
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return d.DRDCreate(req, who)
	},
	"drd.delete": func(d DRDProvider, p json.RawMessage, who string) (any, error) {
		var req DRDRef
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		if req.Name == "" {
			return nil, fmt.Errorf(`params: "name" (a device name) is required`)
		}
		return d.DRDDelete(req, who)
	},
	"drd.relocate": func(d DRDProvider, p json.RawMessage, who string) (any, error) {
		var req DRDMove
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		switch {
		case req.Name == "":
			return nil, fmt.Errorf(`params: "name" (a device name) is required`)
		case req.Node == "":
			return nil, fmt.Errorf(`params: "node" (a node name or id) is required`)
		case req.WaitMS < 0 || req.WaitMS > 60_000:
			return nil, fmt.Errorf("wait_ms %d out of range 0..60000", req.WaitMS)
		}
		return d.DRDRelocate(req, who)
	},
	"drd.locate": func(d DRDProvider, p json.RawMessage, _ string) (any, error) {
		var req DRDRef
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		if req.Name == "" {
			return nil, fmt.Errorf(`params: "name" (a device name) is required`)
		}
		return d.DRDLocate(req)
	},
}

// DRDList returns the DRD devices.
func (c *Client) DRDList() (DRDList, error) {
	var out DRDList
	err := c.callParams("drd.list", nil, &out)
	return out, err
}

// DRDCreate defines a DRD device.
func (c *Client) DRDCreate(req DRDDefine) (DRDChange, error) {
	var out DRDChange
	err := c.callParams("drd.create", req, &out)
	return out, err
}

// DRDDelete removes a DRD device.
func (c *Client) DRDDelete(name string) (DRDChange, error) {
	var out DRDChange
	err := c.callParams("drd.delete", DRDRef{Name: name}, &out)
	return out, err
}

// DRDRelocate moves a DRD device to another node.
func (c *Client) DRDRelocate(req DRDMove) (DRDChange, error) {
	var out DRDChange
	err := c.callParamsTimeout("drd.relocate", req, &out, callTimeout+time.Duration(req.WaitMS)*time.Millisecond)
	return out, err
}

// DRDLocate returns where a device is served.
func (c *Client) DRDLocate(name string) (DRDLocation, error) {
	var out DRDLocation
	err := c.callParams("drd.locate", DRDRef{Name: name}, &out)
	return out, err
}
