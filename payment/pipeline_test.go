package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/checkout-demo/checkout/internal/batch"
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
// table refuses (a CHECK constraint); the three come together (a long
// Gather), so they do share a pipeline first.
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
	var (
		mu    sync.Mutex
		sizes []int
	)
	s.init() // the service's settings, but a Gather long enough for the three
	run := s.intents.Run
	s.intents.Gather = time.Second
	s.intents.Run = func(ctx context.Context, evs []events.OrderCreated) ([]batch.Result[intended], error) {
		mu.Lock()
		sizes = append(sizes, len(evs))
		mu.Unlock()
		return run(ctx, evs)
	}
	evs := make([]events.OrderCreated, 3)
	for i := range evs {
		evs[i], _ = orderCreated(t, int64(2000+i), "5.00")
	}
	evs[1].TotalAmount = -100
	outcomes := make([]intentOutcome, len(evs))
	errs := make([]error, len(evs))
	var wg sync.WaitGroup
	for i, ev := range evs {
		wg.Go(func() { _, outcomes[i], errs[i] = s.Intend(ctx, ev) })
	}
	wg.Wait()
	var pe *pgconn.PgError
	if !errors.As(errs[1], &pe) || pe.Code != "23514" {
		t.Fatalf("the refused intent: %v, want its check violation", errs[1])
	}
	for _, i := range []int{0, 2} {
		if errs[i] != nil || outcomes[i] != intentNew {
			t.Fatalf("intent %d beside the refused one: outcome %v, %v", i, outcomes[i], errs[i])
		}
	}
	if n := countRows(t, dbURL, `SELECT count(*) FROM payments`); n != 2 {
		t.Fatalf("%d payments written, want the 2 the database took", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) == 0 || sizes[0] != 3 {
		t.Fatalf("pipeline sizes %v: the three intents did not share one first", sizes)
	}
}
