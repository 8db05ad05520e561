package clusterdb

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseConfig checks that ParseConfig never panics, that every error line names the file,
// and that a configuration that parses survives Marshal and ParseConfig unchanged.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		withBase(),
		docExample(f),
		withBase("      a: {type: nic, requires: [b]}", "      b: {type: nic, requires: [a]}"),
		withBase("drd_devices: {d: {backing: /d, nodes: [alpha]}}", "users: {u: {role: admin}}"),
		replace(11, "      prefix: {type: duration, default: 1m30s}", "      on: {type: boolean}"),
		"version: 1\nnodes: {a: &n {id: 1}, b: *n}\n",
		"a: &a [*a]\n",
		"- a\n",
		"",
		"---\n---\n",
		"version: [\n",
		"version: 1\nnodes: {a: {id: 1}}\ngroups: {g: {nodes: [a], resources: {r: {type: t, params: {x: '1'}}}}}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if c != nil {
				t.Fatal("ParseConfig returned a Config with an error")
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml:") {
					t.Fatalf("error line %q does not start with the file name", line)
				}
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted what Validate refuses: %v\ninput:\n%s", err, data)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v\ninput:\n%s", err, data)
		}
		back, err := ParseConfig("marshalled.yaml", out)
		if err != nil {
			t.Fatalf("ParseConfig(Marshal()): %v\nYAML:\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v\nYAML:\n%s", back, c, out)
		}
	})
}

// FuzzApply checks that Apply never panics on any entry, and that the State afterwards is
// either unchanged (but for AppliedIndex, for a rejected entry) or validly changed: its
// invariants hold and it survives a snapshot.
func FuzzApply(f *testing.F) {
	cfg := mustParse(f, withBase())
	for _, p := range []Payload{
		&ApplyConfig{Config: cfg},
		&ApplyConfig{Config: mustParse(f, docExample(f)), ExpectIndex: 1},
		&NodeJoin{ID: 2, Name: "beta", Role: RoleMember},
		&NodeJoin{ID: 3, Name: "gamma", Role: RoleWitness},
		&NodeLeave{ID: 1, Reason: "gone"},
		&SetNodeState{ID: 1, State: NodeFaulted, Reason: "cut off"},
		&SetNodeState{ID: 1, State: NodeExited},
		&RecordEvent{Kind: EventQuorum, Node: 1, What: "quorum lost"},
	} {
		f.Add(encode(f, "alice", t0, p))
	}
	for _, seed := range []string{
		`{"v":9}`,
		`{"v":1,"type":"apply-config","at":1,"who":"a","payload":{"config":{"version":1,"nodes":[]}}}`,
		`{"v":1,"type":"node-join","at":1,"who":"a","payload":{"id":1,"name":"alpha","role":"member"}}`,
		`null`,
		``,
	} {
		f.Add([]byte(seed))
	}
	// The State each input is applied to: configured, with two members.
	base := New()
	for i, p := range []Payload{
		&ApplyConfig{Config: cfg},
		&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember},
		&NodeJoin{ID: 2, Name: "beta", Role: RoleMember},
	} {
		if r := base.Apply(uint64(i+1), encode(f, "alice", t0, p)); r.Status != StatusApplied {
			f.Fatal(r)
		}
	}
	before, err := base.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := base.Clone()
		r := s.Apply(4, data)
		after := snap(t, s)
		switch r.Status {
		case StatusRejected, StatusUnchanged:
			if s.AppliedIndex != 4 {
				t.Fatalf("%v: applied index %d", r, s.AppliedIndex)
			}
			s.AppliedIndex = 3
			if !bytes.Equal(snap(t, s), before) {
				t.Fatalf("%v changed the state", r)
			}
		case StatusNeedsUpgrade:
			if !bytes.Equal(after, before) {
				t.Fatalf("%v changed the state", r)
			}
		case StatusApplied:
			if err := s.checkInvariants(); err != nil {
				t.Fatalf("%v: %v", r, err)
			}
			if s.Log.Len() != base.Log.Len()+1 || r.Event == nil || r.Event.Index != 4 {
				t.Fatalf("%v: no event", r)
			}
			back, err := Restore(after)
			if err != nil {
				t.Fatalf("%v: Restore: %v", r, err)
			}
			if !bytes.Equal(snap(t, back), after) {
				t.Fatalf("%v: snapshot round trip", r)
			}
		default:
			t.Fatalf("Apply = %v", r)
		}
		// The base was not touched through shared memory.
		if !bytes.Equal(snap(t, base), before) {
			t.Fatal("Apply changed the State it was cloned from")
		}
	})
}
