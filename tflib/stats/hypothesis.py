"""Two-sample tests for in-silico perturbation hypotheses (chapter 12).

A prediction such as "deleting G lowers the probability of fate A" becomes a comparison of two
samples: the fate probabilities (or shifts) of perturbed cells against a reference. Each
function here wraps the maintained implementation and returns a one-row tidy frame, so that
many genes' tests stack into one table:

* :func:`rank_test`: Mann--Whitney U (``scipy.stats.mannwhitneyu``), with the
  common-language effect size ``P(x > y) + P(x = y) / 2`` (the AUROC of x against y);
* :func:`permutation_test`: the difference of means under label permutation
  (``scipy.stats.permutation_test``);
* :func:`depletion_score`: RegVelo's fate-depletion score, ``2 * (0.5 - AUROC)`` of
  perturbed against unperturbed fate probabilities (``sklearn.metrics.roc_auc_score``):
  +1 when every perturbed cell has a lower probability than every unperturbed one;
* :func:`test_hypotheses`: one verdict per gene of a :func:`tflib.tl.perturb` table, for the
  statement "perturbing G moves fate F in this direction".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["rank_test", "permutation_test", "depletion_score", "test_hypotheses"]

_ALTERNATIVES = ("two-sided", "less", "greater")
#: The words of :mod:`tflib.stats.sizing` (statsmodels') accepted too, so one vocabulary works everywhere.
_ALIASES = {"two-sided": "two-sided", "less": "less", "greater": "greater", "smaller": "less", "larger": "greater"}


def _sample(values, name: str) -> np.ndarray:
    """A 1-D float array with at least one value and no NaN, or an error that names the problem."""
    a = np.asarray(values, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name} is empty: a test needs at least one value in each sample.")
    bad = ~np.isfinite(a)
    if bad.any():
        where = ", ".join(str(int(i)) for i in np.flatnonzero(bad)[:5])
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values (positions {where}). "
                         "Fix: drop those cells before testing (an array: values[np.isfinite(values)]; a "
                         "perturbation table: table.dropna(subset=[the score column])).")
    return a


def _check_alternative(alternative: str) -> str:
    """SciPy's name of ``alternative`` (``"larger"``/``"smaller"`` are accepted as in ``power``)."""
    if alternative not in _ALIASES:
        raise ValueError(f"alternative={alternative!r}; use one of {_ALTERNATIVES} "
                         "('less' or 'smaller': x tends to be smaller than y; 'greater' or 'larger': bigger).")
    return _ALIASES[alternative]


def rank_test(x, y, *, alternative: str = "two-sided") -> pd.DataFrame:
    """Mann--Whitney U test of sample ``x`` against sample ``y`` (chapter 12).

    Parameters
    ----------
    x, y
        The two samples (e.g. a fate's probability in perturbed and in control cells).
    alternative
        ``"two-sided"``, ``"less"`` (x tends to be smaller) or ``"greater"``; ``"smaller"`` and
        ``"larger"`` (the words of :func:`tflib.stats.power`) mean the same.

    Returns
    -------
    pandas.DataFrame
        One row: ``statistic`` (U of ``x``), ``pvalue``, ``effect`` (the common-language effect
        size ``U / (n_x n_y)``: the chance that a random x exceeds a random y, ties counted half;
        0.5 means no shift), ``n_x``, ``n_y``, ``alternative``.
    """
    from scipy.stats import mannwhitneyu

    alternative = _check_alternative(alternative)
    x, y = _sample(x, "x"), _sample(y, "y")
    res = mannwhitneyu(x, y, alternative=alternative, method="auto")
    return pd.DataFrame([{"statistic": float(res.statistic), "pvalue": float(res.pvalue),
                          "effect": float(res.statistic) / (len(x) * len(y)), "n_x": len(x), "n_y": len(y),
                          "alternative": alternative}])


def permutation_test(x, y, *, alternative: str = "two-sided", n_resamples: int = 9999,
                     seed: int = 0) -> pd.DataFrame:
    """Permutation test of the difference of means, ``mean(x) - mean(y)`` (chapter 12).

    The cells' labels are shuffled ``n_resamples`` times (``scipy.stats.permutation_test``;
    exact when the samples are small enough to enumerate). Deterministic for ``seed``.

    Returns
    -------
    pandas.DataFrame
        One row: ``statistic`` (= ``effect``, the observed difference of means), ``pvalue``,
        ``effect``, ``n_x``, ``n_y``, ``alternative``, ``n_resamples``.
    """
    from scipy.stats import permutation_test as _perm

    alternative = _check_alternative(alternative)
    x, y = _sample(x, "x"), _sample(y, "y")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"a permutation test needs at least 2 values in each sample (x has {len(x)}, y has "
                         f"{len(y)}): one value per group cannot be shuffled into a null. Fix: add replicates "
                         "(cells, or samples for a pseudobulk comparison).")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples}; use at least 1 (9,999 is a common choice).")

    def diff(a, b, axis):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    res = _perm((x, y), diff, permutation_type="independent", alternative=alternative,
                n_resamples=n_resamples, vectorized=True, random_state=np.random.default_rng(seed))
    return pd.DataFrame([{"statistic": float(res.statistic), "pvalue": float(res.pvalue),
                          "effect": float(res.statistic), "n_x": len(x), "n_y": len(y),
                          "alternative": alternative, "n_resamples": n_resamples}])


def depletion_score(perturbed, unperturbed) -> float:
    """RegVelo's fate-depletion score: ``2 * (0.5 - AUROC)`` of perturbed vs unperturbed (chapter 12).

    ``AUROC`` is the chance that a perturbed cell's fate probability exceeds an unperturbed
    cell's (ties half). The score is ``+1`` when the perturbation lowers the fate probability
    of every cell below every unperturbed cell, ``0`` for no shift and ``-1`` for the opposite.
    """
    from sklearn.metrics import roc_auc_score

    p, u = _sample(perturbed, "perturbed"), _sample(unperturbed, "unperturbed")
    labels = np.r_[np.ones(len(p)), np.zeros(len(u))]
    return float(2.0 * (0.5 - roc_auc_score(labels, np.r_[p, u])))


_DIRECTIONS = {"decrease": "less", "increase": "greater", "two-sided": "two-sided"}


def test_hypotheses(table: pd.DataFrame, fate: str | None = None, direction: str = "decrease", *,
                    score: str | None = None, null_genes=None, alpha: float = 0.1, n_boot: int = 999,
                    seed: int = 0) -> pd.DataFrame:
    """Test "perturbing G shifts fate F in ``direction``" for every gene of a perturbation table (chapter 12).

    Each gene's per-cell shifts (the rows where the perturbation changed the input: cells that
    express a deleted gene, every cell for an overexpression) are compared with a reference
    sample by a one-sided Mann--Whitney test (:func:`rank_test`), and the p-values are adjusted
    together (Benjamini--Hochberg, :func:`tflib.stats.fdr`). The reference is, as in
    Geneformer's in-silico perturber, the shifts of *all other* perturbed genes; with
    ``null_genes`` it is the shifts of those genes instead (e.g. expression-matched random genes
    from :func:`tflib.tl.matched_random_genes`), which are then not tested themselves.

    Parameters
    ----------
    table
        The per-(cell, gene) output of :func:`tflib.tl.perturb` or :func:`tflib.tl.perturb_linear`.
    fate
        Scores the column ``fate_shift_<fate>``; or give ``score`` (any score column, e.g.
        ``"goal_cosine_shift"``) instead.
    direction
        ``"decrease"``, ``"increase"`` or ``"two-sided"``.
    null_genes
        Genes whose shifts form the reference sample (default: every other gene). A gene listed
        twice counts once, so the ``random_gene`` column of
        :func:`tflib.tl.matched_random_genes` can be passed as it is.
    alpha
        False discovery rate at which a hypothesis is called.
    n_boot, seed
        Resamples and seed of the percentile-bootstrap CI of each gene's mean shift
        (``scipy.stats.bootstrap``).

    Returns
    -------
    pandas.DataFrame
        One row per tested gene, sorted by p-value: ``n_cells``, ``mean_shift`` and its
        ``ci_low``/``ci_high``, ``auroc`` (chance that a cell's shift exceeds a reference
        shift), ``pvalue``, ``qvalue`` and ``verdict``: ``"supported"`` (q <= alpha, shift in the
        stated direction), ``"not supported"``, or for two-sided tests ``"shift"``.
    """
    from scipy.stats import bootstrap

    from .multiple_testing import fdr

    if direction not in _DIRECTIONS:
        raise ValueError(f"direction={direction!r}; use 'decrease', 'increase' or 'two-sided'.")
    if (fate is None) == (score is None):
        given = "both were given" if fate is not None else "neither was given"
        raise ValueError(f"give exactly one of fate= (scores fate_shift_<fate>) and score= (a score column); "
                         f"{given}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is the FDR level of a 'supported' verdict and must lie in (0, 1), "
                         "e.g. 0.1.")
    column = score if score is not None else f"fate_shift_{fate}"
    if column not in table.columns:
        fates = [c[len("fate_shift_"):] for c in table.columns if c.startswith("fate_shift_")]
        hint = (f"fates in this table: {fates}" if fates else
                "it has no fate_shift_ column at all: run tflib.tl.perturb with fate_model=")
        raise KeyError(f"the perturbation table has no column {column!r}; {hint}.")
    need = {"gene", "expressed", "kind"}
    if not need <= set(table.columns):
        raise KeyError(f"table lacks {sorted(need - set(table.columns))}; pass the output of tflib.tl.perturb.")
    acted = table[table["expressed"] | (table["kind"] == "overexpress")]
    values = {g: _sample(v, f"{column} of {g}") for g, v in acted.groupby("gene", sort=False)[column]}
    null = None
    if null_genes is not None:
        null_genes = [null_genes] if isinstance(null_genes, str) else list(dict.fromkeys(null_genes))  # once each
        if not null_genes:
            raise ValueError("null_genes is empty; pass the control genes (e.g. "
                             "tflib.tl.matched_random_genes), or null_genes=None to compare each gene "
                             "with all the others.")
        missing = [g for g in null_genes if g not in values]
        if missing:
            raise KeyError(f"null genes {missing[:5]} have no perturbed cell in the table; perturb them too.")
        null = np.concatenate([values.pop(g) for g in null_genes])
    if not values:
        raise ValueError("no gene left to test (every gene is a null gene or was never expressed).")
    alternative = _DIRECTIONS[direction]
    rng = np.random.default_rng(seed)
    pooled = np.concatenate(list(values.values()))                      # every tested gene's shifts, once
    owner = np.repeat(np.arange(len(values)), [len(v) for v in values.values()])
    rows = []
    for i, (gene, x) in enumerate(values.items()):
        ref = null if null is not None else pooled[owner != i]
        test = rank_test(x, ref, alternative=alternative).iloc[0]
        ci = (bootstrap((x,), np.mean, n_resamples=n_boot, method="percentile", random_state=rng).confidence_interval
              if len(x) > 1 else (np.nan, np.nan))
        rows.append({"gene": gene, "n_cells": len(x), "mean_shift": float(x.mean()), "ci_low": float(ci[0]),
                     "ci_high": float(ci[1]), "auroc": float(test["effect"]), "pvalue": float(test["pvalue"])})
    out = pd.DataFrame(rows).set_index("gene")
    out["qvalue"] = fdr(out["pvalue"].to_numpy(), method="bh")
    called = out["qvalue"] <= alpha
    out["verdict"] = np.where(called, "shift" if direction == "two-sided" else "supported", "not supported")
    return out.sort_values("pvalue")


test_hypotheses.__test__ = False  # a library function, not a pytest test, despite its name
