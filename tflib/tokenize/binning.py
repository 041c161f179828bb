"""scGPT's value binning, vectorised over CSR chunks (chapter 04).

scGPT (Cui et al. 2024) keeps genes as tokens in a fixed order and turns each gene's expression
into a *value token*: the cell's non-zero values are cut into ``n_bins - 1`` quantile bins
(bin 0 is reserved for zero). Because the edges are the cell's own quantiles, the bins mean
"relative level inside this cell", which removes sequencing depth without normalising.

Algorithm, per cell, on the non-zero values of tokenizable genes (compared as float32):

1. Edges: the ``n_bins - 1`` quantiles at ``0, 1/K, ..., 1`` with ``K = n_bins - 2`` (linear
   interpolation between order statistics, NumPy's default method, but with the position
   ``k (n-1) / K`` taken exactly: ``np.quantile`` rounds it in floating point, which can put an
   edge a hair below a data value and move that value up one bin).
2. A value ``x`` has ``lo`` edges strictly below it and ``hi`` edges at or below it. Its bin is
   ``hi`` when no edge equals ``x``; otherwise it is drawn uniformly from ``lo + 1, ..., hi``
   (random tie-breaking: a value sitting on several equal edges, as repeated small counts do,
   gets one of the bins those edges span). Bins run from 1 to ``n_bins - 1``.
3. If the cell has more than ``max_len - 1`` genes, ``max_len - 1`` of them are kept at random.
4. The sequence is ``<cls>`` followed by the kept genes in vocabulary (token id) order; the
   value of ``<cls>`` is 0.

Seeds: two NumPy generators spawned from ``seed`` draw, in cell order and then token order,
one uniform number per non-zero gene (tie-breaking) and one per gene of each over-long cell
(subsampling). The same input and seed therefore give the same tokens whatever the chunk size.

The interpolated edges are never formed in floating point: for sorted values ``s_0..s_{n-1}``
the edge ``k`` lies at position ``h = k (n-1) / K``, so ``#edges < x = #{k: floor(h_k) < a}`` and
``#edges <= x = #{k: ceil(h_k) <= b}``, where ``a`` and ``b`` are the first and last positions of
``x`` among the sorted values. Both counts are integer formulas, exact and vectorised.
"""
from __future__ import annotations

import numpy as np

from ._core import assemble, collapse_duplicates, project, row_ids
from .base import _Tokenizer
from .vocab import GeneVocab


class BinningTokenizer(_Tokenizer):
    """scGPT-style binning tokenizer (chapter 04).

    Parameters
    ----------
    vocab
        A :class:`~tflib.tokenize.GeneVocab` with a ``<cls>`` token.
    n_bins
        Number of value bins including bin 0 for zero (scGPT: 51).
    seed
        Seed of the tie-breaking and subsampling draws.
    max_len
        Tokens per cell including ``<cls>`` (scGPT pretraining: 1,200).

    ``encode`` returns token ids **and** bins: ``cells[i]`` and ``cells.values_of(i)``.
    """

    kind = "binning"
    add_cls, add_eos = True, False

    def __init__(self, vocab: GeneVocab, n_bins: int = 51, seed: int = 0, max_len: int = 1200):
        super().__init__(vocab, max_len)
        if not 3 <= int(n_bins) <= 32767:
            raise ValueError(f"n_bins must be between 3 and 32767, got {n_bins}.")
        if vocab.cls_id is None:
            raise ValueError("The binning tokenizer puts <cls> first, but this vocabulary has no <cls> token. "
                             "Fix: build the vocabulary with GeneVocab.from_genes (default special tokens).")
        if self.max_genes < 1:
            raise ValueError(f"max_len={max_len} leaves no room for genes after <cls>.")
        self.n_bins = int(n_bins)
        self.seed = int(seed)
        self._tokenizable = np.ones(len(vocab), dtype=bool)
        self._tokenizable[[vocab.token_to_id(s) for s in vocab.special_tokens]] = False

    def config(self) -> dict:
        c = self._base_config()
        c.update({"preset": "scGPT", "n_bins": self.n_bins, "seed": self.seed, "add_cls": True, "add_eos": False,
                  "max_genes": self.max_genes, "cls_value": 0, "gene_order": "token id",
                  "tie_rule": "uniform random bin among the edges equal to the value (seeded)"})
        return c

    def _start_state(self):
        ss = np.random.SeedSequence(self.seed)
        a, b = ss.spawn(2)
        return {"bins": np.random.default_rng(a), "subsample": np.random.default_rng(b)}

    def _encode_chunk(self, chunk, data_min, colmap, dup, state, input):
        indptr, tok, data = project(chunk, colmap, data_min)
        total = float(chunk.data.sum(dtype=np.float64)) if data.size != chunk.data.size else None
        covered = float(data.sum(dtype=np.float64))
        if dup:
            indptr, tok, data = collapse_duplicates(indptr, tok, data, len(self.vocab))
        rows = row_ids(indptr)
        tok, data = _sort_by_token(rows, tok, data, len(self.vocab))
        bins = quantile_bins(rows, data.astype(np.float32), indptr, self.n_bins, state["bins"])
        keep = subsample_mask(rows, indptr, self.max_genes, state["subsample"])
        if keep is not None:
            tok, bins = tok[keep], bins[keep]
            counts = np.bincount(rows[keep], minlength=len(indptr) - 1)
            new_indptr = np.zeros_like(indptr)
            np.cumsum(counts, out=new_indptr[1:])
            n_long = int((np.diff(indptr) > self.max_genes).sum())
            indptr = new_indptr
        else:
            n_long = 0
        part, rep = assemble(tok.astype(np.int32), indptr, self.max_genes, True, False, self.vocab.cls_id, None,
                             values=bins.astype(np.int16))
        rep["n_cells_truncated"] = n_long
        rep["counts_covered"], rep["counts_total"] = covered, covered if total is None else total
        return part, rep


def _sort_by_token(rows, tok, data, n_tokens):
    """Reorder entries within each row by token id (skipped when they already are)."""
    if tok.size < 2:
        return tok, data
    step = np.diff(tok)
    same_row = rows[1:] == rows[:-1]
    if not (step[same_row] < 0).any():
        return tok, data
    tb = max(1, int(n_tokens - 1).bit_length())
    order = np.argsort((rows << np.int64(tb)) | tok.astype(np.int64), kind="stable")
    return tok[order], data[order]


def quantile_bins(rows, v32, indptr, n_bins, rng) -> np.ndarray:
    """Bin (1..n_bins-1) of every entry; rows' entries contiguous and in order. See module docstring."""
    n_row = np.diff(indptr)
    if v32.size == 0:
        return np.zeros(0, dtype=np.int64)
    key = (rows << np.int64(32)) | v32.view(np.int32).astype(np.int64)
    skey = np.sort(key)
    start = indptr[:-1][rows]
    a = np.searchsorted(skey, key, side="left") - start          # values strictly below x
    b = np.searchsorted(skey, key, side="right") - 1 - start     # last position of x
    n = n_row[rows]
    K = n_bins - 2
    n1 = np.maximum(n - 1, 1)
    below = np.minimum(K + 1, -((-a * K) // n1))                  # #edges < x   = ceil(aK/(n-1))
    at_or_below = np.minimum(K + 1, (b * K) // n1 + 1)            # #edges <= x  = floor(bK/(n-1)) + 1
    single = n == 1
    below[single], at_or_below[single] = 0, K + 1
    r = rng.random(v32.size)
    return at_or_below - np.floor(r * (at_or_below - below)).astype(np.int64)


def subsample_mask(rows, indptr, max_genes, rng):
    """Keep ``max_genes`` random entries of every longer row (order kept); ``None`` if no row is longer."""
    n_row = np.diff(indptr)
    long_rows = n_row > max_genes
    if not long_rows.any():
        return None
    in_long = long_rows[rows]
    idx = np.flatnonzero(in_long)
    q = np.floor(rng.random(idx.size) * 2.0**31).astype(np.int64)
    pos = idx - indptr[:-1][rows[idx]]
    order = np.lexsort((pos, q, rows[idx]))  # by row, then random key, ties by position
    r_sorted = rows[idx][order]
    first = np.searchsorted(r_sorted, r_sorted, side="left")
    chosen = idx[order][(np.arange(order.size) - first) < max_genes]
    keep = ~in_long
    keep[chosen] = True
    return keep
