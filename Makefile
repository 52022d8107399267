# Drawbridge. `make help` lists the targets.
export PATH := /usr/local/go/bin:$(PATH)

GO ?= go
FUZZTIME ?= 5m
BENCHFLAGS ?=

.PHONY: help build test lint fuzz fuzz-ci bench demo image run test-vm clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build every command into bin/ (static, CGO_ENABLED=0), and the export's verifiers into bin/verify/
	@mkdir -p bin/verify
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...
	@for t in linux/amd64 linux/arm64 windows/amd64 darwin/amd64 darwin/arm64; do \
		os=$${t%/*}; arch=$${t#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "drawbridge-verify for $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -o bin/verify/drawbridge-verify-$$os-$$arch$$ext ./cmd/drawbridge-verify || exit 1; \
	done

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

# Go's fuzzing engine can stop with "context deadline exceeded" and no failing
# input when fuzztime ends while a worker is busy on a loaded machine; such a
# run is repeated once. A run that wrote a failing input fails at once.
fuzz: ## run every Fuzz target for FUZZTIME (default 5m), one at a time
	@grep -r --include='*_test.go' --exclude-dir=testdata --exclude-dir=.git -o '^func Fuzz[A-Za-z0-9_]*' . | \
	while IFS=: read -r file fn; do \
		name=$${fn#func }; pkg=./$$(dirname "$${file#./}"); \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		out=$$($(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg" 2>&1); rc=$$?; echo "$$out"; \
		if [ $$rc -ne 0 ] && echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
			echo "fuzz $$name: the fuzzing engine ran out of time without a failing input (a loaded machine); once more"; \
			$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) "$$pkg" || exit 1; \
		elif [ $$rc -ne 0 ]; then exit 1; fi; \
	done

# The pulls run over a veth link from an sshd in a network namespace (root
# and OpenSSH needed; skipped with a message otherwise), each next to a local
# backup of the same data.
bench: ## drawbridge against restic, pulls against a local backup, restore to a drive against a local one (BENCHFLAGS=-quick: smoke run)
	$(GO) run ./cmd/drawbridge-bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench 'Pull|LocalBackup|InProcess' -benchtime 5x ./vault/pull
	DRAWBRIDGE_BENCH_TREE=$${TMPDIR:-/var/tmp}/drawbridge-bench/$(if $(findstring -quick,$(BENCHFLAGS)),data-quick,data)/tree \
		$(GO) test -run '^$$' -bench 'RestoreToDrive|SHA256' -benchtime 3x ./vault/todrive
	$(GO) test -tags vm -run '^$$' -bench 'InVM' -benchtime 1x -timeout 30m ./images/

demo: ## hosted mode: a store in demo/, back up a demo tree, list, verify, restore
	@bash .ci/demo

image: ## build kernel, initramfs and UEFI disk image into images/out (DEBUG=1: shell on console)
	$(GO) run ./images/build -out images/out $(if $(DEBUG),-debug)

run: image ## boot the image in QEMU with a demo source host; a window opens at once (ctrl-a x quits)
	@bash images/run-demo

test-vm: ## build the image and boot it in QEMU: first boot, data disk, crashed and hung daemon, UEFI, debug shell, USB tests in its kernel, power off
	$(GO) test -tags vm -count=1 -v -timeout 30m ./images/

clean: ## remove bin/
	rm -rf bin
