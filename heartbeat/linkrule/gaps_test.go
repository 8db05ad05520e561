package linkrule

import "testing"

func TestGaps(t *testing.T) {
	var g Gaps
	for i, st := range []struct {
		lost  uint64
		up    bool
		since uint64
		want  uint64
	}{
		{5, true, 100, 0},  // the first sample is a baseline
		{7, true, 100, 2},  // two frames lost on a link that stayed up
		{7, true, 100, 0},  // none
		{9, false, 200, 0}, // went down: not an error rate
		{500, false, 200, 0},
		{900, true, 300, 0}, // came back: the gap across the outage does not count
		{901, true, 300, 1},
		{950, true, 400, 0}, // went down and up between two samples: the gap does not count
		{951, true, 400, 1},
		{3, true, 400, 0}, // the counter went back (a new map): no error
	} {
		if got := g.Errors(2, 0, st.lost, st.up, st.since); got != st.want {
			t.Errorf("sample %d %+v: %d errors, want %d", i, st, got, st.want)
		}
	}
	// Each (peer, link) has its own baseline.
	if got := g.Errors(3, 0, 1000, true, 1); got != 0 {
		t.Errorf("another peer's first sample: %d", got)
	}
}
