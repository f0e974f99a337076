# worldsweep developer commands. `make test` is what CI runs (via .ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install test lint demo serve bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 first: it is the CPU build on local disk; anything else pulls a CUDA build.
install: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'

test: $(BIN)/python
	@test -x $(BIN)/worldsweep || $(MAKE) install
	$(BIN)/ruff check worlds trainers stats service tests benchmarks
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check worlds trainers stats service tests benchmarks

bench:
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/lyapunov.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
