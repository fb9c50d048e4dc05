# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BOOT := .venv-bootstrap
UV := $(BOOT)/bin/uv
PY := $(VENV)/bin/python
STATE ?= $(or $(CLOSEDLOOP_HOME),$(CURDIR)/.closedloop)

.PHONY: env demo test lint typecheck clean-state up down bench

# The environment comes only from pyproject.toml + uv.lock (nothing installed by hand).
$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || ($(PYTHON) -m venv $(BOOT) && $(BOOT)/bin/pip install -q uv)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python $(PYTHON)
	@touch $@

env: $(VENV)/.synced

demo: env
	CLOSEDLOOP_HOME=$(STATE) $(PY) -m training.demo

test: env
	$(PY) -m pytest tests

lint: env
	$(VENV)/bin/ruff check training plugins dags tests
	$(VENV)/bin/mypy training

clean-state:
	rm -rf $(STATE)
