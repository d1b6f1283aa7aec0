-- +goose Up
-- Every order is read with its access token (or by the signed-in customer
-- who placed it). The token is never stored: only its SHA-256 and the random
-- nonce it is derived from with the server's key (HMAC), so an Idempotency-Key
-- replay can hand out the same token again while a copy of this table opens
-- no order by itself.
CREATE TABLE order_access (
    order_id   bigint PRIMARY KEY REFERENCES orders (id),
    nonce      bytea  NOT NULL CHECK (length(nonce) >= 16),
    token_hash bytea  NOT NULL CHECK (length(token_hash) = 32),
    -- The signed-in customer (the JWT subject) who placed the order; NULL for
    -- a guest checkout, whose body's user_id proves nothing.
    user_id    bigint CHECK (user_id > 0)
);
CREATE INDEX order_access_user ON order_access (user_id, order_id) WHERE user_id IS NOT NULL;

-- The key the tokens are derived with when ACCESS_TOKEN_SECRET is not set:
-- made here once per database (gen_random_uuid draws from the server's
-- strong random source: 2 x 122 bits), shared by every replica.
CREATE TABLE order_secrets (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
INSERT INTO order_secrets (name, value)
VALUES ('access_token', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

-- +goose Down
DROP TABLE order_secrets;
DROP TABLE order_access;
