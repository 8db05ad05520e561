package replica

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"vigil/control/clusterdb"
)

var simSchedules = flag.Int("sim.schedules", 0, "number of simulated schedules (default: 300, 60 with -short)")

// regInput and regOutput are the operations of the linearizability model: the cluster
// configuration as a register clients write (apply-config) and read (linearizable reads).
type regInput struct {
	write bool
	value int
}

type regOutput struct {
	value   int
	unknown bool // a write whose outcome the client never learned
}

var registerModel = porcupine.Model{
	Init: func() any { return -1 },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(regInput), output.(regOutput)
		if in.write {
			return true, in.value
		}
		return out.value == state.(int), state
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		if in.write {
			return fmt.Sprintf("write(%d) unknown=%v", in.value, out.unknown)
		}
		return fmt.Sprintf("read() -> %d", out.value)
	},
}

// schedule is one simulated run with clients, faults and checks.
type schedule struct {
	t       *testing.T
	s       *Sim
	clock   int64
	clients []*client
	pending map[[2]uint64]*client // (node, seq) -> client waiting
	history []porcupine.Operation
	next    int
}

type client struct {
	id   int
	busy bool
	op   porcupine.Operation
	node uint64
}

func newSchedule(t *testing.T, opts SimOptions) *schedule {
	s, err := NewSim(opts)
	if err != nil {
		t.Fatal(err)
	}
	sc := &schedule{t: t, s: s, pending: map[[2]uint64]*client{}}
	for i := range 3 {
		sc.clients = append(sc.clients, &client{id: i})
	}
	s.OnDone = sc.done
	return sc
}

func (sc *schedule) tick() int64 { sc.clock++; return sc.clock }

func (sc *schedule) done(node uint64, d Done) {
	c, ok := sc.pending[[2]uint64{node, d.Seq}]
	if !ok {
		return // a membership proposal of the core itself
	}
	delete(sc.pending, [2]uint64{node, d.Seq})
	in := c.op.Input.(regInput)
	switch {
	case in.write && d.Err == nil:
		c.op.Output, c.op.Return = regOutput{value: in.value}, sc.tick()
		sc.history = append(sc.history, c.op)
	case in.write:
		c.op.Output, c.op.Return = regOutput{unknown: true}, math.MaxInt64
		sc.history = append(sc.history, c.op)
	case d.Err == nil:
		c.op.Output, c.op.Return = regOutput{value: SimValue(sc.s.Node(node).Core.State())}, sc.tick()
		sc.history = append(sc.history, c.op)
	}
	c.busy = false
}

// start makes client c call an operation on a random up node.
func (sc *schedule) start(c *client, write bool) {
	s := sc.s
	var up []uint64
	for _, n := range s.Nodes {
		if n.Up {
			up = append(up, n.ID)
		}
	}
	if len(up) == 0 {
		return
	}
	node := up[s.Rng.IntN(len(up))]
	sc.startOn(c, write, node)
}

func (sc *schedule) startOn(c *client, write bool, node uint64) {
	s := sc.s
	in := regInput{write: write}
	if write {
		sc.next++
		in.value = sc.next
	}
	c.op = porcupine.Operation{ClientId: c.id, Input: in, Call: sc.tick()}
	c.busy, c.node = true, node
	var seq uint64
	err := s.Do(node, func(core *Core) error {
		var err error
		if write {
			seq, err = core.Propose(clusterdb.Command{Who: fmt.Sprintf("client%d", c.id), At: s.Now,
				Payload: &clusterdb.ApplyConfig{Config: s.Config(s.Opts.Nodes, in.value)}})
		} else {
			seq, err = core.Read()
		}
		if err == nil {
			sc.pending[[2]uint64{node, seq}] = c
		}
		return err
	})
	if err != nil {
		if !errors.Is(err, ErrNoQuorum) {
			sc.t.Fatalf("seed %d: %v", s.Opts.Seed, err)
		}
		c.busy = false // refused before it was proposed: it never happened
	}
}

// crash crashes node id; its clients' operations end with an unknown outcome.
func (sc *schedule) crash(id uint64) { sc.stop(id, sc.s.Crash) }

// kill kills node id's daemon as kill -9 does (its kernel stays: stalled to its peers, its
// streams closed 0 to 2 rounds later, or never); like crash for its clients.
func (sc *schedule) kill(id uint64) {
	sc.stop(id, func(id uint64) { sc.s.Kill(id, sc.s.Rng.IntN(4)-1) })
}

func (sc *schedule) stop(id uint64, how func(uint64)) {
	how(id)
	for k, c := range sc.pending {
		if k[0] == id {
			delete(sc.pending, k)
			if c.op.Input.(regInput).write {
				c.op.Output, c.op.Return = regOutput{unknown: true}, math.MaxInt64
				sc.history = append(sc.history, c.op)
			}
			c.busy = false
		}
	}
}

func (sc *schedule) run(rounds int) {
	s := sc.s
	for range rounds {
		for _, c := range sc.clients {
			if !c.busy && s.Rng.IntN(4) == 0 {
				sc.start(c, s.Rng.IntN(2) == 0)
			}
		}
		switch r := s.Rng.IntN(1000); {
		case r < 5:
			sc.crash(uint64(1 + s.Rng.IntN(len(s.Nodes))))
		case r < 8:
			// In the middle of its next Ready: its early messages out, its save lost.
			s.CrashAtSave(uint64(1 + s.Rng.IntN(len(s.Nodes))))
		case r < 11:
			if l := s.Leader(); l != 0 && r < 10 {
				sc.crash(l)
			} else if l != 0 {
				s.CrashAtSave(l)
			}
		case r < 14:
			if l := s.Leader(); l != 0 {
				sc.kill(l)
			}
		case r < 60:
			for _, n := range s.Nodes {
				if !n.Up && s.Rng.IntN(3) == 0 {
					sc.must(s.Restart(n.ID))
				}
			}
		case r < 70:
			ids := make([]uint64, len(s.Nodes))
			for i := range ids {
				ids[i] = uint64(i + 1)
			}
			s.Rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			cut := 1 + s.Rng.IntN(len(ids)-1)
			s.Partition(ids[:cut], ids[cut:])
		case r < 100:
			s.Partition()
		case r < 120:
			// A node replaces its streams, or a heartbeat plane wrongly reports a peer
			// stalled: neither may cost safety, nor liveness once it stops.
			a, b := uint64(1+s.Rng.IntN(len(s.Nodes))), uint64(1+s.Rng.IntN(len(s.Nodes)))
			if s.Node(a).Up && r < 110 {
				sc.must(s.CloseStreams(a))
			} else if s.Node(b).Up && a != b {
				sc.must(s.ReportStalled(b, a))
			}
		}
		sc.must(s.Run(1))
	}
	s.DisarmCrashAtSave() // what follows checks liveness: no armed crash may strike then
}

func (sc *schedule) must(err error) {
	if err != nil {
		sc.t.Fatalf("seed %d: %v", sc.s.Opts.Seed, err)
	}
}

// converge runs until the nodes in ids agree (see Sim.Converged), failing after limit rounds.
func (sc *schedule) converge(ids []uint64, limit int, what string) {
	for range limit {
		if ok, _ := sc.s.Converged(ids); ok {
			return
		}
		sc.must(sc.s.Run(1))
	}
	_, why := sc.s.Converged(ids)
	sc.t.Fatalf("seed %d: %s: no convergence of %v in %d rounds: %s", sc.s.Opts.Seed, what, ids, limit, why)
}

// commitThrough writes through node id and waits for the outcome.
func (sc *schedule) commitThrough(id uint64, limit int, what string) {
	c := sc.clients[0]
	for range limit {
		if !c.busy {
			break
		}
		sc.must(sc.s.Run(1))
	}
	for range 3 { // an outcome may be unknown if the leader changed meanwhile: try again
		sc.startOn(c, true, id)
		for range limit {
			if !c.busy {
				break
			}
			sc.must(sc.s.Run(1))
		}
		if !c.busy && !sc.history[len(sc.history)-1].Output.(regOutput).unknown {
			return
		}
	}
	sc.t.Fatalf("seed %d: %s: write through node %d not applied in %d rounds", sc.s.Opts.Seed, what, id, limit)
}

// TestSimSchedules runs seeded schedules of 3 and 5 nodes with message loss, delay, crashes,
// leader kills, partitions and early elections, with three clients writing and reading the
// configuration. Sim checks after every step that there is at most one leader per term, that
// no committed entry is lost or changed and that equal applied indexes hold equal databases.
// At the end of each schedule a majority partition must elect a leader, commit and converge
// while the minority is not quorate, and after healing every node must converge. The client
// history must be linearizable.
func TestSimSchedules(t *testing.T) {
	n := *simSchedules
	if n == 0 {
		n = 300
		if testing.Short() {
			n = 60
		}
	}
	start := time.Now()
	var total SimStats
	ops := 0
	for seed := range uint64(n) {
		nodes := 3
		if seed%3 == 2 {
			nodes = 5
		}
		sc := newSchedule(t, SimOptions{
			Nodes: nodes, Seed: seed, Loss: float64(seed%5) * 0.04, MaxDelay: int(seed % 3), DetectRounds: 2,
		})
		sc.run(300)

		// Liveness: a majority partition without loss converges, the minority knows it is
		// not quorate; then the healed cluster converges.
		s := sc.s
		s.Opts.Loss = 0
		sc.must(s.Heal())
		ids := make([]uint64, nodes)
		for i := range ids {
			ids[i] = uint64(i + 1)
		}
		s.Rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		major, minor := ids[:nodes/2+1], ids[nodes/2+1:]
		slices.Sort(major)
		s.Partition(major, minor)
		sc.converge(major, 400, "majority partition")
		sc.commitThrough(major[len(major)-1], 400, "majority partition")
		sc.converge(major, 400, "majority partition after a write")
		sc.must(s.Run(2*s.Opts.ElectionTick + 1)) // a deposed leader steps down within two election timeouts
		for _, id := range minor {
			if s.Node(id).Core.Quorate() || !s.Node(id).Core.View().Stale {
				c := s.Node(id).Core
				t.Fatalf("seed %d: node %d in the minority %v believes it is quorate: %+v down %v stalled %v lastHeard %v tick %d",
					seed, id, minor, c.Status(), c.down, c.stalled, c.lastHeard, c.tick)
			}
			if _, err := s.Node(id).Core.Propose(clusterdb.Command{Who: "x", Payload: &clusterdb.RecordEvent{
				Kind: clusterdb.EventNote, What: "x"}}); err == nil && s.Node(id).Core.Leader() == 0 {
				t.Fatalf("seed %d: node %d without a leader accepted a proposal", seed, id)
			}
		}
		s.Partition()
		sc.converge(ids, 600, "healed cluster")
		sc.commitThrough(uint64(1+s.Rng.IntN(nodes)), 400, "healed cluster")
		for _, c := range sc.clients {
			for range 400 {
				if !c.busy {
					break
				}
				sc.must(s.Run(1))
			}
		}
		sc.converge(ids, 600, "healed cluster after a write")
		// Every node holds every member's record, as running with the configuration.
		st := s.Node(1).Core.State()
		if len(st.Members) != nodes {
			t.Fatalf("seed %d: %d membership records, want %d: %+v", seed, len(st.Members), nodes, st.Members)
		}

		res, info := porcupine.CheckOperationsVerbose(registerModel, sc.history, 10*time.Second)
		if res != porcupine.Ok {
			path := t.TempDir() + "/history.html"
			_ = porcupine.VisualizePath(registerModel, info, path)
			t.Fatalf("seed %d: history of %d operations is %s (visualization: %s)", seed, len(sc.history), res, path)
		}
		ops += len(sc.history)
		s.Stats.add(&total)
	}
	t.Logf("%d schedules in %v: %d client operations, %+v", n, time.Since(start).Round(time.Millisecond), ops, total)
	if total.Crashes == 0 || total.SaveCrashes == 0 || total.Snapshots == 0 || total.EarlyCampaigns == 0 || total.Partitions == 0 || total.Dropped == 0 {
		t.Fatalf("weak schedules: %+v", total)
	}
}

func (s SimStats) add(t *SimStats) {
	t.Messages += s.Messages
	t.Dropped += s.Dropped
	t.Crashes += s.Crashes
	t.SaveCrashes += s.SaveCrashes
	t.Partitions += s.Partitions
	t.Elections += s.Elections
	t.EarlyCampaigns += s.EarlyCampaigns
	t.Snapshots += s.Snapshots
	t.Committed += s.Committed
}
