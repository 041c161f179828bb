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


class H5adCSR:
    """An ``.h5ad`` file whose ``X`` is CSR, read with h5py alone (no anndata import).

    What :meth:`~tflib.tokenize.base._Tokenizer.encode_to_store` needs from a file on disk is
    the count rows, the gene names and the cell metadata to carry along. AnnData's own import
    costs about as much as tokenizing a few thousand cells, so for a plain file (``X`` stored as
    AnnData's CSR encoding, ``var`` and ``obs`` as AnnData data frames) the tokenizer reads
    ``X`` with :func:`iter_h5_csr`, the gene names from ``var``'s index, and copies the ``obs``
    group into the token store unchanged (:meth:`copy_obs`); anything else goes through
    AnnData. Open it with :func:`open_h5ad_csr`; close it with :meth:`close`.
    """

    isbacked = True
    is_view = False

    def __init__(self, path, file, group, shape):
        self.path = path
        self.file = file
        self.group = group
        self.n_obs, self.n_vars = int(shape[0]), int(shape[1])
        var = file["var"]
        self.var_names = np.asarray(var[var.attrs["_index"]].asstr()[:], dtype=object)   # (n_vars,) str
        self._adata = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_obs, self.n_vars

    @property
    def var(self):
        """The ``var`` table, read through AnnData on first use (only error messages need it)."""
        return self._anndata().var

    @property
    def obs(self):
        return self._anndata().obs

    def _anndata(self):
        if self._adata is None:
            import anndata as ad

            self._adata = ad.read_h5ad(self.path, backed="r")
        return self._adata

    def iter_chunks(self, chunk_size: int):
        """``(start, stop, csr_matrix)`` row chunks of ``X`` (see :func:`iter_h5_csr`)."""
        return iter_h5_csr(self.group, self.shape, chunk_size)

    def copy_obs(self, dest_file, name: str = "obs") -> None:
        """Copy the file's ``obs`` group, all rows, as stored, into the open h5py file ``dest_file``."""
        self.file.copy(self.file["obs"], dest_file, name=name)

    def close(self) -> None:
        if self._adata is not None:
            self._adata.file.close()
        self.file.close()


def open_h5ad_csr(path):
    """An :class:`H5adCSR` for ``path``, or ``None`` when the file is not plain enough for it
    (``X`` dense, CSC or in an old encoding; ``var``/``obs`` not AnnData data frames)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        return None
    try:
        X, var, obs = f.get("X"), f.get("var"), f.get("obs")
        ok = (isinstance(X, h5py.Group) and X.attrs.get("encoding-type") == "csr_matrix"
              and {"data", "indices", "indptr"} <= set(X.keys()) and "shape" in X.attrs
              and isinstance(var, h5py.Group) and var.attrs.get("encoding-type") == "dataframe"
              and var.attrs.get("_index") in var
              and isinstance(obs, h5py.Group) and obs.attrs.get("encoding-type") == "dataframe")
        if ok:
            shape = tuple(int(s) for s in X.attrs["shape"])
            src = H5adCSR(path, f, X, shape)
            if len(src.var_names) == shape[1]:
                return src
    except (KeyError, TypeError, ValueError, OSError):
        pass
    f.close()
    return None
