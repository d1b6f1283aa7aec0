#!/usr/bin/env bash
# Runs the whole system natively in the foreground: Mailpit and the four
# services against the local PostgreSQL and RabbitMQ, each service's log
# lines prefixed with its name. What dies is started again (scripts/
# supervise.sh: `run: payment exited (signal 9); restarting in 1 s`), as
# compose does. Ctrl-C stops everything.
#
# Least privilege, as in compose: each service connects to RabbitMQ as its
# own user and to PostgreSQL as its own role (no superuser), which
# scripts/users.sh creates first if missing. The passwords come from .env
# (the ones compose uses); ORDER_AMQP_URL, PAYMENT_AMQP_URL, EMAIL_AMQP_URL,
# ORDER_DATABASE_URL and PAYMENT_DATABASE_URL override the URLs.
#
# Everything listens on 127.0.0.1 only: the services (their LISTEN_HOST),
# Mailpit's SMTP (1026) and inbox (8026) (MAILPIT_BIND_ADDRESS, by default
# LISTEN_HOST). LISTEN_HOST=0.0.0.0 make run opens them all.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh brokers
GOBIN_DIR=$(go env GOBIN); [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
MAILPIT=$(command -v mailpit || echo "$GOBIN_DIR/mailpit")
MAILPIT_UI=${MAILPIT_UI_BIN:-$GOBIN_DIR/mailpit-ui}

# A password from the environment, else from .env, else the default.
secret() { # KEY default
  local v=${!1:-}
  if [ -z "$v" ] && [ -f .env ]; then v=$(sed -n "s/^$1=//p" .env | tail -1); fi
  printf '%s' "${v:-$2}"
}
export ORDER_AMQP_URL=${ORDER_AMQP_URL:-amqp://order:$(secret RABBITMQ_ORDER_PASSWORD order-amqp-password)@localhost:5672/}
export PAYMENT_AMQP_URL=${PAYMENT_AMQP_URL:-amqp://payment:$(secret RABBITMQ_PAYMENT_PASSWORD payment-amqp-password)@localhost:5672/}
export EMAIL_AMQP_URL=${EMAIL_AMQP_URL:-amqp://email:$(secret RABBITMQ_EMAIL_PASSWORD email-amqp-password)@localhost:5672/}
export ORDER_DATABASE_URL=${ORDER_DATABASE_URL:-postgres://order_user:$(secret ORDER_DB_PASSWORD order_password)@localhost:5432/order_db?sslmode=disable}
export PAYMENT_DATABASE_URL=${PAYMENT_DATABASE_URL:-postgres://payment_user:$(secret PAYMENT_DB_PASSWORD payment_password)@localhost:5432/payment_db?sslmode=disable}
bash scripts/users.sh

export LOG_FORMAT=${LOG_FORMAT:-text}
export LISTEN_HOST=${LISTEN_HOST:-127.0.0.1}
MAILPIT_BIND_ADDRESS=${MAILPIT_BIND_ADDRESS:-$LISTEN_HOST}
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/checkout-run.XXXXXX")

pids=() builder=""
stop() {
  trap - INT TERM HUP EXIT
  echo; echo "run: stopping…"
  # A Mailpit UI build still running goes on by itself, for the next run.
  [ -z "$builder" ] || kill -TERM "$builder" 2>/dev/null || true
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$RUN_DIR"
}
trap stop INT TERM HUP EXIT

# Job control: each supervisor (and what it runs) in a process group of its
# own, so that Ctrl-C reaches this script only, which then stops them all
# with one SIGTERM each (a service that saw Ctrl-C itself would exit before
# its supervisor knew it was asked to, and be restarted).
set -m
start() { # name colour command…
  SUPERVISE_PIDFILE="$RUN_DIR/$1.pid" bash scripts/supervise.sh "$@" &
  pids+=($!)
}

if (exec 3<>/dev/tcp/127.0.0.1/1026) 2>/dev/null; then
  echo "run: something already listens on :1026; using it as the SMTP server"
else
  # The services do not wait for Mailpit: checkouts work at once, and the
  # email service holds its mails (and retries) until SMTP answers. Mailpit
  # starts as soon as it is installed (`go install`, a minute the first
  # time), with its web UI when that was built before (scripts/
  # mailpit-ui.sh; a go-installed Mailpit serves SMTP and the API but a blank
  # page). Otherwise the UI is built in the background, and Mailpit is
  # restarted with it when it is ready; its mails are kept in a file for the
  # run, so the inbox keeps them across that restart.
  start mailpit 90 sh -c 'while [ ! -x "$1" ] && [ ! -x "$2" ]; do sleep 1; done
    if [ -x "$1" ]; then bin=$1; else bin=$2; fi; shift 2; exec "$bin" "$@"' _ \
    "$MAILPIT_UI" "$MAILPIT" --smtp "$MAILPIT_BIND_ADDRESS:1026" --listen "$MAILPIT_BIND_ADDRESS:8026" \
    --database "$RUN_DIR/mailpit.db" --max 0 --quiet \
    --smtp-auth-accept-any --smtp-auth-allow-insecure --disable-version-check
  if [ ! -x "$MAILPIT_UI" ]; then
    (
      trap '' INT
      if [ ! -x "$MAILPIT" ]; then
        echo "run: installing Mailpit in the background (go install, about a minute); mails wait until it is up"
        bash scripts/deps.sh mailpit >/dev/null || echo "run: Mailpit could not be installed (see above); mails wait"
      fi
      echo "run: Mailpit is up without its web UI (SMTP and the API work, the page is blank); building the UI in the background"
      bash scripts/mailpit-ui.sh >/dev/null 2>"$RUN_DIR/mailpit-ui.err" || true
      if [ -x "$MAILPIT_UI" ]; then
        echo "run: the Mailpit web UI is built; restarting Mailpit with it (the inbox keeps its mails)"
        kill -TERM "$(cat "$RUN_DIR/mailpit.pid")" 2>/dev/null || true
      else
        echo "run: the Mailpit web UI could not be built ($(tail -1 "$RUN_DIR/mailpit-ui.err" 2>/dev/null)); the inbox stays API only"
      fi
    ) &
    builder=$!
  fi
fi
# Traces: Jaeger when it has been built (scripts/jaeger.sh build, once: a
# long compile, so never here), and the services export to it. A caller's
# own OTEL_EXPORTER_OTLP_ENDPOINT wins.
JAEGER=$(bash scripts/jaeger.sh path)
if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  traces="traces to $OTEL_EXPORTER_OTLP_ENDPOINT"
elif (exec 3<>/dev/tcp/127.0.0.1/4318) 2>/dev/null || [ -x "$JAEGER" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/4318) 2>/dev/null; then
    start jaeger 37 "$JAEGER"
  fi
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318
  traces="traces http://localhost:9000/traces/{trace_id} (Jaeger API :16686)"
else
  traces="traces: off (scripts/jaeger.sh build once, then make run again)"
fi
# Payment events are believed only from the user of PAYMENT_AMQP_URL.
start order 36 env AMQP_URL="$ORDER_AMQP_URL" DATABASE_URL="$ORDER_DATABASE_URL" \
  PAYMENT_AMQP_USER="${PAYMENT_AMQP_USER:-$(printf '%s' "$PAYMENT_AMQP_URL" | sed -n 's#^[a-z]*://\([^:@/]*\).*#\1#p')}" ./bin/order
start payment 33 env AMQP_URL="$PAYMENT_AMQP_URL" DATABASE_URL="$PAYMENT_DATABASE_URL" ./bin/payment
start email 35 env AMQP_URL="$EMAIL_AMQP_URL" ./bin/email
start gateway 32 ./bin/gateway

echo "run: metrics http://localhost:{9000,8001,8002,8003}/metrics · $traces"
cat <<MSG
run: gateway http://localhost:9000 · RabbitMQ UI http://localhost:15672 (guest/guest) · Mailpit http://localhost:8026
run: listening on $LISTEN_HOST (LISTEN_HOST=0.0.0.0 opens the services and Mailpit to the network)
run: try  curl -X POST http://localhost:9000/api/checkout -H 'Content-Type: application/json' \\
            -d '{"user_id":1,"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}'
MSG
# Until Ctrl-C: a supervisor ends only when it gives up on its process.
wait "${pids[@]}" || true
