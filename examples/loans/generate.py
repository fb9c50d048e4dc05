"""Loan applications and their outcomes as daily file drops: the loans example's data, made here.

Why a generator: the example must run offline and be reproducible, and its data must look like an
export a lender hands over, not like the card simulator. Each day writes two Parquet partitions in
the file-drop source's default layout (`{feed}/batch_date={date}.parquet`):

- `applications/`: one row per loan application made that day (`application_id`, `applied_at`, the
  applicant, income, amount, term, debt-to-income, credit score, delinquencies, employment, ...);
- `outcomes/`: the outcomes *delivered* that day, of earlier days' applications, BOTH classes
  (`outcome` is `repaid` or `defaulted`), each 1-4 days after its application (defaults come later
  than repayments: a compressed world where the first instalments decide a loan).

The default probability is a logistic function of debt-to-income, credit score, loan-to-income,
term, employment, purpose, channel and a hidden applicant risk (which the bureau's count of
delinquencies reveals in part), so a model can learn it; about 7 % of loans default. `--shift-from-day K` changes
the world from the K-th day (0-based) on: larger loans, weaker credit scores, and a downturn that
makes debt-to-income and self-employment riskier - data drift and concept drift at once.

Deterministic: the applicant pool depends on the seed, a day's applications on (seed, day index)
only, so generating 10 or 16 days gives the same first 10 days. Outcomes reported after the last
generated day are not written (they belong to later drops).

    python -m examples.loans.generate --out DIR --start 2026-01-01 --days 14 [--rows-per-day 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

APPLICATIONS = "applications"
OUTCOMES = "outcomes"
PATTERN = "{feed}/batch_date={date}.parquet"  # the file_drop source's default pattern

EMPLOYMENT = {"salaried": 0.62, "self_employed": 0.15, "contractor": 0.15, "unemployed": 0.08}
HOME = {"rent": 0.45, "mortgage": 0.40, "own": 0.15}
PURPOSE = {"debt_consolidation": 0.32, "home_improvement": 0.16, "car": 0.18, "education": 0.08,
           "medical": 0.08, "business": 0.08, "other": 0.10}
CHANNEL = {"web": 0.55, "branch": 0.25, "broker": 0.20}
TERMS = {12: 0.15, 24: 0.30, 36: 0.35, 60: 0.20}

# log-odds of default: the world a model has to learn
INTERCEPT = -3.4
EMPLOYMENT_RISK = {"salaried": 0.0, "self_employed": 0.45, "contractor": 0.3, "unemployed": 1.1}
PURPOSE_RISK = {"debt_consolidation": 0.3, "home_improvement": -0.3, "car": -0.2, "education": 0.1,
                "medical": 0.2, "business": 0.5, "other": 0.0}
CHANNEL_RISK = {"web": 0.0, "branch": -0.2, "broker": 0.35}

#: days from an application to its delivered outcome, per class (inclusive ranges)
REPAID_DELAY = (1, 3)
DEFAULTED_DELAY = (2, 4)
MAX_DELAY_DAYS = DEFAULTED_DELAY[1]  # config windows.label_maturity_days must be at least this


@dataclass(frozen=True)
class World:
    """The knobs of the generated world; `shifted` applies from `--shift-from-day` on."""

    rows_per_day: int = 3000
    seed: int = 1
    shift_from_day: int | None = None

    def shifted(self, day_index: int) -> bool:
        return self.shift_from_day is not None and day_index >= self.shift_from_day


def _choice(rng: np.random.Generator, table: dict[Any, float], n: int) -> np.ndarray:
    keys = list(table)
    return np.asarray(keys, dtype=object)[rng.choice(len(keys), size=n, p=np.asarray(list(table.values())))]


def applicant_pool(world: World) -> pd.DataFrame:
    """The applicants (some apply more than once): income, credit score, employment, housing, hidden risk."""
    n = world.rows_per_day * 40  # most applicants apply once in a few weeks
    rng = np.random.default_rng([world.seed, 0xA991])
    employment = _choice(rng, EMPLOYMENT, n)
    income = np.exp(rng.normal(np.log(52_000), 0.5, n)) * np.where(employment == "unemployed", 0.4, 1.0)
    hidden_risk = rng.normal(0.0, 0.6, n)
    return pd.DataFrame({
        "applicant_id": [f"a-{i:06d}" for i in range(n)],
        "annual_income": np.clip(np.round(income, -2), 6_000, 1_000_000),
        "base_credit_score": np.clip(rng.normal(680, 60, n), 300, 850),
        "base_dti": np.clip(rng.beta(2.2, 5.5, n) * 0.9, 0.0, 1.2),
        "employment_type": employment,
        "home_ownership": _choice(rng, HOME, n),
        "hidden_risk": hidden_risk,
        # the bureau's record of missed payments: a noisy view of the hidden risk
        "delinquencies_2y": np.minimum(rng.poisson(0.25 * np.exp(1.2 * hidden_risk)), 40),
    })


def _day_rng(world: World, day_index: int) -> np.random.Generator:
    return np.random.default_rng([world.seed, day_index])


def _volume(world: World, day: dt.date, rng: np.random.Generator) -> int:
    weekend = 0.8 if day.weekday() >= 5 else 1.0  # fewer applications at weekends
    return max(1, int(round(world.rows_per_day * weekend * rng.normal(1.0, 0.03))))


def _times(day: dt.date, rng: np.random.Generator, n: int) -> np.ndarray:
    """Times of day with a daytime rhythm (most applications 08:00-22:00), microsecond precision."""
    hour_weight = np.array([1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 10, 10, 10, 10, 10, 10, 9, 9, 8, 6, 4, 2], float)
    hours = rng.choice(24, size=n, p=hour_weight / hour_weight.sum())
    micros = rng.integers(0, 3_600_000_000, size=n)
    start = np.datetime64(day.isoformat(), "us")
    return np.sort(start + (hours * 3_600_000_000 + micros).astype("timedelta64[us]"))


def default_logit(frame: pd.DataFrame, hidden_risk: np.ndarray, shifted: bool) -> np.ndarray:
    """The log-odds of default of each application (what a model should learn)."""
    loan_to_income = frame["loan_amount"] / frame["annual_income"]
    dti_weight = 1.8 if shifted else 0.9  # a downturn: indebted applicants default far more
    employment = frame["employment_type"].map(EMPLOYMENT_RISK).to_numpy(float)
    if shifted:
        employment = employment + np.where(frame["employment_type"] == "self_employed", 0.9, 0.0)
    return (
        INTERCEPT
        + dti_weight * (frame["debt_to_income"].to_numpy(float) - 0.3) / 0.15
        - 1.0 * (frame["credit_score"].to_numpy(float) - 680) / 60
        + 0.5 * np.log(loan_to_income.to_numpy(float) / 0.25)
        + 0.25 * (frame["term_months"].to_numpy() == 60)
        + employment
        + frame["purpose"].map(PURPOSE_RISK).to_numpy(float)
        + frame["application_channel"].map(CHANNEL_RISK).to_numpy(float)
        + hidden_risk
    )


def applications_of(world: World, pool: pd.DataFrame, start: dt.date, day_index: int) -> pd.DataFrame:
    """The day's applications with their (hidden) outcome and delivery delay, `outcome` and `delay_days`."""
    day = start + dt.timedelta(days=day_index)
    rng = _day_rng(world, day_index)
    shifted = world.shifted(day_index)
    n = _volume(world, day, rng)
    who = pool.iloc[rng.integers(0, len(pool), size=n)].reset_index(drop=True)
    income = who["annual_income"].to_numpy(float)
    amount = np.exp(rng.normal(np.log(0.22 * income), 0.45)) * (1.35 if shifted else 1.0)
    score = who["base_credit_score"].to_numpy(float) + rng.normal(0, 8, n) - (25 if shifted else 0)
    frame = pd.DataFrame({
        "application_id": [f"app-{day:%Y%m%d}-{i:06d}" for i in range(n)],
        "applied_at": _times(day, rng, n),
        "applicant_id": who["applicant_id"].to_numpy(),
        "annual_income": income,
        "loan_amount": np.clip(np.round(amount, -1), 500, 100_000),
        "term_months": _choice(rng, TERMS, n).astype("int64"),
        "debt_to_income": np.round(np.clip(who["base_dti"].to_numpy(float) + rng.normal(0, 0.03, n), 0, 1.5), 4),
        "credit_score": np.clip(np.round(score), 300, 850).astype("int64"),
        "delinquencies_2y": who["delinquencies_2y"].to_numpy().astype("int64"),
        "employment_type": who["employment_type"].to_numpy(),
        "home_ownership": who["home_ownership"].to_numpy(),
        "purpose": _choice(rng, PURPOSE, n),
        "application_channel": _choice(rng, CHANNEL, n),
    })
    p_default = 1 / (1 + np.exp(-default_logit(frame, who["hidden_risk"].to_numpy(float), shifted)))
    defaulted = rng.random(n) < p_default
    delay = np.where(defaulted, rng.integers(DEFAULTED_DELAY[0], DEFAULTED_DELAY[1] + 1, n),
                     rng.integers(REPAID_DELAY[0], REPAID_DELAY[1] + 1, n))
    frame["outcome"] = np.where(defaulted, "defaulted", "repaid")
    frame["delay_days"] = delay
    frame["report_offset_us"] = rng.integers(6 * 3_600_000_000, 20 * 3_600_000_000, size=n)  # office hours
    return frame


def outcomes_delivered(applications: Callable[[int], pd.DataFrame], start: dt.date, day_index: int) -> pd.DataFrame:
    """The outcomes delivered on day `day_index`: earlier applications whose delay ends that day.

    `applications(i)` returns day i's applications (with their hidden outcome and delay).
    """
    day = start + dt.timedelta(days=day_index)
    parts = [applications(day_index)[0:0]]
    for delay in range(1, MAX_DELAY_DAYS + 1):
        if day_index - delay >= 0:
            apps = applications(day_index - delay)
            parts.append(apps[apps["delay_days"] == delay])
    due = pd.concat(parts, ignore_index=True)
    reported = np.datetime64(day.isoformat(), "us") + due["report_offset_us"].to_numpy().astype("timedelta64[us]")
    frame = pd.DataFrame({
        "outcome_id": due["application_id"].str.replace("app-", "out-", n=1).to_numpy(),
        "application_id": due["application_id"].to_numpy(),
        "reported_at": reported,
        "outcome": due["outcome"].to_numpy(),
    })
    frame["reported_at"] = frame["reported_at"].astype("datetime64[us]")
    return frame.sort_values("reported_at", kind="mergesort").reset_index(drop=True)


def delivered_applications(apps: pd.DataFrame) -> pd.DataFrame:
    """What the lender exports: the application columns only (no outcome, no hidden knobs)."""
    out = apps.drop(columns=["outcome", "delay_days", "report_offset_us"]).copy()
    out["applied_at"] = out["applied_at"].astype("datetime64[us]")
    return out


def generate(
    out: Path, start: dt.date, days: int, *, rows_per_day: int = 3000, seed: int = 1,
    shift_from_day: int | None = None,
) -> dict[str, Any]:
    """Write `days` daily drops under `out`; returns a summary (rows, default rate, files)."""
    if days < 1:
        raise ValueError(f"--days must be at least 1 (got {days})")
    if rows_per_day < 1:
        raise ValueError(f"--rows-per-day must be at least 1 (got {rows_per_day})")
    world = World(rows_per_day=rows_per_day, seed=seed, shift_from_day=shift_from_day)
    pool = applicant_pool(world)
    cached: dict[int, pd.DataFrame] = {}

    def day_applications(i: int) -> pd.DataFrame:
        if i not in cached:
            cached[i] = applications_of(world, pool, start, i)
        return cached[i]

    applications = outcomes = defaults = 0
    for i in range(days):
        day = start + dt.timedelta(days=i)
        apps = day_applications(i)
        delivered = outcomes_delivered(day_applications, start, i)
        cached.pop(i - MAX_DELAY_DAYS, None)  # no later day delivers its outcomes
        for feed, frame in ((APPLICATIONS, delivered_applications(apps)), (OUTCOMES, delivered)):
            path = out / PATTERN.format(feed=feed, date=day.isoformat())
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
        applications += len(apps)
        outcomes += len(delivered)
        defaults += int((delivered["outcome"] == "defaulted").sum())
    return {
        "out": str(out), "first_day": start.isoformat(), "last_day": (start + dt.timedelta(days=days - 1)).isoformat(),
        "applications": applications, "outcomes": outcomes,
        "default_rate_of_delivered_outcomes": round(defaults / outcomes, 4) if outcomes else None,
        "shift_from_day": shift_from_day,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.loans.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the drops (the config's contract.source.url)")
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True, help="first day (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, required=True, help="how many daily drops")
    parser.add_argument("--rows-per-day", type=int, default=3000, help="applications on a weekday (weekends 0.8x)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shift-from-day", type=int, default=None,
                        help="0-based day from which the world changes (bigger loans, weaker scores, a downturn)")
    ns = parser.parse_args(argv)
    summary = generate(ns.out, ns.start, ns.days, rows_per_day=ns.rows_per_day, seed=ns.seed,
                       shift_from_day=ns.shift_from_day)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
