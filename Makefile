# `make demo` and `make test` work on a fresh machine: each creates .venv first.
# PyTorch goes in before everything else so that the CPU wheel is used and no CUDA build is pulled in.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup system-deps demo serve test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(PY) -m trainer distill --demo --keep-daemon

serve: setup
	$(PY) -m telemetry_service serve

system-deps:
	scripts/system-deps.sh

test: setup system-deps
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
