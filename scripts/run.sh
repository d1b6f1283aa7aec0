#!/usr/bin/env bash
# Runs the whole system natively in the foreground: Mailpit and the four
# services against the local PostgreSQL and RabbitMQ, each service's log
# lines prefixed with its name. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
GOBIN_DIR=$(go env GOBIN); [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
MAILPIT=$(command -v mailpit || echo "$GOBIN_DIR/mailpit")

export LOG_FORMAT=${LOG_FORMAT:-text}
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "run: stopping…"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

label() { # name colour
  # Ctrl-C reaches the whole process group: the labellers ignore it (an
  # ignored signal stays ignored across exec) and end when their service
  # closes its output, so the shutdown lines still show. sed, not a shell
  # read loop: at hundreds of requests a second the loop cost a fifth of a core.
  trap '' INT TERM
  exec sed -u "s/^/$(printf '\033[%sm%-8s\033[0m| ' "$2" "$1")/"
}

start() { # name colour command…
  local name=$1 colour=$2; shift 2
  "$@" > >(label "$name" "$colour") 2>&1 &
  pids+=($!)
}

if (exec 3<>/dev/tcp/127.0.0.1/1026) 2>/dev/null; then
  echo "run: something already listens on :1026; using it as the SMTP server"
else
  # Mailpit with its web UI (a go-installed one serves the API but a blank
  # page); mailpit-ui.sh never fails: it warns, and the plain binary is used.
  bash scripts/mailpit-ui.sh || true
  MAILPIT_UI=${MAILPIT_UI_BIN:-$GOBIN_DIR/mailpit-ui}
  if [ -x "$MAILPIT_UI" ]; then MAILPIT=$MAILPIT_UI; fi
  start mailpit 90 "$MAILPIT" --smtp 0.0.0.0:1026 --listen 0.0.0.0:8026 --max 0 --quiet \
    --smtp-auth-accept-any --smtp-auth-allow-insecure --disable-version-check
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
start order 36 ./bin/order
start payment 33 ./bin/payment
start email 35 ./bin/email
start gateway 32 ./bin/gateway

echo "run: metrics http://localhost:{9000,8001,8002,8003}/metrics · $traces"
cat <<'MSG'
run: gateway http://localhost:9000 · RabbitMQ UI http://localhost:15672 (guest/guest) · Mailpit http://localhost:8026
run: try  curl -X POST http://localhost:9000/api/checkout -H 'Content-Type: application/json' \
            -d '{"user_id":1,"user_email":"test@example.com","items":[{"product_id":1,"quantity":1,"price":"1299.99"}]}'
MSG
wait -n "${pids[@]}" || true
echo "run: a process exited; stopping the rest"
