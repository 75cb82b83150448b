# Every target bootstraps what it needs: on a fresh clone `make house-prices` and `make test` just work.
#
# Every value a user gives (`make submit FILE=... MESSAGE=...`) reaches its command through the environment,
# never pasted into the shell's text: a path with a space stays one argument, and `...` or $(...) inside a
# message stays text. `raw` keeps each value as typed ($(value V): make itself would run a $(shell ...) in
# it), `export` hands it to the recipes, which quote it ("$$FILE"). Word lists (ARGS, RUNS, MODELS) are split
# by Python's shlex (quotes group words; nothing is expanded or run), by WORDS below.
PYTHON ?= python3
VENV   ?= .venv
ARGS   ?=
MODELS ?= tf_efficientnet_lite0 tf_efficientnet_lite1 tf_efficientnet_lite2
WEIGHTS ?= fit
COMPETITION ?= house-prices
TRIALS      ?= 20
WORKERS     ?= 1
PG_PORT     ?= 55432
PORT        ?=
STUDY       ?=
STORAGE     ?=
USER_VARS := PYTHON VENV FILE MESSAGE RUNS ARGS MODELS WEIGHTS COMPETITION TRIALS WORKERS PG_PORT PORT STUDY STORAGE
raw = $(foreach v,$(1),$(eval override $(v) := $$(value $(v))))
$(call raw,$(USER_VARS))
override PY    := $(VENV)/bin/python
override STAMP := $(VENV)/.installed
export $(USER_VARS) PY STAMP WORDS ENSEMBLE

# `"$$PY" -c "$$WORDS" CMD ...`: exec CMD ..., each word @ARGS or @RUNS (before any --) replaced by the words
# of that variable, split as a shell splits them but with nothing expanded or executed
define WORDS
import os, shlex, sys
argv, out = sys.argv[1:], []
for i, word in enumerate(argv):
    if word == "--":
        out += argv[i:]
        break
    if word not in ("@ARGS", "@RUNS"):
        out.append(word)
        continue
    try:
        out += shlex.split(os.environ.get(word[1:], ""))
    except ValueError as err:
        print(f"error: {word[1:]}={os.environ[word[1:]]!r}: {err}", file=sys.stderr)
        sys.exit(2)
os.execvp(out[0], out)
endef

# leaves-ensemble: train each of MODELS (ARGS to each, output shown as it comes), then blend the runs
define ENSEMBLE
import os, shlex, subprocess, sys
from pathlib import Path
try:
    args, models = shlex.split(os.environ["ARGS"]), shlex.split(os.environ["MODELS"])
except ValueError as err:
    sys.exit(print(f"error: ARGS or MODELS: {err}", file=sys.stderr) or 2)
if len(models) < 2:
    sys.exit(print(f"error: MODELS={os.environ['MODELS']!r}: an ensemble needs two models or more", file=sys.stderr) or 2)
runs = []
for model in models:
    cmd = [sys.executable, "-m", "pipelines", "leaves", "--model", model, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = None
    for line in proc.stdout:
        print(line, end="", flush=True)
        run = line.removeprefix("submission: ").strip() if line.startswith("submission: ") else run
    if proc.wait() or not run:
        sys.exit(print(f"error: leaves --model {model} wrote no run, nothing blended", file=sys.stderr) or 2)
    runs.append(run)
sys.exit(subprocess.call([sys.executable, "-m", "pipelines", "blend", *runs, "--weights", os.environ["WEIGHTS"],
                          "--out-dir", str(Path(run).parent.parent)]))
endef

.DEFAULT_GOAL := help
.PHONY: help setup house-prices leaves leaves-ensemble tune postgres submit runs blend mlflow-ui dashboard test lint \
        bench bench-real clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); test "$$free" -ge 8 || \
	  echo "warning: $$free GiB free on this disk; the .venv needs about 7 GiB (torch's CUDA build)" >&2
	test -x "$$PY" || "$$PYTHON" -m venv "$$VENV"
	"$$PY" -m pip install -q --upgrade pip
	"$$PY" -m pip install -q -e '.[dev]'
	touch "$$STAMP"

setup: $(STAMP)  ## create .venv and install the project (re-runs only when pyproject.toml changed)

house-prices: $(STAMP)  ## House Prices, strong preset, 5-fold CV -> submissions/house-prices/ (ARGS="--preset d2l")
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines house-prices @ARGS

leaves: $(STAMP)  ## Classify Leaves: fine-tune efficientnet-lite0, 3-fold CV + TTA -> submissions/classify-leaves/ (synthetic set if no data)
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines leaves @ARGS

leaves-ensemble: $(STAMP)  ## train each of MODELS (same folds and seed; ARGS go to each), then blend them (WEIGHTS=fit|equal)
	@"$$PY" -c "$$ENSEMBLE"

submit: $(STAMP)  ## validate FILE and send it to Kaggle: make submit FILE=submissions/... MESSAGE="..." (ARGS=--dry-run)
	@test -n "$$FILE" || { echo 'usage: make submit FILE=<run>.csv MESSAGE="..." [ARGS=--dry-run]'; exit 2; }
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines submit --message="$$MESSAGE" @ARGS -- "$$FILE"

runs: $(STAMP)  ## leaderboard of the runs on disk, best CV first (also written as CSV)
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines runs @ARGS

blend: $(STAMP)  ## blend runs on their OOF predictions: make blend RUNS="<run> <run> ..."
	@test -n "$$RUNS" || { echo 'usage: make blend RUNS="<run> <run> ..."'; exit 2; }
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines blend @RUNS @ARGS

tune: $(STAMP)  ## Optuna study, resumable (COMPETITION=house-prices|leaves TRIALS=20 WORKERS=1 ARGS="--best")
	"$$PY" -c "$$WORDS" "$$PY" -m pipelines tune "$$COMPETITION" --trials "$$TRIALS" --workers "$$WORKERS" @ARGS

mlflow-ui: $(STAMP)  ## MLflow UI on 127.0.0.1:PORT (5000) on MLFLOW_TRACKING_URI, else runs/mlflow.db; prints its URL
	@"$$PY" -m pipelines.core.dashboards mlflow-ui --port "$${PORT:-5000}"

dashboard: $(STAMP)  ## optuna-dashboard on 127.0.0.1:PORT (8080): make dashboard STUDY=<study> [STORAGE=postgresql://...]
	@test -n "$$STUDY$$STORAGE" || { echo 'usage: make dashboard STUDY=<study> [STORAGE=sqlite:///...|postgresql://...] [PORT=8080]'; exit 2; }
	@PIPELINES_TUNE_STORAGE="$${STORAGE:-$$PIPELINES_TUNE_STORAGE}" "$$PY" -m pipelines.core.dashboards optuna --study "$$STUDY" --port "$${PORT:-8080}"

postgres: $(STAMP)  ## local PostgreSQL for tuning studies (runs/postgres, PG_PORT=55432); prints its URL
	.ci/postgres install
	.ci/postgres start runs/postgres "$$PG_PORT"

test: $(STAMP)  ## run the test suite (installs PostgreSQL for the tuning tests if missing and root)
	@.ci/postgres install || echo "PostgreSQL tests will be skipped: its binaries are missing"
	"$$PY" -m pytest

bench: $(STAMP)  ## speed: shared training loop vs a plain fp32 loop, images/s and ratio; more in benchmarks/
	"$$PY" benchmarks/loop_throughput.py

bench-real: $(STAMP)  ## real images: ELPV solar cells (PyPI elpv-dataset, installed here), leaves defaults vs a plain fine-tune
	"$$PY" -m pip install -q 'elpv-dataset==1.0.0.post1'
	"$$PY" -c "$$WORDS" "$$PY" benchmarks/real_sets.py @ARGS

lint: $(STAMP)  ## ruff
	"$$VENV/bin/ruff" check .

clean:  ## remove the virtual environment (runs and submissions are kept)
	rm -rf "$$VENV"
