"""Batch inference: @champion scores written per contract, @challenger in shadow beside them,
re-runs replace the (batch_date, alias) partition — real DuckDB warehouse, real registered models."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from training import cli
from training.config import with_overrides
from training.data import datasets
from training.model import registry, tracking
from training.model.train import TrainRequest, train_model
from training.serving.inference import PREDICTION_COLUMNS, score_interval
from training.storage import warehouse


@pytest.fixture(scope="module")
def days(training_frame):
    last = max(training_frame["batch_date"])
    return last - dt.timedelta(days=1), last


@pytest.fixture(scope="module")
def features(module_state, training_frame, days):
    """published.transaction_features for two days (the mart's columns: no label columns)."""
    frame = training_frame[training_frame["batch_date"].isin(days)].drop(
        columns=["is_fraud", "label_reported_at"]
    )
    with warehouse.connect(module_state) as con:
        con.execute("create schema if not exists published")
        con.con.register("f", frame)  # DuckDB session: build the fixture table straight from the frame
        con.execute("create or replace table published.transaction_features as select * from f")
    return frame


@pytest.fixture(scope="module")
def models(module_state, train_cfg, training_frame, synth, train_eval):
    """Champion: the first passing model; challenger: a newer, not yet evaluated version."""
    cut = synth.holdout_start(training_frame, train_cfg)
    weak = synth.publish(module_state, synth.permute(training_frame, ["is_new_device"], cut), "w")
    full = synth.publish(module_state, training_frame, "full")
    champion, decision = train_eval(module_state, train_cfg, weak, "first")
    assert decision.action == "first_promote"
    challenger = train_model(module_state, train_cfg, TrainRequest(reason="shadow", data_version=full))
    return champion.version, challenger.version


def _predictions(paths, where: str = "true"):
    with warehouse.connect(paths, read_only=True) as con:
        df = con.frame(f"select * from published.predictions where {where}")
    df["batch_date"] = pd.to_datetime(df["batch_date"]).dt.date
    return df


def test_champion_and_shadow_predictions_written(models, features, days, module_state, train_cfg):
    champ_v, chall_v = models
    day = days[0]
    out = score_interval(module_state, train_cfg, day)
    n = int((features["batch_date"] == day).sum())
    assert out == {
        "batch_date": day.isoformat(),
        "status": "scored",
        "rows": n,
        "versions": {"champion": champ_v, "challenger": chall_v},
        "decisions": out["decisions"],
    }
    json.dumps(out)  # XCom-safe
    preds = _predictions(module_state)
    assert list(preds.columns) == PREDICTION_COLUMNS
    assert preds.groupby("alias")["model_version"].unique().map(list).to_dict() == {
        "champion": [champ_v],
        "challenger": [chall_v],
    }
    by_alias = {a: g.set_index("entity_id").sort_index() for a, g in preds.groupby("alias")}
    assert len(by_alias["champion"]) == len(by_alias["challenger"]) == n
    assert list(by_alias["champion"].index) == list(by_alias["challenger"].index)
    assert set(by_alias["champion"].index) == set(
        features.loc[features["batch_date"] == day, "transaction_id"]
    )
    # scores are the registered models' own probabilities, decisions follow the threshold
    rows = features[features["batch_date"] == day].set_index("transaction_id").sort_index()
    for alias, version in (("champion", champ_v), ("challenger", chall_v)):
        uri = f"models:/{train_cfg.model.name}/{version}"
        expected = tracking.score(tracking.load_model(uri), datasets.prepare_features(rows, train_cfg.model))
        np.testing.assert_allclose(by_alias[alias]["score"].to_numpy(), expected, rtol=1e-12)
    champ = by_alias["champion"]
    # the threshold is the champion version's own (set at the operating point), not the config's 0.5
    mv = tracking.client(module_state).get_model_version(train_cfg.model.name, champ_v)
    threshold = float(mv.tags["decision_threshold"])
    assert threshold != train_cfg.model.decision_threshold and (champ["threshold"] == threshold).all()
    words = train_cfg.contract.decisions
    assert ((champ["score"] >= threshold) == (champ["decision"] == words.positive)).all()
    assert set(champ["decision"]) == {words.positive, words.negative}
    assert (champ["decision"] == words.positive).sum() == out["decisions"][words.positive] > 0
    assert out["decisions"][words.positive] + out["decisions"][words.negative] == n
    assert not np.allclose(champ["score"], by_alias["challenger"]["score"])  # two different models
    assert (preds["data_interval_start"] == dt.datetime.combine(day, dt.time())).all()
    assert (preds["data_interval_end"] == dt.datetime.combine(day + dt.timedelta(days=1), dt.time())).all()
    assert (preds["model_name"] == train_cfg.model.name).all()


def test_rerunning_a_day_replaces_never_duplicates(models, features, days, module_state, train_cfg):
    d1, d2 = days
    score_interval(module_state, train_cfg, d1)
    score_interval(module_state, train_cfg, d2)
    first = _predictions(module_state)
    score_interval(module_state, train_cfg, d1)
    again = _predictions(module_state)
    assert len(again) == len(first) == 2 * len(features)
    assert not again.duplicated(["batch_date", "alias", "entity_id"]).any()
    # d2's partition untouched by re-running d1; d1's rows re-scored
    assert set(again["batch_date"]) == {d1, d2}
    assert set(again.loc[again["batch_date"] == d2, "scored_at"]) == set(
        first.loc[first["batch_date"] == d2, "scored_at"]
    )
    assert min(again.loc[again["batch_date"] == d1, "scored_at"]) >= max(first["scored_at"])


def test_previous_champion_in_shadow_once_challenger_is_champion(models, features, days, module_state, train_cfg):
    """After a promotion the challenger is no longer shadowed; the champion it replaced is (rollback watch)."""
    champ_v, chall_v = models
    d1, d2 = days
    registry.force_promote(module_state, train_cfg, chall_v, "test: challenger takes over")
    try:
        out = score_interval(module_state, train_cfg, d1)
        assert out["versions"] == {"champion": chall_v, "previous_champion": champ_v}
        preds = _predictions(module_state, f"batch_date = DATE '{d1}'")
        assert preds.groupby("alias")["model_version"].unique().map(list).to_dict() == {
            "champion": [chall_v], "previous_champion": [champ_v]}
        assert len(preds) == 2 * int((features["batch_date"] == d1).sum())
        # without the rollback watch only the champion scores (and the day's shadow partition is emptied)
        no_watch = with_overrides(train_cfg, shadow={"rollback": {"enabled": False}})
        assert score_interval(module_state, no_watch, d1)["versions"] == {"champion": chall_v}
        assert set(_predictions(module_state, f"batch_date = DATE '{d1}'")["alias"]) == {"champion"}
        # the other day keeps what was scored then
        assert set(_predictions(module_state, f"batch_date = DATE '{d2}'")["alias"]) == {
            "champion",
            "challenger",
        }
    finally:
        registry.rollback(module_state, train_cfg, "test over")


def test_no_champion_scores_nothing(module_state, train_cfg, features, days):
    cfg = with_overrides(train_cfg, model={"name": "never_trained"})
    out = score_interval(module_state, cfg, days[0])
    assert out["status"] == "skipped_no_champion" and out["rows"] == 0
    assert _predictions(module_state, "model_name = 'never_trained'").empty


def test_cli_infer(models, features, days, module_state, train_cfg, tmp_path, capsys):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(train_cfg.model_dump(mode="json")))
    code = cli.main(
        ["--config", str(cfg_file), "--home", str(module_state.root), "infer", "--date", str(days[1])]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "scored" and out["rows"] == int((features["batch_date"] == days[1]).sum())
    with pytest.raises(SystemExit):
        cli.main(["--config", str(cfg_file), "infer", "--date", "yesterday"])


def test_day_without_features_writes_an_empty_partition(models, features, days, module_state, train_cfg):
    empty_day = days[1] + dt.timedelta(days=30)
    out = score_interval(module_state, train_cfg, empty_day)
    assert out["status"] == "scored" and out["rows"] == 0 and set(out["decisions"].values()) == {0}
    assert _predictions(module_state, f"batch_date = DATE '{empty_day}'").empty


def test_decisions_are_written_in_the_contracts_words(models, features, days, module_state, train_cfg):
    """Another model's vocabulary: the same scores, decided as `review` / `pass` (contract.decisions)."""
    cfg = with_overrides(train_cfg, contract={"decisions": {"positive": "review", "negative": "pass"}})
    day = days[0]
    try:
        out = score_interval(module_state, cfg, day)
        champ = _predictions(module_state, f"batch_date = DATE '{day}' and alias = 'champion'")
        assert set(champ["decision"]) == {"review", "pass"}
        assert ((champ["score"] >= champ["threshold"]) == (champ["decision"] == "review")).all()
        assert out["decisions"] == {"review": int((champ["decision"] == "review").sum()),
                                    "pass": int((champ["decision"] == "pass").sum())}
    finally:
        score_interval(module_state, train_cfg, day)  # the module's other tests read the contract's words
