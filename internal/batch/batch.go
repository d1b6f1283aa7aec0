// Package batch lets many goroutines each ask for one piece of work and
// wait for its own outcome, while the work is done in batches: one round
// trip (a statement, a publish and its confirms) for many callers.
package batch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Result is the outcome of one input of a batch.
type Result[Out any] struct {
	Out Out
	Err error
}

// Group gathers the calls that come close together into one run of Run.
// A call that finds the group idle starts a batch at once (after Gather);
// what comes while a batch is under way goes out together in the next one,
// which starts no sooner than Linger after the last one started.
type Group[In, Out any] struct {
	// Run does a batch's work and returns one result per input, in order;
	// a shorter slice fails the inputs it leaves out with err (or an error
	// saying so when err is nil). ctx is the
	// first caller's, without its cancellation, bounded by Timeout.
	Run func(ctx context.Context, ins []In) (results []Result[Out], err error)
	// Max is the most inputs of one batch (default 100).
	Max int
	// Timeout bounds one batch (default 10 s).
	Timeout time.Duration
	// Linger is the least time between the starts of two batches: after
	// an idle spell a call goes at once, while calls keep coming they
	// gather for up to Linger, and a batch goes as soon as Max calls wait
	// (so a Group with Max set to the number of its callers, a consumer's
	// handlers, never waits with all of them in hand). 0: a batch is what
	// came while the last one was under way.
	Linger time.Duration
	// Gather is how long a batch waits for company after an idle spell:
	// calls that come in a burst (the deliveries of one read) go out
	// together from the first. 0: the first goes alone at once.
	Gather time.Duration
	// Alone, when set, tells the errors of a whole batch that one of its
	// inputs may have caused (a database that refused the batch's
	// transaction for one statement): the inputs of such a batch run again
	// one at a time, so that the trouble stays with its own caller and the
	// others go through.
	Alone func(err error) bool
	// Finish, when set, makes Do wait for the outcome of a batch that has
	// taken its call even when ctx ends first (the batch is bounded by
	// Timeout), so that the caller learns what happened instead of "maybe".
	// A call whose ctx ends while it still waits to be taken is taken out
	// of the queue: it was never run.
	Finish bool

	mu        sync.Mutex
	queue     []*call[In, Out]
	busy      bool          // a batch is under way (a flush, or a lone call's own)
	lastStart time.Time     // of the last batch; under mu
	full      chan struct{} // told when Max calls wait; made by Do under mu
}

type call[In, Out any] struct {
	ctx  context.Context
	in   In
	done chan Result[Out]
}

// ErrNotRun is wrapped, with the cause of the caller's context, in the
// error of a call whose context ended before a batch took it: its work was
// certainly not done.
var ErrNotRun = errors.New("batch: given up before its batch started")

// Do hands in to the next batch and waits for its result. When ctx ends
// first the work may still be done (unless Finish is set, see there).
func (g *Group[In, Out]) Do(ctx context.Context, in In) (Out, error) {
	c := &call[In, Out]{ctx: ctx, in: in, done: make(chan Result[Out], 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if g.full == nil {
		g.full = make(chan struct{}, 1)
	}
	if !g.busy {
		g.busy = true
		if g.Finish && g.Gather == 0 && len(g.queue) == 1 && time.Since(g.lastStart) >= g.Linger {
			// Nothing to wait for and nobody else waiting: this call's
			// goroutine runs its batch itself, so that a lone call costs no
			// hand-off to another goroutine and back (two wake-ups).
			return g.lead(c)
		}
		go g.flush()
	} else if len(g.queue) >= g.max() {
		select { // a lingering flush need not wait any longer
		case g.full <- struct{}{}:
		default:
		}
	}
	g.mu.Unlock()
	var zero Out
	select {
	case r := <-c.done:
		return r.Out, r.Err
	case <-ctx.Done():
	}
	if !g.Finish {
		return zero, context.Cause(ctx)
	}
	g.mu.Lock()
	i := slices.Index(g.queue, c)
	if i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
	g.mu.Unlock()
	if i >= 0 {
		return zero, notRun(ctx)
	}
	r := <-c.done // a batch has it
	return r.Out, r.Err
}

// lead runs the batch of c alone, on the caller's goroutine (see Do), and
// hands what queued meanwhile to a flush of its own. Called under mu,
// which it releases; the deferred hand-off also runs when Run panics, so
// that a panic (which the caller's recovery may survive) does not leave
// the group counting a batch that no longer runs.
func (g *Group[In, Out]) lead(c *call[In, Out]) (Out, error) {
	batch := g.take()
	g.mu.Unlock()
	func() {
		defer func() {
			g.mu.Lock()
			if len(g.queue) > 0 {
				go g.flush()
			} else {
				g.busy = false
			}
			g.mu.Unlock()
		}()
		g.run(batch)
	}()
	r := <-c.done
	return r.Out, r.Err
}

func notRun(ctx context.Context) error { return fmt.Errorf("%w: %w", ErrNotRun, context.Cause(ctx)) }

// Queued is how many calls wait for a batch to take them.
func (g *Group[In, Out]) Queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// wait lets calls gather for d, or until Max of them wait.
func (g *Group[In, Out]) wait(d time.Duration) {
	g.mu.Lock()
	full, n := g.full, len(g.queue)
	select {
	case <-full: // a signal from before: n says how things are now
	default:
	}
	g.mu.Unlock()
	if n >= g.max() {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-full:
	}
}

func (g *Group[In, Out]) max() int {
	if g.Max > 0 {
		return g.Max
	}
	return 100
}

func (g *Group[In, Out]) flush() {
	g.mu.Lock()
	idle := time.Since(g.lastStart) >= g.Linger
	g.mu.Unlock()
	if idle && g.Gather > 0 {
		g.wait(g.Gather)
	}
	for {
		// A full batch goes at once; a smaller one waits out the rest of
		// Linger since the last batch started, gathering what comes, until
		// it is full.
		g.mu.Lock()
		wait := g.Linger - time.Since(g.lastStart)
		g.mu.Unlock()
		if wait > 0 {
			g.wait(wait)
		}
		g.mu.Lock()
		batch := g.take()
		if batch == nil {
			g.busy = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.run(batch)
	}
}

// take takes the next batch off the queue (nil when it is empty). Under mu.
func (g *Group[In, Out]) take() []*call[In, Out] {
	n := min(len(g.queue), g.max())
	if n == 0 {
		return nil
	}
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.lastStart = time.Now()
	return batch
}

// run runs a batch and hands each call its result.
func (g *Group[In, Out]) run(batch []*call[In, Out]) {
	// Callers that gave up meanwhile are not worked for.
	live := batch[:0]
	for _, c := range batch {
		if c.ctx.Err() != nil {
			c.done <- Result[Out]{Err: notRun(c.ctx)}
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return
	}
	ins := make([]In, len(live))
	for i, c := range live {
		ins[i] = c.in
	}
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(live[0].ctx), timeout)
	results, err := g.Run(ctx, ins)
	if err != nil && len(ins) > 1 && g.Alone != nil && g.Alone(err) {
		results, err = g.oneByOne(ctx, ins), nil
	}
	cancel()
	if err == nil && len(results) < len(live) {
		err = fmt.Errorf("batch: %d results for %d inputs", len(results), len(live))
	}
	for i, c := range live {
		if i < len(results) {
			c.done <- results[i]
		} else {
			c.done <- Result[Out]{Err: err}
		}
	}
}

// oneByOne runs each input as a batch of its own.
func (g *Group[In, Out]) oneByOne(ctx context.Context, ins []In) []Result[Out] {
	results := make([]Result[Out], len(ins))
	for i := range ins {
		rs, err := g.Run(ctx, ins[i:i+1])
		switch {
		case err != nil:
			results[i].Err = err
		case len(rs) == 0:
			results[i].Err = errors.New("batch: no result for the input")
		default:
			results[i] = rs[0]
		}
	}
	return results
}
