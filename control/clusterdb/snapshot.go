package clusterdb

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// snapshot is the State on disk and on the wire (raft's snapshot data): JSON, fields in this
// order, maps with sorted keys, times in UTC, so equal States give equal bytes.
type snapshot struct {
	SchemaVersion int             `json:"schema_version"`
	AppliedIndex  uint64          `json:"applied_index"`
	ConfigIndex   uint64          `json:"config_index,omitempty"`
	Config        *Config         `json:"config,omitempty"`
	Members       []Member        `json:"members,omitempty"`
	Groups        []GroupState    `json:"groups,omitempty"`
	Resources     []ResourceState `json:"resources,omitempty"`
	Faults        []Fault         `json:"faults,omitempty"`
	Freezes       []Freeze        `json:"freezes,omitempty"`
	DRD           []DRDPlacement  `json:"drd,omitempty"`
	Events        []Event         `json:"events,omitempty"`
}

// Snapshot writes the State for raft's snapshots and for `vigil config backup`. The bytes are a
// deterministic function of the State: two nodes that applied the same entries write the same
// bytes. They start with the schema version, {"schema_version":1,...}.
func (s *State) Snapshot() ([]byte, error) {
	data, err := json.Marshal(snapshot{
		SchemaVersion: s.SchemaVersion,
		AppliedIndex:  s.AppliedIndex,
		ConfigIndex:   s.ConfigIndex,
		Config:        s.Config,
		Members:       s.Members,
		Groups:        s.Groups,
		Resources:     s.Resources,
		Faults:        s.Faults,
		Freezes:       s.Freezes,
		DRD:           s.DRDPlacements,
		Events:        s.Log.Events(),
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot cluster database: %w", err)
	}
	return data, nil
}

// Restore reads a snapshot. One of an older schema version is migrated to SchemaVersion, one
// step at a time; one of a newer version fails with an error wrapping ErrNeedsUpgrade. The
// restored State is checked as a whole: a snapshot that Apply could not have produced (an
// invalid configuration, a member the configuration does not know, events out of order) is
// refused.
func Restore(data []byte) (*State, error) {
	var head struct {
		SchemaVersion int `json:"schema_version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("restore cluster database: %w", err)
	}
	switch {
	case head.SchemaVersion > SchemaVersion:
		return nil, fmt.Errorf("restore cluster database: %w: schema version %d is newer than this build (%d)",
			ErrNeedsUpgrade, head.SchemaVersion, SchemaVersion)
	case head.SchemaVersion < SchemaVersion:
		var err error
		if data, err = migrate(data, head.SchemaVersion); err != nil {
			return nil, fmt.Errorf("restore cluster database: %w", err)
		}
	}
	var snap snapshot
	if err := strictJSON(data, &snap); err != nil {
		return nil, fmt.Errorf("restore cluster database: %w", err)
	}
	s := &State{
		SchemaVersion: snap.SchemaVersion,
		AppliedIndex:  snap.AppliedIndex,
		ConfigIndex:   snap.ConfigIndex,
		Config:        snap.Config,
		Members:       snap.Members,
		Groups:        snap.Groups,
		Resources:     snap.Resources,
		Faults:        snap.Faults,
		Freezes:       snap.Freezes,
		DRDPlacements: snap.DRD,
	}
	if len(snap.Events) > MaxEvents {
		return nil, fmt.Errorf("restore cluster database: %w: %d events, at most %d are kept",
			errCorrupt, len(snap.Events), MaxEvents)
	}
	for i := range snap.Events {
		snap.Events[i].Time = snap.Events[i].Time.UTC()
	}
	for i := range s.Faults {
		s.Faults[i].At = s.Faults[i].At.UTC()
	}
	for i := range s.Freezes {
		s.Freezes[i].At = s.Freezes[i].At.UTC()
	}
	s.Log.ring = snap.Events
	if err := s.checkInvariants(); err != nil {
		return nil, fmt.Errorf("restore cluster database: %w", err)
	}
	return s, nil
}

// migrations[v] turns a snapshot of schema version v, as a JSON object, into one of version
// v+1 (migrate sets schema_version). When SchemaVersion is raised, add the step from the old
// version here; never change or remove one, since snapshots of every earlier version may still
// be on disk.
var migrations = map[int]func(doc map[string]json.RawMessage) error{
	// 1 -> 2: DRD placements ("drd") appear; a version 1 snapshot has none.
	1: func(doc map[string]json.RawMessage) error {
		if _, ok := doc["drd"]; ok {
			return fmt.Errorf("a version 1 snapshot with a drd section")
		}
		return nil
	},
}

// migrate brings a snapshot of schema version from up to SchemaVersion.
func migrate(data []byte, from int) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	for v := from; v < SchemaVersion; v++ {
		step, ok := migrations[v]
		if !ok {
			return nil, fmt.Errorf("%w: no migration from schema version %d", errCorrupt, v)
		}
		if err := step(doc); err != nil {
			return nil, fmt.Errorf("migrate schema version %d to %d: %w", v, v+1, err)
		}
		doc["schema_version"] = json.RawMessage(strconv.Itoa(v + 1))
	}
	return json.Marshal(doc)
}
