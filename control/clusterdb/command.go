package clusterdb

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// CommandVersion is the version of the command encoding this build writes and understands.
// Any change to the envelope, to a payload, or a new command type, raises it: an older build
// must see a higher version and stop (see Apply) rather than reject or misread the entry while
// newer nodes apply it.
const CommandVersion = 2

// CommandType names a command on the wire.
type CommandType string

// The command types.
const (
	TypeApplyConfig  CommandType = "apply-config"
	TypeNodeJoin     CommandType = "node-join"
	TypeNodeLeave    CommandType = "node-leave"
	TypeSetNodeState CommandType = "set-node-state"
	TypeRecordEvent  CommandType = "record-event"
	// Version 2: DRD placement (drd.go), and the size of DRD devices in the configuration.
	TypeDRDPlace    CommandType = "drd-place"
	TypeDRDReleased CommandType = "drd-released"
)

// Command is a change to the cluster database, proposed to raft as the Data of a log entry
// (see Encode) and executed by Apply on every node.
type Command struct {
	// Version is the encoding version; Encode writes CommandVersion when it is 0.
	Version int
	// Type names the payload; Encode fills it in when it is empty.
	Type CommandType
	// At is when the proposer made the command. It is the time of the event the command logs:
	// Apply never reads a clock.
	At time.Time
	// Who made the command: a user name, or "vigild@NODE" for the daemon.
	Who     string
	Payload Payload
}

// Payload is the typed body of a Command: *ApplyConfig, *NodeJoin, *NodeLeave, *SetNodeState,
// *RecordEvent, *DRDPlace or *DRDReleased.
type Payload interface {
	commandType() CommandType
}

// ApplyConfig replaces the cluster configuration, as one change or not at all.
type ApplyConfig struct {
	Config *Config `json:"config"`
	// ExpectIndex, when not 0, makes the command fail unless the current configuration was
	// applied by the entry at this index (State.ConfigIndex): a compare-and-swap that keeps
	// two administrators from overwriting each other's edits.
	ExpectIndex uint64 `json:"expect_index,omitempty"`
}

// NodeJoin records that a node joined the cluster (a raft configuration change added it), or
// joined again after it exited or faulted. The node enters the initing state.
type NodeJoin struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// NodeLeave records that a node was removed from the cluster; its membership record goes.
type NodeLeave struct {
	ID     int    `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// SetNodeState moves a member to another state.
type SetNodeState struct {
	ID     int       `json:"id"`
	State  NodeState `json:"state"`
	Reason string    `json:"reason,omitempty"`
}

// RecordEvent writes an event to the log and changes nothing else: quorum gained or lost,
// leader changes, faults, link changes, notes. Kind is one of EventQuorum, EventLeader,
// EventFault, EventLink or EventNote.
type RecordEvent struct {
	Kind EventKind `json:"kind"`
	Node int       `json:"node,omitempty"`
	What string    `json:"what"`
}

func (*ApplyConfig) commandType() CommandType  { return TypeApplyConfig }
func (*NodeJoin) commandType() CommandType     { return TypeNodeJoin }
func (*NodeLeave) commandType() CommandType    { return TypeNodeLeave }
func (*SetNodeState) commandType() CommandType { return TypeSetNodeState }
func (*RecordEvent) commandType() CommandType  { return TypeRecordEvent }

// newPayload returns an empty payload of type t.
func newPayload(t CommandType) (Payload, bool) {
	switch t {
	case TypeApplyConfig:
		return &ApplyConfig{}, true
	case TypeNodeJoin:
		return &NodeJoin{}, true
	case TypeNodeLeave:
		return &NodeLeave{}, true
	case TypeSetNodeState:
		return &SetNodeState{}, true
	case TypeRecordEvent:
		return &RecordEvent{}, true
	case TypeDRDPlace:
		return &DRDPlace{}, true
	case TypeDRDReleased:
		return &DRDReleased{}, true
	}
	return nil, false
}

// envelope is a Command on the wire:
//
//	{"v":1,"type":"node-join","at":1767225600000000000,"who":"vigild@alpha","payload":{...}}
//
// "at" is Unix time in nanoseconds. Field order is fixed and maps are written with sorted keys,
// so equal commands encode to equal bytes.
type envelope struct {
	V       int             `json:"v"`
	Type    CommandType     `json:"type"`
	At      int64           `json:"at"`
	Who     string          `json:"who"`
	Payload json.RawMessage `json:"payload"`
}

// Sentinel errors of Encode, DecodeCommand and Apply, for errors.Is.
var (
	// ErrMalformed: the bytes are not a command of this encoding.
	ErrMalformed = errors.New("malformed command")
	// ErrUnknownCommand: a command type this version does not have.
	ErrUnknownCommand = errors.New("unknown command type")
	// ErrNeedsUpgrade: written by a newer build; this node must be upgraded to go on.
	ErrNeedsUpgrade = errors.New("this node must be upgraded")
	// ErrRejected: a well-formed command that the state does not allow (an invalid
	// configuration, an unknown node, ...). Errors wrapping it say why.
	ErrRejected = errors.New("command rejected")
	// ErrConflict: an ApplyConfig whose ExpectIndex is not the current ConfigIndex.
	ErrConflict = errors.New("configuration changed meanwhile")
)

// Encode writes c for raft's log. It fills in Version and Type when they are zero, and fails
// if they do not match this build and the payload, if At is not set or outside the years 1678
// to 2261 (Unix nanoseconds), or if there is no payload. It does not check that the command
// would be accepted; Apply does.
func Encode(c Command) ([]byte, error) {
	if c.Payload == nil {
		return nil, fmt.Errorf("encode command: no payload")
	}
	if c.Version == 0 {
		c.Version = CommandVersion
	}
	if c.Version != CommandVersion {
		return nil, fmt.Errorf("encode command: version %d, this build writes %d", c.Version, CommandVersion)
	}
	if c.Type == "" {
		c.Type = c.Payload.commandType()
	}
	if c.Type != c.Payload.commandType() {
		return nil, fmt.Errorf("encode command: type %q with a %s payload", c.Type, c.Payload.commandType())
	}
	if c.At.IsZero() || c.At.Before(time.Unix(0, 1)) || c.At.After(time.Unix(0, math.MaxInt64)) {
		return nil, fmt.Errorf("encode command: time %v is not set or out of range", c.At)
	}
	payload, err := json.Marshal(c.Payload)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return json.Marshal(envelope{V: c.Version, Type: c.Type, At: c.At.UnixNano(), Who: c.Who, Payload: payload})
}

// DecodeCommand reads what Encode wrote. It fails with an error wrapping ErrNeedsUpgrade for a
// command of a newer version (or carrying a newer configuration), ErrUnknownCommand for an
// unknown type, and ErrMalformed for anything else it cannot read strictly: unknown fields,
// wrong types, trailing data.
func DecodeCommand(data []byte) (Command, error) {
	// Look at the version first, leniently: a newer encoding may differ in anything else.
	var peek struct {
		V       int    `json:"v"`
		Type    string `json:"type"`
		Payload struct {
			Config struct {
				Version int `json:"version"`
			} `json:"config"`
		} `json:"payload"`
	}
	var vOnly struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &vOnly); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if vOnly.V > CommandVersion {
		return Command{}, fmt.Errorf("%w: command version %d is newer than this build (%d)",
			ErrNeedsUpgrade, vOnly.V, CommandVersion)
	}
	if vOnly.V < 1 {
		return Command{}, fmt.Errorf("%w: no version", ErrMalformed)
	}
	if json.Unmarshal(data, &peek) == nil && CommandType(peek.Type) == TypeApplyConfig &&
		peek.Payload.Config.Version > ConfigVersion {
		return Command{}, fmt.Errorf("%w: configuration version %d is newer than this build (%d)",
			ErrNeedsUpgrade, peek.Payload.Config.Version, ConfigVersion)
	}

	var env envelope
	if err := strictJSON(data, &env); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	payload, ok := newPayload(env.Type)
	if !ok {
		return Command{}, fmt.Errorf("%w %q", ErrUnknownCommand, env.Type)
	}
	if env.Payload == nil || bytes.Equal(env.Payload, []byte("null")) {
		return Command{}, fmt.Errorf("%w: no payload", ErrMalformed)
	}
	if err := strictJSON(env.Payload, payload); err != nil {
		return Command{}, fmt.Errorf("%w: %s payload: %v", ErrMalformed, env.Type, err)
	}
	if env.At <= 0 {
		return Command{}, fmt.Errorf("%w: time %d is not set", ErrMalformed, env.At)
	}
	return Command{
		Version: env.V,
		Type:    env.Type,
		At:      time.Unix(0, env.At).UTC(),
		Who:     env.Who,
		Payload: payload,
	}, nil
}

// strictJSON decodes exactly one JSON value into v, refusing unknown fields.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the command")
	}
	return nil
}
