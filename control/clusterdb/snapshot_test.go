package clusterdb

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// populated returns a State with every section filled.
func populated(t *testing.T) *State {
	t.Helper()
	d := newDriver(t)
	d.must(&ApplyConfig{Config: mustParse(t, docExample(t))})
	d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	d.must(&NodeJoin{ID: 3, Name: "gamma", Role: RoleWitness})
	d.must(&SetNodeState{ID: 1, State: NodeRunning})
	d.must(&RecordEvent{Kind: EventLeader, Node: 1, What: "node 1 leads term 2"})
	// No command fills the runtime sections yet; set them as later commands will.
	at := time.Unix(0, 1767225600123456789).UTC()
	d.s.Groups = []GroupState{{Group: "web", Node: 1, State: GroupOnline, Since: 5}}
	d.s.Resources = []ResourceState{{Group: "web", Resource: "ip", Node: 1, State: ResourceOnline, Since: 5}}
	d.s.Faults = []Fault{{Group: "web", Resource: "server", Node: 2, Index: 4, At: at, Reason: "monitor failed"}}
	d.s.Freezes = []Freeze{{Group: "web", Persistent: true, By: "alice", At: at}}
	if err := d.s.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	return d.s
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := populated(t)
	data := snap(t, s)
	if !bytes.HasPrefix(data, []byte(`{"schema_version":2,"applied_index":5,"config_index":1,"config":{"version":1,`)) {
		t.Errorf("snapshot starts %.80s", data)
	}
	back, err := Restore(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("Restore(Snapshot()):\n got %+v\nwant %+v", back, s)
	}
	if again := snap(t, back); !bytes.Equal(again, data) {
		t.Errorf("snapshot of the restored state differs:\n%s\n%s", again, data)
	}
	// An empty State too.
	empty, err := Restore(snap(t, New()))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap(t, empty), snap(t, New())) || empty.HasValidConfig() {
		t.Error("empty state round trip")
	}
	// The restored state goes on like the original.
	entry := encode(t, "alice", t0, &NodeLeave{ID: 3})
	r1, r2 := s.Apply(6, entry), back.Apply(6, entry)
	if r1.Status != StatusApplied || r2.Status != StatusApplied || !bytes.Equal(snap(t, s), snap(t, back)) {
		t.Errorf("after restore: %v, %v", r1, r2)
	}
}

func TestRestoreRefuses(t *testing.T) {
	good := snap(t, populated(t))
	edit := func(f func(doc map[string]any)) []byte {
		var doc map[string]any
		if err := json.Unmarshal(good, &doc); err != nil {
			t.Fatal(err)
		}
		f(doc)
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "unexpected end of JSON input"},
		{"not json", []byte("snapshot"), "invalid character"},
		{"newer schema", edit(func(d map[string]any) { d["schema_version"] = 3; d["zones"] = 1 }), "this node must be upgraded: schema version 3 is newer than this build (2)"},
		{"unknown field", edit(func(d map[string]any) { d["zones"] = []int{} }), `unknown field "zones"`},
		{"trailing data", append(bytes.Clone(good), '1'), "after top-level value"},
		{"invalid config", edit(func(d map[string]any) { d["config"].(map[string]any)["nodes"] = []any{} }), "nodes: at least one node is required"},
		{"member not configured", edit(func(d map[string]any) {
			d["members"] = append(d["members"].([]any), map[string]any{"id": 9, "name": "zeta", "role": "member", "state": "running", "since": 1})
		}), "member 9: node 9 (zeta) is not in the configuration"},
		{"members out of order", edit(func(d map[string]any) {
			m := d["members"].([]any)
			m[0], m[1] = m[1], m[0]
		}), "members not in ascending id order"},
		{"events out of order", edit(func(d map[string]any) {
			e := d["events"].([]any)
			e[0], e[1] = e[1], e[0]
		}), "event index 1 after 2"},
		{"event from the future", edit(func(d map[string]any) { d["applied_index"] = 4 }), "event index 5 after 4, applied index 4"},
		{"unknown group in runtime state", edit(func(d map[string]any) {
			d["groups"].([]any)[0].(map[string]any)["group"] = "db"
		}), `unknown group "db"`},
		{"config index without config", edit(func(d map[string]any) { delete(d, "config") }), "config index 1 without a configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Restore(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore = %v, want an error with %q", err, tc.want)
			}
			if s != nil {
				t.Error("Restore returned a State with an error")
			}
			if tc.name == "newer schema" && !errors.Is(err, ErrNeedsUpgrade) {
				t.Errorf("error %v does not wrap ErrNeedsUpgrade", err)
			}
		})
	}
}

// TestRestoreMigrates checks the migration hook with a made-up schema version 0, in which the
// membership records were called "nodes" and held "status" instead of "state".
func TestRestoreMigrates(t *testing.T) {
	old := []byte(`{"schema_version":0,"applied_index":2,"nodes":[{"id":1,"name":"alpha","role":"member","status":"INITING","since":1}],` +
		`"events":[{"index":1,"time":"2026-01-01T00:00:01Z","kind":"node-join","node":1,"who":"alice","what":"node 1 (alpha) joined as member"}]}`)
	if _, err := Restore(old); err == nil || !strings.Contains(err.Error(), "no migration from schema version 0") {
		t.Fatalf("Restore without a migration = %v", err)
	}
	migrations[0] = func(doc map[string]json.RawMessage) error {
		var nodes []map[string]any
		if err := json.Unmarshal(doc["nodes"], &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			n["state"] = strings.ToLower(n["status"].(string))
			delete(n, "status")
		}
		members, err := json.Marshal(nodes)
		if err != nil {
			return err
		}
		doc["members"] = members
		delete(doc, "nodes")
		return nil
	}
	t.Cleanup(func() { delete(migrations, 0) })
	s, err := Restore(old)
	if err != nil {
		t.Fatal(err)
	}
	want := []Member{{ID: 1, Name: "alpha", Role: RoleMember, State: NodeIniting, Since: 1}}
	if s.SchemaVersion != SchemaVersion || !reflect.DeepEqual(s.Members, want) || s.Log.Len() != 1 {
		t.Errorf("migrated state: %+v", s)
	}
	// A failing step fails the restore.
	migrations[0] = func(map[string]json.RawMessage) error { return errors.New("boom") }
	if _, err := Restore(old); err == nil || !strings.Contains(err.Error(), "migrate schema version 0 to 1: boom") {
		t.Errorf("failing migration: %v", err)
	}
}
