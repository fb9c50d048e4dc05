"""Champion/challenger aliases in the MLflow registry, with every move audited in the ledger.

Aliases say what is serving now; the `registry_audit` table says how it got there. Rollback reads
the audit log (a stack of champions: promotions push, rollbacks pop), never guesses from version
numbers. Every action carries an idempotency key (UNIQUE in the table): repeating an action with
the same key returns the first row and changes nothing, so a retried task cannot promote twice.

Faults (docs/contracts.md, "Registry audit"): every alias move runs under a per-model lock - a row
of `registry_locks` updated inside the ledger transaction that also writes the audit row (a row
lock on PostgreSQL, the database write lock on SQLite) - so two processes never interleave
"read champion -> move alias -> audit". Inside it the MLflow tags are written first, the audit row
is inserted but not committed, and the alias moves last; the commit follows. MLflow failing before
or at the alias move rolls the audit row back: nothing moved. The one window left (alias moved,
then the ledger commit fails) is repaired by re-running the same action with the same key.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from training.config import Config
from training.errors import ClosedloopError
from training.model import tracking
from training.paths import StatePaths
from training.storage import ledger

log = logging.getLogger(__name__)

Action = Literal["promote", "reject", "rollback", "force_promote", "first_promote"]
#: `trigger_reason` prefix of the automatic rollback (training/monitoring/shadow.py): such a rollback
#: blocks its `from_version` from gate-based promotion until new evidence (see `rollback_block`).
AUTO_ROLLBACK = "shadow_rollback"
#: `trigger_reason` of a promotion on shadow evidence; it clears a block (it is the new evidence).
SHADOW_PROMOTION = "shadow_evaluation"
#: Actions that make `to_version` the champion (they push onto the champion stack).
PROMOTING = ("promote", "first_promote", "force_promote")
GATE_DECISION_TAG = "gate_decision"

registry_audit = sa.Table(
    "registry_audit",
    ledger.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("from_version", sa.String(32)),
    sa.Column("to_version", sa.String(32)),
    sa.Column("run_id", sa.String(64)),
    sa.Column("reason", sa.Text),
    sa.Column("metrics", sa.Text),  # JSON
    sa.Column("report_uri", sa.Text),
    sa.Column("airflow_run_id", sa.String(250)),
    sa.Column("idempotency_key", sa.String(500), nullable=False, unique=True),
    # Who asked and why: added after the first ledgers were made, so `ledger.ensure_tables` adds them
    # to an older table (nullable; older rows read None).
    sa.Column("trigger_reason", sa.Text),  # the retrain's trigger (drift_monitor:..., schedule, manual, ...)
    sa.Column("actor", sa.String(250)),  # scheduler | user:<name> | api:<name> | cli:<os user> | dag:<dag_id>
)


#: One row per model; updating it inside a transaction is the registry lock (see the module doc).
registry_locks = sa.Table(
    "registry_locks",
    ledger.metadata,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(300)),
    sa.Column("at", sa.DateTime),
)


class RegistryError(ClosedloopError, RuntimeError):
    """The registry cannot do what was asked; the message says why and what to do instead."""


class MissingReasonError(ClosedloopError, ValueError):
    """An override (force-promote, rollback) was asked for without saying why."""


class TrainingInProgress(RegistryError):
    """Another process is training the same request (same idempotency key) right now."""


class ChampionMoved(RegistryError):
    """The champion changed after the gates ran: the decision compared against another model."""


#: `promote(gated_against=ANY_CHAMPION)`: do not check which champion the gates compared against.
ANY_CHAMPION = "*"


class NothingToRollBack(RegistryError):
    """The audit log holds no earlier champion to restore."""


class RollbackBlocked(RegistryError):
    """The version was rolled back automatically and no new evidence has cleared it since."""


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: dt.datetime
    model_name: str
    action: str
    from_version: str | None
    to_version: str | None
    run_id: str | None
    reason: str | None
    metrics: dict[str, Any]
    report_uri: str | None
    airflow_run_id: str | None
    idempotency_key: str
    trigger_reason: str | None = None
    actor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["at"] = self.at.isoformat()
        return d


def _engine(paths: StatePaths) -> sa.Engine:
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, registry_audit, registry_locks)
    return eng


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def default_actor() -> str:
    """Who acts when the caller does not say: `$CLOSEDLOOP_ACTOR` (a pod, a script), else the CLI's OS user."""
    import getpass

    given = os.environ.get("CLOSEDLOOP_ACTOR", "").strip()
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"cli:uid{os.getuid()}"


@contextmanager
def _locked(paths: StatePaths, model_name: str) -> Iterator[sa.Connection]:
    """A ledger transaction holding the model's registry lock until it commits.

    The first statement is an UPDATE of the model's lock row: PostgreSQL row-locks it, SQLite
    takes its database write lock (other writers wait up to the ledger's 30 s busy timeout).
    Write the audit row on the yielded connection: another connection would wait for this lock.
    """
    eng = _engine(paths)
    try:
        with eng.begin() as conn:
            conn.execute(sa.insert(registry_locks).values(model_name=model_name, holder=None, at=_now()))
    except sa.exc.IntegrityError:
        pass  # the row exists already
    holder = f"{socket.gethostname()}:{os.getpid()}"
    with eng.begin() as conn:
        conn.execute(
            sa.update(registry_locks)
            .where(registry_locks.c.model_name == model_name)
            .values(holder=holder, at=_now())
        )
        yield conn


def _record(row: Any) -> AuditRecord:
    m = dict(row._mapping)
    m["metrics"] = json.loads(m["metrics"]) if m.get("metrics") else {}
    return AuditRecord(**m)


def _find(conn: sa.Connection, idempotency_key: str) -> AuditRecord | None:
    row = conn.execute(
        sa.select(registry_audit).where(registry_audit.c.idempotency_key == idempotency_key)
    ).first()
    return None if row is None else _record(row)


def find_audit(paths: StatePaths, idempotency_key: str) -> AuditRecord | None:
    """The audit row recorded under a key, if that action already happened."""
    with _engine(paths).connect() as conn:
        return _find(conn, idempotency_key)


def audit_log(paths: StatePaths, model_name: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest-first audit rows of one model, JSON-friendly (for the UI and the CLI)."""
    with _engine(paths).connect() as conn:
        rows = conn.execute(
            sa.select(registry_audit)
            .where(registry_audit.c.model_name == model_name)
            .order_by(registry_audit.c.id.desc())
            .limit(limit)
        ).all()
    return [_record(r).to_dict() for r in rows]


def _insert(conn: sa.Connection, **values: Any) -> AuditRecord:
    """Insert one audit row in the locked transaction; if its key exists already, return that row."""
    found = _find(conn, values["idempotency_key"])
    if found is not None:
        return found
    values["at"] = values.get("at") or _now()
    values["actor"] = values.get("actor") or default_actor()
    values["metrics"] = json.dumps(values.get("metrics") or {}, sort_keys=True, default=str)
    for key in ("from_version", "to_version"):
        if values.get(key) is not None:
            values[key] = str(values[key])
    conn.execute(sa.insert(registry_audit).values(**values))
    found = _find(conn, values["idempotency_key"])
    assert found is not None
    return found


def champion_stack(paths: StatePaths, model_name: str) -> list[str]:
    """Champion versions in the order they took over, replaying the audit log (rollback pops)."""
    with _engine(paths).connect() as conn:
        return _stack(conn, model_name)


def _stack(conn: sa.Connection, model_name: str) -> list[str]:
    rows = conn.execute(
        sa.select(registry_audit.c.action, registry_audit.c.to_version)
        .where(registry_audit.c.model_name == model_name)
        .order_by(registry_audit.c.id)
    ).all()
    stack: list[str] = []
    for action, to_version in rows:
        if action in PROMOTING:
            if not stack or stack[-1] != str(to_version):
                stack.append(str(to_version))
        elif action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != str(to_version):  # keep the log authoritative
                stack.append(str(to_version))
    return stack


def _latest_promotion(conn: sa.Connection, model_name: str, version: str) -> AuditRecord | None:
    t = registry_audit
    row = conn.execute(
        sa.select(t)
        .where(
            t.c.model_name == model_name,
            t.c.to_version == version,
            t.c.action.in_([*PROMOTING, "rollback"]),
        )
        .order_by(t.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _record(row)


def current_champion(paths: StatePaths, cfg: Config) -> str | None:
    mv = tracking.alias_version(tracking.client(paths), cfg.model.name, tracking.CHAMPION)
    return None if mv is None else str(mv.version)


def _move_champion(
    conn: sa.Connection,
    paths: StatePaths,
    cfg: Config,
    version: str,
    action: Action,
    *,
    reason: str,
    idempotency_key: str,
    metrics: dict[str, Any] | None,
    report_uri: str | None,
    airflow_run_id: str | None,
    actor: str | None = None,
    trigger_reason: str | None = None,
) -> AuditRecord:
    """Under the registry lock: tags, then the (uncommitted) audit row, then the alias, last."""
    name = cfg.model.name
    mc = tracking.client(paths)
    mv = tracking.get_version(mc, name, version)
    previous = tracking.alias_version(mc, name, tracking.CHAMPION)
    from_version = None if previous is None else str(previous.version)
    move = from_version != str(version)
    if not move:
        # Already champion: a crash between the alias move and the audit commit; recover the
        # previous champion from the tag written before the move.
        recorded = mv.tags.get("previous_champion")
        from_version = None if recorded in (None, "none") else recorded
    else:
        mc.set_model_version_tag(name, str(version), "previous_champion", from_version or "none")
    mc.set_model_version_tag(name, str(version), "champion_since", dt.datetime.now(dt.UTC).isoformat())
    rec = _insert(
        conn,
        model_name=name,
        action=action,
        from_version=from_version,
        to_version=str(version),
        run_id=mv.run_id,
        reason=reason,
        metrics=metrics,
        report_uri=report_uri,
        airflow_run_id=airflow_run_id,
        idempotency_key=idempotency_key,
        actor=actor,
        trigger_reason=trigger_reason or mv.tags.get("trigger_reason"),
    )
    if move:
        mc.set_registered_model_alias(name, tracking.CHAMPION, str(version))
    log.info("%s: %s champion %s -> %s (%s)", action, name, from_version, version, reason)
    return rec


def promote(
    paths: StatePaths,
    cfg: Config,
    version: str | int,
    *,
    reason: str,
    idempotency_key: str,
    metrics: dict[str, Any] | None = None,
    report_uri: str | None = None,
    airflow_run_id: str | None = None,
    gated_against: str | None = ANY_CHAMPION,
    actor: str | None = None,
) -> AuditRecord:
    """Make a gate-approved version `@champion` in one alias move, recording the previous champion.

    The version must carry `gate_decision=promote` (set by `evaluate`); otherwise use
    `force_promote` with a reason. With no champion yet the action is audited as `first_promote`.
    `gated_against` (the champion version the gates compared with, None for none) makes the move
    refuse with `ChampionMoved` if another promotion got in between: re-run evaluate then.
    """
    done = find_audit(paths, idempotency_key)
    if done is not None:
        return done
    name = cfg.model.name
    mc = tracking.client(paths)
    with _locked(paths, name) as conn:
        done = _find(conn, idempotency_key)  # a concurrent run of the same action got here first
        if done is not None:
            return done
        blocked = _rollback_block(conn, name, str(version))  # first: the rollback is the reason that matters
        if blocked is not None:
            raise RollbackBlocked(blocked)
        mv = tracking.get_version(mc, name, version)
        if mv.tags.get(GATE_DECISION_TAG) != "promote":
            raise RegistryError(
                f"{name} version {version} has no passing gate decision "
                f"(tag {GATE_DECISION_TAG}={mv.tags.get(GATE_DECISION_TAG)!r}); run `python -m training evaluate` "
                "or use force-promote with a reason"
            )
        champion = tracking.alias_version(mc, name, tracking.CHAMPION)
        current = None if champion is None else str(champion.version)
        if gated_against != ANY_CHAMPION and current not in (gated_against, str(version)):
            raise ChampionMoved(
                f"{name}@champion is version {current} but version {version} was gated against "
                f"{gated_against or 'no champion'}: run `python -m training evaluate` again"
            )
        if champion is not None and str(champion.version) == str(version):
            stack = _stack(conn, name)
            if stack and stack[-1] == str(version):  # already audited as champion: nothing to do
                latest = _latest_promotion(conn, name, str(version))
                if latest is not None:
                    return latest
        return _move_champion(
            conn,
            paths,
            cfg,
            str(version),
            "first_promote" if champion is None else "promote",
            reason=reason,
            idempotency_key=idempotency_key,
            metrics=metrics,
            report_uri=report_uri,
            airflow_run_id=airflow_run_id,
            actor=actor,
        )


def reject(
    paths: StatePaths,
    cfg: Config,
    version: str | int,
    *,
    reason: str,
    idempotency_key: str,
    metrics: dict[str, Any] | None = None,
    report_uri: str | None = None,
    airflow_run_id: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """Record why a challenger was not promoted; the champion is left untouched."""
    done = find_audit(paths, idempotency_key)
    if done is not None:
        return done
    mc = tracking.client(paths)
    with _locked(paths, cfg.model.name) as conn:
        mv = tracking.get_version(mc, cfg.model.name, version)
        champion = tracking.alias_version(mc, cfg.model.name, tracking.CHAMPION)
        return _insert(
            conn,
            model_name=cfg.model.name,
            action="reject",
            from_version=None if champion is None else str(champion.version),
            to_version=str(version),
            run_id=mv.run_id,
            reason=reason,
            metrics=metrics,
            report_uri=report_uri,
            airflow_run_id=airflow_run_id,
            idempotency_key=idempotency_key,
            actor=actor,
            trigger_reason=mv.tags.get("trigger_reason"),
        )


def _require_reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise MissingReasonError(
            f"{what} needs a non-empty reason (it is written to the audit log): pass --reason '...'"
        )
    return text


def _key(given: str | None, prefix: str, airflow_run_id: str | None) -> str:
    if given:
        return given
    if airflow_run_id:
        return f"{prefix}:{airflow_run_id}"
    return f"{prefix}:{uuid.uuid4().hex}"


def force_promote(
    paths: StatePaths,
    cfg: Config,
    version: str | int,
    reason: str,
    *,
    idempotency_key: str | None = None,
    airflow_run_id: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """Make any registered version champion, bypassing the gates; the reason is mandatory.

    If the alias already points at `version` but the audit log does not say so (an earlier
    force-promote whose ledger commit failed, or a move made outside closedloop), this records it.
    """
    text = _require_reason(reason, "force-promote")
    key = _key(idempotency_key, f"force_promote:{cfg.model.name}:{version}", airflow_run_id)
    done = find_audit(paths, key)
    if done is not None:
        return done
    tracking.client(paths)
    with _locked(paths, cfg.model.name) as conn:
        done = _find(conn, key)
        if done is not None:
            return done
        if current_champion(paths, cfg) == str(version):
            stack = _stack(conn, cfg.model.name)
            if stack and stack[-1] == str(version):
                raise RegistryError(f"{cfg.model.name} version {version} is already the champion")
        return _move_champion(
            conn,
            paths,
            cfg,
            str(version),
            "force_promote",
            reason=text,
            idempotency_key=key,
            metrics=None,
            report_uri=None,
            airflow_run_id=airflow_run_id,
            actor=actor,
            trigger_reason=f"force_promote: {text}",
        )


ROLLBACK_KEY_TAG = "rollback_key"


def rollback(
    paths: StatePaths,
    cfg: Config,
    reason: str,
    *,
    idempotency_key: str | None = None,
    airflow_run_id: str | None = None,
    actor: str | None = None,
    trigger_reason: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> AuditRecord:
    """Restore the champion that preceded the current one, as the audit log records it.

    `trigger_reason` (default `rollback: <reason>`) and `metrics` (the evidence) go on the audit row.
    Two rollbacks with the same key move the alias once; two with different keys are two
    requests and roll back two steps, one after the other (never twice from the same champion).
    """
    text = _require_reason(reason, "rollback")
    name = cfg.model.name
    key = _key(idempotency_key, f"rollback:{name}", airflow_run_id)
    done = find_audit(paths, key)
    if done is not None:
        return done
    mc = tracking.client(paths)
    with _locked(paths, name) as conn:
        done = _find(conn, key)
        if done is not None:
            return done
        stack = _stack(conn, name)
        current = current_champion(paths, cfg)
        if current is None:
            raise NothingToRollBack(f"{name} has no champion: nothing to roll back")
        move = True
        if len(stack) >= 2 and stack[-1] != current and stack[-2] == current:
            # This very rollback moved the alias, then its ledger commit failed: record it now.
            left = tracking.get_version(mc, name, stack[-1])
            move = left.tags.get(ROLLBACK_KEY_TAG) != key
            if not move:
                current = stack[-1]
        if not stack or stack[-1] != current:
            raise RegistryError(
                f"{name}@champion is version {current} but the audit log says {stack[-1] if stack else 'none'}: "
                "the alias was moved outside closedloop; force-promote the intended version with a reason"
            )
        if len(stack) < 2:
            raise NothingToRollBack(
                f"{name} version {current} is the first audited champion: there is no earlier champion to restore"
            )
        target = stack[-2]
        target_mv = tracking.get_version(mc, name, target)  # still registered?
        mc.set_model_version_tag(name, current, "rolled_back", text[:500])
        mc.set_model_version_tag(name, current, ROLLBACK_KEY_TAG, key)
        rec = _insert(
            conn,
            model_name=name,
            action="rollback",
            from_version=current,
            to_version=target,
            run_id=target_mv.run_id,
            reason=text,
            metrics=metrics,
            report_uri=None,
            airflow_run_id=airflow_run_id,
            idempotency_key=key,
            actor=actor,
            trigger_reason=trigger_reason or f"rollback: {text}",
        )
        if move:
            mc.set_registered_model_alias(name, tracking.CHAMPION, target)
    log.warning("rollback: %s champion %s -> %s (%s)", name, current, target, text)
    return rec


#: How long a refused `train` waits for the lease holder's MLflow run to appear (to name it).
HOLDER_RUN_WAIT_S = 20.0


def _running_runs(paths: StatePaths, cfg: Config, idempotency_key: str) -> list:
    """The RUNNING MLflow runs of a training request (its `idempotency_key` tag)."""
    mc = tracking.client(paths)
    exp = mc.get_experiment_by_name(tracking.experiment_name(cfg))
    if exp is None:
        return []
    safe = idempotency_key.replace("'", "''")
    return mc.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.{tracking.IDEMPOTENCY_TAG} = '{safe}' and attributes.status = 'RUNNING'",
    )


def _refusal(paths: StatePaths, cfg: Config, idempotency_key: str) -> TrainingInProgress:
    """The error for a request whose lease another process holds, naming that process's run."""
    deadline = time.monotonic() + HOLDER_RUN_WAIT_S
    runs = _running_runs(paths, cfg, idempotency_key)
    while not runs and time.monotonic() < deadline:  # the holder opens its run right after the lease
        time.sleep(0.5)
        runs = _running_runs(paths, cfg, idempotency_key)
    holder = (
        f"MLflow run {', '.join(r.info.run_id for r in runs)}"
        if runs
        else "another process (its MLflow run is not open yet)"
    )
    return TrainingInProgress(
        f"training request {idempotency_key!r} of {cfg.model.name} is being trained by {holder}; "
        "not training it twice - retry once that run has finished (the retry returns its version)"
    )


@contextmanager
def training_lease(paths: StatePaths, cfg: Config, idempotency_key: str) -> Iterator[None]:
    """Hold one training request for this process, or raise `TrainingInProgress` at once.

    Two processes training the same key would register two versions whose gate decisions share
    one audit key (one would never be audited). The lease is a lock that dies with its holder - a
    killed worker never blocks the retry: a PostgreSQL session advisory lock when the ledger is
    PostgreSQL (any host), else an flock on a file under the state directory (the embedded
    profile, one machine). Not a ledger row lock: SQLite's would stop every ledger writer for the
    minutes training takes.
    """
    ident = f"train:{cfg.model.name}:{idempotency_key}".encode()
    eng = ledger.engine(paths)
    if eng.dialect.name == "postgresql":
        lock_id = int.from_bytes(hashlib.blake2b(ident, digest_size=8).digest(), "big", signed=True)
        with eng.connect() as conn:
            held = conn.execute(sa.text("select pg_try_advisory_lock(:k)"), {"k": lock_id}).scalar()
            conn.commit()  # the lock is the session's: no transaction stays open while training
            if not held:
                raise _refusal(paths, cfg, idempotency_key)
            try:
                yield
            finally:
                conn.execute(sa.text("select pg_advisory_unlock(:k)"), {"k": lock_id})
                conn.commit()
        return
    path = paths.root / "locks" / f"train-{hashlib.sha256(ident).hexdigest()[:32]}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(paths, cfg, idempotency_key) from None
        yield
    finally:
        os.close(fd)  # releases the flock


def end_abandoned_runs(paths: StatePaths, cfg: Config, idempotency_key: str) -> list[str]:
    """Mark KILLED the runs of a training request that are still RUNNING but registered nothing.

    A worker killed mid-train (SIGKILL, OOM, pod eviction) never ends its MLflow run; `train`
    calls this before retrying the same request, holding the request's `training_lease`, so no
    live process can own such a run: the run list shows the attempt as killed.
    """
    mc = tracking.client(paths)
    ended = []
    for run in _running_runs(paths, cfg, idempotency_key):
        if "registered_version" not in run.data.tags:
            mc.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
            log.warning("run %s of %s was left RUNNING by a dead worker; marked KILLED", run.info.run_id, idempotency_key)
    return ended


def _version_summary(mc: Any, mv: Any) -> dict[str, Any]:
    metrics = mc.get_run(mv.run_id).data.metrics
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "created_at": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(),
        "lineage": {k: mv.tags.get(k) for k in tracking.LINEAGE_TAGS},
        # a drift-aware retrain's change point (its training window is anchored there), else None
        "onset": None if mv.tags.get("onset") in (None, "", tracking.UNKNOWN) else mv.tags.get("onset"),
        "holdout_metrics": {k[len("holdout_") :]: v for k, v in metrics.items() if k.startswith("holdout_")},
        "gate_decision": mv.tags.get(GATE_DECISION_TAG),
        "decision_report": mv.tags.get("decision_report"),
        "previous_champion": mv.tags.get("previous_champion"),
    }


def model_status(paths: StatePaths, cfg: Config) -> dict[str, Any]:
    """What serves and what waits: champion and challenger with lineage and holdout metrics.

    For the short-circuit of `train_model` (is there a champion? when was it trained?), the drift
    monitor (the champion's data version and holdout metrics) and the UI.
    """
    mc = tracking.client(paths)
    out: dict[str, Any] = {"model_name": cfg.model.name}
    for alias in (tracking.CHAMPION, tracking.CHALLENGER):
        mv = tracking.alias_version(mc, cfg.model.name, alias)
        out[alias] = None if mv is None else _version_summary(mc, mv)
    return out


# -- shadow evaluation: the previous champion, automatic rollback and its block ---------------------


def previous_champion(paths: StatePaths, cfg: Config) -> str | None:
    """The champion the current one replaced (audit log's stack), scored in shadow after a promotion.

    None when there is none, or when the current champion came back by a rollback: the rollback
    watch follows promotions only (a restored champion is not judged against its own predecessor).
    """
    current = current_champion(paths, cfg)
    if current is None:
        return None
    with _engine(paths).connect() as conn:
        stack = _stack(conn, cfg.model.name)
        latest = _latest_promotion(conn, cfg.model.name, current)
    if len(stack) < 2 or stack[-1] != current or latest is None or latest.action == "rollback":
        return None
    return stack[-2]


def _rollback_block(conn: sa.Connection, model_name: str, version: str) -> str | None:
    """Why `version` may not be promoted by the gates again, or None.

    An automatic rollback away from a version blocks it; a later promotion of it on shadow evidence
    (trigger `shadow_evaluation`) or a person's force-promote is the new evidence that clears it.
    """
    t = registry_audit
    rows = conn.execute(
        sa.select(t).where(t.c.model_name == model_name).order_by(t.c.id)
    ).all()
    block: AuditRecord | None = None
    for row in rows:
        rec = _record(row)
        if rec.action == "rollback" and rec.from_version == version and (rec.trigger_reason or "").startswith(AUTO_ROLLBACK):
            block = rec
        elif block is not None and rec.to_version == version and (
            rec.action == "force_promote" or (rec.trigger_reason or "") == SHADOW_PROMOTION
        ):
            block = None
    if block is None:
        return None
    return (
        f"{model_name} version {version} was rolled back automatically on {block.at:%Y-%m-%d %H:%M} "
        f"({block.reason}); it is not promoted again without new evidence: a shadow evaluation showing it "
        "significantly better, or `python -m training force-promote --version "
        f"{version} --reason '...'` by a person (audited)"
    )


def rollback_block(paths: StatePaths, cfg: Config, version: str | int) -> str | None:
    """Why `version` may not be promoted again after an automatic rollback, or None (see `_rollback_block`)."""
    with _engine(paths).connect() as conn:
        return _rollback_block(conn, cfg.model.name, str(version))


def auto_rollback(
    paths: StatePaths,
    cfg: Config,
    *,
    reason: str,
    evidence: dict[str, Any],
    idempotency_key: str,
    airflow_run_id: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """`rollback` by the monitor on shadow evidence: audited with trigger `shadow_rollback: ...`, the
    evidence in `metrics`; the version left behind is blocked (`rollback_block`)."""
    record = rollback(paths, cfg, reason, idempotency_key=idempotency_key, airflow_run_id=airflow_run_id,
                      actor=actor or cfg.shadow.rollback.actor, trigger_reason=f"{AUTO_ROLLBACK}: {reason}",
                      metrics=evidence)
    tracking.client(paths).set_model_version_tag(cfg.model.name, str(record.from_version), "rollback_blocked", reason[:500])
    return record


def promote_on_shadow(
    paths: StatePaths,
    cfg: Config,
    version: str | int,
    *,
    reason: str,
    evidence: dict[str, Any],
    idempotency_key: str,
    airflow_run_id: str | None = None,
    actor: str | None = None,
) -> AuditRecord:
    """Make a challenger champion on shadow evidence (the caller checked the rule; see shadow.py).

    Audited as `promote` with trigger `shadow_evaluation` and the evidence in `metrics`; a version
    blocked by an automatic rollback is cleared by it (the shadow win is the new evidence).
    """
    done = find_audit(paths, idempotency_key)
    if done is not None:
        return done
    with _locked(paths, cfg.model.name) as conn:
        done = _find(conn, idempotency_key)
        if done is not None:
            return done
        if current_champion(paths, cfg) == str(version):
            raise RegistryError(f"{cfg.model.name} version {version} is already the champion")
        return _move_champion(
            conn, paths, cfg, str(version), "promote", reason=reason, idempotency_key=idempotency_key,
            metrics=evidence, report_uri=None, airflow_run_id=airflow_run_id, actor=actor,
            trigger_reason=SHADOW_PROMOTION,
        )
