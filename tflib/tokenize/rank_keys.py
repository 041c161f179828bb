"""The sort keys of the rank-value tokenizer (chapter 04): one 64-bit integer per non-zero entry.

:class:`~tflib.tokenize.RankValueTokenizer` (:mod:`tflib.tokenize.rank`, which documents the
rank-value encoding, the presets and the tie rule) turns each chunk of cells into tokens with
the functions below. They are pure NumPy (no torch, no scanpy) and implement that tie rule exactly.

How the hot path works
----------------------
Each non-zero entry gets one 64-bit integer key: the bits of its float64 value with the 20
lowest mantissa bits cleared (what is left, 11 exponent and 32 mantissa bits, is exactly the
43-bit value of the tie rule), the 43 value bits inverted (so that an ascending sort puts
the highest value first) and the token id in the 20 freed bits. Sorting a cell's keys once
orders its entries by value descending, then by token id ascending: exactly the tie rule,
and the token ids are read back from the low bits of the sorted keys.

All arithmetic is vectorised over whole chunks; when every column of the input is a
vocabulary gene with a median (the usual case), the keys come straight from two per-column
tables (median and token bits) indexed by the CSR column indices, without first projecting
the chunk onto the vocabulary. NumPy has no segmented sort, so the sort is done on a padded
table instead, without a Python loop over cells: each cell's keys are copied into one row of
a ``(cells, longest cell)`` table whose other slots hold a padding key that sorts last,
``ndarray.sort(axis=1)`` sorts every row in one C call, and each row's first ``nnz`` entries
are read back (in the usual case, fused with the framing: :func:`sorted_framed` reads only the
first ``max_genes`` ids of each row, already between ``<cls>`` and ``<eos>``). (A global sort
of the chunk followed by a stable sort on cell ids is about five times slower: one sort over
many cells leaves the CPU cache.) The sort is the largest single cost, and it depends on the
CPU: NumPy 2.2's AVX-512 sort takes about 6 ns per key on an Intel Xeon but about 20 ns on an
AMD EPYC, where its AVX2 sort (``NPY_DISABLE_CPU_FEATURES``) takes about 8 ns; see
benchmarks/README.md. The keys are sorted through a float64 view (NumPy's float64 sort is slightly faster), which orders them exactly
like the integers as long as none of them is a NaN bit pattern, i.e. unless some value is
subnormal; then they are sorted as integers. Vocabularies of more than ``2**20`` tokens take
a ``np.lexsort`` path with the same rule.
"""
from __future__ import annotations

import numpy as np

from ._core import TokenizedCells, row_ids

VALUE_BITS = 43  # precision of the value comparison (see the tie rule)
TOKEN_BITS = 20  # token ids live in the low 20 bits of a key (vocabularies up to 1,048,576 tokens)
_LOW = np.int64((1 << TOKEN_BITS) - 1)
_INVERT = np.int64(((1 << VALUE_BITS) - 1) << TOKEN_BITS)  # flips the 43 value bits
_SMALLEST_NORMAL = np.finfo(np.float64).tiny
_PAD_FLOAT = np.float64(np.inf).view(np.int64)  # padding keys: sort after every real key, as float64
_PAD_INT = np.iinfo(np.int64).max               # ... or as int64


def value_key(value: np.ndarray) -> np.ndarray:
    """``2**43 - 1 - (top 43 bits of the float64 value)``: ascending key = descending value."""
    top = value.astype(np.float64, copy=False).view(np.int64) >> np.int64(63 - VALUE_BITS)
    return np.int64(2**VALUE_BITS - 1) - top


class ColumnKeys:
    """Per-column tables of one ``encode`` call: the median and the key bits of every input column.

    Built once per call from ``colmap`` (token id of each column, ``-1`` = not tokenized). Columns
    outside the vocabulary (or without a median) get median 1 and are marked ``oov``; columns that
    map to a token shared with another column (duplicated IDs, one-to-many orthologs) are marked
    ``shared``. :meth:`chunk_keys` uses the marks to drop and to sum entries without projecting the
    chunk onto the vocabulary. ``direct`` is true when there is nothing to drop or sum.
    """

    def __init__(self, colmap: np.ndarray, median_by_id: np.ndarray, dup: bool = True):
        colmap = np.asarray(colmap, dtype=np.int64)
        ok = colmap >= 0
        self.n_cols = colmap.size
        self.colmap = colmap
        self.oov = ~ok                                                                   # (n_cols,) bool
        self.any_oov = bool(self.oov.any())
        tok_ok = colmap[ok]
        uniq, counts = np.unique(tok_ok, return_counts=True)
        self.shared = ok & np.isin(colmap, uniq[counts > 1])                             # (n_cols,) bool
        self.any_shared = bool(self.shared.any())
        self.direct = not self.any_oov and not self.any_shared and colmap.size > 0
        self.median = np.ones(colmap.size, dtype=np.float64)                             # (n_cols,) float64
        self.median[ok] = median_by_id[tok_ok]
        self.median_max = float(self.median[ok].max()) if ok.any() else 1.0
        self.bits = _INVERT | np.where(ok, colmap, 0)                                    # (n_cols,) int64
        # the tables keys() reads: an oov column has median 0 and bits 0, so that a positive count
        # there gives the key of +inf, which is exactly the padding key _PAD_FLOAT
        self._key_median = np.where(ok, self.median, 0.0)                               # (n_cols,) float64
        self._key_bits = np.where(ok, self.bits, 0)                                     # (n_cols,) int64
        self._scratch = np.empty((2, 0), dtype=np.int64)

    def keys(self, indices: np.ndarray, data: np.ndarray) -> np.ndarray:
        """Keys (int64, ``(nnz,)``) of the entries at columns ``indices`` with values ``data``.

        The result is a view of a scratch buffer that the next call overwrites (reusing it
        saves the page faults of two fresh arrays per chunk). Entries of ``oov`` columns get
        the padding key ``_PAD_FLOAT`` when their count is positive (count / 0 = +inf, bits 0),
        a NaN pattern when it is 0; :meth:`chunk_keys` finds and counts them.
        """
        n = indices.size
        if n and (indices.min() < 0 or indices.max() >= self.n_cols):
            raise IndexError(f"column indices outside 0..{self.n_cols - 1}")
        if self._scratch.shape[1] < n:
            self._scratch = np.empty((2, max(n, 2 * self._scratch.shape[1])), dtype=np.int64)
        key, bits = self._scratch[0, :n], self._scratch[1, :n]
        value = key.view(np.float64)
        np.take(self._key_median, indices, out=value, mode="wrap")  # (nnz,) float64; range checked above
        with np.errstate(divide="ignore", invalid="ignore"):      # count / 0 in oov columns, on purpose
            np.divide(data, value, out=value)                      # counts / median, float64
        key &= ~_LOW                                               # keep the 43 value bits
        np.take(self._key_bits, indices, out=bits, mode="wrap")    # (nnz,) int64: inverted bits + token id
        key ^= bits
        return key

    def chunk_keys(self, chunk, data_min, total: float | None = None):
        """Keys of a CSR chunk, ready for :func:`sorted_framed`: ``(key, n_valid, covered, as_float)``.

        Every entry keeps its slot in the chunk's CSR layout. The entries that give no token, i.e.
        those of ``oov`` columns, explicit zeros, and all but one entry of each (cell, shared
        token) group, get the padding key, which sorts after every real key; ``n_valid`` (per
        row) counts the others. The one kept entry of a shared-token group carries the key of the
        group's summed value (summed in float64 in column order, as the reference does).
        ``covered`` is the sum of the counts of vocabulary genes (``total``, the chunk's sum of
        counts, is computed here unless the caller has it); ``as_float`` says whether the
        keys may be sorted through a float64 view (no subnormal value among the kept entries).
        """
        indices, data, indptr = chunk.indices, chunk.data, chunk.indptr
        key = self.keys(indices, data)
        n_rows = indptr.size - 1
        drop = []
        covered = None
        if total is None:
            total = float(data.sum(dtype=np.float64))
        if self.any_oov:
            if data_min is not None and data_min > 0 and data_min / self.median_max >= _SMALLEST_NORMAL:
                # no zero and no subnormal value: an entry's key is the padding key exactly when
                # its column is oov (see keys()); comparing keys is ~3x cheaper than a gather
                oov_pos = np.flatnonzero(key == _PAD_FLOAT)        # (n_oov,) usually a few % of nnz
            else:
                oov_pos = np.flatnonzero(self.oov[indices])
            covered = total - float(data[oov_pos].sum(dtype=np.float64))
            drop.append(oov_pos)
        has_zero = data_min is not None and data_min <= 0
        if self.any_shared:
            pos = np.flatnonzero(self.shared[indices])              # entries of shared-token columns
            if pos.size:
                row = np.searchsorted(indptr, pos, side="right") - 1
                group = row * np.int64(self.colmap.max() + 1) + self.colmap[indices[pos]]
                # sort by group, stably, so each group's entries stay in column order
                order = np.argsort(group, kind="stable")
                pos, group = pos[order], group[order]
                first = np.r_[True, group[1:] != group[:-1]]
                gid = np.cumsum(first) - 1
                sums = np.zeros(int(first.sum()), dtype=np.float64)
                np.add.at(sums, gid, data[pos].astype(np.float64))
                head = pos[first]                                   # one kept entry per group
                col = indices[head]
                value = sums / self.median[col]
                key[head] = (value.view(np.int64) & ~_LOW) ^ self.bits[col]
                keep = np.zeros(pos.size, dtype=bool)
                keep[np.flatnonzero(first)[sums > 0]] = True
                drop.append(pos[~keep])
                if has_zero:  # zeros outside shared columns (shared ones are handled by their sum)
                    drop.append(np.flatnonzero((data <= 0) & ~self.shared[indices] & ~self.oov[indices]))
            elif has_zero:
                drop.append(np.flatnonzero((data <= 0) & ~self.oov[indices]))
        elif has_zero:
            drop.append(np.flatnonzero((data <= 0) & ~self.oov[indices]) if self.any_oov
                        else np.flatnonzero(data <= 0))
        if covered is None:
            covered = total
        drop = np.concatenate(drop) if drop else np.zeros(0, dtype=np.int64)
        n_valid = np.diff(indptr).astype(np.int64)
        if drop.size:
            n_valid -= np.bincount(np.searchsorted(indptr, drop, side="right") - 1, minlength=n_rows)
        if data_min is None or not n_valid.any():
            as_float = True
        else:
            smallest = data_min if data_min > 0 else float(data[data > 0].min())
            as_float = smallest / self.median_max >= _SMALLEST_NORMAL
        if drop.size:
            key[drop] = _PAD_FLOAT if as_float else _PAD_INT
        return key, n_valid, covered, bool(as_float)


def rank_order(indptr: np.ndarray, tok: np.ndarray, value: np.ndarray, n_tokens: int) -> np.ndarray:
    """Token ids of every row sorted by (value descending, token id ascending); rows stay in order."""
    if n_tokens > 1 << TOKEN_BITS:  # ids need more than 20 bits: a three-key sort, same rule, slower
        order = np.lexsort((tok, value_key(value), row_ids(indptr)))
        return tok[order].astype(np.int32)
    key = value.astype(np.float64).view(np.int64)                 # (nnz,) a copy: sorted in place
    key &= ~_LOW
    key ^= _INVERT | tok.astype(np.int64)
    as_float = bool(value.size == 0 or value.min() >= _SMALLEST_NORMAL)
    return sorted_tokens(key, indptr, as_float)


def sorted_tokens(key: np.ndarray, indptr: np.ndarray, as_float: bool = False,
                  scratch: dict | None = None) -> np.ndarray:
    """Sort the int64 ``key`` of every row and return the token ids (int32, ``(nnz,)``), rows in order.

    A segmented sort without a per-cell Python loop: the rows are copied into a padded table
    (one table row per cell, padding that sorts last), ``ndarray.sort(axis=1)`` sorts all the
    table rows in one C call, and the first ``nnz`` entries of each table row are read back.
    A block of rows whose table would be mostly padding (one very long cell among short ones)
    is split in two (see :func:`_row_blocks`). ``scratch``, a dict kept between the chunks of one
    ``encode`` call, lets the table's memory be reused (a fresh table costs page faults).
    """
    nnz_row = np.diff(indptr)                                                   # (n_rows,)
    tok = np.empty(key.size, dtype=np.int32)                                    # (nnz,)
    dtype, pad = (np.float64, np.inf) if as_float else (np.int64, np.iinfo(np.int64).max)
    flat = key.view(dtype)  # as float64: same order when no key is a NaN pattern, and slightly faster
    for a, b in _row_blocks(nnz_row):
        lo, hi = int(indptr[a]), int(indptr[b])
        width = int(nnz_row[a:b].max(initial=0))
        if width == 0:
            continue
        table = _table(scratch, (b - a) * width).view(dtype).reshape(b - a, width)  # (rows, width)
        table.fill(pad)
        inside = _first_n(nnz_row[a:b], width)                                  # (rows, width) bool
        table[inside] = flat[lo:hi]
        table.sort(axis=1)                                # every row at once; the padding ends up last
        low = table.view(np.int32)[:, 0::2] if np.little_endian else table.view(np.int32)[:, 1::2]
        np.bitwise_and(low[inside], np.int32(_LOW), out=tok[lo:hi])           # low 32 bits -> token ids
    return tok


def sorted_framed(key: np.ndarray, indptr: np.ndarray, max_genes: int, add_cls: bool, add_eos: bool,
                  cls_id, eos_id, as_float: bool = False, scratch: dict | None = None,
                  n_valid: np.ndarray | None = None):
    """:func:`sorted_tokens` followed by :func:`assemble`, fused: returns ``(TokenizedCells, report)``.

    The padded table gets one spare column per special token: row ``i`` holds ``<cls>``, then
    the cell's keys (sorted in place as a row view, ``ndarray.sort(axis=1)``), then ``<eos>``
    written right after its first ``min(nnz, max_genes)`` sorted keys. One boolean gather of
    the low 32 bits then yields the framed output directly, with no intermediate flat array of
    all ``nnz`` sorted ids and no decoding of the ids past ``max_genes``.

    ``n_valid`` (per row, default: every entry) counts the entries whose key is not the padding
    key: a row's other entries sort after them and are never read (see
    :meth:`ColumnKeys.chunk_keys`, which drops genes outside the vocabulary that way).
    """
    nnz_row = np.diff(indptr)                                                   # (n_rows,)
    n_valid = nnz_row if n_valid is None else n_valid
    take = np.minimum(n_valid, max_genes)
    nonempty = n_valid > 0
    c0 = int(bool(add_cls))
    n_special = c0 + int(bool(add_eos))
    length = np.where(nonempty, take + n_special, 0)                            # (n_rows,) framed lengths
    dtype, pad = (np.float64, np.inf) if as_float else (np.int64, np.iinfo(np.int64).max)
    flat = key.view(dtype)
    pieces = []
    for a, b in _row_blocks(nnz_row):
        lo, hi = int(indptr[a]), int(indptr[b])
        width = int(nnz_row[a:b].max(initial=0))
        if width == 0:
            continue
        w2 = width + n_special
        table = _table(scratch, (b - a) * w2).view(dtype).reshape(b - a, w2)     # (rows, specials + width)
        table.fill(pad)
        table[_runs(nnz_row[a:b], c0, w2)] = flat[lo:hi]
        table[:, c0:c0 + width].sort(axis=1)              # every row at once, in place; padding last
        t64 = table.view(np.int64)
        if add_cls:
            t64[:, 0] = cls_id                            # low bits = the id, like every key
        if add_eos:
            t64[np.arange(b - a), take[a:b] + c0] = eos_id  # right after the kept keys
        low = t64.view(np.int32)[:, 0::2] if np.little_endian else t64.view(np.int32)[:, 1::2]
        pieces.append(low[_runs(length[a:b], 0, w2)])
    out = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    np.bitwise_and(out, np.int32(_LOW), out=out)                                # low 32 bits -> token ids
    offsets = np.zeros(int(nonempty.sum()) + 1, dtype=np.int64)
    np.cumsum(length[nonempty], out=offsets[1:])
    report = {"n_cells_in": int(nnz_row.size), "n_cells_out": int(nonempty.sum()),
              "n_cells_skipped_empty": int((~nonempty).sum()), "n_cells_truncated": int((n_valid > max_genes).sum()),
              "n_tokens": int(out.size)}
    return TokenizedCells(out, offsets, np.flatnonzero(nonempty).astype(np.int64)), report


def _runs(n: np.ndarray, skip: int, width: int) -> np.ndarray:
    """Boolean ``(n.size, width)`` table whose row ``i`` is true in columns ``skip .. skip + n[i] - 1``."""
    runs = np.empty((n.size, 3), dtype=np.int64)                                # (rows, 3): false, true, false
    runs[:, 0], runs[:, 1], runs[:, 2] = skip, n, width - skip - n
    return np.repeat(np.tile(np.array([False, True, False]), n.size), runs.ravel()).reshape(n.size, width)


def _table(scratch: dict | None, size: int) -> np.ndarray:
    """A 1-D int64 array of ``size`` elements, from ``scratch["table"]`` when it is large enough."""
    if scratch is None:
        return np.empty(size, dtype=np.int64)
    buf = scratch.get("table")
    if buf is None or buf.size < size:
        buf = scratch["table"] = np.empty(max(size, 2 * (0 if buf is None else buf.size)), dtype=np.int64)
    return buf[:size]


def _first_n(n: np.ndarray, width: int) -> np.ndarray:
    """Boolean ``(n.size, width)`` table whose row ``i`` is true in its first ``n[i]`` columns."""
    runs = np.empty((n.size, 2), dtype=np.int64)                                # (rows, 2): true, false
    runs[:, 0], runs[:, 1] = n, width - n
    return np.repeat(np.tile(np.array([True, False]), n.size), runs.ravel()).reshape(n.size, width)


def _row_blocks(nnz_row: np.ndarray, block_cost: int = 4096) -> list[tuple[int, int]]:
    """Split rows ``0..n`` into contiguous blocks so that their padded tables are small.

    The cost of a block is its table size (``rows * longest row``) plus ``block_cost`` (the fixed
    cost of one more sort call, in table slots). A block is split greedily while that lowers the
    cost: either the longest row becomes a block of its own, between the rows before and after
    it (a few cells far above the V2 limit among ordinary ones, as in real data), or the block is
    halved (several long rows). Typical chunks (similar row lengths) stay one block.
    """
    todo, blocks = [(0, nnz_row.size)], []
    while todo:
        a, b = todo.pop()
        seg = nnz_row[a:b]
        n = b - a
        if n < 2:
            blocks.append((a, b))
            continue
        i = int(seg.argmax())
        keep = n * int(seg[i])
        # cutting out the k longest rows (k <= 8), one at a time: the best k decides
        top = np.sort(seg)[::-1][:9].astype(np.int64)
        k = np.arange(1, top.size)
        cut = int(((n - k) * top[1:] + np.cumsum(top)[:-1] + 2 * k * block_cost).min())
        mid = n // 2
        halve = mid * int(seg[:mid].max()) + (n - mid) * int(seg[mid:].max()) + block_cost
        if keep <= min(cut, halve):
            blocks.append((a, b))
        elif cut <= halve:
            todo += [p for p in ((a + i + 1, b), (a + i, a + i + 1), (a, a + i)) if p[1] > p[0]]
        else:
            todo += [(a + mid, b), (a, a + mid)]
    return blocks
