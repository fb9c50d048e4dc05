"""The source system stand-in: synthetic card transactions and their delayed chargebacks.

Why a simulator: the loop needs data whose truth we know (which rows are fraud, when the label
arrives) and that we can break on purpose (covariate shift, concept drift, bad batches) from a
chosen day. Everything is a pure function of `(spec, day)`: the same seed and day give the same
frames in any process, so Airflow backfills and tests reproduce exactly.

Shape of the world
- Customers (fixed per seed): home country, typical spend (lognormal), 1-2 usual devices, an
  online share, an activity level. Merchants: a category with category-dependent amounts.
- A day: volume follows a weekly rhythm (weekends busier), timestamps a daily one (night trough).
  Some customers are abroad on a given day (legit foreign transactions), some legit online
  purchases come from a new device, some legit purchases are large: the fraud signals overlap
  with legit behaviour so a good model stays well below PR-AUC 1.
- Fraud (about `fraud_rate` of rows) from several mechanisms, see `MECHANISMS`.
- Labels: each fraud gets a delay drawn uniformly from `label_delay_days`; its chargeback is
  delivered on `day + delay`.

Independent random streams are derived from `(seed, day, stream)`, so bad-batch knobs (applied to
the delivered feed only) never change which rows are fraud, and a knob that starts on day k leaves
days before k untouched.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from examples.card_fraud.spec import SimulatorSpec
from training.errors import ClosedloopError

__all__ = [
    "BAD_BATCH_KINDS",
    "CONCEPT_DRIFT_KINDS",
    "COVARIATE_SHIFT_KINDS",
    "CATEGORIES",
    "CHARGEBACK_COLUMNS",
    "GROUND_TRUTH_COLUMNS",
    "MECHANISMS",
    "SCENARIO_KINDS",
    "TRANSACTION_COLUMNS",
    "SimulatorError",
    "generate_chargebacks",
    "generate_transactions",
    "ground_truth",
]


class SimulatorError(ClosedloopError, ValueError):
    """A simulator spec or scenario cannot be honoured; the message says which knob and why."""


# --------------------------------------------------------------------------------------------
# Contract (docs/contracts.md): column names and pandas dtypes of the clean feeds.
# --------------------------------------------------------------------------------------------

TRANSACTION_COLUMNS: dict[str, str] = {
    "transaction_id": "object",
    "event_ts": "datetime64[us]",
    "customer_id": "object",
    "customer_home_country": "object",
    "merchant_id": "object",
    "merchant_category": "object",
    "channel": "object",
    "country": "object",
    "device_id": "object",
    "amount": "float64",
    "currency": "object",
}

CHARGEBACK_COLUMNS: dict[str, str] = {
    "chargeback_id": "object",
    "transaction_id": "object",
    "reported_at": "datetime64[us]",
    "reason_code": "object",
}

GROUND_TRUTH_COLUMNS: dict[str, str] = {
    "transaction_id": "object",
    "is_fraud": "bool",
    "mechanism": "object",
    "label_delay_days": "Int64",
}

# --------------------------------------------------------------------------------------------
# World parameters
# --------------------------------------------------------------------------------------------

#: category -> (median amount EUR, lognormal sigma, share of online tx, share of in-store tx,
#: share of merchants)
_CATEGORY_TABLE: dict[str, tuple[float, float, float, float, float]] = {
    "grocery": (35.0, 0.55, 0.04, 0.30, 0.18),
    "electronics": (160.0, 0.80, 0.12, 0.04, 0.08),
    "travel": (280.0, 0.70, 0.08, 0.02, 0.05),
    "gaming": (18.0, 0.70, 0.12, 0.01, 0.06),
    "jewelry": (220.0, 0.80, 0.02, 0.02, 0.04),
    "fuel": (55.0, 0.40, 0.00, 0.16, 0.10),
    "restaurants": (38.0, 0.55, 0.06, 0.20, 0.18),
    "digital_goods": (9.0, 0.80, 0.22, 0.00, 0.08),
    "fashion": (65.0, 0.70, 0.24, 0.12, 0.14),
    "pharmacy": (22.0, 0.60, 0.10, 0.13, 0.09),
}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORY_TABLE)
_CAT_INDEX = {c: i for i, c in enumerate(CATEGORIES)}
_CAT_MEDIAN = np.array([v[0] for v in _CATEGORY_TABLE.values()])
_CAT_SIGMA = np.array([v[1] for v in _CATEGORY_TABLE.values()])
_CAT_ONLINE = np.array([v[2] for v in _CATEGORY_TABLE.values()])
_CAT_INSTORE = np.array([v[3] for v in _CATEGORY_TABLE.values()])
_CAT_MERCHANTS = np.array([v[4] for v in _CATEGORY_TABLE.values()])

_HOME_COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "BE", "AT", "PL", "PT")
_HOME_WEIGHTS = np.array([0.28, 0.20, 0.10, 0.10, 0.10, 0.06, 0.06, 0.05, 0.05])
#: where legit customers travel (includes the home countries: a French customer in Spain)
_TRAVEL_COUNTRIES = (*_HOME_COUNTRIES, "GB", "US", "CH", "TR", "TH", "HR", "GR")
_TRAVEL_WEIGHTS = np.array(
    [0.08, 0.10, 0.05, 0.12, 0.10, 0.03, 0.05, 0.02, 0.05, 0.09, 0.08, 0.05, 0.06, 0.04, 0.04, 0.04]
)
#: where account-takeover attackers connect from (overlaps with travel destinations)
_ATTACK_COUNTRIES = ("NG", "RU", "BR", "ID", "VN", "RO", "UA", "US", "GB", "TR", "NL", "ES")
_ATTACK_WEIGHTS = np.array([0.12, 0.10, 0.10, 0.08, 0.08, 0.10, 0.08, 0.10, 0.08, 0.06, 0.05, 0.05])

#: relative volume per hour of day (night trough around 3-4 am, evening peak)
_HOUR_LEGIT = np.array([
    0.9, 0.5, 0.3, 0.25, 0.3, 0.6, 1.5, 3.0, 4.5, 5.0, 5.2, 5.8,
    6.5, 6.0, 5.6, 5.5, 5.8, 6.5, 7.0, 6.5, 5.5, 4.2, 2.8, 1.6,
])  # fmt: skip
#: fraudsters care less about sleep: flatter, relatively more at night
_HOUR_FRAUD = 0.5 * _HOUR_LEGIT / _HOUR_LEGIT.sum() + 0.5 / 24
#: volume factor per weekday (Mon..Sun); averages to 1 over a week
_WEEKDAY_VOLUME = np.array([0.95, 0.95, 0.95, 0.95, 0.95, 1.125, 1.125])

_P_ABROAD = 0.03  # share of customers abroad on a given day
_P_ONLINE_ABROAD_COUNTRY = 0.6  # online tx of a traveller located in the visited country
_P_VPN = 0.01  # legit online tx geolocated to a random foreign country
_P_NEW_DEVICE = 0.03  # legit online tx from a device never used before (new phone, browser)
_P_LARGE = 0.01  # legit large purchases (electronics/jewelry, several times typical spend)
_P_MICRO_BURST = 0.04  # online gaming purchases followed by more small in-game items within minutes

_MICROS_PER_DAY = 86_400_000_000
_MICROS_PER_HOUR = 3_600_000_000

#: fraud mechanisms: name -> what signature it leaves
MECHANISMS: dict[str, str] = {
    "card_testing": "bursts of 3-8 small online amounts (< 5) by the same card within minutes at "
    "digital_goods/gaming merchants, from an unknown device",
    "account_takeover": "online, new device, mostly from a country other than the home country, "
    "amount well above the customer's typical spend",
    "high_value": "electronics/jewelry purchase far above the customer's typical spend",
    "merchant_collusion": "ordinary-looking domestic in-store purchases at a few colluding merchants "
    "(only after a fraud_mechanism_shift)",
}
_BASE_MIX = {"card_testing": 0.30, "account_takeover": 0.40, "high_value": 0.30}

# --------------------------------------------------------------------------------------------
# Scenario knobs
# --------------------------------------------------------------------------------------------

_COVARIATE = "covariate_shift"
_CONCEPT = "concept_drift"
_BAD_BATCH = "bad_batch"
_LABEL_FEED = "label_feed"  # when labels arrive, not what happens
_PRIOR = "prior_shift"  # how often fraud happens, not how

#: kind -> {"family", "description", "params" (defaults)}. Every `ScenarioKind` is listed.
SCENARIO_KINDS: dict[str, dict[str, Any]] = {
    "amount_inflation": {
        "family": _COVARIATE,
        "description": "every amount is multiplied by `factor` (prices rise, fraud included)",
        "params": {"factor": 1.6},
    },
    "new_merchant_category": {
        "family": _COVARIATE,
        "description": "a `share` of legit transactions moves to never-seen merchants of a "
        "never-seen `category` with their own amount level",
        "params": {"category": "crypto_exchange", "share": 0.15, "median_amount": 150.0},
    },
    "channel_mix": {
        "family": _COVARIATE,
        "description": "legit customers shop online with overall share `online_share`",
        "params": {"online_share": 0.85},
    },
    "weekly_seasonality": {
        "family": _COVARIATE,
        "description": "a stronger weekly rhythm with no change in the world: Saturdays and Sundays "
        "carry `weekend_volume` x the weekday volume and every weekend amount is `weekend_amount` x "
        "(a monitor must not call this drift)",
        "params": {"weekend_volume": 2.0, "weekend_amount": 1.2},
    },
    "gradual_amount_drift": {
        "family": _COVARIATE,
        "description": "prices creep up: on the k-th day of the scenario (k = 1, 2, ...) every amount "
        "is multiplied by 1 + `daily_rate` x k (+3 %/day by default)",
        "params": {"daily_rate": 0.03},
    },
    "fraud_mechanism_shift": {
        "family": _CONCEPT,
        "description": "fraud moves `to` a new mechanism (merchant_collusion: domestic in-store "
        "purchases at `merchant_share` of the merchants in `categories`, billed `amount_factor` x "
        "the usual amount); only `residual` of fraud keeps the old mechanisms. Feature "
        "distributions barely move: only delayed labels show it, and a retrained model can learn it",
        "params": {
            "to": "merchant_collusion",
            "residual": 0.1,
            "categories": ["fuel"],
            "merchant_share": 0.25,
            "amount_factor": 2.0,
        },
    },
    "holiday": {
        "family": _COVARIATE,
        "description": "a known event (holiday, campaign): each active day carries `volume_factor` x "
        "the usual volume and every amount is `amount_factor` x (declare it with `until_day`; the "
        "world is back to normal afterwards)",
        "params": {"volume_factor": 3.0, "amount_factor": 1.5},
    },
    "label_delay_change": {
        "family": _LABEL_FEED,
        "description": "chargebacks of the active days' frauds arrive `factor` x later (delays drawn "
        "as usual, then scaled and rounded up): nothing changes in the world, only when labels are known",
        "params": {"factor": 2.0},
    },
    "fraud_rate_change": {
        "family": _PRIOR,
        "description": "fraud becomes `factor` x as frequent with the same mechanisms: the score "
        "distribution moves (more high scores), the features and P(fraud | features) of a mechanism do not",
        "params": {"factor": 2.5},
    },
    "missing_column": {
        "family": _BAD_BATCH,
        "description": "the feed lacks `column`",
        "params": {"column": "merchant_category"},
    },
    "renamed_column": {
        "family": _BAD_BATCH,
        "description": "`column` arrives named `new_name`",
        "params": {"column": "amount", "new_name": "amt"},
    },
    "type_change": {
        "family": _BAD_BATCH,
        "description": "`column` arrives as strings (amount: '12.50 EUR')",
        "params": {"column": "amount"},
    },
    "null_burst": {
        "family": _BAD_BATCH,
        "description": "a `fraction` of rows have `column` null",
        "params": {"column": "customer_id", "fraction": 0.3},
    },
    "duplicate_delivery": {
        "family": _BAD_BATCH,
        "description": "the batch is delivered twice: every row appears twice",
        "params": {},
    },
    "amounts_in_cents": {
        "family": _BAD_BATCH,
        "description": "amount is sent in cents (x 100)",
        "params": {},
    },
    "future_timestamps": {
        "family": _BAD_BATCH,
        "description": "a `fraction` of rows get event_ts `min_days`..`max_days` days in the future",
        "params": {"fraction": 0.2, "min_days": 1, "max_days": 30},
    },
    "empty_batch": {
        "family": _BAD_BATCH,
        "description": "zero rows, same columns",
        "params": {},
    },
}

BAD_BATCH_KINDS: tuple[str, ...] = tuple(k for k, v in SCENARIO_KINDS.items() if v["family"] == _BAD_BATCH)
COVARIATE_SHIFT_KINDS: tuple[str, ...] = tuple(
    k for k, v in SCENARIO_KINDS.items() if v["family"] == _COVARIATE
)
CONCEPT_DRIFT_KINDS: tuple[str, ...] = tuple(k for k, v in SCENARIO_KINDS.items() if v["family"] == _CONCEPT)

_STREAM_POPULATION = 1
_STREAM_LEGIT = 2
_STREAM_FRAUD = 3
_STREAM_LABELS = 4
_STREAM_SCENARIO = 5
_STREAM_BAD_BATCH = 6
_STREAM_CHARGEBACK = 7
_STREAM_IDS = 8


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed % 2**63, *keys]))


# --------------------------------------------------------------------------------------------
# Vectorised formatting helpers
# --------------------------------------------------------------------------------------------

_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _format_ids(prefix: str, numbers: np.ndarray, width: int, base: int = 10) -> np.ndarray:
    """`prefix` + zero-padded numbers as an object array of str, without a per-row Python loop."""
    n = np.asarray(numbers, dtype=np.uint64)
    if n.size and int(n.max()) >= base**width:
        raise SimulatorError(f"id {int(n.max())} does not fit {width} digits after {prefix!r}")
    pre = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    buf = np.empty((n.size, pre.size + width), dtype=np.uint8)
    buf[:, : pre.size] = pre
    rest = n.copy()
    for k in range(width - 1, -1, -1):
        buf[:, pre.size + k] = _DIGITS[(rest % base).astype(np.intp)]
        rest //= base
    as_bytes = buf.view(f"S{buf.shape[1]}").ravel()
    return as_bytes.astype(str).astype(object)


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n, 1))))


def _categorical_draw(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: maps uniforms to indices of `weights` (keeps random streams aligned)."""
    cum = np.cumsum(weights / weights.sum())
    cum[-1] = 1.0
    return np.searchsorted(cum, u, side="right").clip(0, len(weights) - 1)


# --------------------------------------------------------------------------------------------
# Population (depends on the seed and sizes only, never on the day)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    customer_ids: np.ndarray  # object str
    home_idx: np.ndarray  # index into _HOME_COUNTRIES
    spend_level: np.ndarray  # multiplier of category medians (lognormal): the typical spend
    devices: np.ndarray  # object str, shape (n_customers, 2); 2nd == 1st for one-device customers
    p_second_device: np.ndarray  # probability an online tx uses the 2nd device
    online_share: np.ndarray
    activity: np.ndarray  # normalised probabilities of being the customer of a transaction
    merchant_ids: np.ndarray  # object str, sorted by category
    merchant_cat: np.ndarray  # category index per merchant (sorted)
    merchant_cum: np.ndarray  # cumulative popularity over merchants (sorted by category)
    cat_cum_bounds: np.ndarray  # (n_categories, 2): cumulative range of each category
    pos_devices: np.ndarray  # object str "pos-<merchant_id>"


@lru_cache(maxsize=8)
def _population(seed: int, n_customers: int, n_merchants: int) -> _Population:
    rng = _rng(seed, _STREAM_POPULATION)
    cust_width = _width(n_customers, 5)
    customer_ids = _format_ids("c-", np.arange(1, n_customers + 1), cust_width)
    home_idx = _categorical_draw(rng.random(n_customers), _HOME_WEIGHTS)
    spend_level = rng.lognormal(0.0, 0.5, n_customers)
    dev_nums = rng.integers(0, 16**8, size=(n_customers, 2), dtype=np.uint64)
    has_two = rng.random(n_customers) < 0.45
    dev_nums[:, 1] = np.where(has_two, dev_nums[:, 1], dev_nums[:, 0])
    devices = _format_ids("d-", dev_nums.ravel(), 8, base=16).reshape(n_customers, 2)
    p_second = np.where(has_two, rng.uniform(0.1, 0.5, n_customers), 0.0)
    online_share = rng.beta(2.0, 3.0, n_customers)
    activity = rng.gamma(1.5, 1.0, n_customers)
    activity = activity / activity.sum()

    # merchants: every category gets at least one merchant while there are enough merchants
    n_cat = len(CATEGORIES)
    first = np.arange(min(n_merchants, n_cat))
    rest = _categorical_draw(rng.random(max(n_merchants - n_cat, 0)), _CAT_MERCHANTS)
    cats = np.concatenate([first, rest]).astype(np.intp)
    popularity = rng.pareto(1.5, n_merchants) + 1.0
    order = np.argsort(cats, kind="stable")
    m_width = _width(n_merchants, 4)
    merchant_ids = _format_ids("m-", np.arange(1, n_merchants + 1), m_width)[order]
    merchant_cat = cats[order]
    merchant_cum = np.cumsum(popularity[order])
    bounds = np.zeros((n_cat, 2))
    for c in range(n_cat):
        idx = np.flatnonzero(merchant_cat == c)
        if idx.size:
            bounds[c] = (merchant_cum[idx[0]] - popularity[order][idx[0]], merchant_cum[idx[-1]])
    pos_devices = np.array(["pos-" + m for m in merchant_ids], dtype=object)
    return _Population(
        customer_ids=customer_ids,
        home_idx=home_idx,
        spend_level=spend_level,
        devices=devices,
        p_second_device=p_second,
        online_share=online_share,
        activity=activity,
        merchant_ids=merchant_ids,
        merchant_cat=merchant_cat,
        merchant_cum=merchant_cum,
        cat_cum_bounds=bounds,
        pos_devices=pos_devices,
    )


def _available_categories(pop: _Population) -> np.ndarray:
    return pop.cat_cum_bounds[:, 1] > pop.cat_cum_bounds[:, 0]


def _pick_merchants(pop: _Population, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Popularity-weighted merchant of the given category (positions in the sorted arrays)."""
    lo = pop.cat_cum_bounds[cat, 0]
    hi = pop.cat_cum_bounds[cat, 1]
    target = lo + u * (hi - lo)
    pos = np.searchsorted(pop.merchant_cum, target, side="right")
    return pos.clip(0, len(pop.merchant_cum) - 1)


# --------------------------------------------------------------------------------------------
# One clean day
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """Columns of a block of rows as arrays (indices into population tables where possible)."""

    cust: np.ndarray
    ts_us: np.ndarray  # int64 microseconds since day start
    merchant_pos: np.ndarray  # position in pop.merchant_ids (sorted)
    online: np.ndarray  # bool
    country: np.ndarray  # object str
    device: np.ndarray  # object str
    amount: np.ndarray  # float
    mechanism: np.ndarray  # object str ("legit" or a MECHANISMS key)


def _hours_to_us(rng: np.random.Generator, n: int, hour_weights: np.ndarray) -> np.ndarray:
    hours = _categorical_draw(rng.random(n), hour_weights)
    return hours.astype(np.int64) * _MICROS_PER_HOUR + rng.integers(0, _MICROS_PER_HOUR, n)


def _round_amount(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(x, 2), 0.01)


def _scenario_params(kind: str, given: dict[str, Any]) -> dict[str, Any]:
    defaults = SCENARIO_KINDS[kind]["params"]
    unknown = set(given) - set(defaults)
    if unknown:
        raise SimulatorError(
            f"scenario {kind!r} got unknown params {sorted(unknown)}; it accepts {sorted(defaults)}"
        )
    return {**defaults, **given}


def _active(spec: SimulatorSpec, day: dt.date, family: str) -> list[tuple[str, dict[str, Any]]]:
    idx = spec.day_index(day)
    return [
        (s.kind, _scenario_params(s.kind, s.params))
        for s in spec.scenarios
        if SCENARIO_KINDS[s.kind]["family"] == family and s.active(idx)
    ]


def _positive(kind: str, name: str, params: dict[str, Any]) -> float:
    value = float(params[name])
    if value <= 0:
        raise SimulatorError(f"scenario {kind!r}: {name} must be > 0, got {value}")
    return value


def _scenario_start(spec: SimulatorSpec, kind: str, day: dt.date) -> int:
    """`from_day` of the active scenario of `kind` on `day`: where a gradual knob counts its days from."""
    idx = spec.day_index(day)
    return min(s.from_day for s in spec.scenarios if s.kind == kind and s.active(idx))


def _day_volume(spec: SimulatorSpec, day: dt.date) -> int:
    rng = _rng(spec.seed, day.toordinal(), _STREAM_LEGIT, 0)
    expected = spec.transactions_per_day * _WEEKDAY_VOLUME[day.weekday()]
    for kind, params in _active(spec, day, _COVARIATE):
        if kind == "weekly_seasonality":
            factor = _positive(kind, "weekend_volume", params)
            # weekend days get `factor` x a weekday's volume (the base rhythm is replaced)
            expected = spec.transactions_per_day * _WEEKDAY_VOLUME[0] * (factor if day.weekday() >= 5 else 1.0)
    expected *= _holiday_volume_factor(spec, day)
    n = int(round(expected * (1.0 + rng.normal(0.0, 0.02))))
    if n >= 10**_TX_MAX_DIGITS:
        raise SimulatorError(
            f"{n} transactions on {day} exceed the {_TX_MAX_DIGITS}-digit transaction id (the contract's "
            "regex); lower transactions_per_day"
        )
    return max(n, 0)


def _legit_rows(
    spec: SimulatorSpec, pop: _Population, day: dt.date, n: int, covariate: list[tuple[str, dict[str, Any]]]
) -> _Rows:
    rng = _rng(spec.seed, day.toordinal(), _STREAM_LEGIT, 1)
    n_cust = len(pop.customer_ids)
    # who is abroad today, and where
    abroad = rng.random(n_cust) < _P_ABROAD
    destination = np.asarray(_TRAVEL_COUNTRIES, dtype=object)[
        _categorical_draw(rng.random(n_cust), _TRAVEL_WEIGHTS)
    ]
    home = np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx]
    destination = np.where(destination == home, "GB", destination)  # a trip is always abroad

    # all per-row uniforms drawn up front so knobs change mappings, not the stream
    cust = _categorical_draw(rng.random(n), pop.activity)
    u_channel = rng.random(n)
    u_cat = rng.random(n)
    u_large = rng.random(n)
    u_large_cat = rng.random(n)
    u_merchant = rng.random(n)
    z_amount = rng.normal(0.0, 1.0, n)
    large_mult = rng.lognormal(np.log(5.0), 0.45, n)
    u_country = rng.random(n)
    vpn_country = _categorical_draw(rng.random(n), _TRAVEL_WEIGHTS)
    u_device = rng.random(n)
    u_new_device = rng.random(n)
    new_device_nums = rng.integers(0, 16**8, n, dtype=np.uint64)
    ts_us = _hours_to_us(rng, n, _HOUR_LEGIT)

    online_share = pop.online_share
    for kind, params in covariate:
        if kind == "channel_mix":
            online_share = _shift_share(online_share, pop.activity, float(params["online_share"]))
    online = u_channel < online_share[cust]

    avail = _available_categories(pop)
    w_online = np.where(avail, _CAT_ONLINE, 0.0)
    w_store = np.where(avail, _CAT_INSTORE, 0.0)
    w_online = w_online if w_online.sum() > 0 else avail.astype(float)
    w_store = w_store if w_store.sum() > 0 else avail.astype(float)
    cat = np.where(online, _categorical_draw(u_cat, w_online), _categorical_draw(u_cat, w_store))
    # legit large purchases: overlap with the high_value fraud mechanism
    large = u_large < _P_LARGE
    risky = np.array([_CAT_INDEX["electronics"], _CAT_INDEX["jewelry"]])
    risky = risky[avail[risky]] if avail[risky].any() else np.flatnonzero(avail)[:1]
    cat = np.where(large, risky[(u_large_cat * len(risky)).astype(int) % len(risky)], cat)
    merchant_pos = _pick_merchants(pop, cat, u_merchant)
    mcat = pop.merchant_cat[merchant_pos]
    amount = np.exp(np.log(_CAT_MEDIAN[mcat] * pop.spend_level[cust]) + _CAT_SIGMA[mcat] * z_amount)
    amount = np.where(large, amount * large_mult, amount)

    # where: home, or the trip destination; online sometimes geolocates elsewhere (VPN)
    is_abroad = abroad[cust]
    country = home[cust].copy()
    in_dest = is_abroad & (~online | (u_country < _P_ONLINE_ABROAD_COUNTRY))
    country[in_dest] = destination[cust[in_dest]]
    vpn = online & ~is_abroad & (u_country > 1.0 - _P_VPN)
    country[vpn] = np.asarray(_TRAVEL_COUNTRIES, dtype=object)[vpn_country[vpn]]

    # device: in-store -> the merchant's terminal; online -> usual device, sometimes a new one
    second = u_device < pop.p_second_device[cust]
    device = np.where(second, pop.devices[cust, 1], pop.devices[cust, 0])
    new_dev = online & (u_new_device < _P_NEW_DEVICE)
    if new_dev.any():
        device[new_dev] = _format_ids("d-", new_device_nums[new_dev], 8, base=16)
    device[~online] = pop.pos_devices[merchant_pos[~online]]

    rows = _Rows(
        cust=cust,
        ts_us=ts_us,
        merchant_pos=merchant_pos,
        online=online,
        country=country,
        device=device,
        amount=amount,
        mechanism=np.full(n, "legit", dtype=object),
    )
    return _with_micro_bursts(rng, pop, rows)


def _with_micro_bursts(rng: np.random.Generator, pop: _Population, rows: _Rows) -> _Rows:
    """Some legit online gamers buy several small items within minutes (overlaps card testing)."""
    n = len(rows.cust)
    gaming = _CAT_INDEX["gaming"]
    seeds = np.flatnonzero(
        rows.online & (pop.merchant_cat[rows.merchant_pos] == gaming) & (rng.random(n) < _P_MICRO_BURST)
    )
    if seeds.size == 0:
        return rows
    # turn the following 1-3 rows (random legit rows) into small purchases right after the seed row
    extra = rng.integers(1, 4, seeds.size)
    src = np.repeat(seeds, extra)
    targets = rng.choice(n, size=src.size, replace=False) if src.size <= n else np.empty(0, int)
    targets = targets[~np.isin(targets, seeds)]
    src = src[: targets.size]
    cust = rows.cust.copy()
    ts = rows.ts_us.copy()
    merchant = rows.merchant_pos.copy()
    online = rows.online.copy()
    country = rows.country.copy()
    device = rows.device.copy()
    amount = rows.amount.copy()
    cust[targets] = cust[src]
    ts[targets] = np.minimum(ts[src] + rng.integers(20, 600, targets.size) * 1_000_000, _MICROS_PER_DAY - 1)
    merchant[targets] = merchant[src]
    online[targets] = True
    country[targets] = country[src]
    device[targets] = device[src]
    amount[targets] = rng.choice([0.99, 1.99, 2.99, 4.99, 9.99], targets.size)
    amount[seeds] = rng.choice([0.99, 1.99, 4.99, 9.99], seeds.size)
    return _Rows(cust, ts, merchant, online, country, device, amount, rows.mechanism)


def _shift_share(p: np.ndarray, weights: np.ndarray, target: float) -> np.ndarray:
    """Scale each customer's online odds by one factor so the activity-weighted mean is `target`."""
    if not 0.0 < target < 1.0:
        raise SimulatorError(f"channel_mix online_share must be in (0, 1), got {target}")
    odds = p / (1.0 - p)
    lo, hi = -12.0, 12.0
    for _ in range(60):
        mid = (lo + hi) / 2
        q = odds * np.exp(mid)
        share = float(np.dot(weights, q / (1.0 + q)))
        lo, hi = (mid, hi) if share < target else (lo, mid)
    q = odds * np.exp((lo + hi) / 2)
    return q / (1.0 + q)


@dataclass(frozen=True)
class _Collusion:
    categories: tuple[str, ...]
    merchant_share: float
    amount_factor: float


def _fraud_mix(concept: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, float], _Collusion | None]:
    mix = dict(_BASE_MIX)
    collusion = None
    for _kind, params in concept:
        to = params["to"]
        if to != "merchant_collusion":
            raise SimulatorError(
                f"fraud_mechanism_shift to={to!r} is not simulated; use to='merchant_collusion'"
            )
        residual = float(params["residual"])
        share = float(params["merchant_share"])
        factor = float(params["amount_factor"])
        categories = (
            (params["categories"],) if isinstance(params["categories"], str) else params["categories"]
        )
        categories = tuple(str(c) for c in categories)
        if not 0.0 <= residual <= 1.0:
            raise SimulatorError(f"fraud_mechanism_shift residual must be in [0, 1], got {residual}")
        if not 0.0 < share <= 1.0:
            raise SimulatorError(f"fraud_mechanism_shift merchant_share must be in (0, 1], got {share}")
        if factor <= 0:
            raise SimulatorError(f"fraud_mechanism_shift amount_factor must be > 0, got {factor}")
        unknown = set(categories) - set(CATEGORIES)
        if not categories or unknown:
            raise SimulatorError(
                f"fraud_mechanism_shift categories {sorted(unknown) or categories} unknown; "
                f"pick from {list(CATEGORIES)}"
            )
        mix = {k: v * residual for k, v in _BASE_MIX.items()}
        mix["merchant_collusion"] = 1.0 - residual
        collusion = _Collusion(categories, share, factor)
    return mix, collusion


def _holiday_volume_factor(spec: SimulatorSpec, day: dt.date) -> float:
    """Volume multiplier of an active `holiday` (1 on ordinary days)."""
    factor = 1.0
    for kind, params in _active(spec, day, _COVARIATE):
        if kind == "holiday":
            factor *= _positive(kind, "volume_factor", params)
    return factor


def _fraud_rate(spec: SimulatorSpec, day: dt.date) -> float:
    """The day's fraud rate: `spec.fraud_rate`, times an active `fraud_rate_change` factor."""
    rate = spec.fraud_rate
    for kind, params in _active(spec, day, _PRIOR):
        rate *= _positive(kind, "factor", params)
    if rate >= 0.5:
        raise SimulatorError(f"fraud_rate_change makes the fraud rate {rate:.2f} on {day}; keep it below 0.5")
    return rate


def _scaled_delays(spec: SimulatorSpec, day: dt.date, delay: np.ndarray) -> np.ndarray:
    """Label delays of the day's frauds, stretched by an active `label_delay_change` (rounded up)."""
    for kind, params in _active(spec, day, _LABEL_FEED):
        delay = np.ceil(delay * _positive(kind, "factor", params)).astype(np.int64)
    return delay


def _max_label_delay(spec: SimulatorSpec) -> int:
    """The longest delay any day can have: `label_delay_days.max` stretched by the largest factor."""
    factors = [float(_scenario_params(s.kind, s.params)["factor"]) for s in spec.scenarios
               if s.kind == "label_delay_change"]
    return int(math.ceil(spec.label_delay_days.max * max([1.0, *factors])))


def _fraud_rows(spec: SimulatorSpec, pop: _Population, day: dt.date, n_total: int) -> _Rows:
    """Fraud rows for the day by mechanism; about `fraud_rate * n_total` rows in all."""
    rng = _rng(spec.seed, day.toordinal(), _STREAM_FRAUD)
    mix, collusion = _fraud_mix(_active(spec, day, _CONCEPT))
    n_fraud = int(rng.binomial(n_total, _fraud_rate(spec, day))) if n_total else 0
    counts = {k: int(round(n_fraud * share)) for k, share in mix.items()}
    blocks = [
        _card_testing(rng, pop, counts.get("card_testing", 0)),
        _account_takeover(rng, pop, counts.get("account_takeover", 0)),
        _high_value(rng, pop, counts.get("high_value", 0)),
    ]
    if collusion is not None:
        blocks.append(_merchant_collusion(spec, pop, day, counts["merchant_collusion"], collusion))
    return _concat_rows(blocks)


def _attacker_devices(rng: np.random.Generator, n: int) -> np.ndarray:
    return _format_ids("d-", rng.integers(0, 16**8, n, dtype=np.uint64), 8, base=16)


def _pick_cat_merchants(
    rng: np.random.Generator, pop: _Population, names: tuple[str, ...], n: int
) -> np.ndarray:
    avail = _available_categories(pop)
    cats = np.array([_CAT_INDEX[c] for c in names])
    cats = cats[avail[cats]]
    if cats.size == 0:
        cats = np.flatnonzero(avail)
    cat = cats[rng.integers(0, cats.size, n)]
    return _pick_merchants(pop, cat, rng.random(n))


def _card_testing(rng: np.random.Generator, pop: _Population, n_target: int) -> _Rows:
    if n_target <= 0:
        return _empty_rows()
    sizes = rng.integers(3, 9, n_target // 3 + 1)
    k = int(np.searchsorted(np.cumsum(sizes), n_target)) + 1
    sizes = sizes[:k]
    remainder = n_target - int(sizes[:-1].sum())  # hit the target, but keep every burst >= 3
    sizes = (
        sizes
        if remainder >= sizes[-1]
        else (np.append(sizes[:-1], remainder) if remainder >= 3 else sizes[:-1])
    )
    if sizes.size == 0:
        return _empty_rows()
    n_bursts, n = sizes.size, int(sizes.sum())
    burst = np.repeat(np.arange(n_bursts), sizes)
    victim = rng.integers(0, len(pop.customer_ids), n_bursts)
    merchant = _pick_cat_merchants(rng, pop, ("digital_goods", "gaming"), n_bursts)
    gaps = rng.exponential(45.0, n) * 1_000_000  # seconds between attempts
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    gaps[starts] = 0.0
    cum = np.cumsum(gaps)
    offset = (cum - np.repeat(cum[starts], sizes)).astype(np.int64)
    span = np.maximum.reduceat(offset, starts)
    t0 = _hours_to_us(rng, n_bursts, _HOUR_FRAUD)
    t0 = np.minimum(t0, _MICROS_PER_DAY - 1 - span)
    home = np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx[victim]]
    foreign = np.asarray(_ATTACK_COUNTRIES, dtype=object)[
        _categorical_draw(rng.random(n_bursts), _ATTACK_WEIGHTS)
    ]
    country = np.where(rng.random(n_bursts) < 0.5, foreign, home)
    device = _attacker_devices(rng, n_bursts)
    amount = np.round(rng.uniform(0.5, 4.99, n), 2)
    amount = np.where(rng.random(n) < 0.2, 1.0, amount)
    return _Rows(
        cust=victim[burst],
        ts_us=t0[burst] + offset,
        merchant_pos=merchant[burst],
        online=np.ones(n, bool),
        country=country[burst],
        device=device[burst],
        amount=amount,
        mechanism=np.full(n, "card_testing", dtype=object),
    )


def _account_takeover(rng: np.random.Generator, pop: _Population, n: int) -> _Rows:
    if n <= 0:
        return _empty_rows()
    victim = _categorical_draw(rng.random(n), pop.activity)
    merchant = _pick_cat_merchants(
        rng, pop, ("electronics", "digital_goods", "fashion", "travel", "jewelry"), n
    )
    home = np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx[victim]]
    foreign = np.asarray(_ATTACK_COUNTRIES, dtype=object)[_categorical_draw(rng.random(n), _ATTACK_WEIGHTS)]
    foreign = np.where(foreign == home, "RU", foreign)
    country = np.where(rng.random(n) < 0.75, foreign, home)  # a quarter hide behind a local proxy
    typical = 60.0 * pop.spend_level[victim]
    amount = typical * rng.lognormal(np.log(4.0), 0.6, n)
    return _Rows(
        cust=victim,
        ts_us=_hours_to_us(rng, n, _HOUR_FRAUD),
        merchant_pos=merchant,
        online=np.ones(n, bool),
        country=country,
        device=_attacker_devices(rng, n),
        amount=amount,
        mechanism=np.full(n, "account_takeover", dtype=object),
    )


def _high_value(rng: np.random.Generator, pop: _Population, n: int) -> _Rows:
    if n <= 0:
        return _empty_rows()
    victim = _categorical_draw(rng.random(n), pop.activity)
    merchant = _pick_cat_merchants(rng, pop, ("electronics", "jewelry"), n)
    mcat = pop.merchant_cat[merchant]
    amount = _CAT_MEDIAN[mcat] * pop.spend_level[victim] * rng.lognormal(np.log(7.0), 0.5, n)
    online = rng.random(n) < 0.6
    home = np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx[victim]]
    foreign = np.asarray(_ATTACK_COUNTRIES, dtype=object)[_categorical_draw(rng.random(n), _ATTACK_WEIGHTS)]
    country = np.where(rng.random(n) < 0.85, home, foreign)
    own = pop.devices[victim, 0]
    device = np.where(rng.random(n) < 0.5, own, _attacker_devices(rng, n))
    device = np.where(online, device, pop.pos_devices[merchant])
    return _Rows(
        cust=victim,
        ts_us=_hours_to_us(rng, n, _HOUR_FRAUD),
        merchant_pos=merchant,
        online=online,
        country=country,
        device=device,
        amount=amount,
        mechanism=np.full(n, "high_value", dtype=object),
    )


def _colluding_merchants(spec: SimulatorSpec, pop: _Population, collusion: _Collusion) -> np.ndarray:
    """Positions of the colluding merchants: fixed per seed, a share of the chosen categories."""
    rng = _rng(spec.seed, _STREAM_SCENARIO, 0)
    pool = np.flatnonzero(np.isin(pop.merchant_cat, [_CAT_INDEX[c] for c in collusion.categories]))
    if pool.size == 0:
        raise SimulatorError(
            f"fraud_mechanism_shift: no merchant in categories {list(collusion.categories)}; "
            "raise n_merchants or pick other categories"
        )
    k = max(1, int(round(collusion.merchant_share * pool.size)))
    return np.sort(rng.choice(pool, size=k, replace=False))


def _merchant_collusion(
    spec: SimulatorSpec, pop: _Population, day: dt.date, n: int, collusion: _Collusion
) -> _Rows:
    """Domestic in-store purchases at colluding merchants, billed a bit above the usual amount.

    Nothing here is new to the champion's features (in-store, home country, ordinary category and
    hours); the inflated bill is only mildly unusual, so the old model misses it and only a
    model retrained on the new labels learns it.
    """
    if n <= 0:
        return _empty_rows()
    rng = _rng(spec.seed, day.toordinal(), _STREAM_SCENARIO, 1)
    colluders = _colluding_merchants(spec, pop, collusion)
    merchant = colluders[rng.integers(0, colluders.size, n)]
    victim = _categorical_draw(rng.random(n), pop.activity)
    mcat = pop.merchant_cat[merchant]
    typical = np.log(_CAT_MEDIAN[mcat] * pop.spend_level[victim])
    amount = np.exp(typical + _CAT_SIGMA[mcat] * rng.normal(0, 1, n)) * collusion.amount_factor
    return _Rows(
        cust=victim,
        ts_us=_hours_to_us(rng, n, _HOUR_LEGIT),
        merchant_pos=merchant,
        online=np.zeros(n, bool),
        country=np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx[victim]],
        device=pop.pos_devices[merchant],
        amount=amount,
        mechanism=np.full(n, "merchant_collusion", dtype=object),
    )


def _empty_rows() -> _Rows:
    e_int = np.empty(0, np.intp)
    e_obj = np.empty(0, object)
    return _Rows(e_int, np.empty(0, np.int64), e_int, np.empty(0, bool), e_obj, e_obj, np.empty(0), e_obj)


def _concat_rows(blocks: list[_Rows]) -> _Rows:
    return _Rows(*(np.concatenate([getattr(b, f) for b in blocks]) for f in _Rows.__dataclass_fields__))


@dataclass(frozen=True)
class _Day:
    transactions: pd.DataFrame  # clean feed (covariate + concept scenarios applied)
    truth: pd.DataFrame  # ground truth, same row order


def _spec_key(spec: SimulatorSpec) -> str:
    """Cache key: the spec without bad-batch knobs (they never change the clean day or labels).

    `SimulatorSpec` is frozen but holds lists/dicts, so it is not hashable itself; its JSON is.
    """
    clean = spec.model_copy(
        update={"scenarios": [s for s in spec.scenarios if SCENARIO_KINDS[s.kind]["family"] != _BAD_BATCH]}
    )
    return clean.model_dump_json()


@lru_cache(maxsize=2)
def _clean_day_cached(key: str, day: dt.date) -> _Day:
    return _build_day(SimulatorSpec.model_validate_json(key), day)


@dataclass(frozen=True)
class _FraudPart:
    """What decides a day's labels, computable without the legit rows (keeps chargebacks cheap)."""

    n_total: int
    rows: _Rows
    id_numbers: np.ndarray  # a permutation of 1..n_total: legit rows first, then fraud rows
    delay: np.ndarray  # label delay (days) per fraud row


def _fraud_part(spec: SimulatorSpec, pop: _Population, day: dt.date) -> _FraudPart:
    n_total = _day_volume(spec, day)
    fraud = _fraud_rows(spec, pop, day, n_total)
    n_total = max(n_total, len(fraud.cust))
    # ids are a random permutation (like real processors' ids), so an id says nothing about time
    # or label, and the fraud rows' ids are known without generating the legit rows
    id_numbers = _rng(spec.seed, day.toordinal(), _STREAM_IDS).permutation(n_total) + 1
    label_rng = _rng(spec.seed, day.toordinal(), _STREAM_LABELS)
    delay = label_rng.integers(spec.label_delay_days.min, spec.label_delay_days.max + 1, len(fraud.cust))
    delay = _scaled_delays(spec, day, delay)
    return _FraudPart(n_total=n_total, rows=fraud, id_numbers=id_numbers, delay=delay)


#: A day's transaction ids are `tx-<date>-<n>` with n zero-padded to 7 digits, or to 8 or 9 when the
#: day holds 10M+ rows (the contract's regex allows 7 to 9): unique within the day by n, across days
#: by the date, and a day under 10M rows keeps the ids it always had.
_TX_MIN_DIGITS, _TX_MAX_DIGITS = 7, 9


def _tx_ids(day: dt.date, numbers: np.ndarray, n_total: int = 0) -> np.ndarray:
    """`tx-<date>-<number>` ids of a day holding `n_total` rows (all its ids have one width)."""
    return _format_ids(f"tx-{day:%Y%m%d}-", numbers, _width(n_total, _TX_MIN_DIGITS))


def _build_day(spec: SimulatorSpec, day: dt.date) -> _Day:
    pop = _population(spec.seed, spec.n_customers, spec.n_merchants)
    part = _fraud_part(spec, pop, day)
    fraud = part.rows
    n_legit = part.n_total - len(fraud.cust)
    covariate = _active(spec, day, _COVARIATE)
    legit = _legit_rows(spec, pop, day, n_legit, covariate)
    rows = _concat_rows([legit, fraud])
    delay_all = np.concatenate([np.zeros(n_legit, np.int64), part.delay])
    order = np.argsort(rows.ts_us, kind="stable")
    n = order.size

    merchant_ids = pop.merchant_ids[rows.merchant_pos[order]]
    categories = np.asarray(CATEGORIES, dtype=object)[pop.merchant_cat[rows.merchant_pos[order]]]
    device = rows.device[order]
    amount = rows.amount[order]
    online = rows.online[order]
    mechanism = rows.mechanism[order]

    for kind, params in covariate:
        if kind == "new_merchant_category":
            merchant_ids, categories, device, amount = _apply_new_category(
                spec, day, params, merchant_ids, categories, device, amount, online, mechanism
            )
        elif kind == "amount_inflation":
            factor = float(params["factor"])
            if factor <= 0:
                raise SimulatorError(f"amount_inflation factor must be > 0, got {factor}")
            amount = amount * factor
        elif kind == "weekly_seasonality":
            factor = _positive(kind, "weekend_amount", params)
            if day.weekday() >= 5:
                amount = amount * factor
        elif kind == "holiday":
            amount = amount * _positive(kind, "amount_factor", params)
        elif kind == "gradual_amount_drift":
            rate = float(params["daily_rate"])
            k = spec.day_index(day) - _scenario_start(spec, kind, day) + 1
            if 1 + rate * k <= 0:
                raise SimulatorError(f"gradual_amount_drift daily_rate {rate} makes amounts <= 0 on day {day}")
            amount = amount * (1 + rate * k)

    day_start = np.datetime64(day, "us")
    cust = rows.cust[order]
    tx = pd.DataFrame(
        {
            "transaction_id": _tx_ids(day, part.id_numbers[order], part.n_total),
            "event_ts": day_start + rows.ts_us[order].astype("timedelta64[us]"),
            "customer_id": pop.customer_ids[cust],
            "customer_home_country": np.asarray(_HOME_COUNTRIES, dtype=object)[pop.home_idx[cust]],
            "merchant_id": merchant_ids,
            "merchant_category": categories,
            "channel": np.where(online, "online", "in_store").astype(object),
            "country": rows.country[order],
            "device_id": device,
            "amount": _round_amount(amount),
            "currency": np.full(n, "EUR", dtype=object),
        }
    )
    tx = tx.astype(TRANSACTION_COLUMNS)

    is_fraud = mechanism != "legit"
    delay = pd.array(delay_all[order], dtype="Int64")
    delay[~is_fraud] = pd.NA
    truth = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy(),
            "is_fraud": is_fraud,
            "mechanism": mechanism,
            "label_delay_days": delay,
        }
    )
    return _Day(transactions=tx, truth=truth)


def _apply_new_category(
    spec: SimulatorSpec,
    day: dt.date,
    params: dict[str, Any],
    merchant_ids: np.ndarray,
    categories: np.ndarray,
    device: np.ndarray,
    amount: np.ndarray,
    online: np.ndarray,
    mechanism: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    share = float(params["share"])
    name = str(params["category"])
    if not 0.0 <= share <= 1.0:
        raise SimulatorError(f"new_merchant_category share must be in [0, 1], got {share}")
    if name in CATEGORIES:
        raise SimulatorError(f"new_merchant_category category {name!r} already exists; pick a new name")
    rng = _rng(spec.seed, day.toordinal(), _STREAM_SCENARIO, 2)
    n = merchant_ids.size
    moved = (rng.random(n) < share) & (mechanism == "legit")
    n_new = max(1, spec.n_merchants // 50)
    width = _width(spec.n_merchants + n_new, 4)
    new_ids = _format_ids("m-", np.arange(spec.n_merchants + 1, spec.n_merchants + n_new + 1), width)
    pick = new_ids[rng.integers(0, n_new, n)]
    merchant_ids = np.where(moved, pick, merchant_ids)
    categories = np.where(moved, name, categories)
    device = np.where(moved & ~online, np.char.add("pos-", pick.astype(str)).astype(object), device)
    new_amount = rng.lognormal(np.log(float(params["median_amount"])), 0.9, n)
    amount = np.where(moved, new_amount, amount)
    return merchant_ids, categories, device, amount


def _coerce_day(day: dt.date) -> dt.date:
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    raise TypeError(f"day must be a datetime.date, got {type(day).__name__} ({day!r})")


def _clean_day(spec: SimulatorSpec, day: dt.date) -> _Day:
    return _clean_day_cached(_spec_key(spec), _coerce_day(day))


# --------------------------------------------------------------------------------------------
# Bad batches (delivered feed only)
# --------------------------------------------------------------------------------------------


def _require_column(df: pd.DataFrame, kind: str, column: str) -> None:
    if column not in df.columns:
        raise SimulatorError(
            f"scenario {kind!r} names column {column!r}, which the feed does not have "
            f"(columns: {list(df.columns)}); pick one of the contract columns"
        )


def _apply_bad_batch(
    df: pd.DataFrame, kind: str, params: dict[str, Any], rng: np.random.Generator
) -> pd.DataFrame:
    if kind == "missing_column":
        _require_column(df, kind, params["column"])
        return df.drop(columns=[params["column"]])
    if kind == "renamed_column":
        _require_column(df, kind, params["column"])
        return df.rename(columns={params["column"]: params["new_name"]})
    if kind == "type_change":
        col = params["column"]
        _require_column(df, kind, col)
        out = df.copy()
        if col == "amount":
            out[col] = pd.Series(
                np.char.mod("%.2f EUR", df[col].to_numpy(float)), index=df.index, dtype=object
            )
        else:
            out[col] = df[col].astype(str).astype(object)
        return out
    if kind == "null_burst":
        col = params["column"]
        _require_column(df, kind, col)
        frac = float(params["fraction"])
        if not 0.0 <= frac <= 1.0:
            raise SimulatorError(f"null_burst fraction must be in [0, 1], got {frac}")
        out = df.copy()
        mask = rng.random(len(df)) < frac
        out.loc[mask, col] = None
        return out
    if kind == "duplicate_delivery":
        return pd.concat([df, df], ignore_index=True)
    if kind == "amounts_in_cents":
        _require_column(df, kind, "amount")
        out = df.copy()
        out["amount"] = np.round(df["amount"].to_numpy(float) * 100.0, 0)
        return out
    if kind == "future_timestamps":
        _require_column(df, kind, "event_ts")
        frac = float(params["fraction"])
        lo, hi = int(params["min_days"]), int(params["max_days"])
        if not 0.0 <= frac <= 1.0 or not 1 <= lo <= hi:
            raise SimulatorError(
                f"future_timestamps needs 0 <= fraction <= 1 and 1 <= min_days <= max_days, got {params}"
            )
        out = df.copy()
        mask = rng.random(len(df)) < frac
        shift = rng.integers(lo, hi + 1, len(df)).astype("timedelta64[D]").astype("timedelta64[us]")
        ts = out["event_ts"].to_numpy().copy()
        ts[mask] = ts[mask] + shift[mask]
        out["event_ts"] = ts
        return out
    if kind == "empty_batch":
        return df.iloc[0:0].copy()
    raise SimulatorError(f"unknown bad-batch scenario {kind!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_transactions(spec: SimulatorSpec, day: dt.date) -> pd.DataFrame:
    """The day's transaction feed as the source system delivers it (all active knobs applied)."""
    day = _coerce_day(day)
    df = _clean_day(spec, day).transactions.copy()
    bad = _active(spec, day, _BAD_BATCH)
    for i, (kind, params) in enumerate(bad):
        df = _apply_bad_batch(df, kind, params, _rng(spec.seed, day.toordinal(), _STREAM_BAD_BATCH, i))
    return df


def ground_truth(spec: SimulatorSpec, day: dt.date) -> pd.DataFrame:
    """Which of the day's (clean) transactions are fraud, by which mechanism, with which label delay.

    For tests and evaluation of the simulator only: the pipeline learns labels from chargebacks.
    """
    return _clean_day(spec, day).truth.copy()


@lru_cache(maxsize=512)
def _fraud_labels(key: str, day: dt.date) -> pd.DataFrame:
    """Small per-day table of frauds (id, event_ts, delay): no legit rows are generated for it."""
    spec = SimulatorSpec.model_validate_json(key)
    part = _fraud_part(spec, _population(spec.seed, spec.n_customers, spec.n_merchants), day)
    n_legit = part.n_total - len(part.rows.cust)
    return pd.DataFrame(
        {
            "transaction_id": _tx_ids(day, part.id_numbers[n_legit:], part.n_total),
            "event_ts": np.datetime64(day, "us") + part.rows.ts_us.astype("timedelta64[us]"),
            "delay": part.delay,
        }
    )


def generate_chargebacks(spec: SimulatorSpec, day: dt.date) -> pd.DataFrame:
    """Chargebacks delivered on `day`: frauds of earlier days (from `start_date`) whose delay ends today.

    `reported_at` is a time on `day`, never before the transaction itself (for a zero delay).
    """
    day = _coerce_day(day)
    key = _spec_key(spec)
    parts = []
    for delay in range(spec.label_delay_days.min, _max_label_delay(spec) + 1):
        source = day - dt.timedelta(days=delay)
        if source < spec.start_date:
            continue
        labels = _fraud_labels(key, source)
        parts.append(labels.loc[labels["delay"] == delay, ["transaction_id", "event_ts"]])
    found = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"transaction_id": [], "event_ts": []})
    )
    n = len(found)
    rng = _rng(spec.seed, day.toordinal(), _STREAM_CHARGEBACK)
    day_start = np.datetime64(day, "us")
    day_end_us = _MICROS_PER_DAY
    if n:
        since_start = (found["event_ts"].to_numpy("datetime64[us]") - day_start).astype(np.int64)
        lo = np.clip(since_start + 60_000_000, 0, day_end_us - 1)  # a zero delay: after the tx
    else:
        lo = np.zeros(0, np.int64)
    offset = lo + (rng.random(n) * (day_end_us - lo)).astype(np.int64)
    offset = np.minimum(offset, day_end_us - 1)
    reported = day_start + offset.astype("timedelta64[us]")
    order = np.lexsort((found["transaction_id"].to_numpy(dtype=str), reported))
    cb = pd.DataFrame(
        {
            "chargeback_id": _format_ids(f"cb-{day:%Y%m%d}-", np.arange(1, n + 1), _width(n, 7)),
            "transaction_id": found["transaction_id"].to_numpy(dtype=object)[order],
            "reported_at": reported[order],
            "reason_code": np.full(n, "fraud", dtype=object),
        }
    )
    return cb.astype(CHARGEBACK_COLUMNS)
