package main

import (
	"github.com/checkout-demo/checkout/internal/backoff"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/textproto"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/worker"
)

// Queue is the email service's queue of mails to send.
const Queue = events.QueueEmail

// consume is the service's consumer: Queue, bound as the contract says,
// handled by h; the SMTP server's or the broker's absence is retried
// without using up attempts (unavailable).
func consume(svc *worker.Service, h *mailHandler) *events.Consumer {
	return svc.Consume(events.ConsumerConfig{Queue: Queue, Bindings: events.QueueBindings(Queue), Unavailable: unavailable}, h.handle)
}

// mailHandler mails the customer after a payment result or a cancelled
// order, and announces EmailSent once the SMTP server accepted the mail,
// or EmailFailed once it refused it for good.
type mailHandler struct {
	log         *slog.Logger
	mailer      *Mailer
	broker      *events.Broker
	pub         *events.Batcher
	sent        *sentLog
	delay       time.Duration // EMAIL_DELAY
	retryWindow time.Duration // EMAIL_RETRY_WINDOW
	metrics     *telemetry.Metrics

	flights flights
	retries retryClock
}

func (h *mailHandler) handle(ctx context.Context, d events.Delivery) error {
	ml, err := h.compose(d)
	if err != nil {
		return events.Permanent(err)
	}
	// One send per mail at a time in this process: a second copy (the
	// event published twice, redelivered while the first still runs, or
	// asked for again under a new event id) waits for the first's outcome.
	release, err := h.flights.claim(ctx, ml.Key)
	if err != nil {
		return err
	}
	defer release()
	if h.sent.has(ml.Key) {
		events.MarkDuplicate(ctx)
		h.log.InfoContext(ctx, "mail was sent before; announcing it again only", "order_id", ml.OrderID, "kind", ml.Kind, "event_id", d.MessageId)
		return h.announceSent(ctx, ml)
	}
	select {
	case <-time.After(h.delay):
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	// A mail sent while the broker is away could not be acked, and a crash
	// before it comes back would send it again: wait (the message is
	// redelivered) instead.
	if !h.broker.Connected() {
		return events.ErrNotConnected
	}
	err = h.send(ctx, ml, d)
	switch {
	case err == nil:
		h.retries.forget(ml.Key)
		h.log.InfoContext(ctx, "mail sent", "order_id", ml.OrderID, "kind", ml.Kind, "event_id", d.MessageId, "message_id", ml.MessageID)
	case errors.Is(err, errSentBefore):
	case ctx.Err() != nil:
		return err
	default:
		reply, final := refusal(err)
		if !final {
			if h.retries.since(ml.Key, time.Now(), h.retryWindow) < h.retryWindow {
				return retryLater{err}
			}
			reply = fmt.Sprintf("not delivered within EMAIL_RETRY_WINDOW (%s): %s", h.retryWindow, reply)
			err = fmt.Errorf("not delivered within EMAIL_RETRY_WINDOW (%s): %w", h.retryWindow, err)
		}
		h.retries.forget(ml.Key)
		if err := h.announceFailed(ctx, ml, reply); err != nil {
			return err
		}
		return events.Permanent(fmt.Errorf("%w; EmailFailed announced", err))
	}
	return h.announceSent(ctx, ml)
}

// send hands ml to the SMTP server in a span of its own, timing it and
// counting a refusal by its reply class.
func (h *mailHandler) send(ctx context.Context, ml Mail, d events.Delivery) (err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "smtp send", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("mail.kind", ml.Kind)))
	start := time.Now()
	defer func() {
		if !errors.Is(err, errSentBefore) {
			h.metrics.SMTPSend(time.Since(start), err)
		}
		telemetry.EndSpan(span, err)
	}()
	return h.mailer.Send(ctx, ml, func() bool { return h.sent.has(ml.Key) }, func() {
		if err := h.sent.add(ml.Key); err != nil {
			h.log.WarnContext(ctx, "mail sent, but not recorded on disk: a crash before the ack would send it again",
				"order_id", ml.OrderID, "kind", ml.Kind, "event_id", d.MessageId, "err", err)
		}
	})
}

// compose decodes the event and composes its mail.
func (h *mailHandler) compose(d events.Delivery) (Mail, error) {
	// The event id is checked as every consumer does, though mails are
	// known by their Message-ID.
	if !events.ValidEventID(d.MessageId) {
		return Mail{}, fmt.Errorf("message id %q is not a UUID event id", d.MessageId)
	}
	switch d.Type {
	case events.TypePaymentProcessed:
		return decode(d, func(ev events.PaymentProcessed) int64 { return ev.OrderID }, h.mailer.Confirmation)
	case events.TypePaymentFailed:
		return decode(d, func(ev events.PaymentFailed) int64 { return ev.OrderID }, h.mailer.PaymentFailed)
	case events.TypeOrderCancelled:
		return decode(d, func(ev events.OrderCancelled) int64 { return ev.OrderID }, h.mailer.Cancelled)
	}
	return Mail{}, fmt.Errorf("unexpected event type %q", d.Type)
}

// decode unmarshals d's body into its contract type T, which must name an
// order (orderID reads it), and composes its mail.
func decode[T any](d events.Delivery, orderID func(T) int64, compose func(T) (Mail, error)) (Mail, error) {
	var ev T
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return Mail{}, fmt.Errorf("decode %s: %w", d.Type, err)
	}
	if orderID(ev) <= 0 {
		return Mail{}, fmt.Errorf("decode %s: no positive order id", d.Type)
	}
	return compose(ev)
}

// refusal tells a failed send's reply, and whether it is final: a 5xx
// reply to the mail's own transaction, or a mail that cannot be sent at
// all. 4xx replies, connection trouble and a session that could not be
// opened (whatever its reply: that is the server's or the settings'
// trouble, not the mail's) are not.
func refusal(err error) (reply string, final bool) {
	var reply5 *textproto.Error
	var session sessionError
	switch {
	case events.IsPermanent(err):
		return err.Error(), true
	case errors.As(err, &session):
		return err.Error(), false
	case errors.As(err, &reply5):
		return formatReply(reply5), reply5.Code >= 500
	}
	return err.Error(), false
}

// retryLater marks a temporary failure within EMAIL_RETRY_WINDOW: retried
// with backoff without using up attempts.
type retryLater struct{ err error }

func (e retryLater) Error() string { return e.err.Error() }
func (e retryLater) Unwrap() error { return e.err }

// unavailable tells failures that are the SMTP server's or the broker's
// absence, not the message's: they are retried without using up attempts.
func unavailable(err error) bool {
	var later retryLater
	return errors.Is(err, events.ErrNotConnected) || errors.As(err, &later)
}

// failedNamespace makes EmailFailed ids a function of the Message-ID, so a
// refusal announced twice is recorded once.
var failedNamespace = uuid.MustParse("0d5e2f8a-6b1c-4f3e-8a7d-9c4b2e1f0a36")

func (h *mailHandler) announceSent(ctx context.Context, ml Mail) error {
	ev := events.EmailSent{
		Meta:    events.NewMeta(events.TypeEmailSent, time.Now()),
		OrderID: ml.OrderID, Kind: ml.Kind, To: ml.To, MessageID: ml.MessageID,
	}
	ev.EventID = ml.Key.String()
	return announce(ctx, h.pub, ev)
}

func (h *mailHandler) announceFailed(ctx context.Context, ml Mail, reason string) error {
	ev := events.EmailFailed{
		Meta:    events.NewMeta(events.TypeEmailFailed, time.Now()),
		OrderID: ml.OrderID, Kind: ml.Kind, To: ml.To, MessageID: ml.MessageID, Reason: reason,
	}
	ev.EventID = uuid.NewSHA1(failedNamespace, []byte(ml.MessageID)).String()
	h.log.WarnContext(ctx, "mail refused for good", "order_id", ml.OrderID, "kind", ml.Kind, "message_id", ml.MessageID, "reason", reason)
	return announce(ctx, h.pub, ev)
}

// announce publishes an event, trying again while the broker is away,
// until it is confirmed or ctx ends. Failing here would send the mail
// again. The mail is accepted but not yet acked until this returns, so
// concurrent announces share their confirm round trips (a Batcher): a crash
// then finds as few mails as possible in that window.
func announce(ctx context.Context, pub *events.Batcher, ev events.Event) error {
	m, err := events.Encode(ev)
	if err != nil {
		return events.Permanent(err)
	}
	bo := backoff.Backoff{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 0; ; attempt++ {
		err := pub.Publish(ctx, m)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("announce %s: %w", m.Type, err)
		case <-time.After(bo.Delay(attempt)):
		}
	}
}

// flights lets one handler at a time work on a mail.
type flights struct {
	mu sync.Mutex
	m  map[uuid.UUID]chan struct{} // closed when the mail's handler is done
}

// claim waits until no other handler works on the mail, and makes it this
// one's; release gives it up.
func (f *flights) claim(ctx context.Context, key uuid.UUID) (release func(), err error) {
	for {
		f.mu.Lock()
		busy, ok := f.m[key]
		if !ok {
			if f.m == nil {
				f.m = map[uuid.UUID]chan struct{}{}
			}
			done := make(chan struct{})
			f.m[key] = done
			f.mu.Unlock()
			return func() {
				f.mu.Lock()
				delete(f.m, key)
				f.mu.Unlock()
				close(done)
			}, nil
		}
		f.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another copy of the mail: %w", context.Cause(ctx))
		}
	}
}

// retryClock remembers when each mail first failed for a reason that may
// pass, to give it up after EMAIL_RETRY_WINDOW. It is the process's own
// memory: a retry taken by a sibling, or after a restart, starts the clock
// again.
type retryClock struct {
	mu    sync.Mutex
	first map[uuid.UUID]time.Time
	swept time.Time
}

// since returns how long the mail has been failing, counting from now if
// it had not. Mails that stopped coming back (sent by a sibling,
// dead-lettered by hand) are forgotten after twice the window.
func (c *retryClock) since(key uuid.UUID, now time.Time, window time.Duration) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		c.first = map[uuid.UUID]time.Time{}
	}
	if now.Sub(c.swept) > window {
		for k, t := range c.first {
			if now.Sub(t) > 2*window {
				delete(c.first, k)
			}
		}
		c.swept = now
	}
	t, ok := c.first[key]
	if !ok {
		c.first[key] = now
		return 0
	}
	return now.Sub(t)
}

func (c *retryClock) forget(key uuid.UUID) {
	c.mu.Lock()
	delete(c.first, key)
	c.mu.Unlock()
}
