"""docker-compose.yaml: valid for `docker-compose config`, and every service runs the command the
native stack runs (devstack.services.SERVICE_COMMANDS) - there is no Docker engine here, so the
native tests are what vouch for the containers.

Also: no secret has a default in the compose file and each is required, so a plain copy of
`.env.example` (empty secrets) or an empty Fernet key stops docker-compose with a message naming the
variable; the generator documented in `.env.example` writes a `.env` that renders; published ports
listen on 127.0.0.1 (MLflow, which has no login, whatever BIND_ADDRESS says); the image installs
from the lock file; and the services profile's init command does its PostgreSQL part against the
machine's real PostgreSQL server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.bootstrap import create_databases, postgres_databases
from devstack.environment import Ports, airflow_env, dbt_docs_env, free_port, inherited_env, service_env
from devstack.services import (
    AIRFLOW_SETTINGS,
    CELERY_SETTINGS,
    CELERY_WORKERS,
    EXECUTORS,
    INIT_SERVICE,
    PROFILE_SERVICES,
    PROJECT_ROOT,
    SERVICE_COMMANDS,
    DevStackError,
    ServicesBackends,
    resolve_argv,
)
from devstack.supervisor import Stack, alive, devstack_dir, start_stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SECRET_VARS = (
    "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY",
)
AIRFLOW_SERVICES = (
    "airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
    "airflow-worker-1", "airflow-worker-2",
)
#: Servers from their own images (no command of ours).
SERVERS = {"postgres", "redis"}


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def generate_env(directory: Path) -> Path:
    """Run the generator `.env.example` documents, as a user would, in `directory`; returns its `.env`."""
    (directory / ".env.example").write_text(ENV_EXAMPLE.read_text())
    commands = [line.removeprefix("#").strip() for line in ENV_EXAMPLE.read_text().splitlines()
                if line.startswith("#") and '".env"' in line and "python3 -c" in line]
    assert len(commands) == 1, f".env.example should document one command that writes .env: {commands}"
    assert commands[0] in (ROOT / "README.md").read_text(), "README and .env.example give different generators"
    done = subprocess.run(["bash", "-c", commands[0]], cwd=directory, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return directory / ".env"


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each published port, from either form `docker-compose config` prints."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # compose v2: long syntax
            out.append((port.get("host_ip", ""), str(port["published"])))
        else:  # compose v1: "127.0.0.1:8080:8080/tcp"
            parts = port.split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) >= 2 else ""))
    return out


def compose_config(env: dict[str, str], env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (`make compose-deps` installs Debian's package)")
    return subprocess.run(
        [exe, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """A proper `.env`: the one the generator documented in `.env.example` writes."""
    return generate_env(tmp_path_factory.mktemp("compose-env"))


@pytest.fixture(scope="module")
def rendered(env_file) -> dict[str, Any]:
    """`docker-compose config` with a generated .env: what docker-compose would actually run."""
    result = compose_config({}, env_file=env_file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_config_is_valid_and_every_service_runs_the_native_command(rendered) -> None:
    services = rendered["services"]
    assert set(services) == set(SERVICE_COMMANDS) | SERVERS
    for name, argv in SERVICE_COMMANDS.items():
        assert services[name]["command"] == list(argv), name
    # one image built from the Dockerfile for everything but the servers
    builds = {(s["build"]["context"], s["build"]["dockerfile"]) for n, s in services.items() if n not in SERVERS}
    assert builds == {(str(ROOT), "Dockerfile")}
    assert {s.get("image") for n, s in services.items() if n not in SERVERS} == {"closedloop:dev"}


def test_the_native_stack_starts_what_compose_starts() -> None:
    """`make up PROFILE=services` runs init first and then exactly the compose services, with the table's argv."""
    assert INIT_SERVICE == "airflow-init"
    assert set(PROFILE_SERVICES["services"]) | {INIT_SERVICE} == set(SERVICE_COMMANDS)
    # embedded: the same minus the Celery workers (its LocalExecutor runs the tasks)
    assert set(PROFILE_SERVICES["embedded"]) == set(PROFILE_SERVICES["services"]) - set(CELERY_WORKERS)
    assert len(CELERY_WORKERS) >= 2
    resolved = resolve_argv(SERVICE_COMMANDS["airflow-scheduler"])
    assert resolved == [str(Path(sys.executable).parent / "airflow"), "scheduler"]
    assert resolve_argv(SERVICE_COMMANDS["dbt-docs"])[0] == sys.executable


def test_airflow_services_share_the_settings_table_and_the_services_profile(rendered) -> None:
    from training.data.dbt import POSTGRES_ENV_VARS

    for name in AIRFLOW_SERVICES + ("dbt-docs",):
        env = {k: str(v) for k, v in rendered["services"][name]["environment"].items()}
        assert {k: env.get(k) for k in AIRFLOW_SETTINGS} == AIRFLOW_SETTINGS, name
        assert {k: env.get(k) for k in CELERY_SETTINGS} == CELERY_SETTINGS, name
        assert env["AIRFLOW__CORE__EXECUTOR"] == EXECUTORS["services"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        # the result backend is the metadata database
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["CLOSEDLOOP_DBT_TARGET"] == "postgres"
        assert env["CLOSEDLOOP_OPS_DB_URL"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert set(POSTGRES_ENV_VARS) <= set(env), sorted(set(POSTGRES_ENV_VARS) - set(env))
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        # the execution API URL follows the API server's port (docs/architecture.md)
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-api-server:{env['AIRFLOW__API__PORT']}/execution/"
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/closedloop/dags"
        assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/closedloop/plugins"
    mlflow = rendered["services"]["mlflow"]["environment"]
    assert mlflow["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://") and "/mlflow" in mlflow["MLFLOW_BACKEND_STORE_URI"]
    assert "--serve-artifacts" in rendered["services"]["mlflow"]["command"]
    # the init service knows the MLflow database too, so it can create it
    assert rendered["services"]["airflow-init"]["environment"]["MLFLOW_BACKEND_STORE_URI"] == mlflow["MLFLOW_BACKEND_STORE_URI"]


def test_healthchecks_named_volumes_and_start_order(raw, rendered) -> None:
    services = rendered["services"]
    for name, svc in services.items():
        if name != "airflow-init":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker-1", "airflow-worker-2", "mlflow", "dbt-docs"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ("airflow-worker-1", "airflow-worker-2"):  # workers are pinged over the broker, by their node name
        assert "scripts/dev_stack.py check-celery" in services[name]["healthcheck"]["test"][1]
        assert "closedloop-state:/var/lib/closedloop" in raw["services"][name]["volumes"]  # task logs, state
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(raw["volumes"]) == {"postgres-data", "closedloop-state", "mlflow-artifacts"}
    mounted = {v.split(":")[0] for s in raw["services"].values() for v in s.get("volumes", [])}
    assert mounted == set(raw["volumes"])
    # compose healthchecks use the same probe the native stack uses
    assert services["airflow-api-server"]["healthcheck"]["test"][1:4] == ["python", "scripts/dev_stack.py", "check-http"]


def test_no_secret_has_a_default_and_env_example_covers_every_variable() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = env_example()
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    for var in SECRET_VARS + ("POSTGRES_USER",):
        # every secret is required (`:?`, which also refuses an empty value) and none has a default (`-`)
        assert re.search(r"\$\{" + var + r":\?set " + var + " in .env", text), f"{var} is not required"
        assert not re.search(r"\$\{" + var + r":?-", text), f"{var} has a default"
        assert not re.search(r"\$\{" + var + r"\?", text), f"{var} may be empty"
    for var in SECRET_VARS:  # no working placeholder to start with
        assert example[var] == "", f".env.example gives {var} a value: a copy of it would start with it"
    assert not re.search(r"://[^:@/\s]+:[^$@\s]+@", text), "a literal password in a URL"
    # without a .env, docker-compose refuses and names what is missing
    empty = ROOT / "tests" / ".empty.env"
    try:
        empty.write_text("")
        result = compose_config({}, env_file=empty)
    finally:
        empty.unlink(missing_ok=True)
    assert result.returncode != 0 and "set POSTGRES_USER in .env" in result.stderr + result.stdout


def test_a_copy_of_env_example_is_refused_with_the_secret_to_set() -> None:
    """`cp .env.example .env && docker-compose up` must not start a stack with known or empty passwords."""
    result = compose_config({}, env_file=ENV_EXAMPLE)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert re.search(r"set [A-Z_]+ in \.env \(see \.env\.example\)", output), output
    assert any(f"set {var} in .env" in output for var in SECRET_VARS), output


@pytest.mark.parametrize("var", SECRET_VARS)
def test_an_empty_secret_in_a_proper_env_is_refused_by_name(var: str, env_file: Path, tmp_path: Path) -> None:
    """Each secret on its own, the Fernet key included: empty = refuse (no unencrypted connections)."""
    text = env_file.read_text()
    assert re.search(rf"^{var}=\S+$", text, flags=re.M), f"the generator left {var} empty"
    blanked = tmp_path / ".env"
    blanked.write_text(re.sub(rf"^{var}=.*$", f"{var}=", text, flags=re.M))
    result = compose_config({}, env_file=blanked)
    assert result.returncode != 0
    assert f"set {var} in .env (see .env.example)" in result.stderr + result.stdout


def test_the_documented_generator_writes_fresh_valid_secrets_once(env_file: Path, tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    values = env_example(env_file)
    secrets = [values[var] for var in SECRET_VARS]
    assert all(len(s) >= 32 for s in secrets) and len(set(secrets)) == len(secrets), secrets
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]+", s) for s in secrets)  # URL-safe: they go into DSNs
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises unless a valid key
    assert {k: v for k, v in values.items() if k not in SECRET_VARS} == {
        k: v for k, v in env_example().items() if k not in SECRET_VARS
    }
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    again = generate_env(tmp_path)
    assert env_example(again)["POSTGRES_PASSWORD"] != values["POSTGRES_PASSWORD"]  # fresh each time
    with pytest.raises(AssertionError, match="FileExistsError"):  # never overwrites a .env in use
        generate_env(tmp_path)


def test_published_ports_listen_on_localhost_and_mlflow_stays_there(rendered, env_file: Path) -> None:
    ports = {name: published(svc) for name, svc in rendered["services"].items() if svc.get("ports")}
    assert ports == {
        "airflow-api-server": [("127.0.0.1", "8080")],
        "mlflow": [("127.0.0.1", "5000")],
        "dbt-docs": [("127.0.0.1", "8081")],
    }
    # BIND_ADDRESS widens the UIs with a login or nothing to hide; MLflow (no login) stays local
    wide = compose_config({"BIND_ADDRESS": "0.0.0.0", "MLFLOW_PORT": "15000"}, env_file=env_file)
    assert wide.returncode == 0, wide.stderr
    services = yaml.safe_load(wide.stdout)["services"]
    assert published(services["airflow-api-server"]) == [("0.0.0.0", "8080")]
    assert published(services["dbt-docs"]) == [("0.0.0.0", "8081")]
    assert published(services["mlflow"]) == [("127.0.0.1", "15000")]
    assert "basic-auth" not in " ".join(services["mlflow"]["command"])  # hence the fixed address


def test_image_installs_from_the_lock_file_and_ignores_local_state() -> None:
    docker = DOCKERFILE.read_text()
    assert "COPY pyproject.toml uv.lock" in docker
    installs = re.findall(r"^RUN uv sync .*$", docker, flags=re.M)
    assert installs and all("--frozen" in line for line in installs), installs
    assert "pip install" not in docker.replace("pip install --no-cache-dir uv==", "")
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".closedloop", ".env", ".git"} <= ignored


@pytest.fixture(scope="module")
def services_init_env(rendered, tmp_path_factory, pg_admin) -> dict[str, str]:
    """The airflow-init service's environment, pointed at this machine's PostgreSQL and a temp state."""
    from tests.conftest import PG_SERVER

    prefix = "cltest_" + uuid.uuid4().hex[:8]
    state = tmp_path_factory.mktemp("services-state")
    local_login = PG_SERVER["user"] + (f":{PG_SERVER['password']}" if PG_SERVER["password"] else "")
    env = {}
    for key, value in rendered["services"]["airflow-init"]["environment"].items():
        value = str(value)
        for db in ("airflow", "mlflow", "closedloop_ops"):
            value = value.replace(f"@postgres:5432/{db}", f"@127.0.0.1:5432/{prefix}_{db}")
        value = re.sub(r"://[^@/]+@", f"://{local_login}@", value)  # this machine's server and login
        env[key] = value.replace("/var/lib/closedloop", str(state)).replace("/opt/closedloop", str(PROJECT_ROOT))
    env.update(CLOSEDLOOP_PG_HOST="127.0.0.1", CLOSEDLOOP_PG_USER=PG_SERVER["user"],
               CLOSEDLOOP_PG_PASSWORD=PG_SERVER["password"], CLOSEDLOOP_PG_DBNAME=f"{prefix}_closedloop")
    yield env
    with pg_admin.cursor() as cur:
        for db in ("airflow", "mlflow", "closedloop_ops", "closedloop"):
            cur.execute(f'drop database if exists "{prefix}_{db}" with (force)')


def test_services_init_creates_the_profiles_databases_on_postgresql(services_init_env) -> None:
    names = sorted(u.rsplit("/", 1)[1] for u in postgres_databases(services_init_env))
    prefix = services_init_env["CLOSEDLOOP_PG_DBNAME"].rsplit("_", 1)[0]
    assert names == sorted(f"{prefix}_{d}" for d in ("airflow", "closedloop", "closedloop_ops", "mlflow"))
    assert sorted(create_databases(services_init_env)) == names
    assert create_databases(services_init_env) == []  # idempotent


def test_services_init_command_runs_natively_against_postgresql(services_init_env, rendered) -> None:
    """The compose init command, same argv and environment, on this machine: PostgreSQL metadata DB."""
    if importlib.util.find_spec("asyncpg") is None:
        pytest.skip(
            "Airflow 3.3 on PostgreSQL needs the asyncpg driver (its async metadata engine) and uv.lock "
            "lacks it: add `asyncpg` to pyproject dependencies to run the services profile"
        )
    argv = resolve_argv(rendered["services"]["airflow-init"]["command"])
    env = {**{k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}, **services_init_env}
    done = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    state = Path(services_init_env["CLOSEDLOOP_HOME"])
    assert (state / "dbt" / "target" / "manifest.json").is_file()
    assert (state / "dbt" / "target" / "index.html").is_file()


def test_ports_come_from_the_environment_and_a_taken_port_is_named(tmp_path: Path) -> None:
    import socket

    assert Ports.from_env({}) == Ports(8080, 5000, 8081)
    assert Ports.from_env({"CLOSEDLOOP_AIRFLOW_PORT": "9090"}).airflow == 9090
    with pytest.raises(DevStackError, match="CLOSEDLOOP_MLFLOW_PORT='x' is not a port"):
        Ports.from_env({"CLOSEDLOOP_MLFLOW_PORT": "x"})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = Ports(airflow=free_port(), mlflow=port, dbt_docs=free_port())
        from training.paths import StatePaths

        with pytest.raises(DevStackError, match=f"port 127.0.0.1:{port} for mlflow is taken.*CLOSEDLOOP_MLFLOW_PORT"):
            start_stack(StatePaths(tmp_path / "state"), ports)
    assert not (tmp_path / "state" / "devstack" / "logs").exists()  # refused before running anything


def test_the_airflow_env_follows_the_port_and_keeps_secrets_per_state_dir(tmp_path: Path) -> None:
    from training.paths import StatePaths

    paths = StatePaths(tmp_path / "state")
    env = airflow_env(paths, Ports(airflow=18123))
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__API__PORT"] == "18123" and env["AIRFLOW_HOME"] == str(paths.airflow_home)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(ROOT / "plugins")
    again = airflow_env(paths, Ports())
    assert again["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]  # stable per state dir
    other = airflow_env(StatePaths(tmp_path / "other"), Ports())
    assert other["AIRFLOW__API_AUTH__JWT_SECRET"] != env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert oct((paths.airflow_home / "devstack-secrets.json").stat().st_mode & 0o777) == "0o600"


def test_a_service_that_dies_during_start_up_is_restarted_then_reported(tmp_path: Path) -> None:
    """The dbt docs server as the guinea pig: killed once it is restarted, killed twice it is an error."""
    import signal
    import time

    from training.paths import StatePaths

    paths = StatePaths(tmp_path / "state")
    paths.dbt_target.mkdir(parents=True)
    (paths.dbt_target / "index.html").write_text("<h1>docs</h1>")
    ports = Ports(airflow=free_port(), mlflow=free_port(), dbt_docs=free_port())
    (devstack_dir(paths) / "logs").mkdir(parents=True)
    env = {**inherited_env(os.environ), **dbt_docs_env(paths, ports)}
    stack = Stack(paths=paths, ports=ports, env=env, services=("dbt-docs",), service_envs={"dbt-docs": env})
    try:
        stack.spawn("dbt-docs")
        stack.wait_healthy(timeout_s=60, restart_budget=1)
        first = stack.procs["dbt-docs"].pid
        os.killpg(first, signal.SIGKILL)
        stack.procs["dbt-docs"].wait(timeout=10)
        stack.wait_healthy(timeout_s=60, restart_budget=1)  # restarted, answers again
        assert stack.procs["dbt-docs"].pid != first and stack.restarts == {"dbt-docs": 1}
        assert "restart 1 of 1" in stack.log_of("dbt-docs").read_text()
        os.killpg(stack.procs["dbt-docs"].pid, signal.SIGKILL)
        stack.procs["dbt-docs"].wait(timeout=10)
        with pytest.raises(DevStackError, match="dbt-docs is not running"):
            stack.wait_healthy(timeout_s=10, restart_budget=1)
    finally:
        stack.stop()
    time.sleep(0.1)
    assert not alive(paths, "dbt-docs")


def test_services_profile_env_points_airflow_and_the_library_at_this_state_dirs_databases(tmp_path: Path, monkeypatch) -> None:
    from training.paths import StatePaths
    from training.storage.warehouse import WarehouseSettings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://someone-elses-server:5000")  # must not leak in
    paths, other = StatePaths(tmp_path / "a"), StatePaths(tmp_path / "b")
    ports = Ports(airflow=18123, mlflow=18124)
    env = service_env("airflow-worker-1", paths, ports, "services")
    b = ServicesBackends.for_state(paths)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == b.url("airflow") == f"postgresql+psycopg2://postgres@127.0.0.1:5432/{b.stack_id}_airflow"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + b.url("airflow")
    assert env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] == f"{b.stack_id}:"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:18124"
    assert env["CLOSEDLOOP_OPS_DB_URL"] == b.url("ops")
    # the warehouse the stages open is the database dbt builds and init creates
    wh = WarehouseSettings.from_env(env)
    assert (wh.backend, wh.pg_dbname) == ("postgres", f"{b.stack_id}_warehouse")
    init = service_env("airflow-init", paths, ports, "services")
    assert sorted(u.rsplit("/", 1)[1] for u in postgres_databases(init)) == sorted(b.dbname(r) for r in b.DATABASES)
    assert service_env("mlflow", paths, ports, "services")["MLFLOW_BACKEND_STORE_URI"] == b.url("mlflow")
    # another state dir, other databases and keys: stacks share the servers without colliding
    assert ServicesBackends.for_state(other).stack_id != b.stack_id
    # embedded stays embedded whatever the caller's environment says
    monkeypatch.setenv("CLOSEDLOOP_DBT_TARGET", "postgres")
    embedded = {**inherited_env(os.environ), **service_env("airflow-scheduler", paths, ports)}
    assert embedded["AIRFLOW__CORE__EXECUTOR"] == "closedloop.warm_executor.WarmLocalExecutor"
    assert "CLOSEDLOOP_DBT_TARGET" not in embedded and "MLFLOW_TRACKING_URI" not in embedded
    with pytest.raises(DevStackError, match="unknown profile 'cloud': choose one of embedded, services"):
        airflow_env(paths, ports, "cloud")  # type: ignore[arg-type]
    with pytest.raises(DevStackError, match="Celery workers belong to the services profile"):
        start_stack(paths, Ports.free(), services=("airflow-worker-1",))


def test_services_stack_refuses_to_start_without_redis_and_says_how_to_start_it(tmp_path: Path, monkeypatch, pg_admin) -> None:
    from training.paths import StatePaths

    monkeypatch.setenv("CLOSEDLOOP_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    with pytest.raises(DevStackError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 does not answer .*redis-server --daemonize yes"):
        start_stack(StatePaths(tmp_path / "state"), Ports.free(), profile="services")
    assert not (tmp_path / "state" / "devstack" / "logs" / "airflow-init.log").exists()  # refused before init
