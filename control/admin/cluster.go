package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"vigil/control/clusterdb"
)

// ClusterStatus is this node's view of the cluster: membership, quorum, raft and the
// membership records of the cluster database.
type ClusterStatus struct {
	NodeID uint16 `json:"node_id"`
	Name   string `json:"name"`
	Role   string `json:"role"` // member or witness
	// State is this node's membership state as it sees itself: initing, discovering,
	// building, running, admin-wait, leaving, exited or faulted.
	State      string `json:"state"`
	RaftState  string `json:"raft_state"`
	Term       uint64 `json:"term"`
	Leader     uint16 `json:"leader"` // 0: none known
	LeaderName string `json:"leader_name,omitempty"`
	Quorate    bool   `json:"quorate"`
	// Reason says why the node has no quorum; empty when it has.
	Reason        string         `json:"reason,omitempty"`
	Voters        []uint16       `json:"voters"`
	Reachable     []uint16       `json:"reachable"`
	Applied       uint64         `json:"applied"`
	Commit        uint64         `json:"commit"`
	LastIndex     uint64         `json:"last_index"`
	SnapshotIndex uint64         `json:"snapshot_index"`
	ConfigIndex   uint64         `json:"config_index"` // 0: no configuration applied yet (admin-wait)
	Members       []MemberStatus `json:"members"`
	Error         string         `json:"error,omitempty"`
}

// MemberStatus is a node's membership record in the cluster database.
type MemberStatus struct {
	ID    uint16 `json:"id"`
	Name  string `json:"name"`
	Role  string `json:"role"`
	State string `json:"state"`
	Since uint64 `json:"since"` // index of the entry that set State
	Voter bool   `json:"voter"`
}

// ConfigText is the cluster configuration as cluster.yaml text.
type ConfigText struct {
	YAML  string `json:"yaml"`  // empty when no configuration was applied yet
	Index uint64 `json:"index"` // the entry that applied it
	// Stale is set when the configuration was read from the local copy of a node without
	// quorum; Reason says why.
	Stale  bool   `json:"stale"`
	Reason string `json:"reason,omitempty"`
}

// ConfigRequest carries a configuration file to diff, apply or restore.
type ConfigRequest struct {
	Name string `json:"name"` // the file's name, for error messages
	Data string `json:"data"` // cluster.yaml text, or a backup for restore
	// ExpectIndex makes apply fail unless the current configuration was applied at this
	// index (0: no check).
	ExpectIndex uint64 `json:"expect_index,omitempty"`
}

// ConfigChanges lists what a configuration changes; for apply and restore also where it was
// committed.
type ConfigChanges struct {
	Changes []clusterdb.Change `json:"changes"`
	Index   uint64             `json:"index,omitempty"`
	// Status is "applied", "unchanged" (nothing to change) or, for diff, empty.
	Status string `json:"status,omitempty"`
}

// Backup is a backup of the cluster database (`vigil config backup`).
type Backup struct {
	Data   json.RawMessage `json:"data"` // the database snapshot (clusterdb.State.Snapshot)
	Index  uint64          `json:"index"`
	Stale  bool            `json:"stale"`
	Reason string          `json:"reason,omitempty"`
}

// LogQuery selects events of the cluster event log.
type LogQuery struct {
	Node  int      `json:"node,omitempty"`
	Kinds []string `json:"kinds,omitempty"`
	Since uint64   `json:"since,omitempty"`
	Limit int      `json:"limit,omitempty"`
	// WaitMS, when no event matches, waits up to this long for one (vigil log --follow).
	WaitMS int `json:"wait_ms,omitempty"`
}

// LogResult is a page of the event log.
type LogResult struct {
	Events []clusterdb.Event `json:"events"`
	Last   uint64            `json:"last"` // the database's applied index: Since for the next page
	Stale  bool              `json:"stale"`
	Reason string            `json:"reason,omitempty"`
}

// NodeChange adds or removes a cluster member.
type NodeChange struct {
	ID     int    `json:"id"`
	Name   string `json:"name,omitempty"` // add: the name in cluster.yaml
	Role   string `json:"role,omitempty"` // add: member (default) or witness
	Reason string `json:"reason,omitempty"`
}

// NodeChangeResult says where a membership change was committed.
type NodeChangeResult struct {
	Index uint64 `json:"index"`
}

// ClusterProvider is implemented by a daemon that runs the cluster database. who names the
// caller for the event log (the user behind the admin socket).
type ClusterProvider interface {
	ClusterStatus() ClusterStatus
	ConfigShow(linearizable bool) (ConfigText, error)
	ConfigDiff(req ConfigRequest) (ConfigChanges, error)
	ConfigApply(req ConfigRequest, who string) (ConfigChanges, error)
	ConfigBackup() (Backup, error)
	ConfigRestore(req ConfigRequest, who string) (ConfigChanges, error)
	EventLog(q LogQuery) (LogResult, error)
	NodeAdd(req NodeChange, who string) (NodeChangeResult, error)
	NodeRemove(req NodeChange, who string) (NodeChangeResult, error)
}

// errNoCluster answers cluster methods on a daemon without a cluster database.
var errNoCluster = errors.New("this vigild runs no cluster database")

// clusterMethods are the methods that take params and may take a while (they wait for a
// commit); they are answered by a ClusterProvider.
var clusterMethods = map[string]func(c ClusterProvider, params json.RawMessage, who string) (any, error){
	"cluster": func(c ClusterProvider, p json.RawMessage, _ string) (any, error) {
		if err := noParams(p); err != nil {
			return nil, err
		}
		return c.ClusterStatus(), nil
	},
	"config.show": func(c ClusterProvider, p json.RawMessage, _ string) (any, error) {
		var req struct {
			Linearizable bool `json:"linearizable"`
		}
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.ConfigShow(req.Linearizable)
	},
	"config.diff": func(c ClusterProvider, p json.RawMessage, _ string) (any, error) {
		var req ConfigRequest
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.ConfigDiff(req)
	},
	"config.apply": func(c ClusterProvider, p json.RawMessage, who string) (any, error) {
		var req ConfigRequest
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.ConfigApply(req, who)
	},
	"config.backup": func(c ClusterProvider, p json.RawMessage, _ string) (any, error) {
		if err := noParams(p); err != nil {
			return nil, err
		}
		return c.ConfigBackup()
	},
	"config.restore": func(c ClusterProvider, p json.RawMessage, who string) (any, error) {
		var req ConfigRequest
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.ConfigRestore(req, who)
	},
	"log": func(c ClusterProvider, p json.RawMessage, _ string) (any, error) {
		var q LogQuery
		if err := decodeParams(p, &q); err != nil {
			return nil, err
		}
		if q.WaitMS < 0 || q.WaitMS > 60_000 {
			return nil, fmt.Errorf("wait_ms %d out of range 0..60000", q.WaitMS)
		}
		return c.EventLog(q)
	},
	"node.add": func(c ClusterProvider, p json.RawMessage, who string) (any, error) {
		var req NodeChange
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.NodeAdd(req, who)
	},
	"node.remove": func(c ClusterProvider, p json.RawMessage, who string) (any, error) {
		var req NodeChange
		if err := decodeParams(p, &req); err != nil {
			return nil, err
		}
		return c.NodeRemove(req, who)
	},
}

// decodeParams decodes params strictly into v: an object, no unknown fields.
func decodeParams(raw json.RawMessage, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("params: %v", err)
	}
	return nil
}

// ClusterStatus returns the node's view of the cluster.
func (c *Client) ClusterStatus() (ClusterStatus, error) {
	var s ClusterStatus
	err := c.callParams("cluster", nil, &s)
	return s, err
}

// ConfigShow returns the cluster configuration; linearizable asks the leader first, so that
// the answer holds every change committed before the call (and fails without quorum).
func (c *Client) ConfigShow(linearizable bool) (ConfigText, error) {
	var out ConfigText
	err := c.callParams("config.show", map[string]bool{"linearizable": linearizable}, &out)
	return out, err
}

// ConfigDiff returns what applying the file would change.
func (c *Client) ConfigDiff(req ConfigRequest) (ConfigChanges, error) {
	var out ConfigChanges
	err := c.callParams("config.diff", req, &out)
	return out, err
}

// ConfigApply validates and commits a configuration as one change.
func (c *Client) ConfigApply(req ConfigRequest) (ConfigChanges, error) {
	var out ConfigChanges
	err := c.callParams("config.apply", req, &out)
	return out, err
}

// ConfigBackup returns a backup of the cluster database.
func (c *Client) ConfigBackup() (Backup, error) {
	var out Backup
	err := c.callParams("config.backup", nil, &out)
	return out, err
}

// ConfigRestore commits the configuration held in a backup.
func (c *Client) ConfigRestore(req ConfigRequest) (ConfigChanges, error) {
	var out ConfigChanges
	err := c.callParams("config.restore", req, &out)
	return out, err
}

// EventLog returns events of the cluster event log.
func (c *Client) EventLog(q LogQuery) (LogResult, error) {
	var out LogResult
	err := c.callParamsTimeout("log", q, &out, callTimeout+time.Duration(q.WaitMS)*time.Millisecond)
	return out, err
}

// NodeAdd adds a member to the cluster.
func (c *Client) NodeAdd(req NodeChange) (NodeChangeResult, error) {
	var out NodeChangeResult
	err := c.callParams("node.add", req, &out)
	return out, err
}

// NodeRemove removes a member from the cluster.
func (c *Client) NodeRemove(req NodeChange) (NodeChangeResult, error) {
	var out NodeChangeResult
	err := c.callParams("node.remove", req, &out)
	return out, err
}
