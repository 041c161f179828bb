"""AnnData verbs for tokenization (chapter 04; the results feed chapters 06, 07 and 11).

``tflib.pp.tokenize(adata, tokenizer)`` writes, for ``key_added="tokens"`` (the default):

``adata.obsm["tokens"]``
    int32 array ``(n_obs, L)``: each cell's token ids, padded with ``<pad>`` to the longest
    sequence ``L``. Skipped cells (no counts in the vocabulary) are all ``<pad>``.
``adata.obsm["tokens_values"]``
    int16 bins, same layout (binning tokenizer only; ``<cls>`` and padding are 0).
``adata.obs["tokens_length"]``
    number of tokens per cell (0 for skipped cells).
``adata.uns["tokens"]``
    ``{"config": tokenizer.config(), "report": {...}, "store": path or ""}``: ``config`` holds
    ``kind``, ``preset``, ``max_len``, ``vocab_size``, ``vocab_fingerprint``, the special-token ids,
    ``n_bins``/``seed`` (binning) or ``medians_fingerprint``/``target_sum`` (rank value), so
    :func:`check_tokenizer` can refuse a later step that uses a different tokenizer.

With ``store=path`` the tokens are streamed to an on-disk
:class:`~tflib.tokenize.TokenStore` instead of ``obsm`` (for corpora that do not fit in memory).
"""
from __future__ import annotations

import json

import numpy as np

from tflib._compat import renamed_kwargs


def _uns_safe(x):
    """JSON round trip with ``None`` -> ``""`` (h5ad cannot store None)."""
    def fix(v):
        if isinstance(v, dict):
            return {str(k): fix(w) for k, w in v.items()}
        if isinstance(v, list):
            return [fix(w) for w in v] if v else ""
        return "" if v is None else v
    return fix(json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o))))


@renamed_kwargs(key="key_added")
def tokenize(adata, tokenizer, *, key_added: str = "tokens", store=None, overwrite: bool = False,
             copy: bool = False, **encode_kwargs):
    """Tokenize every cell of ``adata`` and record the tokenizer's settings in ``adata.uns[key_added]``.

    Chapter 04 introduces it; chapters 06, 07 and 10 tokenize their cells with it.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` or ``layer=`` (or normalised values with
        ``input="normalized"``); in memory or backed.
    tokenizer
        A :class:`~tflib.tokenize.RankValueTokenizer` or :class:`~tflib.tokenize.BinningTokenizer`.
    key_added
        Prefix of the keys written (``key`` is accepted for one release, with a warning):
        ``obsm[key_added]`` (padded token ids), ``obsm[f"{key_added}_values"]`` (binning
        tokenizer only), ``obs[f"{key_added}_length"]`` and ``uns[key_added]``; see the module
        docstring for their layout.
    store
        Optional folder for an on-disk token store (streamed; nothing goes to ``obsm``).
    overwrite
        Replace existing ``obsm[key_added]``/``uns[key_added]``/``obs[f"{key_added}_length"]``
        (or store folder). Default: refuse.
    copy
        ``False`` (default): write into ``adata`` and return ``None``. ``True``: leave ``adata``
        untouched and return a tokenized copy.
    **encode_kwargs
        Passed to ``tokenizer.encode`` (``layer``, ``gene_key``, ``species``, ``input``, ``chunk_size``...).

    Returns
    -------
    ``None`` (or the tokenized copy with ``copy=True``). The report is in
    ``adata.uns[key_added]["report"]``. A failed call leaves ``adata`` as it was: the tokens are
    computed first and written only at the end.
    """
    key = key_added
    clash = [where for where, keys in (("uns", adata.uns), ("obsm", adata.obsm), ("obs", adata.obs))
             if (key if where != "obs" else f"{key}_length") in keys]
    if not overwrite and clash:
        raise FileExistsError(f"adata already holds tokens under {key!r} (in {', '.join(clash)}); pass "
                              "overwrite=True to replace them, or key_added='another_name'.")
    if copy:
        adata = adata.copy()
    if store is not None:
        result = tokenizer.encode_to_store(adata, store, overwrite=overwrite, **encode_kwargs)
        report, kept = result.report, result.obs_index
        lengths = np.zeros(adata.n_obs, dtype=np.int32)
        lengths[kept] = result.lengths
    else:
        result = tokenizer.encode(adata, **encode_kwargs)
        report, kept = result.report, result.obs_index
        lengths = np.zeros(adata.n_obs, dtype=np.int32)
        lengths[kept] = result.lengths
        padded = np.full((adata.n_obs, int(lengths.max(initial=0))), tokenizer.vocab.pad_id or 0, dtype=np.int32)
        padded[kept] = result.padded(pad_id=tokenizer.vocab.pad_id or 0, length=padded.shape[1])
        vals = None
        if result.values is not None:
            vals = np.zeros(padded.shape, dtype=np.int16)
            vals[kept] = _pad_values(result, padded.shape[1])
    uns = {"config": _uns_safe(tokenizer.config()), "report": _uns_safe(report),
           "store": str(store) if store is not None else ""}
    # everything is computed: only now touch the AnnData
    if store is None:
        adata.obsm[key] = padded
        if vals is not None:
            adata.obsm[f"{key}_values"] = vals
    adata.obs[f"{key}_length"] = lengths
    adata.uns[key] = uns
    return adata if copy else None


def _pad_values(result, width):
    from tflib.tokenize._core import _pad

    return _pad(result.values, result.offsets, 0, width).astype(np.int16)


@renamed_kwargs(key="tokens_key")
def check_tokenizer(adata, tokenizer, *, tokens_key: str = "tokens") -> None:
    """Raise :class:`~tflib.tokenize.TokenizerMismatchError` if ``adata``'s tokens (``uns[key]``) were
    made by a tokenizer different from ``tokenizer`` (preset, vocabulary, medians, length, bins).

    Call it before embedding or fine-tuning on tokens that an earlier chapter wrote (chapters 06
    and 07 do).

    Parameters
    ----------
    adata
        Cells tokenized by :func:`tokenize`.
    tokenizer
        The tokenizer about to be used on those tokens.
    tokens_key
        The ``key_added`` that :func:`tokenize` used.

    Returns
    -------
    None. Raises on a mismatch.
    ``tokens_key`` is the ``key_added`` that :func:`tokenize` used (``key`` is accepted for one
    release, with a warning). Writes nothing.
    """
    key = tokens_key
    if key not in adata.uns or "config" not in adata.uns[key]:
        raise KeyError(f"adata.uns[{key!r}] holds no tokenizer config; run tflib.pp.tokenize(adata, tokenizer, "
                       f"key_added={key!r}) first.")
    tokenizer.check_compatible(dict(adata.uns[key]["config"]), what=f"The tokens in adata (key {key!r})")
