"""A tiny tokenizer + model + AnnData for the tests of the verbs that run a model (chapters 05, 11).

Forty genes ``G0..G39``, of which the last four are outside the vocabulary; Poisson counts;
``obs["state"]`` splits the cells in two halves (``"A"``, ``"B"``); a randomly initialised
two-layer Transcriptformer in eval mode, seeded.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tokenize import GeneVocab, RankValueTokenizer

GENES = [f"G{i}" for i in range(40)]


def tiny_world(n_cells: int, rate: float, *, max_len: int, n_head: int, n_embd: int,
               n_inner: int, seed: int = 1):
    """``(adata, model, tokenizer)``; G36..G39 are outside the vocabulary."""
    vocab = GeneVocab.from_genes(GENES[:36])
    medians = {g: 1.0 + i % 4 for i, g in enumerate(GENES[:36])}
    tok = RankValueTokenizer(vocab, medians, preset="V2")
    X = np.random.default_rng(seed).poisson(rate, (n_cells, 40)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.var_names = GENES
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.obs["state"] = np.where(np.arange(n_cells) < n_cells // 2, "A", "B")
    torch.manual_seed(0)
    config = TranscriptformerConfig(vocab_size=len(vocab), max_len=max_len, n_layer=2,
                                    n_head=n_head, n_embd=n_embd, n_inner=n_inner)
    return adata, Transcriptformer(config).eval(), tok
