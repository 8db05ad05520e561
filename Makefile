# Vigil's build. `make help` lists the targets.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X vigil/internal/buildinfo.version=$(VERSION)
# The package version: commits on main count up, so every build sorts after the one before.
DEB_VERSION ?= $(shell printf '0.1~git%s.%s' "$$(git rev-list --count HEAD 2>/dev/null || echo 0)" "$$(git rev-parse --short HEAD 2>/dev/null || echo local)")
BIN     := bin
# The suite stays well under CI's budget; every test is bounded by this. Packages run one at
# a time (-p 1): the integration tests run real daemons at millisecond heartbeats, and another
# package loading eBPF programs beside them (the verifier) can keep their senders off this
# 2-vCPU machine's CPUs for longer than a detection time.
TEST_TIMEOUT ?= 15m
# Packages needed to compile the C under bpf/ (only for `make generate`).
BPF_APT := clang llvm libbpf-dev

.DEFAULT_GOAL := help
.PHONY: help build deb generate check-generate fmt lint test bench demo clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build vigild and vigil into ./bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/vigild ./cmd/vigil

deb: ## Build the node package bin/vigil_VERSION_ARCH.deb (vigild + systemd unit, vigil)
	@sh cmd/vigild/dist/mkdeb.sh '$(GO)' '$(VERSION)' '$(DEB_VERSION)' $(BIN)

generate: ## Compile bpf/*.c into dataplane/*_bpfel.{go,o} with bpf2go (installs clang when missing)
	@command -v clang >/dev/null && test -f /usr/include/bpf/bpf_helpers.h || { \
		echo "installing $(BPF_APT) through apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BPF_APT) >/dev/null; }
	$(GO) generate ./dataplane/...

check-generate: generate ## Fail when the generated eBPF files differ from the committed ones
	@git diff --exit-code --stat -- dataplane bpf || { \
		echo "generated files differ from the committed ones: commit the output of 'make generate'"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- dataplane bpf); \
	if [ -n "$$untracked" ]; then echo "generated files not committed: $$untracked"; exit 1; fi
	@echo "generated files match the committed ones"

fmt: ## Format the Go code
	gofmt -w $$(git ls-files '*.go')

lint: ## gofmt check, go vet and staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

test: ## Run the whole test suite (root runs the namespace and eBPF tests too)
	$(GO) vet ./...
	$(GO) test -p 1 -count=1 -timeout $(TEST_TIMEOUT) ./...

bench: ## Run every benchmark in full (root); results on stdout and in bench/results.json
	$(GO) run ./bench -json bench/results.json all

demo: ## Build a 3-node cluster in network namespaces, show it and its faults, tear it down (root)
	$(GO) run ./test/demo

clean: ## Remove build output
	rm -rf $(BIN)
