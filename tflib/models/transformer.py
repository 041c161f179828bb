"""The Transcriptformer encoder: a BERT-style transformer over gene tokens, written to be read.

Chapter 05 walks through the model in reading order, over three short files:

1. :mod:`tflib.models.blocks`: the :class:`TranscriptformerConfig`, the :class:`Embeddings`,
   one :class:`SelfAttention`, the :class:`MLP`, the :class:`Block` that combines them and the
   :class:`Encoder` (a stack of blocks);
2. :mod:`tflib.models.heads`: :class:`MLMHead` and :class:`ClassificationHead`;
3. this module: :class:`Transcriptformer`, which ties everything together.

Chapters 06, 07 and 11 use it. Every name above can still be imported from here.

The layout is BERT's (post-LayerNorm blocks, absolute positions, a tied MLM decoder) so the
weights convert one-to-one to and from ``transformers.BertForMaskedLM``, the format used by
Geneformer checkpoints (see :mod:`tflib.models.hf`).

Shapes in the comments: ``B`` batch, ``L`` sequence length, ``D`` hidden size (``n_embd``),
``V`` vocabulary size, ``T`` number of real (non-padding) tokens in a batch and ``M`` the
number of masked positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (ACTIVATIONS, MLP, Block, Embeddings, Encoder, Packing, SelfAttention,  # noqa: F401
                     TranscriptformerConfig)
from .checkpoint import read_checkpoint
from .checkpoint import save_pretrained as _save_pretrained
from .heads import ClassificationHead, MLMHead  # noqa: F401
from .hf import from_hf_bert as _from_hf_bert
from .hf import from_hf_dir as _from_hf_dir
from .hf import to_hf_bert as _to_hf_bert


@dataclass
class TranscriptformerOutput:
    """What :meth:`Transcriptformer.forward` returns (unused fields are ``None``).

    ``logits`` is ``(B, L, V)`` when computed at every position, or ``(M, V)`` for the masked
    positions only (then ``masked_positions`` is the ``(B, L)`` boolean mask that picked them,
    in row-major order). ``hidden_states`` holds the embedding output and each block's output
    (``n_layer + 1`` tensors of shape ``(B, L, D)``); ``attentions`` one ``(B, H, L, L)`` per block.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    masked_positions: torch.Tensor | None = None


class Transcriptformer(nn.Module):
    """Embeddings + encoder + MLM head: the masked-gene model of chapters 05--07.

    Checkpoints: :meth:`save_pretrained` / :meth:`from_pretrained` (safetensors + JSON, with
    the tokenizer); HF: :meth:`from_hf_bert` / :meth:`to_hf_bert` (see :mod:`tflib.models.hf`).
    After :meth:`from_pretrained`, the attribute ``tokenizer`` holds the saved tokenizer (or ``None``).
    """

    def __init__(self, config: TranscriptformerConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.mlm_head = MLMHead(config)
        self.mlm_head.decoder.weight = self.embeddings.word.weight     # tie input and output embeddings
        self.tokenizer = None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied decoder counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _check_inputs(self, input_ids, attention_mask):
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch tensor of token ids, got {type(input_ids).__name__}. "
                            "Fix: torch.as_tensor(ids, dtype=torch.long).")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}. "
                            "Fix: input_ids.long().")
        # the range check reads the ids, i.e. synchronises a GPU; there a bad id fails in the
        # embedding lookup anyway, so it runs on CPU tensors only
        if input_ids.device.type == "cpu" and input_ids.numel() and (
                int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.config.vocab_size - 1} (vocab_size), got "
                             f"{int(input_ids.min())}..{int(input_ids.max())}: these tokens come from another "
                             "tokenizer. Fix: encode the cells with the tokenizer saved with the model.")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_len={self.config.max_len}; "
                "truncate the tokens (tokenizer max length) or use a model with a longer position table."
            )
        if attention_mask is None:                                      # default: every non-<pad> token is real
            attention_mask = input_ids != self.config.pad_token_id      # (B, L)
        return attention_mask.bool()

    def encode(self, input_ids, attention_mask=None, *, layer: int = -1, unpad: bool = False,
               first_only: bool = False, dedupe: bool = False):
        """Hidden states ``(B, L, D)`` after block ``layer`` (``-1`` = last, ``0`` = embeddings).

        Blocks after ``layer`` are not run and no head is computed: the fast path of
        :func:`tflib.tl.embed` (chapter 07). ``unpad=True`` skips compute on padding.
        ``first_only=True`` returns ``(B, 1, D)``, the first token's state (``<cls>``), and
        computes the last block for that position only (no key or value projections at all, see
        :meth:`SelfAttention.attend_one_query`). ``dedupe=True`` computes the embeddings and the
        first block's query, key and value projections once per distinct (token, position) pair
        of the batch: the same numbers, and much less work when the rows are variants of a few
        cells, as in :func:`tflib.tl.perturb` (chapter 11).
        """
        mask = self._check_inputs(input_ids, attention_mask)           # (B, L)
        n = self.config.n_layer
        n_blocks = layer % (n + 1) if layer < 0 else layer
        if not 0 <= n_blocks <= n:
            raise ValueError(f"layer={layer} out of range for a {n}-layer model (use -{n + 1}..{n}).")
        packing = Packing(mask) if unpad else None
        rows = None
        if dedupe:                                                      # one row per (token, position) pair
            B, L = input_ids.shape
            pairs = input_ids * L + torch.arange(L, device=input_ids.device)  # (B, L) unique code of each pair
            pairs, rows = torch.unique(pairs, return_inverse=True)      # (U,), (B, L) index into them
            x = self.embeddings(pairs // L, positions=pairs % L)        # (U, D)
            rows = packing.unpad(rows) if packing is not None else rows  # (T,) or (B, L)
        else:
            x = self.embeddings(input_ids)                              # (B, L, D)
            x = packing.unpad(x) if packing is not None else x         # (T, D) or (B, L, D)
        last = None
        if first_only and n_blocks > 0:                                 # the last block runs for <cls> only
            n_blocks, last = n_blocks - 1, self.encoder.blocks[n_blocks - 1]
        x, _, _ = self.encoder(x, mask, packing, n_blocks=n_blocks, rows=rows)  # (B, L, D) or (T, D)
        x = packing.pad(x) if packing is not None else x               # (B, L, D)
        if last is not None:
            x, _ = last(x, mask, first_only=True)                       # (B, 1, D)
        return x[:, :1] if first_only else x                            # (B, 1, D) or (B, L, D)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        logits: str | None = "auto",
        unpad: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TranscriptformerOutput:
        """Run the model.

        Parameters
        ----------
        input_ids
            ``(B, L)`` token ids, padded on the right with ``<pad>``.
        attention_mask
            ``(B, L)``, 1/True for real tokens; derived from ``<pad>`` when omitted.
        labels
            ``(B, L)`` target ids at masked positions and ``-100`` elsewhere; gives ``loss``
            (mean cross-entropy over the masked positions).
        logits
            ``"all"``: ``(B, L, V)`` at every position (what HF BERT does);
            ``"masked"``: ``(M, V)`` only where ``labels != -100`` (the fast path, chapter 06);
            ``None``: no head at all; ``"auto"`` (default): ``"masked"`` with labels, else ``"all"``.
        unpad
            Run linear layers, LayerNorms and MLPs on real tokens only (skips padding compute).
        output_hidden_states, output_attentions
            Also return every layer's hidden states / attention weights (the latter through the
            step-by-step attention path).
        """
        mask = self._check_inputs(input_ids, attention_mask)           # (B, L) bool
        if logits == "auto":
            logits = "masked" if labels is not None else "all"
        if logits not in ("all", "masked", None):
            raise ValueError(f"logits={logits!r}; use 'all', 'masked', None or 'auto'.")
        if logits == "masked" and labels is None:
            raise ValueError("logits='masked' needs labels (-100 marks positions to skip).")

        x = self.embeddings(input_ids)                                  # (B, L, D)
        packing = Packing(mask) if unpad else None
        if packing is not None:
            x = packing.unpad(x)                                        # (T, D)
        x, hidden, attentions = self.encoder(
            x, mask, packing, keep_hidden=output_hidden_states, need_weights=output_attentions
        )
        if packing is not None:
            x = packing.pad(x)                                          # (B, L, D)
            if hidden is not None:
                hidden = [packing.pad(h) for h in hidden]               # each (B, L, D)
        out = TranscriptformerOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if hidden is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
        if logits == "all":
            out.logits = self.mlm_head(x)                               # (B, L, V)
            if labels is not None:
                out.loss = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        elif logits == "masked":
            picked = labels != -100                                     # (B, L) bool
            out.masked_positions = picked
            out.logits = self.mlm_head(x[picked])                       # (M, D) -> (M, V)
            out.loss = F.cross_entropy(out.logits, labels[picked])      # mean over the M masked tokens
        elif labels is not None:
            raise ValueError("labels were given but logits=None; pass logits='masked' or 'all' to get a loss.")
        return out

    # ---- checkpoints and HF conversion (implemented in sibling modules) -------------------
    def save_pretrained(self, directory, tokenizer=None, overwrite: bool = False):
        """Write ``config.json`` + ``model.safetensors`` (+ the tokenizer's files) to ``directory``.

        ``tokenizer=None`` saves ``self.tokenizer`` when the model has one (a model loaded with
        ``from_pretrained`` keeps the tokenizer it was saved with), so a save/load round trip
        keeps it. See :func:`tflib.models.checkpoint.save_pretrained`.
        """
        if tokenizer is None:
            tokenizer = getattr(self, "tokenizer", None)
        return _save_pretrained(self, directory, tokenizer=tokenizer, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, directory, device=None) -> "Transcriptformer":
        """Load a tflib checkpoint or an HF ``BertForMaskedLM`` folder; returns the model.

        The tokenizer saved beside the weights, if any, is in ``model.tokenizer``
        (``None`` otherwise); :func:`tflib.models.load_pretrained` returns both as a tuple.
        """
        model, _ = read_checkpoint(directory, cls, device=device)
        return model

    @classmethod
    def from_hf_bert(cls, hf_model) -> "Transcriptformer":
        """Copy the weights of a ``transformers.BertForMaskedLM`` into a new Transcriptformer."""
        return _from_hf_bert(hf_model, cls)

    def to_hf_bert(self, attn_implementation: str | None = None):
        """Return an equivalent ``transformers.BertForMaskedLM`` (weights copied)."""
        return _to_hf_bert(self, attn_implementation=attn_implementation)


def load_pretrained(directory, device=None, load_tokenizer: bool = True):
    """Load a checkpoint folder; returns ``(model, tokenizer)`` (``tokenizer`` is ``None`` if absent).

    Accepts tflib checkpoints and HF ``BertForMaskedLM`` folders (detected from
    ``config.json``). The model is in eval mode, on ``device`` (default: CPU). Chapters 05--07.
    """
    return read_checkpoint(directory, Transcriptformer, device=device, load_tokenizer=load_tokenizer)


def from_hf_dir(directory) -> Transcriptformer:
    """Load a folder written by ``BertForMaskedLM.save_pretrained`` as a :class:`Transcriptformer`.

    Only local files are read (no hub access); see :func:`tflib.models.hf.from_hf_dir`.
    """
    return _from_hf_dir(directory, Transcriptformer)
