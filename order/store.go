package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/inbox"
	"github.com/checkout-demo/checkout/internal/postgres"
)

// ErrNotFound is returned for an order that does not exist.
var ErrNotFound = errors.New("order not found")

// ErrKeyReused is returned when an Idempotency-Key comes back with a
// different request.
var ErrKeyReused = errors.New("the Idempotency-Key was used before with a different request")

// Store keeps orders in Postgres.
type Store struct {
	pool *pgxpool.Pool
	ids  idBlock
	// ready reports whether the schema is in place; until then every call
	// fails with postgres.ErrNotReady (a 503), not with a missing table.
	ready func() bool
	// timeout bounds one call (waiting for a pooled connection, a lock, a
	// slow database): past it the caller gets a 503, not a hang.
	timeout time.Duration
	// key derives the orders' access tokens (access.go).
	key tokenKey
}

func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.timeout)
}

func (s *Store) check() error {
	if s.ready != nil && !s.ready() {
		return postgres.ErrNotReady
	}
	return nil
}

// Create writes the order, its items, its first timeline step and its
// OrderCreated event in one transaction. With an idempotency key, a request
// seen before returns the order it created (replayed = true) and writes
// nothing.
func (s *Store) Create(ctx context.Context, n NewOrder, key string) (o Order, replayed bool, err error) {
	if err := s.check(); err != nil {
		return Order{}, false, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if key != "" {
		if o, err := s.byKey(ctx, key, n.Hash()); !errors.Is(err, ErrNotFound) {
			return o, err == nil, err
		}
	}
	o, err = s.create(ctx, n, key)
	var pgErr *pgconn.PgError
	if key != "" && errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "orders_idempotency_key_key" {
		// A concurrent retry with the same key won the race.
		o, err = s.byKey(ctx, key, n.Hash())
		return o, err == nil, err
	}
	return o, false, err
}

func (s *Store) byKey(ctx context.Context, key, requestHash string) (Order, error) {
	var (
		id               int64
		seen             string
		nonce, tokenHash []byte
	)
	err := s.pool.QueryRow(ctx, `
		SELECT o.id, o.request_hash, a.nonce, a.token_hash
		FROM orders o LEFT JOIN order_access a ON a.order_id = o.id
		WHERE o.idempotency_key = $1`, key).Scan(&id, &seen, &nonce, &tokenHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("look up idempotency key: %w", err)
	}
	if seen != requestHash {
		return Order{}, ErrKeyReused
	}
	o, err := s.get(ctx, id) // within Create's check and timeout
	if err != nil {
		return Order{}, err
	}
	o.AccessToken, err = s.replayToken(ctx, id, nonce, tokenHash)
	return o, err
}

// create writes the order, its items, its first timeline step and its
// OrderCreated event in one statement: data-modifying CTEs run atomically,
// so no BEGIN and COMMIT round trips are needed. The id comes from a block
// reserved beforehand, so the event can be encoded (by events.Encode, the
// wire contract) before the write.
func (s *Store) create(ctx context.Context, n NewOrder, key string) (Order, error) {
	id, err := s.nextID(ctx)
	if err != nil {
		return Order{}, err
	}
	productIDs := make([]int64, len(n.Items))
	quantities := make([]int32, len(n.Items))
	prices := make([]string, len(n.Items))
	for i, it := range n.Items {
		productIDs[i], quantities[i], prices[i] = it.ProductID, int32(it.Quantity), it.Price.String()
	}
	token, nonce, tokenHash, err := s.newAccess(ctx, id)
	if err != nil {
		return Order{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	o := Order{AccessToken: token, ID: id, UserID: n.UserID, UserEmail: n.UserEmail, Status: StatusPending, TotalAmount: n.Total,
		Items: n.Items, CreatedAt: now, UpdatedAt: now, Timeline: []Step{{Step: StepCreated, At: now}}}
	m, err := events.Encode(events.OrderCreated{
		Meta:    events.NewMeta(events.TypeOrderCreated, now),
		OrderID: o.ID, UserID: o.UserID, UserEmail: o.UserEmail, TotalAmount: o.TotalAmount, Items: o.Items,
	})
	if err != nil {
		return Order{}, err
	}
	args := []any{o.ID, n.UserID, n.UserEmail, n.Total, productIDs, quantities, prices, key, hashIf(key, n), now,
		m.ID, m.Type, m.RoutingKey, string(m.Body), nonce, tokenHash, nullIfZero(n.Owner)}
	_, err = s.pool.Exec(ctx, insertOrder, args...)
	if err != nil && pgconn.SafeToRetry(err) && ctx.Err() == nil {
		// The pooled connection died before the server saw the statement
		// (the database restarted): nothing was written, so try once more.
		_, err = s.pool.Exec(ctx, insertOrder, args...)
	}
	if err != nil {
		return Order{}, fmt.Errorf("insert order: %w", err)
	}
	return o, nil
}

// insertOrder writes an order with its items, its first timeline step and
// the outbox row (the one outbox.Add would write) in one atomic statement.
const insertOrder = `
		WITH o AS (
			INSERT INTO orders (id, user_id, user_email, total_amount, idempotency_key, request_hash, created_at, updated_at)
			VALUES ($1, $2, $3, $4, nullif($8, ''), nullif($9, ''), $10, $10)
		), i AS (
			INSERT INTO order_items (order_id, line, product_id, quantity, price)
			SELECT $1, t.line, t.product_id, t.quantity, t.price
			FROM unnest($5::bigint[], $6::int[], $7::numeric[]) WITH ORDINALITY AS t(product_id, quantity, price, line)
		), s AS (
			INSERT INTO order_timeline (order_id, step, at) VALUES ($1, 'created', $10)
		), a AS (
			INSERT INTO order_access (order_id, nonce, token_hash, user_id) VALUES ($1, $15, $16, $17)
		)
		INSERT INTO outbox (event_id, event_type, routing_key, payload) VALUES ($11, $12, $13, $14)`

// idBlockSize is how many order ids one nextval reserves; the sequence's
// INCREMENT BY (migration 00003) must be the same.
const idBlockSize = 32

// idBlock hands out the ids of the block reserved last.
type idBlock struct {
	mu         sync.Mutex
	next, last int64
}

// nextID returns an unused order id, reserving a new block when the current
// one is spent. Ids of a block a crash leaves unused are skipped, as a
// sequence skips the values of rolled-back transactions.
func (s *Store) nextID(ctx context.Context) (int64, error) {
	s.ids.mu.Lock()
	defer s.ids.mu.Unlock()
	if s.ids.next == 0 || s.ids.next > s.ids.last {
		var first int64
		if err := s.pool.QueryRow(ctx, `SELECT nextval('orders_id_seq')`).Scan(&first); err != nil {
			return 0, fmt.Errorf("reserve order ids: %w", err)
		}
		s.ids.next, s.ids.last = first, first+idBlockSize-1
	}
	id := s.ids.next
	s.ids.next++
	return id, nil
}

func nullIfZero(v int64) *int64 {
	if v == 0 {
		return nil
	}
	return &v
}

func hashIf(key string, n NewOrder) string {
	if key == "" {
		return ""
	}
	return n.Hash()
}

// Get returns the order with its items and timeline.
func (s *Store) Get(ctx context.Context, id int64) (Order, error) {
	if err := s.check(); err != nil {
		return Order{}, err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.get(ctx, id)
}

// get reads the order in one snapshot, so the status and the timeline never
// disagree when a saga event lands in between.
func (s *Store) get(ctx context.Context, id int64) (Order, error) {
	var o Order
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		o, err = getOrder(ctx, tx, id)
		return err
	})
	return o, err
}

func getOrder(ctx context.Context, tx pgx.Tx, id int64) (Order, error) {
	var o Order
	err := tx.QueryRow(ctx, `
		SELECT id, user_id, user_email, status, total_amount, created_at, updated_at
		FROM orders WHERE id = $1`, id,
	).Scan(&o.ID, &o.UserID, &o.UserEmail, &o.Status, &o.TotalAmount, &o.CreatedAt, &o.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	if err != nil {
		return Order{}, fmt.Errorf("select order: %w", err)
	}
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()

	rows, err := tx.Query(ctx, `SELECT product_id, quantity, price FROM order_items WHERE order_id = $1 ORDER BY line`, id)
	if err != nil {
		return Order{}, fmt.Errorf("select items: %w", err)
	}
	o.Items, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Item, error) {
		var it Item
		err := row.Scan(&it.ProductID, &it.Quantity, &it.Price)
		return it, err
	})
	if err != nil {
		return Order{}, fmt.Errorf("select items: %w", err)
	}

	rows, err = tx.Query(ctx, `SELECT step, at FROM order_timeline WHERE order_id = $1 ORDER BY at, step`, id)
	if err != nil {
		return Order{}, fmt.Errorf("select timeline: %w", err)
	}
	o.Timeline, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Step, error) {
		var st Step
		err := row.Scan(&st.Step, &st.At)
		st.At = st.At.UTC()
		return st, err
	})
	if err != nil {
		return Order{}, fmt.Errorf("select timeline: %w", err)
	}
	return o, nil
}

// Advance applies one saga event to an order in one transaction: it claims
// the event id (a redelivered event changes nothing), moves the status only
// forward (from pending; a late or repeated event never moves an order
// backwards) and records the timeline step once. It reports whether the
// event was new.
func (s *Store) Advance(ctx context.Context, eventID, eventType string, orderID int64, to string, step string, at time.Time) (bool, error) {
	applied := false
	err := postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		fresh, err := inbox.Claim(ctx, tx, eventID, eventType)
		if err != nil || !fresh {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM orders WHERE id = $1 FOR UPDATE`, orderID).Scan(&exists); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return fmt.Errorf("lock order: %w", err)
		}
		if to != "" {
			if _, err := tx.Exec(ctx,
				`UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 AND status = 'pending'`,
				orderID, to); err != nil {
				return fmt.Errorf("update status: %w", err)
			}
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO order_timeline (order_id, step, at, event_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
			orderID, step, at, eventID); err != nil {
			return fmt.Errorf("insert timeline step: %w", err)
		}
		applied = true
		return nil
	})
	return applied, err
}
