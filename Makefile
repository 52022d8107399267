# Drawbridge. `make help` lists the targets.
export PATH := /usr/local/go/bin:$(PATH)

GO ?= go
FUZZTIME ?= 5m
BENCHFLAGS ?=

.PHONY: help build test lint fuzz fuzz-ci bench demo image run test-vm clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build every command into bin/ (static, CGO_ENABLED=0)
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

lint: ## check gofmt on tracked Go files, then go vet
	@unformatted=$$(git ls-files -z '*.go' | xargs -0 -r gofmt -l); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

test: lint ## lint, unit tests, race tests of vault/ (-short), then fuzz-ci
	$(GO) test -count=1 ./...
	$(GO) test -race -short -count=1 ./vault/...
	@$(MAKE) --no-print-directory fuzz-ci

fuzz-ci: ## run every Fuzz target for 10s
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10s

fuzz: ## run every Fuzz target for FUZZTIME (default 5m), one at a time
	@grep -r --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git -o '^func Fuzz[A-Za-z0-9_]*' . | \
	while IFS=: read -r file fn; do \
		name=$${fn#func }; pkg=./$$(dirname "$${file#./}"); \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
	done

bench: ## drawbridge against restic on generated data (BENCHFLAGS=-quick for a smoke run)
	$(GO) run ./cmd/drawbridge-bench $(BENCHFLAGS)

demo: ## hosted mode: a store in demo/, back up a demo tree, list, verify, restore
	@bash .ci/demo

image: ## build the appliance disk image
	@echo "not built yet: see the appliance image issue"; exit 1

run: ## boot the appliance image in QEMU
	@echo "not built yet: see the appliance image issue"; exit 1

test-vm: ## boot the image in QEMU and run the VM tests
	@echo "not built yet: see the appliance image issue"; exit 1

clean: ## remove bin/
	rm -rf bin
