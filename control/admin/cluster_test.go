package admin

import (
	"errors"
	"strings"
	"testing"

	"vigil/control/clusterdb"
)

// fakeCluster is a Provider with the cluster methods; it records what it was asked.
type fakeCluster struct {
	*fakeProvider
	who  string
	req  ConfigRequest
	logQ LogQuery
}

func (f *fakeCluster) ClusterStatus() ClusterStatus {
	return ClusterStatus{NodeID: 1, Name: "alpha", State: "running", Quorate: true, Voters: []uint16{1, 2, 3}}
}
func (f *fakeCluster) ConfigShow(lin bool) (ConfigText, error) {
	return ConfigText{YAML: "version: 1\n", Index: 7, Stale: !lin}, nil
}
func (f *fakeCluster) ConfigDiff(req ConfigRequest) (ConfigChanges, error) {
	f.req = req
	return ConfigChanges{Changes: []clusterdb.Change{{Kind: clusterdb.Added, Path: "users.bob"}}}, nil
}
func (f *fakeCluster) ConfigApply(req ConfigRequest, who string) (ConfigChanges, error) {
	f.req, f.who = req, who
	return ConfigChanges{}, errors.New("no quorum: no leader known")
}
func (f *fakeCluster) ConfigBackup() (Backup, error) {
	return Backup{Data: []byte(`{"schema_version":1}`)}, nil
}
func (f *fakeCluster) ConfigRestore(req ConfigRequest, who string) (ConfigChanges, error) {
	f.req, f.who = req, who
	return ConfigChanges{Status: "applied", Index: 9}, nil
}
func (f *fakeCluster) EventLog(q LogQuery) (LogResult, error) {
	f.logQ = q
	return LogResult{Events: []clusterdb.Event{}}, nil
}
func (f *fakeCluster) NodeAdd(req NodeChange, who string) (NodeChangeResult, error) {
	f.who = who
	return NodeChangeResult{Index: 11}, nil
}
func (f *fakeCluster) NodeRemove(req NodeChange, who string) (NodeChangeResult, error) {
	return NodeChangeResult{Index: 12}, nil
}

func TestClusterMethods(t *testing.T) {
	f := &fakeCluster{fakeProvider: newFake()}
	for _, tc := range []struct{ in, want string }{
		{`{"method":"cluster"}`, `"quorate":true`},
		{`{"method":"cluster","params":{"x":1}}`, `method \"cluster\": takes no params`},
		{`{"method":"config.show","params":{"linearizable":true}}`, `"index":7,"stale":false`},
		{`{"method":"config.show","params":{"linearizable":"yes"}}`, `method \"config.show\": params: json: cannot unmarshal string`},
		{`{"method":"config.diff","params":{"name":"c.yaml","data":"version: 1"}}`, `"path":"users.bob"`},
		{`{"method":"config.diff","params":{"name":"c.yaml","dat":"x"}}`, `unknown field \"dat\"`},
		{`{"method":"config.apply","params":{"data":"x"}}`, `{"error":"method \"config.apply\": no quorum: no leader known"}`},
		{`{"method":"config.apply","params":[1]}`, `method \"config.apply\": params: json: cannot unmarshal array`},
		{`{"method":"config.restore","params":{"data":"{}"}}`, `"index":9`},
		{`{"method":"log","params":{"node":2,"kinds":["config"],"wait_ms":10}}`, `"events":[]`},
		{`{"method":"log","params":{"wait_ms":-1}}`, `wait_ms -1 out of range`},
		{`{"method":"node.add","params":{"id":4,"name":"delta"}}`, `"index":11`},
		{`{"method":"node.remove","params":{"id":"4"}}`, `cannot unmarshal string`},
	} {
		got := handleLineAs(f, []byte(tc.in), "alice")
		checkResponseLine(t, []byte(tc.in), got)
		if !strings.Contains(string(got), tc.want) {
			t.Errorf("%s: got %s, want it to contain %s", tc.in, got, tc.want)
		}
	}
	if f.who != "alice" || f.logQ.Node != 2 || f.req.Data != "{}" {
		t.Errorf("the provider was asked %+v", f)
	}
	// A daemon without a cluster database says so.
	got := handleLine(newFake(), []byte(`{"method":"config.show"}`))
	if !strings.Contains(string(got), "runs no cluster database") {
		t.Errorf("config.show without a cluster database: %s", got)
	}
}
