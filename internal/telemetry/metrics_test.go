package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/telemetry/amqptel"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// scrape returns the text /metrics serves.
func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d", rec.Code)
	}
	return rec.Body.String()
}

type codedErr int

func (c codedErr) Error() string  { return fmt.Sprintf("smtp %d", int(c)) }
func (c codedErr) ErrorCode() int { return int(c) }

func TestMetrics(t *testing.T) {
	m := telemetry.NewMetrics()
	q := "payment.order-created"
	m.ConsumerMessage(q, telemetry.OutcomeHandled, 10*time.Millisecond)
	m.ConsumerMessage(q, telemetry.OutcomeHandled, 20*time.Millisecond)
	m.ConsumerMessage(q, telemetry.OutcomeDuplicate, time.Millisecond)
	m.ConsumerMessage(q, telemetry.OutcomeRetried, 5*time.Millisecond)
	m.ConsumerMessage(q, telemetry.OutcomeDeadLettered, 0)
	m.PublishConfirm(telemetry.ConfirmAck)
	m.PublishConfirm(telemetry.ConfirmAck)
	m.PublishConfirm(telemetry.ConfirmNack)
	m.SagaOutcome(telemetry.SagaPaid)
	m.SagaOutcome("something new")
	m.TimeToMail(3 * time.Second)
	m.SMTPSend(30*time.Millisecond, nil)
	m.SMTPSend(time.Millisecond, fmt.Errorf("send: %w", &textproto.Error{Code: 451, Msg: "try later"}))
	m.SMTPSend(time.Millisecond, fmt.Errorf("send: %w", codedErr(550)))
	m.SMTPSend(time.Millisecond, errors.New("dial tcp: connection refused"))
	m.ProviderCall(telemetry.ProviderApproved, time.Second)
	m.BreakerState("payment-provider", telemetry.BreakerOpen)

	text := scrape(t, m)
	for _, want := range []string{
		`checkout_consumer_messages_total{outcome="handled",queue="payment.order-created"} 2`,
		`checkout_consumer_messages_total{outcome="duplicate",queue="payment.order-created"} 1`,
		`checkout_consumer_messages_total{outcome="retried",queue="payment.order-created"} 1`,
		`checkout_consumer_messages_total{outcome="dead_lettered",queue="payment.order-created"} 1`,
		`checkout_consumer_handling_duration_seconds_count{queue="payment.order-created"} 4`,
		`checkout_publisher_confirms_total{result="ack"} 2`,
		`checkout_publisher_confirms_total{result="nack"} 1`,
		`checkout_saga_outcomes_total{outcome="paid"} 1`,
		`checkout_saga_outcomes_total{outcome="other"} 1`,
		`checkout_saga_time_to_mail_seconds_count 1`,
		`checkout_smtp_send_duration_seconds_count{result="ok"} 1`,
		`checkout_smtp_send_duration_seconds_count{result="error"} 3`,
		`checkout_smtp_send_failures_total{reply_class="4xx"} 1`,
		`checkout_smtp_send_failures_total{reply_class="5xx"} 1`,
		`checkout_smtp_send_failures_total{reply_class="none"} 1`,
		`checkout_payment_provider_duration_seconds_count{result="approved"} 1`,
		`checkout_circuit_breaker_state{breaker="payment-provider"} 2`,
		`go_goroutines `,
		`process_start_time_seconds `,
	} {
		if !strings.HasSuffix(want, " ") {
			want += "\n" // the whole value
		}
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsNil(t *testing.T) {
	var m *telemetry.Metrics
	m.ConsumerMessage("q", telemetry.OutcomeHandled, time.Second)
	m.PublishConfirm(telemetry.ConfirmAck)
	m.SagaOutcome(telemetry.SagaPaid)
	m.SMTPSend(time.Second, nil)
	m.TimeToMail(time.Second)
	m.ProviderCall(telemetry.ProviderError, time.Second)
	m.BreakerState("b", telemetry.BreakerClosed)
	m.ObserveHTTP("/", "GET", 200, time.Second)
	m.RegisterOutbox(nil)
	m.RegisterQueueDepths(nil, nil)
	if m.Registry() != nil {
		t.Error("a registry from nil")
	}
}

func TestOutboxMetrics(t *testing.T) {
	m := telemetry.NewMetrics()
	var stats telemetry.OutboxStats
	var fail error
	calls := 0
	m.RegisterOutbox(func(ctx context.Context) (telemetry.OutboxStats, error) {
		calls++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("the outbox query runs without a deadline")
		}
		return stats, fail
	})
	stats = telemetry.OutboxStats{Pending: 7, OldestAge: 1500 * time.Millisecond}
	text := scrape(t, m)
	for _, want := range []string{"checkout_outbox_pending_rows 7\n", "checkout_outbox_oldest_pending_age_seconds 1.5\n", "checkout_outbox_scrape_errors_total 0\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	fail = errors.New("database down")
	text = scrape(t, m)
	if strings.Contains(text, "checkout_outbox_pending_rows ") || !strings.Contains(text, "checkout_outbox_scrape_errors_total 1\n") {
		t.Errorf("a failed query: want no pending rows and one error:\n%s", grep(text, "outbox"))
	}
	if calls != 2 {
		t.Errorf("%d queries for 2 scrapes", calls)
	}
}

// TestQueueDepths reads a real queue's depth by passive declare; a queue
// that does not exist is left out without spoiling the others.
func TestQueueDepths(t *testing.T) {
	url := testenv.VHost(t)
	ch := testenv.Channel(t, url)
	if _, err := ch.QueueDeclare("payment.order-created.dlq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", "payment.order-created.dlq", false, false, amqp.Publishing{Body: []byte{byte(i)}})
		if err != nil {
			t.Fatal(err)
		}
		if !c.Wait() {
			t.Fatal("nack")
		}
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := telemetry.NewMetrics()
	m.RegisterQueueDepths([]string{"missing.dlq", "payment.order-created.dlq"},
		amqptel.QueueDepth(func(context.Context) (*amqp.Channel, error) { return conn.Channel() }))
	text := scrape(t, m)
	if !strings.Contains(text, `checkout_queue_messages{queue="payment.order-created.dlq"} 3`+"\n") {
		t.Errorf("want 3 messages in the dlq:\n%s", grep(text, "queue_messages"))
	}
	if strings.Contains(text, "missing.dlq") {
		t.Errorf("a missing queue is reported:\n%s", grep(text, "queue_messages"))
	}
}

func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
