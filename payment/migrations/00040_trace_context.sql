-- +goose Up
-- The trace context of the transaction that wrote an outbox row (W3C
-- fields as JSON, telemetry.EncodeTraceContext), so the relay publishes the
-- event under it. NULL where nothing was traced.
ALTER TABLE outbox ADD COLUMN trace_context text;

-- +goose Down
ALTER TABLE outbox DROP COLUMN trace_context;
