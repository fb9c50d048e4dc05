# syntax=docker/dockerfile:1
# One image for every closedloop service in docker-compose.yaml: the Airflow components, the init
# job, the MLflow server and the dbt docs site. The environment comes only from uv.lock:
# `uv sync --frozen` installs exactly the locked versions and fails rather than resolve anything.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    CLOSEDLOOP_HOME=/var/lib/closedloop \
    AIRFLOW_HOME=/var/lib/closedloop/airflow

# The same uv the Makefile bootstraps (make env), pinned.
RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /opt/closedloop

# Dependencies first (cached while only the project's code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev

# Run as an unprivileged user; the state volume (CLOSEDLOOP_HOME) starts out owned by it.
RUN useradd --uid 50000 --no-create-home --home-dir /var/lib/closedloop closedloop \
    && mkdir -p /var/lib/closedloop \
    && chown -R closedloop /var/lib/closedloop
USER closedloop

EXPOSE 8080 5000 8081
# Each compose service sets its own command (devstack/services.py SERVICE_COMMANDS).
CMD ["python", "scripts/dev_stack.py", "--help"]
