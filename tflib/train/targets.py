"""Targets, validation split, class weights and calibration for fine-tuning (chapters 07, 10).

Helpers of :func:`~tflib.train.finetuning.finetune`: :func:`_targets` checks labels or soft
targets (rows of probabilities) in full, :func:`_val_split` holds out stratified validation
cells, :func:`_class_weights` gives sklearn's "balanced" weights and :func:`_fit_temperature`
fits the softmax temperature on the validation cells (temperature scaling, Guo et al. 2017).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


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


def _class_weights(y, n_classes, soft, how):
    if soft or how is None:
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = len(y) / (n_classes * np.maximum(counts, 1.0))                  # sklearn's "balanced"
    return torch.tensor(w, dtype=torch.float32)
