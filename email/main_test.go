package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/testenv"
)

type instance struct {
	URL, AMQPURL string
}

func start(t *testing.T, smtpPort int) instance {
	t.Helper()
	return startIn(t, smtpPort, testenv.VHost(t), t.TempDir())
}

// startIn starts a service on the vhost of amqpURL keeping its record of
// sent mails in sentDir.
func startIn(t *testing.T, smtpPort int, amqpURL, sentDir string) instance {
	t.Helper()
	return startWith(t, smtpPort, amqpURL, sentDir, io.Discard, nil)
}

// startWith starts a service with the tests' configuration changed by
// change (when not nil), logging to logs.
func startWith(t *testing.T, smtpPort int, amqpURL, sentDir string, logs io.Writer, change func(*Config)) instance {
	t.Helper()
	in := instance{AMQPURL: amqpURL}
	cfg := Config{
		Port: "0", AMQPURL: in.AMQPURL, SMTPHost: "127.0.0.1", SMTPPort: smtpPort, SMTPTLS: "none",
		SMTPTimeout: 5 * time.Second, EmailFrom: "Shop <shop@shop.test>", EmailDelay: 0, EmailSentDir: sentDir, AcceptConcurrency: 16, SMTPSessions: 16, RetryWindow: time.Minute,
		Prefetch: 10, Concurrency: 10, MaxAttempts: 3, RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		HandlerTimeout: 10 * time.Second, ShutdownTimeout: 5 * time.Second, LogLevel: "warn",
	}
	if change != nil {
		change(&cfg)
	}
	in.URL = testenv.Run(t, func(ctx context.Context, listening func(net.Addr)) error {
		return run(ctx, cfg, logs, listening)
	})
	return in
}

func publish(t *testing.T, url string, e events.Event) {
	t.Helper()
	testenv.PublishAll(t, testenv.Channel(t, url), []events.Message{encode(t, e)})
}

func items(total money.Amount) []events.Item {
	return []events.Item{{ProductID: 3, Quantity: 2, Price: total / 2}}
}

func TestMails(t *testing.T) {
	t.Parallel()
	mp := testenv.StartMailpit(t)
	in := start(t, mp.SMTPPort)
	testenv.WaitHTTP(t, in.URL+"/readyz", 30*time.Second)
	sent := testenv.Watch(t, in.AMQPURL, events.RouteEmailSent)

	processed := events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), PaymentID: 1,
		OrderID: 41, UserID: 1, UserEmail: "ok@example.com", TotalAmount: 259998, Items: items(259998)}
	failed := events.PaymentFailed{Meta: events.NewMeta(events.TypePaymentFailed, time.Now()), PaymentID: 2,
		OrderID: 42, UserID: 2, UserEmail: "no@example.com", TotalAmount: 1500000, Items: items(1500000),
		Reason: "amount 15000.00 exceeds the limit of 10000.00"}
	cancelled := events.OrderCancelled{Meta: events.NewMeta(events.TypeOrderCancelled, time.Now()), OrderID: 43, UserID: 3,
		UserEmail: "late@example.com", TotalAmount: 4200, Reason: "no payment result in time"}
	publish(t, in.AMQPURL, processed)
	publish(t, in.AMQPURL, failed)
	publish(t, in.AMQPURL, cancelled)

	announced := map[int64]events.EmailSent{}
	for _, m := range sent.Next(3, 15*time.Second) {
		var ev events.EmailSent
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if m.MessageId != ev.EventID || m.Type != events.TypeEmailSent {
			t.Fatalf("EmailSent message properties: id %q type %q, body %s", m.MessageId, m.Type, m.Body)
		}
		announced[ev.OrderID] = ev
	}
	tests := []struct {
		name    string
		order   int64
		to      string
		kind    string
		subject string
		text    []string
	}{
		{"OKConfirmation", 41, "ok@example.com", events.MailConfirmation, "Order #41 confirmed: 2599.98", []string{"2 x 1299.99 = 2599.98", "Total: 2599.98"}},
		{"OKFailureNotice", 42, "no@example.com", events.MailPaymentFailed, "Payment failed for order #42", []string{"exceeds the limit", "nothing was charged"}},
		{"OKCancelled", 43, "late@example.com", events.MailCancelled, "Order #43 cancelled", []string{"has been cancelled", "no payment result in time", "refunded", "Total: 42.00"}},
	}
	msgs := mp.Messages(t)
	if len(msgs) != 3 {
		t.Fatalf("%d mails, want 3", len(msgs))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, ok := announced[tt.order]
			wantID := fmt.Sprintf("order-%d.%s@shop.test", tt.order, tt.kind)
			if !ok || ev.Kind != tt.kind || ev.To != tt.to || ev.MessageID != wantID {
				t.Fatalf("EmailSent = %+v, want kind %s to %s message id %s", ev, tt.kind, tt.to, wantID)
			}
			var found *testenv.MailSummary
			for i := range msgs {
				if msgs[i].MessageID == wantID {
					found = &msgs[i]
				}
			}
			if found == nil || found.Subject != tt.subject || found.To[0].Address != tt.to {
				t.Fatalf("mail %s: %+v", wantID, found)
			}
			text := mp.Text(t, found.ID)
			for _, s := range tt.text {
				if !strings.Contains(text, s) {
					t.Fatalf("text body lacks %q:\n%s", s, text)
				}
			}
			var full struct{ HTML string }
			resp, err := http.Get(mp.URL + "/api/v1/message/" + found.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_ = json.NewDecoder(resp.Body).Decode(&full)
			if !strings.Contains(full.HTML, fmt.Sprintf("#%d", tt.order)) || !strings.Contains(full.HTML, "<html>") {
				t.Fatalf("no HTML part naming the order: %q", full.HTML)
			}
		})
	}

	// The same payment result again (a redelivery after a lost ack): no
	// second mail, and the announcement carries the same event id, which
	// the order service's inbox drops.
	publish(t, in.AMQPURL, processed)
	again := sent.Next(1, 15*time.Second)[0]
	if again.MessageId != announced[41].EventID {
		t.Fatalf("re-announcement id %s, first %s", again.MessageId, announced[41].EventID)
	}
	if n := len(mp.Messages(t)); n != 3 {
		t.Fatalf("%d mails after a redelivery, want 3", n)
	}
}

// Without an SMTP server the service is not ready, and a payment result
// waits (unavailable: retried without using up attempts) until the server
// is back, then the mail goes out.
func TestSMTPAway(t *testing.T) {
	t.Parallel()
	mp := testenv.StartMailpit(t)
	smtp := testenv.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", mp.SMTPPort))
	smtp.Cut()
	_, port, _ := net.SplitHostPort(smtp.Addr())
	var p int
	fmt.Sscan(port, &p)
	in := start(t, p)
	testenv.WaitHTTP(t, in.URL+"/livez", 30*time.Second)
	resp, err := http.Get(in.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without SMTP = %d, want 503", resp.StatusCode)
	}
	testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
	ev := events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), OrderID: 5,
		UserEmail: "wait@example.com", TotalAmount: 100, Items: items(100)}
	publish(t, in.AMQPURL, ev)
	// MaxAttempts is 3 with 50-200 ms backoff: counted attempts would be
	// used up well within this outage.
	time.Sleep(1500 * time.Millisecond)
	smtp.Restore()
	deadline := time.Now().Add(60 * time.Second)
	for len(mp.Messages(t)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the mail did not go out after SMTP came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn, err := amqp.Dial(in.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if dls, _, err := events.ListDeadLetters(context.Background(), conn, events.QueueEmail, 10); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters: %+v %v", dls, err)
	}
}

// A payment result delivered again to a new process (the first one died
// after the SMTP server accepted the mail, before its ack reached the
// broker) is announced again but not mailed again, because the record of
// the mail is on disk. A process with another record directory would mail
// it: that is what the record prevents.
func TestSentRecordSurvivesRestart(t *testing.T) {
	t.Parallel()
	mp := testenv.StartMailpit(t)
	dir := t.TempDir()
	ev := events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, time.Now()), PaymentID: 7,
		OrderID: 77, UserID: 7, UserEmail: "once@example.com", TotalAmount: 1000, Items: items(1000)}
	mails := func() int { return len(mp.Messages(t)) }

	deliver := func(name, dir string) {
		t.Helper()
		in := startIn(t, mp.SMTPPort, testenv.VHost(t), dir)
		sent := testenv.Watch(t, in.AMQPURL, events.RouteEmailSent)
		testenv.WaitConsumer(t, in.AMQPURL, events.QueueEmail)
		publish(t, in.AMQPURL, ev)
		var got events.EmailSent
		if err := json.Unmarshal(sent.Next(1, 60*time.Second)[0].Body, &got); err != nil || got.OrderID != 77 {
			t.Fatalf("%s: EmailSent %+v %v", name, got, err)
		}
	}
	deliver("first process", dir)
	if n := mails(); n != 1 {
		t.Fatalf("%d mails after the first delivery, want 1", n)
	}
	deliver("restarted process, same record", dir)
	if n := mails(); n != 1 {
		t.Fatalf("%d mails after a redelivery to a restarted process, want still 1", n)
	}
	deliver("process without the record", t.TempDir())
	if n := mails(); n != 2 {
		t.Fatalf("%d mails after a delivery to a process without the record, want 2", n)
	}
}
