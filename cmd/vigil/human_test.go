package main

import (
	"math"
	"testing"
	"time"
)

func TestHumanDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{850, "850ns"},
		{2500 * time.Nanosecond, "2.5µs"},
		{38 * time.Microsecond, "38µs"},
		{99 * time.Microsecond, "99µs"},
		{120 * time.Microsecond, "0.12ms"},
		{400 * time.Microsecond, "0.4ms"},
		{3200 * time.Microsecond, "3.2ms"},
		{3 * time.Millisecond, "3ms"},
		{120 * time.Millisecond, "120ms"},
		{3200 * time.Millisecond, "3.2s"},
		{45 * time.Second, "45s"},
		{12*time.Minute + 30*time.Second, "12m"},
		{5*time.Hour + 12*time.Minute, "5h12m"},
		{5 * time.Hour, "5h"},
		{76 * time.Hour, "3d4h"},
		{-3 * time.Second, "-3s"},
	} {
		if got := humanDuration(tc.d); got != tc.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestLossPercent(t *testing.T) {
	for _, tc := range []struct {
		p    float64
		want string
	}{
		{0, "0%"}, {0.0069, "0.01%"}, {0.26, "0.3%"}, {1.1111, "1.1%"}, {12.4, "12%"}, {100, "100%"},
		{math.NaN(), "-"}, {-1, "-"},
	} {
		if got := lossPercent(tc.p); got != tc.want {
			t.Errorf("lossPercent(%v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestAgo(t *testing.T) {
	if got := ago(now, now.Add(time.Second)); got != "0s ago" {
		t.Errorf("a time in the future: %q", got)
	}
	if got := agoOrDash(now, time.Time{}); got != "-" {
		t.Errorf("zero time: %q", got)
	}
}
