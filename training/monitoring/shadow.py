"""Shadow evaluation and automatic rollback: two versions judged on the same matured live rows.

Batch inference scores every day with `@champion`, `@challenger` in shadow and, after a promotion,
the champion it replaced (alias `previous_champion`; training/serving/inference.py). Once the labels
of those days have matured (the drift monitor's maturity: `windows.label_maturity_days`, or the one
learned from the label feed, training/monitoring/label_delay.py) this module compares two versions
on exactly the rows both scored:

* `challenger` - @challenger (candidate) against @champion (baseline);
* `rollback_watch` - the current champion (candidate) against the previous champion (baseline).

The comparison is the paired, class-stratified bootstrap CI of `candidate - baseline` on
`model.primary_metric` (`training.model.metrics.paired_bootstrap_diff`, the gates' own), plus the
flip rate: the share of rows whose decision differs, each version at its own decision threshold
(and both at one version's threshold, to tell a ranking change from a threshold change). Verdict:
`better` (CI entirely above 0), `worse` (entirely below 0), `within_noise`, or `insufficient`
(fewer than `shadow.min_rows` rows or `shadow.min_positives` positives). One row per model,
window and version pair in the `shadow_evaluations` ledger table (re-judging the same window
replaces it).

What the loop does with it (simple rules, each audited in `registry_audit`):

* rollback: a `rollback_watch` verdict `worse` with `shadow.rollback.enabled` moves `@champion` back
  (`registry.auto_rollback`, action `rollback`, trigger `shadow_rollback: ...`, actor
  `shadow.rollback.actor`, the evidence in `metrics`); the version left behind is blocked from
  gate-based promotion until new evidence (`registry.rollback_block`);
* promotion: a `challenger` verdict `better` is promotion evidence. It is always recorded and shown
  (model-health page); with `shadow.promote_challenger` a challenger whose gates failed only the
  holdout comparison with the champion (`non_regression`) is promoted (`registry.promote_on_shadow`,
  trigger `shadow_evaluation`) - live rows outrank the holdout's "not significantly better", never a
  failed floor, slice, signature, calibration or budget gate.

It runs in the drift monitor DAG after `evaluate` (task `shadow`): that DAG runs once per scored day
after the day's labels are published, the same moment the monitor judges matured performance, so
the two judgements read the same labels; batch_inference runs before labels exist.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from training.config import Config
from training.model import registry, tracking
from training.model.metrics import MetricError, paired_bootstrap_diff, rank_metric
from training.monitoring import label_delay
from training.monitoring.drift_job import _labels_for
from training.paths import StatePaths
from training.serving.inference import PREDICTIONS_TABLE, PREVIOUS_CHAMPION
from training.storage import ledger, warehouse

DAY = dt.timedelta(days=1)
Kind = Literal["challenger", "rollback_watch"]
Verdict = Literal["better", "worse", "within_noise", "insufficient"]

shadow_evaluations = sa.Table(
    "shadow_evaluations",
    ledger.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),  # challenger | rollback_watch
    sa.Column("as_of", sa.Date, nullable=False),  # the monitored day whose run judged it
    sa.Column("window_start", sa.Date, nullable=False),  # first / last matured day both versions scored
    sa.Column("window_end", sa.Date, nullable=False),
    sa.Column("candidate_alias", sa.String(32), nullable=False),
    sa.Column("candidate_version", sa.String(32), nullable=False),
    sa.Column("baseline_alias", sa.String(32), nullable=False),
    sa.Column("baseline_version", sa.String(32), nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("n_positives", sa.Integer, nullable=False),
    sa.Column("candidate_value", sa.Float),
    sa.Column("baseline_value", sa.Float),
    sa.Column("diff", sa.Float),  # observed candidate - baseline
    sa.Column("lower", sa.Float),
    sa.Column("upper", sa.Float),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("n_bootstrap", sa.Integer, nullable=False),
    sa.Column("candidate_threshold", sa.Float),
    sa.Column("baseline_threshold", sa.Float),
    sa.Column("flip_rate", sa.Float),  # each version at its own threshold
    sa.Column("flip_rate_at_candidate_threshold", sa.Float),
    sa.Column("flip_rate_at_baseline_threshold", sa.Float),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("why", sa.Text, nullable=False),
    sa.Column("action", sa.String(32)),  # rollback | promote | None (recorded only)
    sa.Column("action_why", sa.Text),
    sa.Column("audit_key", sa.String(500)),  # the registry_audit row of the action
    sa.UniqueConstraint("model_name", "kind", "window_start", "window_end", "candidate_version",
                        "baseline_version", name="uq_shadow_evaluation"),
)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One version pair judged on one window of matured live rows (a `shadow_evaluations` row)."""

    model_name: str
    kind: Kind
    as_of: dt.date
    window_start: dt.date
    window_end: dt.date
    candidate_alias: str
    candidate_version: str
    baseline_alias: str
    baseline_version: str
    metric: str
    n_rows: int
    n_positives: int
    confidence: float
    n_bootstrap: int
    verdict: Verdict
    why: str
    candidate_value: float | None = None
    baseline_value: float | None = None
    diff: float | None = None
    lower: float | None = None
    upper: float | None = None
    candidate_threshold: float | None = None
    baseline_threshold: float | None = None
    flip_rate: float | None = None
    flip_rate_at_candidate_threshold: float | None = None
    flip_rate_at_baseline_threshold: float | None = None
    action: str | None = None
    action_why: str | None = None
    audit_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("as_of", "window_start", "window_end"):
            d[key] = d[key].isoformat()
        return d


def compare(
    cfg: Config,
    rows: pd.DataFrame,
    *,
    kind: Kind,
    as_of: dt.date,
    candidate: tuple[str, str],
    baseline: tuple[str, str],
) -> Comparison:
    """Judge one pair on its paired rows (columns: batch_date, y, candidate_score, baseline_score,
    candidate_threshold, baseline_threshold); `candidate` / `baseline` are (alias, version)."""
    s = cfg.shadow
    metric = cfg.model.primary_metric
    y = rows["y"].to_numpy(dtype="int64") if not rows.empty else np.array([], dtype="int64")
    n, pos = int(y.size), int(y.sum())
    dates = pd.to_datetime(rows["batch_date"]).dt.date if not rows.empty else pd.Series([], dtype=object)
    base = dict(
        model_name=cfg.model.name, kind=kind, as_of=as_of,
        window_start=min(dates) if n else as_of, window_end=max(dates) if n else as_of,
        candidate_alias=candidate[0], candidate_version=candidate[1],
        baseline_alias=baseline[0], baseline_version=baseline[1],
        metric=metric, n_rows=n, n_positives=pos, confidence=s.confidence, n_bootstrap=s.n_bootstrap,
    )
    if n < s.min_rows or pos < s.min_positives or pos == n:
        return Comparison(**base, verdict="insufficient", why=(  # type: ignore[arg-type]
            f"{n} paired matured rows with {pos} positives (shadow.min_rows {s.min_rows}, "
            f"min_positives {s.min_positives}): not judged yet"))
    c = rows["candidate_score"].to_numpy(dtype="float64")
    b = rows["baseline_score"].to_numpy(dtype="float64")
    tc, tb = float(rows["candidate_threshold"].iloc[0]), float(rows["baseline_threshold"].iloc[0])
    try:
        boot = paired_bootstrap_diff(y, c, b, metric=metric, n_bootstrap=s.n_bootstrap, confidence=s.confidence,
                                     seed=cfg.training.seed)
    except MetricError as exc:
        return Comparison(**base, verdict="insufficient", why=str(exc))  # type: ignore[arg-type]
    verdict: Verdict = "better" if boot.lower > 0 else "worse" if boot.upper < 0 else "within_noise"
    flips = float(np.mean((c >= tc) != (b >= tb)))
    word = {"better": "significantly better than", "worse": "significantly worse than",
            "within_noise": "within noise of"}[verdict]
    why = (f"v{candidate[1]} ({candidate[0]}) is {word} v{baseline[1]} ({baseline[0]}) on {n} matured live rows "
           f"({pos} positives, {min(dates)}..{max(dates)}): {metric} {boot.observed_diff:+.4f}, "
           f"{boot.confidence:.0%} CI [{boot.lower:+.4f}, {boot.upper:+.4f}]; decisions flip on {flips:.2%} of rows")
    return Comparison(
        **base, verdict=verdict, why=why,  # type: ignore[arg-type]
        candidate_value=rank_metric(y, c, metric), baseline_value=rank_metric(y, b, metric),
        diff=boot.observed_diff, lower=boot.lower, upper=boot.upper,
        candidate_threshold=tc, baseline_threshold=tb, flip_rate=flips,
        flip_rate_at_candidate_threshold=float(np.mean((c >= tc) != (b >= tc))),
        flip_rate_at_baseline_threshold=float(np.mean((c >= tb) != (b >= tb))),
    )


def paired_rows(
    paths: StatePaths, cfg: Config, candidate: tuple[str, str], baseline: tuple[str, str],
    start: dt.date, end: dt.date, as_of: dt.date,
) -> pd.DataFrame:
    """The rows both versions scored (same entity, same day) in [start, end], with their matured label."""
    sql = f"""
        select c.entity_id, c.batch_date, c.score as candidate_score, c.threshold as candidate_threshold,
               b.score as baseline_score, b.threshold as baseline_threshold
        from {PREDICTIONS_TABLE} c
        join {PREDICTIONS_TABLE} b
          on b.model_name = c.model_name and b.batch_date = c.batch_date and b.entity_id = c.entity_id
        where c.model_name = ? and c.alias = ? and c.model_version = ? and b.alias = ? and b.model_version = ?
          and c.batch_date between ? and ?
        order by c.batch_date, c.entity_id
    """
    with warehouse.connect(paths, read_only=True) as con:
        if not con.table_exists("published", "predictions"):
            return pd.DataFrame()
        frame = con.frame(sql, [cfg.model.name, *candidate, *baseline, start, end])
    if frame.empty:
        return frame
    id_col, target = cfg.model.id_column, cfg.model.target
    labels = _labels_for(paths, cfg, frame["entity_id"], as_of)[[id_col, target]]
    labels = labels.assign(entity_id=labels[id_col].astype(str)).drop_duplicates("entity_id")
    joined = frame.merge(labels[["entity_id", target]], on="entity_id", how="inner")
    return joined.rename(columns={target: "y"}).assign(y=lambda f: f["y"].astype("int64"))


def matured_until(paths: StatePaths, cfg: Config, as_of: dt.date) -> tuple[dt.date | None, str]:
    """The last day whose labels have matured on `as_of` (the drift monitor's maturity), and why."""
    learn = cfg.windows.label_maturity.learn
    maturity = label_delay.learn(
        cfg,
        label_delay.load_delays(paths, cfg, label_delay.history_start(cfg, as_of), as_of) if learn
        else label_delay.no_delays(),
        as_of,
    )
    if maturity.rising:
        return None, f"label delay rising ({maturity.previous_days} -> {maturity.days} days): not judged until it holds"
    return as_of - maturity.days * DAY, f"labels matured until {as_of - maturity.days * DAY} ({maturity.days} days)"


def _record(paths: StatePaths, comparison: Comparison) -> None:
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, shadow_evaluations)
    t = shadow_evaluations
    values = {**dataclasses.asdict(comparison), "at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}
    with eng.begin() as con:
        con.execute(sa.delete(t).where(
            t.c.model_name == comparison.model_name, t.c.kind == comparison.kind,
            t.c.window_start == comparison.window_start, t.c.window_end == comparison.window_end,
            t.c.candidate_version == comparison.candidate_version,
            t.c.baseline_version == comparison.baseline_version,
        ))
        con.execute(sa.insert(t).values(**values))


def history(paths: StatePaths, model_name: str, limit: int = 50) -> list[dict[str, Any]]:
    """Newest-first shadow evaluations of one model, JSON-friendly (the UI and the CLI)."""
    eng = ledger.engine(paths)
    ledger.ensure_tables(eng, shadow_evaluations)
    t = shadow_evaluations
    with eng.connect() as con:
        rows = con.execute(sa.select(t).where(t.c.model_name == model_name)
                           .order_by(t.c.as_of.desc(), t.c.id.desc()).limit(limit)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        out.append({k: v.isoformat() if isinstance(v, dt.date | dt.datetime) else v for k, v in d.items()})
    return out


def _pairs(paths: StatePaths, cfg: Config) -> list[tuple[Kind, tuple[str, str], tuple[str, str]]]:
    """The version pairs scored side by side now: rollback watch first (it may move the champion)."""
    mc = tracking.client(paths)
    champion = registry.current_champion(paths, cfg)
    if champion is None:
        return []
    pairs: list[tuple[Kind, tuple[str, str], tuple[str, str]]] = []
    previous = registry.previous_champion(paths, cfg)
    if previous is not None and previous != champion and cfg.shadow.rollback.enabled:
        pairs.append(("rollback_watch", (tracking.CHAMPION, champion), (PREVIOUS_CHAMPION, previous)))
    challenger = tracking.alias_version(mc, cfg.model.name, tracking.CHALLENGER)
    if challenger is not None and str(challenger.version) != champion:
        pairs.append(("challenger", (tracking.CHALLENGER, str(challenger.version)), (tracking.CHAMPION, champion)))
    return pairs


def _rollback(paths: StatePaths, cfg: Config, cmp: Comparison, *, airflow_run_id: str | None,
              actor: str | None) -> tuple[Comparison, dict[str, Any] | None]:
    if cmp.verdict != "worse":
        return cmp, None
    reason = (f"v{cmp.candidate_version} significantly worse than the previous champion v{cmp.baseline_version} "
              f"on {cmp.n_rows} matured live rows ({cmp.window_start}..{cmp.window_end}): {cmp.metric} "
              f"{cmp.diff:+.4f}, {cmp.confidence:.0%} CI [{cmp.lower:+.4f}, {cmp.upper:+.4f}]")
    key = f"shadow_rollback:{cmp.model_name}:v{cmp.candidate_version}:{cmp.window_end.isoformat()}"
    record = registry.auto_rollback(paths, cfg, reason=reason, evidence=_evidence(cmp), idempotency_key=key,
                                    airflow_run_id=airflow_run_id, actor=actor)
    done = dataclasses.replace(cmp, action="rollback", audit_key=record.idempotency_key, action_why=(
        f"rolled @champion back to v{record.to_version}; v{record.from_version} is blocked from promotion "
        "until new evidence"))
    return done, record.to_dict()


def _promotion(paths: StatePaths, cfg: Config, cmp: Comparison, *, airflow_run_id: str | None,
               actor: str | None) -> tuple[Comparison, dict[str, Any] | None]:
    if cmp.verdict != "better":
        return cmp, None
    if not cfg.shadow.promote_challenger:
        return dataclasses.replace(cmp, action_why=(
            "promotion evidence, recorded (shadow.promote_challenger is off: promote it with "
            f"`python -m training force-promote --version {cmp.candidate_version} --reason '...'`)")), None
    mv = tracking.get_version(tracking.client(paths), cfg.model.name, cmp.candidate_version)
    failed = {g for g in (mv.tags.get("gate_failed") or "").split(",") if g and g != "none"}
    if failed != {"non_regression"}:
        return dataclasses.replace(cmp, action_why=(
            f"not promoted on shadow evidence: its gates failed {sorted(failed) or 'nothing'} - only a challenger "
            "that failed just the holdout comparison with the champion (non_regression) is promoted on live rows")), None
    key = f"shadow_promote:{cmp.model_name}:v{cmp.candidate_version}:{cmp.window_end.isoformat()}"
    record = registry.promote_on_shadow(
        paths, cfg, cmp.candidate_version, reason=f"shadow evaluation: {cmp.why}", evidence=_evidence(cmp),
        idempotency_key=key, airflow_run_id=airflow_run_id, actor=actor or cfg.shadow.rollback.actor)
    return dataclasses.replace(cmp, action="promote", audit_key=record.idempotency_key, action_why=(
        f"promoted v{cmp.candidate_version} to @champion on shadow evidence (was v{record.from_version})")), record.to_dict()


def _evidence(cmp: Comparison) -> dict[str, Any]:
    keep = ("kind", "window_start", "window_end", "candidate_version", "baseline_version", "metric", "n_rows",
            "n_positives", "candidate_value", "baseline_value", "diff", "lower", "upper", "confidence", "flip_rate")
    d = cmp.to_dict()
    return {f"shadow_{k}": d[k] for k in keep}


def judge(
    paths: StatePaths, cfg: Config, as_of: dt.date, *, airflow_run_id: str | None = None, actor: str | None = None,
) -> dict[str, Any]:
    """Judge every version pair scored in shadow on the labels matured by `as_of`, act, record.

    Returns a small dict for XCom: the comparisons, and the rollback / promotion audit rows (None
    when nothing moved).
    """
    out: dict[str, Any] = {"as_of": as_of.isoformat(), "comparisons": [], "rollback": None, "promotion": None}
    if not cfg.shadow.enabled:
        out["why"] = "shadow evaluation disabled (shadow.enabled: false)"
        return out
    last, why = matured_until(paths, cfg, as_of)
    out["why"] = why
    if last is None:
        return out
    first = last - (cfg.shadow.max_window_days - 1) * DAY
    for kind, candidate, baseline in _pairs(paths, cfg):
        if kind == "challenger" and out["rollback"] is not None:
            continue  # the champion just moved: the challenger is judged against the new one next time
        rows = paired_rows(paths, cfg, candidate, baseline, first, last, as_of)
        if rows.empty:
            continue
        cmp = compare(cfg, rows, kind=kind, as_of=as_of, candidate=candidate, baseline=baseline)
        if kind == "rollback_watch":
            cmp, out["rollback"] = _rollback(paths, cfg, cmp, airflow_run_id=airflow_run_id, actor=actor)
        else:
            cmp, out["promotion"] = _promotion(paths, cfg, cmp, airflow_run_id=airflow_run_id, actor=actor)
        _record(paths, cmp)
        out["comparisons"].append(cmp.to_dict())
    return json.loads(json.dumps(out, default=str))


def judge_days(
    paths: StatePaths, cfg: Config, days: Sequence[dt.date], *, airflow_run_id: str | None = None,
    actor: str | None = None, log: Any = print,
) -> dict[str, Any]:
    """`judge` each monitored day, oldest first; stops after a rollback or promotion (one move per run)."""
    result: dict[str, Any] = {"comparisons": [], "rollback": None, "promotion": None}
    for day in days:
        result = judge(paths, cfg, day, airflow_run_id=airflow_run_id, actor=actor)
        for c in result["comparisons"]:
            log(f"{day}: shadow {c['kind']}: {c['verdict']}: {c['why']}" + (f" -> {c['action_why']}" if c.get("action_why") else ""))
        if result["rollback"] or result["promotion"]:
            break
    return result
