"""`GXValidateCheckpointOperator`: the GX data-quality gate as an Airflow task.

The airflow GX provider cannot be installed next to Airflow 3.3 (its structlog pin), so this small
operator runs GX 1.x's own Checkpoint (with `UpdateDataDocsAction`) through `training.data.quality`.
Its surface follows the provider's `GXValidateCheckpointOperator` (a checkpoint per suite, batch
and expectation parameters, a file context, a result pushed to XCom) so the provider can replace
it once the pin is lifted.

Bad data is not transient: a failed gate raises `AirflowFailException` (no retries) after the
batch was quarantined. Anything else (warehouse busy, missing file) raises normally and may retry.
Nothing heavy happens in `__init__`: no connection, no GX or pandas import (DAG parsing stays fast).

The module is deliberately not called `great_expectations.py`: Airflow's plugin manager imports every
file under the plugins folder as a top-level module named after its file, which would shadow the GX
package itself in `sys.modules`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from airflow.sdk import Context

    from training.paths import StatePaths

#: signature of a dataframe loader: (batch_date, paths, **loader_kwargs) -> DataFrame
DataFrameLoader = Callable[..., "pd.DataFrame"]


class GXValidateCheckpointOperator(BaseOperator):
    """Validate one batch against a GX suite from the model's `project.expectations_dir`; fail the run if it does not pass.

    :param suite_name: suite (and checkpoint) to run, e.g. ``raw_transactions``.
    :param load_dataframe: a callable ``(batch_date, paths, **loader_kwargs) -> DataFrame`` or the name
        of a loader in ``training.data.quality.LOADERS`` (``parquet``: ``path=``; ``warehouse``: ``table=``).
    :param loader_kwargs: keyword arguments for the loader (templated, e.g. a landed file path).
    :param batch_date: the batch's date (templated; default the start of the data interval).
    :param interval_start / interval_end: bounds for timestamps (templated); default the batch day.
    :param expect_parameters: extra suite parameters, e.g. ``{"min_rows": 1000}`` (templated).
    :param table_name: quarantine table name; default the suite's ``meta.table``.
    :param state_dir: state root; default ``$CLOSEDLOOP_HOME`` resolved at run time.
    :param model: the model of a several-model deployment the gate acts for (its config, suites, state).
    """

    template_fields = (
        "suite_name", "batch_date", "interval_start", "interval_end", "expect_parameters",
        "loader_kwargs", "table_name", "state_dir",
    )
    ui_color = "#ffe8c7"

    def __init__(
        self,
        *,
        suite_name: str,
        load_dataframe: DataFrameLoader | str,
        loader_kwargs: Mapping[str, Any] | None = None,
        batch_date: str | dt.date = "{{ data_interval_start | ds }}",
        interval_start: str | dt.datetime | None = None,
        interval_end: str | dt.datetime | None = None,
        expect_parameters: Mapping[str, Any] | None = None,
        table_name: str | None = None,
        state_dir: str | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(load_dataframe) and not isinstance(load_dataframe, str):
            raise TypeError(
                f"{self.task_id}: load_dataframe must be a callable or a loader name, got {type(load_dataframe).__name__}"
            )
        self.suite_name = suite_name
        self.load_dataframe = load_dataframe
        self.loader_kwargs = dict(loader_kwargs or {})
        self.batch_date = batch_date
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.expect_parameters = dict(expect_parameters or {})
        self.table_name = table_name
        self.state_dir = state_dir
        self.model = model

    def _resolve_loader(self) -> DataFrameLoader:
        if callable(self.load_dataframe):
            return self.load_dataframe
        from training.data.quality import LOADERS

        try:
            return LOADERS[self.load_dataframe]
        except KeyError:
            raise ValueError(
                f"{self.task_id}: unknown loader {self.load_dataframe!r}; use one of {sorted(LOADERS)} or pass a callable"
            ) from None

    def _paths(self) -> StatePaths:
        from pathlib import Path

        from training.paths import StatePaths

        paths = StatePaths(Path(self.state_dir).resolve()) if self.state_dir else StatePaths.from_env()
        return paths.ensure()

    def _parameters(self) -> dict[str, Any]:
        params = dict(self.expect_parameters)
        start, end = self.interval_start, self.interval_end
        # An Airflow 3 cron (trigger) timetable gives runs an empty data interval: fall back to the day.
        if start not in (None, "") and end not in (None, "") and str(start) != str(end):
            params["interval_start"] = start
            params["interval_end"] = end
        return params

    def execute(self, context: Context) -> dict[str, Any]:
        from training.data.quality import DataQualityGateFailed, gate
        from training.deployment import use_model

        use_model(self.model)
        raw_date = self.batch_date
        if isinstance(raw_date, dt.datetime):
            batch_date = raw_date.date()
        elif isinstance(raw_date, dt.date):
            batch_date = raw_date
        else:
            try:
                batch_date = dt.date.fromisoformat(str(raw_date)[:10])
            except ValueError:
                raise ValueError(f"{self.task_id}: batch_date must render to YYYY-MM-DD, got {raw_date!r}") from None
        paths = self._paths()
        df = self._resolve_loader()(batch_date, paths, **self.loader_kwargs)
        self.log.info("GX gate %r on %d rows of batch %s", self.suite_name, len(df), batch_date)
        ti = context["ti"]
        try:
            result = gate(
                self.suite_name, df, batch_date, paths, self._parameters(),
                table_name=self.table_name, run_name=f"{context['run_id']}__{self.suite_name}",
            )
        except DataQualityGateFailed as exc:
            ti.xcom_push(key="gx_result", value=exc.result.to_xcom())
            raise AirflowFailException(str(exc)) from exc
        summary = result.to_xcom()
        ti.xcom_push(key="gx_result", value=summary)
        self.log.info(
            "GX gate %r passed for %s: %d expectations, Data Docs %s",
            self.suite_name, result.batch_id, result.evaluated, result.data_docs_page or result.data_docs_path,
        )
        return summary
