# cxrbench: the two commands of the README, plus the MLflow UI.
#   make repro   install (or reuse) the environment, then run the whole pipeline (dvc repro) on params.yaml
#   make test    install (or reuse) the environment, then run the test suite
#   make ui      MLflow UI on http://127.0.0.1:$(UI_PORT)
# The virtual environment is reused while the dependency file is unchanged: its stamp is keyed on the
# hash of pyproject.toml, so editing the dependencies reinstalls. pip keeps no cache (--no-cache-dir): torch's CUDA
# wheels alone are several GB, and a cached second copy of them once filled a CI machine's disk mid-install.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
UI_PORT ?= 5000
# two pytest workers, one thread each (tests/conftest.py): the suite's wall time on 2 cores; 0 runs it in one process
TEST_WORKERS ?= 2
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: install repro test browser ui bench gpu-check clean-outputs publish-cpu-rank

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --no-cache-dir --upgrade --quiet "pip>=24"
	$(BIN)/python -m pip install --no-cache-dir --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "environment ready: $(VENV)"

repro: install
	$(BIN)/cxrbench check
	$(BIN)/dvc repro

# The first ranking that means something (measured 110 min on 2 cores, 2026-12-05): the cpu-rank profile, timed per stage,
# then its report copied to reports/published/cpu-rank/ with command, commit and wall times.
publish-cpu-rank: install
	$(BIN)/cxrbench profile cpu-rank
	$(BIN)/cxrbench check
	@start=$$(date +%s); \
	$(BIN)/dvc repro 2>&1 | while IFS= read -r line; do echo "$$(date +%s) $$line"; done | tee cpu-rank.log; \
	status=$${PIPESTATUS[0]}; end=$$(date +%s); test $$status -eq 0 || exit $$status; \
	$(BIN)/cxrbench publish cpu-rank --log cpu-rank.log --run-command "make publish-cpu-rank" \
	  --wall-seconds $$((end - start))

test: install browser
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The results page (reports/index.html) is tested in a real browser: Debian's chromium, installed here when it is
# missing and we may (root with apt-get); otherwise the browser test says how to install it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian package) for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: the browser test will say so"; \
	  else echo "chromium missing and not root: install it (apt-get install chromium) for the browser test"; fi

ui: install
	$(BIN)/cxrbench ui --port $(UI_PORT)

bench: install
	$(BIN)/cxrbench bench

# the one-shot GPU measurement on a bare GPU machine (torch, timm, pandas, scipy preinstalled; no venv, no install):
# `make gpu-check` there writes reports/bench/gpu-<device>.json and .md in under 8 minutes on one H100/H200
GPU_PYTHON ?= python3
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) -m pipeline.app.gpu_check $(GPU_CHECK_ARGS)

clean-outputs:
	rm -rf data models checkpoints outputs metrics curves cache/fid
