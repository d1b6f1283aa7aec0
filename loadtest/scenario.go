package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// runScenario runs the load (one constant rate, or the knee search), waits
// for the system to work off the backlog, accounts for every accepted order
// and returns the report. A report is returned even when the run was cut
// short, so that what was measured is not lost.
func runScenario(ctx context.Context, cfg Config, out io.Writer) (*Report, error) {
	if err := preflight(ctx, cfg.Target, "/health"); err != nil {
		return nil, err
	}
	qw, err := NewQueueWatch(cfg.RabbitAPI, cfg.VHost, cfg.Queues)
	if err != nil {
		return nil, err
	}
	queueNote := ""
	if qw != nil {
		first, err := qw.Fetch(ctx)
		switch {
		case err != nil:
			queueNote = fmt.Sprintf("queue depths unknown: %v", err)
			qw = nil
		case len(first.Depths) == 0:
			queueNote = fmt.Sprintf("queue depths unknown: no queue named %s in vhost %q", strings.Join(cfg.Queues, ", "), cfg.VHost)
			qw = nil
		case first.Total(cfg.Queues) > 0:
			queueNote = fmt.Sprintf("the queues held %d messages before the run: a backlog from earlier load delays these orders", first.Total(cfg.Queues))
		}
	} else {
		queueNote = "queue depths not measured (-rabbit-api is empty)"
	}

	prog := NewProgress(out, qw)
	if queueNote != "" {
		prog.Note("note: %s", queueNote)
	}
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if qw != nil {
		wg.Go(func() { qw.Run(bg, cfg.Sample) })
	}
	wg.Go(func() { prog.Run(bg) })
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopBackground()
			wg.Wait()
		}
	}
	defer stop()

	rep := &Report{Started: time.Now().UTC(), Target: cfg.Target, Machine: machine(), QueueNote: queueNote}
	cust := NewCustomers(cfg)
	var samples []Sample
	if cfg.Knee.On {
		samples, rep.Knee = runKnee(ctx, cfg, cust, qw, prog)
	} else {
		prog.Begin(fmt.Sprintf("%d/s", cfg.Rate), cfg.Duration, cust.Sent)
		if cfg.OnLoad != nil {
			cfg.OnLoad(time.Now())
		}
		samples = attack(ctx, cfg, cust, cfg.Rate, cfg.Duration, prog)
	}
	prog.End()

	var accepted []Sample
	loadEnd := time.Now()
	if len(samples) > 0 {
		loadEnd = samples[0].At
	}
	for _, s := range samples {
		if s.At.After(loadEnd) {
			loadEnd = s.At
		}
		if s.OK() {
			accepted = append(accepted, s)
		}
	}
	views, drain, settleErr := settle(ctx, cfg, NewOrderReader(cfg.Target), qw, accepted, loadEnd, prog)
	stop()

	var qsamples []QueueSample
	if qw != nil {
		var qerr error
		qsamples, qerr = qw.Samples()
		if qerr != nil && rep.QueueNote == "" {
			rep.QueueNote = fmt.Sprintf("some queue samples failed: %v", qerr)
		}
	}
	acc, times := account(samples, views)
	rep.build(cfg, samples, times, acc, drain, loadEnd, qsamples)
	rep.Interrupted = ctx.Err() != nil
	rep.Finished = time.Now().UTC()
	return rep, settleErr
}

// preflight checks that the gateway is there and healthy (path "/health":
// every service; "/readyz": checkout works), with a hint when it is not.
func preflight(ctx context.Context, target, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(target, "/")+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no gateway at %s (is `make run` running?): %w", target, err)
	}
	defer resp.Body.Close()
	var h struct {
		Status   string            `json:"status"`
		Services map[string]string `json:"services"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the gateway at %s is not healthy (%s: %s %v); wait for `make run` to settle", target, resp.Status, h.Status, h.Services)
	}
	return nil
}
