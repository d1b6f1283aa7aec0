package events_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

const testKey = "test.thing.happened"

// recorder is a handler that remembers every attempt, in order.
type recorder struct {
	mu       sync.Mutex
	attempts []string // "<message id>#<attempt>"
	handled  map[string]int
	fail     func(d events.Delivery) error
}

func (r *recorder) handle(_ context.Context, d events.Delivery) error {
	r.mu.Lock()
	r.attempts = append(r.attempts, fmt.Sprintf("%s#%d", d.MessageId, d.Attempt))
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(d); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.handled[d.MessageId]++
	r.mu.Unlock()
	return nil
}

func (r *recorder) snapshot() ([]string, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := make(map[string]int, len(r.handled))
	for k, v := range r.handled {
		h[k] = v
	}
	return append([]string(nil), r.attempts...), h
}

func publish(t *testing.T, amqpURL string, ids ...string) {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	for _, id := range ids {
		if err := ch.PublishWithContext(context.Background(), events.Exchange, testKey, true, false, amqp.Publishing{
			MessageId: id, Type: "TestThing", DeliveryMode: amqp.Persistent, Body: []byte(id),
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dial(t *testing.T, url string) *amqp.Connection {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func config(queue string) events.ConsumerConfig {
	return events.ConsumerConfig{Queue: queue, Bindings: []string{testKey}, Prefetch: 8, Concurrency: 4,
		MaxAttempts: 3, RetryBase: 300 * time.Millisecond, RetryMax: time.Second, HandlerTimeout: 5 * time.Second}
}

// A message that always fails goes to the dead-letter queue after exactly
// MaxAttempts attempts, with its reason, while the others keep flowing; the
// replay puts it back once the cause is fixed.
func TestPoisonMessage(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	var fixed sync.Mutex
	poisoned := true
	r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
		fixed.Lock()
		defer fixed.Unlock()
		if d.MessageId == "poison" && poisoned {
			return errors.New("boom: cannot handle this one")
		}
		return nil
	}}
	cfg := config("test.poison")
	testenv.Consume(t, url, cfg, r.handle)

	good := make([]string, 50)
	for i := range good {
		good[i] = fmt.Sprintf("good-%02d", i)
	}
	publish(t, url, append([]string{"poison"}, good...)...)

	conn := dial(t, url)
	var dls []events.DeadLetter
	waitFor(t, "the poison message in the dead-letter queue", func() bool {
		var err error
		dls, _, err = events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10)
		return err == nil && len(dls) == 1
	})
	attempts, handled := r.snapshot()
	var poisonTries []string
	lastGood, firstRetry := -1, -1
	for i, a := range attempts {
		switch {
		case a[:6] == "poison":
			poisonTries = append(poisonTries, a)
			if a == "poison#2" {
				firstRetry = i
			}
		default:
			lastGood = i
		}
	}
	if fmt.Sprint(poisonTries) != "[poison#1 poison#2 poison#3]" {
		t.Fatalf("poison attempts = %v, want exactly 3", poisonTries)
	}
	for _, id := range good {
		if handled[id] != 1 {
			t.Fatalf("%s handled %d times", id, handled[id])
		}
	}
	if firstRetry < lastGood {
		t.Fatalf("the good messages waited behind the poison's retries: attempts %v", attempts)
	}
	dl := dls[0]
	if dl.EventID != "poison" || dl.Attempts != 3 || dl.RoutingKey != testKey || dl.FailedAt == "" ||
		dl.Reason != "boom: cannot handle this one" {
		t.Fatalf("dead letter = %+v", dl)
	}

	fixed.Lock()
	poisoned = false
	fixed.Unlock()
	moved, err := events.ReplayDeadLetters(context.Background(), conn, cfg.Queue, 100)
	if err != nil || moved != 1 {
		t.Fatalf("replay moved %d: %v", moved, err)
	}
	waitFor(t, "the replayed message handled", func() bool { _, h := r.snapshot(); return h["poison"] == 1 })
	attempts, _ = r.snapshot()
	if last := attempts[len(attempts)-1]; last != "poison#1" {
		t.Fatalf("replayed message came back as %s, want a fresh attempt count", last)
	}
	if left, _, _ := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10); len(left) != 0 {
		t.Fatalf("dead-letter queue still holds %d", len(left))
	}
}

func TestPermanentErrorDeadLettersAtOnce(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
		return events.Permanent(errors.New("cannot decode"))
	}}
	cfg := config("test.permanent")
	testenv.Consume(t, url, cfg, r.handle)
	publish(t, url, "garbage")
	conn := dial(t, url)
	waitFor(t, "dead letter", func() bool {
		dls, _, err := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10)
		return err == nil && len(dls) == 1 && dls[0].Attempts == 1 && dls[0].Reason == "cannot decode"
	})
	if attempts, _ := r.snapshot(); len(attempts) != 1 {
		t.Fatalf("attempts = %v, want one", attempts)
	}
}

func TestTransientFailureIsRetried(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
		if d.Attempt < 3 {
			return errors.New("database away")
		}
		return nil
	}}
	cfg := config("test.transient")
	testenv.Consume(t, url, cfg, r.handle)
	publish(t, url, "flaky")
	waitFor(t, "handled", func() bool { _, h := r.snapshot(); return h["flaky"] == 1 })
	if attempts, _ := r.snapshot(); fmt.Sprint(attempts) != "[flaky#1 flaky#2 flaky#3]" {
		t.Fatalf("attempts = %v", attempts)
	}
	conn := dial(t, url)
	if dls, _, _ := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}
}

// A retry queue deleted by hand (an operator cleaning up) is declared again
// the first time a failed message needs it, and the message gets its retry
// instead of bouncing between its queue and the handler.
func TestDeletedRetryQueueIsDeclaredAgain(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
		if d.Attempt < 2 {
			return errors.New("fails once")
		}
		return nil
	}}
	cfg := config("test.redeclare")
	testenv.Consume(t, url, cfg, r.handle)
	ch := testenv.Channel(t, url)
	retry := events.RetryQueue(cfg.Queue, 1)
	if _, err := ch.QueueDelete(retry, false, false, false); err != nil {
		t.Fatal(err)
	}

	publish(t, url, "bouncer")
	waitFor(t, "handled after its retry", func() bool { _, h := r.snapshot(); return h["bouncer"] == 1 })
	if _, err := ch.QueueDeclarePassive(retry, true, false, false, false, amqp.Table{
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": cfg.Queue,
	}); err != nil {
		t.Fatalf("retry queue not declared again: %v", err)
	}
	attempts, _ := r.snapshot()
	if len(attempts) > 4 {
		t.Fatalf("the message bounced: %d attempts %v", len(attempts), attempts)
	}
}

// The consumer rides out a dropped connection: messages published while it
// was cut off are handled after it reconnects, without a restart.
func TestConsumerResumesAfterConnectionLoss(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	proxy := testenv.NewProxy(t, testenv.BrokerAddr())
	r := &recorder{handled: map[string]int{}}
	testenv.Consume(t, proxy.URL(url), config("test.resume"), r.handle)

	publish(t, url, "before")
	waitFor(t, "before", func() bool { _, h := r.snapshot(); return h["before"] == 1 })
	proxy.Cut()
	publish(t, url, "during-1", "during-2")
	time.Sleep(300 * time.Millisecond)
	proxy.Restore()
	waitFor(t, "messages published while cut off", func() bool {
		_, h := r.snapshot()
		return h["during-1"] >= 1 && h["during-2"] >= 1
	})
}

var errAway = errors.New("database away")

// A dependency outage longer than MaxAttempts retries does not dead-letter
// good messages: unavailability does not use up attempts.
func TestUnavailableDoesNotUseUpAttempts(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	var mu sync.Mutex
	calls := 0
	r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= 6 { // twice MaxAttempts
			return fmt.Errorf("query: %w", errAway)
		}
		return nil
	}}
	cfg := config("test.unavailable")
	cfg.RetryBase, cfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	cfg.Unavailable = func(err error) bool { return errors.Is(err, errAway) }
	testenv.Consume(t, url, cfg, r.handle)
	publish(t, url, "patient")
	waitFor(t, "handled after the outage", func() bool { _, h := r.snapshot(); return h["patient"] == 1 })
	attempts, _ := r.snapshot()
	if len(attempts) != 7 || attempts[6] != "patient#1" {
		t.Fatalf("attempts = %v; an outage used up attempts", attempts)
	}
	conn := dial(t, url)
	if dls, _, _ := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10); len(dls) != 0 {
		t.Fatalf("dead letters: %+v", dls)
	}
}
