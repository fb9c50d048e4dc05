"""The card-fraud simulator's `simulator:` section: its knobs, its scenarios and its checks against the config.

The loop validates the section with the `SIMULATOR_SPEC` of the source entry point module
(`examples.card_fraud.source`, named by `contract.source.entry_point`), so the schema lives with the
simulator it drives and generic code names none of its knobs.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.config import ConfigError, SimulatorSection

if TYPE_CHECKING:
    from training.config import Config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class LabelDelay(_Strict):
    """Days from a fraud to its chargeback's delivery, drawn uniformly from min..max."""

    min: int = Field(ge=0)
    max: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LabelDelay:
        if self.max < self.min:
            raise ValueError(f"label_delay_days.max ({self.max}) < min ({self.min})")
        return self


ScenarioKind = Literal[
    # covariate shift
    "amount_inflation",
    "new_merchant_category",
    "channel_mix",
    "weekly_seasonality",
    "gradual_amount_drift",
    "holiday",
    # label feed / prior (issue 19's benchmark worlds)
    "label_delay_change",
    "fraud_rate_change",
    # concept drift
    "fraud_mechanism_shift",
    # bad batches
    "missing_column",
    "renamed_column",
    "type_change",
    "null_burst",
    "duplicate_delivery",
    "amounts_in_cents",
    "future_timestamps",
    "empty_batch",
]


class Scenario(_Strict):
    """A knob switched on from `from_day` (0-based day index) until `until_day` (exclusive)."""

    kind: ScenarioKind
    from_day: int = Field(ge=0)
    until_day: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    def active(self, day_index: int) -> bool:
        return self.from_day <= day_index and (self.until_day is None or day_index < self.until_day)


class SimulatorSpec(SimulatorSection):
    seed: int = 42
    start_date: dt.date
    transactions_per_day: int = Field(ge=0)
    n_customers: int = Field(gt=0)
    n_merchants: int = Field(gt=0)
    fraud_rate: float = Field(gt=0, lt=0.2)
    label_delay_days: LabelDelay
    scenarios: list[Scenario] = Field(default_factory=list)

    def day_index(self, day: dt.date) -> int:
        return (day - self.start_date).days

    def check_config(self, cfg: Config) -> None:
        """The simulated world starts on the first interval, and no chargeback arrives after labels count as final."""
        if self.start_date != cfg.contract.start_date:
            raise ValueError(
                f"simulator.start_date ({self.start_date}) differs from contract.start_date "
                f"({cfg.contract.start_date}): the simulated world starts on the first data interval"
            )
        if cfg.windows.label_maturity_days < self.label_delay_days.max:
            raise ValueError(
                f"windows.label_maturity_days ({cfg.windows.label_maturity_days}) is shorter than "
                f"simulator.label_delay_days.max ({self.label_delay_days.max}): "
                "immature labels would be treated as negatives"
            )

    def known_events(self) -> list[tuple[dt.date, str]]:
        """Each scenario's first day and kind: where the world was made to change."""
        return [(self.start_date + dt.timedelta(days=s.from_day), s.kind) for s in self.scenarios]


def simulator_spec(cfg: Config) -> SimulatorSpec:
    """The config's `simulator:` section as the card-fraud simulator's spec; a clear error for any other source."""
    spec = cfg.simulator
    if not isinstance(spec, SimulatorSpec):
        raise ConfigError(
            f"this needs the card-fraud simulator source, but contract.source is {cfg.contract.source.kind!r} "
            f"(entry_point {cfg.contract.source.entry_point!r}) and its `simulator:` section is "
            f"{type(spec).__name__ if spec is not None else 'missing'}; use config/closedloop.yaml's "
            "`contract.source` (entry_point examples.card_fraud.source:extract) and `simulator:` section"
        )
    return spec
