package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/testenv"
)

// A first deploy: a fresh vhost and fresh databases, and the email service
// starts for the first time only after the first orders were paid. The
// payment results published before it ever ran must still reach its queue:
// every service declares the whole topology at start, not only its own
// queue, so no event is routed to some of its consumers and not others.
func TestFirstDeployEmailStartsLate(t *testing.T) {
	testenv.Long(t)
	t.Parallel()
	s := fastSystem(t, "")
	// The gateway starts before the email service exists: it is given an
	// address that refuses connections (its /health, which this test does
	// not read, reports the email service down).
	s.ServiceEnv["gateway"] = map[string]string{"EMAIL_SERVICE_URL": fmt.Sprintf("http://127.0.0.1:%d", testenv.ClosedPort(t))}
	s.Up("order", "payment", "gateway")

	type placed struct {
		id     int64
		email  string
		status string
		step   string
	}
	var orders []placed
	for i := range 8 {
		price, status, step := "25.00", "paid", "confirmation_sent"
		if i%4 == 3 {
			price, status, step = "10000.01", "payment_failed", "payment_failed_notice_sent"
		}
		email := fmt.Sprintf("first-deploy-%d@example.com", i)
		o := checkout(t, s, i+1, email, price)
		orders = append(orders, placed{id: o.ID, email: email, status: status, step: step})
	}
	// Every order is settled (its payment result published and consumed by
	// the order service) before the email service exists.
	for _, o := range orders {
		got := waitOrder(t, s, o.id, 60*time.Second, func(x order) bool { return x.Status != "pending" })
		if got.Status != o.status {
			t.Fatalf("order %d: status %s, want %s", o.id, got.Status, o.status)
		}
	}
	if n := len(s.Mailpit.Messages(t)); n != 0 {
		t.Fatalf("%d mails before the email service started", n)
	}

	s.Start("email")
	s.WaitReady("email", 60*time.Second)
	for _, o := range orders {
		waitOrder(t, s, o.id, 60*time.Second, finished(o.step))
		if mails := mailsTo(t, s.Mailpit, o.email); len(mails) != 1 {
			t.Fatalf("order %d: %d mails to %s, want 1", o.id, len(mails), o.email)
		}
	}
}
