"""tflib.stats.bootstrap_ci: percentile intervals checked against cases worked out by hand."""
from functools import partial

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tflib.stats import bootstrap_ci


def test_perfect_predictions_give_a_degenerate_interval():
    y = np.array(list("aabbbc") * 10)
    res = bootstrap_ci(accuracy_score, y, y, n_boot=200, seed=0)
    assert (res.estimate, res.low, res.high) == (1.0, 1.0, 1.0)
    assert res.n_failed == 0 and res.samples.shape == (200,)


def test_accuracy_interval_matches_the_binomial_normal_approximation():
    # 800 of 1000 correct: se = sqrt(0.8 * 0.2 / 1000) = 0.01265, 95 % half-width = 0.0248
    y_true = np.zeros(1000, dtype=int)
    y_pred = np.r_[np.zeros(800, dtype=int), np.ones(200, dtype=int)]
    res = bootstrap_ci(accuracy_score, y_true, y_pred, n_boot=2000, seed=1)
    assert res.estimate == pytest.approx(0.8)
    assert res.low == pytest.approx(0.8 - 0.0248, abs=0.006)
    assert res.high == pytest.approx(0.8 + 0.0248, abs=0.006)
    assert res.low < res.estimate < res.high
    assert str(res).startswith("0.800 [")


def test_same_seed_same_interval_and_other_seed_differs():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    f1 = partial(f1_score, average="macro")
    a = bootstrap_ci(f1, y_true, y_pred, n_boot=300, seed=5)
    b = bootstrap_ci(f1, y_true, y_pred, n_boot=300, seed=5)
    c = bootstrap_ci(f1, y_true, y_pred, n_boot=300, seed=6)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_group_bootstrap_keeps_groups_together_and_is_wider():
    # Two donors: one always right, one always wrong. Resampling donors gives 0, 0.5 or 1;
    # resampling cells gives a narrow interval around 0.5 (pseudoreplication).
    y_true = np.zeros(200, dtype=int)
    y_pred = np.r_[np.zeros(100, dtype=int), np.ones(100, dtype=int)]
    donors = np.repeat(["d1", "d2"], 100)
    grouped = bootstrap_ci(accuracy_score, y_true, y_pred, n_boot=400, seed=0, groups=donors)
    cells = bootstrap_ci(accuracy_score, y_true, y_pred, n_boot=400, seed=0)
    assert set(np.unique(grouped.samples)) <= {0.0, 0.5, 1.0}
    assert (grouped.low, grouped.high) == (0.0, 1.0)
    assert cells.high - cells.low < 0.2


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same order"):
        bootstrap_ci(accuracy_score, [0, 1, 1], [0, 1], n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(accuracy_score, [0, 1], [0, 1], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(accuracy_score, [0, 1], [0, 1], n_boot=10, alpha=1.5)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(accuracy_score, [], [], n_boot=10)
    with pytest.raises(ValueError, match="one group"):
        bootstrap_ci(accuracy_score, [0, 1], [0, 1], n_boot=10, groups=["a", "a"])


def test_nan_resamples_are_counted_and_excluded():
    # The metric is undefined when a resample has no positive class.
    def recall_of_1(t, p):
        m = t == 1
        return np.nan if not m.any() else float(np.mean(p[m] == 1))

    y_true = np.r_[np.ones(2, dtype=int), np.zeros(8, dtype=int)]
    res = bootstrap_ci(recall_of_1, y_true, y_true, n_boot=300, seed=0)
    assert res.n_failed > 0 and res.low == res.high == 1.0
