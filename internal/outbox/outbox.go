// Package outbox implements the transactional outbox: a service writes the
// events it emits into its own database in the same transaction as the state
// change, and a relay publishes them to RabbitMQ with publisher confirms,
// marking a row published only after the broker confirmed it.
//
// The table it needs (each service's migrations create it):
//
//	CREATE TABLE outbox (
//	    id              bigserial PRIMARY KEY,
//	    event_id        uuid NOT NULL UNIQUE,
//	    event_type      text NOT NULL,
//	    routing_key     text NOT NULL,
//	    payload         json NOT NULL,
//	    created_at      timestamptz NOT NULL DEFAULT now(),
//	    published_at    timestamptz,
//	    attempts        int NOT NULL DEFAULT 0,
//	    next_attempt_at timestamptz NOT NULL DEFAULT now(),
//	    last_error      text
//	);
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/checkout-demo/checkout/internal/events"
)

// Add encodes the events and inserts them into the outbox within tx.
func Add(ctx context.Context, tx pgx.Tx, evs ...events.Event) error {
	for _, e := range evs {
		m, err := events.Encode(e)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO outbox (event_id, event_type, routing_key, payload) VALUES ($1, $2, $3, $4)`,
			m.ID, m.Type, m.RoutingKey, string(m.Body)); err != nil {
			return fmt.Errorf("insert outbox %s: %w", m.Type, err)
		}
	}
	return nil
}

// Relay publishes unpublished outbox rows. Several relays (one per replica)
// may run against one database: rows are claimed with FOR UPDATE SKIP LOCKED.
type Relay struct {
	pool *pgxpool.Pool
	pub  *events.Publisher
	log  *slog.Logger
	wake chan struct{}

	// Poll is how often the relay looks for rows nobody woke it for (left by
	// a crash, another replica, or a broker outage).
	Poll time.Duration
	// Batch is the most rows published per transaction.
	Batch int
	// Retention is how long published rows are kept for inspection.
	Retention time.Duration
}

// NewRelay returns a relay with default settings.
func NewRelay(pool *pgxpool.Pool, pub *events.Publisher, log *slog.Logger) *Relay {
	return &Relay{pool: pool, pub: pub, log: log, wake: make(chan struct{}, 1),
		Poll: time.Second, Batch: 200, Retention: 24 * time.Hour}
}

// Wake asks the relay to look for new rows now. It never blocks.
func (r *Relay) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes rows until ctx is done. Stop it before calling Flush.
func (r *Relay) Run(ctx context.Context) {
	tick := time.NewTicker(r.Poll)
	defer tick.Stop()
	cleanup := time.NewTicker(time.Minute)
	defer cleanup.Stop()
	brokerDown := false
	for {
		// A batch under way is finished even when ctx ends, so that a
		// shutdown's Flush finds no rows locked by a half-done batch.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		n, err := r.publishBatch(bctx)
		cancel()
		switch {
		case errors.Is(err, events.ErrNotConnected):
			if !brokerDown {
				r.log.Warn("outbox relay waiting for rabbitmq")
			}
			brokerDown = true
		case err != nil && ctx.Err() == nil:
			r.log.Error("outbox relay", "err", err)
		default:
			brokerDown = false
		}
		if err == nil && n == r.batch() && ctx.Err() == nil {
			continue // there is more
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		case <-cleanup.C:
			r.deletePublished(ctx)
		}
	}
}

// Flush publishes every row that is due, for a graceful shutdown. It stops
// at the first error.
func (r *Relay) Flush(ctx context.Context) error {
	for {
		n, err := r.publishBatch(ctx)
		if err != nil {
			return err
		}
		if n < r.batch() {
			return nil
		}
	}
}

// batch is Batch kept within what the publisher's buffer of returned
// messages holds, so a batch of unroutable events cannot stall it.
func (r *Relay) batch() int {
	return min(max(r.Batch, 1), events.MaxBatch)
}

// Pending counts the rows not yet published.
func Pending(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n)
	return n, err
}

// publishBatch claims up to Batch due rows, publishes them and marks the
// confirmed ones. It returns how many rows it claimed.
func (r *Relay) publishBatch(ctx context.Context) (int, error) {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	rows, err := tx.Query(ctx, `
		SELECT id, event_id::text, event_type, routing_key, payload::text, attempts
		FROM outbox
		WHERE published_at IS NULL AND next_attempt_at <= now()
		ORDER BY id
		LIMIT $1
		FOR UPDATE SKIP LOCKED`, r.batch())
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	var (
		ids      []int64
		attempts []int
		msgs     []events.Message
	)
	for rows.Next() {
		var (
			id   int64
			n    int
			m    events.Message
			body string
		)
		if err := rows.Scan(&id, &m.ID, &m.Type, &m.RoutingKey, &body, &n); err != nil {
			rows.Close()
			return 0, fmt.Errorf("scan outbox row: %w", err)
		}
		m.Body = []byte(body)
		ids, attempts, msgs = append(ids, id), append(attempts, n), append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}

	results, pubErr := r.pub.Publish(ctx, msgs)
	if errors.Is(pubErr, events.ErrNotConnected) {
		return 0, pubErr
	}
	var done []int64
	backoff := events.Backoff{Base: time.Second, Max: time.Minute}
	for i, res := range results {
		if res.Err == nil {
			done = append(done, ids[i])
			continue
		}
		delay := backoff.Delay(attempts[i])
		if _, err := tx.Exec(ctx, `
			UPDATE outbox SET attempts = attempts + 1, last_error = $2,
			       next_attempt_at = now() + make_interval(secs => $3)
			WHERE id = $1`, ids[i], res.Err.Error(), delay.Seconds()); err != nil {
			return 0, fmt.Errorf("record outbox failure: %w", err)
		}
		r.log.Warn("event not published", "event_id", res.ID, "routing_key", msgs[i].RoutingKey, "err", res.Err, "retry_in", delay.String())
	}
	if len(done) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE id = ANY($1)`, done); err != nil {
			return 0, fmt.Errorf("mark published: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		// The broker has the messages but the rows stay unpublished: they will
		// be sent again and consumers drop the duplicates by event id.
		return 0, fmt.Errorf("commit published: %w", err)
	}
	return len(msgs), pubErr
}

func (r *Relay) deletePublished(ctx context.Context) {
	tag, err := r.pool.Exec(ctx, `DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)`, r.Retention.Seconds())
	if err != nil {
		r.log.Warn("delete published outbox rows", "err", err)
		return
	}
	if tag.RowsAffected() > 0 {
		r.log.Info("deleted published outbox rows", "rows", tag.RowsAffected())
	}
}
