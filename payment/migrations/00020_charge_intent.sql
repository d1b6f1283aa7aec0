-- +goose Up
-- A payment row is written, and committed, before the provider is called:
-- 'charging' is the intent (the provider may or may not have charged; the
-- reconciler asks it again), then 'succeeded' or 'declined'. 'refunded' is
-- a charge given back because the order had been cancelled; 'cancelled' is
-- a tombstone for an order cancelled before anything was charged, so that
-- a late OrderCreated charges nothing.
ALTER TABLE payments DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check
        CHECK (status IN ('charging', 'succeeded', 'declined', 'refunded', 'cancelled')),
    ALTER COLUMN provider_ref DROP NOT NULL,
    ADD COLUMN updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The order was cancelled while the charge was under way: refund it
    -- as soon as the provider's answer is known.
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN refunded_at  timestamptz,
    -- The order's lines, so that a result event can be written again (or
    -- for the first time, by the reconciler) without the OrderCreated.
    ADD COLUMN items        jsonb       NOT NULL DEFAULT '[]';
CREATE INDEX payments_charging ON payments (updated_at) WHERE status = 'charging';

-- The simulated provider's own records (a real provider keeps them on its
-- side): one charge per idempotency key, written by the provider when it
-- charges, whatever the payment service manages to record afterwards. The
-- fault test compares it with the payments.
CREATE TABLE provider_ledger (
    key         bigint        PRIMARY KEY,
    amount      numeric(12,2) NOT NULL,
    approved    boolean       NOT NULL,
    reason      text          NOT NULL DEFAULT '',
    ref         text          NOT NULL,
    charged_at  timestamptz   NOT NULL DEFAULT now(),
    refunded_at timestamptz
);

-- +goose Down
DROP TABLE provider_ledger;
DROP INDEX payments_charging;
ALTER TABLE payments DROP COLUMN items, DROP COLUMN refunded_at, DROP COLUMN cancelled_at, DROP COLUMN updated_at,
    ALTER COLUMN provider_ref SET NOT NULL,
    DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check CHECK (status IN ('succeeded', 'declined'));
