"""The Transcriptformer's configuration and building blocks, in reading order (chapter 05).

First the :class:`TranscriptformerConfig` (every hyper-parameter), then the pieces one encoder
is made of: :class:`Packing` (drop padding), :class:`Embeddings`, one :class:`SelfAttention`,
the :class:`MLP`, the :class:`Block` that combines them and the :class:`Encoder` (a stack of
blocks). The heads live in :mod:`tflib.models.heads`, the whole model in
:mod:`tflib.models.transformer`.

The layout is BERT's (post-LayerNorm blocks, absolute positions) so the weights convert
one-to-one to and from ``transformers.BertForMaskedLM`` (see :mod:`tflib.models.hf`).

Shapes in the comments: ``B`` batch, ``L`` sequence length, ``D`` hidden size (``n_embd``),
``H`` heads, ``Dh = D / H`` the per-head size, ``F`` feed-forward size (``n_inner``) and
``T`` the number of real (non-padding) tokens in a batch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

#: Activations understood by the config; names follow ``transformers`` (``gelu`` is exact erf-GELU).
ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": lambda: nn.GELU(approximate="none"),
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "silu": nn.SiLU,
}


@dataclass
class TranscriptformerConfig:
    """Every hyper-parameter of the encoder (defaults: Geneformer V1-10M, chapter 05).

    Parameters
    ----------
    vocab_size
        Number of tokens (genes plus special tokens); must equal ``len(tokenizer.vocab)``.
    max_len
        Longest sequence the position table supports (V1: 2,048; V2: 4,096).
    n_layer, n_head, n_embd, n_inner
        Depth, attention heads, hidden size and feed-forward size.
    activation
        ``"relu"`` (Geneformer V1) or ``"gelu"`` (BERT, Geneformer V2), see :data:`ACTIVATIONS`.
    dropout, attn_dropout
        Dropout on hidden states and on attention weights (training only).
    layer_norm_eps, initializer_range
        BERT's LayerNorm epsilon and the standard deviation of the initial weights.
    pad_token_id
        The ``<pad>`` id; used to build an attention mask when none is passed.
    type_vocab_size
        Rows of BERT's token-type table (all tokens use type 0; kept for HF parity).
    fused_attention
        Use ``F.scaled_dot_product_attention`` (fast) instead of the step-by-step path.
        Both give the same numbers; attention weights always come from the readable path.
    """

    vocab_size: int = 25_426
    max_len: int = 2048
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256
    n_inner: int = 512
    activation: str = "relu"
    dropout: float = 0.02
    attn_dropout: float = 0.02
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    type_vocab_size: int = 2
    fused_attention: bool = True

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "choose a hidden size that is a multiple of the number of heads."
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} unknown; use one of {sorted(ACTIVATIONS)}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TranscriptformerConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known keys: {sorted(known)}.")
        return cls(**d)


class Packing:
    """Index bookkeeping to drop padding: ``(B, L, ...)`` <-> ``(T, ...)`` (real tokens only).

    With ``unpad=True`` the linear layers, LayerNorms and MLPs run on the ``T`` real tokens only;
    only the attention product itself is done on the padded ``(B, H, L, L)`` grid.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.shape = attention_mask.shape                               # (B, L)
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)    # (T,) flat positions of real tokens

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[2:])[self.index]                 # (B, L, ...) -> (T, ...)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        B, L = self.shape
        out = x.new_zeros(B * L, *x.shape[1:])                          # (B*L, ...)
        out[self.index] = x                                             # scatter the real tokens back
        return out.reshape(B, L, *x.shape[1:])                          # (B, L, ...)


class Embeddings(nn.Module):
    """Token + position (+ token-type 0) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.n_embd, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_len, config.n_embd)
        self.token_type = nn.Embedding(config.type_vocab_size, config.n_embd)
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        # input_ids: (B, L), each at position 0..L-1; or, with ``positions``, any (..., ) pairs
        if positions is None:
            positions = torch.arange(input_ids.shape[-1], device=input_ids.device)  # (L,)
        x = self.word(input_ids)                                        # (B, L, D)
        x = x + self.position(positions)                                # (B, L, D) + (L, D)
        x = x + self.token_type.weight[0]                               # (B, L, D) + (D,): every token is type 0
        return self.drop(self.ln(x))                                    # (B, L, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention with BERT's output projection, residual and LayerNorm.

    Two paths compute the same thing: :meth:`attend_step_by_step` (scores, mask, softmax,
    weighted sum; it can return the weights) and the fused ``F.scaled_dot_product_attention``.
    """

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.fused = config.fused_attention
        self.query = nn.Linear(config.n_embd, config.n_embd)
        self.key = nn.Linear(config.n_embd, config.n_embd)
        self.value = nn.Linear(config.n_embd, config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop_p = config.attn_dropout
        self.attn_drop = nn.Dropout(config.attn_dropout)
        self.drop = nn.Dropout(config.dropout)
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.n_head, self.head_dim).transpose(1, 2)  # (B, L, D) -> (B, H, L, Dh)

    def attend_step_by_step(self, q, k, v, key_mask):
        """The textbook path: ``softmax(q k^T / sqrt(Dh) + mask) v``; returns output and weights."""
        scores = q @ k.transpose(-2, -1)                                # (B, H, L, Dh) @ (B, H, Dh, L) -> (B, H, L, L)
        scores = scores / math.sqrt(self.head_dim)                      # (B, H, L, L)
        if key_mask is not None:                                        # padding keys get the lowest float
            blocked = ~key_mask[:, None, None, :]                       # (B, 1, 1, L)
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)  # (B, H, L, L)
        weights = scores.softmax(dim=-1)                                # (B, H, L, L), rows sum to 1
        out = self.attn_drop(weights) @ v                               # (B, H, L, L) @ (B, H, L, Dh) -> (B, H, L, Dh)
        return out, weights

    def attend_fused(self, q, k, v, key_mask):
        """The same computation in one fused kernel (no weights returned)."""
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L) bool, True = attend
        p = self.attn_drop_p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, Dh)

    def attend_one_query(self, x, key_mask):
        """Attention for the first position only, without projecting any key or value.

        A score is ``q . (W_k x_j + b_k)``: fold ``W_k`` into the query once and take dot products
        with the hidden states themselves (``q . b_k`` is the same for every key, and softmax
        ignores it). The values mix the same way: ``sum_j w_j (W_v x_j + b_v) = W_v (sum_j w_j
        x_j) + b_v``, because the weights sum to 1. Same numbers, ``L`` times less projection work.
        """
        B, L, D = x.shape
        q = self.split_heads(self.query(x[:, :1]))                      # (B, 1, D) -> (B, H, 1, Dh)
        w_k = self.key.weight.view(self.n_head, self.head_dim, D)       # (D, D) -> (H, Dh, D) one slab per head
        q_x = torch.einsum("bhqd,hde->bhqe", q, w_k)                    # (B, H, 1, Dh) x (H, Dh, D) -> (B, H, 1, D)
        scores = torch.bmm(q_x[:, :, 0], x.transpose(1, 2))            # (B, H, D) @ (B, D, L) -> (B, H, L)
        scores = scores / math.sqrt(self.head_dim)                      # (B, H, L)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, :], torch.finfo(scores.dtype).min)  # (B, H, L)
        weights = scores.softmax(dim=-1)                                # (B, H, L)
        mixed = torch.bmm(weights, x)                                   # (B, H, L) @ (B, L, D) -> (B, H, D)
        w_v = self.value.weight.view(self.n_head, self.head_dim, D)     # (H, Dh, D)
        ctx = torch.einsum("bhe,hde->bhd", mixed, w_v)                  # (B, H, D) x (H, Dh, D) -> (B, H, Dh)
        ctx = ctx + self.value.bias.view(self.n_head, self.head_dim)    # (B, H, Dh)
        return ctx[:, :, None], weights[:, :, None]                     # (B, H, 1, Dh), (B, H, 1, L)

    def forward(self, x, key_mask=None, packing: Packing | None = None, need_weights: bool = False,
                first_only: bool = False, rows: torch.Tensor | None = None):
        # x: (B, L, D), or (T, D) when ``packing`` drops the padding
        # first_only: only the first position asks (queries), e.g. <cls> in the last block
        # rows: x holds only the batch's distinct rows (U, D), and rows (B, L) or (T,) picks them
        if first_only and packing is not None:
            raise ValueError("first_only needs the padded (B, L, D) layout; pad before the last block.")
        if rows is not None:                                            # project each distinct row once
            flat = rows.reshape(-1)                                     # (B*L,) or (T,)
            if not first_only:
                qkv = torch.cat([self.query(x), self.key(x), self.value(x)], dim=-1)  # (U, 3D)
                qkv = qkv.index_select(0, flat).view(*rows.shape, -1)   # (B, L, 3D) or (T, 3D)
            x = x.index_select(0, flat).view(*rows.shape, -1)           # (U, D) -> (B, L, D) or (T, D)
        if first_only and not (self.training and self.attn_drop_p > 0):  # (dropped weights do not sum to 1)
            ctx, weights = self.attend_one_query(x, key_mask)           # (B, H, 1, Dh), (B, H, 1, L)
            ctx = ctx.transpose(1, 2).reshape(x.shape[0], 1, -1)        # (B, H, 1, Dh) -> (B, 1, D)
            return self.ln(x[:, :1] + self.drop(self.proj(ctx))), weights  # residual, then post-LN: (B, 1, D)
        x_q = x[:, :1] if first_only else x                             # (B, 1, D) or x
        if rows is not None:
            q, k, v = qkv.chunk(3, dim=-1)                              # 3 x (B, L, D) or (T, D)
        else:
            q, k, v = self.query(x_q), self.key(x), self.value(x)      # 3 x (B, L, D) or (T, D)
        if packing is not None:
            q, k, v = packing.pad(q), packing.pad(k), packing.pad(v)    # 3 x (B, L, D)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # 3 x (B, H, L, Dh)
        if need_weights or not self.fused:
            ctx, weights = self.attend_step_by_step(q, k, v, key_mask)  # (B, H, L, Dh), (B, H, L, L)
        else:
            ctx, weights = self.attend_fused(q, k, v, key_mask), None   # (B, H, L, Dh)
        B, H, L, Dh = ctx.shape
        ctx = ctx.transpose(1, 2).reshape(B, L, H * Dh)                 # (B, H, L, Dh) -> (B, L, D)
        if packing is not None:
            ctx = packing.unpad(ctx)                                    # (T, D)
        out = self.ln(x_q + self.drop(self.proj(ctx)))                  # residual, then post-LN: same shape as x_q
        return out, weights


class MLP(nn.Module):
    """Position-wise feed-forward network with BERT's residual and post-LayerNorm."""

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.n_inner)
        self.act = ACTIVATIONS[config.activation]()
        self.proj = nn.Linear(config.n_inner, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc(x))                                        # (..., D) -> (..., F)
        return self.ln(x + self.drop(self.proj(h)))                     # (..., F) -> (..., D), residual, post-LN


class Block(nn.Module):
    """One encoder layer: attention, then the MLP (each with residual + LayerNorm, as in BERT)."""

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x, key_mask=None, packing=None, need_weights=False, first_only=False, rows=None):
        x, weights = self.attn(x, key_mask, packing, need_weights, first_only, rows)  # (B, L, D), (T, D) or (B, 1, D)
        return self.mlp(x), weights                                     # same shape


class Encoder(nn.Module):
    """A stack of ``n_layer`` blocks; returns the last output, and optionally every layer's."""

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))

    def forward(self, x, key_mask=None, packing=None, n_blocks=None, keep_hidden=False, need_weights=False,
                rows=None):
        # rows: x holds distinct rows only (see SelfAttention); the first block expands them
        if rows is not None and (keep_hidden or not self.blocks[:n_blocks]):
            x, rows = x[rows], None                                     # (U, D) -> (B, L, D) or (T, D)
        hidden, attentions = [x] if keep_hidden else None, [] if need_weights else None
        for block in self.blocks[:n_blocks]:
            x, w = block(x, key_mask, packing, need_weights, rows=rows)  # (B, L, D) or (T, D)
            rows = None
            if keep_hidden:
                hidden.append(x)
            if need_weights:
                attentions.append(w)                                    # (B, H, L, L)
        return x, hidden, attentions
