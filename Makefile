# Every target bootstraps what it needs: on a fresh clone `make house-prices` and `make test` just work.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help setup house-prices leaves leaves-ensemble tune postgres submit runs blend test lint bench bench-real clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); test "$$free" -ge 8 || \
	  echo "warning: $$free GiB free on this disk; the .venv needs about 7 GiB (torch's CUDA build)" >&2
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (re-runs only when pyproject.toml changed)

house-prices: $(STAMP)  ## House Prices, strong preset, 5-fold CV -> submissions/house-prices/ (ARGS="--preset d2l")
	$(PY) -m pipelines house-prices $(ARGS)

leaves: $(STAMP)  ## Classify Leaves: fine-tune efficientnet-lite0, 3-fold CV + TTA -> submissions/classify-leaves/ (synthetic set if no data)
	$(PY) -m pipelines leaves $(ARGS)

MODELS ?= tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2
WEIGHTS ?= fit
leaves-ensemble: $(STAMP)  ## train each of MODELS (same folds and seed; ARGS go to each), then blend them (WEIGHTS=fit|equal)
	@runs=""; for m in $(MODELS); do \
	  log=$$(mktemp); \
	  $(PY) -m pipelines leaves --model $$m $(ARGS) 2>&1 | tee $$log; \
	  run=$$(sed -n 's/^submission: //p' $$log); rm -f $$log; \
	  test -n "$$run" || { echo "error: leaves --model $$m wrote no run, nothing blended"; exit 2; }; \
	  runs="$$runs $$run"; \
	done; \
	$(PY) -m pipelines blend $$runs --weights $(WEIGHTS) --out-dir "$$(dirname "$$(dirname "$$run")")"

submit: $(STAMP)  ## validate FILE and send it to Kaggle: make submit FILE=submissions/... MESSAGE="..." (ARGS=--dry-run)
	@test -n "$(FILE)" || { echo 'usage: make submit FILE=<run>.csv MESSAGE="..." [ARGS=--dry-run]'; exit 2; }
	$(PY) -m pipelines submit $(FILE) -m "$(MESSAGE)" $(ARGS)

runs: $(STAMP)  ## leaderboard of the runs on disk, best CV first (also written as CSV)
	$(PY) -m pipelines runs $(ARGS)

blend: $(STAMP)  ## blend runs on their OOF predictions: make blend RUNS="<run> <run> ..."
	@test -n "$(RUNS)" || { echo 'usage: make blend RUNS="<run> <run> ..."'; exit 2; }
	$(PY) -m pipelines blend $(RUNS) $(ARGS)

COMPETITION ?= house-prices
TRIALS      ?= 20
WORKERS     ?= 1
tune: $(STAMP)  ## Optuna study, resumable (COMPETITION=house-prices|leaves TRIALS=20 WORKERS=1 ARGS="--best")
	$(PY) -m pipelines tune $(COMPETITION) --trials $(TRIALS) --workers $(WORKERS) $(ARGS)

PG_PORT ?= 55432
postgres: $(STAMP)  ## local PostgreSQL for tuning studies (runs/postgres, PG_PORT=55432); prints its URL
	.ci/postgres install
	.ci/postgres start runs/postgres $(PG_PORT)

test: $(STAMP)  ## run the test suite (installs PostgreSQL for the tuning tests if missing and root)
	@.ci/postgres install || echo "PostgreSQL tests will be skipped: its binaries are missing"
	$(PY) -m pytest

bench: $(STAMP)  ## speed: shared training loop vs a plain fp32 loop, images/s and ratio; more in benchmarks/
	$(PY) benchmarks/loop_throughput.py

bench-real: $(STAMP)  ## real images: ELPV solar cells (PyPI elpv-dataset, installed here), leaves defaults vs a plain fine-tune
	$(PY) -m pip install -q 'elpv-dataset==1.0.0.post1'
	$(PY) benchmarks/real_sets.py $(ARGS)

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .

clean:  ## remove the virtual environment (runs and submissions are kept)
	rm -rf $(VENV)
