package clusterdb

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is the time of the first command in tests.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustParse(t testing.TB, text string) *Config {
	t.Helper()
	c, err := ParseConfig("cluster.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func encode(t testing.TB, who string, at time.Time, p Payload) []byte {
	t.Helper()
	data, err := Encode(Command{At: at, Who: who, Payload: p})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// driver applies commands at increasing indexes, one second apart.
type driver struct {
	t     testing.TB
	s     *State
	index uint64
}

func newDriver(t testing.TB) *driver { return &driver{t: t, s: New()} }

func (d *driver) apply(p Payload) Result {
	d.t.Helper()
	d.index++
	return d.s.Apply(d.index, encode(d.t, "alice", t0.Add(time.Duration(d.index)*time.Second), p))
}

func (d *driver) must(p Payload) Result {
	d.t.Helper()
	r := d.apply(p)
	if r.Status != StatusApplied {
		d.t.Fatalf("%T: %v", p, r)
	}
	if err := d.s.checkInvariants(); err != nil {
		d.t.Fatal(err)
	}
	return r
}

func snap(t testing.TB, s *State) []byte {
	t.Helper()
	data, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestApplyScenario(t *testing.T) {
	d := newDriver(t)
	if d.s.HasValidConfig() {
		t.Fatal("a new State has a configuration")
	}
	// Nodes join before there is a configuration: they wait for one.
	r := d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	if r.Event.Kind != EventNodeJoin || r.Event.Node != 1 || r.Event.What != "node 1 (alpha) joined as member" ||
		r.Event.Who != "alice" || !r.Event.Time.Equal(t0.Add(time.Second)) || r.Event.Index != 1 {
		t.Errorf("event = %+v", r.Event)
	}
	d.must(&SetNodeState{ID: 1, State: NodeAdminWait, Reason: "no configuration"})
	if r := d.apply(&SetNodeState{ID: 1, State: NodeRunning}); r.Status != StatusRejected ||
		!strings.Contains(r.Err.Error(), "cannot run without a valid configuration") {
		t.Errorf("running without a config: %v", r)
	}

	cfg := mustParse(t, withBase())
	r = d.must(&ApplyConfig{Config: cfg})
	if !d.s.HasValidConfig() || d.s.ConfigIndex != d.index || len(r.Changes) == 0 {
		t.Fatalf("after apply-config: config index %d, changes %v", d.s.ConfigIndex, r.Changes)
	}
	if !strings.HasPrefix(r.Event.What, "configuration applied, 10 changes: added version: 1; added heartbeat.interval: 10ms") {
		t.Errorf("config event: %q", r.Event.What)
	}
	// The same configuration again changes nothing and logs nothing.
	events := d.s.Log.Len()
	if r := d.apply(&ApplyConfig{Config: cfg.Clone()}); r.Status != StatusUnchanged || d.s.Log.Len() != events {
		t.Errorf("same config again: %v", r)
	}
	d.must(&SetNodeState{ID: 1, State: NodeRunning})
	d.must(&NodeJoin{ID: 2, Name: "beta", Role: RoleMember})
	d.must(&NodeJoin{ID: 3, Name: "gamma", Role: RoleWitness})
	if r := d.apply(&SetNodeState{ID: 2, State: NodeIniting}); r.Status != StatusUnchanged {
		t.Errorf("same state again: %v", r)
	}

	// A node must join as configured.
	for _, tc := range []struct {
		p    Payload
		want string
	}{
		{&NodeJoin{ID: 4, Name: "delta", Role: RoleMember}, "node 4 (delta) is not in the configuration"},
		{&NodeJoin{ID: 2, Name: "beta", Role: RoleMember}, "node 2 (beta) is already a member (initing)"},
		{&NodeJoin{ID: 3, Name: "gamma", Role: RoleMember}, "node 3 (gamma) is a witness in the configuration, not a member"},
		{&NodeJoin{ID: 0, Name: "zero", Role: RoleMember}, "0 is not a valid node id"},
		{&NodeJoin{ID: 5, Name: "Bad", Role: RoleMember}, "\"Bad\" is not a valid node name"},
		{&NodeLeave{ID: 9}, "node 9 is not a member"},
		{&SetNodeState{ID: 2, State: "up"}, "\"up\" is not a node state"},
		{&RecordEvent{Kind: EventConfig, What: "x"}, "\"config\" is not a kind of event to record"},
		{&RecordEvent{Kind: EventNote}, "no text"},
		{&ApplyConfig{}, "apply-config without a configuration"},
	} {
		if r := d.apply(tc.p); r.Status != StatusRejected || !errors.Is(r.Err, ErrRejected) || !strings.Contains(r.Err.Error(), tc.want) {
			t.Errorf("%+v: %v, want rejected with %q", tc.p, r, tc.want)
		}
	}

	// A configuration that drops a running member is refused; one that drops an exited one is not.
	smaller := cfg.Clone()
	smaller.Nodes = smaller.Nodes[:2]
	if r := d.apply(&ApplyConfig{Config: smaller}); r.Status != StatusRejected ||
		!strings.Contains(r.Err.Error(), "node 3 (gamma) is not in the configuration; node 3 is initing: remove it") {
		t.Errorf("dropping a member: %v", r)
	}
	d.must(&SetNodeState{ID: 3, State: NodeExited, Reason: "stopped"})
	if r := d.apply(&SetNodeState{ID: 3, State: NodeRunning}); r.Status != StatusRejected ||
		!strings.Contains(r.Err.Error(), "has exited; it must join again") {
		t.Errorf("exited to running: %v", r)
	}
	r = d.must(&ApplyConfig{Config: smaller, ExpectIndex: d.s.ConfigIndex})
	if want := []string{"removed nodes.gamma"}; len(r.Changes) != 1 || r.Changes[0].String() != want[0] {
		t.Errorf("changes = %v, want %v", r.Changes, want)
	}
	// A stale compare-and-swap is a conflict.
	if r := d.apply(&ApplyConfig{Config: cfg, ExpectIndex: 1}); r.Status != StatusRejected || !errors.Is(r.Err, ErrConflict) {
		t.Errorf("stale expect index: %v", r)
	}
	// The exited gamma cannot join again while it is not configured; leaving removes it.
	if r := d.apply(&NodeJoin{ID: 3, Name: "gamma", Role: RoleWitness}); r.Status != StatusRejected {
		t.Errorf("join of an unconfigured node: %v", r)
	}
	r = d.must(&NodeLeave{ID: 3, Reason: "decommissioned"})
	if r.Event.What != "node 3 (gamma) left the cluster: decommissioned" {
		t.Errorf("leave event: %q", r.Event.What)
	}
	if _, ok := d.s.Member(3); ok {
		t.Error("node 3 is still a member")
	}
	r = d.must(&RecordEvent{Kind: EventQuorum, Node: 1, What: "quorum gained: 2 of 2 voters"})
	if r.Event.Kind != EventQuorum || r.Event.What != "quorum gained: 2 of 2 voters" {
		t.Errorf("record-event: %+v", r.Event)
	}
	want := []Member{
		{ID: 1, Name: "alpha", Role: RoleMember, State: NodeRunning, Since: 6},
		{ID: 2, Name: "beta", Role: RoleMember, State: NodeIniting, Since: 7},
	}
	if !reflect.DeepEqual(d.s.Members, want) {
		t.Errorf("members:\n got %+v\nwant %+v", d.s.Members, want)
	}
	// Every applied command logged one event, in index order.
	var kinds []string
	for _, e := range d.s.Log.Events() {
		kinds = append(kinds, fmt.Sprintf("%d:%s", e.Index, e.Kind))
	}
	// The rejected and unchanged commands in between logged nothing.
	if got, want := strings.Join(kinds, " "),
		"1:node-join 2:node-state 4:config 6:node-state 7:node-join 8:node-join 21:node-state 23:config 26:node-leave 27:quorum"; got != want {
		t.Errorf("events: %s\nwant %s", got, want)
	}
}

func TestRejectedChangesNothing(t *testing.T) {
	d := newDriver(t)
	d.must(&ApplyConfig{Config: mustParse(t, withBase())})
	d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	good := encode(t, "alice", t0, &RecordEvent{Kind: EventNote, What: "x"})
	invalid := mustParse(t, withBase())
	invalid.Groups[0].Nodes = append(invalid.Groups[0].Nodes, "gamma")
	for name, data := range map[string][]byte{
		"nil":              nil,
		"garbage":          []byte("\x00\xff garbage"),
		"not an object":    []byte(`[1,2]`),
		"no version":       []byte(`{"type":"record-event","at":1,"who":"a","payload":{"kind":"note","what":"x"}}`),
		"unknown type":     []byte(`{"v":1,"type":"reboot","at":1,"who":"a","payload":{}}`),
		"unknown field":    []byte(`{"v":1,"type":"record-event","at":1,"who":"a","payload":{"kind":"note","what":"x","level":3}}`),
		"unknown envelope": []byte(`{"v":1,"type":"record-event","at":1,"who":"a","prio":1,"payload":{"kind":"note","what":"x"}}`),
		"trailing data":    append(bytes.Clone(good), []byte(` {}`)...),
		"null payload":     []byte(`{"v":1,"type":"record-event","at":1,"who":"a","payload":null}`),
		"no payload":       []byte(`{"v":1,"type":"record-event","at":1,"who":"a"}`),
		"no time":          []byte(`{"v":1,"type":"record-event","at":0,"who":"a","payload":{"kind":"note","what":"x"}}`),
		"no who":           []byte(`{"v":1,"type":"record-event","at":1,"who":"","payload":{"kind":"note","what":"x"}}`),
		"wrong type":       []byte(`{"v":1,"type":"node-join","at":1,"who":"a","payload":{"id":"2"}}`),
		"invalid config":   encode(t, "alice", t0, &ApplyConfig{Config: invalid}),
		"control in who":   encode(t, "al\x1bice", t0, &RecordEvent{Kind: EventNote, What: "x"}),
		"huge what":        encode(t, "alice", t0, &RecordEvent{Kind: EventNote, What: strings.Repeat("x", 2000)}),
		"bad event node":   encode(t, "alice", t0, &RecordEvent{Kind: EventNote, Node: 64, What: "x"}),
		"bad reason":       encode(t, "alice", t0, &NodeLeave{ID: 1, Reason: "a\nb"}),
	} {
		t.Run(name, func(t *testing.T) {
			s := d.s.Clone()
			before := snap(t, s)
			r := s.Apply(d.index+1, data)
			if r.Status != StatusRejected || r.Err == nil {
				t.Fatalf("Apply = %v, want rejected", r)
			}
			if s.AppliedIndex != d.index+1 {
				t.Errorf("applied index %d, want %d", s.AppliedIndex, d.index+1)
			}
			// Replaying the entry is skipped.
			if r := s.Apply(d.index+1, data); r.Status != StatusSkipped {
				t.Errorf("replay: %v", r)
			}
			s.AppliedIndex = d.index
			if !bytes.Equal(snap(t, s), before) {
				t.Errorf("a rejected command changed the state:\n%s\n%s", before, snap(t, s))
			}
		})
	}
}

func TestIdempotentReplay(t *testing.T) {
	d := newDriver(t)
	var entries [][]byte
	for i, p := range []Payload{
		&ApplyConfig{Config: mustParse(t, withBase())},
		&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember},
		&SetNodeState{ID: 1, State: NodeRunning},
		&RecordEvent{Kind: EventLeader, Node: 1, What: "node 1 leads term 2"},
	} {
		entries = append(entries, encode(t, "vigild@alpha", t0.Add(time.Duration(i)*time.Second), p))
	}
	s := New()
	// Gaps in the indexes are fine: raft's own entries are not applied here.
	for i, e := range entries {
		if r := s.Apply(uint64(2*i+1), e); r.Status != StatusApplied {
			t.Fatal(r)
		}
	}
	want := snap(t, s)
	for i, e := range entries {
		if r := s.Apply(uint64(2*i+1), e); r.Status != StatusSkipped {
			t.Fatalf("replay of %d: %v", 2*i+1, r)
		}
	}
	if r := s.Apply(0, entries[3]); r.Status != StatusSkipped {
		t.Fatalf("index 0: %v", r)
	}
	if !bytes.Equal(snap(t, s), want) {
		t.Error("replay changed the state")
	}
	// A state restored from a snapshot skips what the snapshot holds and applies the rest.
	mid := New()
	for i, e := range entries[:2] {
		mid.Apply(uint64(2*i+1), e)
	}
	restored, err := Restore(snap(t, mid))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		restored.Apply(uint64(2*i+1), e)
	}
	if !bytes.Equal(snap(t, restored), want) {
		t.Error("restore and replay differ from applying once")
	}
	_ = d
}

func TestNeedsUpgrade(t *testing.T) {
	newer := mustParse(t, withBase())
	for name, data := range map[string][]byte{
		"command version":   []byte(`{"v":9,"type":"whatever","payload":{"anything":[1]}}`),
		"huge version":      []byte(`{"v":4000000000}`),
		"config version":    []byte(`{"v":1,"type":"apply-config","at":1,"who":"a","payload":{"config":{"version":2,"zones":[]}}}`),
		"config in a typed": encode(t, "alice", t0, &ApplyConfig{Config: func() *Config { c := newer.Clone(); c.Version = 7; return c }()}),
	} {
		t.Run(name, func(t *testing.T) {
			d := newDriver(t)
			d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
			before := snap(t, d.s)
			r := d.s.Apply(2, data)
			if r.Status != StatusNeedsUpgrade || !errors.Is(r.Err, ErrNeedsUpgrade) ||
				!strings.Contains(r.Err.Error(), "entry 2: this node must be upgraded") {
				t.Fatalf("Apply = %v", r)
			}
			if d.s.AppliedIndex != 1 || !bytes.Equal(snap(t, d.s), before) {
				t.Error("an entry of a newer version changed the state")
			}
			// The entry and everything after it are refused; replays before it are skipped.
			next := encode(t, "alice", t0, &RecordEvent{Kind: EventNote, What: "x"})
			for _, idx := range []uint64{2, 3, 100} {
				r := d.s.Apply(idx, next)
				if r.Status != StatusNeedsUpgrade || !strings.Contains(r.Err.Error(), "upgraded to apply entry 2") {
					t.Errorf("Apply(%d) after the newer entry = %v", idx, r)
				}
			}
			if r := d.s.Apply(1, next); r.Status != StatusSkipped {
				t.Errorf("Apply(1) = %v", r)
			}
			if !bytes.Equal(snap(t, d.s), before) {
				t.Error("state changed after the newer entry")
			}
		})
	}
}

func TestEncode(t *testing.T) {
	data := encode(t, "vigild@alpha", t0, &NodeJoin{ID: 2, Name: "beta", Role: RoleMember})
	want := `{"v":2,"type":"node-join","at":1767225600000000000,"who":"vigild@alpha","payload":{"id":2,"name":"beta","role":"member"}}`
	if string(data) != want {
		t.Errorf("Encode:\n got %s\nwant %s", data, want)
	}
	cmd, err := DecodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Command{Version: 2, Type: TypeNodeJoin, At: t0, Who: "vigild@alpha",
		Payload: &NodeJoin{ID: 2, Name: "beta", Role: RoleMember}}); !reflect.DeepEqual(cmd, want) {
		t.Errorf("DecodeCommand = %+v, want %+v", cmd, want)
	}
	// Equal commands encode to equal bytes, configurations included.
	c := mustParse(t, docExample(t))
	a := encode(t, "alice", t0, &ApplyConfig{Config: c})
	b := encode(t, "alice", t0, &ApplyConfig{Config: c.Clone()})
	if !bytes.Equal(a, b) {
		t.Error("equal commands encode differently")
	}
	cmd, err = DecodeCommand(a)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(c, cmd.Payload.(*ApplyConfig).Config); d != nil {
		t.Errorf("config changed on the wire: %v", d)
	}
	for _, bad := range []Command{
		{At: t0, Who: "a"},
		{At: t0, Who: "a", Version: 9, Payload: &NodeLeave{ID: 1}},
		{At: t0, Who: "a", Type: TypeNodeJoin, Payload: &NodeLeave{ID: 1}},
		{Who: "a", Payload: &NodeLeave{ID: 1}},
		{At: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), Who: "a", Payload: &NodeLeave{ID: 1}},
	} {
		if _, err := Encode(bad); err == nil {
			t.Errorf("Encode(%+v) succeeded", bad)
		}
	}
}

// randomCommands returns n random entries: mostly valid commands, some invalid, some garbage.
func randomCommands(t testing.TB, seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	configs := []*Config{mustParse(t, withBase()), mustParse(t, docExample(t))}
	third := configs[0].Clone()
	third.Nodes = append(third.Nodes, Node{Name: "delta", ID: 4, Role: RoleMember})
	third.Groups[0].Nodes = []string{"delta", "beta"}
	configs = append(configs, third)
	names := []string{"", "alpha", "beta", "gamma", "delta", "epsilon"}
	roles := []Role{RoleMember, RoleWitness}
	var out [][]byte
	at := t0
	for range n {
		at = at.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		id := rng.IntN(6)
		var p Payload
		switch rng.IntN(12) {
		case 0:
			p = &ApplyConfig{Config: configs[rng.IntN(len(configs))].Clone()}
		case 1:
			p = &ApplyConfig{Config: configs[rng.IntN(len(configs))].Clone(), ExpectIndex: uint64(rng.IntN(20))}
		case 2, 3:
			p = &NodeJoin{ID: id, Name: names[id], Role: roles[rng.IntN(2)]}
		case 4:
			p = &NodeLeave{ID: id, Reason: "removed"}
		case 5, 6, 7:
			p = &SetNodeState{ID: id, State: nodeStates[rng.IntN(len(nodeStates))], Reason: "driver"}
		case 8, 9:
			p = &RecordEvent{Kind: eventKinds[rng.IntN(len(eventKinds))], Node: id, What: fmt.Sprintf("event %d", rng.IntN(100))}
		case 10:
			b := make([]byte, rng.IntN(40))
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			out = append(out, b)
			continue
		default:
			// A valid command with one byte changed.
			b := encode(t, "alice", at, &NodeJoin{ID: id, Name: names[id], Role: RoleMember})
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			out = append(out, b)
			continue
		}
		out = append(out, encode(t, []string{"alice", "vigild@alpha"}[rng.IntN(2)], at, p))
	}
	return out
}

func TestApplyDeterministic(t *testing.T) {
	for seed := range uint64(20) {
		entries := randomCommands(t, seed, 300)
		a, b := New(), New()
		var restored *State
		applied := 0
		for i, e := range entries {
			idx := uint64(i + 1)
			ra, rb := a.Apply(idx, e), b.Apply(idx, e)
			if ra.Status != rb.Status {
				t.Fatalf("seed %d entry %d: %v and %v", seed, idx, ra, rb)
			}
			if ra.Status == StatusApplied {
				applied++
			}
			if err := a.checkInvariants(); err != nil {
				t.Fatalf("seed %d entry %d (%v): %v", seed, idx, ra, err)
			}
			if restored != nil {
				restored.Apply(idx, e)
			}
			if i == len(entries)/2 {
				var err error
				if restored, err = Restore(snap(t, a)); err != nil {
					t.Fatal(err)
				}
			}
		}
		sa, sb, sr := snap(t, a), snap(t, b), snap(t, restored)
		if !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: two states fed the same entries differ", seed)
		}
		if !bytes.Equal(sa, sr) {
			t.Fatalf("seed %d: a state restored halfway differs", seed)
		}
		if applied < 30 {
			t.Errorf("seed %d: only %d of %d commands applied; the generator is too weak", seed, applied, len(entries))
		}
	}
}

func TestEventLog(t *testing.T) {
	d := newDriver(t)
	d.must(&ApplyConfig{Config: mustParse(t, withBase())})
	d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	d.must(&NodeJoin{ID: 2, Name: "beta", Role: RoleMember})
	for i := range MaxEvents + 10 {
		kind := []EventKind{EventQuorum, EventLeader, EventNote}[i%3]
		if r := d.apply(&RecordEvent{Kind: kind, Node: 1 + i%2, What: fmt.Sprintf("event %d", i)}); r.Status != StatusApplied {
			t.Fatal(r)
		}
	}
	if err := d.s.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	log := &d.s.Log
	if log.Len() != MaxEvents {
		t.Fatalf("log holds %d events, want %d", log.Len(), MaxEvents)
	}
	events := log.Events()
	if events[0].Index != 14 || events[len(events)-1].Index != d.index {
		t.Errorf("log spans %d..%d, want 14..%d", events[0].Index, events[len(events)-1].Index, d.index)
	}
	last, _ := log.last()
	if last.What != fmt.Sprintf("event %d", MaxEvents+9) {
		t.Errorf("last event %+v", last)
	}
	got := log.Query(EventQuery{Node: 2, Kinds: []EventKind{EventLeader}, Since: d.index - 12})
	var what []string
	for _, e := range got {
		if e.Node != 2 || e.Kind != EventLeader || e.Index <= d.index-12 {
			t.Errorf("query returned %+v", e)
		}
		what = append(what, e.What)
	}
	// Events i with i%3 == 1 (leader) and i%2 == 1 (node 2) among the last 12.
	if want := []string{"event 10003", "event 10009"}; !reflect.DeepEqual(what, want) {
		t.Errorf("query: %v, want %v", what, want)
	}
	if got := log.Query(EventQuery{Limit: 2}); len(got) != 2 || got[1].Index != d.index {
		t.Errorf("limit: %+v", got)
	}
	if got := log.Query(EventQuery{Since: d.index}); len(got) != 0 {
		t.Errorf("since the last: %+v", got)
	}
	if got := log.Query(EventQuery{Kinds: []EventKind{EventNodeJoin}}); len(got) != 0 {
		t.Errorf("joins were dropped from the ring, got %+v", got)
	}
	// The ring survives a snapshot in order.
	s, err := Restore(snap(t, d.s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Log.Events(), events) {
		t.Error("events changed in a snapshot")
	}
	if want := fmt.Sprintf("%d %s quorum node 1 alice: event 10008", d.index-1,
		t0.Add(time.Duration(d.index-1)*time.Second).Format(time.RFC3339)); events[len(events)-2].String() != want {
		t.Errorf("String = %q, want %q", events[len(events)-2].String(), want)
	}
}

func TestView(t *testing.T) {
	d := newDriver(t)
	d.must(&ApplyConfig{Config: mustParse(t, withBase())})
	d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	before := snap(t, d.s)
	v := d.s.View(true, "no quorum: 1 of 3 voters reachable")
	if !v.Stale || v.Reason == "" || !v.HasValidConfig() {
		t.Errorf("view = %+v", v)
	}
	// The view is the reader's own copy.
	v.Config.Groups[0].Resources[1].Params["address"] = "x"
	v.Config.Groups[0].Nodes[0] = "x"
	v.Members[0].State = NodeFaulted
	v.Log.ring[0].What = "x"
	if !bytes.Equal(snap(t, d.s), before) {
		t.Error("changing a view changed the state")
	}
}
