package main

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// KneeStep is one rate tried by the knee search.
type KneeStep struct {
	Rate         int       `json:"rate"`
	From         time.Time `json:"from"`
	To           time.Time `json:"to"`
	Requests     int       `json:"requests"`
	Accepted     int       `json:"accepted"`
	Achieved     float64   `json:"achieved_per_s"`
	SuccessShare float64   `json:"success_share"`
	Latency      Dist      `json:"latency"`
	// ReadyAtEnd is the messages waiting for a consumer in the saga's
	// queues at the end of the step; -1 when unknown.
	ReadyAtEnd int `json:"ready_at_end"`
	// ToMail is the time to mail of the step's orders, known after the run.
	ToMail     Dist   `json:"time_to_mail"`
	CheckoutOK bool   `json:"checkout_ok"`
	SagaOK     bool   `json:"saga_ok"`
	OK         bool   `json:"ok"`
	Why        string `json:"why,omitempty"`
}

// KneeReport is the outcome of the knee search.
type KneeReport struct {
	Thresholds string     `json:"thresholds"`
	P99Limit   float64    `json:"p99_threshold_ms"`
	Steps      []KneeStep `json:"steps"`
	// Sustainable is the highest rate that held every threshold (0: none did).
	Sustainable int `json:"sustainable_per_s"`
	// CheckoutLimit is the highest rate at which checkout alone held its
	// thresholds, whatever the saga did; CheckoutBroke tells whether a
	// higher rate was tried and broke them (so the limit was found).
	CheckoutLimit int  `json:"checkout_limit_per_s"`
	CheckoutBroke bool `json:"checkout_broke"`
}

// CheckoutText says how far checkout alone held.
func (k *KneeReport) CheckoutText() string {
	if k.CheckoutBroke {
		return fmt.Sprintf("checkout alone held its thresholds up to %d/s", k.CheckoutLimit)
	}
	if k.CheckoutLimit == 0 {
		return "no step held checkout's thresholds"
	}
	return fmt.Sprintf("checkout alone held its thresholds at every rate tried, up to %d/s; run with -knee-saga=false to find its own limit", k.CheckoutLimit)
}

// runKnee steps the rate up by a factor until a step breaks a threshold,
// then bisects between the last good and the first bad rate. Each step
// starts from an idle system: between steps it waits for the backlog.
func runKnee(ctx context.Context, cfg Config, cust *Customers, qw *QueueWatch, prog *Progress) ([]Sample, *KneeReport) {
	k := cfg.Knee
	rep := &KneeReport{Thresholds: fmt.Sprintf("checkout p99 ≤ %s, errors ≤ %.1f%%, accepted ≥ 95%% of the target rate", fmtDur(k.P99), k.Errors*100)}
	rep.P99Limit = ms(k.P99)
	if k.Saga && qw != nil {
		rep.Thresholds += ", and the saga keeps up (at most a tenth of a second of orders, or 10, waiting for a consumer in its queues at the end of a step)"
	}
	var all []Sample
	once := func(rate int) bool {
		prog.Begin(fmt.Sprintf("knee %d/s", rate), k.Step, cust.Sent)
		samples := attack(ctx, cfg, cust, rate, k.Step, prog)
		all = append(all, samples...)
		st := judge(cfg, rate, samples, qw)
		st.From, st.To = first(samples), time.Now()
		rep.Steps = append(rep.Steps, st)
		verdict := "ok"
		if !st.OK {
			verdict = "breaks: " + st.Why
		}
		prog.Note("knee: %d/s: accepted %.1f/s, success %.2f%%, p50 %s, p99 %s, waiting in queues %s: %s",
			rate, st.Achieved, st.SuccessShare*100, fmtMS(st.Latency.P50), fmtMS(st.Latency.P99), unknownIfNeg(st.ReadyAtEnd), verdict)
		waitIdle(ctx, cfg, qw, prog)
		return st.OK
	}
	// A break is confirmed by a second try at the same rate: on a shared
	// machine one noisy step should not end the search.
	try := func(rate int) bool {
		if once(rate) {
			return true
		}
		if !k.Confirm || ctx.Err() != nil {
			return false
		}
		prog.Note("knee: trying %d/s again to confirm the break", rate)
		return once(rate)
	}
	good, bad := 0, 0
	for rate := k.Start; rate <= k.Max && ctx.Err() == nil; rate = max(rate+1, int(math.Round(float64(rate)*k.Factor))) {
		if !try(rate) {
			bad = rate
			break
		}
		good = rate
	}
	for i := 0; i < k.Refine && bad > 0 && good > 0 && bad-good > 1 && ctx.Err() == nil; i++ {
		mid := (good + bad) / 2
		if try(mid) {
			good = mid
		} else {
			bad = mid
		}
	}
	rep.Sustainable = good
	for _, st := range rep.Steps {
		if st.CheckoutOK && st.Rate > rep.CheckoutLimit {
			rep.CheckoutLimit = st.Rate
		}
	}
	for _, st := range rep.Steps {
		rep.CheckoutBroke = rep.CheckoutBroke || (!st.CheckoutOK && st.Rate > rep.CheckoutLimit)
	}
	return all, rep
}

// first is when the first request of samples was sent.
func first(samples []Sample) time.Time {
	var t time.Time
	for _, s := range samples {
		if t.IsZero() || s.At.Before(t) {
			t = s.At
		}
	}
	return t
}

// addSagaTimes gives every step the time to mail of its orders.
func (k *KneeReport) addSagaTimes(times []OrderTimes) {
	for i := range k.Steps {
		st := &k.Steps[i]
		var mail []time.Duration
		for _, t := range times {
			if !t.At.Before(st.From) && t.At.Before(st.To) {
				mail = append(mail, t.ToMail)
			}
		}
		st.ToMail = distOf(mail)
	}
}

// judge measures one step against the thresholds.
func judge(cfg Config, rate int, samples []Sample, qw *QueueWatch) KneeStep {
	st := KneeStep{Rate: rate, Requests: len(samples), ReadyAtEnd: -1, SagaOK: true}
	if len(samples) == 0 {
		st.Why = "no requests were sent"
		return st
	}
	first, last := samples[0].At, samples[0].At.Add(samples[0].Latency)
	lat := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if s.At.Before(first) {
			first = s.At
		}
		if e := s.At.Add(s.Latency); e.After(last) {
			last = e
		}
		lat = append(lat, s.Latency)
		if s.OK() {
			st.Accepted++
		}
	}
	st.Latency = distOf(lat)
	st.SuccessShare = float64(st.Accepted) / float64(st.Requests)
	// The step's rate is judged over its planned length: answers that come
	// late (or requests that could not be sent) pull it down.
	st.Achieved = float64(st.Accepted) / max(cfg.Knee.Step, last.Sub(first)).Seconds()
	var why []string
	if st.Latency.P99 > ms(cfg.Knee.P99) {
		why = append(why, fmt.Sprintf("p99 %s > %s", fmtMS(st.Latency.P99), fmtDur(cfg.Knee.P99)))
	}
	if 1-st.SuccessShare > cfg.Knee.Errors {
		why = append(why, fmt.Sprintf("errors %.2f%% > %.2f%%", (1-st.SuccessShare)*100, cfg.Knee.Errors*100))
	}
	if st.Achieved < 0.95*float64(rate) {
		why = append(why, fmt.Sprintf("accepted %.1f/s < 95%% of %d/s", st.Achieved, rate))
	}
	st.CheckoutOK = len(why) == 0
	if qw != nil {
		if s, ok := qw.Latest(); ok {
			st.ReadyAtEnd = s.Ready(qw.Main)
			// A saga that keeps up hands every message to a consumer at
			// once (prefetch covers the work in flight); messages that wait
			// pile up for as long as the rate lasts.
			if cfg.Knee.Saga && st.ReadyAtEnd > max(10, rate/10) {
				st.SagaOK = false
				why = append(why, fmt.Sprintf("saga falls behind: %d messages waiting in its queues", st.ReadyAtEnd))
			}
		}
	}
	st.OK = len(why) == 0
	st.Why = strings.Join(why, "; ")
	return st
}

// waitIdle waits until the saga's queues are empty (or the budget is
// spent), so the next step starts from an idle system.
func waitIdle(ctx context.Context, cfg Config, qw *QueueWatch, prog *Progress) {
	prog.Wait("knee: draining")
	defer prog.Wait("")
	if qw == nil {
		sleep(ctx, cfg.SimulatedWork+2*time.Second)
		return
	}
	since := time.Now()
	deadline := since.Add(cfg.Knee.DrainBudget)
	for time.Now().Before(deadline) {
		if qw.Empty(since) {
			return
		}
		if !sleep(ctx, cfg.Sample/2) {
			return
		}
	}
	prog.Note("knee: the backlog did not drain within -knee-drain %s; going on", cfg.Knee.DrainBudget)
}

func unknownIfNeg(n int) string {
	if n < 0 {
		return "unknown"
	}
	return fmt.Sprint(n)
}
