package main

import (
	"errors"
	"strings"
	"testing"

	"vigil/control/admin"
)

// fakeDRD answers the DRD methods with canned data and records what it was asked.
type fakeDRD struct {
	fakeClusterDB
	created []admin.DRDDefine
	moved   []admin.DRDMove
}

func (*fakeDRD) DRDList() (admin.DRDList, error) {
	return admin.DRDList{Devices: []admin.DRDDevice{
		{Name: "data0", Backing: "/dev/vdb", Nodes: []string{"alpha", "beta"}, Size: 1 << 30, BlockSize: 4096,
			Node: 2, NodeName: "beta", Epoch: 7, Ready: true, Since: 88},
		{Name: "logs", Backing: "/srv/logs.img", Nodes: []string{"alpha"}, BlockSize: 4096},
	}, Served: []admin.DRDServed{{Device: "data0", Epoch: 7, Size: 1 << 30, Local: "/run/vigil/drd/data0.sock",
		Remote: "198.18.1.2:7406", Since: "2026-01-01T00:00:00Z"}}}, nil
}
func (f *fakeDRD) DRDCreate(req admin.DRDDefine, _ string) (admin.DRDChange, error) {
	f.created = append(f.created, req)
	if req.Backing == "relative" {
		return admin.DRDChange{}, errors.New(`drd_devices.d1.backing: "relative" is not an absolute path`)
	}
	return admin.DRDChange{Index: 90}, nil
}
func (*fakeDRD) DRDDelete(req admin.DRDRef, _ string) (admin.DRDChange, error) {
	return admin.DRDChange{}, errors.New(`no device "` + req.Name + `"`)
}
func (f *fakeDRD) DRDRelocate(req admin.DRDMove, _ string) (admin.DRDChange, error) {
	f.moved = append(f.moved, req)
	return admin.DRDChange{Index: 91, Device: &admin.DRDDevice{Name: req.Name, Node: 1, NodeName: "alpha", Epoch: 8, Ready: true}}, nil
}
func (*fakeDRD) DRDLocate(admin.DRDRef) (admin.DRDLocation, error) { return admin.DRDLocation{}, nil }

func TestDRDCommands(t *testing.T) {
	f := &fakeDRD{}
	sock := serveProvider(t, f)
	out := runOK(t, "--socket", sock, "drd", "list")
	for _, want := range []string{
		"DEVICE  SIZE     BACKING        NODES       SERVED BY  EPOCH  STATE\n",
		"data0   1G       /dev/vdb       alpha,beta  2 beta     7      placed\n",
		"logs    backing  /srv/logs.img  alpha       -          0      unplaced\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("vigil drd list lacks %q:\n%s", want, out)
		}
	}
	out = runOK(t, "--socket", sock, "drd", "status", "data0")
	for _, want := range []string{"Served by:    2 beta\n", "Here:         serving epoch 7, 1073741824 bytes", "Local path:   /run/vigil/drd/data0.sock\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("vigil drd status lacks %q:\n%s", want, out)
		}
	}
	if out := runOK(t, "--socket", sock, "drd", "create", "d1", "--backing", "/dev/vdc", "--nodes", "alpha,beta", "--size", "64M"); !strings.Contains(out, "drd device d1 created at index 90") {
		t.Errorf("create: %q", out)
	}
	if len(f.created) != 1 || f.created[0].Size != 64<<20 || len(f.created[0].Nodes) != 2 {
		t.Errorf("created %+v", f.created)
	}
	if out := runOK(t, "--socket", sock, "drd", "relocate", "data0", "alpha"); out != "drd device data0 served by node 1 alpha at epoch 8 (index 91)\n" {
		t.Errorf("relocate: %q", out)
	}
	if len(f.moved) != 1 || f.moved[0].WaitMS != 10000 {
		t.Errorf("moved %+v", f.moved)
	}
	// Bad input: refused before vigild is asked, or vigild's reason is shown; nothing changes.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"drd", "create", "d2", "--backing", "/dev/vdd", "--nodes", "alpha", "--size", "1000"}, "1000 bytes is not a multiple of the 4096-byte block"},
		{[]string{"drd", "create", "d2", "--backing", "/dev/vdd", "--nodes", "alpha", "--size", "lots"}, `--size "lots": want a positive number`},
		{[]string{"drd", "create", "d2", "--nodes", "alpha"}, "missing flags: --backing"},
		{[]string{"drd", "create", "d2", "--backing", "/dev/vdd"}, "missing flags: --nodes"},
		{[]string{"drd", "relocate", "data0"}, `expected "<node>"`},
		{[]string{"drd", "relocate", "data0", "beta", "--wait", "2h"}, "--wait: want 0 to 1m"},
		{[]string{"drd", "status", "nope"}, `no drd device "nope"`},
	} {
		code, _, stderr := runErr(t, append([]string{"--socket", sock}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
	if len(f.created) != 1 || len(f.moved) != 1 {
		t.Errorf("bad input reached vigild: %+v %+v", f.created, f.moved)
	}
	code, _, stderr := runErr(t, "--socket", sock, "drd", "create", "d1", "--backing", "relative", "--nodes", "alpha")
	if code != 1 || !strings.Contains(stderr, `create drd device d1: admin drd.create: vigild answered: method "drd.create": drd_devices.d1.backing: "relative" is not an absolute path`) {
		t.Errorf("create with a relative backing: exit %d, %q", code, stderr)
	}
	code, _, stderr = runErr(t, "--socket", sock, "drd", "delete", "nope")
	if code != 1 || !strings.Contains(stderr, `no device "nope"`) {
		t.Errorf("delete nope: exit %d, %q", code, stderr)
	}
	// A daemon without a cluster database says why.
	plain := serveFake(t)
	if code, _, stderr := runErr(t, "--socket", plain, "drd", "list"); code != 1 || !strings.Contains(stderr, "runs no cluster database, so no DRD devices") {
		t.Errorf("drd list without a cluster database: exit %d, %q", code, stderr)
	}
}
