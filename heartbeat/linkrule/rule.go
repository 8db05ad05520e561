// Package linkrule is the interconnect's error-rate rule (TruCluster's MEMORY CHANNEL rule):
// a private link with more than Threshold errors within Window is taken out of service (bad)
// even while its heartbeats still pass, so that traffic moves to the other links; it returns to
// service once it has been free of errors for Clean, or when an operator clears it.
//
// The rule is a pure state machine: the driver feeds it error counts and the time (any
// monotonic clock, as a time.Duration since an arbitrary origin), and applies the verdicts it
// returns (the daemon writes them into the steering program's map). It does no I/O, keeps no
// clock and starts no goroutine.
package linkrule

import (
	"fmt"
	"time"
)

// Defaults of the rule, TruCluster's: more than ten errors within one minute.
const (
	DefaultThreshold = 10
	DefaultWindow    = time.Minute
	DefaultClean     = 5 * time.Minute
)

// Config holds the rule's parameters.
type Config struct {
	Threshold int           // a link is bad with more than this many errors within Window
	Window    time.Duration // the sliding window errors are counted in
	Clean     time.Duration // a bad link returns to service after this long without errors
}

// Validate reports a parameter out of range.
func (c Config) Validate() error {
	switch {
	case c.Threshold < 1:
		return fmt.Errorf("error threshold %d: want at least 1", c.Threshold)
	case c.Window <= 0:
		return fmt.Errorf("error window %v: want a positive duration", c.Window)
	case c.Clean <= 0:
		return fmt.Errorf("clean time %v: want a positive duration", c.Clean)
	}
	return nil
}

// Reason says why a verdict was given.
type Reason string

// The reasons.
const (
	ReasonErrors  Reason = "errors"  // more than Threshold errors within Window
	ReasonClean   Reason = "clean"   // no error for Clean
	ReasonCleared Reason = "cleared" // an operator cleared it
)

// Verdict is a change of a link's service state, for the driver to apply.
type Verdict struct {
	Link   int
	Bad    bool
	Reason Reason
	Errors int // errors within the window when the verdict was given
}

// burst is some errors observed at one time.
type burst struct {
	at time.Duration
	n  uint64
}

type link struct {
	bursts    []burst // within the window, oldest first
	inWindow  uint64
	bad       bool
	badSince  time.Duration
	lastError time.Duration
	total     uint64
}

// Rule is the state of the rule for a set of links. The zero value is not usable: use New.
type Rule struct {
	cfg   Config
	links []link
	now   time.Duration
}

// New returns the rule for nlinks links, all in service.
func New(cfg Config, nlinks int) (*Rule, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nlinks < 0 {
		return nil, fmt.Errorf("%d links", nlinks)
	}
	return &Rule{cfg: cfg, links: make([]link, nlinks)}, nil
}

// Config returns the rule's parameters.
func (r *Rule) Config() Config { return r.cfg }

// Observe records n errors on link at time now (n may be zero: time passing), and returns the
// verdicts this causes. A time earlier than a previous one is taken as the previous one.
func (r *Rule) Observe(now time.Duration, linkID int, n uint64) []Verdict {
	out := r.Tick(now)
	if linkID < 0 || linkID >= len(r.links) || n == 0 {
		return out
	}
	l := &r.links[linkID]
	l.bursts = append(l.bursts, burst{r.now, n})
	l.inWindow += n
	l.total += n
	l.lastError = r.now
	if !l.bad && l.inWindow > uint64(r.cfg.Threshold) {
		l.bad, l.badSince = true, r.now
		out = append(out, Verdict{Link: linkID, Bad: true, Reason: ReasonErrors, Errors: int(l.inWindow)})
	}
	return out
}

// Tick advances the time to now, forgetting errors older than the window and returning the
// links that have been clean long enough to their service.
func (r *Rule) Tick(now time.Duration) []Verdict {
	r.now = max(r.now, now)
	var out []Verdict
	for i := range r.links {
		l := &r.links[i]
		drop := 0
		for drop < len(l.bursts) && r.now-l.bursts[drop].at >= r.cfg.Window {
			l.inWindow -= l.bursts[drop].n
			drop++
		}
		l.bursts = l.bursts[drop:]
		if l.bad && r.now-l.lastError >= r.cfg.Clean {
			// Back in service with a fresh window: old errors do not trip it again.
			l.bad, l.bursts, l.inWindow = false, nil, 0
			out = append(out, Verdict{Link: i, Bad: false, Reason: ReasonClean})
		}
	}
	return out
}

// Clear returns link to service at once (vigil links clear) and forgets its errors.
func (r *Rule) Clear(now time.Duration, linkID int) []Verdict {
	out := r.Tick(now)
	if linkID < 0 || linkID >= len(r.links) {
		return out
	}
	l := &r.links[linkID]
	l.bursts, l.inWindow = nil, 0
	if l.bad {
		l.bad = false
		out = append(out, Verdict{Link: linkID, Bad: false, Reason: ReasonCleared})
	}
	return out
}

// State is what the rule knows about one link.
type State struct {
	Bad      bool
	BadSince time.Duration // valid while Bad
	Errors   uint64        // errors within the window
	Total    uint64        // errors ever observed
}

// Link returns the state of link; the zero State for an unknown link.
func (r *Rule) Link(linkID int) State {
	if linkID < 0 || linkID >= len(r.links) {
		return State{}
	}
	l := r.links[linkID]
	return State{Bad: l.bad, BadSince: l.badSince, Errors: l.inWindow, Total: l.total}
}
