"""Raw counts back from files that store only normalised values (chapters 06 and 11).

Count models (scVI, DESeq2) and the count tokenizers need integers, but some public files keep
only ``log1p(counts / total * target)`` and each cell's total. When that inversion is exact, the
counts are recovered without loss: :func:`counts_from_lognorm`. Used on scGen's Kang split,
both by chapter 11's latent arithmetic and by chapter 06's test on cells from outside the corpus.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib._compat import layer_matrix

__all__ = ["counts_from_lognorm"]


def _check_lognorm(X, name):
    """Refuse NaN/inf/negative values and matrices that are obviously raw counts."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite values. Fix: remove or impute them first.")
    if data.size and (data < 0).any():
        raise ValueError(f"{name} has negative values: it is not log-normalised expression (scaled data?). "
                         "Fix: pass the log-normalised layer (log1p(counts / total * 1e4)) with layer=.")
    if data.size and np.all(data == np.round(data)) and data.max() > 1:
        raise ValueError(f"{name} holds integer counts, not log-normalised expression. Fix: normalise "
                         "first (sc.pp.normalize_total(a, target_sum=1e4); sc.pp.log1p(a)) or pass the "
                         "log-normalised layer with layer=.")


def _rebuild(E, unit, totals):
    """``(counts, target, largest residual)`` from ``E = expm1(X)`` (CSR) and per-cell totals."""
    target = float(np.median(unit * totals))
    C = sp.csr_matrix(sp.diags(totals / target) @ E)
    residual = float(np.abs(C.data - np.round(C.data)).max()) if C.nnz else 0.0
    return C, target, residual


def _other_totals(adata, E, unit, total_key, tol, source) -> str:
    """The rest of the error: which other ``obs`` columns do give integers, and what to do if none."""
    others = [c for c in adata.obs.columns if c != total_key
              and pd.api.types.is_numeric_dtype(adata.obs[c]) and (adata.obs[c] > 0).all()]
    works = [c for c in others
             if _rebuild(E, unit, adata.obs[c].to_numpy(dtype=np.float64))[2] <= tol]
    if works:
        return f"Fix: total_key={works[0]!r} gives integer counts" + (
            f" (so do {works[1:4]})." if len(works) > 1 else ".")
    tried = f" (also tried, without success: {others[:8]})" if others else ""
    return (f"No obs column gives integer counts{tried}, so the counts cannot be rebuilt from this file: "
            "load its raw counts instead (for the course's Kang data, tflib.datasets.load('kang_pbmc')). "
            "To tokenize with the rank-value tokenizer no counts are needed, since a cell's tokens depend "
            "only on its relative values (float rounding can at most swap genes whose values tie exactly): "
            "undo just the log, "
            f"adata.layers['normalized'] = {'adata.X' if source == 'X' else f'adata.layers[{source!r}]'}.expm1() "
            "(np.expm1(...) if dense), and tokenize with layer='normalized', input='normalized'.")


def counts_from_lognorm(adata, *, total_key: str, layer: str | None = None, key_added: str = "counts",
                        tol: float = 0.01, copy: bool = False):
    """Rebuild raw counts from ``log1p(counts / total * target)`` when that inversion is exact.

    Used in chapter 11 for scGen's Kang split (``tflib.datasets.load("kang_scgen_valid")``),
    which ships only log-normalised values but keeps each cell's total count in
    ``obs["n_counts"]``. In every cell the smallest non-zero value is one count, so
    ``expm1(min) * total`` estimates the normalisation target; the median over cells is used
    (scanpy's ``normalize_per_cell`` used one target for all cells: 1,832.5 for this file), and
    ``counts = expm1(X) * total / target`` must then be integers up to ``tol``. If it is not, the
    matrix is not a plain normalisation of counts and an error is raised: scVI must not be fed
    non-count data.

    Parameters
    ----------
    adata
        Cells x genes; ``X`` (or ``layers[layer]``) log-normalised.
    total_key
        ``obs`` column with each cell's total count before normalisation (scGen file: ``"n_counts"``).
    layer
        Layer holding the log-normalised values (``None``: ``X``).
    key_added
        Layer the counts are written to.
    tol
        Largest accepted distance of a rebuilt count from an integer.
    copy
        ``False``: write into ``adata`` and return ``None``. ``True``: return a modified copy.

    Returns
    -------
    None, or the modified copy when ``copy=True``.

    Keys written: ``layers[key_added]`` (the counts, float32 CSR) and
    ``uns["counts_from_lognorm"]`` (the inferred target, the largest rounding residual, ``total_key``).

    Raises
    ------
    ValueError
        When the rebuilt values are not integers (with the residual and the fix).
    """
    totals = pd.to_numeric(adata.obs[total_key], errors="coerce").to_numpy(dtype=np.float64) \
        if total_key in adata.obs else None
    if totals is None:
        raise KeyError(f"adata.obs has no column {total_key!r} (total counts per cell). Available: "
                       f"{list(adata.obs.columns)}. Fix: pass total_key= the column of counts per cell.")
    if not np.isfinite(totals).all() or (totals <= 0).any():
        raise ValueError(f"obs[{total_key!r}] must be positive and finite in every cell. Fix: pass the "
                         "column of total counts per cell.")
    X = layer_matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    E = sp.csr_matrix(X, dtype=np.float64)
    E.data = np.expm1(E.data)
    E.eliminate_zeros()
    nnz = np.diff(E.indptr)
    if (nnz == 0).any():
        raise ValueError(f"{int((nnz == 0).sum())} cells have no expressed gene. Fix: remove them first "
                         "(sc.pp.filter_cells(adata, min_genes=1)).")
    unit = np.minimum.reduceat(E.data, E.indptr[:-1])
    C, target, residual = _rebuild(E, unit, totals)
    if residual > tol:
        raise ValueError(
            f"expm1(X) * {total_key} / {target:.4g} is not integer-valued (largest residual {residual:.3g} > "
            f"tol={tol}): the values are not a plain log1p(counts / total * target) of obs[{total_key!r}] "
            "(a total counted before or after some genes or cells were filtered gives this). "
            + _other_totals(adata, E, unit, total_key, tol, "X" if layer is None else layer))
    C.data = np.round(C.data)
    C.eliminate_zeros()
    out = adata.copy() if copy else adata
    out.layers[key_added] = C.astype(np.float32)
    out.uns["counts_from_lognorm"] = {"target_sum": target, "max_rounding_residual": residual,
                                      "total_key": total_key, "source": "X" if layer is None else layer}
    return out if copy else None
