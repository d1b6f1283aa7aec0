package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

func publishWithHeaders(t *testing.T, amqpURL, id string, h amqp.Table) {
	t.Helper()
	ch := testenv.Channel(t, amqpURL)
	if err := ch.PublishWithContext(context.Background(), events.Exchange, testKey, true, false, amqp.Publishing{
		MessageId: id, Type: "TestThing", DeliveryMode: amqp.Persistent, Body: []byte(id), Headers: h,
	}); err != nil {
		t.Fatal(err)
	}
}

// Headers come from the wire and anyone can set them: a negative (or absurd)
// attempt count must not send the message to a retry queue that does not
// exist, bouncing between its queue and the handler in a hot loop. It is
// treated as the first attempt and ends in the dead-letter queue after
// MaxAttempts, as any message that always fails.
func TestWireHeadersAreClamped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		headers amqp.Table
		away    bool // the first failure is a dependency's absence
	}{
		{"NegativeAttempt", amqp.Table{events.HeaderAttempt: int32(-3)}, false},
		{"NegativeAttempt64", amqp.Table{events.HeaderAttempt: int64(-1 << 40)}, false},
		{"NegativeUnavailable", amqp.Table{events.HeaderUnavailable: int32(-7)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url := testenv.VHost(t)
			var mu sync.Mutex
			calls := 0
			var wrongRetry any
			r := &recorder{handled: map[string]int{}, fail: func(d events.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				if calls++; calls == 1 && tt.away {
					return errAway
				}
				// After an unavailable try the message comes back through
				// the first retry queue, counted from 0 and not from -7.
				if calls == 2 && tt.away && d.Headers[events.HeaderUnavailable] != int32(1) {
					wrongRetry = d.Headers[events.HeaderUnavailable]
				}
				return errors.New("always fails")
			}}
			cfg := config("test.clamp")
			cfg.RetryBase, cfg.RetryMax = 20*time.Millisecond, 50*time.Millisecond
			cfg.Unavailable = func(err error) bool { return errors.Is(err, errAway) }
			testenv.Consume(t, url, cfg, r.handle)
			publishWithHeaders(t, url, "wild", tt.headers)
			conn := dial(t, url)
			deadline := time.Now().Add(30 * time.Second)
			for {
				dls, _, err := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10)
				if err == nil && len(dls) == 1 {
					break
				}
				if attempts, _ := r.snapshot(); len(attempts) > 10*cfg.MaxAttempts || time.Now().After(deadline) {
					t.Fatalf("not dead-lettered after %d attempts (the first: %v)", len(attempts), attempts[:min(len(attempts), 5)])
				}
				time.Sleep(20 * time.Millisecond)
			}
			want := cfg.MaxAttempts
			if tt.away {
				want++ // the unavailable try does not count
			}
			mu.Lock()
			if wrongRetry != nil {
				t.Errorf("after an unavailable try the message came back with %s = %v, want 1", events.HeaderUnavailable, wrongRetry)
			}
			mu.Unlock()
			if attempts, _ := r.snapshot(); len(attempts) != want || attempts[0] != "wild#1" {
				t.Fatalf("attempts = %v, want %d starting at 1", attempts, want)
			}
		})
	}
}

// A handler whose delivery's channel died is cancelled: its message is
// redelivered (to this consumer after it reconnects, or to a sibling), and
// the first handler must not race the redelivery to the same effect.
func TestHandlerCancelledWhenChannelDies(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	proxy := testenv.NewProxy(t, testenv.BrokerAddr())
	started := make(chan struct{}, 4)
	cancelled := make(chan error, 4)
	var once sync.Once
	r := &recorder{handled: map[string]int{}}
	r.fail = func(events.Delivery) error { return nil }
	cfg := config("test.cancel")
	cfg.HandlerTimeout = 2 * time.Minute
	blocking := func(ctx context.Context, d events.Delivery) error {
		first := false
		once.Do(func() { first = true })
		if !first {
			return r.handle(ctx, d)
		}
		started <- struct{}{}
		<-ctx.Done()
		cancelled <- context.Cause(ctx)
		return ctx.Err()
	}
	testenv.Consume(t, proxy.URL(url), cfg, blocking)
	publish(t, url, "long")
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("handler did not start")
	}
	proxy.Cut()
	select {
	case err := <-cancelled:
		t.Logf("first handler cancelled: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the handler of a delivery whose channel died was not cancelled")
	}
	proxy.Restore()
	waitFor(t, "redelivery handled", func() bool { _, h := r.snapshot(); return h["long"] == 1 })
}
