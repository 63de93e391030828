# Every target installs the project into .venv first when it is missing or older than pyproject.toml,
# so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aegis-installed
BENCH_STAMP := $(VENV)/.aegis-bench-installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Benchmark peers (NautilusTrader, backtesting.py, faster-fifo, pyzmq) only for `make bench`.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

run: $(STAMP)
	$(BIN)/aegis-kernel run --demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	# never var/: it holds the embedded databases, i.e. the trading history
	rm -rf $(VENV) build *.egg-info
