-- +goose Up
-- The order service reserves order ids in blocks of 32 (one nextval a
-- block), so a checkout knows its id before it writes and can write order,
-- items, timeline and outbox row in one statement. Keep in step with
-- idBlockSize in order/store.go.
ALTER SEQUENCE orders_id_seq INCREMENT BY 32;

-- +goose Down
ALTER SEQUENCE orders_id_seq INCREMENT BY 1;
