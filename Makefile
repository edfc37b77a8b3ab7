.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PYO3_PYTHON := $(abspath $(BIN)/python)
RUST_SRC := $(shell find rust -name '*.rs' -o -name 'Cargo.toml') Cargo.toml $(wildcard Cargo.lock)
STAMP := $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'maturin>=1.9.4,<2'

$(STAMP): $(BIN)/python pyproject.toml $(RUST_SRC)
	$(BIN)/maturin develop --release --extras dev -q
	touch $@

.PHONY: install
install: $(STAMP) ## Create .venv if missing and install ordonum (release build) with test/dev tools

.PHONY: postgres
postgres: ## Install PostgreSQL (Debian packages) if missing: the tests run the API on it too
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update && apt-get install -y --no-install-recommends postgresql)

.PHONY: test
test: install postgres ## Run the Rust tests, the Python tests (benchmarks once, as smoke tests; the API on both backends) and the lint
	cargo test --quiet
	$(BIN)/pytest
	$(MAKE) --no-print-directory lint

.PHONY: lint
lint: install ## rustfmt, clippy -D warnings, ruff, mypy --strict, stubtest
	cargo fmt --all -- --check
	cargo clippy --quiet --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest ordonum._core --allowlist stubtest-allowlist.txt

.PHONY: format
format: install ## Reformat Rust and Python sources in place
	cargo fmt --all
	$(BIN)/ruff check --fix python tests bench
	$(BIN)/ruff format python tests bench

.PHONY: bench
bench: install ## Run the benchmarks against the peer libraries; table in bench/results/
	$(BIN)/pytest bench --benchmark-enable --benchmark-only --benchmark-json=bench/results/latest.json -p no:randomly
	$(BIN)/python bench/report.py bench/results/latest.json bench/results/latest.md

.PHONY: serve
serve: install ## Start the HTTP service on 127.0.0.1:8000 (data and dev keys in ./var, created on first run)
	$(BIN)/ordonum serve

.PHONY: bench-http
bench-http: install ## wrk against one uvicorn worker: bare FastAPI baselines vs scan and durable dispensations
	$(BIN)/python bench/bench_http.py

.PHONY: crash
crash: install ## Long crash test of the store: 500 SIGKILL cycles (ORDONUM_CRASH_CYCLES overrides)
	ORDONUM_CRASH_CYCLES=$${ORDONUM_CRASH_CYCLES:-500} $(BIN)/pytest tests/test_store_crash.py -q -p no:randomly

.PHONY: load
load: install ## National-peak load test (~8 min): 1 M preload, locust mix + wrk, report in bench/results/
	$(BIN)/python bench/load.py

.PHONY: clean
clean: ## Remove build artefacts and the virtualenv
	cargo clean
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks

.PHONY: help
help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'
