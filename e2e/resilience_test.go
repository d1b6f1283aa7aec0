package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Services started before RabbitMQ and Postgres report not ready, answer
// promptly with 503, and become healthy by themselves once those come up.
func TestStartBeforeDependencies(t *testing.T) {
	t.Parallel()
	vhost := testenv.VHost(t)
	broker := testenv.NewProxy(t, testenv.BrokerAddr())
	db := testenv.NewProxy(t, testenv.PostgresAddr())
	broker.Cut()
	db.Cut()
	s := fastSystem(t, broker.URL(vhost))
	s.ServiceEnv["order"] = map[string]string{"DATABASE_URL": db.URL(s.OrderDB)}
	s.ServiceEnv["payment"] = map[string]string{"DATABASE_URL": db.URL(s.PaymentDB)}
	for _, name := range services {
		s.Start(name)
	}
	for _, name := range services {
		testenv.WaitHTTP(t, s.URL(name)+"/livez", 30*time.Second)
		if code := status(t, s.URL(name)+"/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("%s /readyz = %d without its dependencies, want 503", name, code)
		}
	}
	if code := status(t, s.URL("gateway")+"/health"); code != http.StatusServiceUnavailable {
		t.Errorf("gateway /health = %d, want 503 degraded", code)
	}
	start := time.Now()
	code, body, err := s.Checkout(context.Background(), `{"user_id":1,"user_email":"early@example.com","items":[{"product_id":1,"quantity":1,"price":"5.00"}]}`)
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(string(body), "unavailable") {
		t.Errorf("checkout before the database = %d %v %s, want a 503 problem", code, err, body)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("checkout before the database took %v; it must fail promptly", el)
	}

	broker.Restore()
	db.Restore()
	for _, name := range services {
		s.WaitReady(name, 60*time.Second)
	}
	// /readyz of the order service needs only its database (checkout works
	// without the broker); its /health also wants the saga consumer, which
	// may start a moment later. It must get there by itself.
	testenv.WaitHTTP(t, s.URL("gateway")+"/health", 30*time.Second)
	o := checkout(t, s, 1, "late@example.com", "5.00")
	waitOrder(t, s, o.ID, 30*time.Second, finished("confirmation_sent"))
}

// SIGTERM lets the payments in flight finish, records them and publishes
// their events before the process exits; a restart then finds nothing to do
// twice.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	s := NewSystem(t, "")
	s.Env["PAYMENT_DELAY"] = "2s"
	s.Env["EMAIL_DELAY"] = "100ms"
	s.Up()
	const n = 10
	var ids []int64
	for i := range n {
		ids = append(ids, checkout(t, s, i+1, fmt.Sprintf("g%d@example.com", i), "7.00").ID)
	}
	// Stop once every payment is under way: its intent committed (the
	// provider is asked only after that), its handler running.
	waitFor(t, 30*time.Second, "every payment to be under way", func() bool {
		return queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments`) == n
	})
	if got := queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments WHERE status <> 'charging'`); got == n {
		t.Fatal("payments finished before the stop; the test proves nothing")
	}
	s.Stop("payment", 15*time.Second)
	if code := s.ExitCode("payment"); code != 0 {
		t.Fatalf("payment exited with %d after SIGTERM", code)
	}
	if got := queryInt(t, s.PaymentDB, `SELECT count(*) FROM payments WHERE status <> 'charging'`); got != n {
		t.Fatalf("%d of %d in-flight payments recorded at shutdown", got, n)
	}
	if got := queryInt(t, s.PaymentDB, `SELECT count(*) FROM outbox WHERE published_at IS NULL`); got != 0 {
		t.Fatalf("%d payment events left unpublished at shutdown", got)
	}

	s.Start("payment")
	s.WaitReady("payment", 30*time.Second)
	for _, id := range ids {
		waitOrder(t, s, id, 30*time.Second, finished("confirmation_sent"))
	}
	if got := queryInt(t, s.PaymentDB, `SELECT count(*) FROM outbox`); got != n {
		t.Fatalf("%d payment events for %d orders", got, n)
	}
}
