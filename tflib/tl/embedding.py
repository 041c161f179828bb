"""Cell and gene embeddings from a Transcriptformer (chapter 07; used again in chapters 10, 11 and 13).

(The module is not called ``embed.py``: a submodule named like its function would shadow the
function ``tflib.tl.embed`` once imported.)

- :func:`embed` writes one vector per cell to ``adata.obsm[key_added]`` (the ``<cls>`` state or the
  mean over gene tokens, from any layer). Every cell is embedded -- unlike Geneformer's
  extractor, which silently samples 1,000 cells by default -- in length-sorted batches, in
  eval mode, so the same call gives the same numbers.
- :func:`gene_embeddings` returns one vector per gene of the dataset: ``kind="static"`` reads
  the rows of the input embedding matrix; ``kind="contextual"`` averages, over all cells, the
  hidden state at the position where the gene occurs.

The fast path: no MLM head is computed, blocks after ``layer`` are skipped, ``<cls>`` pooling
runs the last block for ``<cls>`` only, and batches with much padding skip it in the linear
layers (``unpad``); ``benchmarks/embed.py`` compares it with HF used the way
Geneformer's extractor uses it.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from tflib._compat import renamed_kwargs
from tflib.tokenize import special_token_ids
from tflib.utils import get_device

from ._tokens import check_layer_index, check_model_tokenizer, encode_cells

__all__ = ["embed", "gene_embeddings"]

#: Drop padding from the linear layers when more than this fraction of a batch is padding
#: (below it, the gather/scatter costs more than it saves; length-sorted batches rarely need it).
UNPAD_ABOVE = 0.2


def _tokens_for(adata, model, tokenizer, tokens, encode_kwargs, check_coverage):
    """Token ids for the cells of ``adata`` and the row each result belongs to (after checking that
    the tokenizer is the model's)."""
    check_model_tokenizer(model, tokenizer)
    return encode_cells(adata, tokenizer, tokens=tokens, encode_kwargs=encode_kwargs,
                        check_coverage=check_coverage)


def _batches(cells, batch_size: int, max_len: int, pad_id: int):
    """Yield ``(positions, input_ids, attention_mask)`` in length-sorted batches (longest first)."""
    lengths = np.minimum(np.array([len(cells[i]) for i in range(len(cells))]), max_len)
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        pos = order[start:start + batch_size]
        L = int(lengths[pos].max())
        ids = torch.full((len(pos), L), pad_id, dtype=torch.long)     # (B, L)
        for r, i in enumerate(pos):
            seq = np.asarray(cells[i][:max_len], dtype=np.int64)
            ids[r, : len(seq)] = torch.from_numpy(seq)
        mask = torch.arange(L)[None, :] < torch.from_numpy(lengths[pos])[:, None]  # (B, L)
        yield pos, ids, mask


def _hidden_states(model, cells, batch_size, device, layer, pad_id, progress, first_only=False):
    """Yield ``(positions, input_ids, attention_mask, hidden (B, L, D))`` for every cell."""
    from tqdm.auto import tqdm

    n_batches = -(-len(cells) // batch_size)
    for pos, ids, mask in tqdm(_batches(cells, batch_size, model.config.max_len, pad_id),
                               total=n_batches, disable=not progress, desc="embed"):
        unpad = 1.0 - float(mask.float().mean()) > UNPAD_ABOVE                 # worth it only with much padding
        h = model.encode(ids.to(device), mask.to(device), layer=layer, unpad=unpad, first_only=first_only)  # (B, L or 1, D)
        yield pos, ids, mask, h.float().cpu()


@renamed_kwargs(key="key_added")
def embed(adata, model, tokenizer, *, key_added: str = "X_tf", pooling: str = "cls", layer: int = -1,
          batch_size: int = 16, device=None, tokens=None, check_coverage: bool = True, encode_kwargs=None,
          progress: bool = False, copy: bool = False):
    """Cell embeddings into ``adata.obsm[key_added]`` (chapter 07; also chapters 10, 11 and 13).

    Parameters
    ----------
    adata
        The cells (AnnData; counts as the tokenizer expects them).
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and the tokenizer it was trained with (when the
        model carries its saved tokenizer, ``model.tokenizer``, another config is refused).
    key_added
        Where the result goes (``key`` is still accepted for one release, with a ``FutureWarning``).
    pooling
        ``"cls"``: the hidden state of the ``<cls>`` token (V2 tokenizers only);
        ``"mean"``: the mean over gene tokens (the ids of :func:`tflib.tokenize.special_token_ids`
        and padding excluded).
    layer
        Which hidden state: ``-1`` the last block, ``-2`` the one before, ``0`` the embeddings.
    batch_size, device
        Cells per forward pass; device from :func:`tflib.utils.get_device` when ``None``.
    tokens
        Pre-computed ``tokenizer.encode(adata)`` output (skips tokenizing again; its coverage
        was checked when it was made). Refused if it was made from other cells (its ``obs``
        names differ from ``adata``'s) or with another tokenizer.
    check_coverage
        Passed to ``tokenizer.encode``: refuse input whose counts fall mostly outside the
        tokenizer's genes (chapter 04). The same rule, with the same default, as every other
        tokenizing verb (:func:`gene_embeddings`, :func:`tflib.tl.finetune_annotator`,
        :func:`tflib.tl.annotate`); ``False`` tokenizes the covered genes anyway.
    encode_kwargs
        Other arguments of ``tokenizer.encode`` (e.g. ``{"layer": "counts"}``).
    progress
        Show a progress bar over batches.
    copy
        ``False`` (default): write into ``adata`` and return ``None``. ``True``: leave ``adata``
        as it is and return a copy holding the result.

    Returns
    -------
    None or anndata.AnnData
        ``None``, or the copy when ``copy=True``. Written keys:

        - ``obsm[key_added]``: ``(n_obs, n_embd)`` float32, one row per cell. Every cell is
          embedded; cells without any tokenizable gene get a row of NaN (with a warning).
        - ``uns[key_added]``: how the vectors were made (pooling, layer, cells embedded, model size).

        Nothing is written when the call fails.
    """
    if pooling not in ("cls", "mean"):
        raise ValueError(f"pooling={pooling!r}; use 'cls' or 'mean'.")
    layer = check_layer_index(layer)
    device = get_device(device) if not isinstance(device, torch.device) else device
    cells, rows = _tokens_for(adata, model, tokenizer, tokens, encode_kwargs, check_coverage)
    vocab = getattr(tokenizer, "vocab", None)
    cls_id = getattr(vocab, "cls_id", None)
    pad_id = getattr(vocab, "pad_id", None) or model.config.pad_token_id
    if pooling == "cls" and (cls_id is None or any(len(cells[i]) == 0 or cells[i][0] != cls_id
                                                    for i in range(len(cells)))):
        raise ValueError("pooling='cls' needs every cell to start with <cls> (a V2 tokenizer); "
                         "these tokens do not. Use pooling='mean'.")
    special = torch.tensor(special_token_ids(tokenizer, model))
    out = np.full((adata.n_obs, model.config.n_embd), np.nan, dtype=np.float32)
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.inference_mode():
            for pos, ids, mask, h in _hidden_states(model, cells, batch_size, device, layer, pad_id, progress,
                                                    first_only=pooling == "cls"):
                if pooling == "cls":
                    vec = h[:, 0]                                             # (B, D)
                else:
                    keep = (mask & ~torch.isin(ids, special)).float()         # (B, L) gene tokens only
                    vec = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)  # (B, D)
                out[rows[pos]] = vec.numpy()
    finally:
        model.train(was_training)
    n_missing = adata.n_obs - len(rows)
    if n_missing:
        warnings.warn(f"{n_missing} cells have no tokenizable gene; their rows in obsm[{key_added!r}] are NaN.")
    target = adata.copy() if copy else adata
    target.obsm[key_added] = out
    target.uns[key_added] = {"pooling": pooling, "layer": int(layer), "n_cells_embedded": int(len(rows)),
                             "model_n_embd": int(model.config.n_embd), "model_n_layer": int(model.config.n_layer)}
    return target if copy else None


@renamed_kwargs(key="key_added")
def gene_embeddings(adata, model, tokenizer, *, kind: str = "static", key_added: str | None = None,
                    layer: int = -1, batch_size: int = 16, device=None, tokens=None, gene_key: str | None = None,
                    check_coverage: bool = True, encode_kwargs=None, progress: bool = False) -> pd.DataFrame:
    """One vector per gene of ``adata``, as a table (chapters 07 and 13).

    Parameters
    ----------
    adata
        The dataset whose genes (``var_names`` or ``var[gene_key]``) are looked up; for
        ``kind="contextual"`` also its cells (counts as the tokenizer expects them).
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and the tokenizer it was trained with.
    kind
        ``"static"``: the gene's row of the input embedding matrix (context-free).
        ``"contextual"``: the mean, over all cells where the gene is tokenized, of the hidden
        state at its position (``layer`` as in :func:`embed`).
    key_added
        If given, the matrix is also written into ``adata`` (``key`` is still accepted for one
        release, with a ``FutureWarning``). Default ``None``: nothing is written.
    layer, batch_size, device, tokens, encode_kwargs, progress
        As in :func:`embed` (used by ``kind="contextual"`` only).
    gene_key
        ``var`` column with the gene identifiers (default ``var_names``).
    check_coverage
        As in :func:`embed`: passed to ``tokenizer.encode`` for ``kind="contextual"``.

    Returns
    -------
    pandas.DataFrame
        ``n_vars x n_embd``, rows in the order of ``adata.var_names``; genes outside the
        vocabulary (or never seen, for ``"contextual"``) are NaN. The table is the result; with
        ``key_added`` it is also written to:

        - ``varm[key_added]``: the same matrix;
        - ``var[key_added + "_n_cells"]`` (``"contextual"`` only): in how many cells each gene was
          tokenized.
    """
    if kind not in ("static", "contextual"):
        raise ValueError(f"kind={kind!r}; use 'static' or 'contextual'.")
    layer = check_layer_index(layer)
    names = adata.var_names if gene_key is None else adata.var[gene_key].astype(str)
    gene_ids = np.asarray(tokenizer.vocab.map_genes(list(names)).ids)        # (n_vars,), -1 = not in vocab
    D = model.config.n_embd
    out = np.full((adata.n_vars, D), np.nan, dtype=np.float32)
    counts = np.zeros(adata.n_vars, dtype=np.int64)
    known = gene_ids >= 0
    if kind == "static":
        table = model.embeddings.word.weight.detach().float().cpu().numpy()  # (V, D)
        out[known] = table[gene_ids[known]]
    else:
        device = get_device(device) if not isinstance(device, torch.device) else device
        cells, _ = _tokens_for(adata, model, tokenizer, tokens, encode_kwargs, check_coverage)
        V = model.config.vocab_size
        total = torch.zeros(V, D, dtype=torch.float64)                         # (V, D) running sums
        seen = torch.zeros(V, dtype=torch.float64)                              # (V,) occurrences
        special = torch.tensor(special_token_ids(tokenizer, model))
        pad_id = getattr(tokenizer.vocab, "pad_id", None) or model.config.pad_token_id
        was_training = model.training
        model.eval().to(device)
        try:
            with torch.inference_mode():
                for _, ids, mask, h in _hidden_states(model, cells, batch_size, device, layer, pad_id, progress):
                    keep = mask & ~torch.isin(ids, special)                    # (B, L)
                    total.index_add_(0, ids[keep], h[keep].double())           # (T, D) summed into (V, D)
                    seen.index_add_(0, ids[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
        finally:
            model.train(was_training)
        mean = (total / seen.clamp(min=1)[:, None]).float().numpy()            # (V, D)
        hit = known & (seen.numpy()[np.maximum(gene_ids, 0)] > 0)
        out[hit] = mean[gene_ids[hit]]
        counts[known] = seen.numpy()[gene_ids[known]].astype(np.int64)
    frame = pd.DataFrame(out, index=pd.Index(adata.var_names, name=adata.var_names.name))
    if key_added is not None:
        adata.varm[key_added] = out
        if kind == "contextual":
            adata.var[f"{key_added}_n_cells"] = counts
    return frame
