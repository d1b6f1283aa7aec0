#!/usr/bin/env bash
# Keeps one process of `make run` alive, as compose's `restart:
# unless-stopped` does:
#
#   supervise.sh NAME COLOUR COMMAND [ARG…]
#
# Runs COMMAND with its output labelled (`payment | …`). When it exits, for
# whatever reason (a crash, kill -9), it says so and starts it again after
# 1 s: `run: payment exited (signal 9); restarting in 1 s`. A process that
# fails within START_GRACE seconds of its start five times in a row has a
# real problem (a bad setting, a port in use): it says so and gives up on that
# one process (exit 1); the others keep running. SIGINT or SIGTERM (Ctrl-C
# reaches the whole process group) stops it: the process gets SIGTERM, is
# waited for, and is not restarted.
#
# Env: SUPERVISE_PIDFILE, when set, always holds the running process's pid.
set -uo pipefail

name=$1 colour=$2
shift 2

START_GRACE=5      # seconds: a process that dies sooner "failed at start"
MAX_START_FAILS=5  # in a row, then give up
DELAY=1            # seconds before a restart

say() { printf '\033[1mrun:\033[0m %s\n' "$*"; }

label() {
  # The labeller ignores Ctrl-C (an ignored signal stays ignored across exec)
  # and ends when its process closes its output, so the last lines still
  # show. sed, not a shell read loop: at hundreds of requests a second the
  # loop cost a fifth of a core.
  trap '' INT TERM
  exec sed -u "s/^/$(printf '\033[%sm%-8s\033[0m| ' "$colour" "$name")/"
}

stopping=0 child=""
stop() {
  stopping=1
  [ -z "$child" ] || kill -TERM "$child" 2>/dev/null
}
trap stop INT TERM

parent=$PPID
fails=0
while :; do
  started=$SECONDS
  "$@" > >(label) 2>&1 &
  child=$!
  [ -z "${SUPERVISE_PIDFILE:-}" ] || echo "$child" >"$SUPERVISE_PIDFILE"
  # wait returns early when a signal is trapped: wait again until the
  # process is gone, so its status is its own.
  while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  [ "$stopping" = 0 ] || exit 0
  # `make run` itself is gone (killed): nothing to restart for.
  kill -0 "$parent" 2>/dev/null || exit 0

  if [ "$rc" -gt 128 ]; then how="signal $((rc - 128))"; else how="status $rc"; fi
  if [ $((SECONDS - started)) -lt "$START_GRACE" ] && [ "$rc" != 0 ]; then
    fails=$((fails + 1))
  else
    fails=0
  fi
  if [ "$fails" -ge "$MAX_START_FAILS" ]; then
    say "$name failed within ${START_GRACE} s of its start $fails times in a row (last: $how); giving up on it, the rest keep running (see its lines above)" >&2
    exit 1
  fi
  say "$name exited ($how); restarting in $DELAY s"
  sleep "$DELAY" &
  wait $! || true
  [ "$stopping" = 0 ] || exit 0
done
