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


def fate_drivers(
    adata,
    estimator=None,
    *,
    lineages: str | Sequence[str] | None = None,
    n_top: int = 20,
    layer: str | None = None,
    cluster_key: str | None = None,
    clusters: str | Sequence[str] | None = None,
    method: str = "fisher",
    n_perms: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Top driver genes per fate, with correlation, p-value and Benjamini--Hochberg q-value.

    Wraps CellRank's ``compute_lineage_drivers``: for every gene and fate, the Pearson
    correlation between expression and fate probability across cells, a two-sided p-value
    (Fisher's z-transformation, or a permutation test with ``method="perm_test"``), the
    BH-adjusted q-value over all genes of that fate, and a 95 % confidence interval.

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.fates` (possibly after ``write_h5ad``/``read_h5ad``).
    estimator
        The GPCCA returned by :func:`tflib.tl.fates`; rebuilt from ``adata`` when ``None``.
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

    Returns
    -------
    A long DataFrame with columns ``fate, rank, gene, corr, pval, qval, ci_low, ci_high``:
    ``n_top`` rows per fate. The full wide table (all genes, ``{fate}_{stat}`` columns) is in
    ``.varm["terminal_lineage_drivers"]`` (written by CellRank), and the returned table in
    ``.uns["fate_drivers"]``.
    """
    from statsmodels.stats.multitest import multipletests

    if n_top < 1:
        raise ValueError("n_top must be at least 1.")
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
    if g.adata is not adata:  # CellRank wrote to the estimator's own AnnData; mirror it here
        adata.varm["terminal_lineage_drivers"] = wide.reindex(adata.var_names)
    names = [str(n) for n in (g.fate_probabilities.names if lineages is None else np.atleast_1d(lineages))]

    rows = []
    for fate in names:
        frame = pd.DataFrame({stat: wide[f"{fate}_{stat}"] for stat in _STATS if f"{fate}_{stat}" in wide})
        if "qval" not in frame:  # older CellRank: adjust ourselves
            frame["qval"] = np.nan
            ok = frame["pval"].notna().to_numpy()
            if ok.any():
                frame.loc[ok, "qval"] = multipletests(frame.loc[ok, "pval"], method="fdr_bh")[1]
        frame = frame.dropna(subset=["corr"]).sort_values("corr", ascending=False).head(n_top)
        frame.insert(0, "gene", frame.index.astype(str))
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        frame.insert(0, "fate", fate)
        rows.append(frame.reset_index(drop=True))
    table = pd.concat(rows, ignore_index=True)
    adata.uns["fate_drivers"] = table.astype({"fate": str, "gene": str})
    return table
