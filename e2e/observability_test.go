package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/telemetry/telemetrytest"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// startWith starts the four services of s (prepared by NewSystem) with
// the fast delays, unless s sets its own, and waits until the system is
// healthy, as StartSystem does.
func startWith(t *testing.T, s *System) {
	t.Helper()
	for k, v := range fast {
		if _, set := s.Env[k]; !set {
			s.Env[k] = v
		}
	}
	s.StartAll()
}

// One checkout is one trace holding spans of the four services: the
// gateway's request, the order's insert and the relay's publish, payment's
// handling with its provider call, email's handling with its SMTP send,
// and the order's saga steps; across a retry (the first SMTP attempts fail
// while the mail server is unreachable) it stays that one trace.
func TestOneTracePerCheckout(t *testing.T) {
	t.Parallel()
	col := telemetrytest.NewCollector(t)
	s := NewSystem(t, "")
	smtp := testenv.NewProxy(t, fmt.Sprintf("127.0.0.1:%d", s.Mailpit.SMTPPort))
	s.Env["OTEL_EXPORTER_OTLP_ENDPOINT"] = col.URL
	s.Env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
	s.ServiceEnv["email"] = map[string]string{"SMTP_PORT": smtp.Addr()[strings.LastIndex(smtp.Addr(), ":")+1:]}
	startWith(t, s)

	smtp.Cut()
	o := checkout(t, s, 1, "traced@example.com", "25.00")
	id := o.TraceID
	if len(id) != 32 {
		t.Fatalf("the checkout's answer has trace_id %q, want 32 hex digits", id)
	}
	if got := getOrder(t, s, o.ID).TraceID; got != id {
		t.Fatalf("GET the order answers trace_id %q, the checkout answered %q", got, id)
	}
	isFailedMail := func(sp telemetrytest.Span) bool {
		return sp.TraceID == id && sp.Service == "email" && sp.Name == "process email.payment-results" && sp.Error
	}
	// The mail cannot go out: wait for a failed attempt, then let it through.
	col.Wait(t, 60*time.Second, func(spans []telemetrytest.Span) bool { return slices.ContainsFunc(spans, isFailedMail) })
	smtp.Restore()
	waitOrder(t, s, o.ID, 60*time.Second, finished("confirmation_sent"))

	has := func(spans []telemetrytest.Span, service, name string, ok bool) bool {
		return slices.ContainsFunc(spans, func(sp telemetrytest.Span) bool {
			return sp.TraceID == id && sp.Service == service && sp.Name == name && sp.Error == !ok
		})
	}
	count := func(spans []telemetrytest.Span, service, name string) int {
		n := 0
		for _, sp := range spans {
			if sp.TraceID == id && sp.Service == service && sp.Name == name {
				n++
			}
		}
		return n
	}
	complete := func(spans []telemetrytest.Span) bool {
		return has(spans, "gateway", "POST /api/checkout", true) &&
			has(spans, "order", "POST /orders", true) &&
			has(spans, "order", "publish ecommerce_events", true) &&
			has(spans, "payment", "process payment.order-created", true) &&
			has(spans, "payment", "payment provider charge", true) &&
			has(spans, "email", "smtp send", true) &&
			has(spans, "email", "process email.payment-results", true) &&
			has(spans, "email", "process email.payment-results", false) &&
			// PaymentProcessed and EmailSent reach the order's saga.
			count(spans, "order", "process order.saga-events") >= 2 &&
			parentsPresent(spans, id)
	}
	spans := col.Wait(t, 60*time.Second, complete)

	// The retry went through a retry queue, published under the failed
	// attempt's span.
	if !slices.ContainsFunc(spans, func(sp telemetrytest.Span) bool {
		return sp.TraceID == id && sp.Service == "email" && strings.HasPrefix(sp.Name, "publish email.payment-results.retry.")
	}) {
		t.Errorf("no move to a retry queue in the trace")
	}
	// One trace: every consumer's handling this checkout caused is in it.
	for _, sp := range spans {
		if sp.Kind == 5 && sp.TraceID != id {
			t.Errorf("%s %q is in trace %s, not the checkout's %s", sp.Service, sp.Name, sp.TraceID, id)
		}
	}
	if t.Failed() {
		for _, sp := range col.Trace(id) {
			t.Logf("%s %s %s parent=%s error=%v", sp.Service, sp.SpanID, sp.Name, sp.ParentSpanID, sp.Error)
		}
	}
}

// parentsPresent reports whether every span of the trace but its root has
// its parent in the trace, and there is one root.
func parentsPresent(spans []telemetrytest.Span, trace string) bool {
	ids := map[string]bool{}
	for _, sp := range spans {
		if sp.TraceID == trace {
			ids[sp.SpanID] = true
		}
	}
	roots := 0
	for _, sp := range spans {
		switch {
		case sp.TraceID != trace:
		case sp.ParentSpanID == "":
			roots++
		case !ids[sp.ParentSpanID]:
			return false
		}
	}
	return roots == 1
}

// A known sequence of events moves the counters by exactly that much: N
// checkouts are N checkout requests answered 201, N charges approved, N
// mails sent, N OrderCreated confirmed by the broker, N paid orders, and
// 2N saga events (PaymentProcessed, EmailSent) handled by the order.
func TestMetricsCountTheEvents(t *testing.T) {
	t.Parallel()
	s := StartSystem(t, fast)
	const n = 3
	type sample struct{ service, name, labels string }
	want := map[sample]float64{
		{"gateway", "checkout_http_request_duration_seconds_count", `method="POST",route="/api/checkout",status="201"`}: n,
		{"order", "checkout_http_request_duration_seconds_count", `method="POST",route="/orders",status="201"`}:         n,
		{"order", "checkout_publisher_confirms_total", `result="ack"`}:                                                  n,
		{"order", "checkout_saga_outcomes_total", `outcome="paid"`}:                                                     n,
		{"order", "checkout_saga_time_to_mail_seconds_count", ``}:                                                       n,
		{"order", "checkout_consumer_messages_total", `outcome="handled",queue="order.saga-events"`}:                    2 * n,
		{"payment", "checkout_consumer_messages_total", `outcome="handled",queue="payment.order-created"`}:              n,
		{"payment", "checkout_payment_provider_duration_seconds_count", `result="approved"`}:                            n,
		{"payment", "checkout_publisher_confirms_total", `result="ack"`}:                                                n,
		{"email", "checkout_consumer_messages_total", `outcome="handled",queue="email.payment-results"`}:                n,
		{"email", "checkout_smtp_send_duration_seconds_count", `result="ok"`}:                                           n,
		{"email", "checkout_publisher_confirms_total", `result="ack"`}:                                                  n,
	}
	before := map[sample]float64{}
	for k := range want {
		before[k] = scrape(t, s.URL(k.service))[k.name+"{"+k.labels+"}"]
	}
	var ids []int64
	for i := range n {
		ids = append(ids, checkout(t, s, i+1, fmt.Sprintf("counted-%d@example.com", i), "10.00").ID)
	}
	for _, id := range ids {
		waitOrder(t, s, id, 60*time.Second, finished("confirmation_sent"))
	}
	// The order learns of the mail before the email service's handler
	// returns (it publishes EmailSent first): wait for the last counts.
	deadline := time.Now().Add(30 * time.Second)
	for k, w := range want {
		for {
			got := scrape(t, s.URL(k.service))[k.name+"{"+k.labels+"}"] - before[k]
			if got == w {
				break
			}
			if got > w || time.Now().After(deadline) {
				t.Errorf("%s %s{%s} moved by %v, want %v", k.service, k.name, k.labels, got, w)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, svc := range []string{"order", "payment"} {
		m := scrape(t, s.URL(svc))
		if _, ok := m["checkout_outbox_pending_rows{}"]; !ok {
			t.Errorf("%s serves no checkout_outbox_pending_rows", svc)
		}
	}
	for svc, q := range map[string]string{"order": "order.saga-events.dlq", "payment": "payment.order-created.dlq", "email": "email.payment-results.dlq"} {
		if v, ok := scrape(t, s.URL(svc))[`checkout_queue_messages{queue="`+q+`"}`]; !ok || v != 0 {
			t.Errorf("%s: checkout_queue_messages{queue=%q} = %v (served: %v), want 0", svc, q, v, ok)
		}
	}
}

// The outbox-lag gauge rises while RabbitMQ is unreachable and falls to 0
// once the relay has published the backlog.
func TestOutboxLagWhileBrokerAway(t *testing.T) {
	t.Parallel()
	broker := testenv.NewProxy(t, testenv.BrokerAddr())
	s := NewSystem(t, broker.URL(testenv.VHost(t)))
	startWith(t, s)

	broker.Cut()
	o := checkout(t, s, 1, "lagging@example.com", "10.00")
	lag := func() (pending, age float64) {
		m := scrape(t, s.URL("order"))
		return m["checkout_outbox_pending_rows{}"], m["checkout_outbox_oldest_pending_age_seconds{}"]
	}
	// The row waits and grows older: past one second the gauge has risen.
	waitFor(t, 60*time.Second, "the outbox lag to rise above 1s", func() bool {
		pending, age := lag()
		return pending >= 1 && age >= 1
	})
	broker.Restore()
	waitFor(t, 60*time.Second, "the outbox lag to fall to 0", func() bool {
		pending, age := lag()
		return pending == 0 && age == 0
	})
	waitOrder(t, s, o.ID, 60*time.Second, finished("confirmation_sent"))
}

func waitFor(t *testing.T, timeout time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scrape reads base's /metrics: every sample by its name and labels as
// the text format writes them (labels sorted, `name{}` when there is none).
func scrape(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d", base, resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		key, val := line[:i], line[i+1:]
		if !strings.Contains(key, "{") {
			key += "{}"
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[key] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
