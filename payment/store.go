package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
}

func (s *Store) check() error {
	if s.ready != nil && !s.ready() {
		return postgres.ErrNotReady
	}
	return nil
}

// Handled reports whether the event, or any event for the order, was
// handled already; it lets a duplicate skip the provider call.
func (s *Store) Handled(ctx context.Context, eventID string, orderID int64) (bool, error) {
	var done bool
	err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM inbox WHERE event_id = $1)
		    OR EXISTS (SELECT 1 FROM payments WHERE order_id = $2)`, eventID, orderID).Scan(&done)
	if err != nil {
		return false, fmt.Errorf("check inbox: %w", err)
	}
	return done, nil
}

// Record writes the payment, the inbox entry and the outgoing event in one
// transaction. It reports created=false, and writes nothing, when the event
// or the order was handled before.
func (s *Store) Record(ctx context.Context, ev events.OrderCreated, d Decision) (Payment, bool, error) {
	p := Payment{OrderID: ev.OrderID, UserID: ev.UserID, UserEmail: ev.UserEmail, Amount: ev.TotalAmount,
		Status: StatusSucceeded, ProviderRef: d.Ref, EventID: ev.EventID}
	if !d.Approved {
		p.Status, p.Reason = StatusDeclined, d.Reason
	}
	created := false
	err := postgres.InTx(ctx, s.pool, func(tx pgx.Tx) error {
		fresh, err := inbox.Claim(ctx, tx, ev.EventID, ev.EventType)
		if err != nil || !fresh {
			return err
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO payments (order_id, user_id, user_email, amount, status, reason, provider_ref, event_id)
			VALUES ($1, $2, $3, $4, $5, nullif($6, ''), $7, $8)
			ON CONFLICT (order_id) DO NOTHING
			RETURNING id, created_at`,
			p.OrderID, p.UserID, p.UserEmail, p.Amount, p.Status, p.Reason, p.ProviderRef, p.EventID,
		).Scan(&p.ID, &p.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // the order was paid through another event id
		}
		if err != nil {
			return fmt.Errorf("insert payment: %w", err)
		}
		p.CreatedAt = p.CreatedAt.UTC()
		created = true
		return outbox.Add(ctx, tx, resultEvent(p, ev.Items, p.CreatedAt))
	})
	return p, created, err
}

func resultEvent(p Payment, items []events.Item, at time.Time) events.Event {
	if p.Status == StatusSucceeded {
		return events.PaymentProcessed{Meta: events.NewMeta(events.TypePaymentProcessed, at), PaymentID: p.ID,
			OrderID: p.OrderID, UserID: p.UserID, UserEmail: p.UserEmail, TotalAmount: p.Amount, Items: items}
	}
	return events.PaymentFailed{Meta: events.NewMeta(events.TypePaymentFailed, at), PaymentID: p.ID,
		OrderID: p.OrderID, UserID: p.UserID, UserEmail: p.UserEmail, TotalAmount: p.Amount, Items: items, Reason: p.Reason}
}

// ByOrder returns the payment of an order.
func (s *Store) ByOrder(ctx context.Context, orderID int64) (Payment, error) {
	if err := s.check(); err != nil {
		return Payment{}, err
	}
	var p Payment
	err := s.pool.QueryRow(ctx, `
		SELECT id, order_id, user_id, user_email, amount, status, coalesce(reason, ''), provider_ref, event_id::text, created_at
		FROM payments WHERE order_id = $1`, orderID,
	).Scan(&p.ID, &p.OrderID, &p.UserID, &p.UserEmail, &p.Amount, &p.Status, &p.Reason, &p.ProviderRef, &p.EventID, &p.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	if err != nil {
		return Payment{}, fmt.Errorf("select payment: %w", err)
	}
	p.CreatedAt = p.CreatedAt.UTC()
	return p, nil
}
