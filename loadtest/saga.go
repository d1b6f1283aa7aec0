package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Timeline steps and statuses of the order API.
const (
	stepCreated       = "created"
	stepPaid          = "paid"
	stepPaymentFailed = "payment_failed"
	stepConfirmation  = "confirmation_sent"
	stepFailureNotice = "payment_failed_notice_sent"
	statusPaid        = "paid"
	statusFailed      = "payment_failed"
)

// OrderView is what GET /api/orders/{id} says of an order.
type OrderView struct {
	ID       int64  `json:"id"`
	Status   string `json:"status"`
	Timeline []struct {
		Step string    `json:"step"`
		At   time.Time `json:"at"`
	} `json:"timeline"`
}

// At is when the step happened, as the service that did it recorded it.
func (o OrderView) At(step string) (time.Time, bool) {
	for _, s := range o.Timeline {
		if s.Step == step {
			return s.At, true
		}
	}
	return time.Time{}, false
}

// Finished reports whether the saga is over: paid or declined, and the
// matching mail accepted.
func (o OrderView) Finished() bool {
	switch o.Status {
	case statusPaid:
		_, ok := o.At(stepConfirmation)
		return ok
	case statusFailed:
		_, ok := o.At(stepFailureNotice)
		return ok
	}
	return false
}

// OrderReader reads orders through the gateway.
type OrderReader struct {
	target string
	client *http.Client
	tokens map[int64]string // the orders' access tokens, by id
}

// NewOrderReader reads from the gateway at target.
func NewOrderReader(target string) OrderReader {
	return OrderReader{target: strings.TrimRight(target, "/"), client: &http.Client{Timeout: 10 * time.Second}}
}

// Get reads one order.
func (r OrderReader) Get(ctx context.Context, id int64) (OrderView, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/orders/%d", r.target, id), nil)
	if err != nil {
		return OrderView{}, err
	}
	req.Header.Set("Authorization", "Bearer "+r.tokens[id])
	resp, err := r.client.Do(req)
	if err != nil {
		return OrderView{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return OrderView{}, fmt.Errorf("GET order %d: %s", id, resp.Status)
	}
	var o OrderView
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil {
		return OrderView{}, fmt.Errorf("decode order %d: %w", id, err)
	}
	return o, nil
}

// Drain is how the backlog went after the load stopped.
type Drain struct {
	// Waited is how long the accounting waited for the system.
	Waited time.Duration
	// QueuesEmptyAfter is when the management API first showed the main
	// queues empty, from the last request sent; 0 when unknown.
	QueuesEmptyAfter time.Duration
	// TimedOut is set when some orders had not finished by the deadline.
	TimedOut bool
}

// settle waits until the system has worked off the backlog and then reads
// every accepted order once. It does not poll every order while the system
// is busy, so that measuring does not slow down what it measures: it waits
// for the newest order (one read a second) and for the queues to empty,
// reads all orders with a few workers, and reads again only the few that
// had not finished yet.
func settle(ctx context.Context, cfg Config, rd OrderReader, qw *QueueWatch, accepted []Sample, loadEnd time.Time, prog *Progress) (map[int64]OrderView, Drain, error) {
	start := time.Now()
	deadline := start.Add(cfg.DrainTimeout)
	views := map[int64]OrderView{}
	var drain Drain
	if len(accepted) == 0 {
		return views, drain, nil
	}
	prog.Wait("draining")
	defer prog.Wait("")
	rd.tokens = make(map[int64]string, len(accepted))
	for _, s := range accepted {
		rd.tokens[s.OrderID] = s.Token
	}

	newest := slices.MaxFunc(accepted, func(a, b Sample) int { return a.At.Compare(b.At) })
	for time.Now().Before(deadline) {
		if o, err := rd.Get(ctx, newest.OrderID); err == nil && o.Finished() {
			break
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return views, drain, ctx.Err()
		}
	}
	// The newest order is done; what is still queued is other orders'
	// stragglers (retries) or someone else's traffic, so wait only a little.
	if qw != nil {
		queuesDeadline := time.Now().Add(cfg.Sample*2 + 15*time.Second)
		if deadline.Before(queuesDeadline) {
			queuesDeadline = deadline
		}
		for time.Now().Before(queuesDeadline) && !qw.Empty(loadEnd) {
			if !sleep(ctx, cfg.Sample/2) {
				return views, drain, ctx.Err()
			}
		}
		if samples, _ := qw.Samples(); len(samples) > 0 {
			for _, s := range samples {
				if s.At.After(loadEnd) && s.Total(qw.Main) == 0 {
					drain.QueuesEmptyAfter = s.At.Sub(loadEnd)
					break
				}
			}
		}
	}

	pending := make([]int64, 0, len(accepted))
	for _, s := range accepted {
		pending = append(pending, s.OrderID)
	}
	var lastErr error
	for {
		got, err := readAll(ctx, rd, pending, cfg.ReadWorkers)
		if err != nil {
			lastErr = err
		}
		next := pending[:0]
		for _, id := range pending {
			o, ok := got[id]
			if ok {
				views[id] = o
			}
			if !ok || !o.Finished() {
				next = append(next, id)
			}
		}
		pending = next
		if len(pending) == 0 {
			break
		}
		if !time.Now().Before(deadline) {
			drain.TimedOut = true
			prog.Note("drain: %d orders had not finished within -drain-timeout %s (last error: %v)", len(pending), cfg.DrainTimeout, lastErr)
			break
		}
		if !sleep(ctx, time.Second) {
			return views, drain, ctx.Err()
		}
	}
	drain.Waited = time.Since(start)
	return views, drain, nil
}

// readAll reads the orders with n workers; orders that could not be read are
// missing from the map.
func readAll(ctx context.Context, rd OrderReader, ids []int64, n int) (map[int64]OrderView, error) {
	var (
		mu      sync.Mutex
		out     = make(map[int64]OrderView, len(ids))
		lastErr error
		wg      sync.WaitGroup
		next    = make(chan int64)
	)
	for range min(n, len(ids)) {
		wg.Go(func() {
			for id := range next {
				o, err := rd.Get(ctx, id)
				mu.Lock()
				if err == nil {
					out[id] = o
				} else {
					lastErr = err
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		next <- id
	}
	close(next)
	wg.Wait()
	return out, lastErr
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// OrderTimes is one accepted order's saga, measured from when the customer
// sent the checkout (what the customer feels), with the service-recorded
// step times.
type OrderTimes struct {
	At       time.Time     // checkout sent
	ToResult time.Duration // until paid or declined
	ToMail   time.Duration // until the SMTP server accepted the mail
	Declined bool
}

// Accounting checks that every accepted order went through the saga: paid
// and confirmed, or declined and told so, exactly as it was priced.
type Accounting struct {
	Accepted        int      `json:"accepted"`
	Paid            int      `json:"paid"`
	Declined        int      `json:"declined"`
	PlannedDeclined int      `json:"planned_declined"`
	Unfinished      int      `json:"unfinished"`
	Unreadable      int      `json:"unreadable"`
	Mismatched      int      `json:"mismatched"`
	Duplicates      int      `json:"duplicates"`
	Problems        []string `json:"problems,omitempty"`
	OK              bool     `json:"ok"`
}

// maxProblems is how many problems the report lists by name.
const maxProblems = 20

// account matches the accepted checkouts with the orders as read afterwards.
func account(samples []Sample, views map[int64]OrderView) (Accounting, []OrderTimes) {
	var (
		a     Accounting
		times []OrderTimes
		seen  = map[int64]bool{}
	)
	problem := func(format string, args ...any) {
		if len(a.Problems) < maxProblems {
			a.Problems = append(a.Problems, fmt.Sprintf(format, args...))
		}
	}
	for _, s := range samples {
		if s.Code == http.StatusCreated && !s.OK() {
			a.Unreadable++
			problem("a 201 answer without a readable order (%s)", s.Err)
			continue
		}
		if !s.OK() {
			continue
		}
		a.Accepted++
		if s.Decline {
			a.PlannedDeclined++
		}
		if seen[s.OrderID] {
			a.Duplicates++
			problem("order %d was answered to two checkouts", s.OrderID)
			continue
		}
		seen[s.OrderID] = true
		o, ok := views[s.OrderID]
		if !ok {
			a.Unfinished++
			problem("order %d could not be read", s.OrderID)
			continue
		}
		if !o.Finished() {
			a.Unfinished++
			problem("order %d did not finish: status %s, steps %s", s.OrderID, o.Status, steps(o))
			continue
		}
		result, mail := stepPaid, stepConfirmation
		if o.Status == statusFailed {
			result, mail = stepPaymentFailed, stepFailureNotice
		}
		if (o.Status == statusFailed) != s.Decline {
			a.Mismatched++
			problem("order %d is %s but was priced to be %s", s.OrderID, o.Status, map[bool]string{true: "declined", false: "paid"}[s.Decline])
			continue
		}
		resultAt, ok1 := o.At(result)
		mailAt, ok2 := o.At(mail)
		if _, ok := o.At(stepCreated); !ok || !ok1 || !ok2 {
			a.Mismatched++
			problem("order %d is %s with steps %s", s.OrderID, o.Status, steps(o))
			continue
		}
		if o.Status == statusPaid {
			a.Paid++
		} else {
			a.Declined++
		}
		times = append(times, OrderTimes{At: s.At, ToResult: resultAt.Sub(s.At), ToMail: mailAt.Sub(s.At), Declined: s.Decline})
	}
	a.OK = a.Unfinished == 0 && a.Unreadable == 0 && a.Mismatched == 0 && a.Duplicates == 0 &&
		a.Paid+a.Declined == a.Accepted && a.Declined == a.PlannedDeclined
	return a, times
}

func steps(o OrderView) string {
	s := make([]string, len(o.Timeline))
	for i, t := range o.Timeline {
		s[i] = t.Step
	}
	return "[" + strings.Join(s, " ") + "]"
}
