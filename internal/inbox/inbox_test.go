package inbox_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/inbox"
	"github.com/checkout-demo/checkout/internal/telemetry"
	"github.com/checkout-demo/checkout/internal/testenv"
)

// schema is the table the package documents (as the services' migrations
// create it), and an effect to apply once per event.
const schema = `
CREATE TABLE inbox (
    event_id   uuid        PRIMARY KEY,
    event_type text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE effects (event_id uuid NOT NULL);`

// db is a scratch database with the schema, and a pool on it.
func db(t *testing.T) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(context.Background(), schema); err != nil {
		t.Fatal(err)
	}
	return pool
}

// apply is a consumer's handling: claim the event and, when it is fresh,
// apply its effect, in one transaction.
func apply(ctx context.Context, pool *pgxpool.Pool, id, typ string) (bool, error) {
	var fresh bool
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		if fresh, err = inbox.Claim(ctx, tx, id, typ); err != nil || !fresh {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO effects (event_id) VALUES ($1)`, id)
		return err
	})
	return fresh, err
}

// appliedOnce fails the test unless the effects table holds one row.
func appliedOnce(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if n := count(t, pool, `SELECT count(*) FROM effects`); n != 1 {
		t.Errorf("the effect was applied %d times, want once", n)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, q string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// The first claim of an id wins; every later claim of it is refused and
// changes nothing, whatever type it names; another id is claimed on its own.
func TestFirstClaimWins(t *testing.T) {
	t.Parallel()
	pool := db(t)
	ctx := context.Background()
	id, other := uuid.NewString(), uuid.NewString()
	for i, tt := range []struct {
		id, typ string
		fresh   bool
	}{{id, "OrderCreated", true}, {id, "OrderCreated", false}, {id, "PaymentProcessed", false}, {other, "OrderCreated", true}} {
		fresh, err := apply(ctx, pool, tt.id, tt.typ)
		if err != nil || fresh != tt.fresh {
			t.Fatalf("claim %d of %s (%s) = %v, %v; want %v", i+1, tt.id, tt.typ, fresh, err, tt.fresh)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM effects WHERE event_id = $1`, id); n != 1 {
		t.Errorf("the event's effect was applied %d times, want once", n)
	}
	var typ string
	if err := pool.QueryRow(ctx, `SELECT event_type FROM inbox WHERE event_id = $1`, id).Scan(&typ); err != nil || typ != "OrderCreated" {
		t.Errorf("the inbox records %q (%v), want the first claim's OrderCreated", typ, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbox`); n != 2 {
		t.Errorf("the inbox holds %d ids, want 2", n)
	}
}

// A claim is part of its transaction: rolled back with a failed effect, it
// leaves the id free, so the redelivery applies the event.
func TestRolledBackClaimLeavesTheIDFree(t *testing.T) {
	t.Parallel()
	pool := db(t)
	ctx := context.Background()
	id := uuid.NewString()
	failed := errors.New("the effect failed")
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if fresh, err := inbox.Claim(ctx, tx, id, "OrderCreated"); err != nil || !fresh {
			t.Fatalf("claim = %v, %v; want a fresh claim", fresh, err)
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatal(err)
	}
	if fresh, err := apply(ctx, pool, id, "OrderCreated"); err != nil || !fresh {
		t.Fatalf("the claim after the rollback = %v, %v; want fresh", fresh, err)
	}
	appliedOnce(t, pool)
}

// Concurrent claims of one id (a redelivery racing the first delivery on
// another replica): exactly one wins, the others are refused, none fails.
func TestConcurrentClaims(t *testing.T) {
	t.Parallel()
	pool := db(t)
	const n = 10
	id := uuid.NewString()
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		fresh = make(chan bool, n)
		errs  = make(chan error, n)
	)
	for range n {
		wg.Go(func() {
			<-start
			ok, err := apply(context.Background(), pool, id, "OrderCreated")
			fresh <- ok
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(fresh)
	close(errs)
	won := 0
	for ok := range fresh {
		if ok {
			won++
		}
	}
	for err := range errs {
		if err != nil {
			t.Errorf("a claim failed: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent claims won, want 1", won, n)
	}
	appliedOnce(t, pool)
}

// A claim that meets another's uncommitted claim of the id waits for it:
// it is refused when that commits, and wins when that rolls back.
func TestClaimWaitsForTheOpenClaim(t *testing.T) {
	t.Parallel()
	pool := db(t)
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			id := uuid.NewString()
			first, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Rollback(ctx)
			if fresh, err := inbox.Claim(ctx, first, id, "OrderCreated"); err != nil || !fresh {
				t.Fatalf("first claim = %v, %v", fresh, err)
			}
			type result struct {
				fresh bool
				err   error
			}
			second := make(chan result, 1)
			go func() {
				fresh, err := apply(ctx, pool, id, "OrderCreated")
				second <- result{fresh, err}
			}()
			// The second claim is blocked on the first's row lock.
			deadline := time.Now().Add(30 * time.Second)
			for count(t, pool, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 0 {
				select {
				case r := <-second:
					t.Fatalf("the second claim returned %v, %v while the first was open", r.fresh, r.err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatal("the second claim never waited for the first")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if commit {
				err = first.Commit(ctx)
			} else {
				err = first.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := <-second
			if r.err != nil || r.fresh == commit {
				t.Fatalf("the second claim = %v, %v after the first's %s; want fresh %v",
					r.fresh, r.err, map[bool]string{true: "commit", false: "rollback"}[commit], !commit)
			}
		})
	}
}

// An id that is no UUID is an error, not a claim.
func TestClaimOfABadID(t *testing.T) {
	t.Parallel()
	pool := db(t)
	if fresh, err := apply(context.Background(), pool, "not-a-uuid", "OrderCreated"); err == nil || fresh {
		t.Fatalf("claim of a bad id = %v, %v; want an error", fresh, err)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbox`); n != 0 {
		t.Fatalf("the inbox holds %d ids", n)
	}
}

// Under a real consumer, an event delivered three times (a republish) has
// its effect once, and the two repeats the inbox refused are counted as
// duplicates, not as handled messages.
func TestRepeatsCountedAsDuplicates(t *testing.T) {
	t.Parallel()
	pool := db(t)
	amqpURL := testenv.VHost(t)
	const queue, key = "test.inbox", "test.thing.happened"
	metrics := telemetry.NewMetrics()
	testenv.Consume(t, amqpURL, events.ConsumerConfig{Queue: queue, Bindings: []string{key}, Metrics: metrics},
		func(ctx context.Context, d events.Delivery) error {
			_, err := apply(ctx, pool, d.MessageId, d.Type)
			return err
		})

	id := uuid.NewString()
	ch := testenv.Channel(t, amqpURL)
	for range 3 {
		if err := ch.PublishWithContext(context.Background(), events.Exchange, key, true, false, amqp.Publishing{
			MessageId: id, Type: "TestThing", DeliveryMode: amqp.Persistent, Body: []byte("{}"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	handled := func(outcome string) int {
		rec := httptest.NewRecorder()
		metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		prefix := `checkout_consumer_messages_total{outcome="` + outcome + `",queue="` + queue + `"} `
		for line := range strings.Lines(rec.Body.String()) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for handled("handled")+handled("duplicate") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handled, %d duplicates of 3 deliveries", handled("handled"), handled("duplicate"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if h, d := handled("handled"), handled("duplicate"); h != 1 || d != 2 {
		t.Errorf("%d handled, %d duplicates; want 1 and 2", h, d)
	}
	appliedOnce(t, pool)
}
