# Warden. `make help` lists the targets. Tools are pinned in tools/go.mod (buf, protoc-gen-go-grpc,
# grpcurl) and gen/go.mod (protoc-gen-go, the same version as the runtime) and built into .bin/.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
BIN := $(CURDIR)/.bin
export PATH := $(BIN):$(PATH)
GO ?= go
# Packages of every workspace module (go test ./... at the root would not reach them).
PKGS := ./gen/... ./services/...
DATA_DIR ?= ./.warden
# buf breaking compares against this; CI runs on a clone of main, where it is the previous landing.
BREAKING_AGAINST ?= .git\#branch=main,subdir=proto
FUZZTIME ?= 3s

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

TOOLS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl
.PHONY: tools
tools: $(TOOLS) ## Build the pinned tools into .bin/.

$(BIN)/buf $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl: tools/go.mod tools/go.sum
	cd tools && GOWORK=off $(GO) build -o $(BIN)/ github.com/bufbuild/buf/cmd/buf google.golang.org/grpc/cmd/protoc-gen-go-grpc github.com/fullstorydev/grpcurl/cmd/grpcurl

$(BIN)/protoc-gen-go: gen/go.mod gen/go.sum
	cd gen && GOWORK=off $(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go

.PHONY: generate
generate: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Regenerate gen/ from proto/.
	find gen -name '*.pb.go' -delete
	buf generate
	buf build -o gen/warden/descriptor.binpb

.PHONY: verify-generate
verify-generate: generate ## Fail if gen/ is not what buf generates.
	@if [ -n "$$(git status --porcelain -- gen)" ]; then git status --porcelain -- gen; echo "gen/ is stale: run make generate and commit"; exit 1; fi

.PHONY: lint
lint: $(BIN)/buf ## buf lint and buf format.
	buf lint
	buf format --diff --exit-code

.PHONY: breaking
breaking: $(BIN)/buf ## buf breaking against main (skipped when main has no proto/ yet).
	@if git cat-file -e main:proto 2>/dev/null; then buf breaking --against '$(BREAKING_AGAINST)'; else echo "breaking: main has no proto/ yet, nothing to compare"; fi

.PHONY: verify-fmt
verify-fmt: ## Fail if a Go file is not gofmt-clean.
	@out=$$(gofmt -l gen services); if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet every module.
	$(GO) vet $(PKGS)

.PHONY: verify-tidy
verify-tidy: ## Fail if a go.mod is untidy.
	@for m in gen services; do (cd $$m && GOWORK=off $(GO) mod tidy -diff) || { echo "$$m/go.mod is not tidy"; exit 1; }; done

.PHONY: build
build: ## Build wardend, warden-agent, wardenctl into .bin/.
	$(GO) build -o $(BIN)/ ./services/cmd/...

.PHONY: gotest
gotest: build $(BIN)/grpcurl ## go test -race across the workspace.
	WARDEN_BIN=$(BIN) $(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: fuzz-short
fuzz-short: ## Run every fuzzer briefly (FUZZTIME each).
	@./services/scripts/fuzz.sh $(FUZZTIME)

.PHONY: fuzz
fuzz: ## Run every fuzzer for a minute.
	@./services/scripts/fuzz.sh 60s

.PHONY: test
test: lint verify-generate breaking verify-tidy verify-fmt vet gotest fuzz-short ## Everything CI runs.

.PHONY: run
run: build ## Run wardend with embedded etcd under ./.warden.
	$(BIN)/wardend --data-dir $(DATA_DIR)

.PHONY: bench
bench: build ## Go benchmarks of the hot paths.
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
	WARDEN_BIN=$(BIN) $(BIN)/warden-bench $(BENCH_FLAGS)
