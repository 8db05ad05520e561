package linkrule

// Gaps turns the heartbeat plane's per-(peer, link) loss counters (frames missing by sequence
// gaps) into errors for the rule. Only gaps on a link that stayed up count: when a link comes
// back after a failure, the first frame's gap covers the whole outage, and a link failure is the
// heartbeat plane's business, not an error rate. It is pure: the driver passes each sample.
type Gaps struct {
	last map[[2]int]gapSample
}

type gapSample struct {
	lost  uint64
	up    bool
	since uint64 // when the link's state last changed (the sweep's since_ns)
}

// Errors returns the frames lost on (peer, link) since the previous sample that count as errors.
// lost is the slot's loss counter, up its state, since the time of its last state change.
func (g *Gaps) Errors(peer, link int, lost uint64, up bool, since uint64) uint64 {
	if g.last == nil {
		g.last = map[[2]int]gapSample{}
	}
	k := [2]int{peer, link}
	prev, seen := g.last[k]
	g.last[k] = gapSample{lost, up, since}
	// Counted only when up now and at the previous sample, with no state change in between.
	if !seen || !up || !prev.up || prev.since != since || lost <= prev.lost {
		return 0
	}
	return lost - prev.lost
}
