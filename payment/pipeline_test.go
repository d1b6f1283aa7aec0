package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/payment/migrations"
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

// A statement the database refuses fails only its own input: the pipeline
// it rolled back runs again one statement at a time, and the others'
// intents are written. Here the middle one has an amount the payments
// table refuses (a CHECK constraint).
func TestPipelineRefusalStaysItsOwn(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Database(t)
	db, err := postgres.Open(dbURL, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := db.Prepare(ctx, migrations.FS, web.NewLogger(io.Discard, "error", "json", "payment")); err != nil {
		t.Fatal(err)
	}
	s := &Store{pool: db.Pool}
	evs := make([]events.OrderCreated, 3)
	for i := range evs {
		evs[i], _ = orderCreated(t, int64(2000+i), "5.00")
	}
	evs[1].TotalAmount = -100
	results, err := s.intendBatch(ctx, evs)
	if err != nil || len(results) != 3 {
		t.Fatalf("intendBatch: %d results, %v", len(results), err)
	}
	var pe *pgconn.PgError
	if !errors.As(results[1].Err, &pe) || pe.Code != "23514" {
		t.Fatalf("the refused intent: %+v, want its check violation", results[1])
	}
	for _, i := range []int{0, 2} {
		if r := results[i]; r.Err != nil || !r.Out.inserted || r.Out.p.OrderID != evs[i].OrderID {
			t.Fatalf("intent %d beside the refused one: %+v", i, r)
		}
	}
	if n := countRows(t, dbURL, `SELECT count(*) FROM payments`); n != 2 {
		t.Fatalf("%d payments written, want the 2 the database took", n)
	}
}
