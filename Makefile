# open-balena-builder. `make demo` runs a real push end to end on local
# defaults; `make test` installs what the tests need and runs them all.
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:$(PATH)
GO ?= go
# The three modules of the workspace: the builder (.), its API (proto) and
# the end-to-end tests (tools/ stays out of go.work).
PKGS := ./... ./proto/... ./tests/...
TOOLS := bin/buf bin/protoc-gen-go bin/protoc-gen-go-grpc bin/protoc-gen-grpc-gateway bin/protoc-gen-openapiv2 bin/grpcurl
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build image tools proto proto-check lint test test-unit fuzz bench demo deps clean

all: build

## build: the obb binary and the executor plugins, into bin/
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/obb ./cmd/obb
	$(GO) build -o bin/obb-plugin-docker-tcp ./plugins/docker-tcp
	$(GO) build -o bin/obb-plugin-ssh-docker ./plugins/ssh-docker
	$(GO) build -o bin/obb-plugin-buildkit ./plugins/buildkit

## image: the builder's container image (IMAGE=name:tag) on the daemon DOCKER_HOST names, offline
IMAGE ?= open-balena-builder:$(VERSION)
image:
	IMAGE=$(IMAGE) VERSION=$(VERSION) bash scripts/image.sh

## tools: buf, protoc plugins and grpcurl at the versions pinned in tools/go.mod
tools: $(TOOLS)
$(TOOLS) &: tools/go.mod tools/go.sum
	GOWORK=off GOBIN=$(CURDIR)/bin $(GO) -C tools install tool
	@touch $(TOOLS)

## proto: regenerate the Go code and OpenAPI from proto/ (offline)
proto: tools
	buf lint
	buf generate

## proto-check: fail if `make proto` changes anything (generated code is committed)
proto-check: proto
	@git diff --exit-code -- proto || (echo "make proto changed generated code: commit it" >&2; exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- proto)" || (git status --short -- proto; echo "make proto left untracked files" >&2; exit 1)

## lint: buf lint, go vet, gofmt
lint: tools
	buf lint
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v -e '\.pb\.go$$' -e '\.pb\.gw\.go$$')); test -z "$$out" || (echo "gofmt needed: $$out" >&2; exit 1)

## deps: Debian packages (docker.io, docker-registry, qemu-user-static, runc), busybox, binfmt, buildkitd
deps:
	bash scripts/deps.sh

UNIT_PKGS := ./platform/... ./internal/... ./services/... ./plugins/sdk/... ./cmd/...

## test: everything, end to end included (installs and starts what it needs);
## the tests that need no daemon run again under the race detector
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 30m $(PKGS)
	$(GO) test -race -count=1 $(UNIT_PKGS)

## test-unit: the tests that need no daemon
test-unit:
	$(GO) test -count=1 $(UNIT_PKGS)

## fuzz: a short run of every fuzz target (FUZZTIME=1m make fuzz for longer)
FUZZTIME ?= 15s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzExtract -fuzztime $(FUZZTIME) ./services/ingest/upload
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./services/ingest/compose

## bench: push overhead and first byte against raw docker build + push, re-push on a pool
## (affinity against spread), the buildkit registry cache, scheduler dispatch
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 1 ./tests/e2e/ ./tests/pool/ ./services/ingest/upload/
	$(GO) test -run '^$$' -bench . -benchtime 3x -count 1 ./tests/plugins/buildkit/
	$(GO) test -run '^$$' -bench Dispatch -benchtime 1x -count 1 ./services/scheduler/ ./tests/store/

## demo: start a local stack, push examples/hello, print the release and digest
demo: deps
	$(GO) run ./tests/cmd/demo

clean:
	rm -rf bin .cache
