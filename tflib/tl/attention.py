"""How much attention each gene's token receives, cell by cell (chapter 13).

For one cell, the model's attention weights are ``(n_layer, H, L, L)``: query position ``q``
spreads one unit of attention over the key positions ``k``. The attention a *gene* receives
in that cell is the weight on the gene's key position averaged over every layer, every head
and every real query token (``<cls>`` and ``<eos>`` included as queries; padding excluded).
Because each query's row sums to 1, the value is about ``1 / L`` for a gene that gets an
ordinary share, and larger for a gene that many tokens look at. A gene that is not in the
cell's context (unexpressed, outside the vocabulary, or cut by the model's context length)
receives 0; a gene outside the vocabulary gets NaN (the model cannot see it in any cell).

This is a descriptive statistic of the model, not an explanation of it: attention weights
say where information is read from, not what it changes (chapter 13 discusses why).
"""
from __future__ import annotations

import numpy as np
import torch

from tflib.utils import get_device

from .embedding import _batches, _tokens_for

__all__ = ["attention_received"]


def attention_received(adata, model, tokenizer, *, genes=None, gene_key: str | None = None,
                       layer: str | None = None, batch_size: int = 32, device=None,
                       check_coverage: bool = True) -> np.ndarray:
    """Mean attention each gene's token receives in each cell (chapter 13).

    Parameters
    ----------
    adata
        The cells (counts as the tokenizer expects them). Not modified.
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and the tokenizer it was trained with.
    genes
        Gene names of ``adata.var_names`` (default: all of them), in the order of the columns
        of the result.
    gene_key
        ``var`` column with the vocabulary symbols (e.g. ``"tf_symbol"`` after
        :func:`tflib.tl.vocab_labels`); passed to ``tokenizer.encode``.
    layer
        ``adata.layers`` key with the counts (default ``adata.X``); passed to ``tokenizer.encode``.
    batch_size, device
        Cells per forward pass; the device comes from :func:`tflib.utils.get_device` when ``None``.
    check_coverage
        Passed to ``tokenizer.encode`` (chapter 04's vocabulary-coverage check).

    Returns
    -------
    numpy.ndarray
        ``(n_obs, n_genes)`` float64: the attention received, averaged over layers, heads and
        real query positions; 0 where the gene is not in the cell's context; NaN in every row
        for a gene outside the vocabulary. Cells without any tokenizable gene are rows of 0.
    """
    names = list(map(str, adata.var_names)) if genes is None else [str(g) for g in genes]
    col = adata.var_names.get_indexer(names)
    if (col < 0).any():
        missing = [g for g, c in zip(names, col) if c < 0]
        raise KeyError(f"{len(missing)} genes are not in adata.var_names (e.g. {missing[:5]}); pass names "
                       "from adata.var_names.")
    symbols = np.asarray(adata.var_names if gene_key is None else adata.var[gene_key], dtype=object)
    token = np.asarray(tokenizer.vocab.map_genes([str(symbols[c]) for c in col]).ids)  # (G,), -1 = none
    uniq, inverse = np.unique(token, return_inverse=True)                                  # shared tokens share a column
    lookup = torch.full((model.config.vocab_size,), -1, dtype=torch.long)                # token id -> column of uniq
    lookup[torch.from_numpy(uniq[uniq >= 0])] = torch.arange(int((uniq >= 0).sum())) + int((uniq < 0).sum())

    encode_kwargs = {k: v for k, v in (("gene_key", gene_key), ("layer", layer)) if v is not None}
    cells, rows = _tokens_for(adata, model, tokenizer, None, encode_kwargs, check_coverage)
    pad_id = getattr(tokenizer.vocab, "pad_id", None)
    pad_id = model.config.pad_token_id if pad_id is None else pad_id
    device = get_device(device) if not isinstance(device, torch.device) else device
    out = np.zeros((adata.n_obs, len(uniq)), dtype=np.float64)                            # (N, U)
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.inference_mode():
            for pos, ids, mask in _batches(cells, batch_size, model.config.max_len, pad_id):
                res = model(ids.to(device), mask.to(device), logits=None, output_attentions=True)
                att = torch.stack(res.attentions).float().cpu().mean(dim=(0, 2))          # (B, L, L) over layers, heads
                q = mask.float()                                                          # (B, L) real queries
                got = (att * q[:, :, None]).sum(1) / q.sum(1, keepdim=True).clamp(min=1)  # (B, L) received per key
                where = lookup[ids]                                                       # (B, L) column or -1
                hit = mask & (where >= 0)                                                 # (B, L)
                r = torch.arange(len(pos))[:, None].expand_as(ids)[hit]                   # (T,)
                block = np.zeros((len(pos), len(uniq)))                                   # (B, U)
                block[r.numpy(), where[hit].numpy()] = got[hit].double().numpy()
                out[rows[pos]] = block
    finally:
        model.train(was_training)
    result = out[:, inverse]                                                              # (N, G)
    result[:, token < 0] = np.nan
    return result
