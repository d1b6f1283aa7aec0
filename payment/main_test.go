package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/testenv"
)

type instance struct {
	URL, DBURL, AMQPURL string
}

// start runs the payment service through run, as main does, on port 0.
func start(t *testing.T) instance {
	t.Helper()
	in := instance{DBURL: testenv.Database(t), AMQPURL: testenv.VHost(t)}
	cfg := Config{
		Port: "0", DatabaseURL: in.DBURL, AMQPURL: in.AMQPURL, DBMaxConns: 4,
		PaymentDelay: 0, PaymentMaxAmount: "10000.00", Prefetch: 20, Concurrency: 20,
		MaxAttempts: 3, RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, HandlerTimeout: 5 * time.Second,
		OutboxPoll: 200 * time.Millisecond, OutboxBatch: 100, ShutdownTimeout: 5 * time.Second, LogLevel: "warn",
		ReconcileInterval: 200 * time.Millisecond,
	}
	in.URL = testenv.Run(t, func(ctx context.Context, listening func(net.Addr)) error {
		return run(ctx, cfg, io.Discard, listening)
	})
	testenv.WaitHTTP(t, in.URL+"/readyz", 30*time.Second)
	return in
}

func publishRaw(t *testing.T, url, id, typ string, body []byte) {
	t.Helper()
	ch := testenv.Channel(t, url)
	if err := ch.PublishWithContext(context.Background(), events.Exchange, events.RouteOrderCreated, false, false, amqp.Publishing{
		MessageId: id, Type: typ, ContentType: events.ContentType, DeliveryMode: amqp.Persistent, Body: body,
	}); err != nil {
		t.Fatal(err)
	}
}

func orderCreated(t *testing.T, orderID int64, total string) (events.OrderCreated, []byte) {
	t.Helper()
	amount, err := money.Parse(total)
	if err != nil {
		t.Fatal(err)
	}
	ev := events.OrderCreated{Meta: events.NewMeta(events.TypeOrderCreated, time.Now()), OrderID: orderID, UserID: 9,
		UserEmail: "pay@example.com", TotalAmount: amount, Items: []events.Item{{ProductID: 1, Quantity: 1, Price: amount}}}
	m, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return ev, m.Body
}

func countRows(t *testing.T, dbURL, q string, args ...any) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPaymentResults(t *testing.T) {
	t.Parallel()
	in := start(t)
	results := testenv.Watch(t, in.AMQPURL, events.RoutePaymentProcessed, events.RoutePaymentFailed)

	tests := []struct {
		name, total, typ string
	}{
		{"OK", "1299.99", events.TypePaymentProcessed},
		{"OKAtTheLimit", "10000.00", events.TypePaymentProcessed},
		{"ErrOverTheLimit", "10000.01", events.TypePaymentFailed},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, body := orderCreated(t, int64(100+i), tt.total)
			publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
			m := results.Next(1, 10*time.Second)[0]
			if m.Type != tt.typ || m.RoutingKey != map[string]string{
				events.TypePaymentProcessed: events.RoutePaymentProcessed, events.TypePaymentFailed: events.RoutePaymentFailed}[tt.typ] {
				t.Fatalf("got %s on %s, want %s", m.Type, m.RoutingKey, tt.typ)
			}
			var got struct {
				OrderID     int64        `json:"order_id"`
				TotalAmount money.Amount `json:"total_amount"`
				UserEmail   string       `json:"user_email"`
				Reason      string       `json:"reason"`
			}
			if err := json.Unmarshal(m.Body, &got); err != nil {
				t.Fatal(err)
			}
			if got.OrderID != ev.OrderID || got.TotalAmount != ev.TotalAmount || got.UserEmail != ev.UserEmail ||
				(tt.typ == events.TypePaymentFailed) != (got.Reason != "") {
				t.Fatalf("result %s for %+v", m.Body, ev)
			}

			resp, err := http.Get(fmt.Sprintf("%s/payments/%d", in.URL, ev.OrderID))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p Payment
			_ = json.NewDecoder(resp.Body).Decode(&p)
			wantStatus := map[string]string{events.TypePaymentProcessed: StatusSucceeded, events.TypePaymentFailed: StatusDeclined}[tt.typ]
			if resp.StatusCode != 200 || p.Status != wantStatus || p.Amount != ev.TotalAmount || p.ProviderRef == "" {
				t.Fatalf("GET payment: %d %+v", resp.StatusCode, p)
			}
		})
	}
	if resp, err := http.Get(in.URL + "/payments/424242"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown order: %v %v", resp, err)
	}
}

// The same OrderCreated redelivered charges once and announces once; the
// same order announced again under a new event id (the saga asking again)
// charges nothing more and announces the result it has once more.
func TestPaymentIsChargedOncePerOrder(t *testing.T) {
	t.Parallel()
	in := start(t)
	results := testenv.Watch(t, in.AMQPURL, events.RoutePaymentProcessed, events.RoutePaymentFailed)

	ev, body := orderCreated(t, 7, "50.00")
	publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
	results.Next(1, 10*time.Second)
	publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body) // redelivery
	again, againBody := orderCreated(t, 7, "50.00")           // same order, new event id
	publishRaw(t, in.AMQPURL, again.EventID, again.EventType, againBody)
	if m := results.Next(1, 10*time.Second)[0]; m.Type != events.TypePaymentProcessed {
		t.Fatalf("asked again, payment answered %s", m.Type)
	}
	results.None(time.Second)
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM payments WHERE order_id = 7`); n != 1 {
		t.Fatalf("%d payments for one order", n)
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM provider_ledger WHERE key = 7`); n != 1 {
		t.Fatalf("the provider charged order 7 %d times", n)
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM outbox`); n != 2 {
		t.Fatalf("%d result events for one order asked twice, want 2", n)
	}
}

// A message that is not an OrderCreated goes to the dead-letter queue at
// once and charges nothing.
func TestUndecodableOrderCreated(t *testing.T) {
	t.Parallel()
	in := start(t)
	publishRaw(t, in.AMQPURL, "garbage-1", events.TypeOrderCreated, []byte(`{"order_id": "not a number"`))
	// Well formed but for its id, which the inbox (a uuid column) cannot hold.
	ev, _ := orderCreated(t, 77, "5.00")
	ev.EventID = "not-a-uuid"
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, in.AMQPURL, "garbage-2", events.TypeOrderCreated, body)
	conn, err := amqp.Dial(in.AMQPURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		dls, _, err := events.ListDeadLetters(context.Background(), conn, Queue, 10)
		got := map[string]int{}
		for _, dl := range dls {
			got[dl.EventID] = dl.Attempts
		}
		if err == nil && len(dls) == 2 && got["garbage-1"] == 1 && got["garbage-2"] == 1 {
			break // both at once (attempt 1), in whatever order
		}
		if time.Now().After(deadline) {
			t.Fatalf("not dead-lettered: %+v %v", dls, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM payments`); n != 0 {
		t.Fatalf("%d payments from garbage", n)
	}
}

func TestProviderDeclinesDeterministically(t *testing.T) {
	p := Provider{MaxAmount: 1000000, FailureRate: 0.3}
	declined := 0
	for key := int64(1); key <= 2000; key++ {
		a, err := p.Charge(context.Background(), key, 100)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := p.Charge(context.Background(), key, 100)
		if a != b {
			t.Fatalf("key %d: %+v then %+v; the provider is not idempotent", key, a, b)
		}
		if !a.Approved {
			declined++
		}
	}
	// 30% of 2000 is 600; a fair hash stays well within ±100.
	if declined < 500 || declined > 700 {
		t.Fatalf("%d of 2000 declined at a 0.3 failure rate", declined)
	}
	if d, _ := (Provider{MaxAmount: 1000}).Charge(context.Background(), 1, 1001); d.Approved || d.Reason == "" {
		t.Fatalf("over the limit: %+v", d)
	}
}

// exec runs statements against the service's database.
func exec(t *testing.T, dbURL, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// waitDeadLettered waits until the event is in the queue's dead-letter queue.
func waitDeadLettered(t *testing.T, amqpURL, queue, eventID string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		dls, _, err := events.ListDeadLetters(context.Background(), conn, queue, 10)
		for _, dl := range dls {
			if err == nil && dl.EventID == eventID {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not dead-lettered: %+v %v", eventID, dls, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// When recording the provider's answer keeps failing (here a trigger
// refuses it) until the OrderCreated is dead-lettered, the charge is not
// lost: its intent row was committed before the provider was called.
func TestChargeIntentIsCommittedFirst(t *testing.T) {
	t.Parallel()
	in := start(t)
	exec(t, in.DBURL, `
		CREATE FUNCTION refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'recording refused by the test'; END $$;
		CREATE TRIGGER refuse_result BEFORE INSERT OR UPDATE ON payments FOR EACH ROW
		WHEN (NEW.status IN ('succeeded', 'declined')) EXECUTE FUNCTION refuse_result();`)
	ev, body := orderCreated(t, 500, "42.00")
	publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
	waitDeadLettered(t, in.AMQPURL, Queue, ev.EventID)
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM payments WHERE order_id = 500`); n != 1 {
		t.Fatalf("%d payment rows for an order the provider was asked to charge, want 1 (its intent)", n)
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM provider_ledger WHERE key = 500 AND approved`); n != 1 {
		t.Fatalf("the provider charged order 500 %d times, want 1", n)
	}
	// Once recording works again, the reconciler finishes the charge by
	// asking the provider, without charging twice, and announces it.
	results := testenv.Watch(t, in.AMQPURL, events.RoutePaymentProcessed)
	exec(t, in.DBURL, `DROP TRIGGER refuse_result ON payments`)
	if m := results.Next(1, 30*time.Second)[0]; m.Type != events.TypePaymentProcessed {
		t.Fatalf("reconciled payment announced %s", m.Type)
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM payments WHERE order_id = 500 AND status = 'succeeded'`); n != 1 {
		t.Fatal("the reconciled payment is not recorded as succeeded")
	}
	if n := countRows(t, in.DBURL, `SELECT count(*) FROM provider_ledger WHERE key = 500`); n != 1 {
		t.Fatalf("the provider holds %d charges for order 500, want 1", n)
	}
}

func publishEvent(t *testing.T, url string, e events.Event) {
	t.Helper()
	m, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ch := testenv.Channel(t, url)
	if err := ch.PublishWithContext(context.Background(), events.Exchange, m.RoutingKey, false, false, amqp.Publishing{
		MessageId: m.ID, Type: m.Type, ContentType: events.ContentType, DeliveryMode: amqp.Persistent, Body: m.Body,
	}); err != nil {
		t.Fatal(err)
	}
}

func cancelledOrder(orderID int64, total money.Amount) events.OrderCancelled {
	return events.OrderCancelled{Meta: events.NewMeta(events.TypeOrderCancelled, time.Now()), OrderID: orderID,
		UserID: 9, UserEmail: "pay@example.com", TotalAmount: total, Reason: "no payment result"}
}

// The queue and its bindings are the contract's.
func TestQueueIsTheContracts(t *testing.T) {
	if Queue != events.QueuePayment || len(events.QueueBindings(Queue)) == 0 {
		t.Fatalf("payment consumes %q, the contract says %q", Queue, events.QueuePayment)
	}
}

// A charge of an order cancelled by the saga is refunded and announced;
// an order cancelled before it was charged is not charged by a late
// OrderCreated.
func TestCancelledOrders(t *testing.T) {
	t.Parallel()
	in := start(t)
	refunds := testenv.Watch(t, in.AMQPURL, events.RoutePaymentRefunded)
	results := testenv.Watch(t, in.AMQPURL, events.RoutePaymentProcessed, events.RoutePaymentFailed)

	t.Run("OKRefundsACharge", func(t *testing.T) {
		ev, body := orderCreated(t, 600, "20.00")
		publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
		results.Next(1, 10*time.Second)
		publishEvent(t, in.AMQPURL, cancelledOrder(600, ev.TotalAmount))
		var r events.PaymentRefunded
		if err := json.Unmarshal(refunds.Next(1, 10*time.Second)[0].Body, &r); err != nil || r.OrderID != 600 || r.TotalAmount != ev.TotalAmount {
			t.Fatalf("refund %+v %v", r, err)
		}
		if n := countRows(t, in.DBURL, `SELECT count(*) FROM provider_ledger WHERE key = 600 AND refunded_at IS NOT NULL`); n != 1 {
			t.Fatal("the provider did not refund the charge")
		}
		publishEvent(t, in.AMQPURL, cancelledOrder(600, ev.TotalAmount)) // again: refunds nothing more
		refunds.None(500 * time.Millisecond)
	})
	t.Run("OKTombstoneStopsALateCharge", func(t *testing.T) {
		amount, _ := money.Parse("21.00")
		publishEvent(t, in.AMQPURL, cancelledOrder(601, amount))
		deadline := time.Now().Add(10 * time.Second)
		for countRows(t, in.DBURL, `SELECT count(*) FROM payments WHERE order_id = 601 AND status = 'cancelled'`) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no tombstone for the cancelled order")
			}
			time.Sleep(50 * time.Millisecond)
		}
		deadline = time.Now().Add(10 * time.Second)
		ev, body := orderCreated(t, 601, "21.00")
		publishRaw(t, in.AMQPURL, ev.EventID, ev.EventType, body)
		for countRows(t, in.DBURL, `SELECT count(*) FROM inbox WHERE event_id = $1`, ev.EventID) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the late OrderCreated was not handled")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := countRows(t, in.DBURL, `SELECT count(*) FROM provider_ledger WHERE key = 601`); n != 0 {
			t.Fatal("a cancelled order was charged")
		}
	})
}
