"""Shared machinery of the tokenizers: reading cells in chunks, validating input, projecting a
CSR chunk onto the vocabulary, and the ragged container that ``encode`` returns.

Everything here works on whole CSR chunks with NumPy array operations; there is no per-cell
Python loop (the per-cell reference lives in :mod:`tflib.tokenize.reference`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from tflib._compat import layer_matrix

if TYPE_CHECKING:  # pandas only names a type here; the tokenizers' hot path does not need it
    import pandas as pd


class TokenizerInputError(ValueError):
    """Bad input to a tokenizer: the message names the problem and the fix."""


class EmptyCellsWarning(UserWarning):
    """Some cells have no counts in the vocabulary's genes and are left out of the tokens."""


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def open_source(source, backed: bool = True):
    """An AnnData from an AnnData or an ``.h5ad`` path (opened backed, read-only, by default)."""
    import anndata as ad

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass an AnnData or the path of an .h5ad file.")
        return ad.read_h5ad(path, backed="r" if backed else None)
    if not hasattr(source, "n_obs"):
        raise TypeError(f"Expected an AnnData or an .h5ad path, got {type(source).__name__}.")
    return source


def _matrix(adata, layer: str | None):
    return layer_matrix(adata, layer)


def iter_csr_chunks(adata, layer: str | None = None, chunk_size: int = 2048):
    """Yield ``(start, stop, csr_matrix)`` row chunks of X (or a layer), for in-memory or backed AnnData.

    Only one chunk is in memory at a time when ``adata`` is backed: peak memory follows
    ``chunk_size``, not the number of cells. A backed CSR ``X`` is read straight from its HDF5
    datasets (:mod:`tflib.tokenize._h5csr`); everything else goes through AnnData.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    from ._h5csr import H5adCSR, backed_csr_group, iter_h5_csr

    if isinstance(adata, H5adCSR):  # a plain .h5ad read without anndata (encode_to_store from a path)
        if layer is not None:
            raise ValueError("layer= needs the file opened through AnnData.")
        yield from adata.iter_chunks(chunk_size)
        return

    group = backed_csr_group(adata, layer)
    if group is not None:  # CSR on disk: read its datasets directly (same rows, less overhead)
        yield from iter_h5_csr(group, (adata.n_obs, adata.n_vars), chunk_size)
        return
    X = _matrix(adata, layer)
    if X is None:
        raise TokenizerInputError("adata.X is empty (None); pass layer= with the counts layer.")
    n = adata.n_obs
    in_memory_csr = sp.issparse(X) and X.format == "csr"
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        if in_memory_csr:  # cheap row slice without copying the whole matrix
            lo, hi = X.indptr[start], X.indptr[stop]
            chunk = sp.csr_matrix((X.data[lo:hi], X.indices[lo:hi], X.indptr[start:stop + 1] - lo),
                                  shape=(stop - start, X.shape[1]))
        else:
            chunk = X[start:stop]
            chunk = sp.csr_matrix(chunk) if not (sp.issparse(chunk) and chunk.format == "csr") else chunk
        yield start, stop, chunk


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
def validate_values(data: np.ndarray, input: str, where: str = ""):
    """Reject NaN, infinite or negative values always, and non-integer values when ``input="counts"``.

    Returns ``(smallest, largest)`` (``(None, None)`` for no data): :func:`project` reuses the
    smallest, the tokenizer's log-transform warning the largest."""
    if input not in ("counts", "normalized"):
        raise ValueError(f"input must be 'counts' or 'normalized', got {input!r}.")
    if data.size == 0:
        return None, None
    lo, hi = data.min(), data.max()  # NaN propagates through min/max
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise TokenizerInputError(f"The expression matrix{where} contains NaN or infinite values. Fix: remove or "
                                  "impute them before tokenizing (e.g. np.nan_to_num on the source counts).")
    if lo < 0:
        raise TokenizerInputError(f"The expression matrix{where} contains negative values (min {lo:.3g}); "
                                  "it looks scaled or centred. Fix: tokenize the raw counts.")
    if input == "counts" and data.dtype.kind == "f" and not np.array_equal(data, np.floor(data)):
        if hi < 20:
            hint = " It looks log-normalised (all values < 20)."
            fix = ("Fix: pass the raw counts (tflib.pp.counts_from_lognorm rebuilds them when obs holds each "
                   "cell's total), or undo the log and tokenize the normalised values: put np.expm1 of them in "
                   "a layer (adata.X.expm1() if sparse) and pass that layer with input='normalized'.")
        else:
            hint = ""
            fix = ("Fix: pass the raw counts, or, if the values really are per-cell normalised "
                   "(counts / n_counts * 1e4, not log), pass input='normalized'.")
        raise TokenizerInputError(
            f"The expression matrix{where} has non-integer values, so it is not raw counts.{hint} {fix}")
    return lo, hi


def zero_count_rows(chunk: sp.csr_matrix, data_min) -> int:
    """Rows of a validated CSR chunk whose counts sum to 0 (no stored value, or only zeros).

    ``data_min`` is what :func:`validate_values` returned: when it is positive (the usual case)
    only the row lengths are looked at. (Same rule as :func:`tflib.validation.zero_count_cells`,
    computed per chunk while the tokenizer streams.)
    """
    n_rows = chunk.shape[0]
    if data_min is None:
        return n_rows
    if data_min > 0:
        return int((np.diff(chunk.indptr) == 0).sum())
    sums = np.bincount(row_ids(chunk.indptr.astype(np.int64)), weights=chunk.data, minlength=n_rows)
    return int((sums == 0).sum())


def cell_totals(adata, chunk: sp.csr_matrix, start: int, stop: int, n_counts_key: str | None):
    """Per-cell total counts: ``adata.obs[n_counts_key]`` if present, else the row sums (computed)."""
    if n_counts_key is not None and n_counts_key in adata.obs.columns:
        n = np.asarray(adata.obs[n_counts_key].values[start:stop], dtype=np.float64)
        if not np.isfinite(n).all() or (n < 0).any():
            raise TokenizerInputError(f"obs[{n_counts_key!r}] has NaN or negative totals. Fix: recompute it "
                                      f"(adata.obs[{n_counts_key!r}] = adata.X.sum(1)) or drop the column.")
        return n, False
    return np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel(), True


def check_totals(totals: np.ndarray, indptr: np.ndarray) -> None:
    """Cells with counts must have a positive total."""
    bad = (totals <= 0) & (np.diff(indptr) > 0)
    if bad.any():
        raise TokenizerInputError(f"{int(bad.sum())} cells have counts but a total (n_counts) of 0 or less. Fix: "
                                  "recompute obs['n_counts'] as the row sums of the raw counts, or drop the column.")


def project(chunk: sp.csr_matrix, colmap: np.ndarray, data_min=None):
    """Keep the entries of vocabulary genes with positive values; return ``(indptr, token, data)``.

    ``colmap[j]`` is the token id of column ``j`` (``-1`` = not tokenized). Columns that map to the
    same token are summed (like Geneformer V2's collapse of duplicated Ensembl IDs); this rare
    path re-sorts the chunk, the common one does not.
    """
    tok = colmap[chunk.indices]
    if data_min is None and chunk.data.size:
        data_min = chunk.data.min()
    if tok.size and data_min > 0 and tok.min() >= 0:  # common case: nothing to drop
        return chunk.indptr.astype(np.int64), tok, chunk.data
    keep = (tok >= 0) & (chunk.data > 0)
    kept_before = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    indptr = kept_before[chunk.indptr]  # kept entries before each row start
    return indptr, tok[keep], chunk.data[keep]


def collapse_duplicates(indptr, tok, data, n_tokens: int):
    """Sum entries that share ``(row, token)``; returns sorted-by-token rows."""
    m = sp.csr_matrix((data.astype(np.float64), tok, indptr), shape=(len(indptr) - 1, n_tokens))
    m.sum_duplicates()
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """Row index of every entry of a CSR layout."""
    return np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))


# ----------------------------------------------------------------------------------------------
# The ragged result
# ----------------------------------------------------------------------------------------------
@dataclass
class TokenizedCells:
    """Token ids of many cells, ragged: ``cells[i]`` is cell ``i``'s ids in order (an int32 array).

    Attributes
    ----------
    tokens, offsets
        Flat int32 ids and int64 offsets (``len(cells) + 1``); cell ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.
    values
        For the binning tokenizer, the bin of every token (same layout, int16); ``None`` otherwise.
    obs_index
        Position of each kept cell in the input (cells with no counts in the vocabulary are skipped).
    config, report
        The tokenizer's :meth:`config` and what happened (cells skipped, truncated, totals computed...).
    """

    tokens: np.ndarray
    offsets: np.ndarray
    obs_index: np.ndarray
    values: np.ndarray | None = None
    config: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    obs: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"cell {i} out of range for {len(self)} cells")
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets).astype(np.int32)

    def values_of(self, i: int) -> np.ndarray:
        """Bin values of cell ``i`` (binning tokenizer only)."""
        if self.values is None:
            raise AttributeError("These tokens carry no values (only the binning tokenizer produces them).")
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def to_list(self) -> list[np.ndarray]:
        return [self[i] for i in range(len(self))]

    def padded(self, pad_id: int = 0, length: int | None = None) -> np.ndarray:
        """A dense ``(n_cells, length)`` int32 array padded with ``pad_id`` (longer cells are cut)."""
        return _pad(self.tokens, self.offsets, pad_id, length)

    def save(self, path, overwrite: bool = False):
        """Write as an on-disk :class:`~tflib.tokenize.TokenStore`."""
        from .store import TokenStoreWriter

        with TokenStoreWriter(path, config=self.config, with_values=self.values is not None,
                              overwrite=overwrite) as w:
            w.append(self.tokens, self.offsets, values=self.values, obs=self.obs, obs_index=self.obs_index)
            w.report.update(self.report)
        from .store import TokenStore

        return TokenStore.open(path)


def _pad(tokens, offsets, pad_id, length):
    lengths = np.diff(offsets)
    width = int(lengths.max(initial=0)) if length is None else int(length)
    out = np.full((len(lengths), width), pad_id, dtype=np.int32)
    take = np.minimum(lengths, width)
    rows = np.repeat(np.arange(len(lengths)), take)
    pos = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    out[rows, pos] = tokens[np.repeat(offsets[:-1], take) + pos]
    return out


def concat(parts: list[TokenizedCells], config: dict, report: dict) -> TokenizedCells:
    """Join chunk results (already in cell order)."""
    if not parts:
        return TokenizedCells(np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int64),
                              config=config, report=report)
    tokens = np.concatenate([p.tokens for p in parts])
    lengths = np.concatenate([np.diff(p.offsets) for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([p.values for p in parts]) if parts[0].values is not None else None
    return TokenizedCells(tokens, offsets, np.concatenate([p.obs_index for p in parts]), values=values,
                          config=config, report=report)


def assemble(tok_sorted, indptr, max_genes, add_cls, add_eos, cls_id, eos_id, values=None):
    """Cut each row to ``max_genes``, frame it with ``<cls>``/``<eos>``, drop empty rows.

    ``tok_sorted`` (and ``values``) hold every row's entries in final order, rows in order.
    Returns ``(TokenizedCells, report)`` with ``obs_index`` relative to the chunk.
    """
    nnz_row = np.diff(indptr)
    take = np.minimum(nnz_row, max_genes)
    nonempty = nnz_row > 0
    n_special = int(add_cls) + int(add_eos)
    truncated = nnz_row > max_genes
    if truncated.any():
        pos = np.arange(tok_sorted.size) - np.repeat(indptr[:-1], nnz_row)
        sel = pos < max_genes
        genes = tok_sorted[sel]
        vals = values[sel] if values is not None else None
    else:
        genes, vals = tok_sorted, values
    take_ne = take[nonempty]
    offsets = np.zeros(take_ne.size + 1, dtype=np.int64)
    np.cumsum(take_ne + n_special, out=offsets[1:])
    if n_special:
        out = np.empty(int(offsets[-1]), dtype=np.int32)
        is_gene = np.ones(out.size, dtype=bool)
        first, last = offsets[:-1], offsets[1:] - 1
        if add_cls:
            is_gene[first] = False
        if add_eos:
            is_gene[last] = False
        out[is_gene] = genes
        if add_cls:
            out[first] = cls_id
        if add_eos:
            out[last] = eos_id
        if vals is not None:
            v = np.zeros(out.size, dtype=np.int16)
            v[is_gene] = vals
            vals = v
    else:
        out = genes.astype(np.int32, copy=False)
    report = {"n_cells_in": int(nnz_row.size), "n_cells_out": int(nonempty.sum()),
              "n_cells_skipped_empty": int((~nonempty).sum()), "n_cells_truncated": int(truncated.sum()),
              "n_tokens": int(out.size)}
    return TokenizedCells(out, offsets, np.flatnonzero(nonempty).astype(np.int64), values=vals), report


def new_report() -> dict:
    return {"n_cells_in": 0, "n_cells_out": 0, "n_cells_skipped_empty": 0, "n_cells_truncated": 0,
            "n_tokens": 0}


def merge_report(total: dict, part: dict) -> None:
    for k, v in part.items():
        if isinstance(v, bool):
            total[k] = total.get(k, False) or v
        elif isinstance(v, (int, np.integer)):
            total[k] = int(total.get(k, 0)) + int(v)
        else:
            total[k] = v
