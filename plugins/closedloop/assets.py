"""The Assets through which DAGs hand data to each other (data-driven hand-overs only)."""

from __future__ import annotations

from airflow.sdk import Asset

#: Published feature partition + a new training-set data version (extra: interval, rows, data_version).
FEATURES = Asset(name="closedloop_features", uri="closedloop://warehouse/published/transaction_features")
#: Scored interval in published.predictions (extra: batch_date, model versions, rows).
PREDICTIONS = Asset(name="closedloop_predictions", uri="closedloop://warehouse/published/predictions")
#: The registry alias `champion` moved (extra: model name, version, previous version).
CHAMPION = Asset(name="closedloop_champion", uri="closedloop://mlflow/registry/champion")
