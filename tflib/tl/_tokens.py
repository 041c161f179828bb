"""Tokens for the model verbs of ``tflib.tl``: one rule for every verb that tokenizes cells.

:func:`tflib.tl.embed`, :func:`tflib.tl.gene_embeddings`, :func:`tflib.tl.finetune_annotator`
and :func:`tflib.tl.annotate` all get their tokens here, so the vocabulary-coverage check of
``tokenizer.encode`` (chapter 04: the fraction of the counts that fall in the tokenizer's genes)
is applied the same way by all of them: on by default, switched off only by the verb's own
explicit ``check_coverage=False``. No verb turns it off behind the user's back.
"""
from __future__ import annotations

import numpy as np

__all__ = ["encode_cells"]


def encode_cells(adata, tokenizer, *, tokens=None, encode_kwargs=None, check_coverage: bool = True):
    """Token sequences of the cells of ``adata`` and the ``obs`` row each one belongs to.

    ``tokens`` (pre-computed ``tokenizer.encode`` output) is used as given: the coverage check
    ran when it was made. Otherwise ``tokenizer.encode(adata, check_coverage=check_coverage,
    **encode_kwargs)``; passing ``check_coverage`` inside ``encode_kwargs`` as well is refused,
    so there is one switch and it is visible in the call.
    """
    kwargs = dict(encode_kwargs or {})
    if "check_coverage" in kwargs:
        raise TypeError("check_coverage was passed inside encode_kwargs; pass it to the verb itself "
                        "(e.g. tl.embed(..., check_coverage=False)), once.")
    if tokens is None:
        if tokenizer is None:
            raise ValueError("No tokenizer and no tokens: pass tokenizer= (the one the model was trained "
                             "with) or tokens= (its encode output for these cells).")
        cells = tokenizer.encode(adata, check_coverage=check_coverage, **kwargs)
    else:
        cells = tokens
    rows = np.asarray(getattr(cells, "obs_index", np.arange(len(cells))), dtype=np.int64)
    if len(rows) != len(cells) or (rows.size and rows.max() >= adata.n_obs):
        raise ValueError(f"{len(cells)} token sequences do not line up with the {adata.n_obs} cells of adata; "
                         "pass tokens made from exactly these cells (tokenizer.encode(adata)) or none.")
    return cells, rows
