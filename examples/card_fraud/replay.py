"""Replay the drift monitor over simulated days, without Airflow or a warehouse.

Why: whether the trigger policy cries wolf (weekly seasonality, warm-up trends, one-day blips) or
storms (persistent drift) is a property of the whole chain - simulator, point-in-time features,
Evidently, the policy - measured over weeks of days. This module runs that chain in memory with the
same functions the `drift_monitor` DAG runs (`drift_job.measure_interval` and `retrain_trigger.decide`),
so the tests and `benchmarks/healing_monitoring.py` measure the landed policy, not a copy of it.

The features are computed here with DuckDB window functions close to the dbt mart's definitions
(docs/contracts.md: tx counts, amount vs the customer's 30-day average, first-seen country/device,
category fraud rate from matured labels); history starts empty on the first simulated day, so the
history-based features warm up exactly as in a fresh warehouse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from examples.card_fraud import simulator
from examples.card_fraud.spec import SimulatorSpec
from training.config import Config, parse_config
from training.monitoring import retrain_trigger
from training.monitoring.retrain_trigger import Decision, PastTrigger, WindowEvidence
from training.paths import StatePaths

DAY = dt.timedelta(days=1)


def simulated_features(
    spec: SimulatorSpec, days: int, *, label_maturity_days: int = 5, rate_window_days: int = 28
) -> pd.DataFrame:
    """`days` simulated days from `spec.start_date`: point-in-time model features, `batch_date`, `is_fraud`."""
    import duckdb

    frames = []
    for i in range(days):
        day = spec.start_date + i * DAY
        tx = simulator.generate_transactions(spec, day)
        truth = simulator.ground_truth(spec, day)[["transaction_id", "is_fraud"]]
        frames.append(tx.merge(truth, on="transaction_id").assign(batch_date=day))
    raw = pd.concat(frames, ignore_index=True)
    lag, window = int(label_maturity_days), int(rate_window_days)
    with duckdb.connect() as con:
        con.register("tx", raw)
        out = con.sql(
            f"""
            with daily as (
                select merchant_category, batch_date, count(*) as n, sum(is_fraud::int) as frauds
                from tx group by all
            ),
            rates as (  -- category rate from transactions at least `lag` days old (labels matured)
                select d.merchant_category, d.batch_date,
                       (coalesce(sum(p.frauds), 0) + 1000 * 0.01) / (coalesce(sum(p.n), 0) + 1000)
                         as category_fraud_rate
                from (select distinct merchant_category, batch_date from tx) d
                left join daily p on p.merchant_category = d.merchant_category
                  and p.batch_date >= d.batch_date - interval {lag + window} day
                  and p.batch_date < d.batch_date - interval {lag} day
                group by all
            ),
            feats as (
                select tx.*,
                  ln(1 + amount) as log_amount,
                  hour(event_ts) as hour_of_day,
                  (dayofweek(event_ts) in (0, 6))::int as is_weekend,
                  count(*) over (partition by customer_id order by event_ts
                                 range between interval 1 hour preceding and current row) as tx_count_1h,
                  count(*) over (partition by customer_id order by event_ts
                                 range between interval 24 hour preceding and current row) as tx_count_24h,
                  avg(amount) over (partition by customer_id order by event_ts
                                 range between interval 30 day preceding and current row
                                 exclude current row) as prior_avg,
                  (min(event_ts) over (partition by customer_id, country order by event_ts
                                 range between unbounded preceding and current row) = event_ts)::int
                    as is_new_country,
                  (min(event_ts) over (partition by customer_id, device_id order by event_ts
                                 range between unbounded preceding and current row) = event_ts)::int
                    as is_new_device
                from tx
            )
            select f.* exclude (prior_avg),
                   case when prior_avg is null or prior_avg <= 0 then 1.0 else amount / prior_avg end
                     as amount_to_customer_avg,
                   r.category_fraud_rate
            from feats f join rates r using (merchant_category, batch_date)
            order by event_ts
            """
        ).df()
    out["batch_date"] = pd.to_datetime(out["batch_date"]).dt.date
    out["is_fraud"] = out["is_fraud"].astype(int)
    return out


def old_policy(cfg: Config) -> Config:
    """`cfg` with the monitor settings landed before issue 10, for comparisons (tests, benchmark).

    Reference used as given (the frozen holdout), no per-feature expected-drift or critical
    policy, no storm cap or backoff. (k-of-n now counts non-overlapping periods either way.)
    """
    data = cfg.model_dump(mode="json")
    data["drift"].update(
        reference="as_given",
        feature_overrides={},
        storm={"max_triggers": 10_000, "period_days": 1, "backoff_days": 0, "backoff_factor": 1.0},
    )
    return parse_config(data, "old monitoring policy")


def fit_champion(frame: pd.DataFrame, cfg: Config, seed: int = 0) -> Callable[[pd.DataFrame], np.ndarray]:
    """A small logistic-regression champion on `frame`; returns its scoring function.

    The replay needs a model's scores for prediction drift and matured performance, not a good
    model: training/model/train.py's search would cost minutes for nothing the policy looks at.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num, cat = list(cfg.model.numeric_features), list(cfg.model.categorical_features)
    model = make_pipeline(
        ColumnTransformer(
            [("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)]
        ),
        LogisticRegression(max_iter=500, random_state=seed),
    )
    model.fit(frame[num + cat], frame[cfg.model.target].astype(int))

    def score(x: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(x[num + cat])[:, 1], dtype="float64")

    return score


@dataclass
class Step:
    """One replayed day: the window's evidence and the policy's decision."""

    day: dt.date
    window: WindowEvidence
    decision: Decision


@dataclass
class Replay:
    """Days replayed, the trigger days and what each triggered retrain came to."""

    steps: list[Step] = field(default_factory=list)
    triggers: list[PastTrigger] = field(default_factory=list)

    @property
    def trigger_days(self) -> list[dt.date]:
        return [s.day for s in self.steps if s.decision.trigger]

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.decision.reason] = out.get(s.decision.reason, 0) + 1
        return out


def replay(
    paths: StatePaths,
    cfg: Config,
    data: pd.DataFrame,
    reference: pd.DataFrame,
    champion_metrics: dict[str, float],
    days: list[dt.date],
    *,
    champion_version: str = "1",
    retrain_outcome: Literal["rejected", "promoted"] = "rejected",
    retrain_days: int = 1,
) -> Replay:
    """Run the monitor on each day of `days` as the DAG would, with retrains simulated.

    `data`: scored rows (model features, `score`, `batch_date`, `is_fraud`; labels count as matured
    once `windows.label_maturity_days` have passed, as in the warehouse). `reference`: the champion's
    reference rows (features, `score`, `batch_date`). A trigger starts a retrain lasting
    `retrain_days` (in flight meanwhile); it then ends `retrain_outcome`: `rejected` keeps the
    champion (the drift persists), `promoted` hands over to a new champion whose reference is the
    days since the trigger (so the same shift is no longer drift for it).
    """
    from training.monitoring import drift_job

    data = data.assign(model_version=champion_version)
    by_day = {d: g for d, g in data.groupby("batch_date")}
    id_col, target = cfg.model.id_column, cfg.model.target

    def load_window(start: dt.date, end: dt.date) -> pd.DataFrame:
        parts = [by_day[d] for d in sorted(by_day) if start <= d <= end]
        return pd.concat(parts, ignore_index=True) if parts else data.iloc[:0]

    def load_labels(ids: pd.Series, as_of: dt.date) -> pd.DataFrame:
        frame = data.loc[data[id_col].isin(set(ids)), [id_col, target]].copy()
        frame["matured"] = True  # the replay only asks for windows whose labels matured
        return frame

    out = Replay()
    history: list[WindowEvidence] = []
    version, ref = champion_version, reference
    last_retrain: dt.date | None = None
    running: tuple[dt.date, dt.date] | None = None  # (trigger day, day the retrain finishes)
    serving_since = days[0] if days else None
    for day in days:
        if running is not None and day > running[1]:
            trigger_day = running[0]
            out.triggers[-1] = PastTrigger(trigger_day, retrain_outcome, out.triggers[-1].signals)
            running = None
            if retrain_outcome == "promoted":
                version = str(int(version) + 1)
                ref = load_window(trigger_day + DAY, day - DAY).assign(model_version=version)
                data.loc[data["batch_date"] >= day, "model_version"] = version
                by_day = {d: g for d, g in data.groupby("batch_date")}
                serving_since = day
        window = drift_job.measure_interval(
            paths,
            cfg,
            day,
            reference=ref,
            reference_scores=None,
            holdout_metrics=champion_metrics,
            version=version,
            load_window=load_window,
            load_labels=load_labels,
            save_html=False,
        )
        history = retrain_trigger.assemble_history(history, window)
        decision = retrain_trigger.decide(
            cfg,
            history,
            now_window_end=day,
            last_promotion_or_retrain_at=last_retrain,
            retrain_in_flight=running is not None,
            current_champion_version=version,
            past_triggers=list(out.triggers),
        )
        decision = drift_job.locate_onset(cfg, decision, window, reference=ref, serving_since=serving_since,
                                          load_window=load_window, load_labels=load_labels)
        out.steps.append(Step(day, window, decision))
        if decision.trigger:
            last_retrain = day
            out.triggers.append(PastTrigger(day, "pending", PastTrigger.signals_of(decision.reason)))
            running = (day, day + (retrain_days - 1) * DAY)
    return out


def summarize(result: Replay, onset: dt.date | None = None) -> dict[str, Any]:
    """Trigger count, false triggers (before `onset`) and days from onset to the first trigger."""
    days = result.trigger_days
    false = [d for d in days if onset is None or d < onset]
    after = [d for d in days if onset is not None and d >= onset]
    return {
        "triggers": len(days),
        "false_triggers": len(false),
        "days_to_detection": (after[0] - onset).days + 1 if after and onset else None,
        "trigger_days": [d.isoformat() for d in days],
        "reasons": result.reasons(),
    }


def with_scores(frame: pd.DataFrame, score: Callable[[pd.DataFrame], np.ndarray]) -> pd.DataFrame:
    """`frame` with the champion's `score` column."""
    return frame.assign(score=score(frame))
