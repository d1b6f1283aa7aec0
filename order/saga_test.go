package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// sagaSystem is an order service with its own database and vhost.
type sagaSystem struct {
	svc     instance
	amqpURL string
	tokens  map[int64]string // each order's access token, for get
}

func startSaga(t *testing.T, opts ...func(*Config)) sagaSystem {
	t.Helper()
	return startSagaIn(t, testenv.VHost(t), opts...)
}

// startSagaIn starts the order service on the vhost of amqpURL (one of
// testenv.VHost's), which the test's own publishes use.
func startSagaIn(t *testing.T, amqpURL string, opts ...func(*Config)) sagaSystem {
	t.Helper()
	svc := startService(t, testenv.Database(t), amqpURL, opts...)
	// The saga consumer declares its queue a moment after /readyz.
	testenv.WaitConsumer(t, amqpURL, Queue)
	return sagaSystem{svc: svc, amqpURL: amqpURL, tokens: map[int64]string{}}
}

func (s sagaSystem) checkout(t *testing.T) Order {
	t.Helper()
	resp, b := post(t, s.svc.URL+"/orders", seedBody)
	var o Order
	if err := json.Unmarshal(b, &o); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("checkout: %d %s", resp.StatusCode, b)
	}
	s.tokens[o.ID] = o.AccessToken
	return o
}

func (s sagaSystem) publish(t *testing.T, e events.Event) string {
	t.Helper()
	m, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ch := testenv.Channel(t, s.amqpURL)
	if err := ch.PublishWithContext(context.Background(), events.Exchange, m.RoutingKey, false, false, amqp.Publishing{
		MessageId: m.ID, Type: m.Type, ContentType: events.ContentType, DeliveryMode: amqp.Persistent, Body: m.Body,
	}); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (s sagaSystem) get(t *testing.T, id int64) Order {
	t.Helper()
	var o Order
	testenv.GetJSON(t, fmt.Sprintf("%s/orders/%d", s.svc.URL, id), bearer(s.tokens[id]), &o)
	return o
}

func (o Order) steps() []string {
	var s []string
	for _, st := range o.Timeline {
		s = append(s, st.Step)
	}
	return s
}

// waitFor polls until cond holds for the order.
func (s sagaSystem) waitFor(t *testing.T, id int64, what string, cond func(Order) bool) Order {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		o := s.get(t, id)
		if cond(o) {
			return o
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %d: %s did not happen: %s %v", id, what, o.Status, o.steps())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHandled waits until the order service claimed the event.
func (s sagaSystem) waitHandled(t *testing.T, eventID string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, s.svc.DBURL, fmt.Sprintf(`SELECT count(*) FROM inbox WHERE event_id = '%s'`, eventID)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("event %s was not handled", eventID)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processed(o Order) events.PaymentProcessed {
	return events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), PaymentID: 1,
		OrderID: o.ID, UserID: o.UserID, UserEmail: o.UserEmail, TotalAmount: o.TotalAmount, Items: o.Items}
}

func failed(o Order) events.PaymentFailed {
	return events.PaymentFailed{Meta: events.NewMeta(events.TypePaymentFailed, time.Now()), PaymentID: 1,
		OrderID: o.ID, UserID: o.UserID, UserEmail: o.UserEmail, TotalAmount: o.TotalAmount, Items: o.Items, Reason: "declined"}
}

// A late, contradicting payment result changes nothing and records nothing:
// the step it names did not happen.
func TestLateContradictingResultRecordsNothing(t *testing.T) {
	t.Parallel()
	s := startSaga(t)
	o := s.checkout(t)
	s.publish(t, failed(o))
	s.waitFor(t, o.ID, "payment_failed", func(o Order) bool { return o.Status == StatusPaymentFailed })
	late := s.publish(t, processed(o))
	s.waitHandled(t, late)
	got := s.get(t, o.ID)
	if got.Status != StatusPaymentFailed || slices.Contains(got.steps(), StepPaid) {
		t.Fatalf("after a late PaymentProcessed: %s %v, want payment_failed without a paid step", got.Status, got.steps())
	}
}

// A payment event for another amount or customer is refused to the
// dead-letter queue and changes nothing.
func TestMismatchedPaymentIsDeadLettered(t *testing.T) {
	t.Parallel()
	s := startSaga(t)
	o := s.checkout(t)
	tests := []struct {
		name string
		ev   func() events.PaymentProcessed
	}{
		{"ErrAmount", func() events.PaymentProcessed {
			e := processed(o)
			e.TotalAmount = o.TotalAmount + money.Amount(1)
			return e
		}},
		{"ErrCustomer", func() events.PaymentProcessed { e := processed(o); e.UserEmail = "someone@example.com"; return e }},
	}
	conn, err := amqp.Dial(s.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := s.publish(t, tt.ev())
			deadline := time.Now().Add(30 * time.Second)
			for {
				dls, _, err := events.ListDeadLetters(context.Background(), conn, Queue, 10)
				if err == nil && slices.ContainsFunc(dls, func(d events.DeadLetter) bool { return d.EventID == id }) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not dead-lettered: %+v %v", dls, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := s.get(t, o.ID); got.Status != StatusPending || len(got.Timeline) != 1 {
				t.Fatalf("a mismatched payment changed the order: %s %v", got.Status, got.steps())
			}
		})
	}
}

// The order service trusts payment events only from the payment service's
// RabbitMQ user (the user_id property, which RabbitMQ validates against the
// publishing connection's user): one published by another user, with no
// user id, or with another user's claim in the header the service's own
// moves carry is dead-lettered and changes nothing; the payment service's
// own (its publisher sets the user id) is applied.
func TestPaymentEventsOnlyFromThePaymentUser(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	_, orderURL := testenv.User(t, amqpURL, "order")
	payUser, payURL := testenv.User(t, amqpURL, "payment")
	s := startSagaIn(t, amqpURL, func(c *Config) { c.AMQPURL, c.PaymentAMQPUser = orderURL, payUser })
	o := s.checkout(t)

	conn, err := amqp.Dial(amqpURL) // as guest: another user
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tt := range []struct {
		name string
		pub  amqp.Publishing
	}{
		{"another user", amqp.Publishing{UserId: "guest"}},
		{"no user id", amqp.Publishing{}},
		{"a claim in the header", amqp.Publishing{UserId: "guest", Headers: amqp.Table{events.HeaderPublishedBy: payUser}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := events.Encode(processed(o))
			if err != nil {
				t.Fatal(err)
			}
			p := tt.pub
			p.MessageId, p.Type, p.ContentType, p.DeliveryMode, p.Body = m.ID, m.Type, events.ContentType, amqp.Persistent, m.Body
			if err := testenv.Channel(t, amqpURL).PublishWithContext(context.Background(), events.Exchange, m.RoutingKey, true, false, p); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				dls, _, err := events.ListDeadLetters(context.Background(), conn, Queue, 10)
				if err == nil && slices.ContainsFunc(dls, func(d events.DeadLetter) bool { return d.EventID == m.ID }) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not dead-lettered: %+v %v", dls, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := s.get(t, o.ID); got.Status != StatusPending {
				t.Fatalf("an untrusted payment event changed the order: %s %v", got.Status, got.steps())
			}
		})
	}

	// The payment service's publisher, on its own user's connection.
	b := events.NewBroker(payURL, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	pub := events.NewPublisher(b)
	defer pub.Close()
	m, err := events.Encode(processed(o))
	if err != nil {
		t.Fatal(err)
	}
	wait, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	if ch, err := b.PublishChannel(wait); err == nil { // connected
		_ = ch.Close()
	}
	for {
		if _, err := pub.Publish(wait, []events.Message{m}); err == nil {
			break
		} else if wait.Err() != nil {
			t.Fatalf("publish as the payment user: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.waitFor(t, o.ID, "paid", func(o Order) bool { return o.Status == StatusPaid })
}

// An order without a payment result is asked about again after the
// timeout, then cancelled (OrderCancelled published); the refund and the
// undelivered mail land in its timeline.
func TestWatchAsksAgainThenCancels(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	created := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	cancelled := testenv.Watch(t, amqpURL, events.RouteOrderCancelled)
	svc := startService(t, testenv.Database(t), amqpURL, func(c *Config) {
		c.PaymentTimeout, c.PaymentTries = 300*time.Millisecond, 1
	})
	s := sagaSystem{svc: svc, amqpURL: amqpURL, tokens: map[int64]string{}}
	o := s.checkout(t)

	first := created.Next(2, 30*time.Second)
	var a, b events.OrderCreated
	_ = json.Unmarshal(first[0].Body, &a)
	_ = json.Unmarshal(first[1].Body, &b)
	if a.OrderID != o.ID || b.OrderID != o.ID || a.EventID == b.EventID || b.TotalAmount != o.TotalAmount || len(b.Items) != 1 {
		t.Fatalf("asked again with %+v after %+v", b, a)
	}
	var c events.OrderCancelled
	if err := json.Unmarshal(cancelled.Next(1, 30*time.Second)[0].Body, &c); err != nil || c.OrderID != o.ID || c.Reason == "" {
		t.Fatalf("OrderCancelled %+v %v", c, err)
	}
	got := s.waitFor(t, o.ID, "cancelled", func(o Order) bool { return o.Status == StatusCancelled })
	if want := []string{StepCreated, StepAskedAgain(1), StepCancelled}; !slices.Equal(got.steps(), want) || got.CancelReason == "" {
		t.Fatalf("timeline %v (reason %q), want %v", got.steps(), got.CancelReason, want)
	}

	// A charge that arrives now is ignored by the order (payment refunds it).
	late := s.publish(t, processed(o))
	s.waitHandled(t, late)
	s.publish(t, events.PaymentRefunded{Meta: events.NewMeta(events.TypePaymentRefunded, time.Now()), PaymentID: 1,
		OrderID: o.ID, TotalAmount: o.TotalAmount, Reason: "cancelled"})
	s.publish(t, events.EmailFailed{Meta: events.NewMeta(events.TypeEmailFailed, time.Now()), OrderID: o.ID,
		Kind: events.MailCancelled, To: o.UserEmail, Reason: "550 mailbox unavailable"})
	got = s.waitFor(t, o.ID, "refund and undelivered mail", func(o Order) bool {
		return slices.Contains(o.steps(), StepRefunded) && slices.Contains(o.steps(), StepCancelNoticeUndelivered)
	})
	if got.Status != StatusCancelled || slices.Contains(got.steps(), StepPaid) {
		t.Fatalf("after the late charge: %s %v", got.Status, got.steps())
	}
	if n := count(t, svc.DBURL, fmt.Sprintf(`SELECT count(*) FROM orders WHERE id = %d AND settled`, o.ID)); n != 1 {
		t.Fatal("the cancelled order with its mail outcome is not settled")
	}
}

// An order whose payment result came but whose mail step did not is asked
// about again (payment answers with its result, the email service mails
// once per order and kind), and after the tries it settles saying so.
func TestWatchAsksAgainForAMissingMail(t *testing.T) {
	t.Parallel()
	amqpURL := testenv.VHost(t)
	created := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	svc := startService(t, testenv.Database(t), amqpURL, func(c *Config) {
		c.PaymentTimeout, c.PaymentTries = 500*time.Millisecond, 1
	})
	s := sagaSystem{svc: svc, amqpURL: amqpURL, tokens: map[int64]string{}}
	o := s.checkout(t)
	created.Next(1, 30*time.Second)
	s.publish(t, processed(o))
	var again events.OrderCreated
	if err := json.Unmarshal(created.Next(1, 30*time.Second)[0].Body, &again); err != nil || again.OrderID != o.ID {
		t.Fatalf("asked again with %+v %v", again, err)
	}
	got := s.waitFor(t, o.ID, "notice_unconfirmed", func(o Order) bool { return slices.Contains(o.steps(), StepNoticeUnconfirmed) })
	if want := []string{StepCreated, StepPaid, StepNoticeAskedAgain(1), StepNoticeUnconfirmed}; got.Status != StatusPaid || !slices.Equal(got.steps(), want) {
		t.Fatalf("%s %v, want paid %v", got.Status, got.steps(), want)
	}
	if n := count(t, svc.DBURL, fmt.Sprintf(`SELECT count(*) FROM orders WHERE id = %d AND settled`, o.ID)); n != 1 {
		t.Fatal("the order is not settled after the tries")
	}
	created.None(time.Second) // settled: no more asks
}

// An order settles when its status and its mail step are both in, in
// either order, and only then: the mail step alone leaves a pending order
// unsettled (and pending), the payment result alone leaves it unsettled,
// and a mail that came before the result settles the order once the
// result comes. A mail of another kind does not settle it.
func TestSettlesWhenStatusAndMailAreIn(t *testing.T) {
	t.Parallel()
	s := startSaga(t)
	settled := func(id int64) bool {
		return count(t, s.svc.DBURL, fmt.Sprintf(`SELECT count(*) FROM orders WHERE id = %d AND settled`, id)) == 1
	}
	mail := func(o Order, kind string) events.EmailSent {
		return events.EmailSent{Meta: events.NewMeta(events.TypeEmailSent, time.Now()), OrderID: o.ID, Kind: kind,
			To: o.UserEmail, MessageID: fmt.Sprintf("<%d.%s@test>", o.ID, kind)}
	}

	resultFirst := s.checkout(t)
	s.waitHandled(t, s.publish(t, processed(resultFirst)))
	if settled(resultFirst.ID) {
		t.Fatal("settled with its payment result alone")
	}
	s.waitHandled(t, s.publish(t, mail(resultFirst, events.MailPaymentFailed)))
	if settled(resultFirst.ID) {
		t.Fatal("a paid order settled by a payment-failed notice")
	}
	s.waitHandled(t, s.publish(t, mail(resultFirst, events.MailConfirmation)))
	if !settled(resultFirst.ID) {
		t.Fatal("a paid order with its confirmation sent is not settled")
	}

	mailFirst := s.checkout(t)
	s.waitHandled(t, s.publish(t, mail(mailFirst, events.MailConfirmation)))
	if o := s.get(t, mailFirst.ID); settled(mailFirst.ID) || o.Status != StatusPending || !slices.Contains(o.steps(), StepConfirmationSent) {
		t.Fatalf("after the mail alone: settled %v, %s %v; want unsettled, pending, the mail step recorded", settled(mailFirst.ID), o.Status, o.steps())
	}
	s.waitHandled(t, s.publish(t, processed(mailFirst)))
	if o := s.get(t, mailFirst.ID); !settled(mailFirst.ID) || o.Status != StatusPaid {
		t.Fatalf("after the mail, then the result: settled %v, %s %v; want settled and paid", settled(mailFirst.ID), o.Status, o.steps())
	}

	failedFirst := s.checkout(t)
	s.waitHandled(t, s.publish(t, mail(failedFirst, events.MailPaymentFailed)))
	s.waitHandled(t, s.publish(t, failed(failedFirst)))
	if o := s.get(t, failedFirst.ID); !settled(failedFirst.ID) || o.Status != StatusPaymentFailed {
		t.Fatalf("after the failure notice, then the failure: settled %v, %s %v", settled(failedFirst.ID), o.Status, o.steps())
	}
}
