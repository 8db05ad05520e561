package linkrule

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Each case is a script of steps on a two-link rule (threshold 10, window 1m, clean 5m):
//
//	err T LINK N   N errors on LINK at time T (seconds)
//	tick T         time passes
//	clear T LINK   an operator clears LINK
//
// and the verdicts each step must return ("-" for none), written as "LINK bad|ok REASON".
func TestRuleScripts(t *testing.T) {
	cfg := Config{Threshold: DefaultThreshold, Window: DefaultWindow, Clean: DefaultClean}
	for _, tc := range []struct {
		name  string
		steps [][2]string // step, expected verdicts
	}{
		{"ten errors are not more than ten", [][2]string{
			{"err 0 0 5", "-"}, {"err 30 0 5", "-"}, {"tick 31", "-"},
		}},
		{"eleven within a minute: bad", [][2]string{
			{"err 0 0 5", "-"}, {"err 30 0 6", "0 bad errors 11"},
		}},
		{"one burst of eleven: bad at once", [][2]string{
			{"err 5 1 11", "1 bad errors 11"},
		}},
		{"errors spread over more than the window do not add up", [][2]string{
			{"err 0 0 6", "-"}, {"err 60 0 5", "-"}, {"err 90 0 6", "0 bad errors 11"},
		}},
		{"the other link is not affected", [][2]string{
			{"err 0 0 11", "0 bad errors 11"}, {"err 1 1 10", "-"},
		}},
		{"back in service after five clean minutes", [][2]string{
			{"err 0 0 11", "0 bad errors 11"}, {"tick 299", "-"}, {"tick 300", "0 ok clean"},
		}},
		{"errors while bad restart the clean time", [][2]string{
			{"err 0 0 11", "0 bad errors 11"}, {"err 200 0 1", "-"}, {"tick 300", "-"},
			{"tick 499", "-"}, {"tick 500", "0 ok clean"},
		}},
		{"a fresh window after returning: one more error does not trip it", [][2]string{
			{"err 0 0 11", "0 bad errors 11"}, {"tick 300", "0 ok clean"}, {"err 301 0 1", "-"},
		}},
		{"cleared by an operator", [][2]string{
			{"err 0 0 11", "0 bad errors 11"}, {"clear 10 0", "0 ok cleared"}, {"err 11 0 1", "-"},
			{"err 12 0 10", "0 bad errors 11"},
		}},
		{"clearing a good link is no verdict", [][2]string{
			{"err 0 0 3", "-"}, {"clear 1 0", "-"}, {"clear 1 7", "-"},
		}},
		{"time going backwards is taken as standing still", [][2]string{
			{"err 100 0 6", "-"}, {"err 20 0 5", "0 bad errors 11"}, {"tick 399", "-"}, {"tick 400", "0 ok clean"},
		}},
		{"unknown links are ignored", [][2]string{
			{"err 0 5 100", "-"}, {"err 0 -1 100", "-"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := New(cfg, 2)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				var verb string
				var at, link int
				var n uint64
				f := strings.Fields(st[0])
				verb = f[0]
				fmt.Sscan(f[1], &at)
				now := time.Duration(at) * time.Second
				var got []Verdict
				switch verb {
				case "err":
					fmt.Sscan(f[2], &link)
					fmt.Sscan(f[3], &n)
					got = r.Observe(now, link, n)
				case "tick":
					got = r.Tick(now)
				case "clear":
					fmt.Sscan(f[2], &link)
					got = r.Clear(now, link)
				default:
					t.Fatalf("bad step %q", st[0])
				}
				if s := render(got); s != st[1] {
					t.Fatalf("step %d %q: verdicts %q, want %q", i, st[0], s, st[1])
				}
			}
		})
	}
}

func render(vs []Verdict) string {
	if len(vs) == 0 {
		return "-"
	}
	var parts []string
	for _, v := range vs {
		s := fmt.Sprintf("%d ok %s", v.Link, v.Reason)
		if v.Bad {
			s = fmt.Sprintf("%d bad %s %d", v.Link, v.Reason, v.Errors)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func TestRuleState(t *testing.T) {
	r, err := New(Config{Threshold: 2, Window: time.Second, Clean: time.Second}, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Observe(0, 0, 2)
	r.Observe(500*time.Millisecond, 0, 1)
	want := State{Bad: true, BadSince: 500 * time.Millisecond, Errors: 3, Total: 3}
	if got := r.Link(0); !reflect.DeepEqual(got, want) {
		t.Errorf("state %+v, want %+v", got, want)
	}
	r.Tick(1200 * time.Millisecond) // the first burst leaves the window
	if got := r.Link(0); got.Errors != 1 || !got.Bad {
		t.Errorf("after the window: %+v, want 1 error, still bad", got)
	}
	if got := r.Link(3); got != (State{}) {
		t.Errorf("unknown link: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Threshold: 0, Window: time.Second, Clean: time.Second},
		{Threshold: 1, Window: 0, Clean: time.Second},
		{Threshold: 1, Window: time.Second, Clean: -1},
	} {
		if _, err := New(c, 1); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}
