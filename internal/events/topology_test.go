package events_test

import (
	"context"
	"io"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

func connectedBroker(t *testing.T, url string, topology []events.QueueSpec) *events.Broker {
	t.Helper()
	log := web.NewLogger(io.Discard, "error", "json", "test")
	ctx, cancel := context.WithCancel(context.Background())
	b := events.NewBroker(url, log)
	b.Topology = topology
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "broker connection", b.Connected)
	return b
}

// A broker with the topology declares all of it before it counts as
// connected: an event for a consumer that never ran is kept in its queue.
func TestBrokerDeclaresWholeTopology(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	connectedBroker(t, url, events.Topology)
	ch := testenv.Channel(t, url)
	for _, name := range events.QueueNames() {
		if _, err := ch.QueueDeclarePassive(name, true, false, false, false, nil); err != nil {
			t.Fatalf("queue %s not declared: %v", name, err)
		}
	}
	keys := map[string]bool{}
	for _, q := range events.Topology {
		for _, key := range q.Bindings {
			keys[key] = true
		}
	}
	for key := range keys {
		if err := ch.PublishWithContext(context.Background(), events.Exchange, key, true, false, amqp.Publishing{MessageId: key}); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range events.Topology {
		waitFor(t, "messages in "+q.Name, func() bool {
			got, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, nil)
			return err == nil && got.Messages == len(q.Bindings)
		})
	}
}

// What the retry and dead-letter paths need from a quorum main queue, on the
// broker the tests run against (RabbitMQ 3.10 here; current releases keep
// it): the queue is a quorum queue, a message past the delivery limit is
// dead-lettered to the dead-letter queue, and expired retries (per-message
// TTL in a classic delay queue) come back (TestTransientFailureIsRetried
// covers the round trip through the consumer).
func TestQuorumQueueDeliveryLimit(t *testing.T) {
	t.Parallel()
	url := testenv.VHost(t)
	spec := events.QueueSpec{Name: "test.quorum", Bindings: []string{testKey}}
	testenv.SetPolicies(t, url, events.QueuePolicies(spec.Name))
	connectedBroker(t, url, []events.QueueSpec{spec})
	ch := testenv.Channel(t, url)
	// Declaring it as a classic queue is refused: it is a quorum queue.
	probe := testenv.Channel(t, url)
	if _, err := probe.QueueDeclare(spec.Name, true, false, false, false, nil); err == nil {
		t.Fatal("the main queue accepted a classic declaration: it is not a quorum queue")
	}
	publish(t, url, "circling")
	for i := 0; ; i++ {
		d, ok, err := ch.Get(spec.Name, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if i <= events.DeliveryLimit {
				time.Sleep(10 * time.Millisecond) // the requeued message is on its way back
				if i > events.DeliveryLimit*20 {
					t.Fatal("message vanished")
				}
				continue
			}
			break
		}
		if err := d.Nack(false, true); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the message in the dead-letter queue", func() bool {
		q, err := ch.QueueDeclarePassive(events.DeadLetterQueue(spec.Name), true, false, false, false, nil)
		return err == nil && q.Messages == 1
	})
}

// A queue left by an earlier version with other arguments (a classic main
// queue, or a quorum queue and retry queues with the dead-letter arguments
// that are now policies) is used as it is: declaring it with this version's
// arguments fails with PRECONDITION_FAILED, and that must not stop the
// service.
func TestExistingQueueIsKept(t *testing.T) {
	t.Parallel()
	oldMain := amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(events.DeliveryLimit),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "test.legacy.dlq",
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
	for _, tc := range []struct {
		name       string
		main       amqp.Table
		oldRetries bool
	}{
		{"classic", nil, false},
		{"old-arguments", oldMain, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := testenv.VHost(t)
			spec := events.QueueSpec{Name: "test.legacy", Bindings: []string{testKey}}
			ch := testenv.Channel(t, url)
			if _, err := ch.QueueDeclare(spec.Name, true, false, false, false, tc.main); err != nil {
				t.Fatal(err)
			}
			if tc.oldRetries {
				for n := 1; n <= events.RetryLevels; n++ {
					if _, err := ch.QueueDeclare(events.RetryQueue(spec.Name, n), true, false, false, false,
						amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": spec.Name}); err != nil {
						t.Fatal(err)
					}
				}
			}
			connectedBroker(t, url, []events.QueueSpec{spec})
			r := &recorder{handled: map[string]int{}}
			testenv.Consume(t, url, events.ConsumerConfig{Queue: spec.Name, Bindings: spec.Bindings}, r.handle)
			publish(t, url, "old-queue")
			waitFor(t, "handled from the old queue", func() bool { _, h := r.snapshot(); return h["old-queue"] == 1 })
		})
	}
}
