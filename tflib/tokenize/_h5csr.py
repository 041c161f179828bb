"""Row chunks of a backed ``.h5ad``'s CSR matrix, read straight from its HDF5 datasets.

AnnData's backed ``X[start:stop]`` goes through several layers of indexing code for every
chunk. A CSR matrix on disk is three 1-D datasets (``data``, ``indices``, ``indptr``), so a
block of rows is one contiguous range of ``data`` and ``indices``: this module reads
``indptr[start:stop + 1]`` and then that range of the other two with ``read_direct`` (one
HDF5 call each, into a fresh array, no intermediate copy), the next chunk in a background
thread while the caller works on the current one. The chunks are the same
:class:`scipy.sparse.csr_matrix` rows that ``adata.X[start:stop]`` returns; at most two
chunks are in memory at a time. Used by :func:`tflib.tokenize._core.iter_csr_chunks` (chapter 04).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def backed_csr_group(adata, layer: str | None = None):
    """The HDF5 group of ``adata.X`` when it is a CSR matrix on disk, else ``None``.

    ``None`` (use AnnData's own reader) for in-memory data, views of backed data (their rows
    are a subset), layers (AnnData loads them into memory even in backed mode), CSC or dense
    matrices, and anything not stored as the three datasets of AnnData's CSR encoding.
    """
    if layer is not None or not getattr(adata, "isbacked", False) or getattr(adata, "is_view", False):
        return None
    X = adata.X
    group = getattr(X, "group", None)
    if getattr(X, "format", None) != "csr" or group is None:
        return None
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency of anndata
        return None
    if not isinstance(group, h5py.Group) or not {"data", "indices", "indptr"} <= set(group.keys()):
        return None
    if tuple(X.shape) != (adata.n_obs, adata.n_vars):
        return None
    return group


def _read_range(dataset, lo: int, hi: int) -> np.ndarray:
    """``dataset[lo:hi]`` read into a new array with one HDF5 call."""
    out = np.empty(hi - lo, dtype=dataset.dtype)
    if hi > lo:
        dataset.read_direct(out, np.s_[lo:hi], np.s_[0:hi - lo])
    return out


def iter_h5_csr(group, shape: tuple[int, int], chunk_size: int, prefetch: bool = True):
    """Yield ``(start, stop, csr_matrix)`` row chunks of the CSR matrix stored in ``group``.

    Parameters
    ----------
    group
        An ``h5py.Group`` holding AnnData's CSR encoding (``data``, ``indices``, ``indptr``).
    shape
        ``(n_rows, n_cols)`` of the matrix.
    chunk_size
        Rows per chunk (the last one may be shorter).
    prefetch
        Read the next chunk in a background thread while the caller works on this one (h5py
        releases the GIL while HDF5 reads). At most two chunks are in memory at a time.

    Raises
    ------
    ValueError
        If ``indptr`` is inconsistent with ``data`` (a damaged file): the message names the rows.
    """
    n_rows, n_cols = int(shape[0]), int(shape[1])
    d_indptr, d_data, d_indices = group["indptr"], group["data"], group["indices"]
    if d_indptr.shape[0] != n_rows + 1:
        raise ValueError(f"{group.file.filename}: {group.name}/indptr has {d_indptr.shape[0]} entries for "
                         f"{n_rows} rows (expected {n_rows + 1}); the file is damaged. Fix: rewrite it from "
                         "the source data (adata.write_h5ad).")

    def read(start: int):
        stop = min(start + chunk_size, n_rows)
        indptr = np.asarray(d_indptr[start:stop + 1], dtype=np.int64)     # (rows + 1,)
        lo, hi = int(indptr[0]), int(indptr[-1])
        if hi < lo or hi > d_data.shape[0] or (np.diff(indptr) < 0).any():
            raise ValueError(f"{group.file.filename}: {group.name}/indptr is not a valid CSR row pointer for rows "
                             f"{start}-{stop}; the file is damaged. Fix: rewrite it from the source data.")
        data = _read_range(d_data, lo, hi)                                  # (nnz,) stored dtype
        indices = _read_range(d_indices, lo, hi)                            # (nnz,) int32 or int64
        indptr -= lo
        return start, stop, sp.csr_matrix((data, indices, indptr), shape=(stop - start, n_cols), copy=False)

    starts = range(0, n_rows, chunk_size)
    if not prefetch or len(starts) < 2:
        for start in starts:
            yield read(start)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tflib-h5csr") as pool:
        pending = pool.submit(read, starts[0])
        for k in range(len(starts)):
            chunk = pending.result()
            if k + 1 < len(starts):
                pending = pool.submit(read, starts[k + 1])
            yield chunk
