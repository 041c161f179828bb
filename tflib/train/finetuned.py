"""What :func:`~tflib.train.finetuning.finetune` returns, and how it feeds cells to the network.

:class:`FinetunedModel` wraps the fine-tuned :class:`~tflib.train.finetuning.CellModel` with
``predict``, ``predict_proba`` (temperature-scaled), ``logits`` and ``embed`` (chapters 07, 10).
``_Features`` serves training batches: from a cache of the frozen blocks' outputs when it fits
in memory, or by running the frozen blocks on the fly. Shapes: ``B`` batch, ``L`` length,
``D`` hidden size, ``K`` classes, ``N`` cells.
"""
from __future__ import annotations

import numpy as np
import torch


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

    def __init__(self, net, cells, max_len, pad_id, batch_size, device, cache: bool):
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
        The :class:`~tflib.train.finetuning.CellModel` (encoder copy + head), in eval mode.
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
