"""Helpers shared by the cell explorers: picking one cell and labelling its tokens."""
from __future__ import annotations

import numpy as np


def cell_position(adata, cell) -> int:
    """Row of ``cell`` (an integer position or an ``obs_names`` entry), with a clear error."""
    n = adata.n_obs
    if isinstance(cell, (str, np.str_)):
        idx = adata.obs_names.get_indexer([str(cell)])[0]
        if idx < 0:
            raise KeyError(f"cell {cell!r} is not in adata.obs_names. Fix: pass an obs name such as "
                           f"{adata.obs_names[0]!r}, or an integer position 0 to {n - 1}.")
        return int(idx)
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)):
        raise TypeError(f"cell={cell!r} is neither an integer position nor an obs name. Fix: pass e.g. cell=0.")
    if not 0 <= int(cell) < n:
        raise IndexError(f"cell={int(cell)} is out of range: adata has {n:,} cells. Fix: pick a position "
                         f"from 0 to {n - 1}, or an obs name such as {adata.obs_names[0]!r}.")
    return int(cell)


def token_labels(tokenizer, adata, *, gene_key=None, **map_kw) -> dict[int, str]:
    """``{token id: readable name}``: the input's own gene name where it has one, else the vocabulary's.

    Special tokens keep their vocabulary names (``<cls>``, ``<eos>``, ...).
    """
    colmap, _ = tokenizer.gene_columns(adata, gene_key=gene_key, check_coverage=False, **map_kw)
    names = adata.var_names if gene_key is None else adata.var[gene_key].astype(str)
    labels: dict[int, str] = {}
    for tok, name in zip(colmap.tolist(), list(names)):
        if tok >= 0 and tok not in labels:
            labels[tok] = str(name)
    vocab = tokenizer.vocab
    for special in vocab.special_tokens:
        labels[vocab.token_to_id(special)] = special
    return labels


def encode_one(tokenizer, adata, pos: int, *, gene_key=None, layer=None, **map_kw) -> np.ndarray:
    """The token ids of the cell at ``pos`` (coverage not checked: one cell is not a corpus)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # an empty cell is reported below instead
        cells = tokenizer.encode(adata[pos:pos + 1], gene_key=gene_key, layer=layer,
                                 check_coverage=False, **map_kw)
    if len(cells) == 0:
        raise ValueError(f"cell {adata.obs_names[pos]!r} (position {pos}) has no counts in the tokenizer's "
                         "genes, so it has no token sequence. Fix: pick another cell.")
    return np.asarray(cells[0])
