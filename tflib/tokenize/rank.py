"""Geneformer's rank-value encoding, vectorised over CSR chunks (chapter 04; used in 06, 07, 11).

For each cell (Theodoris et al. 2023):

1. ``value = counts / n_counts * 1e4 / gene_median`` for every gene with a non-zero count;
2. genes are sorted by ``value``, highest first;
3. the sorted gene ids are the cell's tokens, truncated to the preset's length.

The factor ``1e4 / n_counts`` is the same for every gene of a cell, so it cannot change the
order within the cell: the tokens depend only on ``counts / gene_median``. The hot path therefore
ranks ``counts / gene_median`` (float64) and never needs ``n_counts``
(:func:`~tflib.tokenize.gene_medians` does: there the factor matters, because it compares
cells). Chapter 04 shows this cancellation on a real cell.

Presets
-------
``"V1"``  2,048 genes, no special tokens (Geneformer's first models).
``"V2"``  up to 4,094 genes framed as ``<cls> g1 ... gk <eos>`` (4,096 tokens in all).

Tie rule (stable, documented)
-----------------------------
Values are compared on the top 43 bits of their float64 representation (the 11 exponent and
32 leading mantissa bits): two values count as equal when they agree to about 2e-10 relative,
far below any real difference between ``count / median`` ratios, but enough to merge the
last-bit rounding differences of values that are mathematically equal. Equal values are
ordered by **ascending token id**, i.e. vocabulary order, so the result does not depend on
the column order of the input. Geneformer's own ``np.argsort`` is not stable: for exact ties
its order is arbitrary; otherwise both agree.

How the hot path works
----------------------
Each non-zero entry gets one 63-bit integer key: 4 bits for its cell within a block of 16
cells, 43 bits for ``2**43 - 1 - value bits`` (the bits of a non-negative float order like the
float) and 16 bits for the token id. Sorting the keys of a block once orders the entries by
cell, then by value descending, then by token id: exactly the rule above. All arithmetic is on
whole chunks; the only Python loop calls ``ndarray.sort`` once per block of 16 cells (small
blocks stay in the CPU cache, which makes the sort about 20 % faster than one sort per chunk).
Vocabularies of more than 65,536 tokens take a ``np.lexsort`` path with the same rule.
"""
from __future__ import annotations

import numpy as np

from ._core import TokenizedCells, collapse_duplicates, project, row_ids
from .base import MEDIANS_FILE, _Tokenizer
from .medians import GeneMedians
from .vocab import GeneVocab

#: The two Geneformer conventions.
PRESETS = {
    "V1": {"max_len": 2048, "add_cls": False, "add_eos": False},
    "V2": {"max_len": 4096, "add_cls": True, "add_eos": True},
}

TIE_RULE = "counts / median (float64, top 43 bits), descending; ties by ascending token id"


class RankValueTokenizer(_Tokenizer):
    """Geneformer rank-value tokenizer (chapter 04).

    Parameters
    ----------
    vocab
        The :class:`~tflib.tokenize.GeneVocab`. V2 needs ``<cls>`` and ``<eos>`` in it.
    gene_medians
        A :class:`~tflib.tokenize.GeneMedians` keyed by vocabulary tokens, a ``{gene: median}``
        dict, or the path of a medians JSON file. Genes without a median are not tokenized.
    preset
        ``"V2"`` (default) or ``"V1"``; see the module docstring.
    max_len
        Override the preset's total length (special tokens included).
    target_sum
        The per-cell normalisation total (Geneformer: 10,000). Recorded in the config; it scales
        every gene of a cell alike, so it does not change the tokens.

    Examples
    --------
    >>> tok = RankValueTokenizer(vocab, medians, preset="V2")      # doctest: +SKIP
    >>> cells = tok.encode(adata)                                   # doctest: +SKIP
    >>> vocab.decode(cells[0][:5])                                  # doctest: +SKIP
    ['<cls>', 'ENSG...', ...]
    """

    kind = "rank_value"

    def __init__(self, vocab: GeneVocab, gene_medians, preset: str = "V2", max_len: int | None = None,
                 target_sum: float = 1e4):
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
        p = PRESETS[preset]
        super().__init__(vocab, max_len if max_len is not None else p["max_len"])
        self.preset = preset
        self.add_cls, self.add_eos = p["add_cls"], p["add_eos"]
        if self.add_cls and (vocab.cls_id is None or vocab.eos_id is None):
            raise ValueError("Preset V2 frames each cell with <cls> ... <eos>, but this vocabulary has no "
                             f"{'<cls>' if vocab.cls_id is None else '<eos>'} token (it looks like a Geneformer V1 "
                             "dictionary). Fix: use preset='V1' with it, or a V2 vocabulary.")
        if self.max_genes < 1:
            raise ValueError(f"max_len={self.max_len} leaves no room for genes with preset {preset}.")
        if isinstance(gene_medians, dict):
            gene_medians = GeneMedians.from_dict(gene_medians)
        elif not isinstance(gene_medians, GeneMedians):
            gene_medians = GeneMedians.load(gene_medians)
        self.gene_medians = gene_medians
        self.target_sum = float(target_sum)
        self._median_by_id = gene_medians.for_vocab(vocab)
        self._tokenizable = np.isfinite(self._median_by_id)
        if not self._tokenizable.any():
            raise ValueError("None of the gene medians' genes are in the vocabulary: they are keyed by different "
                             f"identifiers (e.g. {gene_medians.genes[:3]} vs {vocab.genes[:3]}). Fix: compute "
                             "them with tflib.tokenize.gene_medians(adata, vocab=vocab).")

    def config(self) -> dict:
        c = self._base_config()
        c.update({"preset": self.preset, "add_cls": self.add_cls, "add_eos": self.add_eos,
                  "max_genes": self.max_genes, "target_sum": self.target_sum, "tie_rule": TIE_RULE,
                  "n_genes_with_median": int(self._tokenizable.sum()),
                  "medians_fingerprint": self.gene_medians.fingerprint,
                  "medians_method": self.gene_medians.method})
        return c

    def _files(self) -> list[str]:
        return super()._files() + [MEDIANS_FILE]

    def _save_extra(self, d) -> None:
        self.gene_medians.save(d / MEDIANS_FILE, overwrite=True)

    def _start_state(self):
        return None

    def _encode_chunk(self, chunk, data_min, colmap, dup, state, input):
        indptr, tok, data = project(chunk, colmap, data_min)
        all_kept = data.size == chunk.data.size
        covered = float(data.sum(dtype=np.float64))
        if dup:
            indptr, tok, data = collapse_duplicates(indptr, tok, data, len(self.vocab))
        value = data.astype(np.float64) / self._median_by_id[tok]
        tok_sorted = rank_order(indptr, tok, value, len(self.vocab))
        part, rep = assemble(tok_sorted, indptr, self.max_genes, self.add_cls, self.add_eos,
                             self.vocab.cls_id, self.vocab.eos_id)
        rep["counts_covered"], rep["all_kept"] = covered, all_kept
        return part, rep


VALUE_BITS = 43  # precision of the value comparison (see the tie rule)
_BLOCK_BITS = 4  # cells per sort block: 2**4 = 16; 4 + 43 + 16 = 63 bits


def value_key(value: np.ndarray) -> np.ndarray:
    """``2**43 - 1 - (top 43 bits of the float64 value)``: ascending key = descending value."""
    top = value.astype(np.float64, copy=False).view(np.int64) >> np.int64(63 - VALUE_BITS)
    return np.int64(2**VALUE_BITS - 1) - top


def rank_order(indptr: np.ndarray, tok: np.ndarray, value: np.ndarray, n_tokens: int) -> np.ndarray:
    """Token ids of every row sorted by (value descending, token id ascending); rows stay in order."""
    nnz_row = np.diff(indptr)
    if n_tokens > 1 << 16:  # ids need more than 16 bits: a three-key sort, same rule, slower
        order = np.lexsort((tok, value_key(value), row_ids(indptr)))
        return tok[order].astype(np.int32)
    block = np.int64(1 << _BLOCK_BITS)
    base = (np.arange(nnz_row.size, dtype=np.int64) % block) << np.int64(VALUE_BITS + 16)
    base |= np.int64(2**VALUE_BITS - 1) << np.int64(16)
    key = np.repeat(base, nnz_row)
    top = value.astype(np.float64, copy=False).view(np.int64) >> np.int64(63 - VALUE_BITS)
    top <<= np.int64(16)
    key -= top
    del top
    key |= tok
    for start in range(0, nnz_row.size, int(block)):  # one sort per 16 cells
        key[indptr[start]:indptr[min(start + int(block), nnz_row.size)]].sort()
    low = key.view(np.int32)[0::2] if np.little_endian else key.view(np.int32)[1::2]  # low 32 bits
    return np.bitwise_and(low, np.int32(0xFFFF))


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
