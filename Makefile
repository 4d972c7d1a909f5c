# ferry — run `make` for the list of targets.

SHELL := /bin/bash
GO ?= go
# A release is built with VERSION=YYYY.MM.DD-N; a local build gets a
# version that sorts below every release.
VERSION ?= $(shell cat VERSION 2>/dev/null || echo "0.0.0+g$$(git rev-parse --short HEAD 2>/dev/null || echo dev)")
LDFLAGS := -s -w -X github.com/ferry-cd/ferry/pkg/version.Version=$(VERSION)
BIN ?= bin
DIST ?= dist
BUILD ?= build
# command:package pairs that the tests need; `make deps` installs the missing.
DEB_TOOLS := dpkg-deb:dpkg lintian:lintian minisign:minisign curl:curl containerd:containerd ctr:containerd systemd-analyze:systemd git:git promtool:prometheus chromium:chromium \
	systemd-nspawn:systemd-container debootstrap:debootstrap nsenter:util-linux ip:iproute2
CMDS := $(notdir $(wildcard cmd/*))

.DEFAULT_GOAL := help

.PHONY: help
help: ## print this list
	@echo "ferry $(VERSION) — make targets:"
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: build
build: ## build every program into bin/, version-stamped
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -buildmode=pie -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

.PHONY: deps
deps: ## install the Debian packages the tests need (as root), or say which
	@missing=""; for tp in $(DEB_TOOLS); do command -v $${tp%%:*} >/dev/null || case " $$missing " in *" $${tp#*:} "*) ;; *) missing="$$missing $${tp#*:}";; esac; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing:$$missing; run: sudo apt-get install -y$$missing" >&2; exit 1; \
		fi; \
	fi

.PHONY: deb
deb: build ## build dist/ferry_VERSION_amd64.deb and dist/SHA256SUMS (SIGNING_KEY=file also signs)
	@mkdir -p $(DIST) $(BUILD)
	cp pkg/artifacts/artifacts.yaml $(BUILD)/artifacts.yaml
	debian/changelog.sh $(VERSION) | gzip -9n > $(BUILD)/changelog.Debian.gz
	rm -rf $(BUILD)/docs
	$(BIN)/ferry gen-docs $(BUILD)/docs
	$(BIN)/ferry-ci gen-docs $(BUILD)/docs
	$(BIN)/ferry-updater --gen-man $(BUILD)/docs/man8
	$(BIN)/ferry-worker --gen-man $(BUILD)/docs/man8
	FERRY_VERSION=$(VERSION) FERRY_BIN=$(BIN) FERRY_BUILD=$(BUILD) $(GO) tool nfpm package -f debian/nfpm.yaml -p deb -t $(DIST)/ferry_$(VERSION)_amd64.deb
	cd $(DIST) && sha256sum ferry_$(VERSION)_amd64.deb > SHA256SUMS
	@if [ -n "$(SIGNING_KEY)" ]; then $(BIN)/ferry-ci sign --key "$(SIGNING_KEY)" $(DIST)/SHA256SUMS; fi

.PHONY: fmt-check
fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet:
	$(GO) vet ./...

.PHONY: lint
lint: fmt-check vet ## gofmt, go vet, staticcheck, and no exported function without a caller outside tests
	$(GO) tool staticcheck ./...
	$(GO) run ./internal/unused

# The Go vulnerability database govulncheck reads; a file:// mirror works.
VULNDB ?= https://vuln.go.dev

.PHONY: vuln
vuln: ## check the module and binaries for known vulnerabilities (govulncheck; needs VULNDB reachable)
	@case "$(VULNDB)" in \
	http*) if ! curl -fsS --max-time 10 -o /dev/null "$(VULNDB)/index/modules.json.gz" 2>/dev/null; then \
		echo "make vuln: NOT CHECKED: the vulnerability database $(VULNDB) cannot be reached from this machine."; \
		echo "  Run it where it can be, or point VULNDB at a mirror (VULNDB=file:///path/to/vulndb)."; exit 1; fi;; \
	esac; \
	$(GO) tool govulncheck -db "$(VULNDB)" ./...

.PHONY: check
check: fmt-check vet ## fast edit loop: gofmt, vet, unit and integration tests (no dctest, no packaging)
	set -o pipefail; $(GO) test -count=1 -json $$($(GO) list ./... | grep -v -e /dctest -e /debian) 2>&1 | $(GO) run ./internal/testtimes

# The machine scenarios' base image (a Debian root with systemd), cached
# outside the tree and rebuilt when dctest/machine/image.sh changes.
MACHINE_CACHE ?= /var/cache/ferry-dctest
export FERRY_DCTEST_CACHE := $(MACHINE_CACHE)

.PHONY: machine-image
machine-image: deps ## build (or find cached) the base image of dctest's systemd machines (root; 1-6 minutes the first time)
	@dctest/machine/image.sh $(MACHINE_CACHE) >/dev/null

.PHONY: machines
machines: machine-image ## only the machine scenarios: ferry on systemd machines on a private network (root)
	set -o pipefail; $(GO) test -count=1 -v -run '^TestMachines' -timeout 30m ./dctest/ 2>&1 | grep -E '^(---|=== RUN|ok|FAIL|PASS)|scenario took|dctest:|Error|leads|stopped'

# The versions of ferry's package that the tests install (dctest's N and
# N1, debian's v1 and v2). `make test` builds each once, before the tests,
# into a temporary directory it removes afterwards, and hands them to every
# test that needs one (FERRY_TEST_PACKAGES); a test run on its own builds
# what it needs.
TEST_VERSIONS := 2026.01.01-1 2026.01.02-1

# with-test-packages runs the shell command that follows it with
# FERRY_TEST_PACKAGES set, after building the packages (side by side).
define with-test-packages
set -o pipefail; pkgs=$$(mktemp -d /tmp/ferry-test-packages-XXXXXX); trap 'rm -rf "$$pkgs"' EXIT; \
began=$$SECONDS; pids=""; \
for v in $(TEST_VERSIONS); do \
	$(MAKE) --no-print-directory deb VERSION=$$v DIST=$$pkgs/$$v BUILD=$$pkgs/$$v/build BIN=$$pkgs/$$v/bin > $$pkgs/$$v.log 2>&1 & pids="$$pids $$!"; \
done; \
for p in $$pids; do wait $$p || { cat $$pkgs/*.log >&2; echo "building the test packages failed" >&2; exit 1; }; done; \
echo "built ferry $(TEST_VERSIONS) for the tests in $$((SECONDS - began))s"; \
export FERRY_TEST_PACKAGES=$$pkgs;
endef

.PHONY: test
test: deps lint machine-image ## everything: lint, build, all tests and dctest (what CI runs); ends with the slowest tests and packages
	@$(with-test-packages) \
	echo "$(GO) test -count=1 -timeout 45m -json ./... | $(GO) run ./internal/testtimes"; \
	$(GO) test -count=1 -timeout 45m -json ./... 2>&1 | $(GO) run ./internal/testtimes

.PHONY: test-under-load
test-under-load: deps machine-image ## dctest while another process keeps one core busy: the scenarios' timings must hold on a loaded machine
	@$(with-test-packages) \
	(while :; do :; done) & hog=$$!; trap 'kill $$hog; rm -rf "$$pkgs"' EXIT; \
	echo "a busy loop (pid $$hog) keeps one core busy; $(GO) test -count=1 -timeout 45m -json ./dctest/"; \
	$(GO) test -count=1 -timeout 45m -json ./dctest/ 2>&1 | $(GO) run ./internal/testtimes

.PHONY: dctest
dctest: deps ## the datacenter test: every scenario on a virtual datacenter
	set -o pipefail; $(GO) test -count=1 -v -timeout 45m ./dctest/ 2>&1 | grep -E '^(---|=== RUN|ok|FAIL|PASS)|scenario took|dctest:|Error'

# Rounds of `make chaos`; SEED=n replays a run.
ROUNDS ?= 50

.PHONY: chaos
chaos: deps ## many rollouts with random SIGKILLs (ROUNDS=50, SEED=n replays); prints a line per round and a table
	set -o pipefail; FERRY_CHAOS_ROUNDS=$(ROUNDS) FERRY_CHAOS_SEED=$(SEED) $(GO) test -count=1 -v -run '^TestChaosRollouts$$' -timeout 0 ./dctest/ 2>&1 \
		| grep --line-buffered -E 'chaos:|^(---|ok|FAIL)|scenario took|Error'

.PHONY: bench
bench: ## print figures: download RSS and throughput vs curl, idle GitHub cost, coordination overhead, uplink bytes per rollout with and without peers
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./pkg/...

.PHONY: bench-coordination
bench-coordination: ## barrier cost on a 3-member etcd cluster (fsync on) for 5, 100, 1000 servers and 10, 30 steps: ferry against one put per server (of 1 byte, and of a status's bytes), a bare barrier (the protocol alone) and neco's barrier, 3 rounds (about 5 minutes; SERVERS=, STEPS=, BENCH_ROUNDS= pick)
	@mkdir -p $(BUILD)
	$(GO) build -o $(BUILD)/ferry-dctest-etcd ./dctest/cmd/ferry-dctest-etcd
	$(GO) run ./dctest/cmd/ferry-bench-coordination --etcd $(BUILD)/ferry-dctest-etcd $(if $(SERVERS),--servers $(SERVERS)) $(if $(STEPS),--steps $(STEPS)) $(if $(BENCH_ROUNDS),--rounds $(BENCH_ROUNDS))

.PHONY: bench-uplink
bench-uplink: deps machine-image ## what a rollout costs the site's uplink: a 64 MiB package and a 256 MiB image to 1 and 10 systemd machines behind a 100 Mbit/s uplink, peer layer off and on (root; about 15 minutes)
	$(GO) run ./dctest/cmd/ferry-bench-uplink $(if $(SERVERS),--servers $(SERVERS))

# Where the demo's status page listens (a busy port falls back to a free one).
DEMO_LISTEN ?= 127.0.0.1:9711

.PHONY: demo
demo: deps ## a virtual datacenter of 3 boot servers doing a rollout, live in the terminal and on a status page (DEMO=canary: a canary pause and resume)
	@echo "ferry demo: the status page will be at http://$(DEMO_LISTEN)/ (the demo says so if that port is taken)"
	@echo "ferry demo: compiling the demo driver (about 90s with a cold Go build cache)..."
	@$(GO) run ./dctest/cmd/ferry-demo --status-listen $(DEMO_LISTEN) $(if $(DEMO),--demo $(DEMO))

.PHONY: screenshot
screenshot: deps ## take docs/images/status-page.png with the browser test (headless chromium)
	@mkdir -p docs/images
	FERRY_STATUS_SCREENSHOT=$(CURDIR)/docs/images/status-page.png $(GO) test -count=1 -run '^TestStatusPageInBrowser$$' -timeout 10m ./dctest/

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN) $(DIST) $(BUILD)
