# Steel-defect cascade: the front door. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

# Demo knobs: `make demo RETRAIN=1` retrains the embedded bundle from fresh synthetic data.
DEMO_DIR ?= data/demo
DEMO_N ?= 400
HOST ?= 127.0.0.1
PORT ?= 8000
RETRAIN ?= 0

.PHONY: install demo serve synth retrain test test-slow test-all lint format bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[train,serve,export,ray,dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with torch 2.14.1 and the project with all extras.

synth: install ## Write the synthetic demo data set (skipped when present).
	@test -f $(DEMO_DIR)/train.csv || $(BIN)/cascade synth --out $(DEMO_DIR) --n $(DEMO_N) --seed 0

retrain: install synth ## Retrain the embedded demo bundle on the synthetic data (about 13 minutes on 2 cores).
	$(BIN)/cascade train --config configs/demo-cpu.yaml --data $(DEMO_DIR) --install-embedded

demo: install synth ## Synthesize data, train the demo cascade if no bundle exists (or RETRAIN=1), serve it.
	@if [ "$(RETRAIN)" = "1" ] || ! $(BIN)/python -c "import cascade.embedded as e, sys; sys.exit(0 if e.embedded_bundle_exists() else 1)"; then \
		$(MAKE) retrain; fi
	$(BIN)/cascade serve --host $(HOST) --port $(PORT) --samples-dir $(DEMO_DIR)/train_images

serve: install ## Serve the embedded bundle (or BUNDLE=path).
	$(BIN)/cascade serve --host $(HOST) --port $(PORT) $(if $(BUNDLE),--bundle $(BUNDLE))

test: install ## The default test run (slow tests excluded).
	$(BIN)/python -m pytest -q

test-slow: install ## Only the slow tests (passes when there are none).
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -q -m 'slow or not slow'

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## Run every benchmark and rewrite BENCHMARKS.md.
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
