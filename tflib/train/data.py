"""Batches for masked-gene pretraining: padding, length-grouped batching and the masking collator.

Chapter 06 explains the objective; this file is what the trainer actually runs.

- :func:`length_grouped_batches` puts cells of similar length together so little compute is
  spent on padding (Geneformer does the same); :func:`padding_fraction` measures what is left.
- :class:`MaskingCollator` pads a list of token arrays and applies BERT's masking: 15 % of the
  gene tokens are chosen; of those 80 % become ``<mask>``, 10 % a random gene and 10 % stay.
  Special tokens (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``) are never chosen.

All randomness comes from explicit seeds or ``torch.Generator`` objects, so a batch is a pure
function of ``(seed, step)``; that is what makes resuming exact (see :mod:`tflib.train.pretrain`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: ``<pad>``, ``<mask>``, ``<cls>``, ``<eos>`` in the tflib vocabulary layout.
SPECIAL_IDS = (0, 1, 2, 3)


def sequence_lengths(dataset) -> np.ndarray:
    """Token counts of every cell: ``dataset.lengths`` when available, else measured."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, dtype=np.int64)
    return np.array([len(dataset[i]) for i in range(len(dataset))], dtype=np.int64)


def length_grouped_batches(lengths, batch_size: int, seed: int = 0, epoch: int = 0,
                           megabatch_mult: int = 50, drop_last: bool = False) -> list[np.ndarray]:
    """One epoch of batches (arrays of cell indices) in which cells have similar lengths.

    The cells are shuffled with ``(seed, epoch)``, cut into "megabatches" of
    ``batch_size * megabatch_mult`` cells, each megabatch is sorted by length (longest first)
    and cut into batches; finally the batch order is shuffled. ``megabatch_mult=1`` gives plain
    random batches; a huge value sorts the whole corpus.
    """
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * max(1, megabatch_mult)
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(lengths, batches) -> float:
    """Fraction of the padded token grid that is padding, over ``batches``."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    grid = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / grid if grid else 0.0


def pad_batch(seqs: Sequence, pad_token_id: int = 0, max_len: int | None = None):
    """Right-pad token arrays to the longest one: returns ``input_ids`` (B, L) long and ``attention_mask`` (B, L) bool."""
    seqs = [np.asarray(s)[:max_len] if max_len else np.asarray(s) for s in seqs]
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_token_id, dtype=torch.long)    # (B, L)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
    lengths = torch.tensor([len(s) for s in seqs])                      # (B,)
    mask = torch.arange(L)[None, :] < lengths[:, None]                  # (B, L)
    return ids, mask


class MaskingCollator:
    """Pad a list of cells and mask them for masked-gene modelling.

    Parameters
    ----------
    vocab_size
        Size of the vocabulary (random replacements are drawn among its non-special ids).
    mask_prob
        Chance that a gene token is chosen for prediction (15 % as in BERT and Geneformer).
    mask_token_id, pad_token_id, special_ids
        Token ids; ``special_ids`` are never chosen nor used as random replacements.
    max_len
        Truncate longer cells to this many tokens.
    """

    def __init__(self, vocab_size: int, mask_prob: float = 0.15, mask_token_id: int = 1,
                 pad_token_id: int = 0, special_ids: Sequence[int] = SPECIAL_IDS, max_len: int | None = None,
                 replace_with_mask: float = 0.8, replace_with_random: float = 0.1):
        if not 0 < mask_prob < 1:
            raise ValueError(f"mask_prob={mask_prob} must be in (0, 1).")
        self.vocab_size, self.mask_prob = vocab_size, mask_prob
        self.mask_token_id, self.pad_token_id, self.max_len = mask_token_id, pad_token_id, max_len
        self.special = torch.tensor(sorted(set(special_ids) | {mask_token_id, pad_token_id}))
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        allowed[self.special[self.special < vocab_size]] = False
        self.gene_ids = allowed.nonzero().squeeze(1)                     # ids a random replacement may take
        self.p_mask, self.p_random = replace_with_mask, replace_with_random

    def __call__(self, seqs: Sequence, generator: torch.Generator | None = None) -> dict:
        """Returns ``{"input_ids", "attention_mask", "labels"}``; ``labels`` is -100 where nothing is predicted."""
        ids, mask = pad_batch(seqs, self.pad_token_id, self.max_len)    # (B, L), (B, L)
        maskable = mask & ~torch.isin(ids, self.special)                # (B, L) gene tokens only
        u = torch.rand(ids.shape, generator=generator)                  # (B, L) one draw decides the role
        chosen = maskable & (u < self.mask_prob)                        # (B, L) positions to predict
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))   # (B, L)
        r = u / self.mask_prob                                          # (B, L) uniform in [0, 1) where chosen
        to_mask = chosen & (r < self.p_mask)                            # 80 %: <mask>
        to_random = chosen & (r >= self.p_mask) & (r < self.p_mask + self.p_random)  # 10 %: a random gene
        pick = torch.randint(len(self.gene_ids), ids.shape, generator=generator)     # (B, L)
        inputs = ids.clone()
        inputs[to_mask] = self.mask_token_id
        inputs[to_random] = self.gene_ids[pick[to_random]]
        return {"input_ids": inputs, "attention_mask": mask, "labels": labels}  # the remaining 10 % stay as they are


class Subset:
    """Some cells of a token collection, indexable like a token store (``len``, ``[i]``, ``.lengths``)."""

    def __init__(self, cells, index):
        self.cells, self.index = cells, np.asarray(index, dtype=np.int64)
        self.lengths = sequence_lengths(cells)[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i) -> np.ndarray:
        return self.cells[int(self.index[i])]


class SyntheticCorpus:
    """A toy corpus of rank-value "cells" with learnable structure (tests, benchmarks, chapter 06 demos).

    Genes have a shared ranking (like housekeeping genes that are high everywhere); each of
    ``n_types`` cell types perturbs it (``type_spread`` ranks). A cell is ``<cls>`` followed by
    its type's top genes, lightly shuffled, and ``<eos>``; lengths vary uniformly in
    ``[min_len, max_len]``. A masked gene is predictable from its position and from the
    other genes (which reveal the type), so the loss of a working model falls. Behaves like a :class:`tflib.tokenize.TokenStore`
    (``len``, ``[i]`` -> int32 array, ``.lengths``).
    """

    def __init__(self, n_cells: int = 256, vocab_size: int = 200, min_len: int = 16, max_len: int = 64,
                 n_types: int = 4, type_spread: float = 8.0, seed: int = 0, n_special: int = 4):
        if max_len - 2 > vocab_size - n_special:
            raise ValueError(f"max_len={max_len} needs at least {max_len - 2 + n_special} tokens; raise vocab_size.")
        rng = np.random.default_rng(seed)
        shared = rng.permutation(np.arange(n_special, vocab_size))     # the shared ranking
        rankings = [shared[np.argsort(np.arange(len(shared)) + rng.normal(0, type_spread, len(shared)))]
                    for _ in range(n_types)]
        self.types = rng.integers(n_types, size=n_cells)
        self.lengths = rng.integers(min_len, max_len + 1, size=n_cells)
        self.cells = []
        for t, n in zip(self.types, self.lengths):
            top = rankings[t][: n - 2].copy()
            noise = np.argsort(np.arange(n - 2) + rng.normal(0, 1.5, n - 2))  # local swaps only
            self.cells.append(np.concatenate([[2], top[noise], [3]]).astype(np.int32))
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i) -> np.ndarray:
        return self.cells[i]
