package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vigil/control/admin"
	"vigil/control/clusterdb"
)

// fakeClusterDB answers the cluster methods with canned data and records applies.
type fakeClusterDB struct {
	fake
	applied []string
}

func (*fakeClusterDB) ClusterStatus() admin.ClusterStatus {
	return admin.ClusterStatus{NodeID: 1, Name: "alpha", Role: "member", State: "running", RaftState: "StateFollower",
		Term: 4, Leader: 2, LeaderName: "beta", Quorate: true, Voters: []uint16{1, 2, 3}, Reachable: []uint16{1, 2, 3},
		Applied: 40, Commit: 40, ConfigIndex: 17,
		Members: []admin.MemberStatus{{ID: 1, Name: "alpha", Role: "member", State: "running", Since: 20, Voter: true},
			{ID: 3, Name: "gamma", Role: "witness", State: "faulted", Since: 33, Voter: true}}}
}
func (*fakeClusterDB) ConfigShow(bool) (admin.ConfigText, error) {
	return admin.ConfigText{YAML: "version: 1\n", Index: 17, Stale: true, Reason: "no quorum: no leader known"}, nil
}
func (*fakeClusterDB) ConfigDiff(admin.ConfigRequest) (admin.ConfigChanges, error) {
	return admin.ConfigChanges{Changes: []clusterdb.Change{{Kind: clusterdb.Added, Path: "users.bob"}}}, nil
}
func (f *fakeClusterDB) ConfigApply(req admin.ConfigRequest, who string) (admin.ConfigChanges, error) {
	f.applied = append(f.applied, req.Name)
	return admin.ConfigChanges{Changes: []clusterdb.Change{{Kind: clusterdb.Added, Path: "users.bob"}}, Index: 41, Status: "applied"}, nil
}
func (*fakeClusterDB) ConfigBackup() (admin.Backup, error) {
	return admin.Backup{}, errors.New("unused")
}
func (*fakeClusterDB) ConfigRestore(admin.ConfigRequest, string) (admin.ConfigChanges, error) {
	return admin.ConfigChanges{}, errors.New("unused")
}
func (*fakeClusterDB) EventLog(q admin.LogQuery) (admin.LogResult, error) {
	return admin.LogResult{Events: []clusterdb.Event{{Index: 12, Time: now, Kind: clusterdb.EventNodeJoin, Node: 3, Who: "vigild@gamma",
		What: "node 3 (gamma) joined as witness"}}, Last: 40}, nil
}
func (*fakeClusterDB) NodeAdd(admin.NodeChange, string) (admin.NodeChangeResult, error) {
	return admin.NodeChangeResult{}, errors.New("no quorum: no leader known")
}
func (*fakeClusterDB) NodeRemove(admin.NodeChange, string) (admin.NodeChangeResult, error) {
	return admin.NodeChangeResult{Index: 50}, nil
}

func runErr(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut, func() time.Time { return now })
	return code, out.String(), errOut.String()
}

func TestClusterCommands(t *testing.T) {
	f := &fakeClusterDB{}
	sock := serveProvider(t, f)
	out := runOK(t, "--socket", sock, "status")
	for _, want := range []string{
		"Membership:   running (member), raft follower in term 4\n",
		"Quorum:       yes, 3 of 3 voters reachable\n",
		"Leader:       2 beta\n",
		"Database:     applied 40 of 40 committed; configuration applied at index 17\n",
		"3       gamma  witness  faulted  yes    index 33\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("vigil status lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "cluster.yaml")
	os.WriteFile(good, []byte("version: 1\nnodes:\n  alpha: {id: 1}\nusers:\n  bob: {role: admin}\n"), 0o600)
	if out := runOK(t, "--socket", sock, "config", "apply", good); !strings.Contains(out, "applied "+good+" at index 41, 1 changes:\n  added users.bob\n") {
		t.Errorf("config apply: %q", out)
	}
	// A bad file is refused before vigild is asked, with file and line.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nnodes:\n  alpha: {id: 1, colour: red}\n"), 0o600)
	code, _, stderr := runErr(t, "--socket", sock, "config", "apply", bad)
	if code != 1 || !strings.Contains(stderr, bad+":3:") || len(f.applied) != 1 {
		t.Errorf("config apply of a bad file: exit %d, %q, applied %v", code, stderr, f.applied)
	}
	// A stale copy is shown with a warning on stderr.
	code, stdout, stderr := runErr(t, "--socket", sock, "config", "show")
	if code != 0 || stdout != "# applied at index 17\nversion: 1\n" || !strings.Contains(stderr, "may be stale: no quorum") {
		t.Errorf("config show: exit %d, %q, %q", code, stdout, stderr)
	}
	if out := runOK(t, "--socket", sock, "log", "--node", "3"); !strings.Contains(out, "12     node-join  node 3   vigild@gamma       node 3 (gamma) joined as witness") {
		t.Errorf("log: %q", out)
	}
	code, _, stderr = runErr(t, "--socket", sock, "node", "add", "4", "delta")
	if code != 1 || !strings.Contains(stderr, "add node 4: admin node.add: vigild answered: method \"node.add\": no quorum") {
		t.Errorf("node add without quorum: exit %d, %q", code, stderr)
	}
	if out := runOK(t, "--socket", sock, "node", "remove", "3"); out != "node 3 removed at index 50\n" {
		t.Errorf("node remove: %q", out)
	}
	// Arguments are checked before anything is sent.
	if code, _, stderr := runErr(t, "--socket", sock, "node", "add", "four", "delta"); code == 0 || !strings.Contains(stderr, "four") {
		t.Errorf("node add four: exit %d, %q", code, stderr)
	}
	// A daemon without a cluster database: status as before, cluster commands say why.
	plain := serveFake(t)
	if out := runOK(t, "--socket", plain, "status"); strings.Contains(out, "Membership") {
		t.Errorf("status of a daemon without a cluster database:\n%s", out)
	}
	if code, _, stderr := runErr(t, "--socket", plain, "log"); code != 1 || !strings.Contains(stderr, "runs no cluster database") {
		t.Errorf("log without a cluster database: exit %d, %q", code, stderr)
	}
}
