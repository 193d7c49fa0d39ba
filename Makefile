# cxrbench: the two commands of the README, plus the MLflow UI.
#   make repro   install (or reuse) the environment, then run the whole pipeline (dvc repro) on params.yaml
#   make test    install (or reuse) the environment, then run the test suite
#   make ui      MLflow UI on http://127.0.0.1:$(UI_PORT)
# The virtual environment is reused while the dependency file is unchanged: its stamp is keyed on the
# hash of pyproject.toml, so editing the dependencies reinstalls.

PYTHON ?= python3.11
VENV ?= .venv
UI_PORT ?= 5000
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: install repro test ui bench clean-outputs

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet "pip>=24"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "environment ready: $(VENV)"

repro: install
	$(BIN)/cxrbench check
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -q

ui: install
	$(BIN)/cxrbench ui --port $(UI_PORT)

bench: install
	$(BIN)/cxrbench bench

clean-outputs:
	rm -rf data models checkpoints outputs metrics curves cache/fid
