"""The card-fraud example's source entry point: the simulator's two feeds for one day.

Named in config as `contract.source: {kind: simulator, entry_point: examples.card_fraud.source:extract}`
and called by `training.source.extract` like any custom source, so generic code imports no example.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from examples.card_fraud import simulator
from training.config import Config


def extract(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """The day's transactions and the chargebacks delivered that day, under the contract's feed names."""
    spec = cfg.require_simulator()
    return {
        cfg.contract.events.feed: simulator.generate_transactions(spec, batch_date),
        cfg.contract.labels.feed: simulator.generate_chargebacks(spec, batch_date),
    }
