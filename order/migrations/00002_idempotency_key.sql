-- +goose Up
-- A client that retries a checkout (its answer was lost) sends the same
-- Idempotency-Key and gets the order it already placed.
ALTER TABLE orders ADD COLUMN idempotency_key text UNIQUE,
                   ADD COLUMN request_hash    text;

-- +goose Down
ALTER TABLE orders DROP COLUMN request_hash, DROP COLUMN idempotency_key;
