# shipper: the two commands are `make demo` and `make test`.
GO ?= go
BIN := bin
# What `shipper version` prints: the commit, "-dirty" with local changes.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test vet unit e2e stack-up stack-down clean

all: build

build: ## the agent as one static binary
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X github.com/shipper-agent/shipper/agent.Version=$(VERSION)" -o $(BIN)/shipper ./cmd/shipper

# The path deploy/systemd/shipper.service runs and the Dockerfile installs
# to; deploy/deploy_test.go checks they agree.
PREFIX ?= /usr/local
IMAGE ?= shipper:dev

.PHONY: install image
install: build ## the binary to $(DESTDIR)$(PREFIX)/bin; the systemd unit: deploy/systemd/README.md
	install -D -m 0755 $(BIN)/shipper $(DESTDIR)$(PREFIX)/bin/shipper

image: ## the container image from the Dockerfile (needs a Docker engine); IMAGE=name:tag
	docker build -t $(IMAGE) --build-arg VERSION=$$(git describe --always --dirty 2>/dev/null || echo dev) .

demo: ## local stack + sample logs + the agent; DEMO_SECONDS=60 to stop by itself
	scripts/demo

test: vet unit e2e bench-smoke ## everything CI runs

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/...
	$(GO) -C bench/report vet ./...

unit:
	$(GO) test -race -count=1 ./...
	$(GO) -C bench/report test -count=1 ./...

e2e: ## brings the real Kafka + Elasticsearch stack up itself (test/e2e/stack)
	$(GO) test -tags e2e -count=1 -timeout 20m -v ./test/e2e/ 2>&1 | scripts/e2e-summary

# A seeded run of every fault at once over the real stack (TestChaos in
# test/e2e/chaos_test.go; docs/reliability.md). make test runs it for 2
# minutes; SEED=N replays the schedule and record stream of a run (0: a new
# seed from the clock). The stack comes up as for make e2e.
CHAOS_DURATION ?= 15m
SEED ?= 0
CHAOS_TIMEOUT ?= 40m
.PHONY: chaos
chaos: ## every fault at once for CHAOS_DURATION (15m), then every record checked; SEED=N replays a run; CHAOS_TIMEOUT (40m) bounds it all
	$(GO) test -tags e2e -run '^TestChaos$$' -count=1 -timeout $(CHAOS_TIMEOUT) -v ./test/e2e/ -args -chaos.duration=$(CHAOS_DURATION) -chaos.seed=$(SEED)

stack-up:
	test/e2e/stack up

stack-down:
	test/e2e/stack down

clean:
	rm -rf $(BIN) .cache

.PHONY: bench bench-smoke
bench: ## every benchmark, about 20 min, into bench/results/<date>/ with charts; the summary in docs/benchmarks.md
	GO=$(GO) bench/run

bench-smoke: ## BENCH_QUICK=1 bench/run: every benchmark with tiny sizes, into a temporary directory (make test runs it)
	BENCH_QUICK=1 GO=$(GO) bench/run
