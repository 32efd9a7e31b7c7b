# Vigil — run `make help` for the targets.
SHELL := /bin/bash
MODULES := pkg services/ingest services/policy services/guardian services/api cmd/vigil deploy
GO ?= go
GOTESTFLAGS ?= -count=1

.PHONY: help dev test build clickhouse vet fmt-check unit bench fuzz tidy clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

dev: clickhouse build ## start Vigil: ClickHouse (installed if missing), then `vigil dev` with embedded NATS
	./bin/vigil dev

test: clickhouse fmt-check vet ## run the whole test suite against real NATS (embedded) and ClickHouse
	@set -e; for m in $(MODULES); do echo "== $$m"; (cd $$m && $(GO) test $(GOTESTFLAGS) ./...); done

build: ## build bin/vigil and the per-service binaries
	$(GO) build -o bin/vigil github.com/vigilhq/vigil/cmd/vigil
	$(GO) build -o bin/ingest github.com/vigilhq/vigil/services/ingest/cmd/ingest
	$(GO) build -o bin/api github.com/vigilhq/vigil/services/api/cmd/api
	$(GO) build -o bin/policy github.com/vigilhq/vigil/services/policy/cmd/policy
	$(GO) build -o bin/guardian github.com/vigilhq/vigil/services/guardian/cmd/guardian

clickhouse: ## make sure a local ClickHouse answers on :9000
	@bash scripts/clickhouse.sh

vet: ## go vet every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

fmt-check: ## fail if any Go file is not gofmt-ed
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit: ## tests that need no ClickHouse
	@set -e; for m in $(MODULES); do (cd $$m && VIGIL_TEST_SKIP_CLICKHOUSE=1 $(GO) test $(GOTESTFLAGS) -short ./...); done

bench: clickhouse build ## go benchmarks of every hot path, then the end-to-end ingest bench
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...); done
	./bin/vigil bench ingest

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $${FUZZTIME:-30s} ./event/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzToken$$' -fuzztime $${FUZZTIME:-30s} ./streams/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzParseRegistration$$' -fuzztime $${FUZZTIME:-30s} ./agent/

tidy: ## go mod tidy every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean: ## remove build output and the dev data directory
	rm -rf bin .vigil
