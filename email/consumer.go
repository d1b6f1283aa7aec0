package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/checkout-demo/checkout/internal/events"
)

// Queue is the email service's queue of payment results.
const Queue = "email.payment-results"

// emailSentNamespace makes EmailSent ids a function of the mail's Message-ID:
// a mail announced twice carries the same event id, so the order service's
// inbox drops the second announcement.
var emailSentNamespace = uuid.MustParse("6f1c1a52-4bd0-4d1e-9a0c-8a3b7c2e5d10")

// handlePaymentResult mails the customer after a payment result and
// announces EmailSent once the SMTP server accepted the mail.
func handlePaymentResult(log *slog.Logger, mailer *Mailer, broker *events.Broker, pub *events.Batcher, sent *sentLog, delay time.Duration) events.Handler {
	return func(ctx context.Context, d events.Delivery) error {
		var (
			ml  Mail
			err error
		)
		switch d.Type {
		case events.TypePaymentProcessed:
			var ev events.PaymentProcessed
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.OrderID <= 0 {
				return events.Permanent(fmt.Errorf("decode PaymentProcessed: %v", err))
			}
			ml, err = mailer.Confirmation(ev)
		case events.TypePaymentFailed:
			var ev events.PaymentFailed
			if err := json.Unmarshal(d.Body, &ev); err != nil || ev.OrderID <= 0 {
				return events.Permanent(fmt.Errorf("decode PaymentFailed: %v", err))
			}
			ml, err = mailer.PaymentFailed(ev)
		default:
			return events.Permanent(fmt.Errorf("unexpected event type %q", d.Type))
		}
		if err != nil {
			return events.Permanent(err)
		}
		// The event id keys the record of sent mails.
		if !events.ValidEventID(d.MessageId) {
			return events.Permanent(fmt.Errorf("message id %q is not a UUID event id", d.MessageId))
		}
		log := log.With("order_id", ml.OrderID, "event_id", d.MessageId, "kind", ml.Kind)

		if !sent.has(d.MessageId) {
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return ctx.Err()
			}
			// A mail sent while the broker is away could not be acked, and
			// a crash before it comes back would send it again: wait
			// (the message is redelivered) instead.
			if !broker.Connected() {
				return events.ErrNotConnected
			}
			err := mailer.Send(ctx, ml, func() {
				if err := sent.add(d.MessageId); err != nil {
					log.Warn("mail sent, but not recorded on disk: a crash before the ack would send it again", "err", err)
				}
			})
			if err != nil {
				return err
			}
			log.Info("mail sent", "to", ml.To, "message_id", ml.MessageID)
		} else {
			log.Info("mail was sent before; announcing it again only", "message_id", ml.MessageID)
		}

		ev := events.EmailSent{
			Meta:    events.NewMeta(events.TypeEmailSent, time.Now()),
			OrderID: ml.OrderID, Kind: ml.Kind, To: ml.To, MessageID: ml.MessageID,
		}
		ev.EventID = uuid.NewSHA1(emailSentNamespace, []byte(ml.MessageID)).String()
		return announce(ctx, pub, ev)
	}
}

// unavailable tells failures that are the SMTP server's or the broker's
// absence, not the message's: they are retried without using up attempts.
func unavailable(err error) bool {
	var netErr net.Error
	return errors.Is(err, events.ErrNotConnected) || errors.As(err, &netErr) ||
		strings.Contains(err.Error(), "dial failed") || errors.Is(err, context.DeadlineExceeded)
}

// announce publishes EmailSent, trying again while the broker is away, until
// it is confirmed or ctx ends. Failing here would send the mail again. The
// mail is accepted but not yet acked until this returns, so concurrent
// announces share their confirm round trips (a Batcher): a crash then finds
// as few mails as possible in that window.
func announce(ctx context.Context, pub *events.Batcher, ev events.EmailSent) error {
	m, err := events.Encode(ev)
	if err != nil {
		return events.Permanent(err)
	}
	backoff := events.Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 0; ; attempt++ {
		err := pub.Publish(ctx, m)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("announce EmailSent: %w", err)
		case <-time.After(backoff.Delay(attempt)):
		}
	}
}
