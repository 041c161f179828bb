"""Scoring predictors of perturbation effects against the true effects (chapters 12--13).

The simulator knows which genes really change a fate (:func:`tflib.datasets.knockout`), so a
predictor's ranking of genes can be scored like a classifier: AUROC and average precision of
its scores (``sklearn.metrics``), and, for the genes it *calls* (e.g. q <= 0.1), precision and
recall. Every number comes with a percentile-bootstrap interval over genes
(:func:`tflib.stats.bootstrap_ci`): with a few dozen genes, intervals are wide, and a table
without them would overstate every difference.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["validation_table", "with_intervals"]


def _auroc(truth, score):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(truth, score) if 0 < truth.sum() < len(truth) else np.nan


def _average_precision(truth, score):
    from sklearn.metrics import average_precision_score

    return average_precision_score(truth, score) if truth.any() else np.nan


def _precision(truth, called):
    return truth[called.astype(bool)].mean() if called.any() else np.nan


def _recall(truth, called):
    return called.astype(bool)[truth.astype(bool)].mean() if truth.any() else np.nan


def validation_table(scores: dict, truth, *, calls: dict | None = None, n_boot: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """AUROC, average precision, and the calls' precision and recall of each predictor, with CIs.

    Parameters
    ----------
    scores
        ``{predictor name: one score per gene}``; a higher score claims a stronger effect.
    truth
        One boolean per gene (same order): does the gene really have the effect?
    calls
        Optional ``{predictor name: one boolean per gene}``: the genes it calls (e.g. q <= 0.1).
    n_boot, seed
        Bootstrap resamples over genes, and their seed.

    Returns
    -------
    pandas.DataFrame
        One row per predictor: ``auroc``, ``auroc_low``, ``auroc_high``, ``average_precision``
        (+ ``_low``/``_high``), ``base_rate`` (the average precision of a random ranking) and,
        for predictors in ``calls``, ``n_called``, ``precision``, ``recall`` (each with
        ``_low``/``_high``). Undefined metrics (e.g. precision with no call) are NaN.
    """
    from .bootstrap import bootstrap_ci

    truth = np.asarray(truth)
    if truth.dtype != bool:
        raise TypeError("truth must be booleans (True: the gene really has the effect).")
    if truth.all() or not truth.any():
        raise ValueError(f"truth has {int(truth.sum())} of {truth.size} genes with an effect; AUROC needs both "
                         "kinds. Fix: include genes with and without an effect.")
    calls = calls or {}
    unknown = set(calls) - set(scores)
    if unknown:
        raise KeyError(f"calls for {sorted(unknown)} have no scores; give each predictor's scores too.")
    rows = {}
    for name, score in scores.items():
        score = np.asarray(score, dtype=float)
        if score.shape != truth.shape or not np.isfinite(score).all():
            raise ValueError(f"scores of {name!r}: need {truth.size} finite numbers, one per gene "
                             f"(got shape {score.shape}, {int((~np.isfinite(score)).sum())} not finite).")
        row = {}
        for key, fn in (("auroc", _auroc), ("average_precision", _average_precision)):
            r = bootstrap_ci(fn, truth, score, n_boot=n_boot, seed=seed)
            row.update({key: r.estimate, f"{key}_low": r.low, f"{key}_high": r.high})
        row["base_rate"] = float(truth.mean())
        if name in calls:
            called = np.asarray(calls[name], dtype=bool)
            if called.shape != truth.shape:
                raise ValueError(f"calls of {name!r}: need {truth.size} booleans, got shape {called.shape}.")
            row["n_called"] = int(called.sum())
            for key, fn in (("precision", _precision), ("recall", _recall)):
                if key == "precision" and not called.any():
                    row.update({key: np.nan, f"{key}_low": np.nan, f"{key}_high": np.nan})
                    continue
                r = bootstrap_ci(fn, truth, called, n_boot=n_boot, seed=seed)
                row.update({key: r.estimate, f"{key}_low": r.low, f"{key}_high": r.high})
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("predictor")


def with_intervals(table: pd.DataFrame, metrics=("auroc", "precision", "recall"), *, digits: int = 2,
                   bounds: dict | None = None) -> pd.DataFrame:
    """Display form of a scored table: one ``"estimate [low, high]"`` text column per metric (chapters 12--13).

    Parameters
    ----------
    table
        A frame with ``<metric>``, ``<metric>_low`` and ``<metric>_high`` columns, e.g. the
        output of :func:`validation_table`. Other columns (such as ``n_called``) are kept.
    metrics
        The metrics to format; those missing from ``table``, or without both bound columns, are
        left as they are.
    digits
        Decimals shown.
    bounds
        Bound columns with other names, e.g. ``{"mean_shift": ("ci_low", "ci_high")}`` for the
        output of :func:`tflib.stats.test_hypotheses`.

    Returns
    -------
    pandas.DataFrame
        Same rows; each metric's three columns replaced by one text column (``"–"`` where the
        estimate is undefined). Meant for display only: keep ``table`` for computing.
    """
    out = table.copy()
    bounds = dict(bounds or {})
    for m in metrics:
        lo_col, hi_col = bounds.get(m, (f"{m}_low", f"{m}_high"))
        if m not in out or lo_col not in out or hi_col not in out:
            continue
        est, low, high = (out[c].astype(float) for c in (m, lo_col, hi_col))
        out[m] = [("–" if not np.isfinite(e) else f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
                  for e, lo, hi in zip(est, low, high)]
        out = out.drop(columns=[lo_col, hi_col])
    return out
