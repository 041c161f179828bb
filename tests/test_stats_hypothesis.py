"""tflib.stats tests, power and depletion score (chapter 12), each against a reference case."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from tflib import stats


def test_rank_test_matches_scipy_and_a_hand_count():
    x, y = [1.0, 2.0, 3.0], [2.0, 4.0, 5.0, 6.0]
    out = stats.rank_test(x, y, alternative="less")
    # U of x by hand: pairs with x > y (3 > 2) plus half the ties ((2, 2)) -> U = 1.5 of 12 pairs
    assert out.loc[0, "statistic"] == 1.5
    assert out.loc[0, "effect"] == pytest.approx(1.5 / 12)
    ref = ss.mannwhitneyu(x, y, alternative="less")
    assert out.loc[0, "pvalue"] == pytest.approx(ref.pvalue)
    assert list(out.columns) == ["statistic", "pvalue", "effect", "n_x", "n_y", "alternative"]


def test_permutation_test_is_exact_on_a_small_case_and_seeded():
    x, y = [3.0, 4.0, 5.0], [0.0, 1.0, 2.0]
    out = stats.permutation_test(x, y, alternative="greater")
    # 20 ways to pick 3 of 6 labels; only the observed split reaches a difference of 3
    assert out.loc[0, "effect"] == pytest.approx(3.0)
    assert out.loc[0, "pvalue"] == pytest.approx(1 / 20)
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    one = stats.permutation_test(a, b, n_resamples=999, seed=4)
    assert one.equals(stats.permutation_test(a, b, n_resamples=999, seed=4))


def test_depletion_score_extremes_and_against_auroc():
    assert stats.depletion_score([0.1, 0.2], [0.5, 0.6, 0.7]) == 1.0
    assert stats.depletion_score([0.8, 0.9], [0.5, 0.6]) == -1.0
    assert stats.depletion_score([0.5, 0.5], [0.5, 0.5]) == 0.0
    rng = np.random.default_rng(1)
    p, u = rng.uniform(size=50), rng.uniform(size=70)
    auc = np.mean([(a > b) + 0.5 * (a == b) for a in p for b in u])
    assert stats.depletion_score(p, u) == pytest.approx(2 * (0.5 - auc))


def test_power_and_sample_size_agree_with_statsmodels_and_each_other():
    from statsmodels.stats.power import TTestIndPower

    assert stats.power(0.5, 64) == pytest.approx(TTestIndPower().power(0.5, 64, 0.05))
    n = stats.sample_size(0.5, 0.8)
    assert n == 64                                                     # the textbook answer for d = 0.5
    assert stats.power(0.5, n) >= 0.8 > stats.power(0.5, n - 1)
    assert stats.power(-0.5, 64) == stats.power(0.5, 64)               # two-sided: the sign does not matter
    # one-sided: the sign counts, and scipy's names mean the same
    assert stats.power(-0.5, 20, alternative="larger") < 0.01
    assert stats.power(-0.5, 20, alternative="smaller") == pytest.approx(stats.power(0.5, 20, alternative="larger"))
    assert stats.power(0.5, 20, alternative="greater") == stats.power(0.5, 20, alternative="larger")
    assert stats.power(np.float32(0.5), np.int64(64)) == pytest.approx(stats.power(0.5, 64))
    with pytest.raises(ValueError, match="points the other way"):
        stats.sample_size(-0.5, alternative="larger")
    assert stats.sample_size(-0.5, alternative="smaller") == stats.sample_size(0.5, alternative="larger")


@pytest.mark.parametrize("call, match", [
    (lambda: stats.rank_test([1, np.nan], [1, 2]), "x has 1 NaN"),
    (lambda: stats.rank_test([], [1, 2]), "x is empty"),
    (lambda: stats.rank_test([1], [2], alternative="bigger"), "alternative='bigger'"),
    (lambda: stats.permutation_test([1, 2], [3, np.inf]), "y has 1 NaN or infinite"),
    (lambda: stats.depletion_score([np.nan], [0.2]), "perturbed has 1 NaN"),
    (lambda: stats.power(0.0, 10), "non-zero Cohen's d"),
    (lambda: stats.power(0.5, 1), "at least 2 replicates"),
    (lambda: stats.sample_size(0.5, 1.2), "power=1.2"),
    (lambda: stats.sample_size(0.5, alpha=0), "alpha=0"),
])
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _planted_table(seed=0):
    """A perturb-like table: gene "M" lowers fate Beta in every cell, 9 genes do nothing,
    and two random genes serve as a null."""
    rng = np.random.default_rng(seed)
    rows = []
    for gene in ["M"] + [f"g{i}" for i in range(9)] + ["r1", "r2"]:
        shift = -0.2 if gene == "M" else 0.0
        for cell in range(40):
            rows.append({"cell": f"c{cell}", "gene": gene, "kind": "delete", "expressed": cell % 5 != 0,
                         "fate_shift_Beta": shift + rng.normal(0, 0.05), "fate_shift_Alpha": rng.normal(0, 0.05)})
    import pandas as pd

    return pd.DataFrame(rows)


def test_test_hypotheses_finds_the_planted_gene_and_only_it():
    table = _planted_table()
    out = stats.test_hypotheses(table, "Beta", "decrease", n_boot=199)
    assert out.index[0] == "M" and out.loc["M", "verdict"] == "supported"
    assert (out.drop("M")["verdict"] == "not supported").all()
    assert out.loc["M", "n_cells"] == 32                                 # only the cells that express M
    assert out.loc["M", "ci_low"] < out.loc["M", "mean_shift"] < out.loc["M", "ci_high"] < 0
    np.testing.assert_allclose(out["qvalue"], stats.fdr(out["pvalue"].to_numpy()), rtol=1e-12)
    # the wrong direction is not supported; the random-gene null gives the same answer for M
    assert stats.test_hypotheses(table, "Beta", "increase", n_boot=99).loc["M", "verdict"] == "not supported"
    vs_null = stats.test_hypotheses(table, "Beta", "decrease", null_genes=["r1", "r2"], n_boot=99)
    assert "r1" not in vs_null.index and vs_null.loc["M", "verdict"] == "supported"
    # same seed, same table
    assert out.equals(stats.test_hypotheses(table, "Beta", "decrease", n_boot=199))


def test_test_hypotheses_bad_input_names_the_fix():
    table = _planted_table()
    with pytest.raises(KeyError, match=r"no column 'fate_shift_Delta'; fates in this table: \['Beta', 'Alpha'\]"):
        stats.test_hypotheses(table, "Delta")
    with pytest.raises(KeyError, match="no fate_shift_ column at all"):
        stats.test_hypotheses(table.drop(columns=["fate_shift_Beta", "fate_shift_Alpha"]), "Beta")
    with pytest.raises(ValueError, match="direction='down'"):
        stats.test_hypotheses(table, "Beta", "down")
    with pytest.raises(ValueError, match=r"alpha=5 .* must lie in \(0, 1\)"):
        stats.test_hypotheses(table, "Beta", alpha=5)               # would call every gene supported
    with pytest.raises(ValueError, match="null_genes is empty"):
        stats.test_hypotheses(table, "Beta", null_genes=[])
    with pytest.raises(KeyError, match="null genes"):
        stats.test_hypotheses(table, "Beta", null_genes=["nope"])
    bad = table.copy()
    bad.loc[3, "fate_shift_Beta"] = np.nan
    with pytest.raises(ValueError, match="fate_shift_Beta of M has 1 NaN"):
        stats.test_hypotheses(bad, "Beta")


def test_validation_table_on_planted_predictors():
    rng = np.random.default_rng(0)
    truth = np.zeros(60, bool)
    truth[:12] = True
    perfect = truth.astype(float) + rng.uniform(0, 0.1, 60)           # the truth, lightly jittered
    shuffled = rng.permutation(perfect)
    out = stats.validation_table({"perfect": perfect, "shuffled": shuffled}, truth,
                                 calls={"perfect": perfect > 0.5, "shuffled": shuffled > 0.5}, n_boot=200)
    assert out.loc["perfect", "auroc"] == 1.0 and out.loc["perfect", "precision"] == 1.0
    assert out.loc["perfect", "recall"] == 1.0 and out.loc["perfect", "average_precision"] == 1.0
    assert 0.3 < out.loc["shuffled", "auroc"] < 0.7
    assert out.loc["shuffled", "auroc_low"] < 0.5 < out.loc["shuffled", "auroc_high"]
    assert out.loc["shuffled", "base_rate"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="AUROC needs both"):
        stats.validation_table({"a": perfect}, np.ones(60, bool))
    with pytest.raises(ValueError, match="need 60 finite numbers"):
        stats.validation_table({"a": perfect[:10]}, truth)
    with pytest.raises(KeyError, match="have no scores"):
        stats.validation_table({"a": perfect}, truth, calls={"b": truth})


def test_with_intervals_formats_each_metric_once():
    table = pd.DataFrame({"auroc": [0.8512, np.nan], "auroc_low": [0.7, np.nan], "auroc_high": [0.95, np.nan],
                          "n_called": [3, 0]}, index=["a", "b"])
    out = stats.with_intervals(table, digits=2)
    assert list(out.columns) == ["auroc", "n_called"]
    assert out.loc["a", "auroc"] == "0.85 [0.70, 0.95]" and out.loc["b", "auroc"] == "–"
    assert table.shape == (2, 4)                                      # the input is not modified


def test_slips_found_by_a_new_user_trial_are_handled():
    table = _planted_table()
    once = stats.test_hypotheses(table, "Beta", null_genes=["r1", "r2"], n_boot=99)
    twice = stats.test_hypotheses(table, "Beta", null_genes=["r1", "r2", "r1"], n_boot=99)   # matched_random_genes repeats
    assert once.equals(twice)
    with pytest.raises(ValueError, match="neither was given"):
        stats.test_hypotheses(table)
    with pytest.raises(ValueError, match="both were given"):
        stats.test_hypotheses(table, "Beta", score="fate_shift_Beta")
    shown = stats.with_intervals(once)                                # auroc without bounds: left as it is
    assert shown["auroc"].equals(once["auroc"])
    ci = stats.with_intervals(once, metrics=["mean_shift"], bounds={"mean_shift": ("ci_low", "ci_high")}, digits=3)
    assert "ci_low" not in ci and ci.loc["M", "mean_shift"].startswith(f"{once.loc['M', 'mean_shift']:.3f} [")


def test_one_word_for_direction_and_clear_small_sample_errors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 30), rng.normal(1, 1, 30)
    a = stats.rank_test(x, y, alternative="smaller")
    assert a.equals(stats.rank_test(x, y, alternative="less"))           # power()'s word works here too
    assert stats.permutation_test(x, y, alternative="larger", n_resamples=99).loc[0, "alternative"] == "greater"
    with pytest.raises(ValueError, match="at least 2 values in each sample"):
        stats.permutation_test([1.0], [2.0])
    from sklearn.metrics import roc_auc_score

    y_true = np.r_[np.zeros(10), np.ones(10)]
    y_pred = rng.uniform(size=20)
    y_pred[3] = np.nan
    with pytest.raises(ValueError, match=r"y_pred has 1 cells with NaN .*positions \[3\].*keep = np.isfinite"):
        stats.bootstrap_ci(roc_auc_score, y_true, y_pred, n_boot=20)
    keep = np.isfinite(y_pred)
    assert stats.bootstrap_ci(roc_auc_score, y_true[keep], y_pred[keep], n_boot=20) is not None   # the fix runs
