package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
	"github.com/checkout-demo/checkout/internal/telemetry"
)

// Payment statuses. A payment is written as charging (the intent) and
// committed before the provider is called; the provider's answer makes it
// succeeded or declined. A succeeded payment of a cancelled order becomes
// refunded; an order cancelled before anything was charged leaves a
// cancelled tombstone, so that a late OrderCreated charges nothing.
const (
	StatusCharging  = "charging"
	StatusSucceeded = "succeeded"
	StatusDeclined  = "declined"
	StatusRefunded  = "refunded"
	StatusCancelled = "cancelled"
)

// Payment is the charge of one order; there is at most one per order.
type Payment struct {
	ID          int64         `json:"id"`
	OrderID     int64         `json:"order_id"`
	UserID      int64         `json:"user_id"`
	UserEmail   string        `json:"user_email"`
	Amount      money.Amount  `json:"amount"`
	Status      string        `json:"status"`
	Reason      string        `json:"reason,omitempty"`
	ProviderRef string        `json:"provider_ref,omitempty"`
	EventID     string        `json:"event_id"`
	CreatedAt   time.Time     `json:"created_at"`
	Items       []events.Item `json:"-"`
	// Cancelled is set once the order's OrderCancelled arrived.
	Cancelled bool `json:"cancelled,omitempty"`
}

// Decision is the provider's answer.
type Decision struct {
	Approved bool
	Reason   string
	Ref      string
}

// Provider simulates a payment provider. It is idempotent on its key (the
// order id): the same key always gets the same decision and reference, as a
// real provider's idempotency keys promise, and it keeps its own ledger
// (provider_ledger, standing for the provider's side) of what it charged
// and refunded, whatever the payment service manages to record after.
type Provider struct {
	Delay       time.Duration
	MaxAmount   money.Amount
	FailureRate float64
	// Ledger, when set, records every charge and refund; without it the
	// provider only decides (unit tests).
	Ledger *pgxpool.Pool
}

// Charge waits Delay, then approves or declines, and records the charge in
// its ledger. Declines are deterministic: an amount above MaxAmount is
// declined, and FailureRate declines the share of keys whose hash falls
// below it. A key charged before gets its first answer back.
func (p Provider) Charge(ctx context.Context, key int64, amount money.Amount) (Decision, error) {
	select {
	case <-ctx.Done():
		return Decision{}, fmt.Errorf("payment provider: %w", ctx.Err())
	case <-time.After(p.Delay):
	}
	d := p.decide(key, amount)
	if p.Ledger == nil {
		return d, nil
	}
	// A key charged before keeps its first answer (the no-op update makes
	// RETURNING give the stored row).
	if err := p.Ledger.QueryRow(ctx, `
		INSERT INTO provider_ledger (key, amount, approved, reason, ref) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
		RETURNING approved, reason, ref`, key, amount, d.Approved, d.Reason, d.Ref).Scan(&d.Approved, &d.Reason, &d.Ref); err != nil {
		return Decision{}, fmt.Errorf("payment provider: charge: %w", err)
	}
	return d, nil
}

// Lookup asks the provider what it did with key: found is false when it
// never charged it.
func (p Provider) Lookup(ctx context.Context, key int64) (d Decision, found bool, err error) {
	if p.Ledger == nil {
		return Decision{}, false, nil
	}
	err = p.Ledger.QueryRow(ctx, `SELECT approved, reason, ref FROM provider_ledger WHERE key = $1`, key).
		Scan(&d.Approved, &d.Reason, &d.Ref)
	if errors.Is(err, pgx.ErrNoRows) {
		return Decision{}, false, nil
	}
	if err != nil {
		return Decision{}, false, fmt.Errorf("payment provider: look up %d: %w", key, err)
	}
	return d, true, nil
}

// Refund gives back the charge of key; refunding twice refunds once.
func (p Provider) Refund(ctx context.Context, key int64) error {
	if p.Ledger == nil {
		return nil
	}
	if _, err := p.Ledger.Exec(ctx,
		`UPDATE provider_ledger SET refunded_at = coalesce(refunded_at, now()) WHERE key = $1 AND approved`, key); err != nil {
		return fmt.Errorf("payment provider: refund %d: %w", key, err)
	}
	return nil
}

func (p Provider) decide(key int64, amount money.Amount) Decision {
	ref := fmt.Sprintf("sim_%d", key)
	if amount > p.MaxAmount {
		return Decision{Reason: fmt.Sprintf("amount %s exceeds the limit of %s", amount, p.MaxAmount), Ref: ref}
	}
	if p.FailureRate > 0 && unitHash(key) < p.FailureRate {
		return Decision{Reason: "card declined (simulated failure rate)", Ref: ref}
	}
	return Decision{Approved: true, Ref: ref}
}

// unitHash maps a key to [0, 1) uniformly and repeatably.
func unitHash(key int64) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(key))
	h.Write(b[:])
	return float64(h.Sum64()>>11) / (1 << 53)
}

// charger takes an order from its intent to its end: it asks the provider
// (only for a payment whose intent row is committed) and records the answer,
// refunding at once when the order was cancelled meanwhile.
type charger struct {
	log      *slog.Logger
	store    *Store
	provider Provider
	relay    interface{ Wake() }
	metrics  *telemetry.Metrics
}

// charge asks the provider to charge, in a span of its own, and times the
// call by its result.
func (c *charger) charge(ctx context.Context, p Payment) (d Decision, err error) {
	ctx, span := telemetry.Tracer().Start(ctx, "payment provider charge", trace.WithSpanKind(trace.SpanKindClient))
	start := time.Now()
	defer func() {
		result := telemetry.ProviderError
		switch {
		case err != nil:
		case d.Approved:
			result = telemetry.ProviderApproved
		default:
			result = telemetry.ProviderDeclined
		}
		c.metrics.ProviderCall(result, time.Since(start))
		span.SetAttributes(attribute.String("payment.result", result))
		telemetry.EndSpan(span, err)
	}()
	return c.provider.Charge(ctx, p.OrderID, p.Amount)
}

// complete finishes a payment left in the charging state: it asks the
// provider what it did with the order (a crash may have come after the
// charge), charges now if it did nothing (unless the order was cancelled),
// and records the outcome.
// A fresh intent (asked=false) skips the question: the provider cannot
// have seen an order whose intent was only just written.
func (c *charger) complete(ctx context.Context, p Payment, asked bool) error {
	var (
		d     Decision
		found bool
		err   error
	)
	if asked {
		if d, found, err = c.provider.Lookup(ctx, p.OrderID); err != nil {
			return err
		}
	}
	if !found && !p.Cancelled {
		if d, err = c.charge(ctx, p); err != nil {
			return err
		}
		found = true
	}
	p, changed, err := c.store.Finish(ctx, p, d, found, c.provider)
	if err != nil || !changed {
		return err
	}
	c.relay.Wake()
	c.log.InfoContext(ctx, "payment recorded", "order_id", p.OrderID, "payment_id", p.ID, "status", p.Status, "amount", p.Amount.String())
	return nil
}

// reconcile finishes every payment left charging for longer than age (a
// crash or a failing database between the intent and the result), until ctx
// is done: once at once, then every interval.
func (c *charger) reconcile(ctx context.Context, interval, age time.Duration) {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	for {
		ps, err := c.store.Unfinished(ctx, age)
		if err != nil && ctx.Err() == nil {
			c.log.Warn("reconcile payments", "err", err)
		}
		for _, p := range ps {
			if err := c.complete(ctx, p, true); err != nil && ctx.Err() == nil {
				c.log.Warn("reconcile payment", "order_id", p.OrderID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
