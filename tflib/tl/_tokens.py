"""Tokens for the model verbs of ``tflib.tl``: one rule for every verb that tokenizes cells.

:func:`tflib.tl.embed`, :func:`tflib.tl.gene_embeddings`, :func:`tflib.tl.finetune_annotator`
and :func:`tflib.tl.annotate` all get their tokens here, so the vocabulary-coverage check of
``tokenizer.encode`` (chapter 04: the fraction of the counts that fall in the tokenizer's genes)
is applied the same way by all of them: on by default, switched off only by the verb's own
explicit ``check_coverage=False``. No verb turns it off behind the user's back.
"""
from __future__ import annotations

import numpy as np

__all__ = ["encode_cells", "check_layer_index"]


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
        try:
            cells = tokenizer.encode(adata, check_coverage=check_coverage, **kwargs)
        except (ValueError, KeyError) as err:
            if "layer=" not in str(err):
                raise
            # the tokenizer's advice says layer='...', which in a model verb means the hidden state
            hint = ("In this model verb the tokenizer's arguments go in encode_kwargs, e.g. "
                    "encode_kwargs={'layer': 'counts'}; the verb's own layer= picks a hidden state.")
            try:
                clearer = type(err)(f"{err.args[0] if err.args else err} {hint}")
            except Exception:                       # an exception type with another signature
                raise err from None
            raise clearer from err
    else:
        cells = tokens
    rows = np.asarray(getattr(cells, "obs_index", np.arange(len(cells))), dtype=np.int64)
    if len(rows) != len(cells) or (rows.size and rows.max() >= adata.n_obs):
        raise ValueError(f"{len(cells)} token sequences do not line up with the {adata.n_obs} cells of adata; "
                         "pass tokens made from exactly these cells (tokenizer.encode(adata)) or none.")
    return cells, rows


def check_layer_index(layer) -> int:
    """``layer`` as an int, or a TypeError that says where a count layer's name belongs.

    In the model verbs (:func:`tflib.tl.embed`, :func:`tflib.tl.perturb`, ...) ``layer`` is a
    hidden-state index, while in the tokenizers it names ``adata.layers``; passing a name here
    is an easy slip, so it gets its own message.
    """
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer={layer!r}: here layer is the hidden state to read (an int: -1 the last "
                        "block, 0 the embeddings). To tokenize a layer of adata, e.g. its counts, pass "
                        "encode_kwargs={'layer': 'counts'}.")
    return int(layer)
