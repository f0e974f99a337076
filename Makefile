# worldsweep developer commands. `make test` is what CI runs (via .ci/run).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install test lint demo demo-stop serve bench clean

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
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check worlds trainers stats service tests benchmarks
	$(BIN)/mypy

# The HTTP API on http://127.0.0.1:$(PORT) (docs at /docs); Ctrl-C stops it, and sweeps in
# flight resume at the next start.
PORT ?= 8000
SERVER := http://127.0.0.1:$(PORT)
serve: $(BIN)/python
	@test -x $(BIN)/worldsweep || $(MAKE) install
	$(BIN)/worldsweep serve --port $(PORT)

# Install, start the server in the background (embedded local Ray; log and pid in
# worldsweep-data/), submit specs/quick.yaml, follow its progress, print the results tables.
# The server keeps running for the API docs; `make demo-stop` stops it.
demo: $(BIN)/python
	@test -x $(BIN)/worldsweep || $(MAKE) install
	@mkdir -p worldsweep-data
	@if $(BIN)/worldsweep status --server $(SERVER) >/dev/null 2>&1; then \
	  echo "demo: using the worldsweep server already running at $(SERVER)"; \
	else \
	  echo "demo: starting the worldsweep server at $(SERVER) (log: worldsweep-data/server.log)"; \
	  nohup $(BIN)/worldsweep serve --port $(PORT) > worldsweep-data/server.log 2>&1 & echo $$! > worldsweep-data/server.pid; \
	fi
	$(BIN)/worldsweep submit specs/quick.yaml --server $(SERVER) --wait --connect-timeout 120
	@echo ""
	@echo "The server is still running: API docs at $(SERVER)/docs ; try"
	@echo "  curl -s $(SERVER)/experiments | python3 -m json.tool"
	@echo "Stop it with: make demo-stop"

demo-stop:
	@test -f worldsweep-data/server.pid && kill $$(cat worldsweep-data/server.pid) && rm -f worldsweep-data/server.pid \
	  && echo "demo: server stopped" || echo "demo: no demo server to stop"

bench:
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/lyapunov.py
	$(BIN)/python benchmarks/stats_tests.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
