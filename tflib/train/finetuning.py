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
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from tflib.models.transformer import ClassificationHead
from tflib.utils import get_device

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

    def lower(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.encoder.embeddings(ids)                                # (B, L, D)
        for block in self.encoder.encoder.blocks[: self.k]:
            x, _ = block(x, mask)                                       # (B, L, D)
        return x

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


def _padded(cells, idx, max_len: int, pad_id: int):
    """``(ids (B, L) long, mask (B, L) bool)`` for the cells ``idx``, right-padded."""
    seqs = [np.asarray(cells[int(i)])[:max_len] for i in idx]
    L = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)         # (B, L)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.from_numpy(s.astype(np.int64))
    mask = ids != pad_id                                                # (B, L)
    return ids, mask


class _Features:
    """Batches of inputs for the trainable part: cached ``lower`` outputs, or tokens to run through it."""

    def __init__(self, net: CellModel, cells, max_len, pad_id, batch_size, device, cache: bool):
        self.net, self.cells, self.max_len, self.pad_id, self.device = net, cells, max_len, pad_id, device
        self.cache, self.pooled = None, None
        frozen = net.k == len(net.encoder.encoder.blocks)               # nothing below the head learns
        if cache or frozen:
            self.cache, pooled = [], []
            net.eval()
            with torch.inference_mode():
                for start in range(0, len(cells), batch_size):
                    idx = np.arange(start, min(start + batch_size, len(cells)))
                    ids, mask = _padded(cells, idx, max_len, pad_id)
                    ids, mask = ids.to(device), mask.to(device)
                    h = net.lower(ids, mask)                            # (B, L, D)
                    if frozen:
                        pooled.append(net.upper(h, ids, mask))          # (B, D): pooled once, reused every epoch
                    else:
                        self.cache.extend(h[r, : int(mask[r].sum())].clone() for r in range(len(idx)))  # (l_r, D) each
            if frozen:
                self.pooled, self.cache = torch.cat(pooled), None       # (N, D)

    def batch(self, idx):
        """``(h, ids, mask)`` for the trainable blocks, or ``(pooled (B, D), None, None)`` when frozen."""
        if self.pooled is not None:
            return self.pooled[torch.as_tensor(idx, device=self.pooled.device)], None, None
        ids, mask = _padded(self.cells, idx, self.max_len, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.cache is None:
            if self.net.k == 0:
                return self.net.lower(ids, mask), ids, mask
            with torch.no_grad():                                        # frozen blocks: no gradient needed
                return self.net.lower(ids, mask), ids, mask
        h = torch.zeros(*ids.shape, self.net.encoder.config.n_embd, device=self.device)  # (B, L, D)
        for r, i in enumerate(idx):
            h[r, : len(self.cache[int(i)])] = self.cache[int(i)]
        return h, ids, mask


class FinetunedModel:
    """What :func:`finetune` returns: the fine-tuned network, its classes and its training record.

    Attributes
    ----------
    net
        The :class:`CellModel` (encoder copy + head), in eval mode.
    classes
        Class (or fate) names, the columns of :meth:`predict_proba`.
    history
        One row per epoch: ``train_loss``, ``val_loss``, ``val_accuracy``.
    best_epoch, temperature
        The epoch whose weights were kept; the fitted softmax temperature (1.0 if not calibrated).
    config
        The :class:`FinetuneConfig` used.
    """

    def __init__(self, net, classes, history, best_epoch, config, pad_id, max_len, soft):
        self.net, self.classes, self.history, self.best_epoch = net, list(classes), history, best_epoch
        self.config, self.pad_id, self.max_len, self.soft = config, pad_id, max_len, soft

    @property
    def temperature(self) -> float:
        return float(self.net.temperature)

    def _run(self, cells, batch_size, what):
        device = next(self.net.parameters()).device
        out = []
        self.net.eval()
        with torch.inference_mode():
            for start in range(0, len(cells), batch_size):
                idx = np.arange(start, min(start + batch_size, len(cells)))
                ids, mask = _padded(cells, idx, self.max_len, self.pad_id)
                ids, mask = ids.to(device), mask.to(device)
                pooled = self.net.upper(self.net.lower(ids, mask), ids, mask)  # (B, D)
                out.append((self.net.head(pooled) if what == "logits" else pooled).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def logits(self, cells, batch_size: int = 64) -> np.ndarray:
        """Raw ``(n, K)`` scores before temperature and softmax."""
        return self._run(cells, batch_size, "logits")

    def predict_proba(self, cells, batch_size: int = 64) -> np.ndarray:
        """``(n, K)`` probabilities (temperature-scaled if calibrated); rows sum to 1."""
        z = torch.from_numpy(self.logits(cells, batch_size)) / self.temperature  # (n, K)
        return torch.softmax(z.double(), dim=1).numpy()

    def predict(self, cells, batch_size: int = 64) -> np.ndarray:
        """The most probable class name of every cell."""
        return np.asarray(self.classes, dtype=object)[self.logits(cells, batch_size).argmax(1)]

    def embed(self, cells, batch_size: int = 64) -> np.ndarray:
        """``(n, D)`` pooled embeddings from the fine-tuned encoder (chapter 10 uses them)."""
        return self._run(cells, batch_size, "embed")

    def __repr__(self) -> str:
        c = self.config
        return (f"FinetunedModel(mode={c.mode!r}, classes={len(self.classes)}, best_epoch={self.best_epoch}, "
                f"temperature={self.temperature:.3f})")


def _targets(targets, classes):
    """``(y, classes, soft)``: int labels or float rows, the class names, and which kind."""
    arr = np.asarray(targets)
    if arr.ndim == 2:
        y = arr.astype(np.float32)
        if not np.all(np.isfinite(y)) or (y < 0).any() or not np.allclose(y.sum(1), 1.0, atol=1e-3):
            raise ValueError("soft targets must be finite, non-negative rows that sum to 1 (e.g. fate "
                             "probabilities); normalise them with y / y.sum(1, keepdims=True).")
        names = list(classes) if classes is not None else [str(i) for i in range(y.shape[1])]
        if len(names) != y.shape[1]:
            raise ValueError(f"{len(names)} class names for {y.shape[1]} target columns.")
        return y, names, True
    if arr.ndim != 1:
        raise ValueError(f"targets must be 1-D labels or a 2-D (cells, classes) array; got shape {arr.shape}.")
    labels = pd.Series(arr).astype(str)
    names = list(classes) if classes is not None else sorted(labels.unique())
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among classes={names}.")
    counts = labels.value_counts()
    few = counts[counts < 2]
    if len(few):
        raise ValueError(f"classes {few.index.tolist()} have fewer than 2 training cells; a classifier cannot "
                         "learn them. Fix: merge or drop those classes, or add cells.")
    return labels.map({c: i for i, c in enumerate(names)}).to_numpy(np.int64), names, False


def _val_split(y, soft, fraction, seed):
    from sklearn.model_selection import train_test_split

    strata = y.argmax(1) if soft else y
    idx = np.arange(len(y))
    try:
        return train_test_split(idx, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError:                                                  # a class too small to stratify
        return train_test_split(idx, test_size=fraction, random_state=seed)


def _fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The temperature minimising the validation NLL (searched on log scale in [0.05, 20])."""
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        return float(F.cross_entropy(logits / np.exp(log_t), y))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def _special_ids(model, tokenizer) -> list[int]:
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    vocab = getattr(tok, "vocab", None)
    if vocab is not None and hasattr(vocab, "special_tokens"):
        return [vocab.token_to_id(t) for t in vocab.special_tokens]
    return [model.config.pad_token_id]


def _class_weights(y, n_classes, soft, how):
    if soft or how is None:
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = len(y) / (n_classes * np.maximum(counts, 1.0))                  # sklearn's "balanced"
    return torch.tensor(w, dtype=torch.float32)


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
                    _special_ids(model, tokenizer)).to(device)
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

