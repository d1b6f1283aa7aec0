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
//	    next_attempt_at timestamptz NOT NULL DEFAULT now(), -- also the claim's lease
//	    last_error      text,
//	    trace_context   text -- the writer's trace context (telemetry.EncodeTraceContext)
//	);
//	CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
//	CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
//	CREATE INDEX inbox_handled_at ON inbox (handled_at); -- for the inbox clean-up
package outbox

import (
	"github.com/checkout-demo/checkout/internal/backoff"

	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/telemetry"
)

// Add encodes the events and inserts them into the outbox within tx, with
// the trace context of ctx, so that the relay publishes them in its trace.
func Add(ctx context.Context, tx pgx.Tx, evs ...events.Event) error {
	for _, e := range evs {
		m, err := events.Encode(e)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, Insert, Row(ctx, m)); err != nil {
			return fmt.Errorf("insert outbox %s: %w", m.Type, err)
		}
	}
	return nil
}

// Insert is the statement that writes one outbox row, with the named
// arguments Row gives (InsertMany writes many in one go).
const Insert = insertInto + ` VALUES (` + rowValues + `)`

// InsertFrom is Insert writing the row once for each row of source (a CTE
// of the same statement): none when source is empty.
func InsertFrom(source string) string { return insertInto + ` SELECT ` + rowValues + ` FROM ` + source }

const (
	insertInto = `INSERT INTO outbox (event_id, event_type, routing_key, payload, trace_context)`
	rowValues  = `@event_id::uuid, @event_type::text, @routing_key::text, @payload::json, nullif(@trace_context::text, '')`
)

// InsertMany is the statement that writes the messages ManyArgs gives,
// one row each, in their order, from the positional parameters $first to
// $first+4; a statement that writes many of its own rows in one go (the
// order service's checkouts that share a commit) ends its CTEs with it.
// Every parameter is a text array, cast by the server: pgx encoding five
// rows' ids as uuid[] and payloads as json[] took it about 9 µs, as
// text[] under 2 (order's BenchmarkInsertArgs measures the whole
// statement's arguments).
func InsertMany(first int) string {
	return fmt.Sprintf(insertInto+`
	SELECT e::uuid, t, k, p::json, nullif(c, '') FROM unnest($%d::text[], $%d::text[], $%d::text[], $%d::text[], $%d::text[]) AS m(e, t, k, p, c)`,
		first, first+1, first+2, first+3, first+4)
}

// ManyArgs is the five parameters of InsertMany for ms, in order. A
// message's TraceContext is the one its row is written under (Under).
func ManyArgs(ms []events.Message) []any {
	ids, types, keys, payloads, traces := make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms))
	for i, m := range ms {
		ids[i], types[i], keys[i], payloads[i], traces[i] = m.ID, m.Type, m.RoutingKey, string(m.Body), m.TraceContext
	}
	return []any{ids, types, keys, payloads, traces}
}

// Under is m to be written under the trace context of ctx (for ManyArgs).
func Under(ctx context.Context, m events.Message) events.Message {
	m.TraceContext = telemetry.EncodeTraceContext(ctx)
	return m
}

// Row is the named arguments of Insert for m, written under the trace
// context of ctx. A caller may add its own (other names) to the map.
func Row(ctx context.Context, m events.Message) pgx.NamedArgs {
	return pgx.NamedArgs{"event_id": m.ID, "event_type": m.Type, "routing_key": m.RoutingKey, "payload": string(m.Body),
		"trace_context": telemetry.EncodeTraceContext(ctx)}
}

// Relay publishes unpublished outbox rows. Several relays (one per replica)
// may run against one database: rows are claimed with FOR UPDATE SKIP LOCKED
// in one short statement that leases them (next_attempt_at moves past the
// lease), so no transaction stays open while the relay talks to the broker.
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
	// Linger is the least time between the starts of two batches. When
	// the relay was idle for longer, a new row is published at once; while
	// rows keep coming, they gather for up to Linger and go out together,
	// one transaction and one confirm round trip for many.
	Linger time.Duration
	// MarkDelay is how long the marks of a batch's confirmed rows may wait
	// to ride on the next claim: while rows keep coming, a batch costs
	// one statement (mark the last, claim the next) instead of two. When
	// nothing comes within MarkDelay, the marks go on their own. A relay
	// that crashes with marks waiting has their rows published again after
	// the lease; the consumers drop the duplicates by event id.
	MarkDelay time.Duration
	// PublishTimeout bounds one batch's publishes and confirms.
	PublishTimeout time.Duration
	// CleanupInterval is how often published outbox rows past Retention
	// and inbox ids past InboxRetention are deleted, whatever the load.
	CleanupInterval time.Duration
	// Vacuum names the service's own tables that churn (rows updated as
	// the saga moves on). While the server's autovacuum is off, each
	// clean-up vacuums them with the outbox and the inbox, so that dead
	// rows do not pile up and slow every scan; with autovacuum on, the
	// server does it.
	Vacuum []string
	// InboxRetention is how long consumed event ids stay in the inbox
	// table; 0 leaves the inbox alone.
	InboxRetention time.Duration

	// marks are the ids of rows confirmed by the broker and not yet marked
	// published (see MarkDelay). Only the goroutine that publishes uses it.
	marks []int64
}

// NewRelay returns a relay with default settings.
func NewRelay(pool *pgxpool.Pool, pub *events.Publisher, log *slog.Logger) *Relay {
	return &Relay{pool: pool, pub: pub, log: log, wake: make(chan struct{}, 1),
		Poll: time.Second, Batch: 200, Retention: 24 * time.Hour, Linger: 50 * time.Millisecond, MarkDelay: 200 * time.Millisecond,
		PublishTimeout: events.CallTimeout, CleanupInterval: time.Minute, InboxRetention: 7 * 24 * time.Hour}
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
	cleaned := make(chan struct{})
	go func() { defer close(cleaned); r.cleanup(ctx) }()
	defer func() { <-cleaned }()
	brokerDown := false
	var lastStart time.Time
	for {
		// Adaptive batching: right after a batch, rows that keep coming
		// wait out the rest of Linger and go out together; after an idle
		// spell the first row goes at once.
		if wait := r.Linger - time.Since(lastStart); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		lastStart = time.Now()
		// A batch under way is finished even when ctx ends, so that a
		// shutdown's Flush finds every claimed row marked.
		n, err := r.publishBatch(context.WithoutCancel(ctx))
		switch {
		case errors.Is(err, events.ErrNotConnected):
			if !brokerDown {
				r.log.Warn("outbox relay waiting for rabbitmq", "err", err)
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
		if n == 0 {
			lastStart = time.Time{} // nothing was there: the next row is not part of a busy spell
		}
		var markNow <-chan time.Time
		if len(r.marks) > 0 {
			markNow = time.After(r.MarkDelay)
		}
		select {
		case <-ctx.Done():
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := r.markWaiting(mctx); err != nil {
				// Those rows are published again after the lease.
				r.log.Warn("mark published rows at shutdown", "rows", len(r.marks), "err", err)
			}
			cancel()
			return
		case <-r.wake:
		case <-tick.C:
		case <-markNow:
			// Nothing came to carry the marks: the claim goes with them
			// alone (and takes what came in the meantime).
		}
	}
}

// markWaiting marks the rows whose marks wait for the next claim.
func (r *Relay) markWaiting(ctx context.Context) error {
	if len(r.marks) == 0 {
		return nil
	}
	b := bookkeeping()
	b.Queue(markPublished, r.marks)
	if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("mark published: %w", err)
	}
	r.marks = r.marks[:0]
	return nil
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
			return r.markWaiting(ctx)
		}
	}
}

// markPublished marks the rows $1 published.
const markPublished = `UPDATE outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL`

// bookkeeping is a batch for the relay's own statements (claims, marks,
// backoffs): they run in one transaction (the batch's, up to its one Sync)
// that commits without waiting for its WAL to reach the disk. What such a
// transaction writes is at-least-once bookkeeping: if the server crashes
// before the WAL writer (or the next durable commit) flushes it, a lease
// or a mark is lost and the row is published again, which the consumers
// drop by event id; the rows' own content was committed durably by the
// transaction that wrote it. So no batch waits for a disk flush: the WAL
// writer (within wal_writer_delay) or the next durable commit flushes it.
func bookkeeping() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	return b
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

// Stats returns the query of the outbox's backlog for
// telemetry.Metrics.RegisterOutbox: the rows not yet published and the age
// of the oldest (the relay's lag; it grows while RabbitMQ is away).
func Stats(pool *pgxpool.Pool) func(ctx context.Context) (telemetry.OutboxStats, error) {
	return func(ctx context.Context) (telemetry.OutboxStats, error) {
		var (
			s   telemetry.OutboxStats
			age float64
		)
		err := pool.QueryRow(ctx, `
			SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
			FROM outbox WHERE published_at IS NULL`).Scan(&s.Pending, &age)
		s.OldestAge = time.Duration(age * float64(time.Second))
		return s, err
	}
}

// Lease is how long a claimed row is left to the relay that claimed it:
// past it (that relay crashed or hung between claim and mark) another
// relay publishes it again and the consumers drop the duplicate.
func (r *Relay) lease() time.Duration { return max(3*r.PublishTimeout, 30*time.Second) }

// publishBatch claims up to Batch due rows, publishes them and marks the
// confirmed ones. It returns how many rows it claimed. No transaction is
// open while it talks to the broker: the claim is one short statement that
// leases the rows (next_attempt_at moves past the lease) and marks the last
// batch's confirmed rows; this batch's marks wait for the next claim (or,
// when a row was refused, go at once in a statement of their own).
func (r *Relay) publishBatch(ctx context.Context) (int, error) {
	dbctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The claim carries the marks of the last batch (see MarkDelay): the
	// rows it marks are leased, so it cannot claim them too.
	marks := r.marks
	if marks == nil {
		// A nil slice goes as NULL, and NOT id = ANY(NULL) is NULL: the
		// claim would take nothing.
		marks = []int64{}
	}
	b := bookkeeping()
	b.Queue(`
		WITH marked AS (
			UPDATE outbox SET published_at = now() WHERE id = ANY($3) AND published_at IS NULL)
		UPDATE outbox SET next_attempt_at = now() + make_interval(secs => $2)
		WHERE id IN (
			SELECT id FROM outbox
			WHERE published_at IS NULL AND next_attempt_at <= now() AND NOT id = ANY($3)
			ORDER BY id
			LIMIT $1
			FOR UPDATE SKIP LOCKED)
		RETURNING id, event_id::text, event_type, routing_key, payload::text, attempts, coalesce(trace_context, '')`, r.batch(), r.lease().Seconds(), marks)
	br := r.pool.SendBatch(dbctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	type claimed struct {
		id       int64
		attempts int
		msg      events.Message
	}
	var batch []claimed
	for rows.Next() {
		var (
			c    claimed
			body string
		)
		if err := rows.Scan(&c.id, &c.msg.ID, &c.msg.Type, &c.msg.RoutingKey, &body, &c.attempts, &c.msg.TraceContext); err != nil {
			rows.Close()
			return 0, fmt.Errorf("scan outbox row: %w", err)
		}
		c.msg.Body = []byte(body)
		batch = append(batch, c)
	}
	if err := errors.Join(rows.Err(), br.Close()); err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	r.marks = r.marks[:0] // the statement succeeded: they are marked
	if len(batch) == 0 {
		return 0, nil
	}
	slices.SortFunc(batch, func(a, b claimed) int { return cmp.Compare(a.id, b.id) })
	ids := make([]int64, len(batch))
	msgs := make([]events.Message, len(batch))
	for i, c := range batch {
		ids[i], msgs[i] = c.id, c.msg
	}

	pctx, cancelPub := context.WithTimeout(ctx, r.PublishTimeout)
	results, pubErr := r.pub.Publish(pctx, msgs)
	cancelPub()
	mctx, cancelMark := context.WithTimeout(ctx, 30*time.Second)
	defer cancelMark()
	var (
		done, failIDs, released []int64
		failErrs                []string
		failDelays              []float64
		bo                      = backoff.Backoff{Base: time.Second, Max: time.Minute}
	)
	for i, res := range results {
		switch {
		case res.Err == nil:
			done = append(done, ids[i])
		case errors.Is(res.Err, events.ErrNotConnected):
			// The broker is away or stalled: not the event's fault. The row
			// is handed back at once, so it goes out as soon as the broker
			// is back instead of after the lease.
			released = append(released, ids[i])
		default:
			delay := bo.Delay(batch[i].attempts)
			failIDs, failErrs, failDelays = append(failIDs, ids[i]), append(failErrs, res.Err.Error()), append(failDelays, delay.Seconds())
			r.log.Warn("event not published", "event_id", res.ID, "routing_key", msgs[i].RoutingKey, "err", res.Err, "retry_in", delay.String())
		}
	}
	if len(failIDs) == 0 && len(released) == 0 {
		// No row to hand back: the marks of the confirmed ones ride on the
		// next claim.
		r.marks = append(r.marks, done...)
		if len(done) == 0 && errors.Is(pubErr, events.ErrNotConnected) {
			return 0, pubErr
		}
		return len(msgs), pubErr
	}
	// Trouble: one round trip marks the batch at once, the confirmed rows
	// published, the others due again after their backoff. If it fails,
	// the rows stay leased and are published again after the lease;
	// consumers drop the duplicates by event id.
	b = bookkeeping()
	if len(done) > 0 {
		b.Queue(markPublished, done)
	}
	if len(failIDs) > 0 {
		b.Queue(`
			UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.err,
			       next_attempt_at = now() + make_interval(secs => f.delay)
			FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS f(id, err, delay)
			WHERE o.id = f.id`, failIDs, failErrs, failDelays)
	}
	if len(released) > 0 {
		b.Queue(`UPDATE outbox SET next_attempt_at = now() WHERE id = ANY($1)`, released)
	}
	if err := r.pool.SendBatch(mctx, b).Close(); err != nil {
		return 0, fmt.Errorf("mark published: %w", err)
	}
	if len(done) == 0 && errors.Is(pubErr, events.ErrNotConnected) {
		return 0, pubErr
	}
	return len(msgs), pubErr
}

// cleanupBatch is the most rows one clean-up statement deletes: short
// statements that never hold many locks, repeated until nothing is left.
const cleanupBatch = 2000

// cleanup deletes, every CleanupInterval, published outbox rows older than
// Retention and inbox ids older than InboxRetention. It runs on its own
// timer, so a relay that is always busy still cleans up.
func (r *Relay) cleanup(ctx context.Context) {
	interval := r.CleanupInterval
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.Cleanup(ctx)
	}
}

// Cleanup deletes what is past its retention once, in batches: published
// outbox rows, and (when InboxRetention is set) old inbox ids; then, while
// the server's autovacuum is off, it vacuums the tables that churn.
func (r *Relay) Cleanup(ctx context.Context) {
	for _, c := range []struct {
		what      string
		sql       string
		retention time.Duration
	}{
		{"published outbox rows", `
		DELETE FROM outbox WHERE id IN (
			SELECT id FROM outbox
			WHERE published_at < now() - make_interval(secs => $1)
			ORDER BY published_at LIMIT $2)`, r.Retention},
		{"old inbox ids", `
		DELETE FROM inbox WHERE event_id IN (
			SELECT event_id FROM inbox
			WHERE handled_at < now() - make_interval(secs => $1)
			ORDER BY handled_at LIMIT $2)`, r.InboxRetention},
	} {
		if c.retention <= 0 {
			continue
		}
		deleted, err := deleteInBatches(ctx, r.pool, c.sql, c.retention.Seconds())
		if err != nil {
			r.log.Warn("delete "+c.what, "err", err)
		} else if deleted > 0 {
			r.log.Info("deleted "+c.what, "rows", deleted)
		}
	}
	if err := r.vacuum(ctx); err != nil {
		r.log.Warn("vacuum the tables that churn", "err", err)
	}
}

// vacuum vacuums the outbox, the inbox and Vacuum's tables when the
// server's autovacuum is off.
func (r *Relay) vacuum(ctx context.Context) error {
	var off bool
	if err := r.pool.QueryRow(ctx, `SELECT NOT current_setting('autovacuum')::bool`).Scan(&off); err != nil || !off {
		return err
	}
	tables := []string{"outbox", "inbox"}
	for _, t := range r.Vacuum {
		tables = append(tables, pgx.Identifier{t}.Sanitize())
	}
	_, err := r.pool.Exec(ctx, `VACUUM (ANALYZE) `+strings.Join(tables, ", "))
	return err
}

func deleteInBatches(ctx context.Context, pool *pgxpool.Pool, sql string, olderThan float64) (int64, error) {
	var total int64
	for ctx.Err() == nil {
		tag, err := pool.Exec(ctx, sql, olderThan, cleanupBatch)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < cleanupBatch {
			break
		}
	}
	return total, nil
}
