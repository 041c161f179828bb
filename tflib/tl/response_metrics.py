"""Scores of predicted expression responses, and the genes they are scored on (chapter 11).

Scores (:func:`response_r2`, :func:`response_scores`) are computed on mean expression per gene:
the coefficient of determination (``sklearn.metrics.r2_score``, penalises any bias), the squared
Pearson correlation that scGen reports, and the Pearson correlation of the *change* from control
(``pred - control`` against ``truth - control``), which is not inflated by the genes' baseline
levels. The top differentially expressed genes come from :func:`top_de_genes`. The predictions
scored come from :mod:`tflib.tl.response` (baselines, doubles) and
:mod:`tflib.tl.response_latent` (latent arithmetic). Nothing here modifies the caller's data.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib._compat import layer_matrix

__all__ = ["top_de_genes", "response_r2", "response_scores"]


# --------------------------------------------------------------------------------------------
# reading the AnnData (also used by tflib.tl.response and tflib.tl.response_latent)
# --------------------------------------------------------------------------------------------
def _matrix(adata, layer: str | None):
    return layer_matrix(adata, layer)


def _obs_column(adata, key, what):
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no column {key!r} ({what}). Available: {list(adata.obs.columns)}. "
                       f"Fix: pass the name of the column holding the {what}.")
    return adata.obs[key].astype(str).to_numpy()


# --------------------------------------------------------------------------------------------
# DE genes and scores
# --------------------------------------------------------------------------------------------
def top_de_genes(adata, *, condition_key: str, control: str, stimulated: str, n_genes: int = 100,
                 layer: str | None = None, method: str = "wilcoxon") -> list:
    """The ``n_genes`` genes most changed between two conditions, both directions (chapter 11).

    scanpy's ``rank_genes_groups`` (``stimulated`` against ``control``, default Wilcoxon rank-sum)
    on log-normalised values; genes are ordered by the absolute test statistic, so strongly
    repressed genes count as well as induced ones. Works on a private copy; ``adata`` is not modified.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised in ``X`` or ``layers[layer]``; usually one cell type.
    condition_key, control, stimulated
        ``obs`` column and its two values.
    n_genes
        How many genes to return.
    layer
        Layer with the log-normalised values.
    method
        Any ``rank_genes_groups`` method (``"wilcoxon"``, ``"t-test"``, ...).

    Returns
    -------
    list of str
        Gene names, most changed first.
    """
    import anndata as ad
    import scanpy as sc

    cond = _obs_column(adata, condition_key, "condition labels")
    for v in (control, stimulated):
        if not (cond == str(v)).any():
            raise ValueError(f"No cell has obs[{condition_key!r}] == {v!r}. Values: {sorted(set(cond))}.")
    keep = np.isin(cond, [str(control), str(stimulated)])
    X = _matrix(adata, layer)
    tmp = ad.AnnData(X=sp.csr_matrix(X[np.flatnonzero(keep)], dtype=np.float32),
                     obs=pd.DataFrame({"c": pd.Categorical(cond[keep])}),
                     var=pd.DataFrame(index=pd.Index(np.asarray(adata.var_names).astype(str))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(tmp, "c", groups=[str(stimulated)], reference=str(control), method=method,
                                n_genes=tmp.n_vars)
    res = tmp.uns["rank_genes_groups"]
    names = np.asarray(res["names"][str(stimulated)]).astype(str)
    score = np.nan_to_num(np.asarray(res["scores"][str(stimulated)], dtype=np.float64))
    order = np.argsort(-np.abs(score), kind="stable")
    return names[order][:n_genes].tolist()


def _select(x, genes):
    if genes is None:
        return np.asarray(x, dtype=np.float64)
    if isinstance(x, pd.Series):
        missing = pd.Index(genes).difference(x.index)
        if len(missing):
            raise KeyError(f"{len(missing)} genes are not in the means, e.g. {list(missing[:5])}.")
        return x.loc[list(genes)].to_numpy(dtype=np.float64)
    return np.asarray(x, dtype=np.float64)[np.asarray(genes)]


def response_r2(truth_mean, pred_mean, *, control_mean=None, genes=None) -> dict:
    """Scores of a predicted mean expression profile against the observed one (chapter 11).

    Parameters
    ----------
    truth_mean, pred_mean
        Mean expression per gene (arrays, or Series indexed by gene).
    control_mean
        Control mean per gene; needed for the change-based scores.
    genes
        Subset to score: gene names (Series input) or positions / a boolean mask (arrays).

    Returns
    -------
    dict
        ``r2``: coefficient of determination (``sklearn.metrics.r2_score``; 1 is perfect, 0 is
        as good as predicting the truth's average, negative is worse). ``pearson_r2``: squared
        Pearson correlation (``scipy.stats.pearsonr``), what scGen reports; blind to a constant
        offset or scale. With ``control_mean``: ``delta_pearson``, the Pearson correlation of
        ``pred - control`` with ``truth - control`` (NaN when the predicted change is constant,
        e.g. for no-change), and ``delta_r2``, the R² of those changes. ``n_genes`` counts the genes.
    """
    from scipy.stats import pearsonr
    from sklearn.metrics import r2_score

    t, p = _select(truth_mean, genes), _select(pred_mean, genes)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth_mean and pred_mean must be 1-D and equally long; got {t.shape} and {p.shape}.")
    if t.size < 2:
        raise ValueError("At least 2 genes are needed to compute R².")

    def corr(a, b):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(pearsonr(a, b)[0])

    out = {"r2": float(r2_score(t, p)), "pearson_r2": corr(t, p) ** 2, "n_genes": int(t.size)}
    if control_mean is not None:
        c = _select(control_mean, genes)
        out["delta_pearson"] = corr(p - c, t - c)
        out["delta_r2"] = float(r2_score(t - c, p - c))
    return out


def response_scores(means: pd.DataFrame, *, truth: str = "truth", control: str = "control",
                    methods=None, de_genes=None) -> pd.DataFrame:
    """:func:`response_r2` for several prediction columns, on all genes and on the DE genes (chapter 11).

    Parameters
    ----------
    means
        Per-gene table with a truth column, a control column and one column per method (as
        returned by :func:`tflib.tl.response_baselines` or in
        :attr:`tflib.tl.LatentArithmeticResult.means`).
    truth, control
        Names of the observed columns.
    methods
        Prediction columns to score (default: every other column).
    de_genes
        Gene names for the ``*_top_de`` columns (e.g. :func:`top_de_genes`).

    Returns
    -------
    pandas.DataFrame
        One row per method: ``r2_all``, ``pearson_r2_all``, ``delta_pearson_all`` and, with
        ``de_genes``, the same three with ``_top_de``.
    """
    for col in (truth, control):
        if col not in means:
            raise KeyError(f"means has no column {col!r}; columns: {list(means.columns)}.")
    methods = [c for c in means.columns if c not in (truth, control)] if methods is None else list(methods)
    rows = {}
    for m in methods:
        row = {}
        for suffix, genes in (("all", None), ("top_de", de_genes)):
            if suffix == "top_de" and de_genes is None:
                continue
            s = response_r2(means[truth], means[m], control_mean=means[control], genes=genes)
            row.update({f"r2_{suffix}": s["r2"], f"pearson_r2_{suffix}": s["pearson_r2"],
                        f"delta_pearson_{suffix}": s["delta_pearson"]})
        rows[m] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")
