package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// A burst of orders (the deliveries of one read go through Intend and
// Finish in pipelines) is charged once per order, with a copy of some of
// its events in the same burst: one payment, one charge and one result
// event per order, each result on the right order.
func TestBurstIsChargedOncePerOrder(t *testing.T) {
	t.Parallel()
	in := start(t)
	results := testenv.Watch(t, in.AMQPURL, events.RoutePaymentProcessed, events.RoutePaymentFailed)
	const n = 60
	for i := range n {
		ev, body := orderCreated(t, int64(1000+i), "25.00")
		publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
		if i%3 == 0 {
			publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body) // published twice
		}
	}
	seen := map[int64]int{}
	for _, m := range results.Next(n, 30*time.Second) {
		var ev events.PaymentProcessed
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		if m.Type != events.TypePaymentProcessed || ev.TotalAmount.String() != "25.00" {
			t.Fatalf("order %d: %s for %s", ev.OrderID, m.Type, ev.TotalAmount)
		}
		seen[ev.OrderID]++
	}
	results.None(time.Second)
	for i := range n {
		if id := int64(1000 + i); seen[id] != 1 {
			t.Fatalf("order %d: %d results", id, seen[id])
		}
	}
	for q, want := range map[string]int{
		`SELECT count(*) FROM payments WHERE status = 'succeeded'`:                     n,
		`SELECT count(DISTINCT key) FROM provider_ledger`:                              n,
		`SELECT count(*) FROM provider_ledger`:                                         n,
		`SELECT count(*) FROM outbox`:                                                  n,
		`SELECT count(DISTINCT payload->>'order_id') FROM outbox`:                      n,
		`SELECT count(*) FROM inbox WHERE event_type = 'OrderCreated'`:                 n,
		`SELECT count(*) FROM payments p JOIN provider_ledger l ON l.key = p.order_id`: n,
	} {
		if got := countRows(t, in.DBURL, q); got != want {
			t.Errorf("%s = %d, want %d", q, got, want)
		}
	}
}
