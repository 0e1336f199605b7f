# The two commands: `make demo` (the main job) and `make test` (the whole suite).
# Each sets up everything it needs on a fresh machine (Python 3.11+ and a package index).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test soak bench lint schemas clean scale-demo

demo: $(VENV)/.installed
	$(BIN)/stripe-dd demo

# PostgreSQL, an emulator with 12 connected accounts, and 3 shards on Dagster (README, "Many
# accounts"); exits 0 only when every account's ids are exact.
scale-demo: $(VENV)/.installed
	$(BIN)/python -m tap_stripe_dd.scale_demo

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/pytest -n 2

soak: $(VENV)/.installed
	$(BIN)/pytest -m soak

bench: $(VENV)/.installed
	$(BIN)/python -m bench

schemas: $(VENV)/.installed
	$(BIN)/python scripts/generate_schemas.py

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .meltano output
