package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

func paid(orderID int64) events.PaymentProcessed {
	return events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), PaymentID: orderID,
		OrderID: orderID, UserID: orderID, UserEmail: fmt.Sprintf("customer%d@example.com", orderID),
		TotalAmount: 1000, Items: items(1000)}
}

func encode(t *testing.T, e events.Event) events.Message {
	t.Helper()
	m, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func messageID(orderID int64, kind string) string {
	return fmt.Sprintf("order-%d.%s@shop.test", orderID, kind)
}

func deadLetters(t *testing.T, url string) []events.DeadLetter {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dls, _, err := events.ListDeadLetters(context.Background(), conn, events.QueueEmail, 100)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

// watch is testenv.Watch for a test that reports what came before it fails.
func watch(t *testing.T, url string, keys ...string) <-chan amqp.Delivery {
	t.Helper()
	ch := testenv.Channel(t, url)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(q.Name, k, events.Exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func countAll(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// One payment result delivered twice at once (the outbox published it
// again), and announced a third time under a new event id (the order
// service's saga asking again for a mail it never heard of), while the
// first copy is still in flight: one mail, and every copy is answered with
// the same EmailSent.
func TestSameMailTwiceAtOnce(t *testing.T) {
	t.Parallel()
	r := startRelay(t, 0, nil)
	in := startWith(t, r.Port, testenv.VHost(t), t.TempDir(), io.Discard, func(c *Config) { c.EmailDelay = 300 * time.Millisecond })
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	sent := testenv.Watch(t, in.AMQPURL, events.RouteEmailSent)
	ch := testenv.Channel(t, in.AMQPURL)

	ev := paid(9)
	testenv.PublishAll(t, ch, []events.Message{encode(t, ev)})
	time.Sleep(50 * time.Millisecond) // the second copy comes while the first waits its EMAIL_DELAY
	again := ev
	again.EventID = events.NewMeta(events.TypePaymentProcessed, time.Now()).EventID
	testenv.PublishAll(t, ch, []events.Message{encode(t, ev), encode(t, again)})

	ids := map[string]bool{}
	for _, m := range sent.Next(3, 30*time.Second) {
		ids[m.MessageId] = true
	}
	if len(ids) != 1 {
		t.Errorf("EmailSent ids %v, want one id for one mail", ids)
	}
	if got := r.Accepted(); got[messageID(9, events.MailConfirmation)] != 1 || len(got) != 1 {
		t.Fatalf("mails accepted %v, want one", got)
	}
}

// A 421 at the end of the data (the relay is busy) is retried and then
// delivered, without using up attempts: MaxAttempts is 2 and the relay
// answers 421 three times.
func TestTemporaryRefusalRetried(t *testing.T) {
	t.Parallel()
	r := startRelay(t, 0, func(_ string, n int) string {
		if n <= 3 {
			return "421 4.7.0 relay.test busy, try again later"
		}
		return ""
	})
	in := startWith(t, r.Port, testenv.VHost(t), t.TempDir(), io.Discard, func(c *Config) { c.MaxAttempts = 2 })
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	sent := testenv.Watch(t, in.AMQPURL, events.RouteEmailSent)
	testenv.PublishAll(t, testenv.Channel(t, in.AMQPURL), []events.Message{encode(t, paid(21))})

	var ev events.EmailSent
	if err := json.Unmarshal(sent.Next(1, 30*time.Second)[0].Body, &ev); err != nil || ev.OrderID != 21 {
		t.Fatalf("EmailSent %+v %v", ev, err)
	}
	if got := r.Accepted(); got[messageID(21, events.MailConfirmation)] != 1 || len(got) != 1 {
		t.Fatalf("mails accepted %v, want one", got)
	}
	if dls := deadLetters(t, in.AMQPURL); len(dls) != 0 {
		t.Fatalf("dead letters %+v", dls)
	}
}

// A 550 is final: the message is dead-lettered at once with the relay's
// reply, and EmailFailed tells the order service the mail could not be
// delivered.
func TestPermanentRefusal(t *testing.T) {
	t.Parallel()
	const reply = "550 5.1.1 <customer22@example.com>: mailbox unavailable"
	r := startRelay(t, 0, func(string, int) string { return reply })
	in := startWith(t, r.Port, testenv.VHost(t), t.TempDir(), io.Discard, nil)
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	failed := testenv.Watch(t, in.AMQPURL, events.RouteEmailFailed)
	testenv.PublishAll(t, testenv.Channel(t, in.AMQPURL), []events.Message{encode(t, paid(22))})

	m := failed.Next(1, 30*time.Second)[0]
	var ev events.EmailFailed
	if err := json.Unmarshal(m.Body, &ev); err != nil {
		t.Fatal(err)
	}
	if m.Type != events.TypeEmailFailed || ev.OrderID != 22 || ev.Kind != events.MailConfirmation ||
		ev.MessageID != messageID(22, events.MailConfirmation) || !strings.Contains(ev.Reason, reply) {
		t.Fatalf("EmailFailed %s %+v, want order 22's confirmation refused with %q", m.Type, ev, reply)
	}
	deadline := time.Now().Add(10 * time.Second)
	var dls []events.DeadLetter
	for dls = deadLetters(t, in.AMQPURL); len(dls) == 0 && time.Now().Before(deadline); dls = deadLetters(t, in.AMQPURL) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(dls) != 1 || !strings.Contains(dls[0].Reason, reply) || dls[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, want one after one attempt, with the reply", dls)
	}
	if r.Total() != 0 {
		t.Fatalf("the relay accepted %v", r.Accepted())
	}
}

// The "done when": against a relay that answers the end of the data
// in 60 ms, with a 5 s handler timeout and otherwise the defaults, a burst
// of 300 payment results plus 60 of them published again with the same
// message id while the first copies are in flight gives exactly 300 mails,
// one per event, and every copy is answered with EmailSent.
func TestSlowRelayBurst(t *testing.T) {
	t.Parallel()
	const n, again = 300, 60
	r := startRelay(t, 60*time.Millisecond, nil)
	logs := &testenv.SyncBuffer{}
	in := startWith(t, r.Port, testenv.VHost(t), t.TempDir(), logs, func(c *Config) {
		// The defaults, but for the handler timeout.
		c.EmailDelay, c.SMTPTimeout, c.HandlerTimeout = 2*time.Second, 10*time.Second, 5*time.Second
		c.Prefetch, c.Concurrency, c.MaxAttempts = 600, 600, 5
		c.RetryBase, c.RetryMax = time.Second, 30*time.Second
	})
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	sent := watch(t, in.AMQPURL, events.RouteEmailSent)
	ch := testenv.Channel(t, in.AMQPURL)

	msgs := make([]events.Message, n)
	for i := range msgs {
		msgs[i] = encode(t, paid(int64(i+1)))
	}
	start := time.Now()
	testenv.PublishAll(t, ch, msgs)
	testenv.PublishAll(t, ch, msgs[:again]) // the same ids again, while the first copies wait their EMAIL_DELAY

	announced := map[string]int{}
	for deadline := time.After(90 * time.Second); len(announced) < n || countAll(announced) < n+again; {
		select {
		case m := <-sent:
			announced[m.MessageId]++
			continue
		case <-deadline:
		}
		t.Errorf("%d EmailSent (%d ids) within 90 s, want %d", countAll(announced), len(announced), n+again)
		break
	}
	took := time.Since(start)
	got := r.Accepted()
	twice := 0
	for id, c := range got {
		if c != 1 {
			if twice++; twice <= 5 {
				t.Errorf("%s accepted %d times", id, c)
			}
		}
	}
	t.Logf("%d+%d payment results: %d mails accepted (%d distinct), %d EmailSent ids, in %v; relay: %d sessions, %d transactions begun, %d cut; %d handler failures logged",
		n, again, r.Total(), len(got), len(announced), took.Round(time.Millisecond), r.sessions.Load(), r.begun.Load(), r.abandoned.Load(), strings.Count(logs.String(), `"level":"WARN"`))
	if len(got) != n || twice != 0 || len(announced) != n {
		t.Fatalf("%d distinct mails accepted (%d more than once), %d distinct EmailSent; want %d, 0, %d", len(got), twice, len(announced), n, n)
	}
	if dls := deadLetters(t, in.AMQPURL); len(dls) != 0 {
		t.Fatalf("%d dead letters, first %+v", len(dls), dls[0])
	}
}

// A mail the relay keeps refusing for the moment is given up after
// EMAIL_RETRY_WINDOW: dead-lettered, and EmailFailed says so.
func TestRetryWindowGivesUp(t *testing.T) {
	t.Parallel()
	const reply = "451 4.3.0 relay.test: local problem, try again later"
	r := startRelay(t, 0, func(string, int) string { return reply })
	in := startWith(t, r.Port, testenv.VHost(t), t.TempDir(), io.Discard, func(c *Config) { c.RetryWindow = time.Second })
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	failed := testenv.Watch(t, in.AMQPURL, events.RouteEmailFailed)
	testenv.PublishAll(t, testenv.Channel(t, in.AMQPURL), []events.Message{encode(t, paid(23))})

	var ev events.EmailFailed
	if err := json.Unmarshal(failed.Next(1, 30*time.Second)[0].Body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.OrderID != 23 || !strings.Contains(ev.Reason, reply) || !strings.Contains(ev.Reason, "EMAIL_RETRY_WINDOW") {
		t.Fatalf("EmailFailed %+v, want order 23 given up after its window with %q", ev, reply)
	}
	deadline := time.Now().Add(10 * time.Second)
	var dls []events.DeadLetter
	for dls = deadLetters(t, in.AMQPURL); len(dls) == 0 && time.Now().Before(deadline); dls = deadLetters(t, in.AMQPURL) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(dls) != 1 || !strings.Contains(dls[0].Reason, reply) {
		t.Fatalf("dead letters %+v, want one with the reply", dls)
	}
}
