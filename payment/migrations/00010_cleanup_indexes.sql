-- +goose Up
-- The relay's clean-up deletes published rows past their retention and
-- consumed event ids past theirs, in batches, oldest first: each batch
-- finds its rows through these indexes instead of scanning the table.
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_handled_at ON inbox (handled_at);

-- +goose Down
DROP INDEX IF EXISTS inbox_handled_at;
DROP INDEX IF EXISTS outbox_published_at;
