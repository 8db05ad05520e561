package cluster

import (
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/control/clusterdb"
)

const drdYAML = `version: 1
nodes:
  alpha: {id: 1}
  beta: {id: 2}
  gamma: {id: 3}
  wit: {id: 4, role: witness}
drd_devices:
  data0: {backing: /dev/vdb, nodes: [alpha, beta]}
`

// drdState is a database with alpha, beta and gamma running, wit a witness, data0 on alpha.
func drdState(t *testing.T) *clusterdb.State {
	t.Helper()
	c, err := clusterdb.ParseConfig("cluster.yaml", []byte(drdYAML))
	if err != nil {
		t.Fatal(err)
	}
	st := clusterdb.New()
	var i uint64
	apply := func(p clusterdb.Payload) {
		i++
		data, err := clusterdb.Encode(clusterdb.Command{At: time.Unix(1, 0), Who: "test", Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		if r := st.Apply(i, data); !r.OK() {
			t.Fatalf("%T: %v", p, r)
		}
	}
	apply(&clusterdb.ApplyConfig{Config: c})
	for id, name := range map[int]string{1: "alpha", 2: "beta", 3: "gamma"} {
		apply(&clusterdb.NodeJoin{ID: id, Name: name, Role: clusterdb.RoleMember})
		apply(&clusterdb.SetNodeState{ID: id, State: clusterdb.NodeRunning})
	}
	apply(&clusterdb.DRDPlace{Device: "data0", Node: 1})
	return st
}

func TestWithDRDDevice(t *testing.T) {
	st := drdState(t)
	c, err := WithDRDDevice(st.Config, admin.DRDDefine{Name: "logs", Backing: "/srv/logs.img", Nodes: []string{"gamma"}, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := c.DRDDevice("logs"); !ok || d.Size != 1<<20 || d.Nodes[0] != "gamma" {
		t.Errorf("device = %+v", d)
	}
	if _, ok := st.Config.DRDDevice("logs"); ok {
		t.Error("WithDRDDevice changed its input")
	}
	for _, tc := range []struct {
		req  admin.DRDDefine
		want string
	}{
		{admin.DRDDefine{Name: "data0", Backing: "/x", Nodes: []string{"alpha"}}, "device data0 exists already"},
		{admin.DRDDefine{Name: "", Backing: "/x", Nodes: []string{"alpha"}}, "no device name"},
		{admin.DRDDefine{Name: "b", Backing: "x", Nodes: []string{"alpha"}}, `drd_devices.b.backing: "x" is not an absolute path`},
		{admin.DRDDefine{Name: "b", Backing: "/dev/vdb", Nodes: []string{"alpha"}}, "/dev/vdb is already the backing of drd_devices.data0"},
		{admin.DRDDefine{Name: "b", Backing: "/x", Nodes: []string{"wit"}}, "witnesses host no services"},
		{admin.DRDDefine{Name: "b", Backing: "/x"}, "drd_devices.b.nodes: at least one node is required"},
		{admin.DRDDefine{Name: "b", Backing: "/x", Nodes: []string{"alpha"}, Size: 100}, "drd_devices.b.size: 100 is not a multiple of 4096"},
		{admin.DRDDefine{Name: "b c", Backing: "/x", Nodes: []string{"alpha"}}, "not a valid device name"},
	} {
		if _, err := WithDRDDevice(st.Config, tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.req, err, tc.want)
		}
	}
	if _, err := WithDRDDevice(nil, admin.DRDDefine{Name: "b"}); err == nil || !strings.Contains(err.Error(), "no cluster configuration yet") {
		t.Errorf("without a configuration: %v", err)
	}
	if c, err := WithoutDRDDevice(st.Config, "data0"); err != nil || len(c.DRDDevices) != 0 || len(st.Config.DRDDevices) != 1 {
		t.Errorf("WithoutDRDDevice: %v %+v", err, c)
	}
	if _, err := WithoutDRDDevice(st.Config, "nope"); err == nil || err.Error() != `no device "nope"` {
		t.Errorf("WithoutDRDDevice(nope): %v", err)
	}
}

func TestRelocation(t *testing.T) {
	st := drdState(t)
	p, err := Relocation(st, "data0", "beta")
	if err != nil {
		t.Fatal(err)
	}
	if *p != (clusterdb.DRDPlace{Device: "data0", Node: 2, ExpectEpoch: 1, From: 1, Reason: "relocated by an administrator"}) {
		t.Errorf("relocation = %+v", *p)
	}
	if p, err := Relocation(st, "data0", "2"); err != nil || p.Node != 2 {
		t.Errorf("by id: %+v %v", p, err)
	}
	for _, tc := range []struct{ dev, node, want string }{
		{"nope", "beta", `no device "nope"`},
		{"data0", "delta", `no node "delta" in the configuration`},
		{"data0", "gamma", "node gamma cannot serve device data0: it is not one of its nodes"},
		{"data0", "alpha", "device data0 is served by node alpha already (epoch 1)"},
	} {
		if _, err := Relocation(st, tc.dev, tc.node); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("relocate %s to %s: %v, want %q", tc.dev, tc.node, err, tc.want)
		}
	}
	// A relocation away from a node that is not running has nothing to wait for.
	data, _ := clusterdb.Encode(clusterdb.Command{At: time.Unix(2, 0), Who: "test",
		Payload: &clusterdb.SetNodeState{ID: 1, State: clusterdb.NodeFaulted}})
	if r := st.Apply(st.AppliedIndex+1, data); !r.OK() {
		t.Fatal(r)
	}
	if p, err := Relocation(st, "data0", "beta"); err != nil || p.From != 0 {
		t.Errorf("away from a faulted node: %+v %v", p, err)
	}
	if _, err := Relocation(st, "data0", "alpha"); err == nil || !strings.Contains(err.Error(), "it is faulted, not running") {
		t.Errorf("to a faulted node: %v", err)
	}
}

func TestDRDDevicesList(t *testing.T) {
	st := drdState(t)
	l := DRDDevices(st)
	if len(l) != 1 || l[0].Name != "data0" || l[0].Node != 1 || l[0].NodeName != "alpha" || l[0].Epoch != 1 || !l[0].Ready ||
		l[0].BlockSize != 4096 {
		t.Errorf("list = %+v", l)
	}
	if l := DRDDevices(clusterdb.New()); l == nil || len(l) != 0 {
		t.Errorf("list without a configuration = %#v", l)
	}
}
