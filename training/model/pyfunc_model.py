"""What `mlflow.pyfunc.load_model("models:/<name>@champion").predict(rows)` returns: a decision.

MLflow "models from code": `train` logs this file as the model's code, the fitted (calibrated)
scikit-learn estimator as its artifact `estimator` and, as its model config, the version's own
decision threshold and the decision words. So a caller in any process gets, per row, the
calibrated positive-class probability `score` and the `decision` at the version's threshold - without
reading tags. `params={"threshold": t}` applies another threshold for one call (what-if analysis;
closedloop's own scoring always uses the version's).

Self-contained on purpose: MLflow copies this file into the model and runs it in the caller's
process, where closedloop need not be installed - it imports only MLflow, numpy and pandas.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

#: The estimator's artifact key and the model-config keys `train` writes.
ESTIMATOR_ARTIFACT = "estimator"
THRESHOLD, POSITIVE, NEGATIVE = "threshold", "positive_decision", "negative_decision"


class ThresholdedClassifier(PythonModel):
    """Positive-class probability and the decision at a threshold, as named columns."""

    def load_context(self, context: Any) -> None:
        import mlflow.sklearn

        self.estimator = mlflow.sklearn.load_model(context.artifacts[ESTIMATOR_ARTIFACT])
        config = context.model_config or {}
        missing = [k for k in (THRESHOLD, POSITIVE, NEGATIVE) if k not in config]
        if missing:
            raise ValueError(f"model config lacks {missing}: re-log the model with closedloop's train")
        self.threshold = float(config[THRESHOLD])
        self.words = (str(config[NEGATIVE]), str(config[POSITIVE]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        given = (params or {}).get(THRESHOLD)
        threshold = self.threshold if given is None else float(given)
        score = np.asarray(self.estimator.predict_proba(model_input))[:, 1].astype("float64")
        decision = np.where(score >= threshold, self.words[1], self.words[0])
        return pd.DataFrame({"score": score, "decision": decision})


mlflow.models.set_model(ThresholdedClassifier())
