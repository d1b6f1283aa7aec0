package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Point is one (x, y) of a series; a NaN y breaks the line.
type Point struct{ X, Y float64 }

// Series is one line (or set of dots) of a chart.
type Series struct {
	Name   string
	Color  string
	Points []Point
	Dots   bool // draw dots, not a line
	Dash   bool
}

// HLine is a horizontal reference line, such as a threshold.
type HLine struct {
	Y     float64
	Label string
}

// Chart is a small self-contained SVG line chart: no script, no external
// file, so the report opens anywhere.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	HLines                []HLine
	LogY                  bool
	YFormat               func(float64) string
}

const (
	chartW, chartH                     = 900, 300
	marginL, marginR, marginT, marginB = 70, 20, 34, 44
)

// SVG renders the chart.
func (c Chart) SVG() string {
	if c.YFormat == nil {
		c.YFormat = func(v float64) string { return trimFloat(v) }
	}
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.Y) || (c.LogY && p.Y <= 0) {
				continue
			}
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			ymin, ymax = math.Min(ymin, p.Y), math.Max(ymax, p.Y)
		}
	}
	for _, h := range c.HLines {
		ymin, ymax = math.Min(ymin, h.Y), math.Max(ymax, h.Y)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s" font-family="sans-serif" font-size="12">`,
		chartW, chartH, chartW, chartH, html.EscapeString(c.Title))
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>`, marginL, html.EscapeString(c.Title))
	if math.IsInf(xmin, 1) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#888">no data</text></svg>`, chartW/2-30, chartH/2)
		return b.String()
	}
	if xmax == xmin {
		xmin, xmax = xmin-1, xmax+1
	}

	// Y scale.
	var yticks []float64
	var ylo, yhi float64
	if c.LogY {
		ylo = math.Pow(10, math.Floor(math.Log10(ymin)))
		yhi = math.Pow(10, math.Ceil(math.Log10(ymax)))
		if yhi <= ylo {
			yhi = ylo * 10
		}
		for v := ylo; v <= yhi*1.0001; v *= 10 {
			yticks = append(yticks, v)
		}
	} else {
		ylo = math.Min(0, ymin)
		step := niceStep((ymax - ylo) / 5)
		yhi = math.Ceil(ymax/step) * step
		if yhi <= ylo {
			yhi = ylo + step
		}
		for v := ylo; v <= yhi+step/1000; v += step {
			yticks = append(yticks, v)
		}
	}
	pw, ph := float64(chartW-marginL-marginR), float64(chartH-marginT-marginB)
	px := func(x float64) float64 { return float64(marginL) + (x-xmin)/(xmax-xmin)*pw }
	py := func(y float64) float64 {
		f := (y - ylo) / (yhi - ylo)
		if c.LogY {
			f = (math.Log10(math.Max(y, ylo)) - math.Log10(ylo)) / (math.Log10(yhi) - math.Log10(ylo))
		}
		return float64(marginT) + (1-f)*ph
	}

	// Grid and axes.
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="#fafafa" stroke="#ccc"/>`, marginL, marginT, pw, ph)
	for _, v := range yticks {
		y := py(v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, marginL, float64(marginL)+pw, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>`, marginL-6, y+4, html.EscapeString(c.YFormat(v)))
	}
	xstep := niceStep((xmax - xmin) / 8)
	for v := math.Ceil(xmin/xstep) * xstep; v <= xmax+xstep/1000; v += xstep {
		x := px(v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.1f" stroke="#e4e4e4"/>`, x, x, marginT, float64(marginT)+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>`, x, float64(marginT)+ph+16, trimFloat(v))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#333">%s</text>`, float64(marginL)+pw/2, chartH-6, html.EscapeString(c.XLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" text-anchor="middle" fill="#333" transform="rotate(-90 14 %.1f)">%s</text>`,
		float64(marginT)+ph/2, float64(marginT)+ph/2, html.EscapeString(c.YLabel))

	for _, h := range c.HLines {
		y := py(h.Y)
		fmt.Fprintf(&b, `<line x1="%d" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="6 4"/>`, marginL, float64(marginL)+pw, y, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#c00">%s</text>`, float64(marginL)+pw-4, y-4, html.EscapeString(h.Label))
	}

	// Series.
	for _, s := range c.Series {
		dash := ""
		if s.Dash {
			dash = ` stroke-dasharray="4 3"`
		}
		if s.Dots {
			fmt.Fprintf(&b, `<g fill="%s" fill-opacity="0.7">`, s.Color)
			for _, p := range s.Points {
				if math.IsNaN(p.Y) || (c.LogY && p.Y <= 0) {
					continue
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5"/>`, px(p.X), py(p.Y))
			}
			b.WriteString(`</g>`)
			continue
		}
		var pts [][2]float64
		flush := func() {
			switch len(pts) {
			case 0:
			case 1:
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2" fill="%s"/>`, pts[0][0], pts[0][1], s.Color)
			default:
				coords := make([]string, len(pts))
				for i, p := range pts {
					coords[i] = fmt.Sprintf("%.1f,%.1f", p[0], p[1])
				}
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, s.Color, dash, strings.Join(coords, " "))
			}
			pts = pts[:0]
		}
		for _, p := range s.Points {
			if math.IsNaN(p.Y) || (c.LogY && p.Y <= 0) {
				flush()
				continue
			}
			pts = append(pts, [2]float64{px(p.X), py(p.Y)})
		}
		flush()
	}

	// Legend, top right.
	x := float64(chartW - marginR)
	for i := len(c.Series) - 1; i >= 0; i-- {
		s := c.Series[i]
		w := float64(len(s.Name))*6.5 + 26
		x -= w
		fmt.Fprintf(&b, `<rect x="%.1f" y="9" width="14" height="4" fill="%s"/>`, x, s.Color)
		fmt.Fprintf(&b, `<text x="%.1f" y="16">%s</text>`, x+18, html.EscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}
