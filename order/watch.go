package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/outbox"
	"github.com/checkout-demo/checkout/internal/postgres"
)

// watcher makes the saga end. An order that has not settled (an end state
// and its mail step) ORDER_PAYMENT_TIMEOUT after it was created, got its
// payment result or was last asked about is asked about again: its event is
// published again through the outbox with a new event id (OrderCreated
// while it waits for a payment, which payment answers with the result it
// has or charges now; OrderCancelled for a cancelled order without its
// mail). After ORDER_PAYMENT_TRIES such asks a pending order is cancelled
// (OrderCancelled: payment refunds a charge that comes after, email tells
// the customer), and an ended order whose mail step never came is left
// with a step that says so. Every step lands in the order's timeline.
type watcher struct {
	log     *slog.Logger
	store   *Store
	relay   waker
	timeout time.Duration
	tries   int
}

// run checks for due orders every fifth of the timeout (within 200 ms and
// 10 s) until ctx is done.
func (w *watcher) run(ctx context.Context) {
	every := min(max(w.timeout/5, 200*time.Millisecond), 10*time.Second)
	for {
		n, err := w.store.Watch(ctx, w.timeout, w.tries, w.log)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("saga watch", "err", err)
		}
		if n > 0 {
			w.relay.Wake()
		}
		if n == watchBatch {
			continue // there is more
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// watchBatch is the most orders one Watch pass handles.
const watchBatch = 100

// due is an unsettled order the watch acts on.
type due struct {
	id        int64
	status    string
	asks      int
	userID    int64
	userEmail string
	total     money.Amount
	createdAt time.Time
}

// Watch acts on the orders unsettled for longer than timeout, in one
// transaction (replicas share the work: SKIP LOCKED). It returns how many
// it acted on.
func (s *Store) Watch(ctx context.Context, timeout time.Duration, tries int, log *slog.Logger) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	n := 0
	var steps []string
	err := postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		steps = steps[:0]
		rows, err := tx.Query(ctx, `
			SELECT id, status, asks, user_id, user_email, total_amount, created_at FROM orders
			WHERE NOT settled AND watch_from < now() - make_interval(secs => $1)
			ORDER BY watch_from LIMIT $2 FOR UPDATE SKIP LOCKED`, timeout.Seconds(), watchBatch)
		if err != nil {
			return fmt.Errorf("select due orders: %w", err)
		}
		ds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (due, error) {
			var d due
			err := row.Scan(&d.id, &d.status, &d.asks, &d.userID, &d.userEmail, &d.total, &d.createdAt)
			return d, err
		})
		if err != nil {
			return fmt.Errorf("select due orders: %w", err)
		}
		for _, d := range ds {
			step, err := act(ctx, tx, d, tries, log)
			if err != nil {
				return err
			}
			steps = append(steps, step)
		}
		n = len(ds)
		return nil
	})
	if err == nil {
		for _, step := range steps {
			s.observe(step, time.Time{})
		}
	}
	return n, err
}

// act does the next step of one due order within tx, and returns that
// step.
func act(ctx context.Context, tx pgx.Tx, d due, tries int, log *slog.Logger) (string, error) {
	now := time.Now().UTC()
	log = log.With("order_id", d.id, "status", d.status, "asks", d.asks)
	var (
		ev     events.Event
		step   string
		update = `UPDATE orders SET asks = asks + 1, watch_from = now() WHERE id = $1`
		args   = []any{d.id}
	)
	switch {
	case d.asks < tries && d.status == StatusCancelled:
		ev, step = cancelledEvent(d, now, cancelReason(tries)), StepNoticeAskedAgain(d.asks+1)
	case d.asks < tries:
		created, err := createdEvent(ctx, tx, d, now)
		if err != nil {
			return "", err
		}
		ev, step = created, StepNoticeAskedAgain(d.asks+1)
		if d.status == StatusPending {
			step = StepAskedAgain(d.asks + 1)
		}
	case d.status == StatusPending:
		reason := cancelReason(tries)
		ev, step = cancelledEvent(d, now, reason), StepCancelled
		update = `UPDATE orders SET status = 'cancelled', cancel_reason = $2, asks = 0, watch_from = now(), updated_at = now()
			WHERE id = $1 AND status = 'pending'`
		args = append(args, reason)
	default:
		step = StepNoticeUnconfirmed
		update = `UPDATE orders SET settled = true WHERE id = $1`
	}
	if _, err := tx.Exec(ctx, update, args...); err != nil {
		return "", fmt.Errorf("order %d: %w", d.id, err)
	}
	var eventID any
	if ev != nil {
		if err := outbox.Add(ctx, tx, ev); err != nil {
			return "", err
		}
		eventID = ev.EventMeta().EventID
	}
	if _, err := addStep(ctx, tx, d.id, step, now, eventID); err != nil {
		return "", err
	}
	log.Warn("saga step", "step", step, "event_id", eventID)
	return step, nil
}

func cancelReason(tries int) string {
	return fmt.Sprintf("no payment result after %d requests", tries+1)
}

func cancelledEvent(d due, at time.Time, reason string) events.Event {
	return events.OrderCancelled{Meta: events.NewMeta(events.TypeOrderCancelled, at),
		OrderID: d.id, UserID: d.userID, UserEmail: d.userEmail, TotalAmount: d.total, Reason: reason}
}

// createdEvent is the order's OrderCreated again, under a new event id.
func createdEvent(ctx context.Context, tx pgx.Tx, d due, at time.Time) (events.Event, error) {
	items, err := selectItems(ctx, tx, d.id)
	if err != nil {
		return nil, err
	}
	return events.OrderCreated{Meta: events.NewMeta(events.TypeOrderCreated, at),
		OrderID: d.id, UserID: d.userID, UserEmail: d.userEmail, TotalAmount: d.total, Items: items}, nil
}
