"""`scripts/dev_stack.py env|clean` and the stack's record, against this machine's PostgreSQL and Redis.

No stack is started: the state a stack leaves behind (its databases, broker keys, record, pid files)
is made here with the same functions the init service uses, then the CLI runs as a user runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.bootstrap import create_databases, record_stack_env
from devstack.environment import DEMO_CONFIG_FILE, Ports, service_env, stack_config
from devstack.services import INIT_SERVICE, ServicesBackends
from devstack.supervisor import _write_pid, devstack_dir
from training import stack_env
from training.config import DEFAULT_CONFIG_PATH
from training.paths import StatePaths

ROOT = Path(__file__).resolve().parents[2]


def _dev_stack(home: Path, *args: str, shell: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLOSEDLOOP_HOME": str(home), "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    for key in ("CLOSEDLOOP_CONFIG", "AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        env.pop(key, None)  # the test session's own Airflow settings must not leak into the user's shell
    # the user's shell: $PY is the project's interpreter; `airflow` comes from the PATH `env` exports
    env["PY"] = sys.executable
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(Path(sys.executable).parent))
    argv = ["bash", "-c", shell] if shell else [sys.executable, "scripts/dev_stack.py", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


@pytest.fixture
def redis_client():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(os.environ.get("CLOSEDLOOP_REDIS_URL") or "redis://127.0.0.1:6379/0",
                                  socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable: {exc}")
    yield client
    client.close()


@pytest.fixture
def services_state(tmp_path, pg_admin, redis_client, monkeypatch):
    """A services-profile state dir as `make up PROFILE=services` leaves it: the four databases, broker
    keys under its prefix, the record; plus a key of another stack that must survive."""
    monkeypatch.delenv("CLOSEDLOOP_CONFIG", raising=False)
    paths = StatePaths(tmp_path / "state").ensure()
    init_env = service_env(INIT_SERVICE, paths, Ports.free(), "services")
    record_stack_env(paths, init_env)
    (devstack_dir(paths) / "profile").write_text("services")
    b = ServicesBackends.for_state(paths)
    created = create_databases(init_env, wait_s=5)
    assert sorted(created) == sorted(b.dbname(r) for r in ServicesBackends.DATABASES)
    redis_client.set(f"{b.redis_prefix}unacked", "x")
    redis_client.rpush(f"{b.redis_prefix}default", "task")
    other = "cl_someoneelse0:default"
    redis_client.set(other, "keep")
    yield paths, b
    with pg_admin.cursor() as cur:
        for role in ServicesBackends.DATABASES:
            cur.execute(f'drop database if exists "{b.dbname(role)}" with (force)')
    redis_client.delete(other, *redis_client.keys(f"{b.redis_prefix}*"))


def _databases(pg_admin, prefix: str) -> list[str]:
    with pg_admin.cursor() as cur:
        cur.execute("select datname from pg_database where datname like %s", (prefix + "%",))
        return sorted(r[0] for r in cur.fetchall())


def test_clean_drops_the_state_dirs_databases_and_keys_then_the_dir(services_state, pg_admin, redis_client):
    paths, b = services_state
    assert len(_databases(pg_admin, b.stack_id + "_")) == 4
    # no --profile: the state dir's record says services (what `make clean-state` without PROFILE= gets)
    out = _dev_stack(paths.root, "clean")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _databases(pg_admin, b.stack_id + "_") == []
    assert redis_client.keys(f"{b.redis_prefix}*") == []
    assert redis_client.get("cl_someoneelse0:default") == b"keep"  # another stack's keys stay
    assert not paths.root.exists()
    assert b.dbname("ops") in out.stdout and f"removed {paths.root}" in out.stdout


def test_clean_refuses_while_a_service_of_the_stack_runs(services_state, pg_admin):
    paths, b = services_state
    proc = subprocess.Popen(["sleep", "60"])  # stands in for a service: a live process in a pid file
    try:
        _write_pid(paths, "mlflow", proc.pid, ["mlflow", "server"])
        out = _dev_stack(paths.root, "clean", "--profile", "services")
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode == 1
    assert "is running (mlflow)" in out.stderr and "make down" in out.stderr
    assert paths.root.is_dir() and len(_databases(pg_admin, b.stack_id + "_")) == 4


def test_make_clean_state_runs_the_same_command(tmp_path):
    state = tmp_path / "state"
    (state / "data").mkdir(parents=True)
    out = subprocess.run(["make", "-s", "clean-state", f"STATE={state}", f"PY={sys.executable}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert not state.exists() and f"removed {state}" in out.stdout


def test_env_gives_the_airflow_cli_the_stacks_metadata_db(services_state):
    paths, b = services_state
    out = _dev_stack(paths.root, shell='eval "$("$PY" scripts/dev_stack.py env)" && '
                                      "airflow config get-value database sql_alchemy_conn && "
                                      'echo "ops=$CLOSEDLOOP_OPS_DB_URL config=$CLOSEDLOOP_CONFIG"')
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2].startswith("postgresql+psycopg2://") and lines[-2].endswith(f"/{b.dbname('airflow')}")
    assert f"/{b.dbname('ops')}" in lines[-1] and f"config={DEFAULT_CONFIG_PATH}" in lines[-1]


def test_env_on_a_state_dir_no_stack_ran_in_says_so(tmp_path):
    out = _dev_stack(tmp_path / "nothing", "env")
    assert out.returncode == 1 and "no dev stack has run" in out.stderr and out.stdout == ""


def test_the_stack_after_make_demo_runs_the_demos_config(tmp_path):
    paths = StatePaths(tmp_path / "state").ensure()
    assert stack_config(paths, {}) == (DEFAULT_CONFIG_PATH, "the project's default")
    demo = paths.root / DEMO_CONFIG_FILE
    demo.write_text("# the demo's merged config\n")
    config, why = stack_config(paths, {})
    assert config == demo and "make demo" in why
    assert stack_config(paths, {"CLOSEDLOOP_CONFIG": str(DEFAULT_CONFIG_PATH)})[0] == DEFAULT_CONFIG_PATH
    # the record of the stack's last start wins over the demo file: the state was built with it
    other = tmp_path / "other.yaml"
    other.write_text("# another config\n")
    record_stack_env(paths, {"CLOSEDLOOP_CONFIG": str(other), "AIRFLOW__CORE__EXECUTOR": "x"})
    assert stack_config(paths, {})[0] == other
    assert stack_env.recorded(paths) == {"profile": "embedded", "env": {"CLOSEDLOOP_CONFIG": str(other)},
                                         "pg_password": False}


def test_clean_with_postgresql_down_removes_nothing_and_says_how_to_start_it(tmp_path):
    from devstack.environment import free_port

    paths = StatePaths(tmp_path / "state").ensure()
    port = free_port()  # nothing listens there
    stack_env.record(paths, "services", {"CLOSEDLOOP_PG_HOST": "127.0.0.1", "CLOSEDLOOP_PG_PORT": str(port),
                                         "CLOSEDLOOP_OPS_DB_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x"})
    out = _dev_stack(paths.root, "clean")
    assert out.returncode == 1
    assert f"PostgreSQL at postgres@127.0.0.1:{port} does not answer" in out.stderr and "pg_ctlcluster" in out.stderr
    assert paths.root.is_dir()


# --------------------------------------------------------------------------------------------
# several models in one stack (`make up MODELS=config/models`)
# --------------------------------------------------------------------------------------------


def _models_folder(tmp_path: Path, *names: str) -> Path:
    import yaml

    folder = tmp_path / "models"
    folder.mkdir()
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for name in names:
        data["model"]["name"] = name
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder


def test_the_models_a_stack_runs_are_checked_recorded_and_found_again(tmp_path):
    from devstack.environment import inherited_env, stack_models_dir
    from devstack.services import DevStackError

    paths = StatePaths(tmp_path / "state").ensure()
    folder = _models_folder(tmp_path, "card_fraud", "card_fraud_eu")
    assert stack_models_dir(paths, {}) == (None, "one model")
    assert stack_models_dir(paths, {}, str(folder))[0] == folder
    assert stack_models_dir(paths, {"CLOSEDLOOP_MODELS_DIR": str(folder)})[0] == folder
    with pytest.raises(DevStackError, match="holds no <model>.yaml"):
        stack_models_dir(paths, {}, tmp_path / "nothing")
    with pytest.raises(DevStackError, match="2 models .* on the services profile"):
        stack_models_dir(paths, {}, folder, "services")
    # the init records the folder, so the next `make up` (and the CLIs) run the same models
    record_stack_env(paths, {"CLOSEDLOOP_CONFIG": str(DEFAULT_CONFIG_PATH), "CLOSEDLOOP_MODELS_DIR": str(folder),
                             "AIRFLOW__CORE__EXECUTOR": "x"})
    assert stack_env.recorded(paths)["env"]["CLOSEDLOOP_MODELS_DIR"] == str(folder)
    found, why = stack_models_dir(paths, {})
    assert found == folder and "last ran" in why
    # the model of a task or a shell never leaks into a service: the stack chooses what it runs
    assert inherited_env({"CLOSEDLOOP_MODEL": "x", "CLOSEDLOOP_MODELS_DIR": "y", "PATH": "/bin"}) == {"PATH": "/bin"}


def test_env_and_the_training_cli_find_a_several_model_stacks_models(tmp_path):
    paths = StatePaths(tmp_path / "state").ensure()
    folder = _models_folder(tmp_path, "card_fraud", "card_fraud_eu")
    record_stack_env(paths, {"CLOSEDLOOP_MODELS_DIR": str(folder), "AIRFLOW__CORE__EXECUTOR": "x"})
    out = _dev_stack(paths.root, "env")
    assert out.returncode == 0 and f"export CLOSEDLOOP_MODELS_DIR={folder}" in out.stdout, out.stderr
    cli = [sys.executable, "-m", "training"]
    ran = subprocess.run([*cli, "--model", "card_fraud_eu", "audit"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**_cli_env(paths.root)})
    assert ran.returncode == 0, ran.stderr
    # the ledger it read is the model's own, in <home>/models/<model>/
    assert "CLOSEDLOOP_MODELS_DIR" in ran.stderr and "'card_fraud_eu'" in ran.stderr
    assert str(paths.root / "models" / "card_fraud_eu") in ran.stderr
    unnamed = subprocess.run([*cli, "audit"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env=_cli_env(paths.root))
    assert unnamed.returncode == 2
    assert "several models (card_fraud, card_fraud_eu" in unnamed.stderr and "--model" in unnamed.stderr


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOSEDLOOP_", "MLFLOW_"))}
    return {**env, "CLOSEDLOOP_HOME": str(home), "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}


def test_the_dbt_docs_site_serves_each_models_docs(tmp_path):
    import threading
    import urllib.error
    import urllib.request
    from http.server import ThreadingHTTPServer

    from devstack.docs_server import models_handler

    sites = {}
    for model in ("card_fraud", "loans"):
        sites[model] = tmp_path / model / "target"
        sites[model].mkdir(parents=True)
        (sites[model] / "index.html").write_text(f"docs of {model}")
    (tmp_path / "secret.txt").write_text("not served")
    server = ThreadingHTTPServer(("127.0.0.1", 0), models_handler(sites, tmp_path / "none"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        status, index = get("/")
        assert status == 200 and 'href="card_fraud/"' in index and 'href="loans/"' in index
        assert get("/loans/") == (200, "docs of loans")
        assert get("/card_fraud/index.html") == (200, "docs of card_fraud")
        assert get("/loans/../../secret.txt")[0] == 404 and get("/other/")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
