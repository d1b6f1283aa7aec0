package events_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// A connection that drops in the middle of a batch makes Publish return
// (not hang) with the unconfirmed messages marked failed. What it reported
// as confirmed reached the queue, and once the broker is back the failed
// ones go through on the same Publisher: at least once, nothing lost. The
// cut lands mid-batch for sure: after the first half was sent and
// confirmed, before the second half is sent.
func TestPublishSurvivesConnectionLossMidBatch(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	q := testenv.Watch(t, url, testKey)
	proxy := testenv.NewProxy(t, testenv.BrokerAddr())
	log := web.NewLogger(io.Discard, "error", "json", "test")
	ctx, cancel := context.WithCancel(context.Background())
	b := events.NewBroker(proxy.URL(url), log)
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	pub := events.NewPublisher(b)
	t.Cleanup(pub.Close)

	msgs := make([]events.Message, events.MaxBatch)
	for i := range msgs {
		msgs[i] = events.Message{ID: fmt.Sprintf("m-%04d", i), Type: "Thing", RoutingKey: testKey,
			Body: []byte(fmt.Sprintf(`{"n":%d,"pad":"%0512d"}`, i, 0))}
	}
	half := len(msgs) / 2
	var sent []*amqp.DeferredConfirmation // only the publishing goroutine touches it
	events.OnSent(pub, func(i int, dc *amqp.DeferredConfirmation) {
		sent = append(sent, dc)
		if i == half-1 {
			for _, dc := range sent {
				dc.Wait()
			}
			proxy.Cut()
		}
	})
	// Publish fails fast while the broker is not connected (the outbox
	// tries again later); wait for the connection first.
	waitFor(t, "broker connection", b.Connected)
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()

	type outcome struct {
		results []events.Result
		err     error
	}
	out := make(chan outcome, 1)
	go func() {
		r, err := pub.Publish(pctx, msgs)
		out <- outcome{r, err}
	}()
	var got outcome
	select {
	case got = <-out:
	case <-time.After(15 * time.Second):
		t.Fatal("Publish did not return after the connection dropped mid-batch")
	}
	events.OnSent(pub, nil) // the retries below must not cut again
	if len(got.results) != len(msgs) {
		t.Fatalf("%d results for %d messages (err %v)", len(got.results), len(msgs), got.err)
	}
	var retry []events.Message
	for i, r := range got.results {
		if r.ID != msgs[i].ID {
			t.Fatalf("result %d is for %s, want %s", i, r.ID, msgs[i].ID)
		}
		// The first half was confirmed before the cut; the second half
		// was sent into a dropped connection and cannot have been.
		if before := i < half; before != (r.Err == nil) {
			t.Fatalf("result %d (sent before the cut: %v): %v", i, before, r.Err)
		}
		if r.Err != nil {
			retry = append(retry, msgs[i])
		}
	}

	proxy.Restore()
	// As the outbox relay does: try what failed again until it is confirmed.
	retryUntil := time.Now().Add(30 * time.Second)
	for len(retry) > 0 {
		if time.Now().After(retryUntil) {
			t.Fatalf("%d messages still unconfirmed 30 s after the broker came back", len(retry))
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		results, err := pub.Publish(rctx, retry)
		rcancel()
		if len(results) == 0 {
			time.Sleep(50 * time.Millisecond) // not connected (yet) again
			continue
		}
		var still []events.Message
		for i, r := range results {
			if r.Err != nil {
				still = append(still, retry[i])
			}
		}
		if len(still) > 0 && err == nil {
			t.Fatalf("%d messages failed without an error from Publish", len(still))
		}
		retry = still
	}

	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < len(msgs) && time.Now().Before(deadline) {
		for _, d := range q.Next(1, time.Until(deadline)) {
			seen[d.MessageId] = true
		}
	}
	for _, m := range msgs {
		if !seen[m.ID] {
			t.Fatalf("%s was never delivered", m.ID)
		}
	}
}

// runPublisher runs a broker connection on a fresh vhost, with a
// Publisher on it and a queue bound to testKey, until the test ends.
func runPublisher(t *testing.T) (url string, q *testenv.Queue, b *events.Broker, pub *events.Publisher) {
	t.Helper()
	url = testenv.VHost(t)
	q = testenv.Watch(t, url, testKey)
	ctx, cancel := context.WithCancel(context.Background())
	b = events.NewBroker(url, web.NewLogger(io.Discard, "error", "json", "test"))
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	pub = events.NewPublisher(b)
	t.Cleanup(pub.Close)
	return url, q, b, pub
}

// Concurrent callers of a Batcher each get their own message's outcome: the
// routable ones are confirmed and delivered once each, the one no queue is
// bound for comes back as unroutable.
func TestBatcherConcurrentPublishes(t *testing.T) {
	t.Parallel()
	url, q, b, pub := runPublisher(t)
	log := web.NewLogger(io.Discard, "error", "json", "test")
	batcher := events.NewBatcher(pub, 0)

	// A broker that is not connected (never run here): an error, not a hang.
	idle := events.NewBatcher(events.NewPublisher(events.NewBroker(url, log)), 0)
	if err := idle.Publish(context.Background(), events.Message{ID: "early", Type: "Thing", RoutingKey: testKey, Body: []byte(`{}`)}); !errors.Is(err, events.ErrNotConnected) {
		t.Fatalf("Publish without a connection = %v, want ErrNotConnected", err)
	}
	waitFor(t, "broker connection", b.Connected)

	const n = 300
	errs := make(chan error, n+1)
	for i := range n {
		go func() {
			errs <- batcher.Publish(context.Background(), events.Message{ID: fmt.Sprintf("c-%03d", i), Type: "Thing", RoutingKey: testKey, Body: []byte(`{}`)})
		}()
	}
	go func() {
		err := batcher.Publish(context.Background(), events.Message{ID: "nowhere", Type: "Thing", RoutingKey: "no.queue.bound", Body: []byte(`{}`)})
		if !errors.Is(err, events.ErrUnroutable) {
			err = fmt.Errorf("unroutable message: got %v, want ErrUnroutable", err)
		} else {
			err = nil
		}
		errs <- err
	}()
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for _, d := range q.Next(n, 30*time.Second) {
		seen[d.MessageId]++
	}
	q.None(300 * time.Millisecond)
	for i := range n {
		if id := fmt.Sprintf("c-%03d", i); seen[id] != 1 {
			t.Fatalf("%s delivered %d times", id, seen[id])
		}
	}
}

// A Batcher with a Linger publishes a message that comes after an idle
// spell at once, and gathers what keeps coming into one batch: here, a
// first message alone, then 50 sent right after it in one batch of 50 (no
// linger: the first of them would go alone and the rest after it, three
// batches at least).
func TestBatcherLingerGathersWhatComesInABusySpell(t *testing.T) {
	t.Parallel()
	_, q, b, pub := runPublisher(t)
	var mu sync.Mutex
	var sizes []int // messages sent per batch
	events.OnSent(pub, func(i int, _ *amqp.DeferredConfirmation) {
		mu.Lock()
		defer mu.Unlock()
		if i == 0 {
			sizes = append(sizes, 0)
		}
		sizes[len(sizes)-1]++
	})
	waitFor(t, "broker connection", b.Connected)
	msg := func(id string) events.Message {
		return events.Message{ID: id, Type: "Thing", RoutingKey: testKey, Body: []byte(`{}`)}
	}

	// After an idle spell (here: ever) a message does not wait out the
	// linger: an hour's linger would outlast the call's 20 s.
	slow := events.NewBatcher(pub, time.Hour)
	pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer pcancel()
	if err := slow.Publish(pctx, msg("first")); err != nil {
		t.Fatalf("a message after an idle spell: %v (it waited out the linger)", err)
	}

	batcher := events.NewBatcher(pub, 2*time.Second)
	mu.Lock()
	sizes = nil
	mu.Unlock()
	if err := batcher.Publish(context.Background(), msg("lead")); err != nil {
		t.Fatal(err)
	}
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- batcher.Publish(context.Background(), msg(fmt.Sprintf("g-%02d", i))) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	got := slices.Clone(sizes)
	mu.Unlock()
	if !slices.Equal(got, []int{1, n}) {
		t.Fatalf("batch sizes %v, want [1 %d]: what came within the linger should go out together", got, n)
	}
	seen := map[string]int{}
	for _, d := range q.Next(n+2, 30*time.Second) {
		seen[d.MessageId]++
	}
	if len(seen) != n+2 {
		t.Fatalf("%d distinct messages delivered, want %d", len(seen), n+2)
	}
}
