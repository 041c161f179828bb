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
Each non-zero entry becomes one 64-bit integer key holding its 43-bit value (inverted) and its
token id, so that one row-wise sort of a padded table orders every cell of a chunk at once.
The keys and the sort live in :mod:`tflib.tokenize.rank_keys`; this module holds the presets and
the tokenizer that drives them.
"""
from __future__ import annotations

import numpy as np

from ._core import TokenizedCells, assemble, collapse_duplicates, project, row_ids  # noqa: F401 (assemble: re-export)
from .base import MEDIANS_FILE, _Tokenizer
from .medians import GeneMedians
from .rank_keys import (  # noqa: F401 (the key machinery is re-exported: it was defined here before)
    _INVERT,
    _LOW,
    _SMALLEST_NORMAL,
    TOKEN_BITS,
    VALUE_BITS,
    ColumnKeys,
    _row_blocks,
    rank_order,
    sorted_framed,
    sorted_tokens,
    value_key,
)
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

    parallel_chunks = True  # the state is scratch only: chunks are independent

    def _start_state(self):
        return {}

    def _encode_chunk(self, chunk, data_min, colmap, dup, state, input):
        total = float(chunk.data.sum(dtype=np.float64))
        if len(self.vocab) <= 1 << TOKEN_BITS:
            # one pass for every input: keys from the per-column tables, entries of genes outside
            # the vocabulary (and explicit zeros) turned into padding, duplicated genes summed
            cols = state.get("columns")
            if cols is None:
                cols = state["columns"] = ColumnKeys(colmap, self._median_by_id, dup)
            key, n_valid, covered, as_float = cols.chunk_keys(chunk, data_min, total)
            part, rep = sorted_framed(key, chunk.indptr, self.max_genes, self.add_cls, self.add_eos,
                                      self.vocab.cls_id, self.vocab.eos_id, as_float=as_float,
                                      scratch=state, n_valid=n_valid)
        else:  # ids need more than 20 bits: project, then a three-key sort (same rule, slower)
            indptr, tok, data = project(chunk, colmap, data_min)
            covered = float(data.sum(dtype=np.float64))
            if dup:
                indptr, tok, data = collapse_duplicates(indptr, tok, data, len(self.vocab))
            value = data.astype(np.float64) / self._median_by_id[tok]
            tok_sorted = rank_order(indptr, tok, value, len(self.vocab))
            part, rep = assemble(tok_sorted, indptr, self.max_genes, self.add_cls, self.add_eos,
                                 self.vocab.cls_id, self.vocab.eos_id)
        rep["counts_covered"], rep["counts_total"] = covered, total
        return part, rep
