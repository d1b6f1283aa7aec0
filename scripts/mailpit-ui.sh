#!/usr/bin/env bash
# Builds Mailpit WITH its web UI and installs it as "mailpit-ui" beside the
# plain "mailpit" (which stays as it is, for the tests).
#
# A `go install`ed Mailpit serves its HTTP API but a blank page: the UI's
# JS/CSS (server/ui/dist, embedded by server/embed.go's `//go:embed ui`) are
# made by an npm build and are not in the Go module. So this script takes the
# module source (go mod download), copies it to a writable dir, runs
# `npm ci` (or, where the registry lacks some locked versions, `npm install`
# on package.json's ranges) and `npm run build` (esbuild writes
# server/ui/dist/app.{js,css}),
# then `go build`s it with the release version stamped in, as Mailpit's own
# Dockerfile and release workflow do.
#
# Safe to run again: it does nothing when the binary is there and reports the
# right version. It never fails: when a step fails it prints one warning line
# and exits 0, and scripts/run.sh then falls back to the plain binary
# (API only, no web UI). Needs go, node (>= 18) and npm, and the Go module
# proxy and the npm registry the first time.
#
# Env: MAILPIT_UI_BIN overrides where the binary goes
#      (default: $(go env GOBIN) or $(go env GOPATH)/bin, named mailpit-ui).
set -uo pipefail

MAILPIT_VERSION=v1.33.1
MODULE=github.com/axllent/mailpit

say() { printf '\033[1mmailpit-ui:\033[0m %s\n' "$*"; }
give_up() { # reason — one line, and exit 0 so that callers never fail
  printf '\033[1;33mmailpit-ui: warning:\033[0m %s; using the plain mailpit binary (API only, no web UI)\n' "$*" >&2
  exit 0
}

command -v go >/dev/null 2>&1 || give_up "go is not installed"
GOBIN_DIR=$(go env GOBIN 2>/dev/null); [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH 2>/dev/null)/bin"
BIN=${MAILPIT_UI_BIN:-$GOBIN_DIR/mailpit-ui}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/checkout"
LOG="$CACHE/mailpit-ui-build.log"

version_of() { "$1" version --no-release-check 2>/dev/null | awk 'NR==1 {print $2}'; }

# Already built and of the right version: nothing to do.
if [ -x "$BIN" ] && [ "$(version_of "$BIN")" = "$MAILPIT_VERSION" ]; then
  exit 0
fi
# A binary of another version must not be picked up by run.sh if this build
# fails: it would not match the plain mailpit that the tests use.
if [ -e "$BIN" ]; then
  say "removing $BIN ($(version_of "$BIN" || true), want $MAILPIT_VERSION)"
  rm -f "$BIN" || give_up "cannot remove the outdated $BIN"
fi

command -v node >/dev/null 2>&1 || give_up "node is not installed (apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || give_up "npm is not installed (apt-get install npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 18 ] 2>/dev/null || give_up "node $(node --version 2>/dev/null) is too old for Mailpit's UI build (needs >= 18)"

mkdir -p "$CACHE" "$(dirname "$BIN")" || give_up "cannot create $CACHE or $(dirname "$BIN")"

# One build at a time (two `make run`s, say); the loser falls back.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/mailpit-ui.lock"
  flock -w 900 9 || give_up "another mailpit-ui build holds $CACHE/mailpit-ui.lock"
  # The other build may have just finished it.
  if [ -x "$BIN" ] && [ "$(version_of "$BIN")" = "$MAILPIT_VERSION" ]; then exit 0; fi
fi

WORK=$(mktemp -d "$CACHE/mailpit-ui-build.XXXXXX") || give_up "cannot make a build dir in $CACHE"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
: >"$LOG"

step() { # what timeout-seconds command… — runs in $WORK/src, output to $LOG
  local what=$1 secs=$2; shift 2
  printf '\n=== %s: %s\n' "$what" "$*" >>"$LOG"
  if ! (cd "$WORK/src" && timeout "$secs" "$@") >>"$LOG" 2>&1; then
    give_up "$what failed (see $LOG)"
  fi
}

say "building Mailpit $MAILPIT_VERSION with its web UI into $BIN (npm ci, npm run build, go build; a few minutes the first time)"
started=$(date +%s)

# 1. The module source, from the Go module cache or the proxy. Run outside any
# module so that no go.mod is touched.
json=$(cd "$WORK" && GOFLAGS= GOWORK=off timeout 300 go mod download -json "$MODULE@$MAILPIT_VERSION" 2>>"$LOG") \
  || give_up "go mod download $MODULE@$MAILPIT_VERSION failed (see $LOG)"
dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -1)
[ -n "$dir" ] && [ -f "$dir/package-lock.json" ] && [ -f "$dir/server/embed.go" ] \
  || give_up "go mod download gave no usable source dir for $MODULE@$MAILPIT_VERSION"

# 2. A writable copy (the module cache is read-only).
cp -R "$dir" "$WORK/src" && chmod -R u+w "$WORK/src" || give_up "cannot copy $dir to $WORK/src"

# 3. The UI: npm ci, then esbuild into server/ui/dist, which //go:embed ui picks up.
# No browsers or other downloads outside the registry: the e2e tools are not needed.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1 \
  CYPRESS_INSTALL_BINARY=0 ELECTRON_SKIP_BINARY_DOWNLOAD=1 \
  npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false \
  npm_config_fetch_retries=2 npm_config_fetch_timeout=60000
# --omit=peer: the lockfile's peer-only packages are sass-embedded (and its
# deps) and vue-eslint-parser, which the build does not use (esbuild-sass-plugin
# compiles with the plain "sass" package). --ignore-scripts: nothing is to be
# compiled or downloaded outside the registry (esbuild's binary comes as an
# optional npm package).
NPM_FLAGS=(--omit=peer --ignore-scripts --no-audit --no-fund)
printf '\n=== npm ci: npm ci %s\n' "${NPM_FLAGS[*]}" >>"$LOG"
if ! (cd "$WORK/src" && timeout 900 npm ci "${NPM_FLAGS[@]}") >>"$LOG" 2>&1; then
  # A registry (a mirror, say) that lacks some of the exact versions in
  # Mailpit's package-lock.json makes npm ci fail with E404. Then resolve
  # package.json's own ranges against what the registry has (patch releases
  # newer than the lockfile's), and take rapidoc (only used by the API docs
  # page, /api/v1/) at whatever version the registry has, as its ^12 range
  # may have nothing there.
  say "npm ci failed (see $LOG); resolving package.json's ranges without the lockfile instead"
  rm -rf "$WORK/src/node_modules" "$WORK/src/package-lock.json"
  step "npm pkg set" 60 npm pkg set 'dependencies.rapidoc=*'
  step "npm install" 900 npm install "${NPM_FLAGS[@]}"
fi
step "npm run build" 300 npm run build
for f in app.js app.css; do
  [ -s "$WORK/src/server/ui/dist/$f" ] || give_up "npm run build made no server/ui/dist/$f (see $LOG)"
done

# 4. The binary, stamped with the release version like Mailpit's own builds.
step "go build" 900 env CGO_ENABLED=0 GOFLAGS= GOWORK=off go build -trimpath \
  -ldflags "-s -w -X $MODULE/config.Version=$MAILPIT_VERSION" -o "$WORK/mailpit-ui" .
got=$(version_of "$WORK/mailpit-ui")
[ "$got" = "$MAILPIT_VERSION" ] || give_up "the built binary reports version '$got', not $MAILPIT_VERSION"

# Put it in place in one step, so a half-written binary is never picked up.
cp "$WORK/mailpit-ui" "$BIN.tmp.$$" && chmod 755 "$BIN.tmp.$$" && mv -f "$BIN.tmp.$$" "$BIN" \
  || { rm -f "$BIN.tmp.$$"; give_up "cannot install $BIN"; }
say "built $BIN in $(( $(date +%s) - started )) s (web UI embedded)"
