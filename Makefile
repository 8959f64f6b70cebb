# Needs GNU make and Python 3.11+; everything else is installed into $(VENV).
VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
# Tests run in parallel (pytest-xdist): most of them wait on node processes, sockets
# and timers, so twice as many workers as cores. Tests that must not overlap share an
# xdist_group (network namespaces, containers, the simulation's process pool, modules
# with one node or network for all their tests) and run in sequence on one worker.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := --numprocesses $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder
# Seeds per simulated network in the simulation test (QUDAG_SIM_RUNS; docs/simulation.md).
# The simulated networks are n = 4 and 7 signing with Ed25519, and n = 4 with composite keys.
SIM_RUNS ?= 1000
BIN := $(VENV)/bin

.PHONY: install run test test-fast sim lint fmt clean bench bench-quick

install: $(VENV)/.installed

# Re-created whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "qudag-node needs Python 3.11 or newer, $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV); on Debian or Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

# The defaults: data in ./data, API on http://127.0.0.1:8080.
run: $(VENV)/.installed
	$(BIN)/qudag-node run

# Everything CI runs: lint, then every test (tests/core, tests/adapters, tests/system,
# tests/deploy), 1,000 simulation seeds of n = 4, every other one of n = 7, every
# twentieth with composite keys (tests/core/test_simulation.py).
test: lint
	QUDAG_SIM_RUNS=$(SIM_RUNS) $(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The edit loop: lint, then the tests that need no node process, container or network
# namespace (tests/core and tests/adapters), with 100 simulation seeds per network size.
test-fast: lint
	QUDAG_SIM_RUNS=100 $(BIN)/pytest $(PYTEST_PARALLEL) tests/core tests/adapters $(PYTEST_ARGS)

# The simulation sweep (docs/simulation.md): 10,000 seeded runs, more of the small
# networks, whose runs are cheap, than of the large ones (a run of n = 10 or 13 costs
# ten times one of n = 4), over every core; prints each size's outcome and the replay
# command of a failure. SWEEP lists size:seeds pairs; SIM_SCHEME is the networks'
# signature scheme (ed25519, or mldsa65-ed25519, whose runs cost about six times more).
SWEEP ?= 4:4000 7:3500 10:1250 13:1250
SIM_SCHEME ?= ed25519
sim: $(VENV)/.installed
	@set -e; for pair in $(SWEEP); do \
		$(BIN)/python -m tests.core.sweep --runs $${pair#*:} --validators $${pair%:*} \
			--scheme $(SIM_SCHEME); \
	done

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The benchmark suite against real node processes on loopback (docs/benchmarks.md);
# bench-quick is the short run. Pick scenarios with: make bench BENCH_ARGS='--only ingest'
bench: $(VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-quick: $(VENV)/.installed
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

fmt: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Removes the virtual environment and caches; never ./data.
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache build dist
	find . -path ./data -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
