package main

import (
	"fmt"
	"slices"
	"time"
)

// sample is a set of measured durations.
type sample []time.Duration

// quantile returns the q-quantile (0..1) by the nearest-rank method.
func (s sample) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	rank := int(q*float64(len(sorted)) + 0.999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func (s sample) max() time.Duration { return s.quantile(1) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// row is a table row for a sample: name, n, p50, p99, max in milliseconds.
func (s sample) row(name string) []string {
	f := func(d time.Duration) string { return fmt.Sprintf("%.3f", ms(d)) }
	return []string{name, fmt.Sprint(len(s)), f(s.quantile(0.5)), f(s.quantile(0.99)), f(s.max())}
}

// record adds the sample's p50, p99 and max in milliseconds to m under prefix.
func (s sample) record(m metrics, prefix string) {
	m[prefix+"_p50_ms"] = ms(s.quantile(0.5))
	m[prefix+"_p99_ms"] = ms(s.quantile(0.99))
	m[prefix+"_max_ms"] = ms(s.max())
}
