package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// humanDuration renders d with two or three significant digits in the unit that suits it:
// 850ns, 2.5µs, 38µs, 0.4ms, 3.2ms, 120ms, 3.2s, 45s, 12m, 5h12m, 3d4h.
func humanDuration(d time.Duration) string {
	if d < 0 {
		return "-" + humanDuration(-d)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", int64(d))
	case d < 100*time.Microsecond:
		return decimal(float64(d)/float64(time.Microsecond), 1) + "µs"
	case d < time.Millisecond:
		return decimal(float64(d)/float64(time.Millisecond), 2) + "ms"
	case d < time.Second:
		return decimal(float64(d)/float64(time.Millisecond), 1) + "ms"
	case d < time.Minute:
		return decimal(d.Seconds(), 1) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return compound(int(d/time.Hour), "h", int(d%time.Hour/time.Minute), "m")
	default:
		return compound(int(d/(24*time.Hour)), "d", int(d%(24*time.Hour)/time.Hour), "h")
	}
}

// decimal formats v with prec decimals below 10 and none above, dropping trailing zeros.
func decimal(v float64, prec int) string {
	if v >= 10 {
		prec = 0
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func compound(major int, majorUnit string, minor int, minorUnit string) string {
	if minor == 0 {
		return fmt.Sprintf("%d%s", major, majorUnit)
	}
	return fmt.Sprintf("%d%s%d%s", major, majorUnit, minor, minorUnit)
}

// ago renders how long before now t was; a t in the future (clock skew) reads "0s ago".
func ago(now, t time.Time) string {
	return humanDuration(max(now.Sub(t), 0)) + " ago"
}

// agoOrDash is ago, or "-" for the zero time.
func agoOrDash(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return ago(now, t)
}

// rtt renders a round-trip time, "-" before the first echo.
func rtt(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanDuration(d)
}

// lossPercent renders a loss percentage with precision that still shows rare losses.
func lossPercent(p float64) string {
	switch {
	case math.IsNaN(p) || math.IsInf(p, 0) || p < 0:
		return "-"
	case p == 0:
		return "0%"
	case p < 0.1:
		return strconv.FormatFloat(p, 'f', 2, 64) + "%"
	case p < 10:
		return decimal(p, 1) + "%"
	default:
		return strconv.FormatFloat(p, 'f', 0, 64) + "%"
	}
}
