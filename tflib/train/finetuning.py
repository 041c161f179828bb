"""Fine-tuning a pretrained Transcriptformer on a cell-level task (chapters 07 and 10).

One engine serves two tasks:

* **annotation** (chapter 07): ``targets`` are labels (one per cell), the loss is class-weighted
  cross-entropy;
* **fate prediction** (chapter 10): ``targets`` are rows of probabilities (cells × fates, e.g.
  CellRank's fate probabilities), the loss is cross-entropy against those soft targets.

Three modes decide how much of the pretrained encoder moves:

``"frozen"``
    Only the new head learns (a "linear probe" with one hidden layer). The pooled embeddings
    are computed once and cached, so an epoch costs almost nothing.
``"top"``
    The top ``n_unfrozen`` blocks and the head learn. The hidden states entering the first
    trainable block are cached (when they fit in ``cache_limit_mb``), so the frozen blocks run
    once, not once per epoch.
``"full"``
    Every weight learns; the encoder with a smaller learning rate (``encoder_lr``) than the head.

Early stopping watches the validation loss; the weights of the best epoch are restored. With
``calibrate=True`` a single temperature is fitted on the validation cells (temperature
scaling, Guo et al. 2017), so that ``predict_proba`` returns calibrated probabilities without
changing any prediction. The pretrained model passed in is copied, never modified.

This module holds the settings, the network (:class:`CellModel`) and the loop; what the loop
returns (:class:`~tflib.train.finetuned.FinetunedModel`) and how it batches cells live in
:mod:`tflib.train.finetuned`, the checks of the targets and the calibration in
:mod:`tflib.train.targets`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from tflib.models.heads import ClassificationHead
from tflib.tokenize import special_token_ids
from tflib.utils import get_device

from .finetuned import FinetunedModel, _Features
from .targets import _class_weights, _fit_temperature, _targets, _val_split

__all__ = ["FinetuneConfig", "CellModel", "FinetunedModel", "finetune", "MODES"]

MODES = ("frozen", "top", "full")


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune` (chapters 07 and 10).

    Parameters
    ----------
    mode
        ``"frozen"``, ``"top"`` or ``"full"`` (see the module docstring).
    n_unfrozen
        Blocks that learn in ``"top"`` mode (counted from the top).
    pooling
        ``"cls"`` (the ``<cls>`` state; V2 tokens) or ``"mean"`` (mean over real tokens).
    epochs, batch_size
        Passes over the training cells and cells per step.
    lr, encoder_lr
        AdamW learning rates of the head and of the unfrozen encoder weights.
    weight_decay, head_dropout
        AdamW weight decay; dropout inside the classification head.
    class_weight
        ``"balanced"`` weights each class by ``n / (K * n_k)`` so rare types count as much as
        common ones (labels only); ``None`` weights every cell equally.
    patience
        Stop after this many epochs without a lower validation loss.
    val_fraction
        Share of the training cells held out for early stopping and calibration when no
        validation cells are given (stratified by label, seeded).
    max_len
        Truncate token sequences to this length (default: the model's ``max_len``).
    calibrate
        Fit a temperature on the validation cells.
    cache_limit_mb
        Largest cache of frozen hidden states kept in memory (``"top"`` mode).
    seed, device
        Seed of the head's initial weights, the validation split and the batch order; device
        (``None``: :func:`tflib.utils.get_device`).
    """

    mode: str = "top"
    n_unfrozen: int = 1
    pooling: str = "cls"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float = 2e-4
    weight_decay: float = 0.01
    head_dropout: float = 0.1
    class_weight: str | None = "balanced"
    patience: int = 3
    val_fraction: float = 0.15
    max_len: int | None = None
    calibrate: bool = True
    cache_limit_mb: float = 512.0
    seed: int = 0
    device: str | None = None
    progress: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r}; use one of {MODES}.")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={self.pooling!r}; use 'cls' or 'mean'.")
        if self.class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight={self.class_weight!r}; use 'balanced' or None.")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be at least 1.")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be between 0 and 1.")


class CellModel(nn.Module):
    """A pretrained encoder split at block ``k``, plus a pooling step and a classification head.

    ``lower`` runs the embeddings and blocks ``0..k-1`` (frozen); ``upper`` runs blocks
    ``k..n-1`` (trainable) and pools; ``head`` maps the pooled ``(B, D)`` vector to ``K`` logits.
    """

    def __init__(self, encoder, n_classes: int, first_trainable: int, pooling: str, head_dropout: float,
                 special_ids):
        super().__init__()
        self.encoder = encoder                                          # a Transcriptformer (its MLM head is unused)
        self.k = int(first_trainable)
        self.pooling = pooling
        self.head = ClassificationHead(encoder.config, n_classes, dropout=head_dropout)
        self.register_buffer("special_ids", torch.as_tensor(list(special_ids), dtype=torch.long))
        self.register_buffer("temperature", torch.ones(()))

    def lower(self, ids: torch.Tensor, mask: torch.Tensor, *, dedupe: bool = False) -> torch.Tensor:
        # dedupe: see Transcriptformer.encode (chapter 11 passes it for batches of perturbed cells)
        return self.encoder.encode(ids, mask, layer=self.k, dedupe=dedupe)  # (B, L, D)

    def upper(self, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.encoder.encoder.blocks[self.k:]:
            x, _ = block(x, mask)                                       # (B, L, D)
        if self.pooling == "cls":
            return x[:, 0]                                              # (B, D): the <cls> state
        keep = (mask & ~torch.isin(ids, self.special_ids)).float()      # (B, L): gene tokens only
        return (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)  # (B, D)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.upper(self.lower(ids, mask), ids, mask)           # (B, D)
        return self.head(pooled)                                        # (B, K)


def finetune(model, cells, targets, *, config: FinetuneConfig | None = None, val_cells=None, val_targets=None,
             classes=None, tokenizer=None, **overrides) -> FinetunedModel:
    """Fine-tune a copy of ``model`` to predict ``targets`` from token sequences (chapters 07, 10).

    Parameters
    ----------
    model
        A pretrained :class:`~tflib.models.Transcriptformer` (left untouched: a copy is trained).
    cells
        Token sequences of the training cells (``tokenizer.encode(adata)`` output or a list of
        int arrays), in the same order as ``targets``.
    targets
        1-D labels (classification) or a 2-D ``(cells, K)`` array of probabilities whose rows sum
        to 1 (soft targets such as fate probabilities).
    config
        A :class:`FinetuneConfig`; keyword ``overrides`` replace single fields
        (``finetune(..., mode="full", epochs=3)``).
    val_cells, val_targets
        Validation cells for early stopping and calibration. Default: a stratified
        ``config.val_fraction`` of ``cells`` (so pass the *training* part of an explicit split
        only; the test cells never enter this function).
    classes
        Class names: the order of the output columns (labels) or the names of the K target
        columns (soft). Default: sorted labels / ``"0".."K-1"``.
    tokenizer
        Used only to know the special tokens excluded by mean pooling (default:
        ``model.tokenizer``).

    Returns
    -------
    FinetunedModel
        With ``predict_proba``, ``predict``, ``embed``, ``history`` and ``best_epoch``.
    """
    cfg = replace(config or FinetuneConfig(), **overrides)
    y, names, soft = _targets(targets, classes)
    if len(y) != len(cells):
        raise ValueError(f"{len(cells)} cells but {len(y)} targets; they must line up one to one.")
    if val_cells is None:
        tr, va = _val_split(y, soft, cfg.val_fraction, cfg.seed)
        val_cells, val_y = [cells[int(i)] for i in va], y[va]
        cells, y = [cells[int(i)] for i in tr], y[tr]
    else:
        val_y, _, val_soft = _targets(val_targets, names)
        if val_soft != soft or len(val_y) != len(val_cells):
            raise ValueError("val_targets must be the same kind as targets and line up with val_cells.")
    n_layer = model.config.n_layer
    if cfg.mode == "top" and not 1 <= cfg.n_unfrozen <= n_layer:
        raise ValueError(f"n_unfrozen={cfg.n_unfrozen} but the model has {n_layer} blocks; use 1..{n_layer}.")
    first = {"frozen": n_layer, "top": n_layer - cfg.n_unfrozen, "full": 0}[cfg.mode]
    empty = [i for i in range(len(cells)) if len(cells[i]) == 0]
    if empty:
        raise ValueError(f"{len(empty)} cells have no tokens (e.g. position {empty[0]}); drop them before "
                         "fine-tuning (the tokenizer's report lists cells without counts).")

    device = get_device(cfg.device)
    torch.manual_seed(cfg.seed)
    encoder = copy.deepcopy(model).to(device)
    net = CellModel(encoder, len(names), first, cfg.pooling, cfg.head_dropout,
                    special_token_ids(tokenizer, model)).to(device)
    max_len = int(min(cfg.max_len or model.config.max_len, model.config.max_len))
    pad_id = model.config.pad_token_id

    trainable = [p for blk in encoder.encoder.blocks[first:] for p in blk.parameters()]
    if first == 0:
        trainable += list(encoder.embeddings.parameters())
    for p in encoder.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    groups = [{"params": list(net.head.parameters()), "lr": cfg.lr}]
    if trainable:
        groups.append({"params": trainable, "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

    n_tokens = sum(min(len(cells[i]), max_len) for i in range(len(cells)))
    cache = first > 0 and n_tokens * model.config.n_embd * 4 / 2**20 <= cfg.cache_limit_mb
    feats = _Features(net, cells, max_len, pad_id, 64, device, cache)
    val_feats = _Features(net, val_cells, max_len, pad_id, 64, device, cache)
    weight = _class_weights(y, len(names), soft, cfg.class_weight)
    weight = weight.to(device) if weight is not None else None
    y_t, val_t = torch.as_tensor(y).to(device), torch.as_tensor(val_y).to(device)

    def run(features, idx, train: bool):
        h, ids, mask = features.batch(idx)
        with torch.set_grad_enabled(train):
            pooled = h if ids is None else net.upper(h, ids, mask)      # (B, D)
            return net.head(pooled)                                     # (B, K)

    def evaluate():
        net.eval()
        z = torch.cat([run(val_feats, np.arange(s, min(s + 128, len(val_cells))), False)
                       for s in range(0, len(val_cells), 128)])        # (n_val, K)
        loss = float(F.cross_entropy(z, val_t, weight=weight))
        truth = val_t.argmax(1) if soft else val_t
        return z, loss, float((z.argmax(1) == truth).float().mean())

    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    best, best_loss, best_epoch, stale, rows = None, np.inf, 0, 0, []
    for epoch in tqdm(range(1, cfg.epochs + 1), disable=not cfg.progress, desc=f"finetune ({cfg.mode})"):
        net.train()
        encoder.embeddings.train(first == 0)
        for blk in encoder.encoder.blocks[:first]:
            blk.eval()                                                  # frozen blocks: no dropout
        order = torch.randperm(len(cells), generator=gen).numpy()
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            logits = run(feats, idx, True)                              # (B, K)
            loss = F.cross_entropy(logits, y_t[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
        _, val_loss, val_acc = evaluate()
        rows.append({"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "val_accuracy": val_acc})
        if val_loss < best_loss - 1e-6:
            best, best_loss, best_epoch, stale = copy.deepcopy(net.state_dict()), val_loss, epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    net.load_state_dict(best)
    if cfg.calibrate:
        z, _, _ = evaluate()
        net.temperature.fill_(_fit_temperature(z.float().cpu(), val_t.cpu()))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    history = pd.DataFrame(rows).set_index("epoch")
    return FinetunedModel(net, names, history, best_epoch, cfg, pad_id, max_len, soft)

