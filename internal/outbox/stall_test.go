package outbox_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/testenv"
	"github.com/checkout-demo/checkout/internal/web"
)

// A broker socket that stops answering in the middle of a relay batch (a
// hung broker, a black-holed path) holds no row locks: the relay claimed
// its rows in a transaction of its own and talks to the broker outside any,
// so the rows stay writable meanwhile; and the relay's call returns within
// its bound instead of waiting for the kernel to give up on the socket.
func TestRelayStalledBrokerHoldsNoLocks(t *testing.T) {
	t.Parallel()
	db, vhost := setup(t)
	testenv.Watch(t, vhost, events.RouteOrderCreated) // a queue takes the events
	proxy := testenv.NewProxy(t, testenv.BrokerAddr())
	log := web.NewLogger(io.Discard, "error", "json", "test")
	ctx, cancel := context.WithCancel(context.Background())
	broker := events.NewBroker(proxy.URL(vhost), log)
	pub := events.NewPublisher(broker)
	relay := outbox.NewRelay(db.Pool, pub, log)
	relay.PublishTimeout = time.Second
	done := make(chan struct{})
	go func() { broker.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; pub.Close() })
	waitTimeout(t, "broker connection", broker.Connected)

	// One row through, so the publisher's channel is open before the stall.
	addOrders(t, db, 1)
	if err := relay.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	addOrders(t, db, 5)
	flushed := make(chan error, 1)
	go func() { flushed <- relay.Flush(context.Background()) }()

	// Wait until the relay has taken the rows: none is left to claim.
	waitTimeout(t, "the relay to claim the rows", func() bool {
		var free int
		err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
			return tx.QueryRow(context.Background(), `
				SELECT count(*) FROM (SELECT id FROM outbox
				WHERE published_at IS NULL AND next_attempt_at <= now() FOR UPDATE SKIP LOCKED) f`).Scan(&free)
		})
		return err == nil && free == 0
	})
	// Another transaction can write the rows while the relay waits.
	err := pgx.BeginFunc(context.Background(), db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SET LOCAL lock_timeout = '5s'`); err != nil {
			return err
		}
		tag, err := tx.Exec(context.Background(), `UPDATE outbox SET last_error = 'probe' WHERE published_at IS NULL`)
		if err == nil && tag.RowsAffected() != 5 {
			t.Errorf("probe updated %d rows, want 5", tag.RowsAffected())
		}
		return err
	})
	if err != nil {
		t.Fatalf("the rows are locked while the relay waits for the broker: %v", err)
	}
	select {
	case err := <-flushed:
		t.Logf("relay call returned: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the relay call did not return within its bound while the broker socket stalled")
	}
	// After the stall the events still go out.
	proxy.Resume()
	waitTimeout(t, "every row published", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = relay.Flush(ctx)
		n, err := outbox.Pending(context.Background(), db.Pool)
		return err == nil && n == 0
	})
}

func waitTimeout(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
