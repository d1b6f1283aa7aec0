package outbox_test

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
	"github.com/checkout-demo/checkout/order/migrations"
)

func setup(t *testing.T) (*postgres.DB, string) {
	t.Helper()
	db, err := postgres.Open(testenv.Database(t), 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.Prepare(ctx, migrations.FS, web.NewLogger(io.Discard, "error", "json", "test")); err != nil {
		t.Fatal(err)
	}
	return db, testenv.VHost(t)
}

func startRelay(t *testing.T, db *postgres.DB, amqpURL string) *outbox.Relay {
	t.Helper()
	relay, _ := startRelayWith(t, db, amqpURL, func(*outbox.Relay) {})
	return relay
}

// startRelayWith starts a relay that configure has set up; it stops when
// stop is called or the test ends.
func startRelayWith(t *testing.T, db *postgres.DB, amqpURL string, configure func(*outbox.Relay)) (relay *outbox.Relay, stop func()) {
	t.Helper()
	log := web.NewLogger(io.Discard, "error", "json", "test")
	ctx, cancel := context.WithCancel(context.Background())
	broker := events.NewBroker(amqpURL, log)
	pub := events.NewPublisher(broker)
	relay = outbox.NewRelay(db.Pool, pub, log)
	relay.Poll, relay.Batch = 100*time.Millisecond, 50
	configure(relay)
	broker.OnConnect(relay.Wake)
	done := make(chan struct{}, 2)
	go func() { broker.Run(ctx); done <- struct{}{} }()
	go func() { relay.Run(ctx); done <- struct{}{} }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done; <-done; pub.Close() }) }
	t.Cleanup(stop)
	return relay, stop
}

func addOrders(t *testing.T, db *postgres.DB, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			return outbox.Add(ctx, tx, events.OrderCreated{Meta: events.NewMeta(events.TypeOrderCreated, time.Now()), OrderID: int64(i + 1)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// Two relays on one database (two replicas) publish every row exactly once.
func TestRelayReplicasPublishEachRowOnce(t *testing.T) {
	t.Parallel()
	db, amqpURL := setup(t)
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	const n = 300
	addOrders(t, db, n)
	startRelay(t, db, amqpURL)
	startRelay(t, db, amqpURL)

	seen := map[string]bool{}
	orders := map[int64]bool{}
	for _, m := range q.Next(n, 30*time.Second) {
		if seen[m.MessageId] {
			t.Fatalf("event %s published twice", m.MessageId)
		}
		seen[m.MessageId] = true
		var ev events.OrderCreated
		if err := json.Unmarshal(m.Body, &ev); err != nil {
			t.Fatal(err)
		}
		orders[ev.OrderID] = true
	}
	q.None(500 * time.Millisecond)
	if len(orders) != n {
		t.Fatalf("got events for %d orders, want %d", len(orders), n)
	}
	if left, err := outbox.Pending(context.Background(), db.Pool); err != nil || left != 0 {
		t.Fatalf("pending after publish = %d, %v", left, err)
	}
}

// An event no queue is bound to is returned by the broker; it stays in the
// outbox with the reason and is delivered once a queue is bound.
func TestRelayKeepsUnroutableEvents(t *testing.T) {
	t.Parallel()
	db, amqpURL := setup(t)
	addOrders(t, db, 1)
	relay := startRelay(t, db, amqpURL)

	var lastErr string
	deadline := time.Now().Add(10 * time.Second)
	for lastErr == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_ = db.Pool.QueryRow(context.Background(),
			`SELECT coalesce(last_error, '') FROM outbox WHERE published_at IS NULL AND attempts > 0`).Scan(&lastErr)
	}
	if lastErr == "" {
		t.Fatal("unroutable event was marked published or never tried")
	}
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	// The row waits for its backoff (at most a second on the first retry).
	relay.Wake()
	q.Next(1, 10*time.Second)
	// The row is marked once the confirm is in, which can be a moment
	// after the watcher got the message.
	deadline = time.Now().Add(10 * time.Second)
	for {
		left, err := outbox.Pending(context.Background(), db.Pool)
		if err == nil && left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending = %d (%v) after delivery", left, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// While rows keep coming, a batch's marks ride on the next claim: one
// statement per batch. The marks wait no longer than MarkDelay when nothing
// comes, and a stopping relay marks what waits.
func TestRelayMarksRideOnTheNextClaim(t *testing.T) {
	t.Parallel()
	db, amqpURL := setup(t)
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	published := func() (ids []int64) {
		rows, err := db.Pool.Query(context.Background(), `SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	// No poll and no mark on its own within the test: only a claim marks.
	relay, stop := startRelayWith(t, db, amqpURL, func(r *outbox.Relay) { r.Poll, r.MarkDelay, r.Linger = time.Hour, time.Hour, 0 })

	// The first row: its claim may be the second since the broker
	// connected (the connection wakes the relay too), and a spare wake
	// may come after it; wait that out.
	addOrders(t, db, 1)
	relay.Wake()
	q.Next(1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	// The second row: its claim marks the first; its own mark waits.
	addOrders(t, db, 1)
	relay.Wake()
	q.Next(1, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // the confirm is in long before
	if ids := published(); len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("published rows %v, want [1]: the second row's mark waits for the next claim", ids)
	}
	stop()
	if ids := published(); len(ids) != 2 {
		t.Fatalf("published rows %v after the relay stopped, want both", ids)
	}
}

// A batch's marks go on their own after MarkDelay when no row comes.
func TestRelayMarksAfterMarkDelay(t *testing.T) {
	t.Parallel()
	db, amqpURL := setup(t)
	publishThreeMarkedAlone(t, db, amqpURL)
}

// publishThreeMarkedAlone has a relay with no poll publish three new rows
// and waits until their marks, with no row after them to ride on, went on
// their own after MarkDelay.
func publishThreeMarkedAlone(t *testing.T, db *postgres.DB, amqpURL string) {
	t.Helper()
	q := testenv.Watch(t, amqpURL, events.RouteOrderCreated)
	relay, _ := startRelayWith(t, db, amqpURL, func(r *outbox.Relay) { r.Poll, r.MarkDelay = time.Hour, 50*time.Millisecond })
	addOrders(t, db, 3)
	relay.Wake()
	q.Next(3, 10*time.Second)
	waitTimeout(t, "the rows to be marked", func() bool {
		left, err := outbox.Pending(context.Background(), db.Pool)
		return err == nil && left == 0
	})
}

// The relay's bookkeeping (claims, marks) commits without waiting for the
// disk, while the rows it publishes were written with the durability of
// the transaction that made them: a trigger notes the synchronous_commit
// each statement on the outbox ran under.
func TestRelayCommitsAsynchronously(t *testing.T) {
	t.Parallel()
	db, amqpURL := setup(t)
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `
		CREATE TABLE commit_modes (op text, mode text);
		CREATE FUNCTION note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO commit_modes VALUES (TG_OP, current_setting('synchronous_commit'));
			RETURN NULL;
		END $$;
		CREATE TRIGGER note_commit_mode AFTER INSERT OR UPDATE ON outbox FOR EACH STATEMENT EXECUTE FUNCTION note_commit_mode();`)
	if err != nil {
		t.Fatal(err)
	}
	publishThreeMarkedAlone(t, db, amqpURL)
	rows, err := db.Pool.Query(ctx, `SELECT op, mode, count(*) FROM commit_modes GROUP BY op, mode ORDER BY op, mode`)
	if err != nil {
		t.Fatal(err)
	}
	type mode struct {
		Op, Mode string
		N        int
	}
	modes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[mode])
	if err != nil {
		t.Fatal(err)
	}
	var inserts, updates int
	for _, m := range modes {
		switch {
		case m.Op == "INSERT" && m.Mode == "on":
			inserts += m.N
		case m.Op == "UPDATE" && m.Mode == "off":
			updates += m.N
		default:
			t.Errorf("%d %s statement(s) on the outbox under synchronous_commit %s", m.N, m.Op, m.Mode)
		}
	}
	// At least one claim that took the rows and one mark of them.
	if inserts != 3 || updates < 2 {
		t.Errorf("statements %+v: want the 3 inserts durable and the relay's claim and mark (at least 2 updates) asynchronous", modes)
	}
}
