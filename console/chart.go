package console

import (
	"math"
	"strconv"
	"strings"
)

// bar is one bar of a chart: Value in the main colour, Alt (a part of
// Value, e.g. the failed turns) over it in the alert colour.
type bar struct {
	Label, Title string
	Value, Alt   float64
}

// Chart geometry, in SVG user units; the SVG scales to its box.
const (
	chartW, chartH = 720, 220
	padL, padR     = 64, 8
	padT, padB     = 12, 28
)

// barChart draws bars as an SVG bar chart with a y axis (zero and the
// maximum) and the bars' labels under them. Every bar has a <title> (a
// tooltip and its accessible text). Text is escaped; numbers are formatted
// here, so the result is safe to insert in a page.
func barChart(title string, bars []bar) markup {
	var b strings.Builder
	esc := escape
	b.WriteString(`<svg class="chart" viewBox="0 0 ` + itoa(chartW) + " " + itoa(chartH) + `" role="img" aria-label="` + esc(title) + `" xmlns="http://www.w3.org/2000/svg">`)
	b.WriteString(`<title>` + esc(title) + `</title>`)
	top := 0.0
	for _, x := range bars {
		top = math.Max(top, x.Value)
	}
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	base := float64(padT) + plotH
	// Axis and the two gridlines' labels.
	b.WriteString(`<line class="axis" x1="` + itoa(padL) + `" y1="` + ftoa(base) + `" x2="` + itoa(chartW-padR) + `" y2="` + ftoa(base) + `"/>`)
	b.WriteString(`<line class="grid" x1="` + itoa(padL) + `" y1="` + itoa(padT) + `" x2="` + itoa(chartW-padR) + `" y2="` + itoa(padT) + `"/>`)
	b.WriteString(`<text class="tick" x="` + itoa(padL-6) + `" y="` + ftoa(base) + `" text-anchor="end" dominant-baseline="middle">0</text>`)
	b.WriteString(`<text class="tick" x="` + itoa(padL-6) + `" y="` + itoa(padT) + `" text-anchor="end" dominant-baseline="middle">` + esc(short(top)) + `</text>`)
	if len(bars) == 0 {
		b.WriteString(`</svg>`)
		return markup(b.String()) // built from escaped text and formatted numbers
	}
	slot := plotW / float64(len(bars))
	w := math.Max(1, slot*0.8)
	for i, x := range bars {
		left := float64(padL) + slot*float64(i) + (slot-w)/2
		h := 0.0
		if top > 0 {
			h = plotH * x.Value / top
		}
		b.WriteString(`<g><title>` + esc(x.Title) + `</title>`)
		b.WriteString(`<rect class="bar" x="` + ftoa(left) + `" y="` + ftoa(base-h) + `" width="` + ftoa(w) + `" height="` + ftoa(h) + `"/>`)
		if x.Alt > 0 && top > 0 {
			ah := plotH * math.Min(x.Alt, x.Value) / top
			b.WriteString(`<rect class="alt" x="` + ftoa(left) + `" y="` + ftoa(base-ah) + `" width="` + ftoa(w) + `" height="` + ftoa(ah) + `"/>`)
		}
		b.WriteString(`</g>`)
		if x.Label != "" {
			// Labels near an edge are anchored inside the chart, not cut.
			x0, anchor := left+w/2, "middle"
			switch {
			case x0 > chartW-60:
				x0, anchor = chartW-padR, "end"
			case x0 < padL+40:
				// Clear of the y axis' "0" too.
				x0, anchor = padL, "start"
			}
			b.WriteString(`<text class="tick" x="` + ftoa(x0) + `" y="` + ftoa(base+18) + `" text-anchor="` + anchor + `">` + esc(x.Label) + `</text>`)
		}
	}
	b.WriteString(`</svg>`)
	return markup(b.String()) // built from escaped text and formatted numbers
}

func itoa(n int) string { return strconv.Itoa(n) }

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// short formats an axis value: 1200 → 1.2k, 3400000 → 3.4M.
func short(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 1, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
}
