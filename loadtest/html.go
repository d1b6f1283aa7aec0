package main

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"slices"
	"time"
)

// Colours of the plots.
const (
	blue, orange, red, green, purple, grey = "#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f"
)

func writeHTML(w io.Writer, r *Report) error {
	return reportPage.Execute(w, struct {
		R      *Report
		Title  string
		Drain  string
		Charts []template.HTML
	}{r, r.title(), r.drainText(), r.charts()})
}

// bucketWidth keeps the plots to a few hundred points whatever the run's length.
func bucketWidth(span time.Duration) time.Duration {
	return max(time.Second, (span / 300).Round(time.Second))
}

func (r *Report) charts() []template.HTML {
	var out []template.HTML
	add := func(c Chart) { out = append(out, template.HTML(c.SVG())) }
	if len(r.samples) == 0 {
		return nil
	}
	span := r.loadEnd.Sub(r.loadStart)
	bw := bucketWidth(span)
	secs := func(d time.Duration) float64 { return d.Seconds() }

	// Checkout latency over time.
	offs := make([]time.Duration, len(r.samples))
	lats := make([]time.Duration, len(r.samples))
	for i, s := range r.samples {
		offs[i], lats[i] = s.At.Sub(r.loadStart), s.Latency
	}
	bs := buckets(bw, span, offs, lats)
	q := func(bs []bucket, f float64) []Point {
		pts := make([]Point, len(bs))
		for i, b := range bs {
			pts[i] = Point{X: secs(b.From), Y: math.NaN()}
			if len(b.Vals) > 0 {
				pts[i].Y = ms(quantile(b.Vals, f))
			}
		}
		return pts
	}
	add(Chart{
		Title: fmt.Sprintf("Checkout latency over time (per %s)", bw), XLabel: "seconds since the load started", YLabel: "latency (log scale)",
		LogY: true, YFormat: fmtMS,
		Series: []Series{{Name: "p50", Color: blue, Points: q(bs, 0.5)}, {Name: "p99", Color: orange, Points: q(bs, 0.99)}, {Name: "max", Color: red, Points: q(bs, 1), Dash: true}},
		HLines: r.kneeP99Line(),
	})

	// Requests per second.
	ok := make([]time.Duration, len(r.samples))
	for i, s := range r.samples {
		if s.OK() {
			ok[i] = 1
		}
	}
	bs = buckets(bw, span, offs, ok)
	per := func(f func(b bucket) int) []Point {
		pts := make([]Point, len(bs))
		for i, b := range bs {
			pts[i] = Point{X: secs(b.From), Y: float64(f(b)) / bw.Seconds()}
		}
		return pts
	}
	var target []HLine
	if r.Checkout.TargetRate > 0 {
		target = []HLine{{Y: r.Checkout.TargetRate, Label: fmt.Sprintf("target %.0f/s", r.Checkout.TargetRate)}}
	}
	add(Chart{
		Title: "Checkouts per second, by when they were sent", XLabel: "seconds since the load started", YLabel: "per second",
		Series: []Series{
			{Name: "sent", Color: grey, Points: per(func(b bucket) int { return len(b.Vals) })},
			{Name: "accepted (201)", Color: green, Points: per(func(b bucket) int {
				n := 0
				for _, v := range b.Vals {
					n += int(v)
				}
				return n
			})},
			{Name: "failed", Color: red, Points: per(func(b bucket) int {
				n := 0
				for _, v := range b.Vals {
					n += 1 - int(v)
				}
				return n
			})},
		},
		HLines: target,
	})

	// Saga times.
	if len(r.times) > 0 {
		toffs := make([]time.Duration, len(r.times))
		res := make([]time.Duration, len(r.times))
		mail := make([]time.Duration, len(r.times))
		for i, t := range r.times {
			toffs[i], res[i], mail[i] = t.At.Sub(r.loadStart), t.ToResult, t.ToMail
		}
		rb, mb := buckets(bw, span, toffs, res), buckets(bw, span, toffs, mail)
		add(Chart{
			Title: "Time to paid and to mail, by when the checkout was sent", XLabel: "seconds since the load started", YLabel: "seconds",
			YFormat: func(v float64) string { return trimFloat(v/1000) + " s" },
			Series: []Series{
				{Name: "paid p50", Color: blue, Points: q(rb, 0.5)}, {Name: "paid p99", Color: blue, Points: q(rb, 0.99), Dash: true},
				{Name: "mail p50", Color: purple, Points: q(mb, 0.5)}, {Name: "mail p99", Color: purple, Points: q(mb, 0.99), Dash: true},
			},
		})
	}

	// Queue depths.
	if len(r.qsamples) > 0 {
		var series []Series
		colors := []string{blue, orange, green, red, purple, grey}
		for i, st := range r.Queues {
			pts := make([]Point, len(r.qsamples))
			for j, s := range r.qsamples {
				pts[j] = Point{X: s.At.Sub(r.loadStart).Seconds(), Y: float64(s.Depths[st.Name].Messages())}
			}
			series = append(series, Series{Name: st.Name, Color: colors[i%len(colors)], Points: pts, Dash: i >= len(r.mainQueues)})
		}
		add(Chart{Title: "Queue depth (waiting + being worked on)", XLabel: "seconds since the load started", YLabel: "messages", Series: series})
	}

	// Knee.
	if r.Knee != nil && len(r.Knee.Steps) > 0 {
		// One dot per step: a rate tried twice shows two.
		var p50, p99, mail, acc, ideal []Point
		for _, st := range sortedSteps(r.Knee.Steps) {
			x := float64(st.Rate)
			p50 = append(p50, Point{x, st.Latency.P50})
			p99 = append(p99, Point{x, st.Latency.P99})
			mail = append(mail, Point{x, st.ToMail.P99})
			acc = append(acc, Point{x, st.Achieved})
			ideal = append(ideal, Point{x, x})
		}
		add(Chart{Title: "Checkout latency by rate (knee search, one dot per step)", XLabel: "target rate (orders/s)", YLabel: "latency (log scale)", LogY: true, YFormat: fmtMS,
			Series: []Series{{Name: "p50", Color: blue, Points: p50, Dots: true}, {Name: "p99", Color: orange, Points: p99, Dots: true}}, HLines: r.kneeP99Line()})
		add(Chart{Title: "Time to mail p99 by rate (knee search)", XLabel: "target rate (orders/s)", YLabel: "seconds",
			YFormat: func(v float64) string { return trimFloat(v/1000) + " s" },
			Series:  []Series{{Name: "time to mail p99", Color: purple, Points: mail, Dots: true}}})
		add(Chart{Title: "Accepted vs target rate (knee search)", XLabel: "target rate (orders/s)", YLabel: "accepted per second",
			Series: []Series{{Name: "target", Color: grey, Points: ideal, Dash: true}, {Name: "accepted", Color: green, Points: acc, Dots: true}}})
	}
	return out
}

func (r *Report) kneeP99Line() []HLine {
	if r.Knee == nil || r.Knee.P99Limit <= 0 {
		return nil
	}
	return []HLine{{Y: r.Knee.P99Limit, Label: "p99 threshold " + fmtMS(r.Knee.P99Limit)}}
}

func sortedSteps(steps []KneeStep) []KneeStep {
	out := slices.Clone(steps)
	slices.SortStableFunc(out, func(a, b KneeStep) int { return a.Rate - b.Rate })
	return out
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"ms":  fmtMS,
	"pct": func(f float64) string { return fmt.Sprintf("%.2f%%", f*100) },
	"f1":  func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"off": func(r *Report, t time.Time) string { return r.offset(t) },
	"neg": unknownIfNeg,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222;line-height:1.4}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:bold} .bad{color:#c00;font-weight:bold} .muted{color:#777}
figure{margin:1em 0}
</style></head><body>
<h1>{{.Title}}</h1>
<p class="muted">{{.R.Started.Format "2006-01-02 15:04:05 MST"}} to {{.R.Finished.Format "15:04:05"}} · {{.R.Machine.Host}}, {{.R.Machine.CPUs}} CPUs, load average at start {{.R.Machine.LoadAvg}} · {{.R.Machine.Go}}</p>
{{with .R.QueueNote}}<p><b>Note:</b> {{.}}</p>{{end}}
{{if .R.Interrupted}}<p class="bad">Interrupted: the run was stopped before every order was read; the accounting is incomplete.</p>{{end}}

{{with .R.Accounting}}<p class="{{if .OK}}ok{{else}}bad{{end}}">{{if .OK}}Every accepted order accounted for{{else}}Not every accepted order accounted for{{end}}:
accepted {{.Accepted}} = paid {{.Paid}} + declined {{.Declined}} (priced to be declined: {{.PlannedDeclined}}); unfinished {{.Unfinished}}, mismatched {{.Mismatched}}, unreadable {{.Unreadable}}, duplicates {{.Duplicates}}.</p>
{{with .Problems}}<ul>{{range .}}<li>{{.}}</li>{{end}}</ul>{{end}}{{end}}

<h2>Checkout</h2>
{{with .R.Checkout}}<table>
<tr><th>requests</th><td class="n">{{.Requests}}</td><td>{{if .TargetRate}}target {{f1 .TargetRate}}/s, {{end}}sent {{f1 .SentRate}}/s, accepted {{f1 .AchievedRate}}/s</td></tr>
<tr><th>success</th><td class="n">{{pct .SuccessShare}}</td><td>{{.Accepted}} accepted with 201</td></tr>
<tr><th>latency</th><td colspan="2">p50 {{ms .Latency.P50}} · p90 {{ms .Latency.P90}} · p99 {{ms .Latency.P99}} · max {{ms .Latency.Max}} · mean {{ms .Latency.Mean}}</td></tr>
</table>
<table><tr><th>status</th><th class="n">count</th></tr>{{range .Codes}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{end}}</table>
{{if .Errors}}<table><tr><th>distinct errors</th><th class="n">count</th></tr>{{range .Errors}}<tr><td>{{.Name}}</td><td class="n">{{.N}}</td></tr>{{end}}</table>{{else}}<p>No errors.</p>{{end}}{{end}}

{{with .R.Knee}}<h2>Knee</h2>
<p>Thresholds: {{.Thresholds}}.</p>
<p><b>Highest sustainable rate: {{.Sustainable}} orders/s</b> ({{.CheckoutText}}).</p>
<table><tr><th class="n">rate/s</th><th class="n">accepted/s</th><th class="n">success</th><th class="n">p50</th><th class="n">p99</th><th class="n">max</th><th class="n">waiting</th><th class="n">mail p99</th><th>verdict</th></tr>
{{range .Steps}}<tr><td class="n">{{.Rate}}</td><td class="n">{{f1 .Achieved}}</td><td class="n">{{pct .SuccessShare}}</td><td class="n">{{ms .Latency.P50}}</td><td class="n">{{ms .Latency.P99}}</td><td class="n">{{ms .Latency.Max}}</td><td class="n">{{neg .ReadyAtEnd}}</td><td class="n">{{ms .ToMail.P99}}</td><td>{{if .OK}}<span class="ok">ok</span>{{else}}<span class="bad">breaks</span>: {{.Why}}{{end}}</td></tr>{{end}}
</table>{{end}}

<h2>Saga</h2>
<p class="muted">From the moment the checkout was sent; the step times are the ones the services recorded in the order's timeline (read once, after the system drained).</p>
{{with .R.Saga}}<table>
<tr><th>time to paid</th><td>p50 {{ms .ToResult.P50}} · p90 {{ms .ToResult.P90}} · p99 {{ms .ToResult.P99}} · max {{ms .ToResult.Max}}</td><td class="muted">paid or declined, {{.ToResult.N}} orders</td></tr>
<tr><th>time to mail</th><td>p50 {{ms .ToMail.P50}} · p90 {{ms .ToMail.P90}} · p99 {{ms .ToMail.P99}} · max {{ms .ToMail.Max}}</td><td class="muted">the SMTP server accepted the mail</td></tr>
<tr><th>backlog drained</th><td colspan="2">{{$.Drain}}</td></tr>
</table>{{end}}

{{if .R.Queues}}<h2>Queues</h2>
<p class="muted">RabbitMQ management API, sampled every second; the broker refreshes these figures every 5 s (collect_statistics_interval), so peaks and times are that coarse.</p>
<table><tr><th>queue</th><th class="n">start</th><th class="n">peak</th><th class="n">peak waiting</th><th class="n">peak at</th><th class="n">end</th></tr>
{{range .R.Queues}}<tr><td>{{.Name}}</td><td class="n">{{.Start}}</td><td class="n">{{.Peak}}</td><td class="n">{{.PeakReady}}</td><td class="n">{{off $.R .PeakAt}}</td><td class="n">{{.End}}</td></tr>{{end}}
</table>{{end}}

<h2>Goals</h2>
<table>{{range .R.Goals}}<tr><td class="{{if eq .Status "met"}}ok{{else if eq .Status "not met"}}bad{{else}}muted{{end}}">{{.Status}}</td><td>{{.Goal}}</td><td>{{.Measured}}</td></tr>{{end}}</table>

<h2>Plots</h2>
{{range .Charts}}<figure>{{.}}</figure>
{{end}}
<h2>Scenario</h2>
{{with .R.Scenario}}<table>
<tr><th>mode</th><td>{{.Mode}}</td></tr>{{if .Rate}}<tr><th>rate</th><td>{{.Rate}} checkouts/s (open model: sent on schedule, whatever the answers)</td></tr>{{end}}
<tr><th>duration</th><td>{{.Duration}}</td></tr>
<tr><th>declined share</th><td>{{pct .Declined}} (priced {{.DeclinePrice}}; the others {{.Price}})</td></tr>
<tr><th>request timeout</th><td>{{.Timeout}}, at most {{.MaxWorkers}} in flight</td></tr>
<tr><th>target</th><td>{{$.R.Target}}</td></tr>
</table>{{end}}
</body></html>
`))
