# Steel-defect cascade: the front door. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

# Demo knobs: `make demo RETRAIN=1` retrains the embedded bundle (synthetic steel + NEU-Seg mosaics when ../shared has NEU-Seg).
DEMO_DIR ?= data/demo
DEMO_N ?= 400
# Held-out demo images (never trained on): the README's examples and the web page's samples use them.
DEMO_TEST_DIR ?= data/demo-test
HOST ?= 127.0.0.1
PORT ?= 8000
RETRAIN ?= 0
# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`: CPU-only torch (about 2 GB instead of 7 GB).
TORCH_INDEX ?=
# `make demo BUNDLE=neu-seg` serves the shipped NEU-Seg bundle (real steel) with NEU-Seg val images as samples.
BUNDLE ?=
NEU_SEG ?= ../shared/neu-seg
NEU_SAMPLES ?= data/neu-seg-val-samples
# The demo recipe's training set: 1,600 synthetic images + 400 mosaics of NEU-Seg train tiles (`make retrain`).
MIX_DIR ?= data/demo-mix

.PHONY: install demo serve synth retrain neu-samples train-neu-seg test test-slow test-all lint lint-imports format bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[train,serve,export,ray,dev]'
	touch $@

install: $(VENV)/.installed ## Create .venv with torch 2.14.1 and the project with all extras.

synth: install ## Write the synthetic demo training set and a 50-image held-out test set (skipped when present).
	@test -f $(DEMO_DIR)/train.csv || $(BIN)/cascade synth --out $(DEMO_DIR) --n $(DEMO_N) --seed 0 --profile train
	@test -f $(DEMO_TEST_DIR)/train.csv || $(BIN)/cascade synth --out $(DEMO_TEST_DIR) --n 50 --seed 7

retrain: install synth ## Retrain the embedded demo bundle: synthetic steel + NEU-Seg mosaics (17 min on 2 AVX512-BF16 cores, 34 on AVX2-only ones); without NEU-Seg, synthetic only.
ifneq ($(wildcard $(NEU_SEG)/JPEGImages),)
	@test -f $(MIX_DIR)/train.csv || { $(BIN)/cascade synth --out $(MIX_DIR) --n 1600 --seed 0 --profile train && \
		$(BIN)/cascade mosaic $(NEU_SEG) --split train --source-classes inclusion,patches,scratches \
			--map scratches=scratches --n 400 --tiles-per-image 6 --out $(MIX_DIR) --append; }
	$(BIN)/cascade train --config configs/demo-neu-mix-cpu.yaml --data $(MIX_DIR) --install-embedded
else
	@echo "NEU-Seg not found at $(NEU_SEG): training the synthetic-only recipe configs/demo-cpu.yaml instead (it ties predicting nothing on real steel; see README)"
	$(BIN)/cascade train --config configs/demo-cpu.yaml --data $(DEMO_DIR) --install-embedded
endif

demo: install synth ## Synthesize data, train the demo cascade if no bundle exists (or RETRAIN=1), serve it (BUNDLE=neu-seg: real steel).
ifeq ($(BUNDLE),neu-seg)
	@$(MAKE) --no-print-directory neu-samples
	$(BIN)/cascade serve --host $(HOST) --port $(PORT) --bundle neu-seg \
		$(if $(wildcard $(NEU_SEG)),--samples-dir $(NEU_SAMPLES)) --data-root data
else
	@if [ "$(RETRAIN)" = "1" ] || ! $(BIN)/python -c "import cascade.embedded as e, sys; sys.exit(0 if e.embedded_bundle_exists() else 1)"; then \
		$(MAKE) retrain; fi
	$(BIN)/cascade serve --host $(HOST) --port $(PORT) $(if $(BUNDLE),--bundle $(BUNDLE)) \
		--samples-dir $(DEMO_TEST_DIR)/train_images --data-root data
endif

neu-samples: ## Copy 48 NEU-Seg val images (never trained on) and their masks into data/ as web-page samples (needs ../shared).
	@if [ -d "$(NEU_SEG)/JPEGImages" ] && [ ! -d "$(NEU_SAMPLES)/SegmentationClass" ]; then \
		mkdir -p $(NEU_SAMPLES)/JPEGImages $(NEU_SAMPLES)/SegmentationClass && \
		head -n 48 $(NEU_SEG)/ImageSets/Segmentation/val.txt | while read -r id; do \
			cp "$(NEU_SEG)/JPEGImages/$$id.jpg" $(NEU_SAMPLES)/JPEGImages/ && \
			cp "$(NEU_SEG)/SegmentationClass/$$id.png" $(NEU_SAMPLES)/SegmentationClass/; done; fi

train-neu-seg: install ## Train the NEU-Seg cascade on ../shared/neu-seg and ship it as the `neu-seg` bundle.
	$(BIN)/cascade train --config configs/neu-seg-cpu.yaml --install-embedded

serve: install ## Serve the embedded bundle (or BUNDLE=path).
	$(BIN)/cascade serve --host $(HOST) --port $(PORT) $(if $(BUNDLE),--bundle $(BUNDLE))

test: install ## The default test run (slow tests excluded).
	$(BIN)/python -m pytest -q

test-slow: install ## Only the slow tests (passes when there are none).
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -q -m 'slow or not slow'

lint: install lint-imports ## ruff (lint + format check) and the import layers.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-imports: install ## The layers service/training -> cascade -> models ([tool.importlinter] in pyproject.toml).
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## Run every benchmark and rewrite BENCHMARKS.md.
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
