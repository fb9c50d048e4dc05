"""`python -m training reproduce <version>`: a version trained here is retrained from its lineage and
its holdout metrics come back; nothing in the registry moves; an incomplete lineage is one error line."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from training import cli
from training.model import tracking
from training.model.train import LINEAGE_ARTIFACT, TrainRequest, train_model
from training.storage import versioning


@pytest.fixture(scope="module")
def trained(module_state, train_cfg, training_frame, synth):
    data_version = synth.publish(module_state, training_frame, "full")
    return train_model(module_state, train_cfg, TrainRequest(reason="manual", data_version=data_version))


def _registry(paths, name):
    """Every version of the model with its aliases, and the model's alias map."""
    mc = tracking.client(paths)
    versions = {
        str(mv.version): (mv.run_id, sorted(mv.aliases), dict(mv.tags))
        for mv in mc.search_model_versions(f"name = '{name}'")
    }
    return versions, dict(mc.get_registered_model(name).aliases)


def _cli(paths, capsys, *args):
    capsys.readouterr()
    code = cli.main(["--home", str(paths.root), "reproduce", *args])
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.startswith("error:")]


def test_a_trained_version_reproduces_and_the_registry_is_unchanged(module_state, train_cfg, trained, capsys):
    mc = tracking.client(module_state)
    recorded = mc.get_run(trained.run_id)
    assert LINEAGE_ARTIFACT in [f.path for f in mc.list_artifacts(trained.run_id, "lineage")]
    assert recorded.data.tags["git_commit"]
    before = _registry(module_state, train_cfg.model.name)

    code, out, errors = _cli(module_state, capsys, trained.version)

    result = json.loads(out)
    assert (code, errors) == (0, []), result
    assert result["reproduced"] is True and result["verdict"].startswith("reproduced")
    assert result["compared_metrics"] == ["pr_auc", "roc_auc"]
    for name in result["compared_metrics"]:
        assert result["recorded_metrics"][name] == pytest.approx(trained.holdout_metrics[name], abs=1e-12)
        assert abs(result["differences"][name]) <= result["tolerance"] == 1e-6
    assert result["holdout_hash_now"] == result["holdout_hash_recorded"] == trained.holdout_hash
    assert (result["family"], result["data_version"]) == (trained.family, trained.data_version)
    assert result["config_source"].startswith("recorded with the run")
    assert _registry(module_state, train_cfg.model.name) == before  # no version, no alias, no tag moved
    repro = mc.get_run(result["reproduction_run_id"])
    assert repro.data.tags["reproduction_of_version"] == trained.version
    assert repro.info.experiment_id != recorded.info.experiment_id


def test_an_unknown_version_is_one_error_line_with_exit_2(module_state, trained, capsys):
    code, out, errors = _cli(module_state, capsys, "999")
    assert (code, out) == (2, "")
    assert len(errors) == 1 and "has no version 999" in errors[0], errors


def test_a_data_version_that_cannot_be_restored_names_it_and_the_fix(module_state, trained, capsys, tmp_path):
    # the version's manifest and partitions gone from the cache, the remote and the opened views
    gone = (module_state.data / ".dvc" / "cache", module_state.dvc_remote, versioning._versions_dir(module_state))
    kept = {p: tmp_path / f"kept-{i}" for i, p in enumerate(gone) if p.exists()}
    for src, dst in kept.items():
        shutil.move(src, dst)
    try:
        code, out, errors = _cli(module_state, capsys, trained.version)
    finally:
        for src, dst in kept.items():
            shutil.move(dst, src)
    assert (code, out) == (2, "")
    assert len(errors) == 1, errors
    assert trained.data_version in errors[0] and "re-run data_pipeline" in errors[0]


def test_metrics_that_do_not_come_back_exit_1_with_the_difference(module_state, trained, capsys):
    mc = tracking.client(module_state)
    mc.log_metric(trained.run_id, "holdout_roc_auc", trained.holdout_metrics["roc_auc"] - 0.01)  # as if logged so
    code, out, errors = _cli(module_state, capsys, trained.version)
    result = json.loads(out)
    assert (code, errors, result["reproduced"]) == (1, [], False)
    assert result["differences"]["roc_auc"] == pytest.approx(0.01, abs=1e-6)
    assert "roc_auc differs by" in result["verdict"]


def test_a_version_whose_run_recorded_no_params_is_refused(module_state, train_cfg, trained, capsys):
    import mlflow

    mc = tracking.client(module_state)
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(module_state, train_cfg)) as run:
        mlflow.set_tag("note", "registered by hand, not by train_model")
    mv = mc.create_model_version(train_cfg.model.name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    code, out, errors = _cli(module_state, capsys, str(mv.version))
    assert (code, out) == (2, "")
    assert len(errors) == 1 and "lacks family, seed" in errors[0], errors


def test_a_drift_anchored_weighted_version_reproduces_from_its_recorded_config(
    module_state, train_cfg, trained, training_frame
):
    """The evidence's onset re-cuts the same windows, and the run's config (pre-onset weight 0.2, not the
    current config's 0.0) refits the same model."""
    from training.config import with_overrides
    from training.model.reproduce import reproduce_version

    onset = max(training_frame["batch_date"]) - dt.timedelta(days=11)
    weighted = with_overrides(train_cfg, training={"drift_aware": {"pre_onset_weight": 0.2}})
    anchored = train_model(module_state, weighted, TrainRequest(
        reason="drift_monitor:performance", evidence={"onset_window_start": onset.isoformat()},
        data_version=trained.data_version, idempotency_key="reproduce-anchored",
    ))
    assert anchored.training_method == "onset_anchored"
    result = reproduce_version(module_state, train_cfg, anchored.version)  # the current config differs
    assert result.reproduced, result.verdict
    assert result.holdout_hash_now == anchored.holdout_hash  # the newest days, as for `trained`
    assert anchored.holdout_metrics["pr_auc"] != trained.holdout_metrics["pr_auc"]  # other rows and weights
    assert result.reproduced_metrics["pr_auc"] == pytest.approx(anchored.holdout_metrics["pr_auc"], abs=1e-6)
