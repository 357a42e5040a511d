# imagegate — the two commands are `make run` and `make test`; `make help` lists the rest.
SHELL := /bin/bash
CARGO ?= cargo
APT_GET := $(shell command -v apt-get 2>/dev/null)

.PHONY: help deps build run test lint fmt bench-ops bench-edge bench-hol clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## build tools the crates want (nasm gives mozjpeg its SIMD; installed if missing)
	@command -v nasm >/dev/null 2>&1 || { \
	  if [ -n "$(APT_GET)" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "installing nasm (mozjpeg SIMD)"; \
	    (apt-get install -y -qq nasm >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nasm >/dev/null 2>&1)) \
	      || echo "warning: could not install nasm; JPEG will be built without SIMD"; \
	  else echo "warning: nasm missing; JPEG will be built without SIMD"; fi; }

build: deps ## release build of the imagegate binary
	$(CARGO) build --release --bin imagegate

run: build ## compute + BFF on loopback (BFF on http://127.0.0.1:8080)
	./target/release/imagegate dev

test: deps ## the whole test suite (unit, integration, end-to-end)
	$(CARGO) test --lib --bins --tests

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

bench-ops: deps ## our image engine vs libvips on a 24 MP JPEG (installs libvips-tools)
	scripts/bench-ops.sh

bench-edge: deps ## BFF vs calling compute directly: added latency, throughput, peak RSS
	scripts/bench-edge.sh

bench-hol: deps ## head-of-line blocking on an emulated lossy link: shared vs bulkhead (needs root)
	scripts/bench-hol.sh

clean:
	$(CARGO) clean
