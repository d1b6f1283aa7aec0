#!/usr/bin/env bash
# Least privilege for a native run: creates, if missing, one RabbitMQ user per
# service with permissions for its own queues only, and one PostgreSQL role
# per service that owns its database and nothing else (no superuser, no
# CREATEDB, no CREATEROLE). Safe to run again: it sets the same passwords and
# permissions, and hands the service's database (and whatever an earlier run
# as postgres made in it) to the service's role.
#
# What to create is read from the URLs the services are given, so that the
# two cannot disagree:
#   ORDER_AMQP_URL, PAYMENT_AMQP_URL, EMAIL_AMQP_URL   amqp://user:password@host:port/vhost
#   ORDER_DATABASE_URL, PAYMENT_DATABASE_URL           postgres://role:password@host:port/db
# An unset URL is skipped. Admin access, as the tests use:
#   PG_ADMIN_URL     (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable; psql)
#   RABBITMQ_API     (default http://guest:guest@127.0.0.1:15672; the management API),
#                    or rabbitmqctl on this machine when the API does not answer.
#
# The permissions follow events.Topology (internal/events/topology.go): every
# service declares the whole topology at start, so each may configure every
# queue of it (the main queues, their .retry.N and .dlq queues) and the
# exchange, and write to every main queue (queue.bind needs it); it may read
# (consume) only its own queues. deploy/permissions_test.go holds these
# regexes, compose's definitions and the Kubernetes Permissions to the
# topology against the real broker.
#
# It also sets the topology's policies (events.Policies) on each vhost: the
# main queues' dead-lettering past the delivery limit and the retry queues'
# way back. They are policies, not queue arguments, because RabbitMQ checks
# read on a queue declared with a dead-letter exchange; without them a retry
# would expire into nothing. deploy/native_users_test.go holds them to the
# code.
set -euo pipefail

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}
RABBITMQ_API=${RABBITMQ_API:-http://guest:guest@127.0.0.1:15672}

say() { printf '\033[1musers:\033[0m %s\n' "$*"; }
die() { printf 'users: %s\n' "$*" >&2; exit 1; }

# The queues of events.Topology; each service's own queue starts with its name.
QUEUES='payment\.order-created|email\.payment-results|order\.saga-events'
EXCHANGE='ecommerce_events'
perm_configure() { printf '^(%s|(%s)(\\.retry\\.[0-9]+|\\.dlq)?)$' "$EXCHANGE" "$QUEUES"; }
# amq.default: moving a message to a retry or dead-letter queue publishes
# through the default exchange (and declaring a retry queue, whose dead-letter
# exchange is the default one, needs write on it too).
perm_write() { printf '^(%s|amq\\.default|%s)$' "$EXCHANGE" "$QUEUES"; }
# Its own queue, retry queues and dead-letter queue; the exchange
# (queue.bind reads from it).
perm_read() { # own queue regex
  printf '^(%s|%s(\\.retry\\.[0-9]+|\\.dlq)?)$' "$EXCHANGE" "$1"
}
# The policies of events.Policies for the topology's queues on vhost $1, as
# JSON lines.
policies() {
  local q
  for q in payment.order-created email.payment-results order.saga-events; do
    jq -nc --arg vhost "$1" --arg q "$q" --arg pat "${q//./\\.}" --argjson prio 10 --argjson limit 50 '
      {vhost: $vhost, name: $q, pattern: "^\($pat)$", "apply-to": "queues", priority: $prio,
       definition: {"delivery-limit": $limit, "dead-letter-exchange": "", "dead-letter-routing-key": "\($q).dlq",
                    "dead-letter-strategy": "at-least-once", overflow: "reject-publish"}},
      {vhost: $vhost, name: "\($q).retry", pattern: "^\($pat)\\.retry\\.[0-9]+$", "apply-to": "queues", priority: $prio,
       definition: {"dead-letter-exchange": "", "dead-letter-routing-key": $q}}'
  done
}

safe() { [[ $1 =~ ^[A-Za-z0-9._~-]+$ ]] || die "$2 '$1' must be letters, digits and - _ . ~ (it goes into URLs and JSON as it is)"; }

# parse URL -> sets U_USER U_PASS U_PATH (no leading slash)
parse() {
  local re='^[a-z]+://([^:@/]+)(:([^@/]*))?@[^/]+(/([^?]*))?'
  [[ $1 =~ $re ]] || die "cannot read user and password from $2"
  U_USER=${BASH_REMATCH[1]} U_PASS=${BASH_REMATCH[3]} U_PATH=${BASH_REMATCH[5]}
  safe "$U_USER" "$2 user"
  [ -z "$U_PASS" ] || safe "$U_PASS" "$2 password"
}

# ---------------------------------------------------------------- RabbitMQ
entries=() # one JSON object a user, made by jq (it does the escaping)
add_rabbit() { # service url
  local svc=$1 url=$2 own
  [ -n "$url" ] || return 0
  parse "$url" "${svc^^}_AMQP_URL"
  [ -n "$U_PASS" ] || die "${svc^^}_AMQP_URL has no password"
  local vhost=${U_PATH:-/}
  vhost=${vhost//%2F/\/}; vhost=${vhost//%2f/\/}
  case $svc in
    order) own='order\.saga-events' ;;
    payment) own='payment\.order-created' ;;
    email) own='email\.payment-results' ;;
    *) die "unknown service $svc" ;;
  esac
  entries+=("$(jq -nc --arg user "$U_USER" --arg password "$U_PASS" --arg vhost "$vhost" \
    --arg configure "$(perm_configure)" --arg write "$(perm_write)" --arg read "$(perm_read "$own")" \
    '{$user, $password, $vhost, $configure, $write, $read}')")
}
add_rabbit order "${ORDER_AMQP_URL:-}"
add_rabbit payment "${PAYMENT_AMQP_URL:-}"
add_rabbit email "${EMAIL_AMQP_URL:-}"

if [ ${#entries[@]} -gt 0 ]; then
  command -v jq >/dev/null || die "jq is needed to create the RabbitMQ users (apt-get install jq)"
  # One definitions document (the format compose's rabbitmq loads), imported
  # in one call: the users with their passwords, the vhosts, the permissions.
  defs=$(printf '%s\n' "${entries[@]}" | jq -sc '{
    users: map({name: .user, password, tags: []}),
    vhosts: (map(.vhost) | unique | map({name: .})),
    permissions: map({user, vhost, configure, write, read})}')
  pols=$(for v in $(printf '%s' "$defs" | jq -r '.vhosts[].name'); do policies "$v"; done | jq -sc .)
  defs=$(printf '%s' "$defs" | jq -c --argjson p "$pols" '. + {policies: $p}')
  api_auth=$(printf '%s' "$RABBITMQ_API" | sed -n 's#^[a-z]*://\([^@/]*\)@.*#\1#p')
  api_base=$(printf '%s' "$RABBITMQ_API" | sed 's#://[^@/]*@#://#')
  if curl -fsS -o /dev/null --max-time 5 -u "$api_auth" "$api_base/api/overview" 2>/dev/null; then
    printf '%s' "$defs" | curl -fsS --max-time 30 -u "$api_auth" -H 'Content-Type: application/json' \
      -X POST --data-binary @- "$api_base/api/definitions" >/dev/null \
      || die "the RabbitMQ management API refused the users' definitions"
  elif command -v rabbitmqctl >/dev/null; then
    printf '%s' "$defs" | rabbitmqctl -q import_definitions - >/dev/null \
      || die "rabbitmqctl import_definitions failed (run as a user that may use rabbitmqctl, or enable the management plugin)"
  else
    die "neither the RabbitMQ management API ($api_base) nor rabbitmqctl can create the services' users"
  fi
  say "RabbitMQ users $(printf '%s' "$defs" | jq -r '.users | map(.name) | join(", ")'): each reads only its own queues; the topology's policies set"
fi

# ---------------------------------------------------------------- PostgreSQL
add_pg() { # service url
  local svc=$1 url=$2
  [ -n "$url" ] || return 0
  parse "$url" "${svc^^}_DATABASE_URL"
  local role=$U_USER pass=$U_PASS db=$U_PATH
  [ -n "$db" ] || die "${svc^^}_DATABASE_URL names no database"
  [ "$role" != postgres ] || die "${svc^^}_DATABASE_URL uses the superuser postgres; give the service its own role"
  command -v psql >/dev/null || die "psql is needed to create the role $role"
  psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -v role="$role" -v pass="$pass" -v db="$db" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pass') WHERE :'pass' <> '' \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
\c :"db"
SET client_min_messages = warning;
-- What an earlier run as postgres made here (tables with their sequences,
-- goose's version table) goes to the service's role.
SELECT format('ALTER TABLE %I.%I OWNER TO %I', schemaname, tablename, :'role')
  FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'role' \gexec
SELECT format('ALTER SEQUENCE %I.%I OWNER TO %I', schemaname, sequencename, :'role')
  FROM pg_sequences WHERE schemaname = 'public' AND sequenceowner <> :'role' \gexec
SQL
  say "PostgreSQL role $role owns $db (no superuser)"
}
add_pg order "${ORDER_DATABASE_URL:-}"
add_pg payment "${PAYMENT_DATABASE_URL:-}"
