"""Per-cell agreement between two cells × genes matrices (chapters 03 and 08).

The velocity chapters compare an estimated velocity with the simulator's true velocity cell by
cell: the Pearson correlation of row ``i`` of one matrix with row ``i`` of the other.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def row_pearson(x, y) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y``.

    Parameters
    ----------
    x, y
        Arrays or sparse matrices of the same shape (cells × genes).

    Returns
    -------
    numpy.ndarray
        One correlation per row. A row with no variance in either input gives ``nan``.
    """
    x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=float)
    y = np.asarray(y.toarray() if sp.issparse(y) else y, dtype=float)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"row_pearson needs two 2-D inputs of the same shape, got {x.shape} and {y.shape}.")
    xc = x - x.mean(axis=1, keepdims=True)  # (cells, genes)
    yc = y - y.mean(axis=1, keepdims=True)  # (cells, genes)
    denom = np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))  # (cells,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xc * yc).sum(axis=1) / denom, np.nan)
