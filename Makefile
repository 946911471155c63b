# vl_distill_ros developer entry points. `make setup` builds .venv; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# DDS discovery never leaves loopback; each make invocation gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( ($$$$ % 100) + 101 )))
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY ?= PASSIVE
export TRANSFORMERS_OFFLINE := 1
export AMENT_PREFIX_PATH := $(abspath $(VENV))

.PHONY: setup test results render clean bench

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (CPython 3.11 is required for the ROS 2 Jazzy wheels)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q test

# Render the paper's YCB split, train the four ablation configs, evaluate, write results.
results: setup
	$(VENV)/bin/vl-distill ablate --config config/ablation/ycb_paper.yaml

# Speed benches (bench/README.md): each script prints one JSON object on stdout.
bench: setup
	@status=0; for f in bench/*.py; do echo "# $$f" >&2; $(PY) $$f || status=$$?; done; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
