package clusterdb

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// SchemaVersion is the version of the State's layout, written into every snapshot. A snapshot of
// an older version is migrated on Restore; one of a newer version needs a newer build.
const SchemaVersion = 2

// MaxEvents is how many entries the event log keeps; older ones are dropped.
const MaxEvents = 10000

// State is the cluster database: the replicated state machine that raft drives. It changes only
// through Apply (and Restore), so every node that applies the same entries holds the same State,
// byte for byte in its Snapshot. Read it freely between calls; do not change it.
type State struct {
	SchemaVersion int
	// AppliedIndex is the index of the last log entry Apply consumed, accepted or rejected.
	AppliedIndex uint64
	// Config is the cluster configuration; nil until the first ApplyConfig. Apply admits only
	// valid configurations, so a non-nil Config is a valid one.
	Config *Config
	// ConfigIndex is the index of the entry that applied Config; 0 while there is none.
	ConfigIndex uint64
	// Members are the nodes that have joined the cluster, by ascending id.
	Members []Member
	// Runtime sections, filled by later commands (group placement, agents, faults, freezes).
	// Each refers to groups, resources and nodes of Config; an ApplyConfig that removes those
	// removes the entries too.
	Groups    []GroupState
	Resources []ResourceState
	Faults    []Fault
	Freezes   []Freeze
	// DRDPlacements are where the DRD devices of Config are served, by device name (drd.go;
	// schema version 2).
	DRDPlacements []DRDPlacement
	// Log is the cluster event log.
	Log EventLog

	// upgradeAt is the index of an entry this build could not understand; Apply refuses it and
	// every later entry. It is local to this process and never part of a snapshot.
	upgradeAt uint64
}

// New returns an empty State: no configuration, no members, an empty log.
func New() *State { return &State{SchemaVersion: SchemaVersion} }

// HasValidConfig reports whether the cluster has a valid configuration. Until it has, nodes
// belong in the admin-wait state (VCS ADMIN_WAIT): they may join, but host nothing.
func (s *State) HasValidConfig() bool { return s.Config != nil }

// Member returns the membership record of the node with the id.
func (s *State) Member(id int) (Member, bool) {
	i, ok := s.memberIndex(id)
	if !ok {
		return Member{}, false
	}
	return s.Members[i], true
}

func (s *State) memberIndex(id int) (int, bool) {
	return slices.BinarySearchFunc(s.Members, id, func(m Member, id int) int { return m.ID - id })
}

// Member is the membership record of a node that joined the cluster.
type Member struct {
	ID    int       `json:"id"`
	Name  string    `json:"name"`
	Role  Role      `json:"role"`
	State NodeState `json:"state"`
	// Since is the index of the entry that put the node in State.
	Since uint64 `json:"since"`
}

// NodeState is a node's state in the cluster, after the VCS system states.
type NodeState string

// The node states.
const (
	NodeIniting     NodeState = "initing"     // joined; the first state of every node
	NodeDiscovering NodeState = "discovering" // waiting for the others to learn how to build
	NodeBuilding    NodeState = "building"    // building its copy of the database, from disk or a peer
	NodeRunning     NodeState = "running"     // up to date and taking part
	NodeAdminWait   NodeState = "admin-wait"  // no valid configuration exists: hosts nothing
	NodeLeaving     NodeState = "leaving"     // stopping its groups to leave gracefully
	NodeExited      NodeState = "exited"      // left; must join again to take part
	NodeFaulted     NodeState = "faulted"     // left unexpectedly (crash, cut off)
)

var nodeStates = []NodeState{NodeIniting, NodeDiscovering, NodeBuilding, NodeRunning, NodeAdminWait,
	NodeLeaving, NodeExited, NodeFaulted}

// GroupState is the state of a service group on one node.
type GroupState struct {
	Group string      `json:"group"`
	Node  int         `json:"node"`
	State GroupStatus `json:"state"`
	Since uint64      `json:"since"` // index of the entry that set State
}

// GroupStatus is a group's state on a node.
type GroupStatus string

// The group states.
const (
	GroupOffline  GroupStatus = "offline"
	GroupStarting GroupStatus = "starting"
	GroupOnline   GroupStatus = "online"
	GroupPartial  GroupStatus = "partial" // some resources online
	GroupStopping GroupStatus = "stopping"
	GroupFaulted  GroupStatus = "faulted"
)

var groupStatuses = []GroupStatus{GroupOffline, GroupStarting, GroupOnline, GroupPartial, GroupStopping, GroupFaulted}

// ResourceState is the state of a resource on one node.
type ResourceState struct {
	Group    string         `json:"group"`
	Resource string         `json:"resource"`
	Node     int            `json:"node"`
	State    ResourceStatus `json:"state"`
	Since    uint64         `json:"since"`
}

// ResourceStatus is a resource's state on a node.
type ResourceStatus string

// The resource states.
const (
	ResourceOffline  ResourceStatus = "offline"
	ResourceStarting ResourceStatus = "starting"
	ResourceOnline   ResourceStatus = "online"
	ResourceStopping ResourceStatus = "stopping"
	ResourceFaulted  ResourceStatus = "faulted"
	ResourceUnknown  ResourceStatus = "unknown"
)

var resourceStatuses = []ResourceStatus{ResourceOffline, ResourceStarting, ResourceOnline,
	ResourceStopping, ResourceFaulted, ResourceUnknown}

// Fault is a resource fault on a node that has not been cleared.
type Fault struct {
	Group    string    `json:"group"`
	Resource string    `json:"resource"`
	Node     int       `json:"node"`
	Index    uint64    `json:"index"` // the entry that recorded it
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`
}

// Freeze keeps a group where it is: no failover, no switch, no autostart. A persistent freeze
// survives the restart of the whole cluster; a temporary one ends when the cluster stops.
type Freeze struct {
	Group      string    `json:"group"`
	Persistent bool      `json:"persistent"`
	By         string    `json:"by"`
	At         time.Time `json:"at"`
}

// EventKind classifies event log entries.
type EventKind string

// The event kinds. Apply writes the first four for the commands that change membership and
// configuration; the others come in through RecordEvent.
const (
	EventNodeJoin  EventKind = "node-join"
	EventNodeLeave EventKind = "node-leave"
	EventNodeState EventKind = "node-state"
	EventConfig    EventKind = "config"
	EventQuorum    EventKind = "quorum" // quorum gained or lost
	EventLeader    EventKind = "leader" // raft leader changed
	EventFault     EventKind = "fault"  // a node, link or resource failed
	EventLink      EventKind = "link"   // a private link went down or up
	EventNote      EventKind = "note"   // anything an administrator wants on record
	EventDRD       EventKind = "drd"    // a DRD device placed, moved or released
)

// recordableKinds are the kinds RecordEvent accepts; the others are Apply's own.
var recordableKinds = []EventKind{EventQuorum, EventLeader, EventFault, EventLink, EventNote}

var eventKinds = append([]EventKind{EventNodeJoin, EventNodeLeave, EventNodeState, EventConfig, EventDRD}, recordableKinds...)

// Event is one entry of the event log.
type Event struct {
	Index uint64    `json:"index"` // the log entry that made it; unique and increasing
	Time  time.Time `json:"time"`  // Command.At of that entry, in UTC
	Kind  EventKind `json:"kind"`
	Node  int       `json:"node,omitempty"` // the node it is about; 0 for the cluster
	Who   string    `json:"who"`            // who proposed it: a user, or vigild@node
	What  string    `json:"what"`           // what happened, for people
}

// String writes the event on one line.
func (e Event) String() string {
	node := ""
	if e.Node != 0 {
		node = fmt.Sprintf(" node %d", e.Node)
	}
	return fmt.Sprintf("%d %s %s%s %s: %s", e.Index, e.Time.UTC().Format(time.RFC3339Nano), e.Kind, node, e.Who, e.What)
}

// EventLog is a ring of the last MaxEvents events.
type EventLog struct {
	ring  []Event // grows to MaxEvents, then wraps
	start int     // index in ring of the oldest event once it has wrapped
}

// Len returns the number of events kept.
func (l *EventLog) Len() int { return len(l.ring) }

// Events returns the events kept, oldest first.
func (l *EventLog) Events() []Event {
	out := make([]Event, 0, len(l.ring))
	out = append(out, l.ring[l.start:]...)
	return append(out, l.ring[:l.start]...)
}

// EventQuery selects events of the log. Zero fields select everything.
type EventQuery struct {
	Node  int         // only events about this node
	Kinds []EventKind // only events of these kinds
	Since uint64      // only events with a greater Index (to follow the log)
	Limit int         // at most this many, the newest
}

// Query returns the events that match q, oldest first.
func (l *EventLog) Query(q EventQuery) []Event {
	var out []Event
	for _, e := range l.Events() {
		if e.Index <= q.Since || q.Node != 0 && e.Node != q.Node ||
			len(q.Kinds) > 0 && !slices.Contains(q.Kinds, e.Kind) {
			continue
		}
		out = append(out, e)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out
}

func (l *EventLog) append(e Event) {
	if len(l.ring) < MaxEvents {
		l.ring = append(l.ring, e)
		return
	}
	l.ring[l.start] = e
	l.start = (l.start + 1) % len(l.ring)
}

// last returns the newest event.
func (l *EventLog) last() (Event, bool) {
	if len(l.ring) == 0 {
		return Event{}, false
	}
	return l.ring[(l.start+len(l.ring)-1)%len(l.ring)], true
}

// View is a read of the cluster database for the admin API and the CLI: a copy of the local
// State, owned by the reader, with a mark saying whether it can be trusted to be current.
//
// The driver marks a view Stale when this node is not in a quorate partition (it cannot reach a
// raft majority, so changes may have been committed elsewhere) or has not yet applied what the
// leader committed; Reason then says why for people ("no quorum: 1 of 3 voters reachable").
// Stale reads are still served, so that an operator can see what a cut-off node believes, but
// tools must show the mark, and nothing may decide on them.
type View struct {
	*State
	Stale  bool
	Reason string
}

// View returns a copy of s marked as stale or not; see View.
func (s *State) View(stale bool, reason string) View {
	return View{State: s.Clone(), Stale: stale, Reason: reason}
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := *s
	c.Config = s.Config.Clone()
	c.Members = slices.Clone(s.Members)
	c.Groups = slices.Clone(s.Groups)
	c.Resources = slices.Clone(s.Resources)
	c.Faults = slices.Clone(s.Faults)
	c.Freezes = slices.Clone(s.Freezes)
	c.DRDPlacements = slices.Clone(s.DRDPlacements)
	c.Log = EventLog{ring: slices.Clone(s.Log.ring), start: s.Log.start}
	return &c
}

// Clone returns a deep copy of c; nil for nil.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := *c
	out.Nodes = slices.Clone(c.Nodes)
	out.ResourceTypes = slices.Clone(c.ResourceTypes)
	for i := range out.ResourceTypes {
		out.ResourceTypes[i].Parameters = slices.Clone(out.ResourceTypes[i].Parameters)
	}
	out.Groups = slices.Clone(c.Groups)
	for i := range out.Groups {
		g := &out.Groups[i]
		g.Nodes = slices.Clone(g.Nodes)
		g.Resources = slices.Clone(g.Resources)
		for j := range g.Resources {
			r := &g.Resources[j]
			if r.Params != nil {
				params := make(map[string]string, len(r.Params))
				for k, v := range r.Params {
					params[k] = v
				}
				r.Params = params
			}
			r.Requires = slices.Clone(r.Requires)
		}
	}
	out.DRDDevices = slices.Clone(c.DRDDevices)
	for i := range out.DRDDevices {
		out.DRDDevices[i].Nodes = slices.Clone(out.DRDDevices[i].Nodes)
	}
	out.Users = slices.Clone(c.Users)
	return &out
}

// errCorrupt is wrapped by the errors of checkInvariants.
var errCorrupt = errors.New("inconsistent cluster database")

// checkInvariants checks what Apply keeps true of a State; Restore refuses a snapshot that
// breaks it, and tests check it after every command.
func (s *State) checkInvariants() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errCorrupt, fmt.Sprintf(format, args...))
	}
	if s.SchemaVersion != SchemaVersion {
		return fail("schema version %d, want %d", s.SchemaVersion, SchemaVersion)
	}
	if s.Config != nil {
		if err := s.Config.Validate(); err != nil {
			return fail("%v", err)
		}
		if s.ConfigIndex == 0 || s.ConfigIndex > s.AppliedIndex {
			return fail("config index %d with applied index %d", s.ConfigIndex, s.AppliedIndex)
		}
	} else if s.ConfigIndex != 0 {
		return fail("config index %d without a configuration", s.ConfigIndex)
	}
	names := make(map[string]int, len(s.Members))
	for i, m := range s.Members {
		if i > 0 && s.Members[i-1].ID >= m.ID {
			return fail("members not in ascending id order at node %d", m.ID)
		}
		if msg := checkMember(m, s.Config); msg != "" {
			return fail("member %d: %s", m.ID, msg)
		}
		if other, dup := names[m.Name]; dup {
			return fail("members %d and %d are both named %q", other, m.ID, m.Name)
		}
		names[m.Name] = m.ID
		if m.Since == 0 || m.Since > s.AppliedIndex {
			return fail("member %d: since %d with applied index %d", m.ID, m.Since, s.AppliedIndex)
		}
	}
	for _, g := range s.Groups {
		if msg := s.checkRuntimeRef(g.Group, "", g.Node); msg != "" || !slices.Contains(groupStatuses, g.State) {
			return fail("group state %+v: %s", g, msg)
		}
	}
	for _, r := range s.Resources {
		if msg := s.checkRuntimeRef(r.Group, r.Resource, r.Node); msg != "" || !slices.Contains(resourceStatuses, r.State) {
			return fail("resource state %+v: %s", r, msg)
		}
	}
	for _, f := range s.Faults {
		if msg := s.checkRuntimeRef(f.Group, f.Resource, f.Node); msg != "" {
			return fail("fault %+v: %s", f, msg)
		}
	}
	for _, f := range s.Freezes {
		if msg := s.checkRuntimeRef(f.Group, "", 0); msg != "" {
			return fail("freeze %+v: %s", f, msg)
		}
	}
	if s.Config == nil && len(s.DRDPlacements) > 0 {
		return fail("drd placements without a configuration")
	}
	if s.Config != nil {
		if msg := s.checkDRD(); msg != "" {
			return fail("%s", msg)
		}
	}
	if len(s.Log.ring) > MaxEvents || s.Log.start < 0 || s.Log.start >= max(len(s.Log.ring), 1) {
		return fail("event log of %d events starting at %d", len(s.Log.ring), s.Log.start)
	}
	var prev uint64
	for _, e := range s.Log.Events() {
		if e.Index <= prev || e.Index > s.AppliedIndex {
			return fail("event index %d after %d, applied index %d", e.Index, prev, s.AppliedIndex)
		}
		if !slices.Contains(eventKinds, e.Kind) {
			return fail("event %d of unknown kind %q", e.Index, e.Kind)
		}
		prev = e.Index
	}
	return nil
}

// checkMember checks a membership record against the configuration, if there is one: a node
// that has not exited must be configured with the same name and role.
func checkMember(m Member, c *Config) string {
	switch {
	case m.ID < 1 || m.ID > MaxNodeID:
		return fmt.Sprintf("%d is not a valid node id", m.ID)
	case !validNodeName(m.Name):
		return fmt.Sprintf("%q is not a valid node name", m.Name)
	case m.Role != RoleMember && m.Role != RoleWitness:
		return fmt.Sprintf("%q is not a role", m.Role)
	case !slices.Contains(nodeStates, m.State):
		return fmt.Sprintf("%q is not a node state", m.State)
	case m.State == NodeRunning && c == nil:
		return "running without a configuration"
	}
	if c == nil || m.State == NodeExited {
		return ""
	}
	n, ok := c.NodeByID(m.ID)
	switch {
	case !ok:
		return fmt.Sprintf("node %d (%s) is not in the configuration", m.ID, m.Name)
	case n.Name != m.Name:
		return fmt.Sprintf("node %d is %s in the configuration, not %s", m.ID, n.Name, m.Name)
	case n.Role != m.Role:
		return fmt.Sprintf("node %d (%s) is a %s in the configuration, not a %s", m.ID, m.Name, n.Role, m.Role)
	}
	return ""
}

// checkRuntimeRef checks that a runtime entry names a configured group, resource (if not "")
// and node (if not 0).
func (s *State) checkRuntimeRef(group, resource string, node int) string {
	if s.Config == nil {
		return "no configuration"
	}
	g, ok := s.Config.Group(group)
	if !ok {
		return fmt.Sprintf("unknown group %q", group)
	}
	if resource != "" {
		if _, ok := g.Resource(resource); !ok {
			return fmt.Sprintf("unknown resource %q", resource)
		}
	}
	if node != 0 {
		if _, ok := s.Config.NodeByID(node); !ok {
			return fmt.Sprintf("unknown node %d", node)
		}
	}
	return ""
}

// EventKinds returns every kind of event the log holds.
func EventKinds() []EventKind { return slices.Clone(eventKinds) }
