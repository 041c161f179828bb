"""Shared fixtures-as-functions for the tokenize tests (synthetic counts, small vocabularies)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import anndata as ad


def ensembl(i: int) -> str:
    return f"ENSG{i:011d}"


def synthetic_counts(n_cells=300, n_genes=400, density=0.15, seed=0, empty=(), obs_n_counts=False):
    """Negative-binomial raw counts (CSR, float32) with human Ensembl gene names."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_cells, n_genes, density=density, random_state=seed, format="csr", dtype=np.float32)
    X.data = (rng.negative_binomial(1, 0.3, X.nnz) + 1).astype(np.float32)
    X = X.tolil()
    for i in empty:
        X[i, :] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    a = ad.AnnData(X)
    a.var_names = [ensembl(i) for i in range(n_genes)]
    a.obs_names = [f"cell{i}" for i in range(n_cells)]
    a.obs["group"] = np.where(np.arange(n_cells) % 2, "a", "b")
    if obs_n_counts:
        a.obs["n_counts"] = np.asarray(X.sum(1)).ravel()
    return a
