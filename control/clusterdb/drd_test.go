package clusterdb

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func drdConfig(t *testing.T, devices ...string) *Config {
	t.Helper()
	return mustParse(t, withBase(append([]string{"drd_devices:"}, devices...)...))
}

// drdDriver is a configured cluster with alpha and beta running and the device data0 on both.
func drdDriver(t *testing.T) *driver {
	d := newDriver(t)
	d.must(&ApplyConfig{Config: drdConfig(t, "  data0: {backing: /dev/vdb, nodes: [alpha, beta], size: 1048576}")})
	d.must(&NodeJoin{ID: 1, Name: "alpha", Role: RoleMember})
	d.must(&NodeJoin{ID: 2, Name: "beta", Role: RoleMember})
	d.must(&SetNodeState{ID: 1, State: NodeRunning})
	d.must(&SetNodeState{ID: 2, State: NodeRunning})
	return d
}

func TestDRDPlacement(t *testing.T) {
	d := drdDriver(t)
	if _, ok := d.s.DRD("data0"); ok {
		t.Fatal("a device is placed before any drd-place")
	}
	r := d.must(&DRDPlace{Device: "data0", Node: 1})
	p, _ := d.s.DRD("data0")
	if p.Node != 1 || p.Epoch != 1 || !p.Ready() || p.Since != r.Index {
		t.Fatalf("placement = %+v", p)
	}
	if r.Event.Kind != EventDRD || r.Event.What != "drd device data0: node 1 serves at epoch 1" {
		t.Errorf("event = %+v", r.Event)
	}
	// A relocation from a live node waits for its release.
	r = d.must(&DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 1, From: 1, Reason: "vigil drd relocate"})
	if p, _ = d.s.DRD("data0"); p.Node != 2 || p.Epoch != 2 || p.Releasing != 1 || p.Ready() {
		t.Fatalf("placement = %+v", p)
	}
	if r.Event.What != "drd device data0: node 2 serves at epoch 2 (was node 1) once node 1 stopped: vigil drd relocate" {
		t.Errorf("event = %q", r.Event.What)
	}
	// A second move while the first is pending is refused; a stale release changes nothing.
	if r := d.apply(&DRDPlace{Device: "data0", Node: 1, ExpectEpoch: 2, From: 2}); r.Status != StatusRejected ||
		!strings.Contains(r.Err.Error(), "still moving (node 1 has not stopped serving it)") {
		t.Errorf("move while moving: %v", r)
	}
	if r := d.apply(&DRDReleased{Device: "data0", Node: 1, Epoch: 1}); r.Status != StatusUnchanged {
		t.Errorf("stale release: %v", r)
	}
	d.must(&DRDReleased{Device: "data0", Node: 1, Epoch: 2})
	if p, _ = d.s.DRD("data0"); !p.Ready() || p.Node != 2 || p.Epoch != 2 {
		t.Fatalf("placement after release = %+v", p)
	}
	// A new epoch on the same node (a restarted server).
	d.must(&DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 2})
	if p, _ = d.s.DRD("data0"); p.Epoch != 3 || !p.Ready() {
		t.Fatalf("placement = %+v", p)
	}
	// The snapshot keeps it, byte for byte.
	data := snap(t, d.s)
	back, err := Restore(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap(t, back), data) {
		t.Error("snapshot round trip changed the drd section")
	}
	if !bytes.Contains(data, []byte(`"drd":[{"device":"data0","node":2,"epoch":3,"since":`)) {
		t.Errorf("snapshot: %s", data)
	}
}

func TestDRDPlaceRejected(t *testing.T) {
	d := drdDriver(t)
	d.must(&NodeJoin{ID: 3, Name: "gamma", Role: RoleWitness})
	d.must(&DRDPlace{Device: "data0", Node: 1})
	for name, tc := range map[string]struct {
		p    Payload
		want string
		is   error
	}{
		"unknown device":       {&DRDPlace{Device: "nope", Node: 1}, `unknown device "nope"`, ErrRejected},
		"not one of its nodes": {&DRDPlace{Device: "data0", Node: 3, ExpectEpoch: 1}, "node 3 is not one of the nodes of device data0 (alpha, beta)", ErrNotServing},
		"stale epoch":          {&DRDPlace{Device: "data0", Node: 2}, "device data0 is at epoch 1, not 0", ErrConflict},
		"from a non-server":    {&DRDPlace{Device: "data0", Node: 1, ExpectEpoch: 1, From: 2}, "not served by node 2", ErrRejected},
		"release to itself":    {&DRDPlace{Device: "data0", Node: 1, ExpectEpoch: 1, From: 1}, "cannot release to itself", ErrRejected},
		"bad reason":           {&DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 1, Reason: "a\x00b"}, "reason", ErrRejected},
		"release unknown":      {&DRDReleased{Device: "nope", Node: 1, Epoch: 1}, `unknown device "nope"`, ErrRejected},
	} {
		t.Run(name, func(t *testing.T) {
			before := snap(t, d.s)
			r := d.apply(tc.p)
			if r.OK() || !errors.Is(r.Err, tc.is) || !strings.Contains(r.Err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want %v with %q", r, tc.is, tc.want)
			}
			after := snap(t, d.s)
			// Only the applied index moves.
			b, _ := Restore(before)
			b.AppliedIndex = d.s.AppliedIndex
			if !bytes.Equal(snap(t, b), after) {
				t.Error("a rejected command changed the state")
			}
		})
	}
	// A node that is not running cannot be given a device.
	d.must(&SetNodeState{ID: 2, State: NodeFaulted})
	if r := d.apply(&DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 1}); r.OK() || !errors.Is(r.Err, ErrNotServing) ||
		!strings.Contains(r.Err.Error(), "node 2 is faulted, not running") {
		t.Errorf("place on a faulted node: %v", r)
	}
	// Without a configuration nothing is placed.
	e := newDriver(t)
	if r := e.apply(&DRDPlace{Device: "data0", Node: 1}); r.OK() || !strings.Contains(r.Err.Error(), "no configuration yet") {
		t.Errorf("place without a configuration: %v", r)
	}
}

func TestDRDPrunedWithConfig(t *testing.T) {
	d := drdDriver(t)
	d.must(&DRDPlace{Device: "data0", Node: 1})
	d.must(&DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 1, From: 1})
	// beta leaves the device's nodes: its placement goes (a failover places it again).
	d.must(&ApplyConfig{Config: drdConfig(t, "  data0: {backing: /dev/vdb, nodes: [alpha]}")})
	if p, ok := d.s.DRD("data0"); ok {
		t.Fatalf("placement on a node the device no longer has: %+v", p)
	}
	d.must(&DRDPlace{Device: "data0", Node: 1})
	// The device goes: so does its placement.
	d.must(&ApplyConfig{Config: mustParse(t, withBase())})
	if len(d.s.DRDPlacements) != 0 {
		t.Fatalf("placements of a deleted device: %+v", d.s.DRDPlacements)
	}
}

func TestDRDConfigSize(t *testing.T) {
	c := drdConfig(t, "  data0: {backing: /dev/vdb, nodes: [alpha], size: 8192}")
	if dev, _ := c.DRDDevice("data0"); dev.Size != 8192 {
		t.Fatalf("size = %d", dev.Size)
	}
	out, err := c.Marshal()
	if err != nil || !strings.Contains(string(out), "size: 8192") {
		t.Fatalf("marshal: %v\n%s", err, out)
	}
	for text, want := range map[string]string{
		"  data0: {backing: /dev/vdb, nodes: [alpha], size: 4097}": "cluster.yaml:25: drd_devices.data0.size: 4097 is not a multiple of 4096 bytes",
		"  data0: {backing: /dev/vdb, nodes: [alpha], size: -1}":   "cluster.yaml:25: drd_devices.data0.size: -1 is not a positive size",
		"  data0: {backing: /dev/vdb, nodes: [alpha], size: 1G}":   "cluster.yaml:25: drd_devices.data0.size: expected an integer",
	} {
		_, err := ParseConfig("cluster.yaml", []byte(withBase("drd_devices:", text)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", text, err, want)
		}
	}
}

func TestDRDRestoreRefusesBadPlacement(t *testing.T) {
	d := drdDriver(t)
	d.must(&DRDPlace{Device: "data0", Node: 1})
	good := string(snap(t, d.s))
	for name, tc := range map[string]struct{ from, to, want string }{
		"unknown device": {`"device":"data0"`, `"device":"data9"`, `drd placement of unknown device "data9"`},
		"epoch 0":        {`"epoch":1`, `"epoch":0`, "placed with epoch 0"},
		"wrong node":     {`"node":1,"epoch"`, `"node":3,"epoch"`, "not one of its nodes"},
	} {
		_, err := Restore([]byte(strings.Replace(good, tc.from, tc.to, 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Restore = %v, want %q", name, err, tc.want)
		}
	}
	// A version 1 snapshot (no drd section) migrates.
	v1 := strings.Replace(good, `"schema_version":2`, `"schema_version":1`, 1)
	v1 = v1[:strings.Index(v1, `,"drd":`)] + v1[strings.Index(v1, `,"events":`):]
	if _, err := Restore([]byte(v1)); err != nil {
		t.Errorf("restore a version 1 snapshot: %v", err)
	}
}
