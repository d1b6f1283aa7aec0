package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// fast shortens the simulated work so the tests take seconds, not minutes;
// the load test measures with the default delays.
var fast = map[string]string{"PAYMENT_DELAY": "100ms", "EMAIL_DELAY": "100ms"}

type order struct {
	ID          int64  `json:"id"`
	AccessToken string `json:"access_token"`
	Status      string `json:"status"`
	TotalAmount string `json:"total_amount"`
	UserEmail   string `json:"user_email"`
	TraceID     string `json:"trace_id"`
	Timeline    []struct {
		Step string    `json:"step"`
		At   time.Time `json:"at"`
	} `json:"timeline"`
}

func (o order) steps() []string {
	var s []string
	for _, t := range o.Timeline {
		s = append(s, t.Step)
	}
	return s
}

func checkout(t *testing.T, s *System, userID int, email, price string) order {
	t.Helper()
	body := fmt.Sprintf(`{"user_id":%d,"user_email":%q,"items":[{"product_id":1,"quantity":1,"price":%q}]}`, userID, email, price)
	code, b, err := s.Checkout(context.Background(), body)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("checkout: %d %v %s", code, err, b)
	}
	var o order
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	tokens.Store(orderKey{s, o.ID}, o.AccessToken)
	return o
}

// tokens keeps the access token of every order checkout placed, by system
// and id (every system's ids start at 1), for getOrder.
var tokens sync.Map

type orderKey struct {
	s  *System
	id int64
}

func getOrder(t *testing.T, s *System, id int64) order {
	t.Helper()
	tok, _ := tokens.Load(orderKey{s, id})
	var o order
	testenv.GetJSON(t, fmt.Sprintf("%s/api/orders/%d", s.URL("gateway"), id), map[string]string{"Authorization": fmt.Sprintf("Bearer %v", tok)}, &o)
	return o
}

// waitOrder polls the order until done says it is finished.
func waitOrder(t *testing.T, s *System, id int64, timeout time.Duration, done func(order) bool) order {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var o order
	for time.Now().Before(deadline) {
		if o = getOrder(t, s, id); done(o) {
			return o
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("order %d did not finish within %v: %+v", id, timeout, o)
	return o
}

func finished(step string) func(order) bool {
	return func(o order) bool { return slices.Contains(o.steps(), step) }
}

func queryInt(t *testing.T, dbURL, q string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func mailsTo(t *testing.T, m testenv.Mailpit, addr string) []testenv.MailSummary {
	t.Helper()
	var out []testenv.MailSummary
	for _, msg := range m.Messages(t) {
		for _, to := range msg.To {
			if strings.EqualFold(to.Address, addr) {
				out = append(out, msg)
			}
		}
	}
	return out
}

func TestCheckoutToInbox(t *testing.T) {
	t.Parallel()
	s := StartSystem(t, fast)

	var health struct {
		Status   string            `json:"status"`
		Services map[string]string `json:"services"`
	}
	resp, err := http.Get(s.URL("gateway") + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if resp.StatusCode != 200 || health.Status != "healthy" || len(health.Services) != 3 {
		t.Fatalf("gateway health: %d %+v", resp.StatusCode, health)
	}

	tests := []struct {
		name      string
		price     string
		status    string
		mailStep  string
		subject   string
		bodyHints []string
	}{
		{"OK", "1299.99", "paid", "confirmation_sent", "confirmed", []string{"1299.99", "Thank you"}},
		{"ErrDeclinedOverLimit", "10000.01", "payment_failed", "payment_failed_notice_sent", "Payment failed", []string{"10000.01", "exceeds"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			email := fmt.Sprintf("buyer-%d@example.com", i)
			o := checkout(t, s, i+1, email, tt.price)
			if o.Status != "pending" || o.TotalAmount != tt.price {
				t.Fatalf("checkout answered %+v", o)
			}
			o = waitOrder(t, s, o.ID, 30*time.Second, finished(tt.mailStep))
			if o.Status != tt.status {
				t.Fatalf("status = %s, want %s", o.Status, tt.status)
			}
			want := []string{"created", strings.TrimSuffix(tt.mailStep, "_notice_sent"), tt.mailStep}
			if tt.status == "paid" {
				want[1] = "paid"
			}
			if !slices.Equal(o.steps(), want) {
				t.Fatalf("timeline = %v, want %v", o.steps(), want)
			}
			for i := 1; i < len(o.Timeline); i++ {
				if o.Timeline[i].At.Before(o.Timeline[i-1].At) {
					t.Fatalf("timeline out of order: %+v", o.Timeline)
				}
			}
			mails := mailsTo(t, s.Mailpit, email)
			if len(mails) != 1 {
				t.Fatalf("%d mails to %s, want 1", len(mails), email)
			}
			m := mails[0]
			if !strings.Contains(m.Subject, tt.subject) || !strings.Contains(m.Subject, fmt.Sprintf("#%d", o.ID)) {
				t.Fatalf("subject %q", m.Subject)
			}
			text := s.Mailpit.Text(t, m.ID)
			for _, h := range append(tt.bodyHints, fmt.Sprintf("#%d", o.ID)) {
				if !strings.Contains(text, h) {
					t.Fatalf("mail body lacks %q:\n%s", h, text)
				}
			}
			if m.MessageID == "" || !strings.Contains(m.MessageID, fmt.Sprintf("order-%d.", o.ID)) {
				t.Fatalf("Message-ID %q is not derived from the order", m.MessageID)
			}
		})
	}
}

// A republished OrderCreated (same message_id) charges nothing twice,
// announces nothing twice and mails nothing twice.
func TestRepublishedOrderCreatedChangesNothing(t *testing.T) {
	t.Parallel()
	s := StartSystem(t, fast)
	created := testenv.Watch(t, s.AMQPURL, events.RouteOrderCreated)
	processed := testenv.Watch(t, s.AMQPURL, events.RoutePaymentProcessed)

	o := checkout(t, s, 1, "once@example.com", "25.00")
	waitOrder(t, s, o.ID, 30*time.Second, finished("confirmation_sent"))
	orig := created.Next(1, 10*time.Second)[0]
	processed.Next(1, 10*time.Second)

	ch := testenv.Channel(t, s.AMQPURL)
	for range 3 {
		err := ch.PublishWithContext(context.Background(), events.Exchange, events.RouteOrderCreated, false, false, amqp.Publishing{
			MessageId: orig.MessageId, Type: orig.Type, ContentType: orig.ContentType,
			DeliveryMode: amqp.Persistent, Body: orig.Body,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	created.Next(3, 10*time.Second) // they went out
	// The payment service took each for the duplicate it is (its inbox had
	// the id) and acked it.
	dup := `checkout_consumer_messages_total{outcome="duplicate",queue="payment.order-created"}`
	waitFor(t, 30*time.Second, "the payment service to drop 3 duplicates", func() bool { return scrape(t, s.URL("payment"))[dup] >= 3 })
	if got := scrape(t, s.URL("payment"))[dup]; got != 3 {
		t.Fatalf("%s = %v, want 3", dup, got)
	}
	processed.None(2 * time.Second)

	if n := queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments WHERE order_id = $1`, o.ID); n != 1 {
		t.Fatalf("%d payments for order %d, want 1", n, o.ID)
	}
	if n := queryInt(t, s.PaymentDB, `SELECT count(*) FROM outbox`); n != 1 {
		t.Fatalf("%d payment events written, want 1", n)
	}
	if n := len(mailsTo(t, s.Mailpit, "once@example.com")); n != 1 {
		t.Fatalf("%d mails, want 1", n)
	}
}

// Two payment services and two email services compete for the same queues;
// every order is still paid once and mailed once.
func TestCompetingConsumers(t *testing.T) {
	t.Parallel()
	s := fastSystem(t, "")
	s.Up("order", "payment", "payment-2", "email", "email-2", "gateway")

	const n = 200
	ids := make([]int64, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ids[i] = checkout(t, s, i+1, fmt.Sprintf("c%d@example.com", i), "10.00").ID
		})
	}
	wg.Wait()

	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if queryInt(t, s.OrderDB, `SELECT count(*) FROM order_timeline WHERE step = 'confirmation_sent'`) == n {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := queryInt(t, s.OrderDB, `SELECT count(*) FROM orders WHERE status = 'paid'`); got != n {
		t.Fatalf("%d of %d orders paid", got, n)
	}
	if got := queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments`); got != n {
		t.Fatalf("%d payments for %d orders", got, n)
	}
	if got := queryInt(t, s.PaymentDB, `SELECT count(DISTINCT order_id) FROM payments WHERE order_id = ANY($1)`, ids); got != n {
		t.Fatalf("payments cover %d of %d orders", got, n)
	}
	mails := s.Mailpit.Messages(t)
	if len(mails) != n {
		t.Fatalf("%d mails for %d orders", len(mails), n)
	}
	// Both replicas of each did work, and between them all of it.
	for svc, q := range map[string]string{"payment": "payment.order-created", "email": "email.payment-results"} {
		handled := `checkout_consumer_messages_total{outcome="handled",queue="` + q + `"}`
		var total float64
		for _, name := range []string{svc, svc + "-2"} {
			got := scrape(t, s.URL(name))[handled]
			if got == 0 {
				t.Errorf("%s handled nothing", name)
			}
			total += got
		}
		if total < n {
			t.Errorf("the %s replicas handled %v messages of %s for %d orders", svc, total, q, n)
		}
	}
}
