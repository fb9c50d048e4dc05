"""Registry: audited alias moves, rollback from the audit log, force-promote with a reason,
idempotent re-runs, lineage on every version, and the CLI verbs — real MLflow and real models."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from training import cli
from training.config import with_overrides
from training.model import registry, tracking
from training.model.evaluate import evaluate_challenger
from training.model.train import TrainRequest, train_model
from training.storage import versioning

RETRAIN = TrainRequest(reason="drift", airflow_dag_id="train_model", airflow_run_id="triggered__drift_1")


@pytest.fixture(scope="module")
def two_champions(module_state, train_cfg, training_frame, synth, train_eval):
    """v1 (weak) first-promoted, then v2 (full data) promoted over it by the gates."""
    cut = synth.holdout_start(training_frame, train_cfg)
    weak = synth.publish(
        module_state, synth.permute(training_frame, ["is_new_device", "is_new_country"], cut), "w"
    )
    full = synth.publish(module_state, training_frame, "full")
    v1, e1 = train_eval(module_state, train_cfg, weak, "first")
    trained = train_model(module_state, train_cfg, TrainRequest(**{**RETRAIN.__dict__, "data_version": full}))
    e2 = evaluate_challenger(module_state, train_cfg, airflow_run_id=RETRAIN.airflow_run_id)
    assert (e1.action, e2.action) == ("first_promote", "promote"), (e1.failed_gates, e2.failed_gates)
    return v1.version, trained.version, full


def _champion(paths, cfg) -> str:
    return registry.current_champion(paths, cfg)


def test_rerunning_train_and_evaluate_for_the_same_interval_is_a_noop(two_champions, module_state, train_cfg):
    v1, v2, full = two_champions
    mc = tracking.client(module_state)
    versions_before = mc.search_model_versions(f"name = '{train_cfg.model.name}'")
    audit_before = registry.audit_log(module_state, train_cfg.model.name, limit=1000)
    again = train_model(module_state, train_cfg, TrainRequest(**{**RETRAIN.__dict__, "data_version": full}))
    decision = evaluate_challenger(module_state, train_cfg, version=again.version)
    assert again.reused and again.version == v2
    assert decision.reused and decision.action == "promote"
    assert len(mc.search_model_versions(f"name = '{train_cfg.model.name}'")) == len(versions_before)
    assert registry.audit_log(module_state, train_cfg.model.name, limit=1000) == audit_before
    assert _champion(module_state, train_cfg) == v2
    # and the promotion itself, repeated with its key, returns the recorded row
    key = audit_before[0]["idempotency_key"]
    rec = registry.promote(module_state, train_cfg, v2, reason="retry", idempotency_key=key)
    assert rec.id == audit_before[0]["id"]
    # and so does promoting the current champion under another key (e.g. `python -m training promote`)
    rec = registry.promote(module_state, train_cfg, v2, reason="cli", idempotency_key="cli-promote:v2")
    assert rec.id == audit_before[0]["id"]
    assert registry.audit_log(module_state, train_cfg.model.name, limit=1000) == audit_before


def test_every_registered_version_carries_lineage_tags(two_champions, module_state, train_cfg):
    mc = tracking.client(module_state)
    versions = mc.search_model_versions(f"name = '{train_cfg.model.name}'")
    assert len(versions) >= 2
    for mv in versions:
        missing = [t for t in tracking.LINEAGE_TAGS if not mv.tags.get(t)]
        assert not missing, f"version {mv.version} lacks {missing}"
        restored = pq.read_table(versioning.open_version(module_state, mv.tags["data_version"]))
        assert restored.num_rows == versioning.load_manifest(module_state, mv.tags["data_version"]).rows > 0
        assert (module_state.holdouts / f"{mv.tags['holdout_hash']}.parquet").is_file()
        assert mv.tags["dbt_invocation_id"].startswith("dbt-")
    v2 = mc.get_model_version(train_cfg.model.name, two_champions[1])
    assert v2.tags["airflow_run_id"] == RETRAIN.airflow_run_id and v2.tags["trigger_reason"] == "drift"


def test_audit_log_records_each_move_newest_first(two_champions, module_state, train_cfg):
    v1, v2, _ = two_champions
    rows = registry.audit_log(module_state, train_cfg.model.name, limit=2)
    assert [(r["action"], r["from_version"], r["to_version"]) for r in rows] == [
        ("promote", v1, v2),
        ("first_promote", None, v1),
    ]
    assert rows[0]["airflow_run_id"] == RETRAIN.airflow_run_id
    assert rows[0]["report_uri"].endswith("decision/decision_report.md")
    assert rows[0]["metrics"]["challenger_pr_auc"] > rows[0]["metrics"]["champion_pr_auc"]
    assert len({r["idempotency_key"] for r in rows}) == 2


def test_a_promotion_gated_against_an_older_champion_is_refused(two_champions, module_state, train_cfg):
    v1, v2, _ = two_champions
    assert _champion(module_state, train_cfg) == v2
    before = registry.audit_log(module_state, train_cfg.model.name, limit=1000)
    # v1 passed its gates when there was no champion; v2 has taken over since.
    with pytest.raises(registry.ChampionMoved, match="was gated against no champion.*evaluate"):
        registry.promote(module_state, train_cfg, v1, reason="stale", idempotency_key="stale", gated_against=None)
    assert _champion(module_state, train_cfg) == v2
    assert registry.audit_log(module_state, train_cfg.model.name, limit=1000) == before


def test_model_status_reports_champion_lineage_and_metrics(two_champions, module_state, train_cfg):
    status = registry.model_status(module_state, train_cfg)
    champion = status["champion"]
    assert champion["version"] == _champion(module_state, train_cfg)
    assert champion["lineage"]["data_version"] and champion["lineage"]["holdout_hash"]
    assert champion["holdout_metrics"]["pr_auc"] > 0
    assert status["challenger"]["version"] == two_champions[1]
    empty = registry.model_status(module_state, with_overrides(train_cfg, model={"name": "nobody"}))
    assert empty["champion"] is None and empty["challenger"] is None


def test_force_promote_without_reason_fails_clearly(two_champions, module_state, train_cfg):
    v1, _, _ = two_champions
    before = registry.audit_log(module_state, train_cfg.model.name, limit=1000)
    champion = _champion(module_state, train_cfg)
    for reason in ("", "   ", None):
        with pytest.raises(registry.MissingReasonError, match="force-promote needs a non-empty reason"):
            registry.force_promote(module_state, train_cfg, v1, reason)  # type: ignore[arg-type]
    assert _champion(module_state, train_cfg) == champion
    assert registry.audit_log(module_state, train_cfg.model.name, limit=1000) == before


def test_rollback_restores_previous_champion_and_is_audited(two_champions, module_state, train_cfg):
    v1, v2, _ = two_champions
    assert _champion(module_state, train_cfg) == v2
    rec = registry.rollback(module_state, train_cfg, "live precision collapsed", airflow_run_id="manual__rb1")
    assert (rec.action, rec.from_version, rec.to_version) == ("rollback", v2, v1)
    assert rec.reason == "live precision collapsed"
    assert _champion(module_state, train_cfg) == v1
    mc = tracking.client(module_state)
    assert mc.get_model_version(train_cfg.model.name, v2).tags["rolled_back"] == "live precision collapsed"
    # the same rollback request again (Airflow retry) is a no-op
    again = registry.rollback(
        module_state, train_cfg, "live precision collapsed", airflow_run_id="manual__rb1"
    )
    assert again.id == rec.id and _champion(module_state, train_cfg) == v1
    # v1 was the first champion: nothing earlier to restore
    with pytest.raises(registry.NothingToRollBack, match="no earlier champion"):
        registry.rollback(module_state, train_cfg, "again")
    with pytest.raises(registry.MissingReasonError):
        registry.rollback(module_state, train_cfg, " ")


def test_force_promote_with_reason_is_audited_and_rollback_follows_the_log(
    two_champions, module_state, train_cfg
):
    v1, v2, _ = two_champions
    target = v2 if _champion(module_state, train_cfg) == v1 else v1
    other = v1 if target == v2 else v2
    rec = registry.force_promote(module_state, train_cfg, target, "incident 42: hotfix model")
    assert (rec.action, rec.from_version, rec.to_version) == ("force_promote", other, target)
    assert _champion(module_state, train_cfg) == target
    with pytest.raises(registry.RegistryError, match="already the champion"):
        registry.force_promote(module_state, train_cfg, target, "twice")
    back = registry.rollback(module_state, train_cfg, "hotfix reverted")
    assert (back.from_version, back.to_version) == (target, other)
    assert _champion(module_state, train_cfg) == other


# --- the CLI verbs (in-process; each is a thin call into the modules above) ---


@pytest.fixture(scope="module")
def cli_args(module_state, train_cfg, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "closedloop.yaml"
    path.write_text(yaml.safe_dump(train_cfg.model_dump(mode="json")))
    return ["--config", str(path), "--home", str(module_state.root)]


def test_cli_force_promote_requires_a_reason(two_champions, cli_args, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*cli_args, "force-promote", "--version", two_champions[0]])
    assert exc.value.code == 2
    assert "--reason" in capsys.readouterr().err
    assert cli.main([*cli_args, "force-promote", "--version", two_champions[0], "--reason", " "]) == 1
    assert "non-empty reason" in capsys.readouterr().err


def test_cli_force_promote_rollback_and_audit(two_champions, module_state, train_cfg, cli_args, capsys):
    v1, v2, _ = two_champions
    before = _champion(module_state, train_cfg)
    target = v1 if before == v2 else v2
    assert cli.main([*cli_args, "force-promote", "--version", target, "--reason", "cli drill"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "force_promote"
    assert _champion(module_state, train_cfg) == target
    assert cli.main([*cli_args, "rollback", "--reason", "cli drill over"]) == 0
    rolled = json.loads(capsys.readouterr().out)
    assert (rolled["action"], rolled["from_version"], rolled["to_version"]) == ("rollback", target, before)
    assert _champion(module_state, train_cfg) == before
    assert cli.main([*cli_args, "audit", "--limit", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in rows] == ["rollback", "force_promote"]
    assert [r["reason"] for r in rows] == ["cli drill over", "cli drill"]
    assert cli.main([*cli_args, "status"]) == 0
    assert json.loads(capsys.readouterr().out)["champion"]["version"] == before


def test_cli_registry_of_subcommands_is_extensible():
    names = set(cli.COMMANDS)
    assert {"train", "evaluate", "promote", "rollback", "force-promote", "infer", "audit", "status"} <= names

    @cli.command("hello-test", "a subcommand added by one function", cli.arg("--who", default="x"))
    def _hello(ctx, ns):
        return {"who": ns.who, "model": ctx.cfg.model.name}

    try:
        parser = cli.build_parser()
        assert parser.parse_args(["hello-test", "--who", "y"]).who == "y"
        with pytest.raises(ValueError, match="registered twice"):
            cli.command("hello-test", "dup")(_hello)
    finally:
        cli.COMMANDS.pop("hello-test")
