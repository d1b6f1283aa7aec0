package outbox_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/web"
)

// The clean-up deletes published rows past their retention and inbox ids
// past theirs, in batches, and nothing that is still to be published or
// recent enough to be redelivered.
func TestCleanupDeletesOnlyWhatIsPastRetention(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	addOrders(t, db, 2500) // more than one clean-up batch
	exec := func(sql string) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// 2400 published long ago, 50 published just now, 50 never published.
	exec(`UPDATE outbox SET published_at = now() - interval '2 days' WHERE id <= 2400`)
	exec(`UPDATE outbox SET published_at = now() WHERE id > 2400 AND id <= 2450`)
	exec(`INSERT INTO inbox (event_id, event_type, handled_at)
	      SELECT gen_random_uuid(), 'Old', now() - interval '30 days' FROM generate_series(1, 2100)`)
	exec(`INSERT INTO inbox (event_id, event_type) SELECT gen_random_uuid(), 'New' FROM generate_series(1, 10)`)

	log := web.NewLogger(io.Discard, "error", "json", "test")
	relay := outbox.NewRelay(db.Pool, events.NewPublisher(events.NewBroker("amqp://127.0.0.1:1/", log)), log)
	relay.Retention, relay.InboxRetention = 24*time.Hour, 7*24*time.Hour
	relay.Cleanup(ctx)

	count := func(sql string) int {
		t.Helper()
		var n int
		if err := db.Pool.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM outbox WHERE published_at IS NOT NULL`); n != 50 {
		t.Errorf("%d published rows left, want the 50 recent ones", n)
	}
	if n := count(`SELECT count(*) FROM outbox WHERE published_at IS NULL`); n != 50 {
		t.Errorf("%d unpublished rows left, want 50", n)
	}
	if n := count(`SELECT count(*) FROM inbox`); n != 10 {
		t.Errorf("%d inbox ids left, want the 10 recent ones", n)
	}
}

// On a server whose autovacuum is off (as on the project's own machine),
// the clean-up vacuums the tables that churn, so their dead rows do not
// pile up and slow every scan; with autovacuum on it leaves them to it.
func TestCleanupVacuumsWhenAutovacuumIsOff(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	addOrders(t, db, 10)
	var autovacuum bool
	if err := db.Pool.QueryRow(ctx, `SELECT current_setting('autovacuum')::bool`).Scan(&autovacuum); err != nil {
		t.Fatal(err)
	}
	log := web.NewLogger(io.Discard, "error", "json", "test")
	relay := outbox.NewRelay(db.Pool, events.NewPublisher(events.NewBroker("amqp://127.0.0.1:1/", log)), log)
	relay.Vacuum = []string{"orders"}
	relay.Cleanup(ctx)
	for _, table := range []string{"outbox", "inbox", "orders"} {
		var vacuumed bool
		if err := db.Pool.QueryRow(ctx, `SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = $1`, table).Scan(&vacuumed); err != nil {
			t.Fatal(err)
		}
		if vacuumed == autovacuum {
			t.Errorf("%s vacuumed by the clean-up: %v, with the server's autovacuum %v", table, vacuumed, autovacuum)
		}
	}
}
