# The targets README and CI use. Each creates .venv and installs what is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000
# The model POST /v1/classify uses (models/README.md); ACTLAB_DEFAULT_MODEL in the environment wins.
DEFAULT_MODEL ?= resnet20-relu-digits

.PHONY: run test bench bench-smoke models lint format clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Service only (what the api image has): no torch.
$(VENV)/.service-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# Everything: service, export extras (torch==2.13.0, CPU), dev tools.
$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[export,dev]'
	touch $@ $(VENV)/.service-installed

run: $(VENV)/.service-installed
	@echo "actlab: serving models/ on http://$(HOST):$(PORT)"
	@echo "  API docs:  http://$(HOST):$(PORT)/docs"
	@echo "  models:    http://$(HOST):$(PORT)/v1/models"
	@echo "  ready:     http://$(HOST):$(PORT)/health/ready"
	ACTLAB_DEFAULT_MODEL="$${ACTLAB_DEFAULT_MODEL:-$(DEFAULT_MODEL)}" \
	$(BIN)/uvicorn service.app:create_app --factory --host $(HOST) --port $(PORT) --timeout-graceful-shutdown 20

test: $(VENV)/.all-installed
	$(BIN)/python -m pytest

# The activation tax first (ResNet-50 per activation, its own interleaved run), then the suite,
# which folds that table into BENCHMARKS.md with everything it measures itself.
bench: $(VENV)/.all-installed
	$(BIN)/python -m bench.activation_tax --int8
	$(BIN)/python -m bench

bench-smoke: $(VENV)/.all-installed
	$(BIN)/python -m bench --smoke

models: $(VENV)/.all-installed
	$(BIN)/python -m export defaults

lint: $(VENV)/.all-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.all-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
