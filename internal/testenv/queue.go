package testenv

import (
	"context"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
)

// Queue is an exclusive queue bound to the events exchange, for tests that
// watch what a service publishes.
type Queue struct {
	tb         testing.TB
	deliveries <-chan amqp.Delivery
}

// Watch declares the exchange and an exclusive queue bound to the routing
// keys in the vhost of amqpURL.
func Watch(tb testing.TB, amqpURL string, keys ...string) *Queue {
	tb.Helper()
	ch := Channel(tb, amqpURL)
	if err := events.DeclareExchange(ch); err != nil {
		tb.Fatalf("declare exchange: %v", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		tb.Fatalf("declare queue: %v", err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(q.Name, k, events.Exchange, false, nil); err != nil {
			tb.Fatalf("bind %s: %v", k, err)
		}
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		tb.Fatalf("consume: %v", err)
	}
	return &Queue{tb: tb, deliveries: d}
}

// Next waits up to timeout for n messages and fails the test if fewer come.
func (q *Queue) Next(n int, timeout time.Duration) []amqp.Delivery {
	q.tb.Helper()
	var out []amqp.Delivery
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case d := <-q.deliveries:
			out = append(out, d)
		case <-deadline:
			q.tb.Fatalf("got %d of %d messages within %v", len(out), n, timeout)
		}
	}
	return out
}

// None fails the test if a message arrives within wait.
func (q *Queue) None(wait time.Duration) {
	q.tb.Helper()
	select {
	case d := <-q.deliveries:
		q.tb.Fatalf("unexpected message %s (%s): %s", d.MessageId, d.RoutingKey, d.Body)
	case <-time.After(wait):
	}
}

// WaitConsumer waits until queue in the vhost of amqpURL has a consumer.
// A service consumes a queue only after it has declared it with its
// bindings, so a message published after WaitConsumer returns is routed to
// the queue; a queue that merely exists may not be bound yet.
func WaitConsumer(tb testing.TB, amqpURL, queue string) {
	tb.Helper()
	ch := Channel(tb, amqpURL)
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err == nil && q.Consumers > 0 {
			return
		}
		if err != nil {
			ch = Channel(tb, amqpURL) // a failed passive declare closes the channel
		}
		if time.Now().After(deadline) {
			tb.Fatalf("queue %s has no consumer after 30s (%v)", queue, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Channel opens a connection to amqpURL and a channel on it, both closed
// when the test ends.
func Channel(tb testing.TB, amqpURL string) *amqp.Channel {
	tb.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		tb.Fatalf("dial %s: %v", amqpURL, err)
	}
	tb.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatalf("channel: %v", err)
	}
	return ch
}

// PublishAll publishes msgs on ch with the AMQP message ids given (an
// event published again keeps its id), waits for the broker's confirms (it
// puts ch in confirm mode) and fails the test when a message was routed to
// no queue.
func PublishAll(tb testing.TB, ch *amqp.Channel, msgs []events.Message) {
	tb.Helper()
	if err := ch.Confirm(false); err != nil {
		tb.Fatalf("confirm mode: %v", err)
	}
	returned := ch.NotifyReturn(make(chan amqp.Return, len(msgs)))
	var confirms []*amqp.DeferredConfirmation
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), events.Exchange, m.RoutingKey, true, false, amqp.Publishing{
			MessageId: m.ID, Type: m.Type, ContentType: events.ContentType, DeliveryMode: amqp.Persistent, Body: m.Body,
		})
		if err != nil {
			tb.Fatal(err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			tb.Fatalf("publish %d: confirmed %v, %v", i, ok, err)
		}
	}
	// RabbitMQ sends basic.return before the confirm of the same message.
	select {
	case r := <-returned:
		tb.Fatalf("message %s (%s) routed to no queue: %d %s", r.MessageId, r.RoutingKey, r.ReplyCode, r.ReplyText)
	default:
	}
}

// Consume runs a consumer of cfg.Queue in the vhost of amqpURL (one of
// VHost's, given the queue's policies) with handler h until the test ends,
// and waits until it consumes.
func Consume(tb testing.TB, amqpURL string, cfg events.ConsumerConfig, h events.Handler) {
	tb.Helper()
	SetPolicies(tb, amqpURL, events.QueuePolicies(cfg.Queue))
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	b := events.NewBroker(amqpURL, log)
	c := events.NewConsumer(b, cfg, h, log)
	done := make(chan struct{}, 2)
	go func() { b.Run(ctx); done <- struct{}{} }()
	go func() { c.Run(ctx); done <- struct{}{} }()
	tb.Cleanup(func() { cancel(); <-done; <-done })
	select {
	case <-c.Ready():
	case <-time.After(30 * time.Second):
		tb.Fatal("the consumer is not ready after 30s")
	}
}
