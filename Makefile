# Two commands on a fresh machine:  `make demo` (set up + main job)  and  `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.1

.PHONY: install test test-all demo clean

$(VENV)/.installed: requirements-cpu.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned in requirements-cpu.txt (CPU wheel); installing it first keeps pip from
	# ever resolving an open torch requirement to a CUDA build.
	$(PY) -m pip install -q -r requirements-cpu.txt 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -m pip install -q --no-deps -e . 2>&1 | { grep -v "is ignored: it is neither" || true; }
	$(PY) -c "import torch, transformers, ray, optuna, switchkd"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -m "not gpu" -q

demo: install
	$(PY) -m switchkd.cli demo
