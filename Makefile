# The two commands a new user types: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
CODE := bus mappers twin pipelines aggregator cloud_bridge schemas edgefabric tests bench

.PHONY: demo test lint typecheck bench chaos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/edgefabric demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check $(CODE)

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

chaos: $(STAMP)
	$(BIN)/pytest tests/chaos -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m bench.e2e

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
