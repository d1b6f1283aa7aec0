package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
)

// SagaQueue is the order service's queue of payment results and mail
// receipts.
const SagaQueue = "order.saga-events"

// SagaBindings are the routing keys the order follows.
var SagaBindings = []string{events.RoutePaymentProcessed, events.RoutePaymentFailed, events.RouteEmailSent}

// handleSagaEvent moves an order along: pending → paid or payment_failed,
// and records when each mail went out.
func handleSagaEvent(log *slog.Logger, store *Store) events.Handler {
	return func(ctx context.Context, d events.Delivery) error {
		var (
			ev struct {
				events.Meta
				OrderID int64  `json:"order_id"`
				Kind    string `json:"kind"`
			}
			to      string
			step    string
			decoded = json.Unmarshal(d.Body, &ev)
		)
		if decoded != nil || !events.ValidEventID(ev.EventID) || ev.OrderID <= 0 {
			return events.Permanent(fmt.Errorf("decode %s: missing fields or %v", d.Type, decoded))
		}
		switch d.Type {
		case events.TypePaymentProcessed:
			to, step = StatusPaid, StepPaid
		case events.TypePaymentFailed:
			to, step = StatusPaymentFailed, StepPaymentFailed
		case events.TypeEmailSent:
			switch ev.Kind {
			case events.MailConfirmation:
				step = StepConfirmationSent
			case events.MailPaymentFailed:
				step = StepFailureNoticeSent
			default:
				return events.Permanent(fmt.Errorf("EmailSent with unknown kind %q", ev.Kind))
			}
		default:
			return events.Permanent(fmt.Errorf("unexpected event type %q", d.Type))
		}
		at := ev.OccurredAt
		if at.IsZero() {
			at = time.Now()
		}
		applied, err := store.Advance(ctx, ev.EventID, d.Type, ev.OrderID, to, step, at)
		if errors.Is(err, ErrNotFound) {
			return events.Permanent(fmt.Errorf("order %d: %w", ev.OrderID, err))
		}
		if err != nil {
			return err
		}
		log.Info("order advanced", "order_id", ev.OrderID, "event_id", ev.EventID, "step", step, "duplicate", !applied)
		return nil
	}
}
