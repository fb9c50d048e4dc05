"""The Assets through which DAGs hand data to each other (data-driven hand-overs only).

Their URIs name the tables they stand for: the features Asset is the contract's published features
table (`contract.marts.published`), read from the default config like the DAG files read theirs.
"""

from __future__ import annotations

from airflow.sdk import Asset

from closedloop.runtime import parse_config

_PUBLISHED_FEATURES = parse_config().contract.marts.published.replace(".", "/")

#: Published feature partition + a new training-set data version (extra: interval, rows, data_version).
FEATURES = Asset(name="closedloop_features", uri=f"closedloop://warehouse/{_PUBLISHED_FEATURES}")
#: Scored interval in published.predictions (extra: batch_date, model versions, rows).
PREDICTIONS = Asset(name="closedloop_predictions", uri="closedloop://warehouse/published/predictions")
#: The registry alias `champion` moved (extra: model name, version, previous version).
CHAMPION = Asset(name="closedloop_champion", uri="closedloop://mlflow/registry/champion")
