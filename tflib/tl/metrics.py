"""Integration metrics: does an embedding mix batches while keeping cell types apart?

Chapter 02 scores the PCA baseline, the scVI latent space and (chapter 07) the Transcriptformer
embedding with the same table. The metrics follow the definitions popularised by the scIB
benchmark (Luecken et al. 2022), rebuilt on scikit-learn so they run with the course's pinned
stack, and are tested against small cases worked out by hand (``tests/test_metrics.py``).

Batch mixing (1 = perfectly mixed):

``batch_asw``
    For each cell type, the silhouette of cells with respect to *batch*, turned into
    ``1 - |s|`` per cell, averaged per cell type, then over cell types. A cell type that
    occurs in only one batch is skipped.
``ilisi``
    The inverse Simpson index of the batch labels among each cell's ``k`` nearest neighbours
    (1 = one batch only, ``B`` = all ``B`` batches equally), rescaled to 0--1 and
    median-aggregated. Unlike the original LISI, neighbours are weighted equally instead of by
    a perplexity-calibrated Gaussian kernel ("iLISI-like").
``kbet``
    kBET-like acceptance rate: the fraction of cells whose neighbourhood batch composition is
    *not* rejected by a chi-square test against the global batch proportions.

Biology conservation (1 = best):

``label_asw``
    Silhouette of cells with respect to cell type, rescaled from [-1, 1] to [0, 1].
``nmi``, ``ari``
    Agreement between cell types and a k-means clustering of the embedding with as many
    clusters as cell types (scIB optimises a Leiden resolution instead; k-means is seeded and
    fast, and says the same thing at course scale).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "batch_asw",
    "label_asw",
    "ilisi",
    "kbet_acceptance",
    "cluster_agreement",
    "integration_metrics",
]

BATCH_METRICS = ("batch_asw", "ilisi", "kbet")
BIO_METRICS = ("label_asw", "nmi", "ari")


def _check_xy(X, *cols):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"The embedding must be a 2-D array (cells x dimensions), got shape {X.shape}.")
    out = []
    for c in cols:
        c = np.asarray(c).astype(str)
        if c.shape[0] != X.shape[0]:
            raise ValueError(f"Got {c.shape[0]} labels for {X.shape[0]} cells; pass one label per cell.")
        out.append(c)
    return (X, *out)


def label_asw(X, labels) -> float:
    """Cell-type silhouette, rescaled to [0, 1] (higher = types better separated)."""
    from sklearn.metrics import silhouette_score

    X, labels = _check_xy(X, labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("label_asw needs at least two cell types.")
    return float((silhouette_score(X, labels) + 1.0) / 2.0)


def batch_asw(X, batch, labels) -> float:
    """Batch silhouette within each cell type, as ``mean_types(mean_cells(1 - |s|))``.

    1 means batches are indistinguishable inside every cell type; 0 means every cell type is
    split cleanly by batch. Cell types present in a single batch carry no information on mixing
    and are skipped; if no type is left, the result is NaN.
    """
    from sklearn.metrics import silhouette_samples

    X, batch, labels = _check_xy(X, batch, labels)
    per_type = []
    for lab in np.unique(labels):
        m = labels == lab
        b = batch[m]
        n_b = len(np.unique(b))
        if n_b < 2 or n_b >= m.sum():  # silhouette is undefined for one group or singletons only
            continue
        s = silhouette_samples(X[m], b)
        per_type.append(np.mean(1.0 - np.abs(s)))
    return float(np.mean(per_type)) if per_type else float("nan")


def _knn_batches(X, batch, k: int):
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, X.shape[0] - 1))
    if k < 1:
        raise ValueError("Need at least two cells for a neighbourhood metric.")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    idx = nn.kneighbors(X, return_distance=False)[:, 1:]  # drop the cell itself
    _, codes = np.unique(batch, return_inverse=True)
    return codes[idx], codes.max() + 1, codes


def ilisi(X, batch, *, k: int = 30) -> float:
    """Median rescaled inverse Simpson index of batch labels over each cell's ``k`` neighbours.

    Returns a value in [0, 1]: 0 when every neighbourhood holds a single batch, 1 when every
    neighbourhood holds all batches in equal shares.
    """
    X, batch = _check_xy(X, batch)
    nb, n_batches, _ = _knn_batches(X, batch, k)
    if n_batches < 2:
        raise ValueError("ilisi needs at least two batches.")
    frac = np.stack([(nb == b).mean(axis=1) for b in range(n_batches)], axis=1)
    lisi = 1.0 / (frac ** 2).sum(axis=1)
    return float(np.median((lisi - 1.0) / (n_batches - 1.0)))


def kbet_acceptance(X, batch, *, k: int = 30, alpha: float = 0.05) -> float:
    """Fraction of cells whose ``k``-neighbourhood batch counts pass a chi-square test.

    The expected counts come from the global batch proportions. 1 = batches are mixed
    everywhere at their overall ratio; near 0 = neighbourhoods are dominated by one batch.
    """
    from scipy.stats import chi2

    X, batch = _check_xy(X, batch)
    nb, n_batches, codes = _knn_batches(X, batch, k)
    if n_batches < 2:
        raise ValueError("kbet_acceptance needs at least two batches.")
    observed = np.stack([(nb == b).sum(axis=1) for b in range(n_batches)], axis=1)
    expected = nb.shape[1] * np.bincount(codes, minlength=n_batches) / codes.size
    stat = ((observed - expected) ** 2 / expected).sum(axis=1)
    pval = chi2.sf(stat, df=n_batches - 1)
    return float((pval >= alpha).mean())


def cluster_agreement(X, labels, *, n_clusters: int | None = None, seed: int = 0) -> dict:
    """NMI and ARI between ``labels`` and a seeded k-means clustering of the embedding."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    X, labels = _check_xy(X, labels)
    n_clusters = n_clusters or len(np.unique(labels))
    clusters = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(X)
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def integration_metrics(
    adata,
    embed_keys,
    batch_key: str,
    label_key: str,
    *,
    k: int = 30,
    seed: int = 0,
    key_added: str | None = "integration_metrics",
) -> pd.DataFrame:
    """Score embeddings for batch mixing and biology conservation, one row per embedding.

    Used in chapter 02 (PCA vs scVI) and chapter 07 (adds the Transcriptformer embedding).

    Parameters
    ----------
    adata
        Cells with the embeddings in ``.obsm``.
    embed_keys
        ``.obsm`` keys to compare, e.g. ``["X_pca", "X_scvi"]`` (a single string works too).
    batch_key, label_key
        ``obs`` columns with the batch (here: stimulation) and the cell type.
    k
        Neighbourhood size of ``ilisi`` and ``kbet``.
    seed
        Seed of the k-means clustering behind ``nmi``/``ari``.
    key_added
        Also store the table in ``adata.uns[key_added]`` (``None``: don't).

    Returns
    -------
    pandas.DataFrame
        Columns ``batch_asw, ilisi, kbet, label_asw, nmi, ari`` and the aggregates
        ``batch_score`` (mean of the batch columns), ``bio_score`` (mean of the biology
        columns) and ``overall = 0.4 * batch_score + 0.6 * bio_score`` (the scIB weighting).
        All columns lie in [0, 1]; higher is better.
    """
    if isinstance(embed_keys, str):
        embed_keys = [embed_keys]
    for col in (batch_key, label_key):
        if col not in adata.obs:
            raise KeyError(f"adata.obs has no column {col!r}. Available: {list(adata.obs.columns)}.")
    missing = [e for e in embed_keys if e not in adata.obsm]
    if missing:
        raise KeyError(
            f"Embedding(s) {missing} not in adata.obsm (has {list(adata.obsm.keys())}). Compute them "
            "first, e.g. sc.pp.pca(adata) for 'X_pca' or tflib.tl.scvi_integrate(...) for 'X_scvi'."
        )
    batch = adata.obs[batch_key].astype(str).to_numpy()
    labels = adata.obs[label_key].astype(str).to_numpy()
    rows = {}
    for emb in embed_keys:
        X = np.asarray(adata.obsm[emb], dtype=float)
        row = {
            "batch_asw": batch_asw(X, batch, labels),
            "ilisi": ilisi(X, batch, k=k),
            "kbet": kbet_acceptance(X, batch, k=k),
            "label_asw": label_asw(X, labels),
            **cluster_agreement(X, labels, seed=seed),
        }
        rows[emb] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "embedding"
    table["batch_score"] = table[list(BATCH_METRICS)].mean(axis=1)
    table["bio_score"] = table[list(BIO_METRICS)].mean(axis=1)
    table["overall"] = 0.4 * table["batch_score"] + 0.6 * table["bio_score"]
    if key_added is not None:
        adata.uns[key_added] = table.copy()
    return table
