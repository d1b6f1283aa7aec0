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
)

// SagaQueue is the order service's queue (events.QueueOrderSaga) of what
// happened to its orders downstream: payment results, refunds and mail
// outcomes.
const SagaQueue = "order.saga-events"

// SagaBindings are the routing keys the order follows (the contract's).
var SagaBindings = events.QueueBindings(SagaQueue)

// mailSteps are the timeline steps of each mail kind: sent, not delivered.
var mailSteps = map[string][2]string{
	events.MailConfirmation:  {StepConfirmationSent, StepConfirmationUndelivered},
	events.MailPaymentFailed: {StepFailureNoticeSent, StepFailureNoticeUndelivered},
	events.MailCancelled:     {StepCancelNoticeSent, StepCancelNoticeUndelivered},
}

// decode unmarshals a saga event into its contract type and checks its
// envelope.
func decode[T any](d events.Delivery, meta func(*T) (events.Meta, int64)) (T, error) {
	var ev T
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return ev, events.Permanent(fmt.Errorf("decode %s: %w", d.Type, err))
	}
	m, orderID := meta(&ev)
	if !events.ValidEventID(m.EventID) || orderID <= 0 {
		return ev, events.Permanent(fmt.Errorf("decode %s: no UUID event id or no positive order id", d.Type))
	}
	return ev, nil
}

// sagaEvent turns a delivery into what it does to its order.
func sagaEvent(d events.Delivery) (SagaEvent, error) {
	e := SagaEvent{EventType: d.Type}
	switch d.Type {
	case events.TypePaymentProcessed:
		ev, err := decode(d, func(ev *events.PaymentProcessed) (events.Meta, int64) { return ev.Meta, ev.OrderID })
		if err != nil {
			return e, err
		}
		e.EventID, e.OrderID, e.At, e.To, e.Step = ev.EventID, ev.OrderID, ev.OccurredAt, StatusPaid, StepPaid
		e.Payer = &Payer{UserID: ev.UserID, UserEmail: ev.UserEmail, Amount: ev.TotalAmount}
	case events.TypePaymentFailed:
		ev, err := decode(d, func(ev *events.PaymentFailed) (events.Meta, int64) { return ev.Meta, ev.OrderID })
		if err != nil {
			return e, err
		}
		e.EventID, e.OrderID, e.At, e.To, e.Step = ev.EventID, ev.OrderID, ev.OccurredAt, StatusPaymentFailed, StepPaymentFailed
		e.Payer = &Payer{UserID: ev.UserID, UserEmail: ev.UserEmail, Amount: ev.TotalAmount}
	case events.TypePaymentRefunded:
		ev, err := decode(d, func(ev *events.PaymentRefunded) (events.Meta, int64) { return ev.Meta, ev.OrderID })
		if err != nil {
			return e, err
		}
		e.EventID, e.OrderID, e.At, e.Step = ev.EventID, ev.OrderID, ev.OccurredAt, StepRefunded
	case events.TypeEmailSent:
		ev, err := decode(d, func(ev *events.EmailSent) (events.Meta, int64) { return ev.Meta, ev.OrderID })
		if err != nil {
			return e, err
		}
		steps, ok := mailSteps[ev.Kind]
		if !ok {
			return e, events.Permanent(fmt.Errorf("EmailSent with unknown kind %q", ev.Kind))
		}
		e.EventID, e.OrderID, e.At, e.Step = ev.EventID, ev.OrderID, ev.OccurredAt, steps[0]
	case events.TypeEmailFailed:
		ev, err := decode(d, func(ev *events.EmailFailed) (events.Meta, int64) { return ev.Meta, ev.OrderID })
		if err != nil {
			return e, err
		}
		steps, ok := mailSteps[ev.Kind]
		if !ok {
			return e, events.Permanent(fmt.Errorf("EmailFailed with unknown kind %q", ev.Kind))
		}
		e.EventID, e.OrderID, e.At, e.Step = ev.EventID, ev.OrderID, ev.OccurredAt, steps[1]
	default:
		return e, events.Permanent(fmt.Errorf("unexpected event type %q", d.Type))
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	return e, nil
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
		log.InfoContext(ctx, "order advanced", "order_id", e.OrderID, "event_id", e.EventID, "step", e.Step, "applied", applied)
		return nil
	}
}
