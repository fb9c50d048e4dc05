"""Generic code names no model: the card-fraud words live in the example, never in the loop itself.

The loop reads every name of its data from the contract (`contract:` in config, training/contract.py),
and a simulated source's `simulator:` section is validated by the schema its entry point module declares
(`SIMULATOR_SPEC`, examples/card_fraud/spec.py), so `training/`, `plugins/` and `dags/` must work for any
model. A fraud-specific name there (`transaction_id`, `chargeback`, `is_fraud`, `fraud`, any case) is a
hard-coded shape: read it from the contract, or reword the comment ("positive", "the positive class",
"events", "labels"). There is no exception list. The example (`examples/`) may say what it likes.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("training", "plugins", "dags")
FRAUD_WORDS = re.compile(r"transaction_id|chargeback|is_fraud|fraud", re.IGNORECASE)


def _generic_files(root: Path) -> list[Path]:
    files = []
    for folder in GENERIC:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".png"):
                files.append(path)
    return files


def fraud_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line of `path` that names a fraud word."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if FRAUD_WORDS.search(line)]


def offending_lines(root: Path) -> list[str]:
    """`path:line: text` of every line of generic code under `root` that names a fraud word."""
    return [
        f"{path.relative_to(root).as_posix()}:{n}: {line}"
        for path in _generic_files(root)
        for n, line in fraud_lines(path)
    ]


def test_the_words_are_found_in_any_case():
    for word in ("transaction_id", "raw.chargebacks", "IS_FRAUD", "Fraudulent", "card-fraud", "fraud_rate"):
        assert FRAUD_WORDS.search(word), word
    for word in ("transactions", "positive_label", "charge", "entity_id"):
        assert not FRAUD_WORDS.search(word), word


def test_one_added_line_is_found(tmp_path):
    """The scan is not vacuous: a fraud word added anywhere in a generic folder is reported with its place."""
    (tmp_path / "training" / "monitoring").mkdir(parents=True)
    (tmp_path / "dags").mkdir()
    (tmp_path / "training" / "monitoring" / "clean.py").write_text("rate = positives / events\n")
    assert offending_lines(tmp_path) == []
    (tmp_path / "dags" / "new_dag.yaml").write_text("a: 1\nmarks: [fraud_mechanism_shift]\n")
    assert offending_lines(tmp_path) == ["dags/new_dag.yaml:2: marks: [fraud_mechanism_shift]"]


def test_generic_code_names_no_fraud():
    assert len(_generic_files(ROOT)) > 50, "the generic folders were not found"
    offending = offending_lines(ROOT)
    assert not offending, (
        f"{len(offending)} line(s) of generic code name the card-fraud example; read the name from the "
        "contract (cfg.contract, cfg.model.id_column), move a simulator's knob into its SIMULATOR_SPEC "
        "(examples/card_fraud/spec.py), or reword the text:\n" + "\n".join(offending)
    )
