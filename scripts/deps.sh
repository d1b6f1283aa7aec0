#!/usr/bin/env bash
# Makes sure what the system and its tests need is here and running:
# PostgreSQL, RabbitMQ (with the management plugin) and the Mailpit binary.
# Safe to run again; it only starts or installs what is missing.
#
#   deps.sh            all of it (make test)
#   deps.sh brokers    PostgreSQL and RabbitMQ only
#   deps.sh mailpit    the Mailpit binary only (make run installs it in the
#                      background, so that the services need not wait)
set -euo pipefail
what=${1:-all}

MAILPIT_VERSION=v1.33.1
GOBIN_DIR=$(go env GOBIN); [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"

say() { printf '\033[1mdeps:\033[0m %s\n' "$*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port what seconds
  for _ in $(seq 1 "$(( $3 * 5 ))"); do port_open "$1" && return 0; sleep 0.2; done
  echo "deps: $2 did not open port $1 within $3 s" >&2; return 1
}

if [ "$what" != mailpit ]; then
# PostgreSQL
if ! port_open 5432; then
  say "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  else
    echo "deps: PostgreSQL is not running on 5432 and pg_ctlcluster is missing; install PostgreSQL" >&2; exit 1
  fi
  wait_port 5432 PostgreSQL 30
fi

# RabbitMQ
if ! port_open 5672; then
  say "starting RabbitMQ"
  command -v rabbitmq-server >/dev/null || { echo "deps: RabbitMQ is not installed" >&2; exit 1; }
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ 60
fi
if command -v rabbitmq-plugins >/dev/null && ! port_open 15672; then
  say "enabling the RabbitMQ management plugin (UI on :15672)"
  rabbitmq-plugins enable rabbitmq_management >/dev/null
  wait_port 15672 "RabbitMQ management" 30 || true
fi

# A running RabbitMQ can still be unable to make quorum queues: a queue
# declared while its vhost was being deleted (as parallel tests do) once
# left RabbitMQ 3.10's quorum-queue supervisor dead, and every declaration
# then failed with INTERNAL_ERROR until the app restarted. Probe it with a
# quorum queue in a throwaway vhost and restart the app when that fails.
rabbit_api() { curl -s -o /dev/null -w '%{http_code}' -u "${RABBIT_USER:-guest}:${RABBIT_PASSWORD:-guest}" \
  -H 'Content-Type: application/json' -X "$1" "http://127.0.0.1:15672/api/$2" ${3:+-d "$3"}; }
quorum_ok() {
  local vhost="deps-probe-$$" code
  rabbit_api PUT "vhosts/$vhost" >/dev/null
  rabbit_api PUT "permissions/$vhost/${RABBIT_USER:-guest}" '{"configure":".*","write":".*","read":".*"}' >/dev/null
  code=$(rabbit_api PUT "queues/$vhost/probe" '{"durable":true,"arguments":{"x-queue-type":"quorum"}}')
  rabbit_api DELETE "vhosts/$vhost" >/dev/null
  [ "$code" = 201 ] || [ "$code" = 204 ]
}
if command -v curl >/dev/null && command -v rabbitmqctl >/dev/null && port_open 15672 && ! quorum_ok; then
  say "RabbitMQ cannot declare a quorum queue; restarting its app"
  rabbitmqctl stop_app >/dev/null && rabbitmqctl start_app >/dev/null
  wait_port 5672 RabbitMQ 60
  quorum_ok || { echo "deps: RabbitMQ still cannot declare a quorum queue; see its log" >&2; exit 1; }
fi

fi

# Mailpit (MailHog's maintained successor): SMTP for the email service and an
# inbox with an HTTP API for people and tests.
if [ "$what" != brokers ] && ! command -v mailpit >/dev/null && [ ! -x "$GOBIN_DIR/mailpit" ]; then
  say "installing Mailpit $MAILPIT_VERSION (go install, about a minute)"
  go install "github.com/axllent/mailpit@$MAILPIT_VERSION"
fi
