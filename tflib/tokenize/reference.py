"""Per-cell reference implementations: the test oracle and the benchmark's baseline.

These follow the published algorithms literally, one cell at a time, in the shape of Geneformer's
own tokenizer loop: read 512 cells, select the vocabulary's columns, then for every cell
normalise, ``argsort`` and append a Python list (``<cls>``/``<eos>`` added per cell). They are
deliberately simple and slow. ``tests/test_tokenize_rank.py`` checks the vectorised tokenizers
against them cell by cell; ``benchmarks/tokenize.py`` times both.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _chunks(adata, layer, chunk_size):
    X = adata.X if layer is None else adata.layers[layer]
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        yield start, stop, sp.csr_matrix(X[start:stop])


def _columns(tokenizer, adata, **map_kwargs):
    """A genes -> tokens summing matrix (columns mapping to one token are added up, as Geneformer
    V2 does for duplicated IDs) and the token of each of its columns, in token-id order."""
    colmap, _ = tokenizer.gene_columns(adata, check_coverage=False, **map_kwargs)
    cols = np.flatnonzero(colmap >= 0)
    col_tok = np.unique(colmap[cols])
    summing = sp.csr_matrix((np.ones(cols.size), (cols, np.searchsorted(col_tok, colmap[cols]))),
                            shape=(adata.n_vars, col_tok.size))
    return summing, col_tok


def rank_value_reference(tokenizer, adata, *, layer=None, chunk_size=512, **map_kwargs):
    """Geneformer rank-value encoding, one cell at a time. Returns ``(list of token lists, kept rows)``."""
    cols, col_tok = _columns(tokenizer, adata, **map_kwargs)
    med = tokenizer._median_by_id[col_tok]
    cls_id, eos_id = tokenizer.vocab.cls_id, tokenizer.vocab.eos_id
    out, kept = [], []
    for start, stop, chunk in _chunks(adata, layer, chunk_size):
        sub = (chunk @ cols).tocsr()
        sub.sort_indices()
        for i in range(sub.shape[0]):
            lo, hi = sub.indptr[i], sub.indptr[i + 1]
            x, j = sub.data[lo:hi], sub.indices[lo:hi]
            x, j = x[x > 0], j[x > 0]
            if x.size == 0:
                continue
            # counts / n_counts * 1e4 / median without the per-cell factor (it cannot change the
            # order), compared as documented in tflib.tokenize.rank: top 43 bits of the float64
            value = x.astype(np.float64) / med[j]
            key = np.int64(2**43 - 1) - (value.view(np.int64) >> np.int64(20))
            order = np.argsort(key, kind="stable")  # ties keep token order
            genes = col_tok[j][order][:tokenizer.max_genes].tolist()
            if tokenizer.add_cls:
                genes = [cls_id] + genes + [eos_id]
            out.append(genes)
            kept.append(start + i)
    return out, np.asarray(kept, dtype=np.int64)


def binning_reference(tokenizer, adata, *, layer=None, chunk_size=512, **map_kwargs):
    """scGPT-style binning, one cell at a time with ``np.quantile``/``np.digitize``.

    Returns ``(token lists, bin lists, kept rows)``.
    """
    cols, col_tok = _columns(tokenizer, adata, **map_kwargs)
    ss = np.random.SeedSequence(tokenizer.seed)
    a, b = ss.spawn(2)
    rng_bins, rng_sub = np.random.default_rng(a), np.random.default_rng(b)
    toks, bins, kept = [], [], []
    for start, stop, chunk in _chunks(adata, layer, chunk_size):
        sub = (chunk @ cols).tocsr()
        sub.sort_indices()
        for i in range(sub.shape[0]):
            lo, hi = sub.indptr[i], sub.indptr[i + 1]
            x, j = sub.data[lo:hi], sub.indices[lo:hi]
            x, j = x[x > 0].astype(np.float32), j[x > 0]
            if x.size == 0:
                continue
            edges = _quantile_edges(np.sort(x.astype(np.float64)), tokenizer.n_bins - 2)
            at_or_below = np.digitize(x, edges)
            below = np.digitize(x, edges, right=True)
            r = rng_bins.random(x.size)
            b_ = at_or_below - np.floor(r * (at_or_below - below)).astype(np.int64)
            t = col_tok[j]
            if x.size > tokenizer.max_genes:
                q = np.floor(rng_sub.random(x.size) * 2.0**31).astype(np.int64)
                pick = np.sort(np.lexsort((np.arange(x.size), q))[:tokenizer.max_genes])
                t, b_ = t[pick], b_[pick]
            toks.append([tokenizer.vocab.cls_id] + t.tolist())
            bins.append([0] + b_.tolist())
            kept.append(start + i)
    return toks, bins, np.asarray(kept, dtype=np.int64)


def _quantile_edges(s: np.ndarray, K: int) -> np.ndarray:
    """Linear-interpolation quantiles at ``k / K`` of sorted ``s``, with the position ``k (n-1) / K``
    split exactly into integer and fractional parts (``np.quantile`` rounds it in floating point,
    which can put an edge a hair below a data value and move that value to the next bin)."""
    n = s.size
    k = np.arange(K + 1)
    lo, rem = np.divmod(k * (n - 1), K)
    hi = np.minimum(lo + 1, n - 1)
    return np.where(rem == 0, s[lo], s[lo] + (s[hi] - s[lo]) * (rem / K))
