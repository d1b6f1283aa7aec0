// Package inbox makes event consumers idempotent: a consumer claims an event's
// id in the same transaction as the event's effect, so a redelivered or
// republished event finds its id taken and changes nothing.
//
// The table it needs (each consuming service's migrations create it):
//
//	CREATE TABLE inbox (
//	    event_id   uuid PRIMARY KEY,
//	    event_type text NOT NULL,
//	    handled_at timestamptz NOT NULL DEFAULT now()
//	);
package inbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/checkout-demo/checkout/internal/events"
)

// Claim records eventID as handled within tx. It reports false when the
// event was handled before, in which case the caller must not apply it again.
func Claim(ctx context.Context, tx pgx.Tx, eventID, eventType string) (bool, error) {
	tag, err := tx.Exec(ctx,
		`INSERT INTO inbox (event_id, event_type) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING`,
		eventID, eventType)
	if err != nil {
		return false, fmt.Errorf("claim event %s: %w", eventID, err)
	}
	fresh := tag.RowsAffected() == 1
	if !fresh {
		events.MarkDuplicate(ctx) // counted as a duplicate the inbox dropped
	}
	return fresh, nil
}
