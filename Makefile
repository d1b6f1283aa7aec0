# The two commands a new machine needs: `make run` and `make test`.
SERVICES := gateway order payment email
GO       ?= go
# The same flags as the Dockerfiles' build stage.
BUILD_FLAGS := -trimpath -ldflags="-s -w"

.PHONY: all build run test test-short deps lint bench cost knee loadtest fault dlq dlq-replay fmt clean help

all: build

## build: the four binaries in bin/, with the Dockerfiles' flags
build:
	@mkdir -p bin
	@for s in $(SERVICES); do CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/$$s ./$$s || exit 1; done
	@echo "built bin/{$(shell echo $(SERVICES) | tr ' ' ',')}"

## run: the whole system natively, in the foreground, each service under its own
## RabbitMQ user and PostgreSQL role (created if missing); what dies is restarted;
## Ctrl-C stops it
run: build
	@bash scripts/run.sh

## deps: start PostgreSQL and RabbitMQ if they are down (restart RabbitMQ's app if it cannot declare a quorum queue), install Mailpit if missing
deps:
	@bash scripts/deps.sh

## test: lint (gofmt, vet, staticcheck), then every test with the race detector against the real services
test: deps lint
	$(GO) test -race -count=1 -timeout 12m ./...

## test-short: the quick loop: every test but the long runs (fault, knee, first deploy), no race detector
test-short: deps
	$(GO) test -short -count=1 ./...

## lint: gofmt, vet, staticcheck
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## fmt: gofmt the tree
fmt:
	gofmt -w .

## bench: the checkout path closed-loop (1 and 16 clients, scratch state) beside pgbench with the same statement
bench: deps build
	$(GO) run ./loadtest bench $(BENCH_ARGS)

## cost: ms of CPU per order by component at a fixed rate (scratch state), beside the floor (COST_ARGS="-rate 80 -duration 60s")
COST_ARGS ?= -rate 80 -duration 60s
cost: deps build
	$(GO) run ./loadtest -cost $(COST_ARGS)

## knee: the highest sustainable rate, saga included, of bin/ started on scratch state (KNEE_ARGS="-bin <another build's bin>" for an A/B)
KNEE_ARGS ?=
knee: deps build
	$(GO) run ./loadtest -knee -scratch -env LOG_LEVEL=warn $(KNEE_ARGS)

## fault: the long fault run: 2000+ checkouts, 11 faults, real RabbitMQ and PostgreSQL restarts
## (it stops and starts the machine's RabbitMQ and PostgreSQL: run it alone)
fault: deps
	FAULT_RATE=20 FAULT_DURATION=110s FAULT_OUTAGE=10s FAULT_REAL_RESTARTS=1 \
		$(GO) test -count=1 -run 'TestFault$$' -v -timeout 20m ./e2e/

## dlq: list what is in each dead-letter queue; dlq-replay SERVICE=payment puts them back
dlq: build
	@for s in order payment email; do ./bin/$$s dlq list || exit 1; echo; done

dlq-replay: build
	@test -n "$(SERVICE)" || { echo "usage: make dlq-replay SERVICE=order|payment|email"; exit 1; }
	./bin/$(SERVICE) dlq replay

## loadtest: the default load scenario against a running `make run` (report in loadtest/reports/)
loadtest:
	$(GO) run ./loadtest $(LOADTEST_ARGS)

## clean: remove bin/
clean:
	rm -rf bin

## help: this list
help:
	@grep -E '^## [a-z-]+:' $(MAKEFILE_LIST) | sed -E 's/^## ([a-z-]+): (.*)/  \1\t\2/' | expand -t 14
