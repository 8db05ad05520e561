package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// A hand-written SVG plot of latency distributions: one panel per profile, one empirical CDF
// per series, on a shared logarithmic time axis in milliseconds.

type cdfSeries struct {
	name   string
	values sample
	dashed bool
	color  string // empty: the next of cdfColors
}

func (s cdfSeries) stroke(j int) string {
	if s.color != "" {
		return s.color
	}
	return cdfColors[j%len(cdfColors)]
}

type cdfPanel struct {
	title  string
	target time.Duration // drawn as a vertical line; zero for none
	// targetNote is printed under the target's label ("" for none).
	targetNote string
	// xLabel and yLabel name the axes (defaults: the heartbeat plot's detection latency).
	xLabel, yLabel string
	series         []cdfSeries
}

var cdfColors = []string{"#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b"}

const (
	panelW   = 960
	plotL    = 80 // left margin inside a panel
	plotR    = 30
	plotT    = 34 // below the panel's title
	plotH    = 280
	legendDY = 18
)

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

// cdfSVG draws the panels one above the other under a title and returns the SVG document.
func cdfSVG(title string, panels []cdfPanel) string {
	// The x axis, shared by all panels, in whole decades: from the decade of the smallest
	// positive value, but not below minX (values below it, such as the negative latencies of
	// loss runs whose event came before nft returned, are drawn at the left edge and counted
	// in the legend), to above every value and target.
	const minX = 0.1
	lo, hi := math.Inf(1), 10.0
	legend := 0
	for _, p := range panels {
		legend = max(legend, len(p.series))
		hi = max(hi, ms(p.target))
		for _, s := range p.series {
			for _, v := range s.values {
				hi = max(hi, ms(v))
				if v > 0 {
					lo = min(lo, ms(v))
				}
			}
		}
	}
	lo = max(lo, minX)
	if math.IsInf(lo, 1) {
		lo = minX
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	plotW := float64(panelW - plotL - plotR)
	xOf := func(msv float64) float64 {
		if msv <= 0 {
			return 0 // a value at or before the fault: pinned to the left edge
		}
		f := (math.Log10(msv) - dlo) / (dhi - dlo)
		return min(max(f, 0), 1) * plotW
	}
	yOf := func(frac float64) float64 { return plotH * (1 - frac) }

	panelH := plotT + plotH + 50 + legend*legendDY + 20
	width, height := panelW, panelH*len(panels)+40

	var b strings.Builder
	svgHeader(&b, width, height, title)
	for i, p := range panels {
		fmt.Fprintf(&b, `<g transform="translate(0,%d)">`+"\n", 40+i*panelH)
		fmt.Fprintf(&b, `<text x="%d" y="20" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`+"\n", plotL+int(plotW)/2, xmlEscaper.Replace(p.title))
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", plotL, plotT)
		// Grid and axes.
		fmt.Fprintf(&b, `<rect width="%.0f" height="%d" fill="none" stroke="#333"/>`+"\n", plotW, plotH)
		for d := dlo; d <= dhi; d++ {
			x := xOf(math.Pow(10, d))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="0" x2="%.1f" y2="%d" stroke="#bbb"/>`+"\n", x, x, plotH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotH+16, decadeLabel(d))
			if d < dhi {
				for k := 2; k <= 9; k++ {
					x := xOf(float64(k) * math.Pow(10, d))
					fmt.Fprintf(&b, `<line x1="%.1f" y1="0" x2="%.1f" y2="%d" stroke="#eee"/>`+"\n", x, x, plotH)
				}
			}
		}
		for _, f := range []float64{0, 0.25, 0.5, 0.75, 1} {
			y := yOf(f)
			fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", y, plotW, y)
			fmt.Fprintf(&b, `<text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%.0f%%</text>`+"\n", y, f*100)
		}
		y99 := yOf(0.99)
		fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#888" stroke-dasharray="2,3"/>`+"\n", y99, plotW, y99)
		fmt.Fprintf(&b, `<text x="4" y="%.1f" font-size="10" fill="#666">p99</text>`+"\n", y99+11)
		xLabel, yLabel := cmp.Or(p.xLabel, "detection latency"), cmp.Or(p.yLabel, "runs detected")
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s, ms (log scale)</text>`+"\n", plotW/2, plotH+34, xmlEscaper.Replace(xLabel))
		fmt.Fprintf(&b, `<text transform="translate(-48,%d) rotate(-90)" text-anchor="middle">%s (CDF)</text>`+"\n", plotH/2, xmlEscaper.Replace(yLabel))
		if p.target > 0 {
			x := xOf(ms(p.target))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="0" x2="%.1f" y2="%d" stroke="#c00" stroke-width="1.5" stroke-dasharray="6,4"/>`+"\n", x, x, plotH)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#c00" font-size="11">target p99 ≤ %v</text>`+"\n", x+4, plotH*55/100, p.target)
			if p.targetNote != "" {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#c00" font-size="10">%s</text>`+"\n", x+4, plotH*55/100+13, xmlEscaper.Replace(p.targetNote))
			}
		}
		// The curves: empirical CDF steps.
		for j, s := range p.series {
			if len(s.values) == 0 {
				continue
			}
			v := slices.Clone(s.values)
			slices.Sort(v)
			var path strings.Builder
			fmt.Fprintf(&path, "M%.1f,%.1f", xOf(ms(v[0])), yOf(0))
			for k, d := range v {
				x := xOf(ms(d))
				fmt.Fprintf(&path, " H%.1f V%.1f", x, yOf(float64(k+1)/float64(len(v))))
			}
			fmt.Fprintf(&path, " H%.0f", plotW)
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", path.String(), s.stroke(j), dash(s.dashed))
		}
		// The legend, below the axis.
		for j, s := range p.series {
			y := plotH + 56 + j*legendDY
			c := s.stroke(j)
			fmt.Fprintf(&b, `<line x1="0" y1="%d" x2="24" y2="%d" stroke="%s" stroke-width="3"%s/>`+"\n", y-4, y-4, c, dash(s.dashed))
			edge := ""
			pinned, nonpos := 0, 0
			for _, v := range s.values {
				if ms(v) < math.Pow(10, dlo) {
					pinned++
				}
				if v <= 0 {
					nonpos++
				}
			}
			if pinned > 0 {
				edge = fmt.Sprintf("; %d at the left edge, %d ≤ 0", pinned, nonpos)
			}
			fmt.Fprintf(&b, `<text x="32" y="%d">%s: p50 %.2f, p99 %.2f, max %.2f ms (n=%d%s)</text>`+"\n", y,
				xmlEscaper.Replace(s.name), ms(s.values.quantile(0.5)), ms(s.values.quantile(0.99)), ms(s.values.max()), len(s.values), edge)
		}
		b.WriteString("</g>\n</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func dash(dashed bool) string {
	if dashed {
		return ` stroke-dasharray="5,3"`
	}
	return ""
}

func decadeLabel(d float64) string {
	v := math.Pow(10, d)
	if d < 0 {
		return fmt.Sprintf("%.*f", int(-d), v)
	}
	return fmt.Sprintf("%.0f", v)
}

// A grouped bar chart: one panel per set of groups (a queue depth), in each group one bar per
// series (a system), the value written above each bar.

type barPanel struct {
	title  string
	groups []string    // along the x axis
	values [][]float64 // values[series][group]; NaN: not measured
}

// barSVG draws the panels side by side under a title, with one legend for the series, and
// returns the SVG document. unit labels the y axes (each panel has its own linear scale).
func barSVG(title, unit string, series []string, panels []barPanel) string {
	const (
		pw, ph      = 470, 300 // plot area of a panel
		left, right = 70, 20
		top         = 60
	)
	width := len(panels)*(left+pw+right) + 10
	legendRows := (len(series) + 2) / 3
	height := top + ph + 50 + legendRows*legendDY + 20
	var b strings.Builder
	svgHeader(&b, width, height, title)
	for i, p := range panels {
		hi := 0.0
		for _, vs := range p.values {
			for _, v := range vs {
				if !math.IsNaN(v) {
					hi = max(hi, v)
				}
			}
		}
		step := niceStep(hi / 5)
		top5 := math.Ceil(hi/step) * step
		if top5 <= 0 {
			top5 = 1
		}
		yOf := func(v float64) float64 { return ph * (1 - v/top5) }
		fmt.Fprintf(&b, `<g transform="translate(%d,%d)">`+"\n", i*(left+pw+right)+left, top)
		fmt.Fprintf(&b, `<text x="%d" y="-16" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`+"\n", pw/2, xmlEscaper.Replace(p.title))
		for v := 0.0; v <= top5+step/2; v += step {
			y := yOf(v)
			fmt.Fprintf(&b, `<line x1="0" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", y, pw, y)
			fmt.Fprintf(&b, `<text x="-6" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", y, shortNum(v))
		}
		fmt.Fprintf(&b, `<text transform="translate(-52,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", ph/2, xmlEscaper.Replace(unit))
		gw := float64(pw) / float64(len(p.groups))
		bw := gw * 0.8 / float64(len(series))
		for g, name := range p.groups {
			x0 := float64(g)*gw + gw*0.1
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(g)*gw+gw/2, ph+18, xmlEscaper.Replace(name))
			for j := range series {
				if j >= len(p.values) || g >= len(p.values[j]) || math.IsNaN(p.values[j][g]) {
					continue
				}
				v := p.values[j][g]
				x, y := x0+float64(j)*bw, yOf(v)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", x, y, bw-2, ph-y, cdfColors[j%len(cdfColors)])
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%s</text>`+"\n", x+(bw-2)/2, y-3, shortNum(v))
			}
		}
		fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", pw, ph)
		b.WriteString("</g>\n")
	}
	for j, s := range series {
		x := 20 + (j%3)*((width-40)/3)
		y := top + ph + 50 + (j/3)*legendDY
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="10" fill="%s"/>`+"\n", x, y-9, cdfColors[j%len(cdfColors)])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+20, y, xmlEscaper.Replace(s))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// shortNum writes 12345 as 12.3k.
func shortNum(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

// svgHeader opens a plot's SVG document: its size, a white background and the title.
func svgHeader(b *strings.Builder, width, height int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(b, `<text x="%d" y="24" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", width/2, xmlEscaper.Replace(title))
}
