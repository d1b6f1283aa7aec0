-- +goose Up
-- At most one payment per order: the natural key behind the inbox, so that
-- even an OrderCreated republished with a new event id charges nothing twice.
CREATE TABLE payments (
    id           bigserial PRIMARY KEY,
    order_id     bigint        NOT NULL UNIQUE,
    user_id      bigint        NOT NULL,
    user_email   text          NOT NULL,
    amount       numeric(12,2) NOT NULL CHECK (amount >= 0),
    status       text          NOT NULL CHECK (status IN ('succeeded', 'declined')),
    reason       text,
    provider_ref text          NOT NULL,
    event_id     uuid          NOT NULL,
    created_at   timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    routing_key     text        NOT NULL,
    payload         json        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE inbox (
    event_id   uuid        PRIMARY KEY,
    event_type text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE inbox;
DROP TABLE outbox;
DROP TABLE payments;
