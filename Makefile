# Every target installs the project into .venv first when it is missing or older than pyproject.toml,
# so a fresh clone needs nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aegis-installed
BENCH_STAMP := $(VENV)/.aegis-bench-installed
# The ring kernels and the feed's kline parser compiled ahead of time, so that feed and executor
# run without Numba (~100 MB RSS each). Rebuilt when their sources change; a failed build (no C
# compiler) is not an error: the processes then compile them with Numba's JIT and log why.
RING_AOT_STAMP := $(VENV)/.aegis-ring-aot
RING_AOT_SOURCES := ringbuffer/kernels_nb.py ringbuffer/layout.py ringbuffer/aot.py \
	aegis/binance/_kline_nb.py aegis/binance/kline_layout.py aegis/binance/kline_kernels.py

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

$(RING_AOT_STAMP): $(STAMP) $(RING_AOT_SOURCES)
	$(BIN)/python -m aegis.ringbuffer.aot || true
	$(BIN)/python -m aegis.binance.kline_kernels || true
	@touch $(RING_AOT_STAMP)

# Benchmark peers (NautilusTrader, backtesting.py, faster-fifo, pyzmq) only for `make bench`.
$(BENCH_STAMP): $(RING_AOT_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

run: $(RING_AOT_STAMP)
	$(BIN)/aegis-kernel run --demo

test: $(RING_AOT_STAMP)
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	# never var/: it holds the embedded databases, i.e. the trading history
	rm -rf $(VENV) build *.egg-info ringbuffer/_kernels_aot.* aegis/binance/_kline_aot.*
