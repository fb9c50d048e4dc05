"""Several models per deployment: one config per model gives each its own DAGs, Assets, pools and state.

The deployment here is two models built from the repository's config (the second renamed, with its
own published table), parsed by a real DagBag; the loans example joins them in the e2e test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, load_config
from training.deployment import dag_id, deployment_models
from training.paths import StatePaths

ROOT = Path(__file__).resolve().parents[2]
DAG_NAMES = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    data = yaml.safe_load((ROOT / "config" / "closedloop.yaml").read_text())
    (folder / "card_fraud.yaml").write_text(yaml.safe_dump(data))
    data["model"]["name"] = "card_fraud_eu"
    data["contract"]["marts"]["published"] = "published.eu_features"
    (folder / "card_fraud_eu.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CLOSEDLOOP_MODELS_DIR", str(folder))
    monkeypatch.setenv("CLOSEDLOOP_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("CLOSEDLOOP_MODEL", raising=False)
    return folder


def test_each_model_acts_on_its_own_config_and_state(two_models, monkeypatch):
    assert deployment_models() == ["card_fraud", "card_fraud_eu"]
    monkeypatch.setenv("CLOSEDLOOP_MODEL", "card_fraud_eu")
    assert load_config().model.name == "card_fraud_eu"
    eu, card = StatePaths.from_env(), StatePaths.for_model("card_fraud")
    assert eu.root != card.root and eu.warehouse != card.warehouse and eu.raw != card.raw
    assert eu.root.parent == card.root.parent == eu.shared / "models"
    assert eu.mlflow_db == card.mlflow_db  # one MLflow (one UI) for the deployment's models


def test_a_wrong_model_or_file_name_is_a_clear_error(two_models, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_MODEL", "loans")
    with pytest.raises(ConfigError, match=r"no config for model 'loans'.*card_fraud, card_fraud_eu"):
        load_config()
    shutil.move(two_models / "card_fraud_eu.yaml", two_models / "eu.yaml")
    with pytest.raises(ConfigError, match=r"declares model.name 'card_fraud_eu'.*rename it to card_fraud_eu.yaml"):
        load_config(two_models / "eu.yaml")


def test_an_empty_models_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_MODELS_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="holds no <model>.yaml"):
        deployment_models()


def test_the_dag_factory_builds_every_dag_per_model(two_models, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=True)
    assert bag.import_errors == {}
    expected = {dag_id(m, name) for m in ("card_fraud", "card_fraud_eu") for name in DAG_NAMES}
    assert set(bag.dag_ids) == expected
    # each model's drift monitor triggers its own retrain, on its own Assets and pools
    for model in ("card_fraud", "card_fraud_eu"):
        drift = bag.get_dag(dag_id(model, "drift_monitor"))
        assert drift.get_task("trigger_retrain").trigger_dag_id == f"{model}__train_model"
        pipeline = bag.get_dag(dag_id(model, "data_pipeline"))
        assert pipeline.get_task("land").pool == f"{model}__duckdb_writer"
        assert pipeline.get_task("feature_gate").model == model
        publish = pipeline.get_task("publish")
        assert [a.name for a in publish.outlets] == [f"{model}__closedloop_features"]
    uris = {bag.get_dag(dag_id(m, "data_pipeline")).get_task("publish").outlets[0].uri
            for m in ("card_fraud", "card_fraud_eu")}
    assert uris == {"closedloop://card_fraud/warehouse/published/transaction_features",
                    "closedloop://card_fraud_eu/warehouse/published/eu_features"}


def test_one_model_deployment_keeps_plain_ids(monkeypatch):
    monkeypatch.delenv("CLOSEDLOOP_MODELS_DIR", raising=False)
    assert deployment_models() == [None]
    assert dag_id(None, "train_model") == "train_model"


def test_the_model_health_page_lists_every_model(two_models):
    """Each model's page reads its own state; the page links the others; an unknown model is a 404."""
    import closedloop.model_health_plugin as mh
    from fastapi.testclient import TestClient

    app = mh.create_app()
    app.dependency_overrides[mh.require_airflow_user] = lambda: "test-user"
    client = TestClient(app)
    first = client.get("/api/status").json()
    assert first["model_name"] == "card_fraud" and first["models"] == ["card_fraud", "card_fraud_eu"]
    eu = client.get("/api/status", params={"model": "card_fraud_eu"}).json()
    assert eu["model_name"] == "card_fraud_eu"
    assert eu["state_dir"] == str(StatePaths.for_model("card_fraud_eu").root)
    page = client.get("/", params={"model": "card_fraud_eu"}).text
    assert '<a href="?model=card_fraud">card_fraud</a>' in page and 'src="chart.png?model=card_fraud_eu"' in page
    missing = client.get("/api/status", params={"model": "loans"})
    assert missing.status_code == 404 and "card_fraud, card_fraud_eu" in missing.json()["detail"]
