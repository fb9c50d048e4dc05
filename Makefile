# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BOOT := .venv-bootstrap
UV := $(BOOT)/bin/uv
PY := $(VENV)/bin/python
STATE ?= $(or $(CLOSEDLOOP_HOME),$(CURDIR)/.closedloop)
# Runtime profile of `make demo` / `make up`: embedded (SQLite, DuckDB, LocalExecutor) or services
# (PostgreSQL, Redis + Celery workers, MLflow server; the servers must run: README "Services profile").
PROFILE ?= embedded

.PHONY: loans-drops env demo test lint typecheck clean-state up down bench browser-deps compose-deps test-services-e2e

# The environment comes only from pyproject.toml + uv.lock (nothing installed by hand).
$(VENV)/.synced: pyproject.toml uv.lock
	@test -x $(UV) || ($(PYTHON) -m venv $(BOOT) && $(BOOT)/bin/pip install -q uv)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

env: $(VENV)/.synced

# Knobs of scripts/demo.py pass through: make demo DEMO_ARGS="--days 20 --stall-min 30" (any PROFILE).
demo: env
	CLOSEDLOOP_HOME=$(STATE) $(PY) scripts/demo.py --profile $(PROFILE) $(DEMO_ARGS)

# Every test (measured times: README "Tests"); prints the 30 slowest, so a test that grows shows up.
# The longest runs (the loops under the real scheduler, each with its own state dir, ports, Airflow
# home and PostgreSQL databases) go to a second pytest beside the rest: measured from a fresh clone,
# the two loops took 33 min there and the rest 35 min (README "Tests"). Their output follows the
# rest's; either failing fails `test`.
BESIDE_TESTS := tests/e2e/test_loop_under_scheduler.py tests/e2e/test_two_models_under_scheduler.py
BESIDE_LOG := $(or $(TMPDIR),/tmp)/closedloop-beside-tests.$(shell echo $$PPID).log
test: env browser-deps compose-deps
	@$(PY) -m pytest $(BESIDE_TESTS) --durations=10 -p no:cacheprovider > $(BESIDE_LOG) 2>&1 & beside=$$!; \
	trap "kill $$beside 2>/dev/null" INT TERM; \
	echo "the longest runs go beside these (pid $$beside, log $(BESIDE_LOG))"; \
	$(PY) -m pytest tests $(addprefix --ignore=,$(BESIDE_TESTS)) --durations=30; rest=$$?; \
	wait $$beside; beside_rc=$$?; \
	echo "===== the longest runs, beside the rest (exit $$beside_rc) ====="; cat $(BESIDE_LOG); \
	test $$rest -eq 0 -a $$beside_rc -eq 0

# Day-to-day tier: unit and component tests only - no end-to-end loop, browser or whole-stack test
# (markers e2e and slow, set by path in tests/conftest.py; README "Tests").
.PHONY: test-fast
test-fast: env compose-deps
	$(PY) -m pytest tests -m "not slow and not e2e" --durations=20

lint: env
	$(VENV)/bin/ruff check training devstack examples plugins dags tests
	$(VENV)/bin/mypy training devstack examples

# Only the full loop on the services profile under the real scheduler (also part of `make test`).
test-services-e2e: env
	$(PY) -m pytest "tests/e2e/test_loop_under_scheduler.py::test_drift_triggered_retrain_promotes_a_new_champion[services]"

# The state dir, and on the services profile its PostgreSQL databases and Redis keys too (refused
# while its stack runs: `make down` first). scripts/dev_stack.py clean --help says more.
clean-state:
	CLOSEDLOOP_HOME=$(STATE) $(PY) scripts/dev_stack.py clean --profile $(PROFILE)

# Scaffold a new model from a sample of its events: make new-model NAME=returns SAMPLE=orders.parquet
# [LABELS=returns.parquet] [OUT=models/returns] (python -m training new-model --help; existing files are kept).
.PHONY: new-model
new-model: env
	@test -n "$(NAME)" -a -n "$(SAMPLE)" || (echo "usage: make new-model NAME=<name> SAMPLE=<file> [LABELS=<file>] [OUT=<dir>]"; exit 2)
	$(PY) -m training new-model $(NAME) --sample $(SAMPLE) $(if $(LABELS),--labels-sample $(LABELS)) $(if $(OUT),--out $(OUT))

# --- local development stack (scripts/dev_stack.py; README "Local development stack") ---
# Debian packages the UI and compose tests need; installed with apt-get only when missing. A machine
# where they cannot be installed still runs `make test`: those tests then skip and say why.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
BROWSER_PKGS := chromium chromium-driver
COMPOSE_PKGS := docker-compose

browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "browser-deps: not root, cannot apt-get install $(BROWSER_PKGS); browser tests will skip"; \
	else ($(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends $(BROWSER_PKGS) >/dev/null) \
	  || echo "browser-deps: apt-get install $(BROWSER_PKGS) failed; browser tests will skip"; fi

compose-deps:
	@if command -v docker-compose >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "compose-deps: not root, cannot apt-get install $(COMPOSE_PKGS); compose validation will skip"; \
	else ($(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends $(COMPOSE_PKGS) >/dev/null) \
	  || echo "compose-deps: apt-get install $(COMPOSE_PKGS) failed; compose validation will skip"; fi

# Airflow UI + scheduler + dag-processor + triggerer (+ 2 Celery workers on PROFILE=services), MLflow
# UI and the dbt docs site on localhost, in the background (pid files and logs under $(STATE)/devstack).
# Ports: CLOSEDLOOP_AIRFLOW_PORT, CLOSEDLOOP_MLFLOW_PORT, CLOSEDLOOP_DBT_DOCS_PORT (8080, 5000, 8081).
# Several models in one stack: make up MODELS=config/models (one <model>.yaml each; embedded profile).
MODELS ?=
up: env
	CLOSEDLOOP_HOME=$(STATE) $(PY) scripts/dev_stack.py up --profile $(PROFILE) $(if $(MODELS),--models $(MODELS))

# The loans example's daily drops (its contract.source.url, ${CLOSEDLOOP_HOME}/drops/loans), so both
# examples run side by side: make loans-drops && make up MODELS=config/models (README "A second example").
LOANS_DAYS ?= 21
loans-drops: env
	$(PY) -m examples.loans.generate --out $(STATE)/drops/loans --start 2026-01-01 --days $(LOANS_DAYS) $(LOANS_ARGS)

down:
	CLOSEDLOOP_HOME=$(STATE) $(PY) scripts/dev_stack.py down
