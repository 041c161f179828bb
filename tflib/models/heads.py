"""The two heads that sit on top of the encoder (chapters 05 and 07).

:class:`MLMHead` predicts the masked gene at every position (pretraining, chapter 06);
:class:`ClassificationHead` maps a pooled cell embedding to classes (fine-tuning, chapter 07).
Shapes: ``D`` hidden size, ``V`` vocabulary size, ``B`` batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ACTIVATIONS, TranscriptformerConfig


class MLMHead(nn.Module):
    """BERT's prediction head: dense + activation + LayerNorm, then a decoder tied to the embeddings."""

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.act = ACTIVATIONS[config.activation]()
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size)     # weight tied by Transcriptformer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.act(self.dense(h)))                            # (..., D)
        return self.decoder(h)                                          # (..., D) -> (..., V)


class ClassificationHead(nn.Module):
    """A cell-level classifier on a pooled embedding: dropout + dense + tanh + dropout + linear.

    Used for fine-tuning (chapter 07); feed it ``(B, D)`` pooled states (CLS or mean).
    """

    def __init__(self, config: TranscriptformerConfig, n_classes: int, dropout: float | None = None):
        super().__init__()
        p = config.dropout if dropout is None else dropout
        self.drop = nn.Dropout(p)
        self.dense = nn.Linear(config.n_embd, config.n_embd)
        self.out = nn.Linear(config.n_embd, n_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.dense(self.drop(pooled)))                   # (B, D)
        return self.out(self.drop(h))                                   # (B, D) -> (B, n_classes)
