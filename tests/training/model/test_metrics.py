"""Metrics: hand-checked values, agreement with sklearn, degenerate inputs, the paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_curve, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from training.config import Config
from training.model import metrics as m

Y = np.array([1, 0, 1, 0])
S = np.array([0.9, 0.8, 0.7, 0.1])


def _spec(base_config: Config, p: float = 0.8, k: int = 2):
    return base_config.model.model_copy(update={"recall_at_precision": p, "precision_at_k": k})


def test_hand_checked_values(base_config: Config) -> None:
    got = m.compute_metrics(Y, S, _spec(base_config, p=0.8, k=2))
    assert set(got) == set(m.METRIC_NAMES)
    # ranked: +(.9) -(.8) +(.7) -(.1): AP = 1/2*1 + 1/2*2/3
    assert got["pr_auc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    # pairs (pos, neg): .9>.8, .9>.1, .7<.8, .7>.1
    assert got["roc_auc"] == pytest.approx(0.75)
    # only the threshold .9 has precision >= .8, recalling 1 of 2 positives
    assert got["recall_at_precision"] == pytest.approx(0.5)
    assert got["precision_at_k"] == pytest.approx(0.5)
    assert got["brier"] == pytest.approx((0.01 + 0.64 + 0.09 + 0.01) / 4)
    assert got["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.9)) / 4
    )


def test_recall_at_lower_precision_reaches_further(base_config: Config) -> None:
    # at threshold .7 precision is 2/3 >= .6, recalling both positives
    assert m.compute_metrics(Y, S, _spec(base_config, p=0.6))["recall_at_precision"] == pytest.approx(1.0)
    # no threshold reaches precision 1.0 with recall beyond .5; a perfect-precision demand gives .5
    assert m.recall_at_precision(Y, S, 1.0) == pytest.approx(0.5)
    # a ranking whose top row is a negative never reaches precision .99 at any recall > 0
    assert m.recall_at_precision([0, 1, 0, 1], [0.9, 0.8, 0.7, 0.1], 0.99) == 0.0


def test_precision_at_k_shares_ties_and_caps_k() -> None:
    # one positive strictly above; 3 rows tied at .5 with 1 positive share the last slot
    assert m.precision_at_k([1, 0, 0, 1], [0.9, 0.5, 0.5, 0.5], 2) == pytest.approx((1 + 1 / 3) / 2)
    # order of tied rows does not matter
    assert m.precision_at_k([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.5], 2) == pytest.approx((1 + 1 / 3) / 2)
    # k beyond n uses all rows
    assert m.precision_at_k(Y, S, 100) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [None, 1])
def test_agrees_with_sklearn(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    n = 3000
    y = (rng.random(n) < 0.05).astype(int)
    s = np.clip(rng.random(n) * 0.7 + y * 0.3 * rng.random(n), 0, 1)
    if decimals is not None:  # heavy ties
        s = np.round(s, decimals)
    assert m.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    precision, recall, _ = precision_recall_curve(y, s)
    assert m.recall_at_precision(y, s, 0.3) == pytest.approx(recall[precision >= 0.3].max(), abs=1e-12)
    assert m.brier(y, s) == pytest.approx(brier_score_loss(y, s))
    assert m.log_loss(y, s) == pytest.approx(sk_log_loss(y, np.clip(s, 1e-15, 1 - 1e-15)), rel=1e-9)


def test_resampled_metrics_equal_sklearn_on_explicit_resample() -> None:
    """The bootstrap's count form must equal sklearn on the physically resampled rows (ties included)."""
    rng = np.random.default_rng(5)
    n = 400
    y = (rng.random(n) < 0.1).astype(np.int8)
    s = np.round(rng.random(n) * 0.6 + y * 0.4 * rng.random(n), 2)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pos_draws = rng.integers(0, pos.size, size=(3, pos.size))
    neg_draws = rng.integers(0, neg.size, size=(3, neg.size))
    ap, auc = m._resampled_rank_metrics(m._rank_codes(y, s), pos_draws, neg_draws)
    for i in range(3):
        rows = np.concatenate([pos[pos_draws[i]], neg[neg_draws[i]]])
        assert ap[i] == pytest.approx(average_precision_score(y[rows], s[rows]), abs=1e-12)
        assert auc[i] == pytest.approx(roc_auc_score(y[rows], s[rows]), abs=1e-12)


def test_single_class_gives_nan_rank_metrics_and_finite_rest(base_config: Config) -> None:
    got = m.compute_metrics([0, 0, 0], [0.1, 0.2, 0.3], _spec(base_config))
    assert math.isnan(got["pr_auc"]) and math.isnan(got["roc_auc"]) and math.isnan(got["recall_at_precision"])
    assert got["precision_at_k"] == 0.0
    assert math.isfinite(got["log_loss"]) and got["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        ([], [], "empty"),
        ([0, 1], [0.1], "row-aligned"),
        ([0, 2], [0.1, 0.2], "0/1"),
        ([0, None], [0.1, 0.2], "0/1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([0, 1], [0.1, 1.5], r"\[0, 1\]"),
        ([0, 1], [[0.9, 0.1], [0.2, 0.8]], r"\[:, 1\]"),
    ],
)
def test_bad_input_raises_clear_error(base_config: Config, y, s, match: str) -> None:
    with pytest.raises(m.MetricError, match=match):
        m.compute_metrics(y, s, _spec(base_config))


def _signal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-6.5 + 3 * z)))).astype(int)
    good = 1 / (1 + np.exp(-(-6.5 + 3 * z)))
    noisy = 1 / (1 + np.exp(-(-6.5 + 3 * (z + 1.0 * rng.normal(size=n)))))
    return y, good, noisy


def test_bootstrap_identical_scores_ci_is_zero() -> None:
    y, good, _ = _signal(3000, 0)
    r = m.paired_bootstrap_diff(y, good, good, "pr_auc", 200, 0.95, seed=1)
    assert r.lower <= 0.0 <= r.upper
    assert r.mean_diff == 0.0 and r.observed_diff == 0.0 and r.n == 200


def test_bootstrap_clearly_better_has_positive_lower_bound() -> None:
    y, good, noisy = _signal(5000, 0)
    for metric in m.BOOTSTRAP_METRICS:
        r = m.paired_bootstrap_diff(y, good, noisy, metric, 300, 0.95, seed=1)
        assert r.lower > 0, (metric, r)
        assert r.lower <= r.observed_diff <= r.upper
        flipped = m.paired_bootstrap_diff(y, noisy, good, metric, 300, 0.95, seed=1)
        assert flipped.upper < 0
        assert flipped.lower == pytest.approx(-r.upper) and flipped.upper == pytest.approx(-r.lower)


def test_bootstrap_is_paired() -> None:
    """Two nearly identical models: a paired CI is narrow even though each metric alone varies a lot."""
    y, good, _ = _signal(5000, 3)
    almost = np.clip(good + np.random.default_rng(9).normal(0, 1e-3, good.size), 0, 1)
    r = m.paired_bootstrap_diff(y, almost, good, "pr_auc", 300, 0.95, seed=1)
    single = m.paired_bootstrap_diff(y, good, np.full(good.size, 0.5), "pr_auc", 300, 0.95, seed=1)
    assert (r.upper - r.lower) < 0.2 * (single.upper - single.lower)


def test_bootstrap_deterministic_by_seed_and_stratified() -> None:
    y, good, noisy = _signal(2000, 1)
    a = m.paired_bootstrap_diff(y, good, noisy, "pr_auc", 150, 0.9, seed=11)
    b = m.paired_bootstrap_diff(y, good, noisy, "pr_auc", 150, 0.9, seed=11)
    c = m.paired_bootstrap_diff(y, good, noisy, "pr_auc", 150, 0.9, seed=12)
    assert a == b
    assert (a.lower, a.upper) != (c.lower, c.upper)
    # a single positive: unstratified resampling would often draw none; stratified never does
    y1 = np.zeros(500, dtype=int)
    y1[7] = 1
    r = m.paired_bootstrap_diff(y1, good[:500], noisy[:500], "roc_auc", 100, 0.95, seed=0)
    assert math.isfinite(r.lower) and math.isfinite(r.upper) and r.n_positives == 1


def test_bootstrap_rejects_what_it_cannot_compare() -> None:
    with pytest.raises(m.MetricError, match="both classes"):
        m.paired_bootstrap_diff([0, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], "pr_auc", 100, 0.95, 0)
    with pytest.raises(m.MetricError, match="supports"):
        m.paired_bootstrap_diff([0, 1], [0.1, 0.2], [0.3, 0.2], "brier", 100, 0.95, 0)
    with pytest.raises(m.MetricError, match="scores_b"):
        m.paired_bootstrap_diff([0, 1], [0.1, 0.2], [0.3], "pr_auc", 100, 0.95, 0)


# --- calibration error and the operating point -----------------------------------------------------


def test_ece_is_small_for_calibrated_scores_and_large_for_overstated_ones() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(0.3, 25.0, 40_000)  # ~1 % positives, like the fraud feed
    y = (rng.random(p.size) < p).astype(int)
    calibrated = m.expected_calibration_error(y, p)
    overstated = m.expected_calibration_error(y, 6 * p / (1 + 5 * p))  # same ranking, odds x6
    assert calibrated < 0.003 < 0.03 < overstated
    # hand-checked: two equal-mass bins {.1,.1 | .9,.9} with rates 0 and 1 -> |.1-0|/2 + |.9-1|/2
    assert m.expected_calibration_error([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9], n_bins=2) == pytest.approx(0.1)


def test_ece_does_not_depend_on_row_order_with_ties() -> None:
    y = np.array([1, 0, 0, 1, 0, 0])
    s = np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.1])
    order = np.array([5, 2, 0, 4, 1, 3])
    assert m.expected_calibration_error(y, s, 3) == pytest.approx(m.expected_calibration_error(y[order], s[order], 3))


def test_ece_rejects_non_probabilities() -> None:
    with pytest.raises(m.MetricError, match=r"probabilities in \[0, 1\]"):
        m.expected_calibration_error([0, 1], [0.2, 1.5])
    with pytest.raises(m.MetricError, match="n_bins"):
        m.expected_calibration_error([0, 1], [0.2, 0.5], n_bins=0)


def test_operating_point_is_the_largest_recall_at_the_target_precision() -> None:
    # ranked: + + - + - - ; precision by threshold: 1, 1, 2/3, 3/4, 3/5, 1/2
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    op = m.operating_point(y, s, 0.75, min_true_positives=1)
    assert (op.threshold, op.rule) == (0.6, "recall_at_precision")
    assert op.precision == pytest.approx(0.75) and op.recall == pytest.approx(1.0)
    assert op.flagged_share == pytest.approx(4 / 6)
    assert op.recall == pytest.approx(m.recall_at_precision(y, s, 0.75))
    # demanding more precision moves the threshold up, never blocking more
    strict = m.operating_point(y, s, 0.9, min_true_positives=1)
    assert strict.threshold == 0.8 and strict.recall == pytest.approx(2 / 3)
    # ... unless that rests on too few caught positives: then the best F1 (here: flag the top 4)
    few = m.operating_point(y, s, 0.9, min_true_positives=3)
    assert few.rule == "max_f1" and few.threshold == 0.6


def test_weighted_operating_point_equals_the_full_population_it_stands_for() -> None:
    # the full ranking: + + - - + - -; kept: every positive, the negatives at 0.7 and 0.3 (weight 2 each)
    y_full = np.array([1, 1, 0, 0, 1, 0, 0])
    s_full = np.array([0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.3])
    y = np.array([1, 1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    w = np.array([1, 1, 2, 1, 2])
    # counting the kept rows: precision 3/4 at 0.6; the population it stands for: 3/5
    assert m.operating_point(y, s, 0.75, min_true_positives=1).threshold == 0.6
    op = m.operating_point(y, s, 0.75, min_true_positives=1, weight=w)
    full = m.operating_point(y_full, s_full, 0.75, min_true_positives=1)
    assert op.threshold == full.threshold == 0.8
    assert (op.precision, op.recall) == pytest.approx((full.precision, full.recall))
    assert op.flagged_share == pytest.approx(2 / 7) == pytest.approx(full.flagged_share)
    unit = m.operating_point(y, s, 0.75, min_true_positives=1, weight=np.ones(5))
    assert unit == m.operating_point(y, s, 0.75, min_true_positives=1)


def test_operating_point_falls_back_to_best_f1_when_the_target_is_out_of_reach() -> None:
    y = np.array([0, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    op = m.operating_point(y, s, 0.9, min_true_positives=1)
    assert op.rule == "max_f1" and op.threshold == 0.6  # precision 1/2, recall 1: F1 2/3
    with pytest.raises(m.MetricError, match="both classes"):
        m.operating_point([0, 0], [0.1, 0.2], 0.5)
