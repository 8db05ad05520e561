package admin

import (
	"errors"
	"strings"
	"testing"
)

// fakeDRD is a cluster daemon with DRD; it records what it was asked.
type fakeDRD struct {
	*fakeCluster
	define DRDDefine
	move   DRDMove
	ref    DRDRef
}

func (f *fakeDRD) DRDList() (DRDList, error) {
	return DRDList{Devices: []DRDDevice{{Name: "data0", Backing: "/dev/vdb", Nodes: []string{"alpha"}, BlockSize: 4096,
		Node: 1, Epoch: 3, Ready: true}}, Served: []DRDServed{}}, nil
}
func (f *fakeDRD) DRDCreate(req DRDDefine, who string) (DRDChange, error) {
	f.define, f.who = req, who
	return DRDChange{Index: 21}, nil
}
func (f *fakeDRD) DRDDelete(req DRDRef, who string) (DRDChange, error) {
	f.ref, f.who = req, who
	return DRDChange{}, errors.New(`no device "nope"`)
}
func (f *fakeDRD) DRDRelocate(req DRDMove, who string) (DRDChange, error) {
	f.move, f.who = req, who
	return DRDChange{Index: 22, Device: &DRDDevice{Name: req.Name, Node: 2, Epoch: 4}}, nil
}
func (f *fakeDRD) DRDLocate(req DRDRef) (DRDLocation, error) {
	return DRDLocation{Device: req.Name, Node: 2, Epoch: 4, Ready: true, Remote: "198.18.1.2:7406"}, nil
}

func TestDRDMethods(t *testing.T) {
	f := &fakeDRD{fakeCluster: &fakeCluster{fakeProvider: newFake()}}
	for _, tc := range []struct{ in, want string }{
		{`{"method":"drd.list"}`, `"name":"data0","backing":"/dev/vdb","nodes":["alpha"],"block_size":4096,"node":1,"epoch":3`},
		{`{"method":"drd.list","params":{"name":"x"}}`, `method \"drd.list\": takes no params`},
		{`{"method":"drd.create","params":{"name":"d1","backing":"/dev/vdc","nodes":["alpha","beta"],"size":8192}}`, `"index":21`},
		{`{"method":"drd.create","params":{"name":"d1","backing":"/dev/vdc","nodes":"alpha"}}`, `cannot unmarshal string`},
		{`{"method":"drd.create","params":{"name":"d1","size":-1}}`, `cannot unmarshal number -1`},
		{`{"method":"drd.create","params":{"name":"d1","bakcing":"/x"}}`, `unknown field \"bakcing\"`},
		{`{"method":"drd.delete","params":{}}`, `\"name\" (a device name) is required`},
		{`{"method":"drd.delete","params":{"name":"nope"}}`, `{"error":"method \"drd.delete\": no device \"nope\""}`},
		{`{"method":"drd.relocate","params":{"name":"data0"}}`, `\"node\" (a node name or id) is required`},
		{`{"method":"drd.relocate","params":{"name":"data0","node":"beta","wait_ms":70000}}`, `wait_ms 70000 out of range`},
		{`{"method":"drd.relocate","params":{"name":"data0","node":"beta","wait_ms":100}}`, `"index":22,"device":{"name":"data0"`},
		{`{"method":"drd.locate","params":{"name":"data0"}}`, `"remote":"198.18.1.2:7406"`},
		{`{"method":"drd.locate"}`, `\"name\" (a device name) is required`},
	} {
		got := handleLineAs(f, []byte(tc.in), "alice")
		checkResponseLine(t, []byte(tc.in), got)
		if !strings.Contains(string(got), tc.want) {
			t.Errorf("%s: got %s, want it to contain %s", tc.in, got, tc.want)
		}
	}
	if f.who != "alice" || f.define.Size != 8192 || len(f.define.Nodes) != 2 || f.move.Node != "beta" || f.move.WaitMS != 100 {
		t.Errorf("the provider was asked %+v", f)
	}
	// A daemon without the cluster database says so.
	got := handleLine(newFake(), []byte(`{"method":"drd.list"}`))
	if !strings.Contains(string(got), "runs no cluster database, so no DRD devices") {
		t.Errorf("drd.list without a cluster database: %s", got)
	}
}
