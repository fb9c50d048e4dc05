"""The source seam (training/source): file drops and Python entry points deliver the contract's feeds,
and a source that cannot gets one clear error naming the file or function and the fix.

The file-drop tests use a contract of another shape than card fraud (loan applications and their
outcomes, both classes delivered) so nothing here leans on the example's names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import fsspec
import pandas as pd
import pytest

from examples.card_fraud import simulator
from training import source
from training.config import Config, ConfigError, parse_config
from training.data import admission, ingest
from training.errors import ClosedloopError
from training.paths import StatePaths
from training.source import PartitionMissingError, SourceError
from training.storage import versioning, warehouse

DAY = dt.date(2026, 3, 2)

LOANS = {
    "start_date": "2026-03-01",
    "events": {
        "feed": "applications",
        "id": "application_id",
        "time": "applied_at",
        "columns": {
            "application_id": {"type": "string", "nullable": False, "unique": True},
            "applied_at": {"type": "timestamp", "nullable": False},
            "amount": {"type": "double", "min": 100},
            "term_months": {"type": "integer"},
            "online": {"type": "boolean"},
            "region": {"type": "string"},
            "birth_date": {"type": "date"},
        },
    },
    "labels": {
        "feed": "outcomes",
        "id": "outcome_id",
        "event_id": "application_id",
        "reported_at": "decided_at",
        "both_classes": True,
        "label_column": "outcome",
        "positive_values": ["defaulted"],
        "columns": {
            "outcome_id": {"type": "string", "nullable": False},
            "application_id": {"type": "string", "nullable": False},
            "decided_at": {"type": "timestamp", "nullable": False},
            "outcome": {"type": "string", "allowed": ["defaulted", "repaid"]},
        },
    },
    "marts": {"features": "ml.loan_features", "training_set": "ml.loan_training_set",
              "published": "published.loan_features"},
    "decisions": {"positive": "decline", "negative": "approve", "positive_label": "default"},
}

APPLICATIONS = pd.DataFrame({
    "application_id": ["a-1", "a-2", "a-3"],
    "applied_at": pd.to_datetime(["2026-03-02 08:00:00", "2026-03-02 12:30:00", "2026-03-02 23:59:59"]).astype(
        "datetime64[us]"
    ),
    "amount": [1000.0, 2500.5, float("nan")],
    "term_months": pd.array([12, 24, None], dtype="Int64"),
    "online": pd.array([True, False, True], dtype="boolean"),
    "region": ["EU", "NA", None],  # "NA" is a region (North America), not a missing value
    "birth_date": [dt.date(1990, 1, 31), dt.date(1985, 7, 4), None],
})
OUTCOMES = pd.DataFrame({
    "outcome_id": ["o-9"],
    "application_id": ["a-0"],
    "decided_at": pd.to_datetime(["2026-03-02 10:00:00"]).astype("datetime64[us]"),
    "outcome": ["defaulted"],
})


def _config(base: Config, source_spec: dict, contract: dict | None = None) -> Config:
    """`base` with another contract and source and no `simulator:` section at all."""
    data = base.model_dump(mode="json")
    data["contract"] = {**(contract or LOANS), "source": source_spec}
    del data["simulator"]
    return parse_config(data, "test")


def _write(url: str, frame: pd.DataFrame, fmt: str) -> None:
    with fsspec.open(url, "wb", compression="infer", auto_mkdir=True) as out:
        if fmt == "csv":
            out.write(frame.to_csv(index=False).encode())
        else:
            frame.to_parquet(out, index=False)


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://drop-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# ---------------------------------------------------------------------------------------------- file drop


def test_parquet_partitions_in_a_folder_arrive_as_delivered(base_config, tmp_path):
    cfg = _config(base_config, {"kind": "file_drop", "url": str(tmp_path / "drop")})
    categorical = APPLICATIONS.assign(region=APPLICATIONS["region"].astype("category"))  # dictionary-encoded
    _write(f"{tmp_path}/drop/applications/batch_date={DAY}.parquet", categorical, "parquet")
    _write(f"{tmp_path}/drop/outcomes/batch_date={DAY}.parquet", OUTCOMES, "parquet")
    feeds = source.extract(cfg, DAY)
    assert list(feeds) == ["applications", "outcomes"]
    pd.testing.assert_frame_equal(feeds["applications"], APPLICATIONS)
    pd.testing.assert_frame_equal(feeds["outcomes"], OUTCOMES)


@pytest.mark.parametrize("pattern", ["{feed}/{date:%Y/%m/%d}.csv", "{feed}-{date}.csv.gz"])
def test_csv_partitions_at_a_memory_url_are_parsed_to_the_contract_types(base_config, memory_root, pattern):
    cfg = _config(base_config, {"kind": "file_drop", "url": memory_root, "format": "csv", "pattern": pattern})
    for feed, frame in (("applications", APPLICATIONS), ("outcomes", OUTCOMES)):
        _write(f"{memory_root}/{pattern.format(feed=feed, date=DAY)}", frame, "csv")
    feeds = source.extract(cfg, DAY)
    pd.testing.assert_frame_equal(feeds["applications"], APPLICATIONS)
    pd.testing.assert_frame_equal(feeds["outcomes"], OUTCOMES)


def test_csv_timestamps_with_a_zone_are_stored_in_utc_and_strings_stay_verbatim(base_config, memory_root):
    cfg = _config(base_config, {"kind": "file_drop", "url": memory_root, "format": "csv",
                                "pattern": "{feed}/{date}.csv"})
    csv = (
        "application_id,applied_at,amount,term_months,online,region,birth_date,channel\n"
        "007,2026-03-02T09:00:00+01:00,150,36,TRUE,NA,1970-01-01,web\n"
    )
    with fsspec.open(f"{memory_root}/applications/{DAY}.csv", "w") as out:
        out.write(csv)
    _write(f"{memory_root}/outcomes/{DAY}.csv", OUTCOMES, "csv")
    events = source.extract(cfg, DAY)["applications"]
    row = events.iloc[0]
    assert row["application_id"] == "007" and row["region"] == "NA"  # no number, no missing value
    assert row["applied_at"] == pd.Timestamp("2026-03-02 08:00:00") and events["applied_at"].dt.tz is None
    assert row["term_months"] == 36 and events["term_months"].dtype == "Int64"
    assert bool(row["online"]) and events["online"].dtype == "boolean"
    assert row["channel"] == "web"  # undeclared columns are kept (ingest loads the declared ones)


def test_environment_variables_in_the_url_are_expanded_and_an_unset_one_is_named(
    base_config, tmp_path, monkeypatch
):
    cfg = _config(base_config, {"kind": "file_drop", "url": "${LOANS_DROP_ROOT}/drops/$LOANS_DROP_NAME"})
    monkeypatch.setenv("LOANS_DROP_ROOT", str(tmp_path))
    monkeypatch.setenv("LOANS_DROP_NAME", "loans")
    _write(f"{tmp_path}/drops/loans/applications/batch_date={DAY}.parquet", APPLICATIONS, "parquet")
    _write(f"{tmp_path}/drops/loans/outcomes/batch_date={DAY}.parquet", OUTCOMES, "parquet")
    feeds = source.extract(cfg, DAY)
    pd.testing.assert_frame_equal(feeds["applications"], APPLICATIONS)

    monkeypatch.delenv("LOANS_DROP_NAME")
    with pytest.raises(SourceError) as info:
        source.extract(cfg, DAY)
    message = str(info.value)
    assert "['LOANS_DROP_NAME']" in message and "not set" in message and "export" in message
    assert "LOANS_DROP_ROOT" not in message.split("variable(s)")[1]  # only the unset one is named


def test_a_missing_partition_names_the_url_and_what_to_do(base_config, tmp_path):
    cfg = _config(base_config, {"kind": "file_drop", "url": f"file://{tmp_path}/drop"})
    _write(f"{tmp_path}/drop/applications/batch_date={DAY}.parquet", APPLICATIONS, "parquet")
    with pytest.raises(PartitionMissingError) as info:
        source.extract(cfg, DAY)
    message = str(info.value)
    assert f"file://{tmp_path}/drop/outcomes/batch_date={DAY}.parquet" in message
    assert "deliver the file" in message and "not exported yet" in message
    assert isinstance(info.value, ClosedloopError)


@pytest.mark.parametrize(
    ("fmt", "edit", "expected"),
    [
        ("parquet", lambda f: f.drop(columns=["region"]), ["lacks", "['region']", "contract.events.columns"]),
        ("csv", lambda f: f.drop(columns=["region"]), ["lacks", "['region']"]),
        ("parquet", lambda f: f.assign(amount=["12.50 EUR", "3", None]), ["'amount'", "declares double"]),
        ("parquet", lambda f: f.assign(applied_at=f["applied_at"].astype(str)), ["'applied_at'", "timestamp"]),
        ("csv", lambda f: f.assign(term_months=["12", "twelve", None]), ["'term_months'", "[3]", "'twelve'"]),
        ("csv", lambda f: f.assign(applied_at=["2026-03-02", "yesterday", "noon"]), ["line(s) [3, 4]", "timestamp"]),
        ("csv", lambda f: f.assign(online=["yes", "maybe", None]), ["'online'", "boolean", "'maybe'"]),
    ],
)
def test_a_file_that_breaks_the_contract_is_named_with_its_column(base_config, tmp_path, fmt, edit, expected):
    cfg = _config(base_config, {"kind": "file_drop", "url": str(tmp_path), "format": fmt})
    _write(f"{tmp_path}/applications/batch_date={DAY}.parquet", edit(APPLICATIONS.copy()), fmt)
    _write(f"{tmp_path}/outcomes/batch_date={DAY}.parquet", OUTCOMES, fmt)
    with pytest.raises(SourceError) as info:
        source.extract(cfg, DAY)
    message = str(info.value)
    assert f"{tmp_path}/applications/batch_date={DAY}.parquet" in message
    for part in expected:
        assert part in message
    assert "fix the export" in message


def test_a_corrupt_file_and_a_bad_pattern_are_clear_errors(base_config, tmp_path):
    cfg = _config(base_config, {"kind": "file_drop", "url": str(tmp_path)})
    (tmp_path / "applications").mkdir()
    (tmp_path / "applications" / f"batch_date={DAY}.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="is not a readable parquet file.*re-export it"):
        source.extract(cfg, DAY)
    cfg = _config(base_config, {"kind": "file_drop", "url": str(tmp_path), "pattern": "{table}/{date}.parquet"})
    with pytest.raises(SourceError, match=r"may use only \{feed\} and \{date\}"):
        source.extract(cfg, DAY)


def test_a_remote_scheme_without_its_filesystem_says_what_to_install(base_config):
    try:
        import s3fs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("s3fs is installed here: the error this checks cannot happen")
    cfg = _config(base_config, {"kind": "file_drop", "url": "s3://exports/loans"})
    with pytest.raises(SourceError, match="s3fs for s3://"):
        source.extract(cfg, DAY)


def test_file_drop_needs_a_url_and_no_simulator_section(base_config):
    with pytest.raises(ConfigError, match="file_drop needs `url`"):
        _config(base_config, {"kind": "file_drop"})
    cfg = _config(base_config, {"kind": "file_drop", "url": "memory://x"})
    assert cfg.simulator is None
    with pytest.raises(ConfigError, match="contract.source.kind is simulator"):
        _config(base_config, {"kind": "simulator", "entry_point": "examples.card_fraud.source:extract"})


# ------------------------------------------------------------------------------------ python entry point


def loan_source(cfg: Config, batch_date: dt.date) -> dict[str, pd.DataFrame]:
    """A custom source: the day's frames, built from the contract it is given."""
    assert cfg.contract.events.feed == "applications"
    return {"outcomes": OUTCOMES.assign(decided_at=pd.Timestamp(batch_date)), "applications": APPLICATIONS}


def returns_a_list(cfg: Config, batch_date: dt.date) -> list:
    return [APPLICATIONS, OUTCOMES]


def returns_one_feed(cfg: Config, batch_date: dt.date) -> dict:
    return {"applications": APPLICATIONS, "loans": OUTCOMES}


def returns_a_path(cfg: Config, batch_date: dt.date) -> dict:
    return {"applications": APPLICATIONS, "outcomes": "outcomes.csv"}


NOT_A_FUNCTION = 42


def test_a_python_entry_point_delivers_the_contract_feeds(base_config):
    cfg = _config(base_config, {"kind": "python", "entry_point": f"{__name__}:loan_source"})
    feeds = source.extract(cfg, DAY)
    assert list(feeds) == ["applications", "outcomes"]  # events first, whatever order the function used
    pd.testing.assert_frame_equal(feeds["applications"], APPLICATIONS)
    assert (feeds["outcomes"]["decided_at"] == pd.Timestamp(DAY)).all()


@pytest.mark.parametrize(
    ("entry_point", "expected"),
    [
        ("closedloop_no_such_package.sources:extract", "cannot import 'closedloop_no_such_package.sources'"),
        (f"{__name__}:no_such_function", "has no function 'no_such_function'"),
        (f"{__name__}:NOT_A_FUNCTION", "has no function 'NOT_A_FUNCTION'"),
        (f"{__name__}:returns_a_list", "returned list; a source returns a dict {feed: DataFrame}"),
        (f"{__name__}:returns_one_feed", "missing: ['outcomes'], unknown: ['loans']"),
        (f"{__name__}:returns_a_path", "non-DataFrame feeds {'outcomes': 'str'}"),
    ],
)
def test_a_bad_entry_point_is_a_clear_error(base_config, entry_point, expected):
    cfg = _config(base_config, {"kind": "python", "entry_point": entry_point})
    with pytest.raises(SourceError) as info:
        source.extract(cfg, DAY)
    assert expected in str(info.value)
    assert entry_point.split(":")[0] in str(info.value)


# ------------------------------------------------------------------------------------------- simulator


def test_the_simulator_source_is_the_examples_entry_point(small_config):
    day = small_config.start_date
    feeds = source.extract(small_config, day)
    assert list(feeds) == ["transactions", "chargebacks"]
    pd.testing.assert_frame_equal(feeds["transactions"], simulator.generate_transactions(small_config.simulator, day))
    pd.testing.assert_frame_equal(feeds["chargebacks"], simulator.generate_chargebacks(small_config.simulator, day))
    data = small_config.model_dump(mode="json")
    del data["contract"]["source"]["entry_point"]
    with pytest.raises(ConfigError, match="kind simulator names no `entry_point`"):
        parse_config(data)


def test_simulate_needs_the_simulator_source(base_config, tmp_path, capsys):
    import yaml

    from training.cli import main

    cfg_file = tmp_path / "loans.yaml"
    cfg_file.write_text(yaml.safe_dump(_config(base_config, {"kind": "file_drop", "url": "memory://x"})
                                       .model_dump(mode="json")))
    assert main(["--config", str(cfg_file), "--home", str(tmp_path / "state"), "simulate", "--date", str(DAY)]) == 1
    assert "`simulate` needs contract.source.kind: simulator" in capsys.readouterr().err


# ------------------------------------------------------------------------------- a dropped day through ingest


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_dropped_day_lands_versioned_and_passes_the_door(state: StatePaths, small_config, tmp_path, fmt):
    """The card-fraud contract fed from a file drop (no simulator section): land, admit, load raw."""
    day = small_config.start_date
    spec = small_config.simulator
    drop = tmp_path / "exports"
    delivered = {"transactions": simulator.generate_transactions(spec, day),
                 "chargebacks": simulator.generate_chargebacks(spec, day)}
    for feed, frame in delivered.items():
        _write(f"{drop}/{feed}/{day}.{fmt}", frame, fmt)
    contract = small_config.contract.model_dump(mode="json")
    cfg = _config(small_config, {"kind": "file_drop", "url": str(drop), "format": fmt,
                                 "pattern": "{feed}/{date}." + fmt}, contract=contract)
    assert cfg.simulator is None

    landed = ingest.land(state, cfg, day)
    assert landed.events.rows == len(delivered["transactions"]) > 0
    versioned = pd.read_parquet(versioning.open_version(state, landed.events.md5))  # real DVC cache
    pd.testing.assert_frame_equal(versioned.drop(columns="batch_date"), delivered["transactions"])

    admitted = admission.admit(state, cfg, landed)
    counts = ingest.load_raw(state, admitted.batch)
    assert counts == {feed: len(frame) for feed, frame in delivered.items()}
    with warehouse.connect(state, read_only=True) as con:
        assert con.scalar("select count(distinct transaction_id) from raw.transactions") == counts["transactions"]

