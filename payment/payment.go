package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/checkout-demo/checkout/internal/events"
	"github.com/checkout-demo/checkout/internal/money"
)

// Payment statuses.
const (
	StatusSucceeded = "succeeded"
	StatusDeclined  = "declined"
)

// Payment is one charge attempt's outcome; there is at most one per order.
type Payment struct {
	ID          int64        `json:"id"`
	OrderID     int64        `json:"order_id"`
	UserID      int64        `json:"user_id"`
	UserEmail   string       `json:"user_email"`
	Amount      money.Amount `json:"amount"`
	Status      string       `json:"status"`
	Reason      string       `json:"reason,omitempty"`
	ProviderRef string       `json:"provider_ref"`
	EventID     string       `json:"event_id"`
	CreatedAt   time.Time    `json:"created_at"`
}

// Decision is the provider's answer.
type Decision struct {
	Approved bool
	Reason   string
	Ref      string
}

// Provider simulates a payment provider. It is idempotent on its key (the
// order id): the same key always gets the same decision and reference, as a
// real provider's idempotency keys promise.
type Provider struct {
	Delay       time.Duration
	MaxAmount   money.Amount
	FailureRate float64
}

// Charge waits Delay, then approves or declines. Declines are deterministic:
// an amount above MaxAmount is declined, and FailureRate declines the share
// of keys whose hash falls below it.
func (p Provider) Charge(ctx context.Context, key int64, amount money.Amount) (Decision, error) {
	select {
	case <-ctx.Done():
		return Decision{}, fmt.Errorf("payment provider: %w", ctx.Err())
	case <-time.After(p.Delay):
	}
	ref := fmt.Sprintf("sim_%d", key)
	if amount > p.MaxAmount {
		return Decision{Reason: fmt.Sprintf("amount %s exceeds the limit of %s", amount, p.MaxAmount), Ref: ref}, nil
	}
	if p.FailureRate > 0 && unitHash(key) < p.FailureRate {
		return Decision{Reason: "card declined (simulated failure rate)", Ref: ref}, nil
	}
	return Decision{Approved: true, Ref: ref}, nil
}

// unitHash maps a key to [0, 1) uniformly and repeatably.
func unitHash(key int64) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(key))
	h.Write(b[:])
	return float64(h.Sum64()>>11) / (1 << 53)
}

// handleOrderCreated charges an order once. A redelivered or republished
// event finds its id in the inbox, or the order's payment already there, and
// changes nothing.
func handleOrderCreated(log *slog.Logger, store *Store, provider Provider, relay interface{ Wake() }) events.Handler {
	return func(ctx context.Context, d events.Delivery) error {
		var ev events.OrderCreated
		if err := json.Unmarshal(d.Body, &ev); err != nil {
			return events.Permanent(fmt.Errorf("decode OrderCreated: %w", err))
		}
		if !events.ValidEventID(ev.EventID) || ev.OrderID <= 0 {
			return events.Permanent(fmt.Errorf("OrderCreated without a UUID event id or a positive order id"))
		}
		log := log.With("order_id", ev.OrderID, "event_id", ev.EventID)

		done, err := store.Handled(ctx, ev.EventID, ev.OrderID)
		if err != nil {
			return err
		}
		if done {
			log.Info("duplicate OrderCreated ignored")
			return nil
		}
		decision, err := provider.Charge(ctx, ev.OrderID, ev.TotalAmount)
		if err != nil {
			return err
		}
		p, created, err := store.Record(ctx, ev, decision)
		if err != nil {
			return err
		}
		if !created {
			log.Info("duplicate OrderCreated ignored")
			return nil
		}
		relay.Wake()
		log.Info("payment recorded", "payment_id", p.ID, "status", p.Status, "amount", p.Amount.String())
		return nil
	}
}
