"""Scores of cell-type predictions with 95 % bootstrap intervals (chapters 02 and 07).

Every row of the annotation tables, the model-free baselines of
:mod:`tflib.tl.annotate_baselines` and the fine-tuned Transcriptformer of
:mod:`tflib.tl.annotation` alike, is scored by the same two functions:

* :func:`evaluate_predictions` -- accuracy and macro-F1, one table row per metric;
* :func:`per_class_recall` -- the recall of every true class (rare-type sensitivity).

Both draw their intervals with :func:`tflib.stats.bootstrap_ci`.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

__all__ = ["evaluate_predictions", "per_class_recall"]


def evaluate_predictions(
    y_true, y_pred, *, method: str = "method", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy and macro-F1 with 95 % bootstrap intervals, as one table row per metric.

    Used for every row of the annotation tables (chapters 02 and 07). Test cells whose true
    class never occurred in training count as errors: that is what a user would experience.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, metric, estimate, low, high, n_cells``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    from tflib.stats.bootstrap import bootstrap_ci

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    metrics = {
        "accuracy": accuracy_score,
        "macro_f1": partial(f1_score, average="macro", zero_division=0),
    }
    rows = []
    for name, fn in metrics.items():
        res = bootstrap_ci(fn, y_true, y_pred, n_boot=n_boot, seed=seed)
        rows.append({"method": method, "metric": name, **res.as_dict(), "n_cells": len(y_true)})
    return pd.DataFrame(rows)


def per_class_recall(y_true, y_pred, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Recall of every true class with a 95 % bootstrap interval (rare-type sensitivity, ch. 07).

    Resamples are taken within each class, so a class's interval reflects only its own cells.
    """
    from tflib.stats.bootstrap import bootstrap_ci

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    rows = []
    for i, cls in enumerate(np.unique(y_true)):
        m = y_true == cls
        res = bootstrap_ci(lambda t, p: float(np.mean(t == p)), y_true[m], y_pred[m],
                           n_boot=n_boot, seed=seed + i)
        rows.append({"class": cls, "recall": res.estimate, "low": res.low, "high": res.high,
                     "n_cells": int(m.sum())})
    return pd.DataFrame(rows).set_index("class")
