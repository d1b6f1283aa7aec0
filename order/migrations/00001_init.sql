-- +goose Up
CREATE TABLE orders (
    id           bigserial PRIMARY KEY,
    user_id      bigint        NOT NULL CHECK (user_id > 0),
    user_email   text          NOT NULL,
    status       text          NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'paid', 'payment_failed')),
    total_amount numeric(12,2) NOT NULL CHECK (total_amount >= 0),
    created_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at   timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id   bigint        NOT NULL REFERENCES orders (id),
    line       int           NOT NULL,
    product_id bigint        NOT NULL CHECK (product_id > 0),
    quantity   int           NOT NULL CHECK (quantity > 0),
    price      numeric(12,2) NOT NULL CHECK (price >= 0),
    PRIMARY KEY (order_id, line)
);

-- One row per step an order went through; the primary key makes every step
-- happen at most once.
CREATE TABLE order_timeline (
    order_id bigint      NOT NULL REFERENCES orders (id),
    step     text        NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    event_id uuid,
    PRIMARY KEY (order_id, step)
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
DROP TABLE order_timeline;
DROP TABLE order_items;
DROP TABLE orders;
