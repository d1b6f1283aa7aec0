package events_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// Delivery.PublishedBy is the user_id RabbitMQ validated when the event was
// published, on every attempt: after the consumer moved it to a retry queue
// and back, and after a replay from the dead-letter queue (both publish as
// the consumer's own user). A claim in the header from anyone else is not
// believed.
func TestPublishedByKeptAcrossMoves(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	_, consumerURL := testenv.User(t, url, "consumer")
	var mu sync.Mutex
	seen := map[string][]string{} // event id -> PublishedBy per attempt
	cfg := config("test.published-by")
	testenv.Consume(t, consumerURL, cfg, func(_ context.Context, d events.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		seen[d.MessageId] = append(seen[d.MessageId], d.PublishedBy)
		switch n := len(seen[d.MessageId]); {
		case n == 1:
			return errors.New("once more")
		case n == 2:
			return events.Permanent(errors.New("to the dead-letter queue"))
		}
		return nil
	})
	ch := testenv.Channel(t, url) // as guest
	for id, p := range map[string]amqp.Publishing{
		"signed":  {UserId: "guest"},
		"claimed": {Headers: amqp.Table{events.HeaderPublishedBy: "payment"}},
	} {
		p.MessageId, p.Type, p.Body = id, "TestThing", []byte(id)
		if err := ch.PublishWithContext(context.Background(), events.Exchange, testKey, true, false, p); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := amqp.Dial(consumerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitFor(t, "both dead-lettered", func() bool {
		dls, _, err := events.ListDeadLetters(context.Background(), conn, cfg.Queue, 10)
		return err == nil && len(dls) == 2
	})
	if moved, err := events.ReplayDeadLetters(context.Background(), conn, cfg.Queue, 10); err != nil || moved != 2 {
		t.Fatalf("replay moved %d: %v", moved, err)
	}
	waitFor(t, "both replayed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen["signed"]) == 3 && len(seen["claimed"]) == 3
	})
	mu.Lock()
	defer mu.Unlock()
	for id, want := range map[string]string{"signed": "guest", "claimed": ""} {
		for i, got := range seen[id] {
			if got != want {
				t.Errorf("%s attempt %d: PublishedBy %q, want %q", id, i+1, got, want)
			}
		}
	}
}
