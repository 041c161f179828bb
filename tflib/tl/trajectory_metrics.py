"""Validation of velocity and fate estimates against a known answer (chapter 10).

- :func:`row_cosine`: per-cell cosine of two velocity fields (e.g. an embedding velocity and the
  embedding velocity of the simulator's *true* velocity).
- :func:`match_terminal_states` and :func:`fates_in_truth_space`: name each estimated terminal
  state after the true fate most of its cells belong to, and re-express estimated fate
  probabilities as columns of the true fates (a true fate that no state found gets 0).
- :func:`fate_accuracy`: mean absolute error against the true fate probabilities and the AUROC
  of each cell's true lineage, with percentile-bootstrap 95 % intervals over cells
  (:func:`tflib.stats.bootstrap_ci`).
- :func:`cross_boundary_correctness`: on real data without a truth, whether velocities at the
  boundary between two clusters point from the source towards the target cluster.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from tflib._compat import dense

__all__ = ["row_cosine", "match_terminal_states", "fates_in_truth_space", "fate_accuracy",
           "fate_accuracy_difference", "cross_boundary_correctness"]


def row_cosine(x, y) -> np.ndarray:
    """Cosine similarity of each row of ``x`` with the same row of ``y`` (NaN where a row is zero)."""
    x, y = dense(x), dense(y)
    if x.shape != y.shape:
        raise ValueError(f"x {x.shape} and y {y.shape} must have the same shape (cells x dimensions).")
    norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (x * y).sum(1) / norm, np.nan)


def match_terminal_states(adata, *, label_key: str = "fate", state_key: str = "terminal_state") -> pd.DataFrame:
    """Name each terminal state after the majority ``obs[label_key]`` of its cells (chapter 10).

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.fates` (``obs[state_key]``) with the true labels in ``obs[label_key]``.
    label_key
        ``obs`` column of the true fates (the simulator's ``"fate"``).
    state_key
        ``obs`` column of the estimated terminal states.

    Returns
    -------
    A table with one row per state (as in ``uns["fate_probs_names"]``): ``label`` (the true
    fate), ``purity`` (fraction of the state's cells with that label) and ``n_cells``. Nothing
    is written into ``adata``.
    """
    if state_key not in adata.obs or label_key not in adata.obs:
        raise KeyError(f"adata.obs needs {state_key!r} (from tflib.tl.fates) and {label_key!r} (the truth).")
    rows = {}
    for state in adata.uns.get("fate_probs_names", adata.obs[state_key].dropna().unique()):
        labels = adata.obs.loc[adata.obs[state_key].astype(object) == state, label_key].astype(str)
        if labels.empty:
            rows[str(state)] = {"label": None, "purity": np.nan, "n_cells": 0}
            continue
        counts = labels.value_counts()
        rows[str(state)] = {"label": counts.index[0], "purity": float(counts.iloc[0] / counts.sum()),
                            "n_cells": int(counts.sum())}
    return pd.DataFrame.from_dict(rows, orient="index")


def fates_in_truth_space(P: pd.DataFrame, mapping: Mapping[str, str] | pd.DataFrame,
                         truth_names: Sequence[str]) -> pd.DataFrame:
    """Estimated probabilities as columns ``truth_names``: states mapped to the same fate are summed.

    ``mapping`` is ``{state: true fate}`` or the output of :func:`match_terminal_states`. A true
    fate that no state maps to gets probability 0, so a missed fate costs its full mass in the
    error; a state mapped to something outside ``truth_names`` (e.g. the progenitor pool) is
    dropped, and the rows are renormalised over the remaining fates.
    """
    if isinstance(mapping, pd.DataFrame):
        mapping = mapping["label"].to_dict()
    out = pd.DataFrame(0.0, index=P.index, columns=list(truth_names))
    for state in P.columns:
        fate = mapping.get(str(state))
        if fate in out.columns:
            out[fate] += P[state].to_numpy(dtype=float)
    total = out.sum(1).to_numpy()
    uniform = 1.0 / len(out.columns)
    out.loc[:, :] = np.where(total[:, None] > 0, out.to_numpy() / np.where(total > 0, total, 1.0)[:, None], uniform)
    return out


def _mae(truth: np.ndarray, est: np.ndarray) -> float:
    return float(np.mean(np.abs(truth - est)))


def _mean_auroc(labels: np.ndarray, est: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores = []
    for k in range(est.shape[1]):
        positive = labels == k
        if positive.all() or not positive.any():
            return float("nan")                                  # a resample without one class
        scores.append(roc_auc_score(positive, est[:, k]))
    return float(np.mean(scores))


def fate_accuracy(est: pd.DataFrame, truth: pd.DataFrame, lineage, *, cells=None, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """MAE and AUROC of estimated fate probabilities against the truth, with bootstrap CIs (chapter 10).

    Parameters
    ----------
    est, truth
        Cells × true fates (same columns; ``est`` from :func:`fates_in_truth_space`).
    lineage
        Each cell's true terminal fate (the simulator's ``obs["lineage"]``).
    cells
        Evaluate on these ``obs_names`` only (e.g. held-out test cells).
    n_boot, seed
        Bootstrap resamples of cells and their seed.

    Returns
    -------
    ``{"mae": BootstrapResult, "auroc": BootstrapResult, "pearson": float, "n_cells": int}``:
    the mean absolute error over cells and fates; the AUROC with which each fate's probability
    ranks the cells of that lineage above the others, averaged over fates; the mean per-fate
    Pearson correlation (no interval).
    """
    from tflib.stats import bootstrap_ci

    lineage = pd.Series(np.asarray(lineage).astype(str), index=truth.index)
    if list(est.columns) != list(truth.columns):
        raise ValueError(f"est columns {list(est.columns)} must equal truth columns {list(truth.columns)}; "
                         "map the estimate with fates_in_truth_space first.")
    idx = truth.index if cells is None else pd.Index(cells)
    E = est.loc[idx].to_numpy(dtype=float)                                  # (n, K)
    Tr = truth.loc[idx].to_numpy(dtype=float)                               # (n, K)
    if not np.isfinite(E).all():
        raise ValueError("est has NaN rows (cells without a prediction); drop them from `cells`.")
    codes = pd.Categorical(lineage.loc[idx], categories=list(truth.columns)).codes
    pearson = [np.corrcoef(E[:, k], Tr[:, k])[0, 1] for k in range(E.shape[1]) if E[:, k].std() > 0]
    return {
        "mae": bootstrap_ci(_mae, Tr, E, n_boot=n_boot, seed=seed),
        "auroc": bootstrap_ci(_mean_auroc, codes, E, n_boot=n_boot, seed=seed),
        "pearson": float(np.mean(pearson)) if pearson else float("nan"),
        "n_cells": int(len(idx)),
    }


def fate_accuracy_difference(est_a: pd.DataFrame, est_b: pd.DataFrame, truth: pd.DataFrame, lineage, *,
                             cells=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of ``metric(a) - metric(b)`` for MAE and AUROC on the same cells (chapter 10).

    Two methods scored on the same cells are not independent: their errors share the hard
    cells. Resampling the cells once and scoring both methods on each resample gives the
    interval of the *difference*, which is narrower and is the right one to decide whether
    ``a`` differs from ``b``. Arguments as in :func:`fate_accuracy`.

    Returns
    -------
    ``{"mae": BootstrapResult, "auroc": BootstrapResult}`` of ``a - b`` (negative MAE
    difference: ``a`` is more accurate; positive AUROC difference: ``a`` ranks better).
    """
    from tflib.stats import bootstrap_ci

    lineage = pd.Series(np.asarray(lineage).astype(str), index=truth.index)
    for est in (est_a, est_b):
        if list(est.columns) != list(truth.columns):
            raise ValueError("Both estimates must have the truth's columns; map them with fates_in_truth_space.")
    idx = truth.index if cells is None else pd.Index(cells)
    K = truth.shape[1]
    Tr = truth.loc[idx].to_numpy(dtype=float)                               # (n, K)
    codes = pd.Categorical(lineage.loc[idx], categories=list(truth.columns)).codes.astype(float)
    y_true = np.c_[Tr, codes]                                               # (n, K + 1)
    y_pred = np.c_[est_a.loc[idx].to_numpy(dtype=float), est_b.loc[idx].to_numpy(dtype=float)]  # (n, 2K)
    if not np.isfinite(y_pred).all():
        raise ValueError("An estimate has NaN rows (cells without a prediction); drop them from `cells`.")

    def d_mae(t, p):
        return _mae(t[:, :K], p[:, :K]) - _mae(t[:, :K], p[:, K:])

    def d_auroc(t, p):
        lab = t[:, K].astype(int)
        return _mean_auroc(lab, p[:, :K]) - _mean_auroc(lab, p[:, K:])

    return {"mae": bootstrap_ci(d_mae, y_true, y_pred, n_boot=n_boot, seed=seed),
            "auroc": bootstrap_ci(d_auroc, y_true, y_pred, n_boot=n_boot, seed=seed)}


def cross_boundary_correctness(X, V, clusters, edges: Sequence[tuple[str, str]], *, n_neighbors: int = 30,
                               n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Do velocities at a cluster boundary point from the source towards the target? (chapter 10)

    For every transition ``(source, target)`` in ``edges``: take the cells of ``source`` that have
    at least one of their ``n_neighbors`` nearest neighbours (in ``X``, found with scikit-learn)
    in ``target``; score each by the mean cosine between its velocity ``V[i]`` and the
    displacements ``X[j] - X[i]`` to those target neighbours. +1: straight at the target;
    0: sideways; -1: away. ``X`` and ``V`` must live in the same space (genes, PCs, or an
    embedding).

    Returns
    -------
    One row per edge plus ``"all"`` (all boundary cells pooled): ``n_cells``, ``score`` (mean
    over cells) and its 95 % bootstrap interval ``low``/``high`` over cells.
    """
    from sklearn.neighbors import NearestNeighbors

    from tflib.stats import bootstrap_ci

    X, V = dense(X), dense(V)
    clusters = np.asarray(clusters).astype(str)
    if X.shape != V.shape or X.shape[0] != clusters.size:
        raise ValueError(f"X {X.shape}, V {V.shape} and clusters ({clusters.size}) must describe the same cells "
                         "in the same space.")
    known = set(clusters)
    for a, b in edges:
        if a not in known or b not in known:
            raise KeyError(f"Edge ({a!r}, {b!r}) names a cluster that is not in the data ({sorted(known)}).")
    k = int(min(n_neighbors + 1, X.shape[0]))
    _, nbrs = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X)         # (n, k), first = the cell itself
    nbrs = nbrs[:, 1:]

    def mean_score(y, _):
        return float(np.mean(y))

    rows, pooled = {}, []
    for a, b in edges:
        scores = []
        for i in np.flatnonzero(clusters == a):
            js = nbrs[i][clusters[nbrs[i]] == b]
            if js.size == 0:
                continue
            scores.append(np.nanmean(row_cosine(np.repeat(V[i][None], js.size, 0), X[js] - X[i])))
        scores = np.asarray(scores, dtype=float)
        scores = scores[np.isfinite(scores)]
        pooled.append(scores)
        name = f"{a} → {b}"
        if scores.size == 0:
            rows[name] = {"n_cells": 0, "score": np.nan, "low": np.nan, "high": np.nan}
            continue
        ci = bootstrap_ci(mean_score, scores, scores, n_boot=n_boot, seed=seed)
        rows[name] = {"n_cells": int(scores.size), "score": ci.estimate, "low": ci.low, "high": ci.high}
    allc = np.concatenate(pooled) if pooled else np.zeros(0)
    if allc.size:
        ci = bootstrap_ci(mean_score, allc, allc, n_boot=n_boot, seed=seed)
        rows["all"] = {"n_cells": int(allc.size), "score": ci.estimate, "low": ci.low, "high": ci.high}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "transition"
    return table
