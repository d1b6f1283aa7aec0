#!/usr/bin/env bash
# A local trace store for `make run`: Jaeger (the v2 binary, all-in-one by
# default: OTLP on :4317 gRPC and :4318 HTTP, the query API on :16686, spans
# kept in memory).
#
#   scripts/jaeger.sh build   build it once into the cache (9 minutes on an
#                             idle 2-core machine, 54 niced behind other
#                             builds; skipped when it is there)
#   scripts/jaeger.sh start   build if needed, then run it in the foreground
#   scripts/jaeger.sh path    print where the binary is (or would be)
#
# Jaeger's binary installs from the Go module proxy, but its web UI does not:
# the UI is a separate npm project (jaeger-ui) that the release builds embed
# and the module does not carry, so this binary answers the query API
# (/api/traces/{id}, /api/services) and serves only a placeholder page. The gateway's
# /traces/{trace_id} page draws one trace from that API instead.
#
# The build happens in a scratch module (go mod init x; go get -tool), so no
# go.mod of this project is touched, and it never fails the caller: on error
# it prints one warning line and exits 0 (start then exits 0 without Jaeger).
#
# Env: JAEGER_VERSION (default v1.76.0, the Go module version of Jaeger v2),
#      JAEGER_BIN (default ~/.cache/checkout/jaeger-$JAEGER_VERSION/jaeger).
set -uo pipefail

JAEGER_VERSION=${JAEGER_VERSION:-v1.76.0}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/checkout"
DIR="$CACHE/jaeger-$JAEGER_VERSION"
BIN=${JAEGER_BIN:-$DIR/jaeger}
LOG="$CACHE/jaeger-build.log"

say() { printf '\033[1mjaeger:\033[0m %s\n' "$*"; }
give_up() {
  printf '\033[1;33mjaeger: warning:\033[0m %s; no local trace store (traces are not exported)\n' "$*" >&2
  exit 0
}

build() {
  [ -x "$BIN" ] && return 0
  command -v go >/dev/null 2>&1 || give_up "go is not installed"
  mkdir -p "$DIR" || give_up "cannot create $DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/jaeger.lock"
    flock -w 1800 9 || give_up "another build holds $CACHE/jaeger.lock"
    [ -x "$BIN" ] && return 0
  fi
  say "building Jaeger $JAEGER_VERSION into $BIN (a long compile, once; log: $LOG)"
  local started work
  started=$(date +%s)
  work=$(mktemp -d "$DIR/build.XXXXXX") || give_up "cannot make a build dir in $DIR"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  : >"$LOG"
  if ! (cd "$work" && export GOFLAGS= GOWORK=off CGO_ENABLED=0 &&
    go mod init x &&
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" &&
    go build -trimpath -ldflags '-s -w' -o jaeger github.com/jaegertracing/jaeger/cmd/jaeger) >>"$LOG" 2>&1; then
    give_up "the build failed (see $LOG)"
  fi
  mv -f "$work/jaeger" "$BIN" || give_up "cannot install $BIN"
  say "built $BIN in $(($(date +%s) - started)) s"
}

case "${1:-start}" in
build) build ;;
path) echo "$BIN" ;;
start)
  build
  [ -x "$BIN" ] || exit 0
  if (exec 3<>/dev/tcp/127.0.0.1/16686) 2>/dev/null; then
    say "something already listens on :16686; using it"
    exit 0
  fi
  # With no --config the v2 binary runs its built-in all-in-one
  # configuration (memory storage).
  exec "$BIN"
  ;;
*)
  echo "usage: $0 build|start|path" >&2
  exit 2
  ;;
esac
