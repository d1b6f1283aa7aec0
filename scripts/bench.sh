#!/usr/bin/env bash
# make bench: checkout latency and throughput through the gateway, and, in the
# same run on the same machine, what pgbench does with the same shape of
# transaction (an order row with its item and timeline rows, and an outbox
# row, in one transaction).
#
# The four services run from bin/ with their default settings, on the default
# ports (or free ones when those are taken, e.g. while `make run` runs), but
# against scratch state: their own databases, RabbitMQ virtual host and
# Mailpit, all removed at the end. The benchmark leaves thousands of orders
# half-way through the saga when it stops; in scratch state they go away
# instead of being worked off by the next `make run`.
#
# Knobs (environment): BENCH_CLIENTS (16), BENCH_SINGLE_SECONDS (10),
# BENCH_SECONDS (15), BENCH_WARMUP_SECONDS (2), BENCH_PG
# (postgres://postgres@localhost:5432), BENCH_AMQP
# (amqp://guest:guest@localhost:5672), BENCH_RABBIT_API
# (http://guest:guest@localhost:15672).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${BENCH_CLIENTS:-16}
SINGLE=${BENCH_SINGLE_SECONDS:-10}
SECONDS_=${BENCH_SECONDS:-15}
WARMUP=${BENCH_WARMUP_SECONDS:-2}
PG=${BENCH_PG:-postgres://postgres@localhost:5432}
AMQP=${BENCH_AMQP:-amqp://guest:guest@localhost:5672}
API=${BENCH_RABBIT_API:-http://guest:guest@localhost:15672}

say() { printf '\033[1mbench:\033[0m %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port wanted: the wanted port when it is free, else the next free one
# from 20000 up that no other service of this run took.
taken=" "
free_port() {
  local p=$1
  if port_open "$p" || [[ $taken == *" $p "* ]]; then
    p=20000
    while port_open "$p" || [[ $taken == *" $p "* ]]; do p=$((p + 1)); done
  fi
  taken+="$p "
  echo "$p"
}

for b in gateway order payment email; do
  [ -x "bin/$b" ] || { echo "bench: bin/$b is missing; run make build" >&2; exit 1; }
done
command -v pgbench >/dev/null || { echo "bench: pgbench is missing (apt-get install postgresql-contrib or postgresql-client)" >&2; exit 1; }
command -v psql >/dev/null || { echo "bench: psql is missing" >&2; exit 1; }
GOBIN_DIR=$(go env GOBIN); [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
MAILPIT=$(command -v mailpit || echo "$GOBIN_DIR/mailpit")
[ -x "$MAILPIT" ] || { echo "bench: mailpit is missing; run make deps" >&2; exit 1; }

tag="bench_$$"
work=$(mktemp -d)
pids=()
api_user=$(sed -E 's#^[a-z]+://([^:@/]+):([^@/]*)@.*#\1:\2#' <<<"$API")
api_base=$(sed -E 's#^([a-z]+://)[^@/]*@#\1#' <<<"$API")

stop_services() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
  fi
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_services
  for db in "${tag}_order" "${tag}_payment" "${tag}_pgbench"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  curl -fsS -u "$api_user" -X DELETE "$api_base/api/vhosts/$tag" >/dev/null 2>&1 ||
    rabbitmqctl delete_vhost "$tag" >/dev/null 2>&1 || true
  if [ "$rc" -ne 0 ]; then
    echo "bench: failed; service logs are in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Scratch RabbitMQ virtual host.
if ! curl -fsS -u "$api_user" -X PUT "$api_base/api/vhosts/$tag" >/dev/null 2>&1; then
  rabbitmqctl add_vhost "$tag" >/dev/null
fi
curl -fsS -u "$api_user" -X PUT -H 'Content-Type: application/json' \
  -d '{"configure":".*","write":".*","read":".*"}' "$api_base/api/permissions/$tag/${api_user%%:*}" >/dev/null 2>&1 ||
  rabbitmqctl set_permissions -p "$tag" "${api_user%%:*}" '.*' '.*' '.*' >/dev/null

gw=$(free_port 9000); op=$(free_port 8001); pp=$(free_port 8002); ep=$(free_port 8003)
smtp=$(free_port 1026); mweb=$(free_port 8026)
say "services on gateway :$gw, order :$op, payment :$pp, email :$ep; Mailpit :$smtp; scratch state '$tag'"

"$MAILPIT" --smtp "127.0.0.1:$smtp" --listen "127.0.0.1:$mweb" --max 0 --quiet --disable-version-check \
  --smtp-auth-accept-any --smtp-auth-allow-insecure >"$work/mailpit.log" 2>&1 &
pids+=($!)
common=(AMQP_URL="$AMQP/$tag" ORDER_SERVICE_URL="http://127.0.0.1:$op" PAYMENT_SERVICE_URL="http://127.0.0.1:$pp"
  EMAIL_SERVICE_URL="http://127.0.0.1:$ep" SMTP_HOST=127.0.0.1 SMTP_PORT="$smtp")
env "${common[@]}" PORT="$op" DATABASE_URL="$PG/${tag}_order?sslmode=disable" ./bin/order >"$work/order.log" 2>&1 &
pids+=($!)
env "${common[@]}" PORT="$pp" DATABASE_URL="$PG/${tag}_payment?sslmode=disable" ./bin/payment >"$work/payment.log" 2>&1 &
pids+=($!); saga_pids=($!)
env "${common[@]}" PORT="$ep" ./bin/email >"$work/email.log" 2>&1 &
pids+=($!); saga_pids+=($!)
# One benchmark client is far above a person's rate: no limit here.
env "${common[@]}" PORT="$gw" RATE_LIMIT_RPS=0 ./bin/gateway >"$work/gateway.log" 2>&1 &
pids+=($!)

say "building the benchmark client"
go build -o "$work/loadtest" ./loadtest

ready=""
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$gw/health" >/dev/null 2>&1 &&
    curl -fsS "http://127.0.0.1:$op/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "bench: the services did not become ready within 60 s" >&2; exit 1; }

"$work/loadtest" bench -target "http://127.0.0.1:$gw" -clients "$CLIENTS" \
  -warmup "${WARMUP}s" -single "${SINGLE}s" -duration "${SECONDS_}s" | tee "$work/bench.out"

# The same 16 clients with payment and email stopped: the checkout path
# alone (gateway, order, outbox relay, RabbitMQ), without the saga's work
# competing for the two CPUs. OrderCreated events wait in their queue.
say "checkout path alone: payment and email stopped, $CLIENTS clients for ${SECONDS_}s"
kill -TERM "${saga_pids[@]}" 2>/dev/null || true
wait "${saga_pids[@]}" 2>/dev/null || true
"$work/loadtest" bench -target "http://127.0.0.1:$gw" -clients "$CLIENTS" \
  -warmup 0s -single 1s -duration "${SECONDS_}s" | tee "$work/bench-alone.out"
stop_services

line=$(grep '^BENCH ' "$work/bench.out")
field() { sed -E "s/.* $1=([^ ]+).*/\1/" <<<" $line"; }
single_p50=$(field single_p50_ms); single_p99=$(field single_p99_ms)
tput=$(field throughput); multi_p99=$(field multi_p99_ms)
line=$(grep '^BENCH ' "$work/bench-alone.out")
tput_alone=$(field throughput); alone_p99=$(field multi_p99_ms)

# pgbench: the same transaction as order/store.go Create plus outbox.Add, with
# a payload of the real size, against a scratch database with the order
# service's schema. Prepared statements, as pgx uses them.
say "pgbench: same transaction shape, $CLIENTS clients for ${SECONDS_}s, then 1 client for 5s"
psql -q "$PG/postgres" -c "CREATE DATABASE ${tag}_pgbench" >/dev/null
for f in order/migrations/*.sql; do
  sed -n '/^-- +goose Up/,/^-- +goose Down/p' "$f"
done | psql -q -v ON_ERROR_STOP=1 "$PG/${tag}_pgbench" >/dev/null
# The checkout is one statement (order/store.go insertOrder) after an id
# from a block of 32 (one nextval per 32 orders; here one per order, which
# favours pgbench a little).
cat >"$work/checkout.sql" <<'SQL'
\set uid random(1, 1000000000)
WITH id AS (
    SELECT nextval('orders_id_seq') AS id
), o AS (
    INSERT INTO orders (id, user_id, user_email, total_amount, created_at, updated_at)
    SELECT id, :uid, 'lt' || :uid::bigint || '@example.com', 1299.99, now(), now() FROM id
), i AS (
    INSERT INTO order_items (order_id, line, product_id, quantity, price)
    SELECT id.id, t.line, t.product_id, t.quantity, t.price
    FROM id, unnest(ARRAY[1]::bigint[], ARRAY[1]::int[], ARRAY['1299.99']::numeric[]) WITH ORDINALITY AS t(product_id, quantity, price, line)
), s AS (
    INSERT INTO order_timeline (order_id, step, at) SELECT id, 'created', now() FROM id
)
INSERT INTO outbox (event_id, event_type, routing_key, payload) VALUES (gen_random_uuid(), 'OrderCreated', 'order.order.created',
    ('{"event_id":"01a21699-053f-7ccd-9ceb-8d0a765d2e70","event_type":"OrderCreated","version":1,"occurred_at":"2026-01-01T00:00:00.000000Z","order_id":1234567,"user_id":' || :uid::bigint || ',"user_email":"lt' || :uid::bigint || '@example.com","total_amount":"1299.99","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}')::json);
SQL
jobs=$(nproc 2>/dev/null || echo 2)
pgbench -n -M prepared -c "$CLIENTS" -j "$((jobs < CLIENTS ? jobs : CLIENTS))" -T "$SECONDS_" -f "$work/checkout.sql" "$PG/${tag}_pgbench" >"$work/pgbench.out" 2>&1 ||
  { cat "$work/pgbench.out" >&2; exit 1; }
pgbench -n -M prepared -c 1 -T 5 -f "$work/checkout.sql" "$PG/${tag}_pgbench" >"$work/pgbench1.out" 2>&1 ||
  { cat "$work/pgbench1.out" >&2; exit 1; }
pg_tps=$(awk '/^tps = / {printf "%.1f", $3; exit}' "$work/pgbench.out")
pg_lat=$(awk '/^latency average = / {print $4; exit}' "$work/pgbench.out")
pg1_lat=$(awk '/^latency average = / {print $4; exit}' "$work/pgbench1.out")

verdict() { if awk "BEGIN{exit !($1)}"; then echo met; else echo "not met"; fi; }
ratio=$(awk -v a="$tput" -v b="$pg_tps" 'BEGIN{printf "%.2f", a/b}')
ratio_alone=$(awk -v a="$tput_alone" -v b="$pg_tps" 'BEGIN{printf "%.2f", a/b}')
cat <<EOF

== make bench: checkout through the gateway beside pgbench ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)) ==
checkout, 1 client      p50 ${single_p50} ms, p99 ${single_p99} ms     (goal p50 <= 2 ms: $(verdict "$single_p50 <= 2"))
checkout, $CLIENTS clients    ${tput} checkouts/s, p99 ${multi_p99} ms (the saga running beside it)
  checkout path alone   ${tput_alone} checkouts/s, p99 ${alone_p99} ms (payment and email stopped)
pgbench, $CLIENTS clients     ${pg_tps} tps, latency average ${pg_lat} ms (1 client: ${pg1_lat} ms)
ratio                   ${ratio} of pgbench's throughput       (goal >= 0.5: $(verdict "$ratio >= 0.5"))
  checkout path alone   ${ratio_alone} of pgbench's throughput
EOF
