"""Driver genes of each fate: CellRank's lineage-driver correlation test (chapters 09 and 13).

A gene is a candidate *driver* of fate F when its expression correlates with the probability
of reaching F across cells. This is a correlation, not a causal claim: chapter 12 turns such
candidates into testable hypotheses and chapter 13 scores them against the simulator's true
regulatory network.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tflib._compat import renamed_kwargs
from tflib.stats import fdr

__all__ = ["fate_drivers"]

_STATS = ("corr", "pval", "qval", "ci_low", "ci_high")


def _estimator_from_adata(adata):
    import cellrank as cr

    if "fate_probs" not in adata.obsm or "T_fwd" not in adata.obsp or "lineages_fwd" not in adata.obsm:
        raise ValueError(
            "No fate probabilities with their transition matrix found: run `tflib.tl.fates(adata)` first "
            "(it writes .obsm['fate_probs'], .obsm['lineages_fwd'] and .obsp['T_fwd']), or pass its estimator."
        )
    return cr.estimators.GPCCA.from_adata(adata, obsp_key="T_fwd")


@renamed_kwargs(key="key_added")
def fate_drivers(
    adata,
    *,
    estimator=None,
    lineages: str | Sequence[str] | None = None,
    n_top: int = 20,
    layer: str | None = None,
    cluster_key: str | None = None,
    clusters: str | Sequence[str] | None = None,
    method: str = "fisher",
    n_perms: int = 1000,
    seed: int = 0,
    fdr_method: str = "bh",
    key_added: str = "fate_drivers",
) -> pd.DataFrame:
    """Top driver genes per fate, with correlation, p-value and Benjamini--Hochberg q-value (chapter 09).

    Wraps CellRank's ``compute_lineage_drivers``: for every gene and fate, the Pearson
    correlation between expression and fate probability across cells, a two-sided p-value
    (Fisher's z-transformation, or a permutation test with ``method="perm_test"``), the
    q-value over all tested genes of that fate (:func:`tflib.stats.fdr`), and a 95 % confidence
    interval.

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.fates` (possibly after ``write_h5ad``/``read_h5ad``).
    estimator
        The GPCCA returned by :func:`tflib.tl.fates` (keyword-only: ``estimator=g``); rebuilt
        from ``adata`` when ``None``.
    lineages
        Fates to test (default: all columns of ``.obsm["fate_probs"]``).
    n_top
        Genes kept per fate in the returned table (highest correlation first).
    layer
        Expression to correlate (default ``.X``, the log-normalised data).
    cluster_key, clusters
        Restrict the test to cells of these clusters (e.g. the branch leading to one fate).
    method, n_perms, seed
        Test for the p-values; ``n_perms`` and ``seed`` only matter for ``"perm_test"``.
    fdr_method
        ``"bh"`` (Benjamini--Hochberg) or ``"by"`` (Benjamini--Yekutieli, any dependence), passed
        to :func:`tflib.stats.fdr` per fate over the genes with a p-value.
    key_added
        ``.uns`` key of the returned table (``key=`` accepted for one release).

    Returns
    -------
    pandas.DataFrame
        A long table with columns ``fate, rank, gene, corr, pval, qval, ci_low, ci_high``:
        ``n_top`` rows per fate. Keys written: ``.uns[key_added]`` (this table) and
        ``.varm["terminal_lineage_drivers"]`` (CellRank's full wide table, all genes,
        ``{fate}_{stat}`` columns, with its ``_qval`` columns replaced by ``tflib.stats.fdr``'s).
    """
    if not isinstance(n_top, int) or isinstance(n_top, bool) or n_top < 1:
        raise ValueError(f"n_top={n_top!r}: it must be an integer >= 1 (genes kept per fate).")
    if fdr_method not in ("bh", "by"):
        raise ValueError(f"fdr_method={fdr_method!r}: use 'bh' (Benjamini-Hochberg) or 'by' (Benjamini-Yekutieli).")
    if cluster_key is not None and cluster_key not in adata.obs:
        raise KeyError(f"cluster_key={cluster_key!r} is not a column of adata.obs; pass an existing column or None.")
    g = _estimator_from_adata(adata) if estimator is None else estimator
    if g.fate_probabilities is None:
        raise ValueError("The estimator has no fate probabilities: run `tflib.tl.fates(adata)` first.")
    if g.fate_probabilities.shape[1] < 2:
        raise ValueError(
            "Driver genes need at least two fates (with one, every cell has probability 1). Ask "
            "`tflib.tl.fates` for more terminal states."
        )
    wide = g.compute_lineage_drivers(
        lineages=lineages,
        method=method,
        cluster_key=cluster_key,
        clusters=clusters,
        layer=layer,
        n_perms=n_perms,
        seed=seed,
        show_progress_bar=False,
    )
    names = [str(n) for n in (g.fate_probabilities.names if lineages is None else np.atleast_1d(lineages))]
    for fate in names:  # one FDR rule for the library: q-values from tflib.stats, over the tested genes
        q = np.full(len(wide), np.nan)
        ok = wide[f"{fate}_pval"].notna().to_numpy()
        if ok.any():
            q[ok] = fdr(wide[f"{fate}_pval"].to_numpy()[ok], method=fdr_method)
        wide[f"{fate}_qval"] = q
    adata.varm["terminal_lineage_drivers"] = wide.reindex(adata.var_names)
    if g.adata is not adata:
        g.adata.varm["terminal_lineage_drivers"] = wide.reindex(g.adata.var_names)

    rows = []
    for fate in names:
        frame = pd.DataFrame({stat: wide[f"{fate}_{stat}"] for stat in _STATS if f"{fate}_{stat}" in wide})
        frame = frame.dropna(subset=["corr"]).sort_values("corr", ascending=False).head(n_top)
        frame.insert(0, "gene", frame.index.astype(str))
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        frame.insert(0, "fate", fate)
        rows.append(frame.reset_index(drop=True))
    table = pd.concat(rows, ignore_index=True)
    adata.uns[key_added] = table.astype({"fate": str, "gene": str})
    return table
