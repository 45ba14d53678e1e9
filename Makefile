# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo train-small test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The main job: the quickstart sweep (generates its dataset; SQLite study, offline W&B without credentials).
demo: $(STAMP)
	$(BIN)/cvae sweep run sweeps/configs/quickstart.yaml

## Train and test one small model (no sweep).
train-small: $(STAMP)
	$(BIN)/cvae data synth --out data/small --train-frames 768 --train-video-len 48 --test-sequences 2 --dancers 1 --workers 2
	$(BIN)/cvae train --config configs/small.yaml
	$(BIN)/cvae test --DR data/small --save_root runs/small/test --ckpt_path runs/small/best.ckpt

## The whole test suite, slow end-to-end tests included (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal

## Without the slow end-to-end tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data runs wandb
