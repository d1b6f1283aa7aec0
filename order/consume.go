package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/worker"
)

// Queue is the order service's queue of what happened to its orders
// downstream: payment results, refunds and mail outcomes.
const Queue = events.QueueOrderSaga

// consume is the service's consumer: Queue, bound as the contract says,
// handled by handleSagaEvent.
func consume(svc *worker.Service, store *Store, paymentUser string) *events.Consumer {
	return svc.Consume(events.ConsumerConfig{Queue: Queue, Bindings: events.QueueBindings(Queue)},
		handleSagaEvent(svc.Log, store, paymentUser))
}

// mailSteps are the timeline steps of each mail kind: sent, not delivered.
var mailSteps = map[string][2]string{
	events.MailConfirmation:  {StepConfirmationSent, StepConfirmationUndelivered},
	events.MailPaymentFailed: {StepFailureNoticeSent, StepFailureNoticeUndelivered},
	events.MailCancelled:     {StepCancelNoticeSent, StepCancelNoticeUndelivered},
}

// decode unmarshals a saga event into its contract type T, lets does fill
// in which order it names and what it does to it, and checks its envelope.
func decode[T events.Event](d events.Delivery, does func(T, *SagaEvent) error) (SagaEvent, error) {
	var ev T
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return SagaEvent{}, events.Permanent(fmt.Errorf("decode %s: %w", d.Type, err))
	}
	m := ev.EventMeta()
	e := SagaEvent{EventType: d.Type, EventID: m.EventID, At: m.OccurredAt}
	err := does(ev, &e)
	if !events.ValidEventID(e.EventID) || e.OrderID <= 0 {
		return e, events.Permanent(fmt.Errorf("decode %s: no UUID event id or no positive order id", d.Type))
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	return e, err
}

// mailStep sets the step of a mail event: its kind's steps[i].
func (e *SagaEvent) mailStep(kind string, i int) error {
	steps, ok := mailSteps[kind]
	if !ok {
		return events.Permanent(fmt.Errorf("%s with unknown kind %q", e.EventType, kind))
	}
	e.Step = steps[i]
	return nil
}

// sagaEvent turns a delivery into what it does to its order.
func sagaEvent(d events.Delivery) (SagaEvent, error) {
	switch d.Type {
	case events.TypePaymentProcessed:
		return decode(d, func(ev events.PaymentProcessed, e *SagaEvent) error {
			e.OrderID, e.To, e.Step = ev.OrderID, StatusPaid, StepPaid
			e.Payer = &Payer{UserID: ev.UserID, UserEmail: ev.UserEmail, Amount: ev.TotalAmount}
			return nil
		})
	case events.TypePaymentFailed:
		return decode(d, func(ev events.PaymentFailed, e *SagaEvent) error {
			e.OrderID, e.To, e.Step = ev.OrderID, StatusPaymentFailed, StepPaymentFailed
			e.Payer = &Payer{UserID: ev.UserID, UserEmail: ev.UserEmail, Amount: ev.TotalAmount}
			return nil
		})
	case events.TypePaymentRefunded:
		return decode(d, func(ev events.PaymentRefunded, e *SagaEvent) error {
			e.OrderID, e.Step = ev.OrderID, StepRefunded
			return nil
		})
	case events.TypeEmailSent:
		return decode(d, func(ev events.EmailSent, e *SagaEvent) error { e.OrderID = ev.OrderID; return e.mailStep(ev.Kind, 0) })
	case events.TypeEmailFailed:
		return decode(d, func(ev events.EmailFailed, e *SagaEvent) error { e.OrderID = ev.OrderID; return e.mailStep(ev.Kind, 1) })
	}
	return SagaEvent{EventType: d.Type}, events.Permanent(fmt.Errorf("unexpected event type %q", d.Type))
}

// ErrUntrustedPublisher refuses a payment event that the payment service's
// RabbitMQ user did not publish.
var ErrUntrustedPublisher = errors.New("payment event not published by the payment service's user")

// paymentTypes are the events only the payment service publishes.
var paymentTypes = []string{events.TypePaymentProcessed, events.TypePaymentFailed, events.TypePaymentRefunded}

// trusted reports whether d, if it claims to come from the payment service
// (by its type or its routing key), was published by paymentUser; an empty
// paymentUser trusts every publisher.
func trusted(d events.Delivery, paymentUser string) bool {
	claims := slices.Contains(paymentTypes, d.Type) || strings.HasPrefix(d.RoutingKey, "payment.") ||
		strings.HasPrefix(d.EventRoutingKey(), "payment.")
	return paymentUser == "" || !claims || d.PublishedBy == paymentUser
}

// handleSagaEvent moves an order along: pending → paid or payment_failed,
// and records refunds and what became of each mail. A payment event that
// does not match its order, or that the payment service's user (paymentUser,
// when set) did not publish, is dead-lettered.
func handleSagaEvent(log *slog.Logger, store *Store, paymentUser string) events.Handler {
	return func(ctx context.Context, d events.Delivery) error {
		if !trusted(d, paymentUser) {
			log.Error("payment event refused", "event_id", d.MessageId, "event_type", d.Type,
				"published_by", d.PublishedBy, "want", paymentUser, "err", ErrUntrustedPublisher)
			return events.Permanent(ErrUntrustedPublisher)
		}
		e, err := sagaEvent(d)
		if err != nil {
			return err
		}
		applied, err := store.Advance(ctx, e)
		switch {
		case errors.Is(err, ErrNotFound):
			return events.Permanent(fmt.Errorf("order %d: %w", e.OrderID, err))
		case errors.Is(err, ErrMismatch):
			log.ErrorContext(ctx, "payment event refused", "order_id", e.OrderID, "event_id", e.EventID, "event_type", e.EventType, "err", err)
			return events.Permanent(err)
		case err != nil:
			return err
		}
		// A step applied is logged at debug: the service that did it
		// logged its own line by order id (payment recorded, mail sent),
		// and the order's timeline keeps it. One that changed nothing (a
		// duplicate, or a step the order was past) is worth a line.
		level := slog.LevelInfo
		if applied {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "order advanced", "order_id", e.OrderID, "event_id", e.EventID, "step", e.Step, "applied", applied)
		return nil
	}
}
