"""One typed configuration for the whole loop, loaded from YAML and validated once.

Every stage receives a `Config`; nothing reads the YAML on its own. Unknown keys are errors so a
typo in a threshold never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from training.contract import DataContract
from training.errors import ClosedloopError
from training.settings import CONFIG_ENV_VAR, settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "closedloop.yaml"
#: A deployment of several models keeps one config per model here unless CLOSEDLOOP_MODELS_DIR says otherwise.
DEFAULT_MODELS_DIR = PROJECT_ROOT / "config" / "models"


class ConfigError(ClosedloopError, ValueError):
    """The configuration file is missing or invalid; the message says where and how to fix it."""


class _Strict(BaseModel):
    # defer_build: schemas are built at the first validation, not per class at import - the config
    # is loaded in every DAG-parse child, where building ~20 schemas one by one cost ~30 ms
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ModelSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    target: str
    id_column: str
    time_column: str
    primary_metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    recall_at_precision: float = Field(gt=0, lt=1)
    precision_at_k: int = Field(gt=0)
    # Fallback only: a model version trained by closedloop carries its own threshold (tag
    # `decision_threshold`, set at `recall_at_precision` on calibrated validation scores).
    decision_threshold: float = Field(gt=0, lt=1)
    # Probability calibration fitted on the validation window and logged with the model, so scores
    # are probabilities of the positive class: `sigmoid` (Platt, keeps the ranking), `isotonic`, or `none`.
    calibration: Literal["sigmoid", "isotonic", "none"] = "sigmoid"
    numeric_features: list[str] = Field(min_length=1)
    categorical_features: list[str] = Field(default_factory=list)
    slice_columns: list[str] = Field(default_factory=list)

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    @model_validator(mode="after")
    def _no_overlap(self) -> ModelSpec:
        both = set(self.numeric_features) & set(self.categorical_features)
        if both:
            raise ValueError(f"features listed as both numeric and categorical: {sorted(both)}")
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} must not be a feature (label leakage)")
        return self


class SimulatorSection(_Strict):
    """The base of a simulated source's `simulator:` section; its schema is the source's, not the loop's.

    The loop knows no simulator's knobs: the module named by `contract.source.entry_point` exposes
    `SIMULATOR_SPEC`, a subclass of this class, and `Config` validates the `simulator:` section with it
    (see the card example's `spec.py` under examples/). The two hooks are all that
    generic code asks of a simulator.
    """

    def check_config(self, cfg: Config) -> None:
        """Raise ValueError when the rest of the config contradicts this section (default: nothing to check)."""

    def known_events(self) -> list[tuple[dt.date, str]]:
        """(first day, name) of each change the simulated world was told to make, for charts (default: none)."""
        return []


#: The module attribute of a source entry point that names its `simulator:` section's schema.
SIMULATOR_SPEC_ATTR = "SIMULATOR_SPEC"


def simulator_spec_class(contract: DataContract) -> type[SimulatorSection]:
    """The class that validates the `simulator:` section: `SIMULATOR_SPEC` of the source's entry point module."""
    source = contract.source
    if not source.entry_point:
        raise ValueError(
            f"a `simulator:` section needs a source entry point whose module declares {SIMULATOR_SPEC_ATTR}, "
            f"but contract.source.kind {source.kind} names no `entry_point`: remove the `simulator:` section, "
            "or set contract.source.entry_point to the simulator's source function (package.module:function)"
        )
    module_name = source.entry_point.partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"contract.source.entry_point {source.entry_point!r}: cannot import {module_name!r} ({exc}), "
            "so the `simulator:` section cannot be checked; install the package or put it on the PYTHONPATH"
        ) from exc
    spec = getattr(module, SIMULATOR_SPEC_ATTR, None)
    if not (isinstance(spec, type) and issubclass(spec, SimulatorSection)):
        raise ValueError(
            f"the `simulator:` section has no schema: module {module_name!r} (contract.source.entry_point) "
            f"declares no {SIMULATOR_SPEC_ATTR} = <a subclass of training.config.SimulatorSection>; add one to "
            "that module, or remove the `simulator:` section if this source is not simulated"
        )
    return spec


class LabelMaturitySpec(_Strict):
    """Label maturity learned from the label feed (training/monitoring/label_delay.py).

    The monitor measures each delivered label's delay (report day - event day) and judges matured
    performance only on windows at least max(`windows.label_maturity_days`, the `quantile` of the
    delays reported in the last `recent_days`) old. A move of that quantile by `change_days` against
    the `baseline_days` before is the `label_delay_change` alert (never a retrain); while the learned
    maturity is above its value `settle_days` ago, matured performance is not judged.
    """

    learn: bool = False
    quantile: float = Field(default=0.98, ge=0.5, lt=1)
    recent_days: int = Field(default=14, ge=1)
    baseline_days: int = Field(default=28, ge=1)
    settle_days: int = Field(default=7, ge=1)
    change_days: float = Field(default=2.0, gt=0)
    min_labels: int = Field(default=30, ge=1)
    max_days: int = Field(default=60, ge=1)


class WindowSpec(_Strict):
    training_days: int = Field(gt=0)
    validation_days: int = Field(gt=0)
    holdout_days: int = Field(gt=0)
    # A label is final this many days after its event: the training set's rule and, with
    # `label_maturity.learn`, the floor (and fallback) of the maturity learned from the label feed.
    label_maturity_days: int = Field(ge=0)
    label_maturity: LabelMaturitySpec = LabelMaturitySpec()

    @model_validator(mode="after")
    def _maturity_cap(self) -> WindowSpec:
        if self.label_maturity.max_days < self.label_maturity_days:
            raise ValueError(
                f"windows.label_maturity.max_days ({self.label_maturity.max_days}) is below "
                f"windows.label_maturity_days ({self.label_maturity_days}), the floor it caps"
            )
        return self


class DriftAwareSpec(_Strict):
    """How a retrain triggered by a drift/performance breach uses the change point (the onset).

    The training window is anchored at the onset: the holdout is the newest `windows.holdout_days`
    after it, validation comes from the post-onset days before the holdout (a stratified random
    `validation_share` of their rows when fewer than `windows.validation_days` + 1 such days exist),
    and rows from before the onset are kept at `pre_onset_weight` (0 = left out). Measured on the
    card example's mechanism shift (benchmarks/healing_retrain.py): any pre-onset weight >= 0.05 cut
    the retrain's PR-AUC on later days by two thirds, so the default leaves them out.

    `min_post_onset_days` is the evidence a triggered retrain waits for (`training.monitoring.retrain_deferral`):
    with fewer matured days from the onset on (holdout included) the train_model run defers instead of
    training a weak model, and the retrain runs on the first data version that has them.
    """

    enabled: bool = True
    min_post_onset_days: int = Field(default=2, ge=2)  # fewer matured days after the onset: defer the retrain
    validation_share: float = Field(default=0.5, gt=0, lt=1)
    pre_onset_weight: float = Field(default=0.0, ge=0, le=1)
    # `constant`: every pre-onset row at `pre_onset_weight`; `regime_similarity`: each pre-onset row at
    # min(1, p_post / p_pre) of its (features, label) - a partial shift keeps what still happens
    # (`training.data.regime_weights`); `pre_onset_weight` is then not used.
    pre_onset_weighting: Literal["constant", "regime_similarity"] = "constant"


class TrainingSpec(_Strict):
    seed: int = 7
    cadence_days: int = Field(gt=0)
    min_training_days: int = Field(default=3, gt=0)  # fewer matured training days: skip, don't train
    search_budget: int = Field(gt=0, le=50)
    candidates: list[Literal["logistic_regression", "xgboost"]] = Field(min_length=1)
    drift_aware: DriftAwareSpec = DriftAwareSpec()
    # Bounded training memory: a train split above this many rows keeps every positive and a seeded
    # uniform sample of negatives weighted 1 / rate (`training.data.downsample`); validation and
    # holdout stay whole. None = off.
    max_train_rows: int | None = None
    # Where the XGBoost fits run (`training.model.distributed_fit`): `local` in this process; `dask`
    # through `xgboost.dask` on the Dask cluster at `dask_scheduler` (tcp://host:8786), or on a
    # cluster of `dask_local_workers` threads started in-process when it is null (a try-out).
    engine: Literal["local", "dask"] = "local"
    dask_scheduler: str | None = Field(default=None, pattern=r"^(tcp|tls|inproc|ucx)://.+")
    dask_local_workers: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _engine_fits_the_candidates(self) -> TrainingSpec:
        if self.engine == "local" and self.dask_scheduler is not None:
            raise ValueError(
                "training.dask_scheduler is set but training.engine is local: set engine: dask to train "
                "on that cluster, or remove dask_scheduler"
            )
        if self.engine == "dask" and "logistic_regression" in self.candidates:
            raise ValueError(
                "training.engine: dask fits XGBoost only (xgboost.dask); remove logistic_regression from "
                "training.candidates, or use engine: local"
            )
        return self

    @field_validator("max_train_rows")
    @classmethod
    def _positive_bound(cls, value: int | None) -> int | None:
        if value is not None and value < 2:
            raise ValueError(
                f"training.max_train_rows must be an integer >= 2 rows (or null for no bound), got {value}"
            )
        return value


class NonRegressionGate(_Strict):
    metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    margin: float = 0.0
    n_bootstrap: int = Field(ge=100)
    confidence: float = Field(gt=0.5, lt=1)


class SliceGate(_Strict):
    tolerance: float = Field(ge=0)
    min_rows: int = Field(ge=1)
    min_positives: int = Field(ge=1)


class CalibrationGate(_Strict):
    """Ceilings on the challenger's calibration error on the holdout (None = not gated)."""

    max_ece: float | None = Field(default=None, gt=0, lt=1)
    max_brier: float | None = Field(default=None, gt=0, lt=1)


class RecoveryPolicy(_Strict):
    """Replacing a collapsed champion (below `gates.floors` on the current holdout).

    When enabled, a challenger that beats such a champion significantly (the non-regression gate)
    no longer has to meet `gates.floors`, which a new, harder world may put out of anyone's reach:

    * `relative_to: baseline` - it must not be significantly worse than a simple baseline
      (`baseline_family`, fitted by `train` on the same days and scored on the same holdout):
      the upper end of the paired bootstrap interval of (challenger - baseline) must reach
      -`baseline_tolerance`. What is achievable on the new days sets the bar, not a fixed number.
      A challenger without baseline scores (trained before this setting) falls back to `floors`.
    * `relative_to: floors` - it must meet the lower absolute `floors` instead.

    Every other gate still applies, and the decision and the audit record say `recovery`.
    """

    enabled: bool = False
    relative_to: Literal["floors", "baseline"] = "floors"
    baseline_family: Literal["logistic_regression", "xgboost"] = "logistic_regression"
    baseline_tolerance: float = Field(default=0.0, ge=0, lt=1)
    floors: dict[str, float] = Field(default_factory=dict)
    # A collapsed champion can still be better on a small slice (positives of a kind it was trained on that have
    # become rare): `report` waives the slice gate in recovery - the regression is shown in the
    # report and the audit record, not blocking - `enforce` keeps it blocking.
    slice_gate: Literal["report", "enforce"] = "report"

    @property
    def needs_baseline(self) -> bool:
        """Whether training must fit and score the baseline for the recovery gate."""
        return self.enabled and self.relative_to == "baseline"


class GateSpec(_Strict):
    floors: dict[str, float]
    non_regression: NonRegressionGate
    slices: SliceGate
    max_latency_ms_per_1k_rows: float = Field(gt=0)
    max_model_size_mb: float = Field(gt=0)
    calibration: CalibrationGate = CalibrationGate()
    recovery: RecoveryPolicy = RecoveryPolicy()

    @model_validator(mode="after")
    def _recovery_floors(self) -> GateSpec:
        r = self.recovery
        if r.enabled and r.relative_to == "floors" and not r.floors:
            raise ValueError(
                "gates.recovery.enabled with relative_to: floors needs gates.recovery.floors (e.g. {pr_auc: 0.1}), "
                "or set relative_to: baseline"
            )
        unknown = set(r.floors) - set(self.floors)
        if unknown:
            raise ValueError(
                f"gates.recovery.floors names {sorted(unknown)}, which gates.floors does not: "
                "a recovery floor relaxes a normal floor"
            )
        return self


class FeatureDriftOverride(_Strict):
    method: str | None = None
    threshold: float | None = None
    # A drift the world is expected to show, with why: `warmup` (history-based features such as
    # is_new_device move while the warehouse fills up), `seasonal` (moves with the calendar). Without
    # a `threshold` the feature is still measured and reported but does not count towards the
    # drifted share; with one it counts at that relaxed threshold. The reason goes into every decision.
    expected_drift: Literal["warmup", "seasonal"] | None = None
    reason: str | None = None
    # A drift of this feature alone breaches the data-drift signal, whatever the drifted share:
    # for the feature a business reads directly (prices: log_amount), where one moving matters.
    critical: bool = False

    @model_validator(mode="after")
    def _reason_given(self) -> FeatureDriftOverride:
        if self.expected_drift and self.critical:
            raise ValueError("a feature cannot be both critical and expected to drift")
        if self.expected_drift and not (self.reason or "").strip():
            raise ValueError(
                f"expected_drift: {self.expected_drift} needs a `reason` (it is written into every decision)"
            )
        return self


class StormSpec(_Strict):
    """Caps on drift-triggered retrains, in data days (batch dates), recorded as decisions."""

    # at most this many triggers in any `period_days` window (reason `storm_cap` beyond it)
    max_triggers: int = Field(default=2, ge=1)
    period_days: int = Field(default=28, ge=1)
    # after a triggered retrain was rejected by the gates: no trigger for backoff_days x
    # backoff_factor^(consecutive rejections - 1) days after it (reason `backoff`)
    backoff_days: int = Field(default=7, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)


MonitoredSignal = Literal["data_drift", "prediction_drift", "performance"]


def _drift_signals() -> list[MonitoredSignal]:
    return ["data_drift", "prediction_drift"]


class CalendarEvent(_Strict):
    """A known event (holiday, campaign) whose drift is expected: `start`..`end` (inclusive batch dates).

    A breach of an `excuses` signal whose period overlaps the event is reported with `reason` in the
    decision and counts towards no trigger (training/monitoring/retrain_trigger.py).
    """

    name: str = Field(min_length=1)
    start: dt.date
    end: dt.date
    reason: str = Field(min_length=1)
    excuses: list[MonitoredSignal] = Field(default_factory=_drift_signals, min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> CalendarEvent:
        if self.end < self.start:
            raise ValueError(f"calendar event {self.name!r}: end {self.end} is before start {self.start}")
        if not self.reason.strip():
            raise ValueError(f"calendar event {self.name!r} needs a reason (it is written into every decision)")
        return self

    def covers(self, start: dt.date, end: dt.date) -> bool:
        """Does the event overlap the batch dates `start`..`end`?"""
        return start <= self.end and end >= self.start


class KOfN(_Strict):
    k: int = Field(ge=1)
    n: int = Field(ge=1)

    @model_validator(mode="after")
    def _k_le_n(self) -> KOfN:
        if self.k > self.n:
            raise ValueError(f"k_of_n.k ({self.k}) > n ({self.n})")
        return self


class DriftSpec(_Strict):
    default_numeric_method: str = "wasserstein"
    default_categorical_method: str = "jensenshannon"
    default_threshold: float = Field(gt=0)
    feature_overrides: dict[str, FeatureDriftOverride] = Field(default_factory=dict)
    drift_share_threshold: float = Field(gt=0, le=1)
    prediction_drift_threshold: float = Field(gt=0)
    performance_tolerance: float = Field(gt=0, lt=1)
    k_of_n: KOfN
    min_rows: int = Field(ge=1)
    min_positives: int = Field(ge=1)
    cooldown_days: int = Field(ge=0)
    # Features left out of the drifted share: calendar features (is_weekend) move with which days a
    # window covers, not with a change in the world, so a daily window would "drift" every day.
    exclude_features: list[str] = Field(default_factory=list)
    # Performance breaches only when the one-sided bootstrap upper bound of the window's primary
    # metric (at this level) is below the floor; a window holds too few positives to act on its value.
    performance_confidence: float = Field(default=0.9, gt=0.5, lt=1)
    performance_bootstrap: int = Field(default=200, ge=50)
    # The drift window: the last N scored days compared with the champion's frozen holdout.
    window_days: int = Field(default=1, ge=1)
    # The performance window: N days whose labels have matured (label_maturity_days back).
    performance_window_days: int = Field(default=3, ge=1)
    # Drift reference: the last `reference_days` (whole weeks) of the champion's training data.
    # `day_of_week`: a window is compared with the reference days of the same weekdays (weekly
    # seasonality cancels out); `whole_weeks`: with all the reference; `as_given`: the frame as passed.
    reference: Literal["day_of_week", "whole_weeks", "as_given"] = "day_of_week"
    reference_days: int = Field(default=14, ge=7)
    storm: StormSpec = StormSpec()
    # Known events (holidays, campaigns): expected drift, reported with their reason, never a trigger.
    calendar: list[CalendarEvent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _whole_weeks(self) -> DriftSpec:
        if self.reference != "as_given" and self.reference_days % 7:
            raise ValueError(
                f"drift.reference_days ({self.reference_days}) must be a multiple of 7 so the reference "
                "covers whole weeks (weekly seasonality)"
            )
        names = [e.name for e in self.calendar]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"drift.calendar names {dupes} more than once; give each event its own name")
        return self


FeedCheckPolicy = Literal["refuse", "warn", "off"]


class VolumeCheck(_Strict):
    """A day's event count against the median of the recent loaded days (training/data/feed_checks.py).

    A 40-row or half-size delivery is a truncated export, not a quiet day: it would load as complete.
    """

    policy: FeedCheckPolicy = "refuse"
    recent_days: int = Field(default=7, ge=1)  # the loaded days within this many days of the day
    min_history_days: int = Field(default=3, ge=1)  # fewer loaded days around it: not checked
    min_ratio: float = Field(default=0.6, ge=0)  # day / median below this: refused (warn: reported)
    max_ratio: float = Field(default=1.8, gt=0)  # ... above this

    @model_validator(mode="after")
    def _ordered(self) -> VolumeCheck:
        if self.max_ratio <= self.min_ratio:
            raise ValueError(f"volume.max_ratio ({self.max_ratio}) must exceed min_ratio ({self.min_ratio})")
        return self


class TimeShiftCheck(_Strict):
    """A whole feed moved in time (a time-zone or clock change at the source), seen in the day's
    hour-of-day profile against the recent loaded days' (training/data/feed_checks.py)."""

    policy: FeedCheckPolicy = "refuse"
    recent_days: int = Field(default=7, ge=1)
    min_history_days: int = Field(default=3, ge=1)
    min_rows: int = Field(default=2000, ge=24)  # fewer rows that day: its profile is too noisy to judge
    #: the profile moved by the best whole-hour shift must fit at least this much better than unmoved
    #: (1 - distance(best) / distance(unmoved)); a normal day's best shift is 0 or barely better
    min_improvement: float = Field(default=0.4, gt=0, lt=1)
    #: and the unmoved distance (total variation of the two hour profiles) must be at least this
    min_distance: float = Field(default=0.05, gt=0, lt=1)


class FeedChecksSpec(_Strict):
    """Checks on a feed as a whole, and on labels against their events (training/data/feed_checks.py)."""

    volume: VolumeCheck = VolumeCheck()
    time_shift: TimeShiftCheck = TimeShiftCheck()
    #: a label reported before its event's time: quarantine the row (held, not counted against the
    #: share) | allow it
    label_before_event: Literal["quarantine", "allow"] = "quarantine"
    #: label rows sharing a label id (or an event id the contract declares unique): hold those rows
    #: alone and load the rest (not counted against the share) | refuse: count them like any bad row
    label_duplicates: Literal["hold", "refuse"] = "hold"


class AdmissionSpec(_Strict):
    """The front door's policies (training/data/admission.py)."""

    #: a column the feed's suite does not know: reject the batch, or drop it (warn: with a warning)
    extra_columns: Literal["reject", "warn", "allow"] = "reject"
    #: rows that fail row-level checks are quarantined alone while they are at most this share of
    #: the batch; above it (or for any batch-level failure) the whole batch is quarantined
    max_rejected_row_share: float = Field(default=0.01, ge=0, le=1)
    #: strict: a day whose previous day was never published is refused (its point-in-time features
    #: would read a hole); allow_gaps: it is published, and the backfill of the missing day re-publishes
    #: the later days it changes (training/data/ingest.py: check_day_order, republish_later_days)
    day_order: Literal["strict", "allow_gaps"] = "strict"
    feed_checks: FeedChecksSpec = FeedChecksSpec()


class ScheduleSpec(_Strict):
    data_pipeline: str | None = "@daily"
    # Last data interval the schedule may create (None = open-ended). The demo sets it so that
    # unpausing data_pipeline never schedules "today" in a simulated past.
    data_pipeline_end_date: dt.date | None = None
    train_model: str | None = None
    batch_inference: str | None = None
    drift_monitor: str | None = None


PodStage = Literal["train", "evaluate", "infer", "drift"]
POD_STAGES: tuple[PodStage, ...] = ("train", "evaluate", "infer", "drift")


class PodResources(_Strict):
    """Kubernetes requests (and optional limits) of one stage's pod, in Kubernetes quantity syntax."""

    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="2Gi", pattern=r"^[0-9]+(\.[0-9]+)?([KMGTE]i?)?$")
    cpu_limit: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory_limit: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTE]i?)?$")


def _default_pod_resources() -> dict[PodStage, PodResources]:
    return {
        "train": PodResources(cpu="2", memory="8Gi"),
        "evaluate": PodResources(cpu="1", memory="4Gi"),
        "infer": PodResources(cpu="1", memory="4Gi"),
        "drift": PodResources(cpu="1", memory="4Gi"),
    }


class ExecutionSpec(_Strict):
    """Where the heavy stages run: in the Airflow worker (`local`) or as Kubernetes pods.

    In `kubernetes` mode each stage listed in `stages` becomes a KubernetesPodOperator running
    `python -m training <stage>` in `image`; the others stay in-process. Read when a DAG file is
    parsed, so a change takes effect at the next parse.
    """

    mode: Literal["local", "kubernetes"] = "local"
    stages: list[PodStage] = Field(default_factory=lambda: list(POD_STAGES))
    image: str = Field(default="closedloop:latest", min_length=1)
    namespace: str = Field(default="closedloop", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    service_account: str | None = None
    # A Secret whose keys become the pod's environment (passwords: CLOSEDLOOP_PG_PASSWORD, ...);
    # secrets are never copied from the scheduler's environment into the pod spec.
    env_from_secret: str | None = None
    # A PersistentVolumeClaim mounted at $CLOSEDLOOP_HOME: the pods share the state directory.
    state_volume_claim: str | None = None
    resources: dict[PodStage, PodResources] = Field(default_factory=_default_pod_resources)

    @model_validator(mode="after")
    def _unique_stages(self) -> ExecutionSpec:
        dupes = sorted({s for s in self.stages if self.stages.count(s) > 1})
        if dupes:
            raise ValueError(f"execution.stages lists {dupes} more than once")
        return self

    def in_pod(self, stage: PodStage) -> bool:
        """Whether `stage` runs as a Kubernetes pod under this configuration."""
        return self.mode == "kubernetes" and stage in self.stages

    def resources_for(self, stage: PodStage) -> PodResources:
        return self.resources.get(stage) or _default_pod_resources()[stage]


class ProjectSpec(_Strict):
    """Where the model's own files live: its dbt project and its expectation suites.

    Relative paths are taken from the repository root (so a config copied into a state directory,
    as the demo does, still finds them); absolute paths are used as given.
    """

    dbt_dir: Path
    expectations_dir: Path

    @property
    def dbt_path(self) -> Path:
        return self.dbt_dir if self.dbt_dir.is_absolute() else PROJECT_ROOT / self.dbt_dir

    @property
    def expectations_path(self) -> Path:
        return self.expectations_dir if self.expectations_dir.is_absolute() else PROJECT_ROOT / self.expectations_dir


#: How loud a message is; routes pick the severities they carry.
Severity = Literal["info", "warning", "critical"]
ALL_SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
#: The decisions and events the loop tells people about (`training.notify` builds their messages).
MessageKind = Literal[
    "drift_trigger", "deferral_waiting", "promotion", "rejection", "rollback", "day_refused", "dag_failure",
    "deadline_missed", "approval_requested",
]


class NotificationRoute(_Strict):
    """Where the messages of some severities (and optionally only some kinds) of this model go."""

    severity: list[Severity] = Field(default_factory=lambda: list(ALL_SEVERITIES), min_length=1)
    kinds: list[MessageKind] | None = None  # None: every kind
    email: list[str] = Field(default_factory=list)
    webhook: str | None = Field(default=None, pattern=r"^https?://")  # Slack-compatible or generic JSON

    @model_validator(mode="after")
    def _has_a_receiver(self) -> NotificationRoute:
        if not self.email and not self.webhook:
            raise ValueError("a notifications route needs `email: [...]` or `webhook: http(s)://...` (or both)")
        return self


class NotificationsSpec(_Strict):
    """Who is told about the loop's decisions, per model (each model's config has its own routes).

    No routes (the default): nothing is sent and nothing fails.
    """

    routes: list[NotificationRoute] = Field(default_factory=list)
    smtp_conn_id: str = "smtp_default"  # an Airflow connection (AIRFLOW_CONN_SMTP_DEFAULT=smtp://host:port)
    from_email: str = "closedloop@localhost"
    airflow_base_url: str | None = None  # links to runs; default: Airflow's [api] base_url
    attempts: int = Field(default=3, ge=1, le=10)  # per receiver, then logged as failed
    retry_wait_s: float = Field(default=1.0, ge=0, le=60)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    def routes_for(self, kind: str, severity: str) -> list[NotificationRoute]:
        return [r for r in self.routes if severity in r.severity and (r.kinds is None or kind in r.kinds)]


class DeadlinesSpec(_Strict):
    """Airflow Deadline Alerts on a day's data (None: no alert), told through `notifications:`.

    `published_within_hours`: a `data_pipeline` run must have published its day within this many hours
    of the day's start (its logical date): 30 = by 06:00 UTC the next day. `scored_within_hours`: a
    `batch_inference` run must have scored the day within this many hours of being queued (when the
    day's features arrived). A run that has not succeeded by then (still waiting or running, or failed:
    its deadline is only cleared by success) is a missed deadline: one `deadline_missed` message per
    run. Airflow's scheduler checks the deadlines, so they fire even when no task runs.
    """

    published_within_hours: float | None = Field(default=None, gt=0, le=24 * 14)
    scored_within_hours: float | None = Field(default=None, gt=0, le=24 * 14)


class ApprovalSpec(_Strict):
    """When a gate-approved promotion waits for a person (training/model/approval.py).

    `risky` asks only for a risky promotion: the first champion, the recovery policy, a changed
    input signature, or a challenger whose holdout scores moved away from the champion's by more
    than `score_shift_threshold` (the Kolmogorov-Smirnov statistic of the two score distributions,
    0..1); `always` asks for every promotion of this model; `never` asks for none. Every other
    promotion stays automatic. With no answer within `timeout_hours`, `on_timeout` is applied and
    the audit log says the default was taken.
    """

    mode: Literal["risky", "always", "never"] = "risky"
    score_shift_threshold: float = Field(default=0.25, gt=0, le=1)
    timeout_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    on_timeout: Literal["approve", "reject"] = "reject"


class ShadowRollback(_Strict):
    """Automatic rollback: a new champion significantly worse than the one it replaced, on the same
    matured live rows (the previous champion keeps scoring in shadow), is rolled back by the monitor."""

    enabled: bool = True
    #: who the audit log names as the actor of an automatic rollback
    actor: str = Field(default="scheduler:shadow_monitor", min_length=1)


class ShadowSpec(_Strict):
    """Shadow evaluation (training/monitoring/shadow.py): the same live rows scored by two versions,
    compared once their labels have matured (paired bootstrap CI on `model.primary_metric`, flip rate)."""

    enabled: bool = True
    #: the matured days compared: those of the last `max_window_days` that both versions scored
    max_window_days: int = Field(default=14, ge=1)
    #: fewer paired labelled rows / positives: the comparison is `insufficient` (recorded, never acted on)
    min_rows: int = Field(default=1000, ge=10)
    min_positives: int = Field(default=30, ge=2)
    n_bootstrap: int = Field(default=500, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    #: a challenger whose CI lies entirely above 0 in shadow, and whose gates failed only the holdout
    #: comparison with the champion (`non_regression`), is promoted by the monitor (audited as
    #: `promote`, trigger `shadow_evaluation`); False: the win is recorded and shown only
    promote_challenger: bool = False
    rollback: ShadowRollback = ShadowRollback()


class Config(_Strict):
    model: ModelSpec
    contract: DataContract
    project: ProjectSpec
    # Validated by the source entry point module's SIMULATOR_SPEC (`simulator_spec_class`); None without one.
    simulator: SerializeAsAny[SimulatorSection] | None = None
    windows: WindowSpec
    training: TrainingSpec
    gates: GateSpec
    drift: DriftSpec
    schedules: ScheduleSpec = ScheduleSpec()
    admission: AdmissionSpec = AdmissionSpec()
    execution: ExecutionSpec = ExecutionSpec()
    notifications: NotificationsSpec = NotificationsSpec()
    approval: ApprovalSpec = ApprovalSpec()
    deadlines: DeadlinesSpec = DeadlinesSpec()
    shadow: ShadowSpec = ShadowSpec()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        unknown = set(self.drift.feature_overrides) - set(self.model.features)
        if unknown:
            raise ValueError(f"drift.feature_overrides names unknown features: {sorted(unknown)}")
        unknown = set(self.drift.exclude_features) - set(self.model.features)
        if unknown:
            raise ValueError(f"drift.exclude_features names unknown features: {sorted(unknown)}")
        if self.contract.source.kind == "simulator" and self.simulator is None:
            raise ValueError("contract.source.kind is simulator but there is no `simulator:` section")
        if self.simulator is not None:
            self.simulator.check_config(self)
        if self.training.engine == "dask" and self.gates.recovery.needs_baseline and (
            self.gates.recovery.baseline_family != "xgboost"
        ):
            raise ValueError(
                "training.engine: dask fits XGBoost only, but the recovery gate's baseline is "
                f"{self.gates.recovery.baseline_family}: set gates.recovery.baseline_family: xgboost, or use engine: local"
            )
        return self

    @field_validator("simulator", mode="plain")
    @classmethod
    def _simulator_schema(cls, value: Any, info: ValidationInfo) -> SimulatorSection | None:
        """Validate the section with the schema its source declares (generic code knows no simulator's knobs)."""
        contract = info.data.get("contract")
        if value is None or contract is None:  # no section, or the contract's own error is reported
            return None
        spec = simulator_spec_class(contract)
        if isinstance(value, spec):
            return value
        try:
            return spec.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(
                f"simulator.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise ValueError(f"{problems} (schema {spec.__module__}.{spec.__qualname__})") from None

    @property
    def start_date(self) -> dt.date:
        """The first data interval: the DAGs' start date."""
        return self.contract.start_date


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        lines.append(f"  - {where}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration in {source}:\n{_format_errors(exc)}\n"
            "Fix these keys (see config/closedloop.yaml for the documented defaults)."
        ) from None


def models_dir() -> Path:
    """The folder of a several-model deployment's configs (`$CLOSEDLOOP_MODELS_DIR`, else config/models)."""
    return settings().models_dir or DEFAULT_MODELS_DIR


def model_names(folder: Path | None = None) -> list[str]:
    """The models a folder of configs declares: one `<model>.yaml` each, sorted."""
    return sorted(p.stem for p in (folder or models_dir()).glob("*.yaml"))


def model_config_path(model: str) -> Path:
    """The config file of `model` in the deployment's models folder; a clear error if there is none."""
    path = models_dir() / f"{model}.yaml"
    if not path.is_file():
        known = ", ".join(model_names()) or "none"
        raise ConfigError(
            f"no config for model {model!r}: {path} does not exist (models in {models_dir()}: {known}); "
            f"add {model}.yaml there or fix CLOSEDLOOP_MODEL / --model"
        )
    return path


def active_config_path() -> Path:
    """The config this process acts on: its model's file in a several-model deployment, else
    `$CLOSEDLOOP_CONFIG`, else config/closedloop.yaml."""
    model = settings().model
    if model:
        return model_config_path(model)
    return settings().config or DEFAULT_CONFIG_PATH


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the YAML config (see `active_config_path` for the default)."""
    cfg_path = Path(path or active_config_path())
    if not cfg_path.is_file():
        raise ConfigError(f"config file not found: {cfg_path} (set {CONFIG_ENV_VAR} or pass a path)")
    try:
        # libyaml's loader when built in: this runs in every DAG-parse child
        data = yaml.load(cfg_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {cfg_path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {cfg_path} must hold a mapping at the top level")
    cfg = parse_config(data, str(cfg_path))
    if cfg_path.parent.resolve() == models_dir().resolve() and cfg.model.name != cfg_path.stem:
        raise ConfigError(
            f"{cfg_path} declares model.name {cfg.model.name!r}: in a models folder the file is named "
            f"after its model (rename it to {cfg.model.name}.yaml, or fix model.name)"
        )
    return cfg


def with_overrides(cfg: Config, **sections: dict[str, Any]) -> Config:
    """A copy of `cfg` with some sections deep-updated (tests and the demo use this)."""
    data = cfg.model_dump(mode="json")
    for section, values in sections.items():
        data[section] = _deep_merge(data[section], values)
    return parse_config(data, "overrides")


def _deep_merge(base: Any, update: Any) -> Any:
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _deep_merge(base.get(key), value) if key in base else value
        return merged
    return update


@lru_cache(maxsize=1)
def default_config() -> Config:
    return load_config()
