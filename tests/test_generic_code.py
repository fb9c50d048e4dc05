"""Generic code names no model: the card-fraud words live in the example, never in the loop itself.

The loop reads every name of its data from the contract (`contract:` in config, training/contract.py),
so `training/`, `plugins/` and `dags/` must work for any model. A fraud-specific name there
(`transaction_id`, `chargeback`, `is_fraud`, `fraud`, any case) is a hard-coded shape: read it from
the contract, or reword the comment ("positive", "the positive class", "events", "labels").
The example (`examples/`) is outside these folders and may say what it likes.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("training", "plugins", "dags")
FRAUD_WORDS = re.compile(r"transaction_id|chargeback|is_fraud|fraud", re.IGNORECASE)

#: Lines that still name the example, each with why, and their exact count (a new one fails, and an
#: entry whose lines are gone fails too, so the allowance cannot outlive its reason).
KNOWN = {
    # the `simulator:` section's schema (fraud_rate, the fraud_mechanism_shift scenario) is the card
    # example's; it leaves training/ when each model's config moves to its own file with its example
    "training/config.py": 3,
}


def _generic_files() -> list[Path]:
    files = []
    for folder in GENERIC:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".png"):
                files.append(path)
    return files


def fraud_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every line of `path` that names a fraud word."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if FRAUD_WORDS.search(line)]


def test_the_words_are_found_in_any_case():
    for word in ("transaction_id", "raw.chargebacks", "IS_FRAUD", "Fraudulent", "card-fraud"):
        assert FRAUD_WORDS.search(word), word
    for word in ("transactions", "positive_label", "charge", "entity_id"):
        assert not FRAUD_WORDS.search(word), word


def test_generic_code_names_no_fraud():
    files = _generic_files()
    assert len(files) > 50, "the generic folders were not found"
    offending, counts = [], {}
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        hits = fraud_lines(path)
        counts[rel] = len(hits)
        if hits and len(hits) > KNOWN.get(rel, 0):
            offending += [f"{rel}:{n}: {line}" for n, line in hits]
    assert not offending, (
        f"{len(offending)} line(s) of generic code name the card-fraud example; read the name from the "
        "contract (cfg.contract, cfg.model.id_column) or reword the text:\n" + "\n".join(offending)
    )
    stale = [rel for rel, n in KNOWN.items() if counts.get(rel, 0) < n]
    assert not stale, f"{stale} name fraud less often than KNOWN says: lower or remove their allowance"
