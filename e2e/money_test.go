package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// loseFirstAnswer is an HTTP proxy in front of the order service that
// forwards every request and relays every answer, except that it drops the
// answer to the first checkout: the order service did the work, the
// gateway's connection is closed before a byte of the answer arrives.
func loseFirstAnswer(t *testing.T, target string) (url string, dropped *atomic.Int32) {
	t.Helper()
	dropped = new(atomic.Int32)
	client := &http.Client{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/orders" && dropped.Add(1) == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, dropped
}

// A seed-style checkout (no Idempotency-Key) whose answer from the order
// service is lost once still answers 201, and exactly one order exists.
func TestLostAnswerIsRecovered(t *testing.T) {
	t.Parallel()
	s := fastSystem(t, "")
	s.Start("order")
	proxy, dropped := loseFirstAnswer(t, s.URL("order"))
	s.ServiceEnv["gateway"] = map[string]string{"ORDER_SERVICE_URL": proxy}
	s.Up("payment", "email", "gateway")
	s.WaitReady("order", 60*time.Second)

	code, body, err := s.Checkout(context.Background(), `{"user_id":1,"user_email":"lost@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}`)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("checkout whose answer was lost once = %d %v %s, want 201", code, err, body)
	}
	if dropped.Load() < 2 {
		t.Fatalf("the proxy saw %d checkouts; the answer was not lost and retried", dropped.Load())
	}
	if n := queryInt(t, s.OrderDB, `SELECT count(*) FROM orders`); n != 1 {
		t.Fatalf("%d orders for one checkout, want 1", n)
	}
}

// Orders whose OrderCreated is purged from the payment queue while the
// payment service is down all end (paid or cancelled) with their mail once
// it is back, with no one stepping in: the saga asks again.
func TestPurgedOrderCreatedEnds(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	s := fastSystem(t, "")
	s.ServiceEnv["order"] = map[string]string{"ORDER_PAYMENT_TIMEOUT": "10s"}
	s.Up()
	s.Stop("payment", 15*time.Second)

	const n = 3
	ids := make([]int64, n)
	for i := range n {
		ids[i] = checkout(t, s, i+1, fmt.Sprintf("purged-%d@example.com", i), "12.00").ID
	}
	ch := testenv.Channel(t, s.AMQPURL)
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(events.QueuePayment, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d OrderCreated reached %s", q.Messages, n, events.QueuePayment)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if purged, err := ch.QueuePurge(events.QueuePayment, false); err != nil || purged < n {
		t.Fatalf("purged %d: %v", purged, err)
	}

	back := time.Now()
	s.Start("payment")
	s.WaitReady("payment", 60*time.Second)
	defer func() {
		t.Logf("all %d orders ended with their mail %v after the payment service was started again", n, time.Since(back))
	}()
	for i, id := range ids {
		o := waitOrder(t, s, id, 90*time.Second, func(o order) bool {
			return (o.Status == "paid" && finished("confirmation_sent")(o)) ||
				(o.Status == "cancelled" && finished("cancellation_notice_sent")(o))
		})
		if got := len(mailsTo(t, s.Mailpit, fmt.Sprintf("purged-%d@example.com", i))); got != 1 {
			t.Errorf("order %d (%s): %d mails, want 1", id, o.Status, got)
		}
	}
}

// An order the saga cancelled while its charge was under way is refunded:
// the payment service gives the money back and says so, and the order's
// timeline records it.
func TestLateChargeIsRefunded(t *testing.T) {
	t.Parallel()
	s := NewSystem(t, "")
	s.Env["EMAIL_DELAY"] = "100ms"
	s.ServiceEnv["payment"] = map[string]string{"PAYMENT_DELAY": "4s"}
	s.ServiceEnv["order"] = map[string]string{"ORDER_PAYMENT_TIMEOUT": "1s", "ORDER_PAYMENT_TRIES": "0"}
	s.Up()
	o := checkout(t, s, 1, "late@example.com", "30.00")
	o = waitOrder(t, s, o.ID, 60*time.Second, finished("refunded"))
	if o.Status != "cancelled" || !finished("cancelled")(o) {
		t.Fatalf("order %d: %s %v, want cancelled and refunded", o.ID, o.Status, o.steps())
	}
	if n := queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments WHERE order_id = $1 AND status = 'refunded'`, o.ID); n != 1 {
		t.Fatalf("%d refunded payments for order %d, want 1", n, o.ID)
	}
	if n := queryInt(t, s.PaymentDB, `SELECT count(*) FROM provider_ledger WHERE key = $1 AND refunded_at IS NOT NULL`, o.ID); n != 1 {
		t.Fatalf("the provider holds %d refunds for order %d, want 1", n, o.ID)
	}
}

// With the order service frozen (SIGSTOP), the gateway's breaker opens
// after a few timeouts and further checkouts are refused at once with 503;
// after SIGCONT checkouts succeed again. The durations are logged (the
// README's figures), not asserted: the machine is shared.
func TestBreakerAgainstAFrozenOrderService(t *testing.T) {
	t.Parallel()
	s := fastSystem(t, "")
	s.ServiceEnv["gateway"] = map[string]string{"UPSTREAM_TIMEOUT": "1s"}
	s.Up()
	const body = `{"user_id":1,"user_email":"frozen@example.com","items":[{"product_id":1,"quantity":1,"price":"5.00"}]}`
	timed := func() (int, time.Duration) {
		start := time.Now()
		code, _, err := s.Checkout(context.Background(), body)
		if err != nil {
			t.Fatalf("checkout: %v", err)
		}
		return code, time.Since(start)
	}
	if code, _ := timed(); code != http.StatusCreated {
		t.Fatalf("checkout before the freeze = %d", code)
	}

	s.Signal("order", syscall.SIGSTOP)
	thawed := false
	defer func() {
		if !thawed {
			s.Signal("order", syscall.SIGCONT)
		}
	}()
	var first []string
	for i := 0; ; i++ {
		code, d := timed()
		first = append(first, fmt.Sprintf("%d in %v", code, d.Round(time.Millisecond)))
		if code == http.StatusServiceUnavailable {
			break
		}
		if code != http.StatusGatewayTimeout || i == 20 {
			t.Fatalf("checkouts against a frozen order service: %v; want 504s, then the breaker's 503", first)
		}
	}
	var open []time.Duration
	for range 10 {
		code, d := timed()
		if code != http.StatusServiceUnavailable {
			t.Fatalf("with the breaker open a checkout got %d", code)
		}
		open = append(open, d.Round(time.Microsecond))
	}
	t.Logf("frozen order service: first checkouts %v; with the breaker open %v", first, open)

	s.Signal("order", syscall.SIGCONT)
	thawed = true
	thaw := time.Now()
	for {
		code, _ := timed()
		if code == http.StatusCreated {
			break
		}
		if time.Since(thaw) > 60*time.Second {
			t.Fatalf("checkouts still fail (%d) a minute after SIGCONT", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first 201 %v after SIGCONT", time.Since(thaw).Round(time.Millisecond))
}
