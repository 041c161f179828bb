"""Pseudobulk: test conditions across samples, not across cells (chapter 12).

Cells of one sample (one animal, one donor, one well) share that sample's quirks, so they are
not independent replicates. A test that treats every cell as a replicate
(:func:`cell_level_test`, kept here to show the mistake) finds "significant" differences
between conditions that differ only in which samples they got: pseudoreplication. The fix is
to sum each sample's counts into one profile (:func:`pseudobulk`) and test the profiles with a
count model across samples (:func:`pseudobulk_test`, DESeq2 through ``pydeseq2``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["pseudobulk", "pseudobulk_test", "cell_level_test"]


def _counts(adata, layer):
    from tflib._compat import layer_matrix

    from tflib.validation import check_counts

    check_counts(adata, layer=layer, fix=(
        "Pseudobulk DE sums counts and models them as counts. If the file holds no counts and they cannot "
        "be rebuilt (tflib.pp.counts_from_lognorm says so), no count-based test applies: compare the "
        "replicates' mean log-expression instead, one value per replicate and group, with "
        "tflib.stats.permutation_test (or rank_test), then tflib.stats.fdr over genes."))
    return sp.csr_matrix(layer_matrix(adata, layer), dtype=np.float64)


def _design(adata, sample_key, group_key):
    for key in (sample_key, group_key):
        if key not in adata.obs:
            raise KeyError(f"adata.obs has no column {key!r}; available: {list(adata.obs.columns)}.")
    samples = adata.obs[sample_key].astype(str).to_numpy()
    groups = adata.obs[group_key].astype(str).to_numpy()
    per_sample = pd.Series(groups).groupby(samples).nunique()
    mixed = per_sample[per_sample > 1]
    if len(mixed):
        raise ValueError(f"samples {list(mixed.index[:5])} contain cells of several {group_key!r} groups; a sample "
                         "must belong to one condition. Fix: use a sample key that nests in the condition "
                         "(e.g. donor + condition).")
    return samples, groups


def pseudobulk(adata, sample_key: str, group_key: str, *, layer: str | None = None):
    """Sum the counts of every sample's cells: one profile per sample (chapter 12).

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` or ``layers[layer]``. Not modified.
    sample_key
        ``obs`` column naming each cell's sample (the unit of replication).
    group_key
        ``obs`` column of the condition; every sample must lie in one group.

    Returns
    -------
    anndata.AnnData
        Samples x genes, ``X`` the summed counts (float64, integer-valued); ``obs`` holds
        ``group_key`` and ``n_cells``.
    """
    import anndata as ad

    X = _counts(adata, layer)
    samples, groups = _design(adata, sample_key, group_key)
    names, inverse = np.unique(samples, return_inverse=True)
    S = sp.csr_matrix((np.ones(len(samples)), (inverse, np.arange(len(samples)))), shape=(len(names), len(samples)))
    summed = np.asarray((S @ X).todense())                               # (samples, genes)
    group_of = pd.Series(groups).groupby(inverse).first().to_numpy()
    obs = pd.DataFrame({group_key: group_of, "n_cells": np.bincount(inverse)}, index=names)
    return ad.AnnData(summed, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))


def pseudobulk_test(adata, sample_key: str, group_key: str, *, reference: str, layer: str | None = None,
                    min_samples: int = 2, n_cpus: int = 1) -> pd.DataFrame:
    """DESeq2 test of every gene between two conditions, on per-sample pseudobulk profiles (chapter 12).

    Parameters
    ----------
    adata, sample_key, group_key, layer
        As in :func:`pseudobulk`; ``group_key`` must have exactly two groups.
    reference
        The group the fold change is measured against (``log2FoldChange = log2(other / reference)``).
    min_samples
        Samples needed in each group (at least 2: with one sample per condition there is no
        replication and no test).
    n_cpus
        Processes pydeseq2 may use.

    Returns
    -------
    pandas.DataFrame
        One row per gene (genes with no counts are dropped): ``baseMean``, ``log2FoldChange``,
        ``lfcSE``, ``stat``, ``pvalue``, ``padj`` (pydeseq2's Benjamini--Hochberg).
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    bulk = pseudobulk(adata, sample_key, group_key, layer=layer)
    levels = sorted(bulk.obs[group_key].unique())
    if len(levels) != 2:
        raise ValueError(f"{group_key!r} has groups {levels}; pseudobulk_test compares two. Fix: subset the "
                         "cells to two conditions.")
    if reference not in levels:
        close = [g for g in levels if str(g).lower() == str(reference).lower()]
        raise ValueError(f"reference={reference!r} is not one of the groups {levels} of {group_key!r}"
                         + (f"; did you mean reference={close[0]!r}?" if close else
                            f". Fix: reference={levels[0]!r} or {levels[1]!r}."))
    n = bulk.obs[group_key].value_counts()
    if (n < max(2, min_samples)).any():
        raise ValueError(f"samples per condition: {n.to_dict()}; a test needs at least {max(2, min_samples)} in each "
                         "(with one sample per condition there is no replication). Fix: add samples, or do not test.")
    other = next(g for g in levels if g != reference)
    keep = bulk.X.sum(0) > 0
    counts = pd.DataFrame(np.round(bulk.X[:, keep]).astype(np.int64), index=bulk.obs_names,
                          columns=bulk.var_names[keep])
    meta = pd.DataFrame({"condition": pd.Categorical(bulk.obs[group_key], categories=[reference, other])},
                        index=bulk.obs_names)
    inference = DefaultInference(n_cpus=n_cpus)
    dds = DeseqDataSet(counts=counts, metadata=meta, design="~condition", inference=inference, quiet=True)
    dds.deseq2()
    stats = DeseqStats(dds, contrast=["condition", other, reference], inference=inference, quiet=True)
    stats.summary()
    return stats.results_df.copy()


def cell_level_test(adata, group_key: str, *, reference: str, layer: str | None = None) -> pd.DataFrame:
    """Mann--Whitney test of every gene with each *cell* as a replicate: the pseudoreplication mistake.

    Kept so that chapter 12 can show what it does on null data: log-normalised expression
    (``log1p`` of counts per 10,000) of the two groups' cells, compared gene by gene with
    ``scipy.stats.mannwhitneyu``. Do not use it to test conditions that were applied to samples.

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``statistic``, ``pvalue``.
    """
    from scipy.stats import mannwhitneyu

    X = _counts(adata, layer)
    if group_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {group_key!r}; available: {list(adata.obs.columns)}.")
    groups = adata.obs[group_key].astype(str).to_numpy()
    if reference not in set(groups) or len(set(groups)) != 2:
        raise ValueError(f"{group_key!r} must have two groups, one of them reference={reference!r}; "
                         f"found {sorted(set(groups))}.")
    totals = np.asarray(X.sum(1)).ravel()
    L = np.log1p(np.asarray((sp.diags(1e4 / np.maximum(totals, 1)) @ X).todense()))   # (cells, genes)
    res = mannwhitneyu(L[groups != reference], L[groups == reference], axis=0)
    return pd.DataFrame({"statistic": res.statistic, "pvalue": res.pvalue}, index=adata.var_names.copy())
