package clusterdb

import (
	"errors"
	"fmt"
	"slices"
)

// Limits on the text a command carries into the event log.
const (
	maxWhoLen  = 256
	maxWhatLen = 1024
)

// Status is the outcome of Apply for one entry.
type Status int

// The outcomes.
const (
	// StatusApplied: the command changed the state and logged an event.
	StatusApplied Status = iota + 1
	// StatusUnchanged: the command was valid but there was nothing to change (the same
	// configuration again, a node already in the state); no event.
	StatusUnchanged
	// StatusRejected: the entry is malformed, of an unknown type, or not allowed; nothing but
	// AppliedIndex changed. Result.Err says why; the driver reports it to the proposer.
	StatusRejected
	// StatusSkipped: the index was applied before (replay after a restart); nothing changed.
	StatusSkipped
	// StatusNeedsUpgrade: the entry was written by a newer build. Nothing changed, not even
	// AppliedIndex, and Apply refuses this and every later index from now on. The driver must
	// stop applying and report that this node must be upgraded; see the package doc.
	StatusNeedsUpgrade
)

func (s Status) String() string {
	switch s {
	case StatusApplied:
		return "applied"
	case StatusUnchanged:
		return "unchanged"
	case StatusRejected:
		return "rejected"
	case StatusSkipped:
		return "skipped"
	case StatusNeedsUpgrade:
		return "needs-upgrade"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is what Apply did with one entry.
type Result struct {
	Index  uint64
	Status Status
	// Type is the command's type, when it could be decoded.
	Type CommandType
	// Err says why an entry was rejected or needs an upgrade; nil otherwise. It wraps one of
	// ErrMalformed, ErrUnknownCommand, ErrRejected, ErrConflict or ErrNeedsUpgrade.
	Err error
	// Changes are the configuration changes an ApplyConfig made.
	Changes []Change
	// Event is the event the command logged, when Status is StatusApplied.
	Event *Event
}

// OK reports whether the command took effect or had nothing to do.
func (r Result) OK() bool { return r.Status == StatusApplied || r.Status == StatusUnchanged }

func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("entry %d: %s: %v", r.Index, r.Status, r.Err)
	}
	return fmt.Sprintf("entry %d: %s %s", r.Index, r.Type, r.Status)
}

// Apply executes the command in data, the Data of the committed raft entry at index. It is a
// pure function of the State, index and data: it reads no clock and does no I/O, so every node
// that applies the same entries in the same order reaches the same State. It never panics.
//
//   - An index at or below AppliedIndex is skipped (StatusSkipped), so replaying the log after
//     a restart or a Restore is harmless. Indexes may have gaps (raft's own entries).
//   - A malformed entry, an unknown command type or a command the state does not allow is
//     rejected (StatusRejected): the State is unchanged except that AppliedIndex moves to
//     index. No event is logged.
//   - An entry of a newer command or configuration version is not applied at all
//     (StatusNeedsUpgrade): AppliedIndex stays, and this State refuses the entry and every
//     later one until the process is replaced by a build that understands it. Applying
//     around it would let this node diverge from the upgraded ones.
//   - Otherwise the command takes effect (StatusApplied) and logs one event with the index,
//     or had nothing to change (StatusUnchanged); AppliedIndex moves to index either way.
func (s *State) Apply(index uint64, data []byte) Result {
	if s.SchemaVersion == 0 {
		s.SchemaVersion = SchemaVersion
	}
	res := Result{Index: index}
	if index <= s.AppliedIndex {
		res.Status = StatusSkipped
		return res
	}
	if s.upgradeAt != 0 && index >= s.upgradeAt {
		res.Status = StatusNeedsUpgrade
		res.Err = fmt.Errorf("%w to apply entry %d; not applying entry %d", ErrNeedsUpgrade, s.upgradeAt, index)
		return res
	}
	cmd, err := DecodeCommand(data)
	if err != nil {
		if errors.Is(err, ErrNeedsUpgrade) {
			s.upgradeAt = index
			res.Status = StatusNeedsUpgrade
			res.Err = fmt.Errorf("entry %d: %w", index, err)
			return res
		}
		s.AppliedIndex = index
		res.Status = StatusRejected
		res.Err = err
		return res
	}
	res.Type = cmd.Type
	ch, err := s.plan(index, cmd)
	switch {
	case errors.Is(err, ErrNeedsUpgrade):
		s.upgradeAt = index
		res.Status = StatusNeedsUpgrade
		res.Err = fmt.Errorf("entry %d: %w", index, err)
		return res
	case err != nil:
		s.AppliedIndex = index
		res.Status = StatusRejected
		res.Err = err
		return res
	}
	s.AppliedIndex = index
	res.Changes = ch.changes
	if ch.commit == nil {
		res.Status = StatusUnchanged
		return res
	}
	ch.commit()
	ev := Event{Index: index, Time: cmd.At, Kind: ch.kind, Node: ch.node, Who: cmd.Who, What: ch.what}
	s.Log.append(ev)
	res.Status = StatusApplied
	res.Event = &ev
	return res
}

// change is what a command will do: commit changes the State (nil when there is nothing to
// change); kind, node and what describe the event it logs.
type change struct {
	commit  func()
	kind    EventKind
	node    int
	what    string
	changes []Change
}

func rejectf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRejected, fmt.Sprintf(format, args...))
}

// plan checks a command against the State and works out its effect without changing anything.
func (s *State) plan(index uint64, cmd Command) (change, error) {
	switch {
	case cmd.Who == "":
		return change{}, rejectf("no proposer (who)")
	case len(cmd.Who) > maxWhoLen:
		return change{}, rejectf("who is %d bytes long, at most %d are allowed", len(cmd.Who), maxWhoLen)
	case checkText(cmd.Who) != "":
		return change{}, rejectf("who: %s", checkText(cmd.Who))
	}
	switch p := cmd.Payload.(type) {
	case *ApplyConfig:
		return s.planConfig(index, p)
	case *NodeJoin:
		return s.planJoin(index, p)
	case *NodeLeave:
		return s.planLeave(p)
	case *SetNodeState:
		return s.planNodeState(index, p)
	case *RecordEvent:
		return s.planEvent(p)
	case *DRDPlace:
		return s.planDRDPlace(index, p)
	case *DRDReleased:
		return s.planDRDReleased(p)
	}
	return change{}, fmt.Errorf("%w %q", ErrUnknownCommand, cmd.Type)
}

func (s *State) planConfig(index uint64, p *ApplyConfig) (change, error) {
	c := p.Config
	if c == nil {
		return change{}, rejectf("apply-config without a configuration")
	}
	if c.Version > ConfigVersion {
		return change{}, fmt.Errorf("%w: configuration version %d is newer than this build (%d)",
			ErrNeedsUpgrade, c.Version, ConfigVersion)
	}
	if err := c.Validate(); err != nil {
		return change{}, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if p.ExpectIndex != 0 && p.ExpectIndex != s.ConfigIndex {
		return change{}, fmt.Errorf("%w: the configuration was applied at entry %d, not %d; diff and apply again",
			ErrConflict, s.ConfigIndex, p.ExpectIndex)
	}
	for _, m := range s.Members {
		if msg := checkMember(m, c); msg != "" {
			return change{}, rejectf("%s; node %d is %s: remove it from the cluster first (vigil node remove)",
				msg, m.ID, m.State)
		}
	}
	changes := Diff(s.Config, c)
	if len(changes) == 0 {
		return change{}, nil
	}
	what := fmt.Sprintf("configuration applied, %d %s: ", len(changes), plural(len(changes), "change", "changes"))
	for i, ch := range changes {
		line := ch.String()
		if i > 0 {
			line = "; " + line
		}
		if len(what)+len(line) > maxWhatLen-32 {
			what += fmt.Sprintf("; and %d more", len(changes)-i)
			break
		}
		what += line
	}
	return change{
		kind:    EventConfig,
		what:    what,
		changes: changes,
		commit: func() {
			s.Config = c
			s.ConfigIndex = index
			s.prune()
		},
	}, nil
}

// prune drops the runtime entries that refer to groups, resources or nodes the configuration
// no longer has.
func (s *State) prune() {
	s.Groups = slices.DeleteFunc(s.Groups, func(g GroupState) bool { return s.checkRuntimeRef(g.Group, "", g.Node) != "" })
	s.Resources = slices.DeleteFunc(s.Resources, func(r ResourceState) bool {
		return s.checkRuntimeRef(r.Group, r.Resource, r.Node) != ""
	})
	s.Faults = slices.DeleteFunc(s.Faults, func(f Fault) bool { return s.checkRuntimeRef(f.Group, f.Resource, f.Node) != "" })
	s.Freezes = slices.DeleteFunc(s.Freezes, func(f Freeze) bool { return s.checkRuntimeRef(f.Group, "", 0) != "" })
	s.pruneDRD()
}

func (s *State) planJoin(index uint64, p *NodeJoin) (change, error) {
	m := Member{ID: p.ID, Name: p.Name, Role: p.Role, State: NodeIniting, Since: index}
	if msg := checkMember(m, s.Config); msg != "" {
		return change{}, rejectf("node-join: %s", msg)
	}
	for _, other := range s.Members {
		if other.ID != p.ID && other.Name == p.Name {
			return change{}, rejectf("node-join: the name %s is taken by node %d (%s)", p.Name, other.ID, other.State)
		}
	}
	i, found := s.memberIndex(p.ID)
	if found {
		if st := s.Members[i].State; st != NodeExited && st != NodeFaulted {
			return change{}, rejectf("node-join: node %d (%s) is already a member (%s)", p.ID, s.Members[i].Name, st)
		}
	}
	return change{
		kind: EventNodeJoin,
		node: p.ID,
		what: fmt.Sprintf("node %d (%s) joined as %s", p.ID, p.Name, p.Role),
		commit: func() {
			if found {
				s.Members[i] = m
			} else {
				s.Members = slices.Insert(s.Members, i, m)
			}
		},
	}, nil
}

func (s *State) planLeave(p *NodeLeave) (change, error) {
	i, ok := s.memberIndex(p.ID)
	if !ok {
		return change{}, rejectf("node-leave: node %d is not a member", p.ID)
	}
	if msg := checkText(p.Reason); msg != "" || len(p.Reason) > maxWhatLen/2 {
		return change{}, rejectf("node-leave: reason: %s", orElse(msg, "too long"))
	}
	m := s.Members[i]
	return change{
		kind:   EventNodeLeave,
		node:   p.ID,
		what:   withReason(fmt.Sprintf("node %d (%s) left the cluster", m.ID, m.Name), p.Reason),
		commit: func() { s.Members = slices.Delete(s.Members, i, i+1) },
	}, nil
}

func (s *State) planNodeState(index uint64, p *SetNodeState) (change, error) {
	i, ok := s.memberIndex(p.ID)
	if !ok {
		return change{}, rejectf("set-node-state: node %d is not a member", p.ID)
	}
	if msg := checkText(p.Reason); msg != "" || len(p.Reason) > maxWhatLen/2 {
		return change{}, rejectf("set-node-state: reason: %s", orElse(msg, "too long"))
	}
	m := s.Members[i]
	switch {
	case !slices.Contains(nodeStates, p.State):
		return change{}, rejectf("set-node-state: %q is not a node state", p.State)
	case p.State == m.State:
		return change{}, nil
	case m.State == NodeExited:
		return change{}, rejectf("set-node-state: node %d (%s) has exited; it must join again", m.ID, m.Name)
	case p.State == NodeRunning && s.Config == nil:
		return change{}, rejectf("set-node-state: node %d (%s) cannot run without a valid configuration; it belongs in %s",
			m.ID, m.Name, NodeAdminWait)
	}
	return change{
		kind: EventNodeState,
		node: p.ID,
		what: withReason(fmt.Sprintf("node %d (%s): %s -> %s", m.ID, m.Name, m.State, p.State), p.Reason),
		commit: func() {
			s.Members[i].State = p.State
			s.Members[i].Since = index
		},
	}, nil
}

func (s *State) planEvent(p *RecordEvent) (change, error) {
	switch {
	case !slices.Contains(recordableKinds, p.Kind):
		kinds := make([]string, len(recordableKinds))
		for i, k := range recordableKinds {
			kinds[i] = string(k)
		}
		return change{}, rejectf("record-event: %q is not a kind of event to record (%s)", p.Kind, orList(kinds))
	case p.Node < 0 || p.Node > MaxNodeID:
		return change{}, rejectf("record-event: %d is not a valid node id", p.Node)
	case p.What == "":
		return change{}, rejectf("record-event: no text (what)")
	case len(p.What) > maxWhatLen:
		return change{}, rejectf("record-event: text is %d bytes long, at most %d are allowed", len(p.What), maxWhatLen)
	case checkText(p.What) != "":
		return change{}, rejectf("record-event: %s", checkText(p.What))
	}
	return change{kind: p.Kind, node: p.Node, what: p.What, commit: func() {}}, nil
}

func withReason(what, reason string) string {
	if reason == "" {
		return what
	}
	return what + ": " + reason
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
