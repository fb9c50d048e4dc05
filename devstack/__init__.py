"""The local development stack and the demo: Airflow UI and components, MLflow UI and the dbt docs site.

Two runtime profiles, both native here:

- `embedded` (`make up`): SQLite metadata DB, WarmLocalExecutor, MLflow on the state dir's SQLite
  store, DuckDB warehouse - everything under the state directory.
- `services` (`make up PROFILE=services`): Airflow metadata, the MLflow backend store, the ops ledger
  and the warehouse on PostgreSQL (one set of databases per state dir), CeleryExecutor with Redis as
  broker and two `airflow celery worker`s, the MLflow server with proxied artifacts - and the
  library told to use them (`MLFLOW_TRACKING_URI`, `CLOSEDLOOP_OPS_DB_URL`, `CLOSEDLOOP_DBT_TARGET`).

`docker-compose.yaml` runs the very same commands on the services profile. The commands live in one
table, `services.SERVICE_COMMANDS`, and `tests/devstack/test_compose.py` checks that every compose service
runs exactly its entry - so what the native tests exercise is what the containers run.

Modules, by concern:

- `services`: the table of service commands and settings, the profiles, the services profile's
  PostgreSQL/Redis backends
- `environment`: ports and the environment each service gets
- `supervisor`: starting, watching and stopping the services (pid files, process groups)
- `airflow_api`: the Airflow REST API client (token, trigger) and HTTP probes
- `bootstrap`: the init service (databases, admin password, pools, connections, dbt docs)
- `docs_server`: the dbt docs site
- `cli`: `python scripts/dev_stack.py ...`
- `demo`, `loop_report`: `make demo` and the report it prints (table, chart, verdicts)

From Python (the demo driver and the browser tests)::

    from devstack.environment import Ports
    from devstack.supervisor import start_stack

    stack = start_stack(paths, Ports.from_env())          # profile="services" for the services profile
    stack.wait_healthy()
    ... stack.url, stack.user, stack.password, stack.env, stack.airflow("dags", "list") ...
    stack.stop()

Nothing but `demo` and `loop_report` knows about the demo: the rest starts, checks and stops services.
"""
