"""The Markdown decision report and model card of a gate decision, rendered from the templates.

The wording and layout live in `templates/` (Jinja2, shipped in the package); this module turns a
`GateDecision` and a free-form `context` into what the templates show. Table cells go through the
`cell` filter, which formats numbers and escapes `|` so a value cannot break a Markdown table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
import numpy as np

from training.model.gates import (
    POLICY_CHAMPION_CHALLENGER,
    POLICY_FIRST_CHAMPION,
    POLICY_RECOVERY,
    GateDecision,
)

_VERDICT_MARK = {"pass": "✅ pass", "fail": "❌ fail", "skipped": "⏭ skipped", "waived": "⚠️ waived"}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "—" if math.isnan(value) else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _field(context: Mapping[str, Any], key: str, default: str = "unknown") -> str:
    """`context[key]` as text; `default` when it is absent, None or empty."""
    value = context.get(key)
    return default if value in (None, "") else str(value)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("training.model", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML: cells are escaped by `cell`
    )
    env.filters.update(cell=_cell, field=_field, verdict=_VERDICT_MARK.__getitem__)
    env.globals.update(
        POLICY_FIRST_CHAMPION=POLICY_FIRST_CHAMPION,
        POLICY_CHAMPION_CHALLENGER=POLICY_CHAMPION_CHALLENGER,
        POLICY_RECOVERY=POLICY_RECOVERY,
    )
    return env


def _slices(decision: GateDecision) -> list[dict[str, Any]]:
    return decision.slice_metrics.to_dict(orient="records")


def render_report(decision: GateDecision, context: Mapping[str, Any]) -> str:
    """The Markdown decision report stored with the challenger and shown in the UI.

    `context` keys used (all optional, shown as "unknown" when absent): `model_name`,
    `challenger_version`, `champion_version`, `holdout_hash`, `data_version`, `trigger_reason`,
    `evaluated_at`, `run_id`, `training_method`, `training_method_detail` (how the windows were cut,
    e.g. anchored at a detected onset), `decision_threshold`, `calibration`.
    """
    template = _environment().get_template("decision_report.md.j2")
    return template.render(decision=decision, context=context, slices=_slices(decision))


def render_model_card(
    model_name: str, version: str | int, decision: GateDecision, context: Mapping[str, Any]
) -> str:
    """A Markdown model card for one model version.

    `context` keys used (optional): `intended_use`, `training_window_start`, `training_window_end`,
    `data_version`, `holdout_hash`, `label_maturity_days`, `simulated_data` (default True: the
    demo is trained on the project's simulator), `decision_threshold`, `trigger_reason`, and the
    contract's words: `positive_label` (what a positive is called), `positive_decision`, `events`
    and `labels` (the feeds' names).
    """
    slices = _slices(decision)
    under_populated = [s for s in slices if str(s["why"]).startswith("under-populated")]
    template = _environment().get_template("model_card.md.j2")
    return template.render(
        model_name=model_name,
        version=version,
        decision=decision,
        context=context,
        slices=slices,
        under_populated=under_populated,
    )
