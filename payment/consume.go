package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/worker"
)

// Queue is the payment service's queue: orders to charge and orders the
// saga cancelled.
const Queue = events.QueuePayment

// consume is the service's consumer: Queue, bound as the contract says,
// handled by the charger.
func consume(svc *worker.Service, c *charger) *events.Consumer {
	return svc.Consume(events.ConsumerConfig{Queue: Queue, Bindings: events.QueueBindings(Queue)}, c.handle)
}

// handle dispatches the payment queue's events.
func (c *charger) handle(ctx context.Context, d events.Delivery) error {
	switch d.Type {
	case events.TypeOrderCreated:
		return c.handleOrderCreated(ctx, d)
	case events.TypeOrderCancelled:
		return c.handleOrderCancelled(ctx, d)
	}
	return events.Permanent(fmt.Errorf("unexpected event type %q", d.Type))
}

// handleOrderCreated charges an order once: it commits the intent (with the
// inbox claim), then calls the provider with the order id as its
// idempotency key, then records the answer. A redelivered event finds its
// id claimed and changes nothing; a new event for an order with a result
// (the saga asking again) publishes that result again.
func (c *charger) handleOrderCreated(ctx context.Context, d events.Delivery) error {
	var ev events.OrderCreated
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return events.Permanent(fmt.Errorf("decode OrderCreated: %w", err))
	}
	if !events.ValidEventID(ev.EventID) || ev.OrderID <= 0 {
		return events.Permanent(fmt.Errorf("OrderCreated without a UUID event id or a positive order id"))
	}

	p, outcome, err := c.store.Intend(ctx, ev)
	if err != nil {
		return err
	}
	switch outcome {
	case intentNew, intentUnfinished:
		return c.complete(ctx, p, outcome == intentUnfinished)
	case intentAnswered:
		c.relay.Wake()
		c.log.InfoContext(ctx, "order asked again; result published again", "order_id", ev.OrderID, "event_id", ev.EventID, "status", p.Status)
	default:
		c.log.InfoContext(ctx, "duplicate OrderCreated ignored", "order_id", ev.OrderID, "event_id", ev.EventID, "status", p.Status)
	}
	return nil
}

// handleOrderCancelled gives back the charge of an order the saga
// cancelled, or, when nothing was charged, leaves a tombstone so that a late
// OrderCreated charges nothing. A charge under way is refunded as soon as
// its answer is recorded.
func (c *charger) handleOrderCancelled(ctx context.Context, d events.Delivery) error {
	var ev events.OrderCancelled
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return events.Permanent(fmt.Errorf("decode OrderCancelled: %w", err))
	}
	if !events.ValidEventID(ev.EventID) || ev.OrderID <= 0 {
		return events.Permanent(fmt.Errorf("OrderCancelled without a UUID event id or a positive order id"))
	}
	p, refunded, err := c.store.Cancel(ctx, ev, c.provider)
	if err != nil {
		return err
	}
	if refunded {
		c.relay.Wake()
	}
	c.log.InfoContext(ctx, "order cancelled", "order_id", ev.OrderID, "event_id", ev.EventID, "status", p.Status, "refunded", refunded)
	return nil
}
