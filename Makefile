# Two commands for a fresh clone (Python 3.11 and pip, nothing else installed by hand):
#   make study   create .venv, install the project, and regenerate the default study (`stfusion study`:
#                dvc repro with the datasets' chains side by side; same results as a plain `dvc repro`)
#   make test    create or update .venv, then unit tests, nbval over every notebook, and an
#                end-to-end smoke reproduction of the whole pipeline on the tiny profile
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
# The profile `make push` and `make pull` share: default (the default study), full, smoke, ...
PROFILE ?= default
# The Citation File Format's schema for tests/test_citation.py, from the cffconvert validator (installed apart:
# its jsonschema<4 conflicts with Jupyter's)
CFF_VALIDATOR := cffconvert==2.0.0
BIN := $(abspath $(VENV))/bin
# Stages call `stfusion` and papermill starts `python`: both must come from the venv.
export PATH := $(BIN):$(PATH)
export PYTHONDONTWRITEBYTECODE := 1
export MPLBACKEND := Agg

.PHONY: study full rehearse gpu-check smoke push pull test test-unit test-notebooks test-e2e venv dag clean-scratch

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/cff $(CFF_VALIDATOR)
	@touch $@

study: venv
	stfusion study

# The full reproduction on the real CIA and LGC data (docs/full-reproduction.md): the full profile,
# run in studies/full/ with its own params.yaml, dvc.lock and reports (the default study is untouched).
full: venv
	stfusion study --profile full --lanes 1

# The full reproduction rehearsed on this machine (docs/full-reproduction.md): mock CIA and LGC at full size
# served by a local portal, every stage of the full profile with the models cut to a few steps, and each
# stage's wall time and peak memory in studies/rehearsal/rehearsal.csv (about 6 hours on 2 cores; rerun to resume).
rehearse: venv
	stfusion rehearse

# Before renting GPU hours: every paper-tier model trains a few steps under bf16 and predicts a CIA-size
# scene, STARFM, FSDAF and the metrics on CUDA against the CPU, a DDP run under torchrun (a few minutes;
# fails at once without CUDA). Writes reports/gpu-check/gpu-check.json.
gpu-check: venv
	stfusion gpu-check

# The smoke profile (tiny scenes, every stage) in studies/smoke/: what the end-to-end test runs.
smoke: venv
	stfusion study --profile smoke

# Share a study's outputs through a DVC remote instead of retraining (docs/sharing.md): PROFILE=full for the
# full reproduction; the remote is DVC's default (a local folder) unless STFUSION_REMOTE names another.
push: venv
	stfusion push --profile $(PROFILE)

pull: venv
	stfusion pull --profile $(PROFILE)

test: test-unit test-notebooks test-e2e

test-unit: venv
	python -m pytest -q -m "not e2e" tests

# nbval runs each notebook with the CI-sized defaults of its parameters cell, in scratch/.
test-notebooks: venv
	rm -rf build/nbval scratch
	mkdir -p build/nbval
	for nb in notebooks/*.py; do jupytext --quiet --to ipynb --set-kernel python3 --output build/nbval/$$(basename $${nb%.py}).ipynb $$nb; done
	python -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout=600 build/nbval

test-e2e: venv
	python -m pytest -q -m e2e tests

dag: venv
	dvc dag

clean-scratch:
	rm -rf scratch build
