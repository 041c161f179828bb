"""Tokens for the model verbs of ``tflib.tl``: one rule for every verb that tokenizes cells.

:func:`tflib.tl.embed`, :func:`tflib.tl.gene_embeddings`, :func:`tflib.tl.finetune_annotator`
and :func:`tflib.tl.annotate` all get their tokens here, so the vocabulary-coverage check of
``tokenizer.encode`` (chapter 04: the fraction of the counts that fall in the tokenizer's genes)
is applied the same way by all of them: on by default, switched off only by the verb's own
explicit ``check_coverage=False``. No verb turns it off behind the user's back.
"""
from __future__ import annotations

import numpy as np

__all__ = ["encode_cells", "check_layer_index", "check_model_tokenizer"]


def check_model_tokenizer(model, tokenizer) -> None:
    """Refuse a tokenizer that is not the one ``model`` was trained with, before any work is done.

    Two checks: the vocabulary size must equal ``model.config.vocab_size``; and when the model
    was loaded with its tokenizer (``model.tokenizer``, as ``course_checkpoint`` and
    ``from_pretrained`` do), the two tokenizers' configs must agree on everything that changes
    what a token means (preset, vocabulary, gene medians, ``max_len``). A tokenizer with another
    ``max_len`` otherwise runs silently and changes which genes count as expressed. Used by
    :func:`tflib.tl.embed` and :func:`tflib.tl.perturb` (chapters 07 and 11).
    """
    conf = tokenizer.config() if hasattr(tokenizer, "config") else {}
    size = conf.get("vocab_size", len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else None)
    if size is not None and int(size) != model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {size} tokens but the model expects vocab_size={model.config.vocab_size}; "
            "use the tokenizer saved with the model (model.tokenizer after from_pretrained, or the pair "
            "that tflib.models.course_checkpoint() returns)."
        )
    saved = getattr(model, "tokenizer", None)
    if saved is None or saved is tokenizer or not hasattr(saved, "config") or not conf:
        return
    from tflib.tokenize import TokenizerMismatchError
    from tflib.tokenize.base import check_configs

    try:
        check_configs(saved.config(), conf, what="the model's training tokens")
    except TokenizerMismatchError as err:
        first = str(err).split(" Fix:")[0]
        raise TokenizerMismatchError(
            f"{first} Fix: pass the tokenizer saved with the model, tokenizer=model.tokenizer (the "
            "pair that tflib.models.course_checkpoint() or load_pretrained() returns).") from None


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
        recorded = getattr(cells, "config", None)
        if tokenizer is not None and isinstance(recorded, dict) and recorded and hasattr(tokenizer, "check_compatible"):
            tokenizer.check_compatible(recorded, what="tokens=")
    rows = np.asarray(getattr(cells, "obs_index", np.arange(len(cells))), dtype=np.int64)
    if len(rows) != len(cells) or (rows.size and rows.max() >= adata.n_obs):
        raise ValueError(f"{len(cells)} token sequences do not line up with the {adata.n_obs} cells of adata; "
                         "pass tokens made from exactly these cells (tokenizer.encode(adata)) or none.")
    if tokens is not None:
        _check_token_cells(cells, rows, adata)
    return cells, rows


def _check_token_cells(cells, rows, adata) -> None:
    """``tokens=`` must come from these cells: compare the cell names they carry with adata's."""
    try:
        obs = cells.obs
    except (AttributeError, OSError, KeyError):      # tokens without cell names (e.g. a store without obs.h5)
        return
    if obs is None or len(obs) != len(rows):
        return
    theirs = np.asarray(obs.index.astype(str))
    ours = np.asarray(adata.obs_names.astype(str))[rows]
    bad = np.flatnonzero(theirs != ours)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"tokens= were made from other cells than adata: {bad.size} of {len(rows)} sequences "
                         f"carry another cell's name (sequence {i} is {theirs[i]!r}, but adata's cell in that "
                         f"place is {ours[i]!r}). Fix: tokenize exactly these cells, "
                         "tokens=tokenizer.encode(adata, ...), or pass no tokens.")


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
