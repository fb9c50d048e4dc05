"""Shadow evaluation and automatic rollback with real MLflow models, a real DuckDB warehouse and real
matured labels (a published data version): one story in module order.

1. weak champion (a feature's signal broken in training), full-data challenger rejected by the
   holdout gates only on `non_regression` (a margin no model meets): in shadow on the same live rows
   the challenger is significantly better (CI above 0), recorded; with `promote_challenger` promoted.
2. the weak version forced back in as champion (a worse new champion): the previous champion scores
   in shadow, the new one is significantly worse, the monitor rolls back (audited, notified to a real
   local webhook) and the gates refuse to promote the weak version again.
3. a champion within noise of the previous one (same data, another seed) is kept.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from tests.webhook_receiver import running_webhook
from training.config import with_overrides
from training.model import registry, tracking
from training.model.evaluate import evaluate_challenger
from training.model.train import TrainRequest, train_model
from training.monitoring import shadow
from training.serving.inference import PREVIOUS_CHAMPION, score_interval

pytestmark = pytest.mark.timeout(600)
SHADOW = {"min_rows": 500, "min_positives": 20, "n_bootstrap": 300, "confidence": 0.95}


@pytest.fixture(scope="module")
def webhook():
    with running_webhook() as server:
        yield server


@pytest.fixture(scope="module")
def cfg(train_cfg, webhook):
    return with_overrides(
        train_cfg, shadow=SHADOW,
        windows={"label_maturity": {"learn": False}},  # the fixed maturity: no raw label feed here
        notifications={"routes": [{"webhook": f"http://127.0.0.1:{webhook.server_port}/hook"}],
                       "retry_wait_s": 0.05, "timeout_s": 3},
    )


@pytest.fixture(scope="module")
def world(module_state, cfg, training_frame, synth):
    """Published features of the holdout days, a weak and a full data version (labels of every day)."""
    cut = synth.holdout_start(training_frame, cfg)
    weak = synth.publish(module_state, synth.permute(training_frame, ["is_new_device", "is_new_country"], cut), "w")
    full = synth.publish(module_state, training_frame, "full")
    days = sorted(d for d in set(training_frame["batch_date"]) if d >= cut)
    from training.storage import warehouse

    frame = training_frame[training_frame["batch_date"] >= cut].drop(columns=["is_fraud", "label_reported_at"])
    with warehouse.connect(module_state) as con:
        con.execute("create schema if not exists published")
        con.con.register("f", frame)
        con.execute("create or replace table published.transaction_features as select * from f")
    as_of = days[-1] + dt.timedelta(days=cfg.windows.label_maturity_days)
    return {"weak": weak, "full": full, "days": days, "as_of": as_of}


def _score(paths, cfg, days):
    return [score_interval(paths, cfg, d)["versions"] for d in days]


@pytest.fixture(scope="module")
def versions(module_state, cfg, world, train_eval):
    weak, decision = train_eval(module_state, cfg, world["weak"], "first")
    assert decision.action == "first_promote"
    full = train_model(module_state, cfg, TrainRequest(reason="shadow", data_version=world["full"]))
    unreachable = with_overrides(cfg, gates={"non_regression": {"margin": 0.5}})
    rejected = evaluate_challenger(module_state, unreachable, version=full.version)
    assert rejected.action == "reject" and rejected.failed_gates == ["non_regression"]
    return {"weak": weak.version, "full": full.version}


def test_challenger_significantly_better_in_shadow_is_recorded(module_state, cfg, world, versions):
    scored = _score(module_state, cfg, world["days"])
    assert scored[0] == {"champion": versions["weak"], "challenger": versions["full"]}  # no previous champion yet
    result = shadow.judge(module_state, cfg, world["as_of"])
    (cmp,) = result["comparisons"]
    print("\nshadow evaluation:", json.dumps(cmp, indent=1))
    assert (cmp["kind"], cmp["candidate_version"], cmp["baseline_version"]) == ("challenger", versions["full"], versions["weak"])
    assert cmp["verdict"] == "better" and cmp["lower"] > 0 and cmp["upper"] > cmp["lower"]
    assert cmp["n_rows"] == 1000 * len(world["days"]) and cmp["n_positives"] >= 100
    assert (cmp["window_start"], cmp["window_end"]) == (world["days"][0].isoformat(), world["days"][-1].isoformat())
    assert 0 < cmp["flip_rate"] < 1 and cmp["candidate_value"] > cmp["baseline_value"]
    assert cmp["action"] is None and "promotion evidence" in cmp["action_why"]
    assert result["promotion"] is None and registry.current_champion(module_state, cfg) == versions["weak"]
    # one ledger row per model / window / version pair: judging the same window again replaces it
    shadow.judge(module_state, cfg, world["as_of"])
    rows = shadow.history(module_state, cfg.model.name)
    assert len(rows) == 1 and rows[0]["verdict"] == "better" and rows[0]["lower"] == pytest.approx(cmp["lower"])


def test_too_few_matured_rows_are_insufficient_and_never_acted_on(module_state, cfg, world, versions):
    strict = with_overrides(cfg, shadow={"min_rows": 100_000, "promote_challenger": True})
    (cmp,) = shadow.judge(module_state, strict, world["as_of"])["comparisons"]
    assert cmp["verdict"] == "insufficient" and "min_rows 100000" in cmp["why"] and cmp["action"] is None
    # labels not matured yet: the last scored day is within the maturity of as_of - nothing judged
    early = shadow.judge(module_state, cfg, world["days"][0])
    assert early["comparisons"] == [] and registry.current_champion(module_state, cfg) == versions["weak"]


def test_shadow_win_promotes_a_challenger_that_failed_only_non_regression(module_state, cfg, world, versions):
    eager = with_overrides(cfg, shadow={"promote_challenger": True})
    result = shadow.judge(module_state, eager, world["as_of"], actor="dag:drift_monitor")
    assert result["promotion"]["to_version"] == versions["full"]
    assert registry.current_champion(module_state, cfg) == versions["full"]
    row = registry.audit_log(module_state, cfg.model.name, limit=1)[0]
    assert (row["action"], row["trigger_reason"], row["actor"]) == ("promote", "shadow_evaluation", "dag:drift_monitor")
    assert row["metrics"]["shadow_lower"] > 0 and row["reason"].startswith("shadow evaluation:")
    assert result["comparisons"][0]["action"] == "promote"


def test_worse_new_champion_is_rolled_back_notified_and_not_repromoted(module_state, cfg, world, versions, webhook):
    from closedloop.notifiers import deliver

    from training import notify

    # a person pushes the weak version back in: the new champion is worse than the one it replaced
    registry.force_promote(module_state, cfg, versions["weak"], "test: a worse model pushed by hand")
    assert registry.previous_champion(module_state, cfg) == versions["full"]
    scored = _score(module_state, cfg, world["days"])
    assert scored[0][PREVIOUS_CHAMPION] == versions["full"] and scored[0]["champion"] == versions["weak"]
    result = shadow.judge(module_state, cfg, world["as_of"], airflow_run_id="scheduled__shadow1")
    watch = result["comparisons"][0]
    print("\nrollback evidence:", json.dumps(watch, indent=1))
    assert watch["kind"] == "rollback_watch" and watch["verdict"] == "worse" and watch["upper"] < 0
    assert len(result["comparisons"]) == 1  # the challenger waits for the next run against the restored champion
    assert registry.current_champion(module_state, cfg) == versions["full"]
    row = registry.audit_log(module_state, cfg.model.name, limit=1)[0]
    assert (row["action"], row["from_version"], row["to_version"]) == ("rollback", versions["weak"], versions["full"])
    assert row["trigger_reason"].startswith("shadow_rollback: ") and row["actor"] == "scheduler:shadow_monitor"
    assert row["metrics"]["shadow_upper"] < 0 and row["airflow_run_id"] == "scheduled__shadow1"
    assert shadow.history(module_state, cfg.model.name)[0]["action"] == "rollback"
    # notified through the loop's notification path, once per decision
    assert notify.shadow_decision(cfg, {**result, "rollback": None}) is None  # nothing moved: nothing told
    message = notify.shadow_decision(cfg, result, run_url="http://airflow.test/run")  # drift_monitor's callback
    assert [o["status"] for o in deliver(module_state, cfg, message)] == ["sent"]
    assert [o["status"] for o in deliver(module_state, cfg, message)] == ["already_sent"]
    (hook,) = [h for h in webhook.received if h["closedloop"]["kind"] == "rollback"]
    assert hook["closedloop"]["severity"] == "critical" and "significantly worse" in hook["closedloop"]["body"]
    assert hook["closedloop"]["evidence"]["upper"] < 0 and hook["closedloop"]["evidence"]["actor"] == "scheduler:shadow_monitor"
    print("rollback webhook as received:", json.dumps(hook["closedloop"], indent=1))
    # not re-promoted without new evidence: the gate-based promotion refuses it, saying why
    with pytest.raises(registry.RollbackBlocked, match="rolled back automatically.*new evidence"):
        registry.promote(module_state, cfg, versions["weak"], reason="gates passed", idempotency_key="again")
    assert "force-promote" in (registry.rollback_block(module_state, cfg, versions["weak"]) or "")
    # a champion restored by a rollback is not watched against its own predecessor
    assert registry.previous_champion(module_state, cfg) is None
    # the same run retried: no second rollback
    again = shadow.judge(module_state, cfg, world["as_of"], airflow_run_id="scheduled__shadow1")
    assert again["rollback"] is None and registry.current_champion(module_state, cfg) == versions["full"]


def test_champion_within_noise_of_the_previous_is_kept(module_state, cfg, world, versions, tmp_path, capsys):
    twin = train_model(module_state, with_overrides(cfg, training={"seed": 8}),
                       TrainRequest(reason="twin", data_version=world["full"]))
    registry.force_promote(module_state, cfg, twin.version, "test: a retrain on the same data")
    assert registry.previous_champion(module_state, cfg) == versions["full"]
    _score(module_state, cfg, world["days"])
    from training import cli

    cfg_file = tmp_path / "closedloop.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    capsys.readouterr()
    # the CLI runs the same judgement and prints it as JSON
    assert cli.main(["--config", str(cfg_file), "shadow", "--date", world["as_of"].isoformat()]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [c["kind"] for c in printed["comparisons"]] == ["rollback_watch"] and printed["rollback"] is None
    result = shadow.judge(module_state, cfg, world["as_of"])
    watch = next(c for c in result["comparisons"] if c["kind"] == "rollback_watch")
    print("\nwithin noise:", watch["why"])
    assert watch["verdict"] == "within_noise" and watch["lower"] <= 0 <= watch["upper"]
    assert result["rollback"] is None and registry.current_champion(module_state, cfg) == str(twin.version)
    assert str(tracking.alias_version(tracking.client(module_state), cfg.model.name, tracking.CHAMPION).version) == str(twin.version)
