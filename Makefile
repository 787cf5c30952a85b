# HAPP Custom Messenger — every command a developer or CI needs.
SHELL := bash
.DEFAULT_GOAL := help
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: help bootstrap system-deps install run demo test test-faults openapi-check lint format bench \
	typecheck check clean bench-ingress bench-delivery bench-assistant bench-publish bench-db \
	bench-wait bench-idle

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

bootstrap: ## Install uv if this machine has none
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv

# Debian packages the tests use: Chromium for the browser tests (never a
# downloaded browser), promtool for the alert rules. Installed only when missing.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus amtool:prometheus-alertmanager stunnel4:stunnel4
system-deps: ## Install the Debian packages the tests need, if missing
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing fonts-dejavu-core"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing fonts-dejavu-core >/dev/null; \
	fi

install: bootstrap ## Install every package from the lockfile into .venv
	$(UV) sync --frozen

run: install ## Run the whole system locally (embedded broker and database unless configured)
	$(UV) run --frozen python -m happ_devtools.run

demo: install ## With `make run` going: receive a signed reply on https://localhost:8443
	$(UV) run --frozen python -m happ_devtools.demo

test: install system-deps ## Run the whole test suite (real broker, database, TLS and a browser): two workers, then the fault suite alone
	@status=0; \
	$(UV) run --frozen pytest -m "not faults" -n 2 --dist loadfile || status=$$?; \
	$(UV) run --frozen pytest -m faults || status=$$?; \
	exit $$status

test-faults: install ## Only the fault suite (~8 min): kills, restarts, outages under load
	$(UV) run --frozen pytest -m faults

openapi-check: install ## With `make run` going: schemathesis --checks all on both OpenAPI documents
	$(UV) run --frozen python -m happ_devtools.openapi_check

lint: install ## ruff: lint and formatting
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: install ## ruff: fix what can be fixed
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

typecheck: install ## mypy --strict over every package and the tests
	$(UV) run --frozen mypy

check: lint typecheck test ## Everything CI would want

bench: install ## Benchmark the whole system end to end: bench/results.json, docs/benchmarks.md, the latency plot (~10 min)
	$(UV) run --frozen python bench/e2e.py

bench-ingress: install ## Benchmark: webhooks/s (broker ack included) vs a bare FastAPI endpoint
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(UV) run --frozen python bench/ingress.py

bench-delivery: install ## Benchmark: signed HTTPS deliveries/s vs wrk's ceiling on the same receiver
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(UV) run --frozen python bench/delivery.py

bench-db: install ## Benchmark: the embedded database's writes in HAPP's shapes
	$(UV) run --frozen python bench/db_writes.py

bench-publish: install ## Benchmark: CPU per Kafka publish, FastStream vs aiokafka
	$(UV) run --frozen python bench/publish.py

bench-idle: install ## Benchmark: each process's CPU while nothing happens, at two fetch waits
	$(UV) run --frozen python bench/idle.py

bench-assistant: install ## Benchmark: replies/s of one assistant with a 1 s LLM, order checked
	$(UV) run --frozen python bench/assistant.py

bench-wait: install ## Benchmark: webhooks held for their reply (Prefer: wait) and the ingress's memory, vs plain ones
	$(UV) run --frozen python bench/wait.py

.PHONY: asyncapi
asyncapi: install ## Regenerate docs/asyncapi.json from the event models (happ_common.asyncapi)
	$(UV) run --frozen python -m happ_devtools.asyncapi docs/asyncapi.json

clean: ## Remove local data, caches and the virtualenv
	rm -rf .happ .venv .pytest_cache .mypy_cache .ruff_cache test-artifacts
