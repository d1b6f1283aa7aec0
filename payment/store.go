package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/checkout-demo/checkout/internal/batch"
	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/inbox"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
)

// ErrNotFound is returned for an order without a payment.
var ErrNotFound = errors.New("payment not found")

// Store keeps payments in Postgres.
type Store struct {
	pool *pgxpool.Pool
	// ready reports whether the schema is in place; until then every call
	// fails with postgres.ErrNotReady (a 503), not with a missing table.
	ready func() bool

	// Intents and results that come together (the deliveries of one read,
	// the charges that end together) go in one pipeline: one round trip
	// and one commit for many (pipeline).
	intents  batch.Group[events.OrderCreated, intended]
	finishes batch.Group[finishing, bool]
	initOnce sync.Once
}

// init sets up the groups of the statements that go in pipelines.
func (s *Store) init() {
	s.initOnce.Do(func() {
		s.intents.Run, s.intents.Max, s.intents.Gather, s.intents.Alone = s.intendBatch, pipelineMax, pipelineGather, postgres.Refused
		s.finishes.Run, s.finishes.Max, s.finishes.Gather, s.finishes.Alone = s.finishBatch, pipelineMax, pipelineGather, postgres.Refused
	})
}

// pipelineMax is the most statements of one pipeline.
const pipelineMax = 32

// pipelineGather is how long the first call after an idle spell waits for
// the rest of its burst: the deliveries of one read, and the charges they
// started, come within a fraction of a millisecond of each other.
const pipelineGather = 2 * time.Millisecond

// pipeline runs the statements queue adds for the inputs of n (in the
// order of their order ids) in one round trip. They run in one implicit
// transaction: one commit for all, and an error is every input's (when
// the database refused one statement, the group runs each input alone).
func (s *Store) pipeline(ctx context.Context, n int, orderID func(int) int64, queue func(b *pgx.Batch, i int)) error {
	b := &pgx.Batch{}
	for _, i := range byOrder(n, orderID) {
		queue(b, i)
	}
	return postgres.Retry(ctx, func() error { return s.pool.SendBatch(ctx, b).Close() })
}

func (s *Store) check() error {
	if s.ready != nil && !s.ready() {
		return postgres.ErrNotReady
	}
	return nil
}

// What Intend found.
type intentOutcome int

const (
	intentNew        intentOutcome = iota // a new intent: charge it
	intentUnfinished                      // an intent left charging (a crash, a redelivery): finish it
	intentAnswered                        // the order has its result; it was published again
	intentNothing                         // a duplicate, or a cancelled order: nothing to do
)

const paymentColumns = `id, order_id, user_id, user_email, amount, status, coalesce(reason, ''), coalesce(provider_ref, ''),
	event_id::text, created_at, items, cancelled_at IS NOT NULL`

// scanPayment scans paymentColumns after the extra columns before them.
func scanPayment(row pgx.Row, extra ...any) (Payment, error) {
	var p Payment
	err := row.Scan(append(extra, &p.ID, &p.OrderID, &p.UserID, &p.UserEmail, &p.Amount, &p.Status, &p.Reason, &p.ProviderRef,
		&p.EventID, &p.CreatedAt, &p.Items, &p.Cancelled)...)
	p.CreatedAt = p.CreatedAt.UTC()
	return p, err
}

// lockPayment reads the order's payment and locks it for the transaction.
func lockPayment(ctx context.Context, tx pgx.Tx, orderID int64) (Payment, error) {
	p, err := scanPayment(tx.QueryRow(ctx, `SELECT `+paymentColumns+` FROM payments WHERE order_id = $1 FOR UPDATE`, orderID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	if err != nil {
		return Payment{}, fmt.Errorf("lock payment: %w", err)
	}
	return p, nil
}

// Intend writes the order's payment intent (status charging) and claims
// the event in one transaction of one round trip (intend_payment of the
// migrations), committed before the provider is called. When the order has
// a payment already it says what to do instead: finish an intent left
// charging, or (for a new event id: the saga asking again) publish the
// result it has once more, with a new event id.
func (s *Store) Intend(ctx context.Context, ev events.OrderCreated) (Payment, intentOutcome, error) {
	if err := s.check(); err != nil {
		return Payment{}, intentNothing, err
	}
	if ev.Items == nil {
		ev.Items = []events.Item{} // a JSON array, not null
	}
	s.init()
	in, err := s.intents.Do(ctx, ev)
	fresh, inserted, p := in.fresh, in.inserted, in.p
	if err != nil {
		return Payment{}, intentNothing, fmt.Errorf("insert payment intent: %w", err)
	}
	if !fresh {
		events.MarkDuplicate(ctx) // counted as a duplicate the inbox dropped
	}
	switch {
	case inserted:
		return p, intentNew, nil
	case p.Status == StatusCharging:
		return p, intentUnfinished, nil
	case fresh && (p.Status == StatusSucceeded || p.Status == StatusDeclined):
		return p, intentAnswered, s.answerAgain(ctx, ev)
	}
	return p, intentNothing, nil
}

// byOrder is the indexes 0..n-1 in the order of their order ids: the
// pipelines of two replicas take their rows' locks in the same order, so
// they never wait on each other in a circle.
func byOrder(n int, orderID func(int) int64) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(orderID(a), orderID(b)) })
	return idx
}

// intended is what intend_payment said.
type intended struct {
	fresh, inserted bool
	p               Payment
}

// intendBatch writes the intents of evs in one pipeline.
func (s *Store) intendBatch(ctx context.Context, evs []events.OrderCreated) ([]batch.Result[intended], error) {
	out := make([]batch.Result[intended], len(evs))
	queue := func(b *pgx.Batch, i int) {
		ev := evs[i]
		b.Queue(`SELECT * FROM intend_payment($1, $2, $3, $4, $5, $6, $7)`,
			ev.EventID, ev.EventType, ev.OrderID, ev.UserID, ev.UserEmail, ev.TotalAmount, ev.Items).QueryRow(func(row pgx.Row) error {
			// A row this side cannot read is that input's error alone:
			// the pipeline still commits (the retry finds the intent).
			r := &out[i]
			r.Out.p, r.Err = scanPayment(row, &r.Out.fresh, &r.Out.inserted)
			return nil
		})
	}
	if err := s.pipeline(ctx, len(evs), func(i int) int64 { return evs[i].OrderID }, queue); err != nil {
		return nil, err
	}
	return out, nil
}

// answerAgain claims an event that asks for a result the order has, and
// writes that result again under a new event id, in one transaction.
func (s *Store) answerAgain(ctx context.Context, ev events.OrderCreated) error {
	return postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		fresh, err := inbox.Claim(ctx, tx, ev.EventID, ev.EventType)
		if err != nil || !fresh {
			return err
		}
		p, err := lockPayment(ctx, tx, ev.OrderID)
		if err != nil {
			return err
		}
		return outbox.Add(ctx, tx, resultEvent(p, time.Now()))
	})
}

// Finish records the provider's answer for a payment still charging
// (found=false: the provider never charged it, for an order cancelled
// before it was) and writes the event that says so, in one transaction.
// A payment whose order was cancelled meanwhile is refunded at once and
// announces only its refund. changed is false when another handler
// finished it first.
func (s *Store) Finish(ctx context.Context, p Payment, d Decision, found bool, provider Provider) (_ Payment, changed bool, err error) {
	if found && !p.Cancelled {
		// The usual case, in one round trip; the rest in a transaction.
		if q, changed, err := s.finishAtOnce(ctx, p, d); err != nil || changed {
			return q, changed, err
		}
	}
	orderID := p.OrderID
	err = postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if p, err = lockPayment(ctx, tx, orderID); err != nil {
			return err
		}
		if p.Status != StatusCharging {
			return nil
		}
		var ev events.Event
		p.ProviderRef = d.Ref
		switch {
		case !found:
			p.Status, p.Reason = StatusCancelled, "the order was cancelled before it was charged"
		case !d.Approved:
			p.Status, p.Reason = StatusDeclined, d.Reason
			if !p.Cancelled {
				ev = resultEvent(p, time.Now())
			}
		case p.Cancelled:
			if err := provider.Refund(ctx, orderID); err != nil {
				return err
			}
			p.Status, p.Reason = StatusRefunded, "the order was cancelled before its charge was known"
			ev = refundEvent(p)
		default:
			p.Status = StatusSucceeded
			ev = resultEvent(p, time.Now())
		}
		if _, err := tx.Exec(ctx, `
			UPDATE payments SET status = $2, reason = nullif($3, ''), provider_ref = nullif($4, ''), updated_at = now(),
			       refunded_at = CASE WHEN $2 = 'refunded' THEN now() END
			WHERE order_id = $1`, orderID, p.Status, p.Reason, p.ProviderRef); err != nil {
			return fmt.Errorf("record payment: %w", err)
		}
		changed = true
		if ev == nil {
			return nil
		}
		return outbox.Add(ctx, tx, ev)
	})
	return p, changed, err
}

// finishAtOnce records the provider's answer for p, charging and not
// cancelled, with its result event, in one statement. It reports false
// when the payment was not charging or its order was cancelled meanwhile:
// Finish's transaction then sees to it.
func (s *Store) finishAtOnce(ctx context.Context, p Payment, d Decision) (Payment, bool, error) {
	p.ProviderRef, p.Status, p.Reason = d.Ref, StatusSucceeded, ""
	if !d.Approved {
		p.Status, p.Reason = StatusDeclined, d.Reason
	}
	m, err := events.Encode(resultEvent(p, time.Now()))
	if err != nil {
		return p, false, err
	}
	args := outbox.Row(ctx, m)
	args["order_id"], args["status"], args["reason"], args["ref"] = p.OrderID, p.Status, p.Reason, p.ProviderRef
	s.init()
	changed, err := s.finishes.Do(ctx, finishing{args: args, orderID: p.OrderID})
	if err != nil {
		return p, false, fmt.Errorf("record payment: %w", err)
	}
	return p, changed, nil
}

// finishing is one finishAtOnce: the statement's named arguments (the
// payment's new state and outbox.Row's for its event) and its order.
type finishing struct {
	args    pgx.NamedArgs
	orderID int64
}

// finishBatch records the results of fs in one pipeline; each reports
// whether its payment was charging and not cancelled (and so recorded).
func (s *Store) finishBatch(ctx context.Context, fs []finishing) ([]batch.Result[bool], error) {
	out := make([]batch.Result[bool], len(fs))
	queue := func(b *pgx.Batch, i int) {
		b.Queue(`
		WITH p AS (
			UPDATE payments SET status = @status, reason = nullif(@reason, ''), provider_ref = nullif(@ref, ''), updated_at = now()
			WHERE order_id = @order_id AND status = 'charging' AND cancelled_at IS NULL RETURNING 1
		) `+outbox.InsertFrom("p"), fs[i].args).Exec(func(tag pgconn.CommandTag) error {
			out[i] = batch.Result[bool]{Out: tag.RowsAffected() == 1}
			return nil
		})
	}
	if err := s.pipeline(ctx, len(fs), func(i int) int64 { return fs[i].orderID }, queue); err != nil {
		return nil, err
	}
	return out, nil
}

// Cancel applies an OrderCancelled: a succeeded charge is refunded (and
// PaymentRefunded written), a charge under way is marked so that Finish
// refunds it, and an order without a payment gets a cancelled tombstone.
func (s *Store) Cancel(ctx context.Context, ev events.OrderCancelled, provider Provider) (p Payment, refunded bool, err error) {
	err = postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		fresh, err := inbox.Claim(ctx, tx, ev.EventID, ev.EventType)
		if err != nil || !fresh {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO payments (order_id, user_id, user_email, amount, status, reason, event_id, cancelled_at)
			VALUES ($1, $2, $3, $4, 'cancelled', 'the order was cancelled before it was charged', $5, now())
			ON CONFLICT (order_id) DO UPDATE SET cancelled_at = coalesce(payments.cancelled_at, now()), updated_at = now()`,
			ev.OrderID, ev.UserID, ev.UserEmail, ev.TotalAmount, ev.EventID); err != nil {
			return fmt.Errorf("record cancellation: %w", err)
		}
		if p, err = lockPayment(ctx, tx, ev.OrderID); err != nil {
			return err
		}
		if p.Status != StatusSucceeded {
			return nil
		}
		if err := provider.Refund(ctx, ev.OrderID); err != nil {
			return err
		}
		p.Status, p.Reason = StatusRefunded, "the order was cancelled: "+ev.Reason
		if _, err := tx.Exec(ctx, `
			UPDATE payments SET status = 'refunded', reason = $2, refunded_at = now(), updated_at = now() WHERE order_id = $1`,
			ev.OrderID, p.Reason); err != nil {
			return fmt.Errorf("record refund: %w", err)
		}
		refunded = true
		return outbox.Add(ctx, tx, refundEvent(p))
	})
	return p, refunded, err
}

// Unfinished returns the payments left charging for longer than age.
func (s *Store) Unfinished(ctx context.Context, age time.Duration) ([]Payment, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+paymentColumns+` FROM payments
		WHERE status = 'charging' AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT 500`, age.Seconds())
	if err != nil {
		return nil, fmt.Errorf("select unfinished payments: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Payment, error) { return scanPayment(row) })
}

func resultEvent(p Payment, at time.Time) events.Event {
	if p.Status == StatusSucceeded {
		return events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, at), PaymentID: p.ID,
			OrderID: p.OrderID, UserID: p.UserID, UserEmail: p.UserEmail, TotalAmount: p.Amount, Items: p.Items}
	}
	return events.PaymentFailed{Meta: events.NewMeta(events.TypePaymentFailed, at), PaymentID: p.ID,
		OrderID: p.OrderID, UserID: p.UserID, UserEmail: p.UserEmail, TotalAmount: p.Amount, Items: p.Items, Reason: p.Reason}
}

func refundEvent(p Payment) events.Event {
	return events.PaymentRefunded{Meta: events.NewMeta(events.TypePaymentRefunded, time.Now()), PaymentID: p.ID,
		OrderID: p.OrderID, TotalAmount: p.Amount, Reason: p.Reason}
}

// ByOrder returns the payment of an order.
func (s *Store) ByOrder(ctx context.Context, orderID int64) (Payment, error) {
	if err := s.check(); err != nil {
		return Payment{}, err
	}
	p, err := scanPayment(s.pool.QueryRow(ctx, `SELECT `+paymentColumns+` FROM payments WHERE order_id = $1`, orderID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	if err != nil {
		return Payment{}, fmt.Errorf("select payment: %w", err)
	}
	return p, nil
}
