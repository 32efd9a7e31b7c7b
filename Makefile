# Vigil — run `make help` for the targets.
SHELL := /bin/bash
# Every module of the workspace, read from go.work so a new service is
# tested, vetted and built without editing this file.
MODULES := $(shell awk '/^use \(/{f=1;next} f&&/^\)/{f=0} f{sub(/^\.\//,"",$$1); print $$1}' go.work)
SERVICES := $(notdir $(wildcard services/*/cmd/*))
GO ?= go
# cmd/vigil's end-to-end suite starts the whole stack many times; on a
# loaded machine it can pass go test's default 10-minute limit.
GOTESTFLAGS ?= -count=1 -timeout 30m

.PHONY: help dev test build clickhouse chaos vet fmt-check unit bench fuzz tidy clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

dev: clickhouse build ## start Vigil: ClickHouse (installed if missing), then `vigil dev` with embedded NATS
	./bin/vigil dev

test: clickhouse fmt-check vet ## run the whole test suite against real NATS (embedded) and ClickHouse
	@failed=""; for m in $(MODULES); do echo "== $$m"; (cd $$m && $(GO) test $(GOTESTFLAGS) ./...) || failed="$$failed $$m"; done; \
	if [ -n "$$failed" ]; then echo "FAILED modules:$$failed"; exit 1; fi

build: ## build bin/vigil and the per-service binaries
	$(GO) build -o bin/vigil github.com/vigilhq/vigil/cmd/vigil
	@set -e; for s in $(SERVICES); do $(GO) build -o bin/$$s github.com/vigilhq/vigil/services/$$s/cmd/$$s; done

chaos: clickhouse ## the fault suite at full length (vigil chaos; `make test` runs it shortened)
	$(GO) run github.com/vigilhq/vigil/cmd/vigil chaos

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
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzJSON$$' -fuzztime $${FUZZTIME:-30s} ./redact/
	cd services/risk && $(GO) test -run '^$$' -fuzz '^FuzzParseSpan$$' -fuzztime $${FUZZTIME:-30s} .
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzCheckURL$$' -fuzztime $${FUZZTIME:-30s} ./ssrf/
	cd services/ledger/evidence && $(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $${FUZZTIME:-30s} . && $(GO) test -run '^$$' -fuzz '^FuzzCanonicalize$$' -fuzztime $${FUZZTIME:-30s} .
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzParseToken$$' -fuzztime $${FUZZTIME:-30s} ./auth/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzNINOHint$$' -fuzztime $${FUZZTIME:-30s} ./redact/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzString$$' -fuzztime $${FUZZTIME:-30s} ./redact/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $${FUZZTIME:-30s} ./webhook/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzParseAnswer$$' -fuzztime $${FUZZTIME:-30s} ./judge/
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzMatchers$$' -fuzztime $${FUZZTIME:-30s} ./event/
	cd services/api && $(GO) test -run '^$$' -fuzz '^FuzzSensitiveKey$$' -fuzztime $${FUZZTIME:-30s} .
	cd services/notifier && $(GO) test -run '^$$' -fuzz '^FuzzRiskRecord$$' -fuzztime $${FUZZTIME:-30s} . && $(GO) test -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime $${FUZZTIME:-30s} .
	cd services/ledger && $(GO) test -run '^$$' -fuzz '^FuzzEventCanonical$$' -fuzztime $${FUZZTIME:-30s} .
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzFailClosed$$' -fuzztime $${FUZZTIME:-30s} ./policy/
	cd services/ingest && $(GO) test -run '^$$' -fuzz '^FuzzSpanEvent$$' -fuzztime $${FUZZTIME:-30s} ./internal/otelspan/

tidy: ## go mod tidy every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) mod tidy); done

clean: ## remove build output and the dev data directory
	rm -rf bin .vigil
