"""The Assets through which DAGs hand data to each other (data-driven hand-overs only).

Their URIs name the tables they stand for: the features Asset is the contract's published features
table (`contract.marts.published`). In a several-model deployment each model has its own three,
named and addressed under the model (`<model>__closedloop_features`, `closedloop://<model>/...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from airflow.sdk import Asset

from closedloop.runtime import parse_config


@dataclass(frozen=True)
class ModelAssets:
    #: Published feature partition + a new training-set data version (extra: interval, rows, data_version).
    features: Asset
    #: Scored interval in published.predictions (extra: batch_date, model versions, rows).
    predictions: Asset
    #: The registry alias `champion` moved (extra: model name, version, previous version).
    champion: Asset


@cache
def assets_for(model: str | None = None) -> ModelAssets:
    """The Assets of `model` (None: the one model of a one-model deployment)."""
    published = parse_config(model).contract.marts.published.replace(".", "/")
    prefix, scope = (f"{model}__", f"{model}/") if model else ("", "")
    return ModelAssets(
        features=Asset(name=f"{prefix}closedloop_features", uri=f"closedloop://{scope}warehouse/{published}"),
        predictions=Asset(name=f"{prefix}closedloop_predictions",
                          uri=f"closedloop://{scope}warehouse/published/predictions"),
        champion=Asset(name=f"{prefix}closedloop_champion", uri=f"closedloop://{scope}mlflow/registry/champion"),
    )


def __getattr__(name: str) -> Asset:
    """`FEATURES`, `PREDICTIONS`, `CHAMPION`: the one-model deployment's Assets (read when first asked)."""
    if name in ("FEATURES", "PREDICTIONS", "CHAMPION"):
        return getattr(assets_for(None), name.lower())
    raise AttributeError(name)
