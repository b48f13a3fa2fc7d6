# The two commands: `make demo` and `make test`. Both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
PYTEST_ARGS ?=
# The versions installed are pinned by constraints.txt (pip -c): those the suite last passed with.
CONSTRAINTS := constraints.txt

NODE_DEPS := tests/amplify/node_modules/.package-lock.json

.PHONY: install upgrade constraints demo serve test test-reliability soak bench lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Try the newest releases pyproject.toml allows: `make upgrade test`, then `make constraints` to pin them.
upgrade: install
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,bench]'
	touch $(STAMP) $(BENCH_STAMP)

## Pin what .venv holds now (after a green `make test`) into constraints.txt.
constraints: install
	@{ echo "# Versions make, CI and the bench install (pip -c): the ones the suite last passed with. pyproject.toml"; \
	  echo "# keeps the ranges a user's own install may take. To move them: make upgrade test, then make constraints."; \
	  $(BIN)/pip freeze --exclude-editable; } > $(CONSTRAINTS)

# The benchmark suite's extra: Starlette and uvicorn for the naive baseline (bench/baseline/).
$(BENCH_STAMP): pyproject.toml constraints.txt $(STAMP)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The real Amplify JS client, for the AppSync Events compatibility tests (skipped without Node).
$(NODE_DEPS): tests/amplify/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/amplify --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Amplify client tests will be skipped"; fi

## Run the hub on embedded defaults with a simulated fleet of 20 EAs (Ctrl-C stops it).
demo: install
	$(BIN)/tradewire demo

serve: install
	$(BIN)/tradewire serve

## Run the test suite (real server on free ports, real sockets, real SQLite).
test: install $(NODE_DEPS)
	$(BIN)/pytest $(PYTEST_ARGS)

## The reliability suite at full size (the bounded form of each runs in `make test`).
FUZZ_SCALE ?= 1000
test-reliability: install
	TRADEWIRE_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest tests/reliability --timeout=0 $(PYTEST_ARGS)  # full size: no per-test limit

## A long run under a simulated fleet: RSS, descriptors and latency over time (bench/results/soak.json).
## 550 simulated accounts at 10 updates/s each make ~10k EA messages/s (ticks, account, positions, events).
MINUTES ?= 60
ACCOUNTS ?= 550
soak: install
	$(BIN)/python -m tests.reliability.soak --minutes $(MINUTES) --accounts $(ACCOUNTS)

## Benchmarks against a naive baseline (bench/README.md): prints a table, writes bench/results/latest.json.
## QUICK=1 is the CI-sized run (under two minutes). It asserts nothing about speed.
QUICK ?=
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick)
	$(BIN)/python -m bench.twonode $(if $(QUICK),--quick)  # needs PostgreSQL and Redis

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info tests/amplify/node_modules tradewire.db tradewire.db-wal tradewire.db-shm
