package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"vigil/control/admin"
	"vigil/control/clusterdb"
)

// ConfigCmd groups the commands on the cluster configuration.
type ConfigCmd struct {
	Apply   ConfigApplyCmd   `cmd:"" help:"Validate a cluster.yaml and commit it as one change, or nothing."`
	Show    ConfigShowCmd    `cmd:"" help:"Print the cluster configuration as cluster.yaml."`
	Diff    ConfigDiffCmd    `cmd:"" help:"List what applying a cluster.yaml would change."`
	Backup  ConfigBackupCmd  `cmd:"" help:"Write a backup of the cluster database (configuration, members, event log) to a file."`
	Restore ConfigRestoreCmd `cmd:"" help:"Commit the configuration held in a backup, as one change."`
}

// readConfigFile reads and validates a cluster.yaml locally, so that a bad file is reported
// with its lines even before vigild is asked.
func readConfigFile(path string) ([]byte, *clusterdb.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	c, err := clusterdb.ParseConfig(path, data)
	if err != nil {
		return nil, nil, err
	}
	return data, c, nil
}

// ConfigApplyCmd applies a configuration file.
type ConfigApplyCmd struct {
	File        string `arg:"" type:"path" help:"The cluster.yaml to apply."`
	ExpectIndex uint64 `name:"expect-index" help:"Fail unless the current configuration was applied at this index (see config show), so that concurrent edits do not overwrite each other."`
}

// Run validates and applies the file.
func (c ConfigApplyCmd) Run(g *Globals, out io.Writer) error {
	data, _, err := readConfigFile(c.File)
	if err != nil {
		return err
	}
	res, err := query(g, func(cl *admin.Client) (admin.ConfigChanges, error) {
		return cl.ConfigApply(admin.ConfigRequest{Name: c.File, Data: string(data), ExpectIndex: c.ExpectIndex})
	})
	if err != nil {
		return fmt.Errorf("apply %s: %w", c.File, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	if res.Status == clusterdb.StatusUnchanged.String() {
		_, err := fmt.Fprintf(out, "%s: nothing to change (configuration at index %d)\n", c.File, res.Index)
		return err
	}
	fmt.Fprintf(out, "applied %s at index %d, %d changes:\n", c.File, res.Index, len(res.Changes))
	return printChanges(out, res.Changes)
}

func printChanges(out io.Writer, changes []clusterdb.Change) error {
	for _, ch := range changes {
		if _, err := fmt.Fprintf(out, "  %s\n", ch); err != nil {
			return err
		}
	}
	return nil
}

// ConfigShowCmd prints the configuration.
type ConfigShowCmd struct {
	Local bool `help:"Print this node's copy without asking the leader (works without quorum; may be stale)."`
}

// Run prints the configuration as YAML; a stale copy is said on stderr.
func (c ConfigShowCmd) Run(g *Globals, out io.Writer, stderr Stderr) error {
	res, err := query(g, func(cl *admin.Client) (admin.ConfigText, error) { return cl.ConfigShow(!c.Local) })
	if err != nil && !c.Local {
		// Without quorum: show this node's copy, marked.
		res, err = query(g, func(cl *admin.Client) (admin.ConfigText, error) { return cl.ConfigShow(false) })
	}
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, res)
	}
	if res.Stale {
		fmt.Fprintf(stderr, "vigil: warning: this copy may be stale: %s\n", res.Reason)
	}
	if res.YAML == "" {
		return errors.New("no configuration has been applied yet (the nodes are in admin-wait): vigil config apply cluster.yaml")
	}
	fmt.Fprintf(out, "# applied at index %d\n", res.Index)
	_, err = io.WriteString(out, res.YAML)
	return err
}

// ConfigDiffCmd shows what a file would change.
type ConfigDiffCmd struct {
	File string `arg:"" type:"path" help:"The cluster.yaml to compare with the cluster's configuration."`
}

// Run prints the changes.
func (c ConfigDiffCmd) Run(g *Globals, out io.Writer) error {
	data, _, err := readConfigFile(c.File)
	if err != nil {
		return err
	}
	res, err := query(g, func(cl *admin.Client) (admin.ConfigChanges, error) {
		return cl.ConfigDiff(admin.ConfigRequest{Name: c.File, Data: string(data)})
	})
	if err != nil {
		return err
	}
	if g.JSON {
		return printJSON(out, res)
	}
	if len(res.Changes) == 0 {
		_, err := fmt.Fprintln(out, "no changes")
		return err
	}
	return printChanges(out, res.Changes)
}

// ConfigBackupCmd writes a backup.
type ConfigBackupCmd struct {
	File string `arg:"" type:"path" help:"Where to write the backup; an existing file is never overwritten."`
}

// Run writes the backup file (mode 0600).
func (c ConfigBackupCmd) Run(g *Globals, out io.Writer, stderr Stderr) error {
	res, err := query(g, (*admin.Client).ConfigBackup)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, res.Data, "", "  "); err != nil {
		return fmt.Errorf("backup from vigild: %w", err)
	}
	buf.WriteByte('\n')
	f, err := os.OpenFile(c.File, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; choose another file (a backup never overwrites one)", c.File)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if res.Stale {
		fmt.Fprintf(stderr, "vigil: warning: the backup may be stale: %s\n", res.Reason)
	}
	if g.JSON {
		return printJSON(out, struct {
			Path  string `json:"path"`
			Index uint64 `json:"index"`
			Stale bool   `json:"stale"`
		}{c.File, res.Index, res.Stale})
	}
	_, err = fmt.Fprintf(out, "wrote a backup of the cluster database at index %d to %s\n", res.Index, c.File)
	return err
}

// ConfigRestoreCmd restores the configuration of a backup.
type ConfigRestoreCmd struct {
	File string `arg:"" type:"path" help:"A file written by vigil config backup."`
}

// Run checks the backup and commits its configuration.
func (c ConfigRestoreCmd) Run(g *Globals, out io.Writer) error {
	data, err := os.ReadFile(c.File)
	if err != nil {
		return err
	}
	st, err := clusterdb.Restore(data)
	if err != nil {
		return fmt.Errorf("%s: not a vigil backup: %w", c.File, err)
	}
	if st.Config == nil {
		return fmt.Errorf("%s: the backup holds no configuration", c.File)
	}
	res, err := query(g, func(cl *admin.Client) (admin.ConfigChanges, error) {
		return cl.ConfigRestore(admin.ConfigRequest{Name: c.File, Data: string(data)})
	})
	if err != nil {
		return fmt.Errorf("restore %s: %w", c.File, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	if res.Status == clusterdb.StatusUnchanged.String() {
		_, err := fmt.Fprintf(out, "%s: the configuration is already the backup's\n", c.File)
		return err
	}
	fmt.Fprintf(out, "restored the configuration of %s (taken at index %d) at index %d, %d changes:\n",
		c.File, st.ConfigIndex, res.Index, len(res.Changes))
	return printChanges(out, res.Changes)
}

// LogCmd shows the cluster event log.
type LogCmd struct {
	Follow bool     `short:"f" help:"Keep printing new events until interrupted."`
	Node   int      `help:"Only events about this node id."`
	Kind   []string `help:"Only events of these kinds (repeatable): node-join, node-leave, node-state, config, quorum, leader, fault, link, note."`
	Limit  int      `default:"50" help:"At most this many of the newest events (0: all kept)."`
}

// Run prints the events, oldest first.
func (c LogCmd) Run(g *Globals, out io.Writer, stderr Stderr) error {
	cl, err := dial(g)
	if err != nil {
		return err
	}
	defer cl.Close()
	q := admin.LogQuery{Node: c.Node, Kinds: c.Kind, Limit: c.Limit}
	res, err := cl.EventLog(q)
	if err != nil {
		return err
	}
	if res.Stale {
		fmt.Fprintf(stderr, "vigil: warning: this node's copy of the log may be stale: %s\n", res.Reason)
	}
	if err := printEvents(g, out, res.Events); err != nil {
		return err
	}
	if !c.Follow {
		return nil
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(stop)
	q.Limit, q.WaitMS, q.Since = 0, 5000, res.Last
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		res, err := cl.EventLog(q)
		if err != nil {
			return err
		}
		if err := printEvents(g, out, res.Events); err != nil {
			return err
		}
		if n := len(res.Events); n > 0 {
			q.Since = res.Events[n-1].Index
		}
	}
}

func printEvents(g *Globals, out io.Writer, evs []clusterdb.Event) error {
	for _, e := range evs {
		if g.JSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := out.Write(append(b, '\n')); err != nil {
				return err
			}
			continue
		}
		node := "-"
		if e.Node != 0 {
			node = fmt.Sprint(e.Node)
		}
		if _, err := fmt.Fprintf(out, "%s  %-6d %-10s node %-3s %-18s %s\n", e.Time.UTC().Format("2006-01-02 15:04:05.000"),
			e.Index, e.Kind, node, e.Who, e.What); err != nil {
			return err
		}
	}
	return nil
}

// NodeCmd groups the membership commands.
type NodeCmd struct {
	Add    NodeAddCmd    `cmd:"" help:"Add a node to the cluster (a raft configuration change): it must be in the configuration, and its vigild started with --join."`
	Remove NodeRemoveCmd `cmd:"" help:"Remove a node from the cluster (a raft configuration change)."`
}

// NodeAddCmd adds a member.
type NodeAddCmd struct {
	ID      int    `arg:"" help:"The node's id (1..63)."`
	Name    string `arg:"" help:"The node's name, as in cluster.yaml."`
	Witness bool   `help:"Add it as a witness (votes, stores the log, hosts nothing)."`
}

// Run proposes the change and waits for its commit.
func (c NodeAddCmd) Run(g *Globals, out io.Writer) error {
	role := string(clusterdb.RoleMember)
	if c.Witness {
		role = string(clusterdb.RoleWitness)
	}
	res, err := query(g, func(cl *admin.Client) (admin.NodeChangeResult, error) {
		return cl.NodeAdd(admin.NodeChange{ID: c.ID, Name: c.Name, Role: role})
	})
	if err != nil {
		return fmt.Errorf("add node %d: %w", c.ID, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	_, err = fmt.Fprintf(out, "node %d (%s) added as %s at index %d\n", c.ID, c.Name, role, res.Index)
	return err
}

// NodeRemoveCmd removes a member.
type NodeRemoveCmd struct {
	ID     int    `arg:"" help:"The node's id."`
	Reason string `help:"Why, for the event log."`
}

// Run proposes the change and waits for its commit.
func (c NodeRemoveCmd) Run(g *Globals, out io.Writer) error {
	res, err := query(g, func(cl *admin.Client) (admin.NodeChangeResult, error) {
		return cl.NodeRemove(admin.NodeChange{ID: c.ID, Reason: c.Reason})
	})
	if err != nil {
		return fmt.Errorf("remove node %d: %w", c.ID, err)
	}
	if g.JSON {
		return printJSON(out, res)
	}
	_, err = fmt.Fprintf(out, "node %d removed at index %d\n", c.ID, res.Index)
	return err
}

// printClusterLines writes the cluster section of vigil status.
func printClusterLines(tw *tabwriter.Writer, cs admin.ClusterStatus) {
	raftState := strings.ToLower(strings.TrimPrefix(cs.RaftState, "State"))
	fmt.Fprintf(tw, "Membership:\t%s (%s), raft %s in term %d\n", cs.State, cs.Role, raftState, cs.Term)
	if cs.Quorate {
		fmt.Fprintf(tw, "Quorum:\tyes, %d of %d voters reachable\n", len(cs.Reachable), len(cs.Voters))
	} else {
		fmt.Fprintf(tw, "Quorum:\tNO: %s (changes are refused; reads are stale)\n", cs.Reason)
	}
	switch {
	case cs.Leader == 0:
		fmt.Fprintf(tw, "Leader:\tnone\n")
	case cs.LeaderName != "":
		fmt.Fprintf(tw, "Leader:\t%d %s\n", cs.Leader, cs.LeaderName)
	default:
		fmt.Fprintf(tw, "Leader:\t%d\n", cs.Leader)
	}
	cfg := fmt.Sprintf("configuration applied at index %d", cs.ConfigIndex)
	if cs.ConfigIndex == 0 {
		cfg = "no configuration yet: vigil config apply cluster.yaml"
	}
	fmt.Fprintf(tw, "Database:\tapplied %d of %d committed; %s\n", cs.Applied, cs.Commit, cfg)
	if cs.Error != "" {
		fmt.Fprintf(tw, "Error:\t%s\n", cs.Error)
	}
}

// printMembers writes the membership records after vigil status.
func printMembers(out io.Writer, cs admin.ClusterStatus) error {
	if len(cs.Members) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := table(out)
	fmt.Fprintln(tw, "MEMBER\tNAME\tROLE\tSTATE\tVOTER\tSINCE")
	for _, m := range cs.Members {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\tindex %d\n", m.ID, m.Name, m.Role, m.State, yesNo(m.Voter), m.Since)
	}
	return tw.Flush()
}

// clusterStatus asks for the cluster section; ok is false when the daemon runs none.
func clusterStatus(g *Globals) (admin.ClusterStatus, bool, error) {
	cs, err := query(g, (*admin.Client).ClusterStatus)
	if err != nil {
		if strings.Contains(err.Error(), "runs no cluster database") {
			return cs, false, nil
		}
		return cs, false, err
	}
	return cs, true, nil
}
