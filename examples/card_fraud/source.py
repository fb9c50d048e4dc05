"""The card-fraud example's source entry point: the simulator's two feeds for one day.

Named in config as `contract.source: {kind: simulator, entry_point: examples.card_fraud.source:extract}`
and called by `training.source.extract` like any custom source, so generic code imports no example.
`SIMULATOR_SPEC` is the schema the loop validates the config's `simulator:` section with.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from examples.card_fraud.spec import SimulatorSpec, simulator_spec

if TYPE_CHECKING:
    import pandas as pd

    from training.config import Config

SIMULATOR_SPEC = SimulatorSpec


def extract(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """The day's transactions and the chargebacks delivered that day, under the contract's feed names."""
    from examples.card_fraud import simulator  # numpy/pandas only when a day is simulated, not at config load

    spec = simulator_spec(cfg)
    return {
        cfg.contract.events.feed: simulator.generate_transactions(spec, batch_date),
        cfg.contract.labels.feed: simulator.generate_chargebacks(spec, batch_date),
    }
