package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured. It is printed as text and written as JSON.
type Report struct {
	Started   time.Time   `json:"started"`
	Finished  time.Time   `json:"finished"`
	Target    string      `json:"target"`
	Machine   Machine     `json:"machine"`
	Scenario  Scenario    `json:"scenario"`
	Checkout  Checkout    `json:"checkout"`
	Saga      Saga        `json:"saga"`
	Queues    []QueueStat `json:"queues,omitempty"`
	QueueNote string      `json:"queue_note,omitempty"`
	// Interrupted is set when the run was stopped (Ctrl-C) before every
	// order was read: the accounting is then incomplete.
	Interrupted bool        `json:"interrupted,omitempty"`
	Accounting  Accounting  `json:"accounting"`
	Knee        *KneeReport `json:"knee,omitempty"`
	Goals       []Goal      `json:"goals"`
	Cost        *CostReport `json:"cost,omitempty"`

	samples   []Sample
	loadStart time.Time
}

// Machine is where the run happened; figures only compare on one machine.
type Machine struct {
	Host    string `json:"host"`
	CPUs    int    `json:"cpus"`
	LoadAvg string `json:"load_average_at_start"`
	Go      string `json:"go"`
}

func machine() Machine {
	host, _ := os.Hostname()
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return Machine{Host: host, CPUs: runtime.NumCPU(), LoadAvg: load, Go: runtime.Version()}
}

// Scenario is the load that was asked for.
type Scenario struct {
	Mode         string  `json:"mode"` // "constant rate" or "knee"
	Rate         int     `json:"rate_per_s,omitempty"`
	Duration     string  `json:"duration"`
	Declined     float64 `json:"declined_share"`
	Price        string  `json:"price"`
	DeclinePrice string  `json:"decline_price"`
	Timeout      string  `json:"timeout"`
	MaxWorkers   int     `json:"max_workers"`
}

// Count is how often something happened.
type Count struct {
	Name string `json:"name"`
	N    int    `json:"n"`
}

// Checkout is the HTTP side: what the customer waited for.
type Checkout struct {
	Requests     int     `json:"requests"`
	Accepted     int     `json:"accepted"`
	TargetRate   float64 `json:"target_per_s,omitempty"`
	SentRate     float64 `json:"sent_per_s"`
	AchievedRate float64 `json:"accepted_per_s"`
	SuccessShare float64 `json:"success_share"`
	Codes        []Count `json:"status_codes"`
	Errors       []Count `json:"errors"`
	// Latency is over every request, failed ones included.
	Latency Dist `json:"latency"`
}

// Saga is the background side: how long until paid and until mailed.
type Saga struct {
	Orders   int  `json:"orders"`
	ToResult Dist `json:"time_to_paid"`
	ToMail   Dist `json:"time_to_mail"`
	// Seconds after the last checkout was sent; -1 when unknown.
	QueuesEmptyAfter float64 `json:"queues_empty_after_s"`
	LastMailAfter    float64 `json:"last_mail_after_s"`
	Waited           float64 `json:"accounting_waited_s"`
}

// Goal is one of the targets the issue states, met or not.
type Goal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"` // met, not met, not measured here
}

func (r *Report) build(cfg Config, samples []Sample, times []OrderTimes, acc Accounting, drain Drain, loadEnd time.Time, qsamples []QueueSample) {
	r.samples = samples
	r.Accounting = acc
	r.Scenario = Scenario{Mode: "constant rate", Rate: cfg.Rate, Duration: cfg.Duration.String(), Declined: cfg.Declined,
		Price: cfg.Price, DeclinePrice: cfg.DeclinePrice, Timeout: cfg.Timeout.String(), MaxWorkers: cfg.MaxWorkers}
	if r.Knee != nil {
		r.Scenario.Mode, r.Scenario.Rate, r.Scenario.Duration = "knee", 0, cfg.Knee.Step.String()+" per step"
	}

	// Checkout.
	c := Checkout{Requests: len(samples)}
	if r.Knee == nil {
		c.TargetRate = float64(cfg.Rate)
	}
	codes, errs := map[string]int{}, map[string]int{}
	lat := make([]time.Duration, 0, len(samples))
	var first, lastSent, lastEnd time.Time
	for i, s := range samples {
		if i == 0 || s.At.Before(first) {
			first = s.At
		}
		lastSent = later(lastSent, s.At)
		lastEnd = later(lastEnd, s.At.Add(s.Latency))
		lat = append(lat, s.Latency)
		code := fmt.Sprint(s.Code)
		if s.Code == 0 {
			code = "no answer"
		}
		codes[code]++
		if s.OK() {
			c.Accepted++
		} else {
			errs[cmp.Or(s.Err, fmt.Sprintf("status %d", s.Code))]++
		}
	}
	r.loadStart = first
	c.Codes, c.Errors = counts(codes), counts(errs)
	c.Latency = distOf(lat)
	if c.Requests > 0 {
		c.SuccessShare = float64(c.Accepted) / float64(c.Requests)
	}
	if c.Requests > 1 && lastSent.After(first) {
		c.SentRate = float64(c.Requests-1) / lastSent.Sub(first).Seconds()
	}
	if lastEnd.After(first) {
		// Over the run's planned length at least, so that a run whose
		// requests were not all sent does not look fast.
		span := lastEnd.Sub(first)
		if r.Knee == nil {
			span = max(span, cfg.Duration)
		}
		c.AchievedRate = float64(c.Accepted) / span.Seconds()
	}
	r.Checkout = c

	// Saga.
	sg := Saga{Orders: len(times), QueuesEmptyAfter: -1, Waited: drain.Waited.Seconds()}
	toResult := make([]time.Duration, len(times))
	toMail := make([]time.Duration, len(times))
	var lastMail time.Time
	for i, t := range times {
		toResult[i], toMail[i] = t.ToResult, t.ToMail
		lastMail = later(lastMail, t.At.Add(t.ToMail))
	}
	sg.ToResult, sg.ToMail = distOf(toResult), distOf(toMail)
	if drain.QueuesEmptyAfter > 0 {
		sg.QueuesEmptyAfter = drain.QueuesEmptyAfter.Seconds()
	}
	if !lastMail.IsZero() {
		sg.LastMailAfter = lastMail.Sub(loadEnd).Seconds()
	}
	r.Saga = sg
	r.Queues = queueStats(qsamples, cfg.Queues)
	if r.Knee != nil {
		r.Knee.addSagaTimes(times)
	}
	r.Goals = goals(cfg, r)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func counts(m map[string]int) []Count {
	out := make([]Count, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, Count{Name: k, N: m[k]})
	}
	slices.SortStableFunc(out, func(a, b Count) int { return b.N - a.N })
	return out
}

// goals states the two targets against what this run measured.
func goals(cfg Config, r *Report) []Goal {
	var out []Goal
	limit := time.Duration(float64(cfg.SimulatedWork) * 1.1)
	g := Goal{Goal: fmt.Sprintf("time-to-mail p99 ≤ %s (the %s of simulated work + 10%%) at 100 orders/s", fmtDur(limit), cfg.SimulatedWork)}
	switch {
	case r.Saga.Orders == 0:
		g.Measured, g.Status = "no order finished", "not measured here"
	case r.Knee == nil && cfg.Rate == 100:
		g.Measured = fmtMS(r.Saga.ToMail.P99)
		g.Status = metIf(r.Saga.ToMail.P99 <= ms(limit))
	default:
		g.Measured = fmt.Sprintf("%s (not at 100 orders/s)", fmtMS(r.Saga.ToMail.P99))
		g.Status = "not measured here"
	}
	out = append(out, g)

	g = Goal{Goal: "sustained checkout throughput ≥ half of pgbench's (same transaction shape, same machine)"}
	switch {
	case r.Knee == nil:
		g.Measured, g.Status = "run -knee for the highest sustainable rate", "not measured here"
	case cfg.PgbenchTPS <= 0:
		g.Measured = fmt.Sprintf("%d/s sustainable; pass -pgbench-tps (from make bench) to compare", r.Knee.Sustainable)
		g.Status = "not measured here"
	default:
		g.Measured = fmt.Sprintf("%d/s sustainable (%s); pgbench %.0f tps, ratio %.2f",
			r.Knee.Sustainable, r.Knee.CheckoutText(), cfg.PgbenchTPS, float64(r.Knee.Sustainable)/cfg.PgbenchTPS)
		g.Status = metIf(float64(r.Knee.Sustainable) >= cfg.PgbenchTPS/2)
	}
	return append(out, g)
}

func metIf(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// writeText prints the report for the terminal.
func writeText(w io.Writer, r *Report) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("")
	p("%s", r.title())
	p("machine: %s, %d CPUs, load average at start %s, %s", r.Machine.Host, r.Machine.CPUs, r.Machine.LoadAvg, r.Machine.Go)
	if r.QueueNote != "" {
		p("note: %s", r.QueueNote)
	}
	if r.Interrupted {
		p("INTERRUPTED: the run was stopped before every order was read; the accounting is incomplete")
	}

	c := r.Checkout
	p("")
	p("Checkout (POST /api/checkout through the gateway)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	rate := fmt.Sprintf("sent %.1f/s, accepted %.1f/s", c.SentRate, c.AchievedRate)
	if c.TargetRate > 0 {
		rate = fmt.Sprintf("target %.0f/s, ", c.TargetRate) + rate
	}
	fmt.Fprintf(tw, "  requests\t%d (%s)\n", c.Requests, rate)
	fmt.Fprintf(tw, "  success\t%.2f%% (%d accepted with 201)\n", c.SuccessShare*100, c.Accepted)
	fmt.Fprintf(tw, "  status codes\t%s\n", joinCounts(c.Codes, 0))
	fmt.Fprintf(tw, "  errors\t%s\n", cmp.Or(joinCounts(c.Errors, 5), "none"))
	fmt.Fprintf(tw, "  latency\tp50 %s   p90 %s   p99 %s   max %s\n", fmtMS(c.Latency.P50), fmtMS(c.Latency.P90), fmtMS(c.Latency.P99), fmtMS(c.Latency.Max))
	tw.Flush()

	if r.Knee != nil {
		p("")
		p("Knee (%s)", r.Knee.Thresholds)
		p("  %7s  %10s  %8s  %9s  %9s  %9s  %7s  %9s  %s", "rate/s", "accepted/s", "success", "p50", "p99", "max", "waiting", "mail p99", "verdict")
		for _, st := range r.Knee.Steps {
			verdict := "ok"
			if !st.OK {
				verdict = "breaks: " + st.Why
			}
			p("  %7d  %10.1f  %7.2f%%  %9s  %9s  %9s  %7s  %9s  %s", st.Rate, st.Achieved, st.SuccessShare*100,
				fmtMS(st.Latency.P50), fmtMS(st.Latency.P99), fmtMS(st.Latency.Max), unknownIfNeg(st.ReadyAtEnd), fmtMS(st.ToMail.P99), verdict)
		}
		p("  highest sustainable rate: %d orders/s (%s)", r.Knee.Sustainable, r.Knee.CheckoutText())
	}

	s := r.Saga
	p("")
	p("Saga (from the checkout being sent; step times as the services recorded them)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  time to paid\tp50 %s   p99 %s   max %s   (paid or declined, %d orders)\n", fmtMS(s.ToResult.P50), fmtMS(s.ToResult.P99), fmtMS(s.ToResult.Max), s.ToResult.N)
	fmt.Fprintf(tw, "  time to mail\tp50 %s   p99 %s   max %s   (SMTP server accepted it)\n", fmtMS(s.ToMail.P50), fmtMS(s.ToMail.P99), fmtMS(s.ToMail.Max))
	fmt.Fprintf(tw, "  backlog drained\t%s\n", r.drainText())
	tw.Flush()

	if len(r.Queues) > 0 {
		p("")
		p("Queues (RabbitMQ management API, sampled every second; the broker refreshes its figures every 5 s)")
		p("  %-32s %7s %7s %13s %8s %7s", "queue", "start", "peak", "peak waiting", "peak at", "end")
		for _, q := range r.Queues {
			p("  %-32s %7d %7d %13d %8s %7d", q.Name, q.Start, q.Peak, q.PeakReady, r.offset(q.PeakAt), q.End)
		}
	}

	a := r.Accounting
	p("")
	if a.OK {
		p("Accounting: every accepted order accounted for")
	} else {
		p("Accounting: NOT every accepted order accounted for")
	}
	p("  accepted %d = paid %d + declined %d (priced to be declined: %d); unfinished %d, mismatched %d, unreadable %d, duplicates %d",
		a.Accepted, a.Paid, a.Declined, a.PlannedDeclined, a.Unfinished, a.Mismatched, a.Unreadable, a.Duplicates)
	for _, pr := range a.Problems {
		p("  - %s", pr)
	}

	p("")
	p("Goals")
	for _, g := range r.Goals {
		p("  [%s] %s: %s", g.Status, g.Goal, g.Measured)
	}
}

func (r *Report) title() string {
	if r.Knee != nil {
		return fmt.Sprintf("Load test: knee search against %s, %s, %.0f%% declined", r.Target, r.Scenario.Duration, r.Scenario.Declined*100)
	}
	return fmt.Sprintf("Load test: %d checkouts/s for %s against %s, %.0f%% declined", r.Scenario.Rate, r.Scenario.Duration, r.Target, r.Scenario.Declined*100)
}

func (r *Report) drainText() string {
	var parts []string
	if r.Saga.QueuesEmptyAfter >= 0 {
		parts = append(parts, fmt.Sprintf("queues empty %.1f s after the last checkout (±5 s)", r.Saga.QueuesEmptyAfter))
	}
	if r.Saga.Orders > 0 {
		parts = append(parts, fmt.Sprintf("last mail %.1f s after it", r.Saga.LastMailAfter))
	}
	if len(parts) == 0 {
		return "unknown"
	}
	return strings.Join(parts, "; ")
}

// offset prints t as seconds from the start of the load.
func (r *Report) offset(t time.Time) string {
	if t.IsZero() || r.loadStart.IsZero() {
		return "-"
	}
	return fmt.Sprintf("+%.0fs", t.Sub(r.loadStart).Seconds())
}

func joinCounts(cs []Count, limit int) string {
	var parts []string
	for i, c := range cs {
		if limit > 0 && i == limit {
			parts = append(parts, fmt.Sprintf("and %d more", len(cs)-limit))
			break
		}
		parts = append(parts, fmt.Sprintf("%s: %d", c.Name, c.N))
	}
	return strings.Join(parts, ", ")
}

// writeFiles writes the JSON report into dir and says where.
func writeFiles(dir string, r *Report, w io.Writer) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report folder: %w", err)
	}
	name := "loadtest-" + r.Started.Local().Format("20060102-150405")
	if r.Knee != nil {
		name += "-knee"
	}
	if r.Cost != nil {
		name += "-cost"
	}
	base := filepath.Join(dir, name)
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	fmt.Fprintf(w, "\nReport: %s.json\n", base)
	return nil
}
