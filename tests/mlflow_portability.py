"""What MLflow holds that names one machine's files: for the portability tests (embedded and server).

Tags and descriptions must link run artifacts by `runs:/` URIs and paths under the state directory
relative to it, so a state directory or an MLflow server can move (issue 9).
"""

from __future__ import annotations

from typing import Any

from training.paths import StatePaths


def _offending(text: str | None, paths: StatePaths) -> bool:
    value = text or ""
    return "file://" in value or str(paths.root) in value


def local_references(mc: Any, model_name: str, paths: StatePaths) -> list[tuple[str, str, str]]:
    """(where, key, value) of every tag / description of the model, its versions and the runs of its
    experiments (`closedloop/<model>` and below) that holds `file://` or the state directory's path."""
    found: list[tuple[str, str, str]] = []
    model = mc.get_registered_model(model_name)
    for key, value in {**model.tags, "<description>": model.description}.items():
        if _offending(value, paths):
            found.append((f"model {model_name}", key, value))
    versions = mc.search_model_versions(f"name = '{model_name}'")
    assert versions, f"no versions of {model_name}: nothing was checked"
    for mv in versions:
        for key, value in {**mv.tags, "<description>": mv.description}.items():
            if _offending(value, paths):
                found.append((f"{model_name} v{mv.version}", key, value))
    experiments = [
        e for e in mc.search_experiments() if e.name == f"closedloop/{model_name}"
        or e.name.startswith(f"closedloop/{model_name}/")
    ]
    runs = mc.search_runs([e.experiment_id for e in experiments], max_results=1000)
    assert runs, f"no runs in the experiments of {model_name}: nothing was checked"
    for run in runs:
        for key, value in {**run.data.tags, **{f"param:{k}": v for k, v in run.data.params.items()}}.items():
            if _offending(value, paths):
                found.append((f"run {run.info.run_id}", key, value))
    return found
