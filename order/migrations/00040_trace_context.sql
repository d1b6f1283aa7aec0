-- +goose Up
-- The trace context of the transaction that wrote an outbox row (W3C
-- fields as JSON, telemetry.EncodeTraceContext), so the relay publishes the
-- event under it; and the trace id of the checkout that made an order, for
-- its answers. NULL where nothing was traced.
ALTER TABLE outbox ADD COLUMN trace_context text;
ALTER TABLE orders ADD COLUMN trace_id text;

-- +goose Down
ALTER TABLE orders DROP COLUMN trace_id;
ALTER TABLE outbox DROP COLUMN trace_context;
