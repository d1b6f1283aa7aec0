package batch

import (
	"context"
	"errors"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a Group's Run that records the batches it was given and
// doubles each input.
type recorder struct {
	mu      sync.Mutex
	batches [][]int
	release chan struct{} // when set, a batch waits for it
}

func (r *recorder) run(_ context.Context, ins []int) ([]Result[int], error) {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(ins))
	release := r.release
	r.mu.Unlock()
	if release != nil {
		<-release
	}
	out := make([]Result[int], len(ins))
	for i, in := range ins {
		out[i].Out = 2 * in
	}
	return out, nil
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []int
	for _, b := range r.batches {
		s = append(s, len(b))
	}
	return s
}

// Every caller gets its own input's result, and what comes while a batch
// is under way goes out together in the next: here one call alone, then
// the 20 that came while it ran in one batch.
func TestGroupGathersWhatComesWhileABatchRuns(t *testing.T) {
	r := &recorder{release: make(chan struct{})}
	g := &Group[int, int]{Run: r.run}
	first := make(chan error, 1)
	go func() {
		out, err := g.Do(context.Background(), 1)
		if err == nil && out != 2 {
			err = errors.New("first call: wrong result")
		}
		first <- err
	}()
	waitFor(t, func() bool { return len(r.sizes()) == 1 })
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if out, err := g.Do(context.Background(), 100+i); err != nil || out != 2*(100+i) {
				errs <- errors.New("a gathered call got another's result or an error")
			}
		})
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 20 })
	close(r.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if got := r.sizes(); !slices.Equal(got, []int{1, 20}) {
		t.Fatalf("batch sizes %v, want [1 20]", got)
	}
}

// With Gather, calls that come in a burst after an idle spell go out in
// one batch from the first; Max splits what is more.
func TestGroupGatherAndMax(t *testing.T) {
	r := &recorder{}
	g := &Group[int, int]{Run: r.run, Gather: time.Second, Max: 8}
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if _, err := g.Do(context.Background(), i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// The first batch is 8 (it goes when 8 wait); the rest go after it, as
	// they came (TestGroupFullBatchDoesNotLinger: without waiting out
	// Gather).
	got := r.sizes()
	sum := 0
	for _, n := range got {
		sum += n
	}
	if len(got) < 2 || got[0] != 8 || sum != 10 {
		t.Fatalf("batch sizes %v, want 8 and then the other 2: a burst gathered, split at Max", got)
	}
}

// A Group that lingers does not hold a full batch: Max calls waiting go at
// once, however long Linger and Gather are (a consumer whose handlers are
// all waiting in the Group would otherwise do Max per Linger and fall
// behind).
func TestGroupFullBatchDoesNotLinger(t *testing.T) {
	r := &recorder{}
	g := &Group[int, int]{Run: r.run, Linger: time.Hour, Gather: time.Hour, Max: 3}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				if out, err := g.Do(context.Background(), i); err != nil || out != 2*i {
					t.Errorf("call %d: %d, %v", i, out, err)
				}
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("six calls with Max 3 still waiting after a minute (batches so far %v): full batches lingered", r.sizes())
	}
	if got := r.sizes(); !slices.Equal(got, []int{3, 3}) {
		t.Fatalf("batch sizes %v, want [3 3]", got)
	}
}

// A caller that gave up before its batch started is not worked for, and a
// Run that returns fewer results fails the rest with its error.
func TestGroupSkipsCallersThatGaveUpAndFailsWhatRunLeftOut(t *testing.T) {
	boom := errors.New("boom")
	var (
		mu  sync.Mutex
		got [][]int
	)
	runs := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	release := make(chan struct{})
	g := &Group[int, int]{Run: func(_ context.Context, ins []int) ([]Result[int], error) {
		mu.Lock()
		got = append(got, slices.Clone(ins))
		n := len(got)
		mu.Unlock()
		if n == 1 {
			<-release
			return []Result[int]{{Out: 1}}, nil
		}
		return []Result[int]{{Out: ins[0]}}, boom
	}}
	firstDone := make(chan struct{})
	go func() { defer close(firstDone); _, _ = g.Do(context.Background(), 0) }()
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.busy && len(g.queue) == 0 && runs() == 1
	})

	gone, cancel := context.WithCancel(context.Background())
	goneErr := make(chan error, 1)
	go func() { _, err := g.Do(gone, 1); goneErr <- err }()
	type res struct {
		out int
		err error
	}
	results := make(chan res, 2)
	for _, in := range []int{2, 3} {
		waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) >= in-1 })
		go func() { out, err := g.Do(context.Background(), in); results <- res{out, err} }()
	}
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 3 })
	cancel()
	if err := <-goneErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller that gave up got %v", err)
	}
	close(release)
	<-firstDone
	a, b := <-results, <-results
	if a.err != nil {
		a, b = b, a
	}
	if a.err != nil || a.out != 2 || !errors.Is(b.err, boom) {
		t.Fatalf("results %+v and %+v: want 2 for the first input and the batch's error for the one Run left out", a, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !slices.Equal(got[1], []int{2, 3}) {
		t.Fatalf("batches %v: the caller that gave up should not be in the second", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// With Alone, a batch whose error Alone names runs again one input at a
// time: the input that caused it gets the error, the others their results.
// Without it the whole batch fails.
func TestGroupAloneRunsARefusedBatchOneByOne(t *testing.T) {
	refused := errors.New("refused: a 13 in the batch")
	run := func(_ context.Context, ins []int) ([]Result[int], error) {
		if slices.Contains(ins, 13) {
			return nil, refused
		}
		out := make([]Result[int], len(ins))
		for i, in := range ins {
			out[i].Out = in
		}
		return out, nil
	}
	for _, alone := range []bool{true, false} {
		g := &Group[int, int]{Run: run, Gather: time.Second}
		if alone {
			g.Alone = func(err error) bool { return errors.Is(err, refused) }
		}
		ins := []int{1, 13, 2}
		errs := make([]error, len(ins))
		outs := make([]int, len(ins))
		var wg sync.WaitGroup
		for i, in := range ins {
			wg.Go(func() { outs[i], errs[i] = g.Do(context.Background(), in) })
		}
		wg.Wait()
		if !errors.Is(errs[1], refused) {
			t.Fatalf("alone %v: the 13 got %v", alone, errs[1])
		}
		for _, i := range []int{0, 2} {
			if ok := errs[i] == nil && outs[i] == ins[i]; ok != alone {
				t.Fatalf("alone %v: input %d got %d, %v", alone, ins[i], outs[i], errs[i])
			}
		}
	}
}

// With Finish, a caller whose context ends while its batch runs still gets
// the batch's outcome; one whose context ends while it waits in the queue
// is taken out (its work is never run) and told so with ErrNotRun.
func TestGroupFinish(t *testing.T) {
	rec := &recorder{}
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	g := &Group[int, int]{Finish: true, Run: func(ctx context.Context, ins []int) ([]Result[int], error) {
		once.Do(func() { close(started); <-release })
		return rec.run(ctx, ins)
	}}
	running, stopRunning := context.WithCancel(context.Background())
	type res struct {
		v   int
		err error
	}
	first := make(chan res, 1)
	go func() { v, err := g.Do(running, 1); first <- res{v, err} }()
	<-started
	queued, stopQueued := context.WithCancel(context.Background())
	second := make(chan res, 1)
	go func() { v, err := g.Do(queued, 2); second <- res{v, err} }()
	waitFor(t, func() bool { return g.Queued() == 1 })
	stopQueued()
	if r := <-second; !errors.Is(r.err, ErrNotRun) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the call given up in the queue: %v, want ErrNotRun with its cause", r.err)
	}
	stopRunning()
	select {
	case r := <-first:
		t.Fatalf("the call whose batch runs returned before its batch ended: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := <-first; r.err != nil || r.v != 2 {
		t.Fatalf("the call whose batch ran: %+v, want its result", r)
	}
	if s := rec.sizes(); !slices.Equal(s, []int{1}) {
		t.Fatalf("batches run %v, want only the first call's", s)
	}
}

// With Finish (and nothing to gather or linger for), a call that finds the
// group idle runs its batch on its own goroutine: no hand-off to a flush
// goroutine and back, whose two wake-ups a lone caller would wait for.
// Without Finish the caller may leave early, so a flush runs the batch.
func TestGroupFinishRunsALoneCallOnItsCaller(t *testing.T) {
	for _, finish := range []bool{true, false} {
		var inDo bool
		g := &Group[int, int]{Finish: finish, Run: func(_ context.Context, ins []int) ([]Result[int], error) {
			inDo = strings.Contains(string(debug.Stack()), "batch.(*Group[...]).Do(")
			return make([]Result[int], len(ins)), nil
		}}
		if _, err := g.Do(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if inDo != finish {
			t.Fatalf("Finish %v: the batch ran on the caller's goroutine: %v", finish, inDo)
		}
	}
}

// A Run that panics on a caller's goroutine (the lone-call path) leaves
// the group able to run the next batch: the panic goes to the caller, whose
// recovery (an HTTP server's) may survive it.
func TestGroupLeaderPanicLeavesTheGroupWorking(t *testing.T) {
	calls := 0
	g := &Group[int, int]{Finish: true, Run: func(_ context.Context, ins []int) ([]Result[int], error) {
		calls++
		if calls == 1 {
			panic("boom")
		}
		return []Result[int]{{Out: ins[0] * 3}}, nil
	}}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the panic did not reach the caller")
			}
		}()
		_, _ = g.Do(context.Background(), 1)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := g.Do(ctx, 2); err != nil || v != 6 {
		t.Fatalf("the call after the panic: %d, %v; want 6", v, err)
	}
}
