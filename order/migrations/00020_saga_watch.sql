-- +goose Up
-- The saga always ends. An order the watcher finds unsettled for
-- ORDER_PAYMENT_TIMEOUT after watch_from (its creation, its last payment
-- result, its last re-ask) is asked about again, asks counts those re-asks,
-- and after ORDER_PAYMENT_TRIES of them a pending order is cancelled.
-- settled is true once the order has its end state and its mail step.
ALTER TABLE orders DROP CONSTRAINT orders_status_check,
    ADD CONSTRAINT orders_status_check CHECK (status IN ('pending', 'paid', 'payment_failed', 'cancelled')),
    ADD COLUMN watch_from    timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN asks          int         NOT NULL DEFAULT 0,
    ADD COLUMN settled       boolean     NOT NULL DEFAULT false,
    ADD COLUMN cancel_reason text;
UPDATE orders o SET settled = true WHERE status <> 'pending' AND EXISTS (
    SELECT 1 FROM order_timeline t WHERE t.order_id = o.id
    AND t.step IN ('confirmation_sent', 'payment_failed_notice_sent'));
CREATE INDEX orders_unsettled ON orders (watch_from) WHERE NOT settled;

-- +goose Down
DROP INDEX orders_unsettled;
ALTER TABLE orders DROP COLUMN cancel_reason, DROP COLUMN settled, DROP COLUMN asks, DROP COLUMN watch_from;
UPDATE orders SET status = 'payment_failed' WHERE status = 'cancelled';
ALTER TABLE orders DROP CONSTRAINT orders_status_check,
    ADD CONSTRAINT orders_status_check CHECK (status IN ('pending', 'paid', 'payment_failed'));
