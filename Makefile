# ferry — run `make` for the list of targets.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell cat VERSION 2>/dev/null || git describe --tags --always 2>/dev/null || echo dev)
LDFLAGS := -X github.com/ferry-cd/ferry/pkg/version.Version=$(VERSION)
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))

.DEFAULT_GOAL := help

.PHONY: help
help: ## print this list
	@echo "ferry $(VERSION) — make targets:"
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every program into bin/, version-stamped
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: lint
lint: fmt-check vet ## gofmt, go vet and staticcheck
	$(GO) tool staticcheck ./...

.PHONY: check
check: fmt-check vet ## fast edit loop: gofmt, vet, unit and integration tests
	$(GO) test -count=1 ./...

.PHONY: test
test: lint build ## everything: lint, build, all tests (what CI runs)
	$(GO) test -count=1 ./...

.PHONY: bench
bench: ## print performance figures (peak RSS, throughput vs curl, idle GitHub cost)
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./pkg/...

.PHONY: demo
demo: ## show a rollout on a virtual datacenter (comes with the dctest issue)
	@echo "make demo arrives with dctest (the virtual datacenter); until then see README.md" >&2; exit 2

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN) dist
