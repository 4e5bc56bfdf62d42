# lrflow: `make demo` and `make test` work on a fresh machine (they create .venv and install).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The install stamp depends on the pins, so a changed lock file re-installs.
STAMP  := $(VENV)/.installed

# No telemetry from any tool, quiet TensorFlow, CPU only.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 2
export CUDA_VISIBLE_DEVICES :=
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install test test-fast demo lock bench bench-quick clean help

help:
	@echo "make demo   - install, train a demo CNN on digits, inspect it, factorize it, print a summary"
	@echo "make test   - install and run the test suite"
	@echo "make bench  - run the benchmarks (bench/results/*.json; bench-quick for a reduced run)"
	@echo "make lock   - regenerate constraints.txt from requirements.in in a clean venv"

$(STAMP): requirements.in constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.in -c constraints.txt
	@# setuptools prints pages of warnings for an editable build: keep them in a log, show it on failure
	@$(BIN)/python -m pip install -q --no-deps -e . > $(VENV)/install-self.log 2>&1 || (cat $(VENV)/install-self.log; exit 1)
	@touch $@

install: $(STAMP)

test: install
	$(BIN)/python -m pytest -q --timeout=900

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

demo: install
	@# TF's C++ log lines (level 2 keeps its harmless graph-attribute errors) would bury the demo
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/python -m flows.demo

bench: install
	$(BIN)/python -m bench.run

bench-quick: install
	$(BIN)/python -m bench.run --quick

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -r requirements.in
	.lock-venv/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf demo-out .pytest_cache
