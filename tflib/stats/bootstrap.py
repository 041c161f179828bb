"""Bootstrap confidence intervals for any metric of (truth, prediction) pairs.

Chapters 02, 07 and 12 report every accuracy-like number with a 95 % interval computed here,
so that two methods are never declared different on the strength of a point estimate alone.

The interval is the plain *percentile* bootstrap: resample the evaluation cells with
replacement ``n_boot`` times, recompute the metric on each resample, and read off the
``alpha / 2`` and ``1 - alpha / 2`` quantiles. With ``groups=`` whole groups (donors, samples,
batches) are resampled instead of cells, which is the honest choice when cells of one donor are
not independent of each other (pseudoreplication, chapter 12).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["BootstrapResult", "bootstrap_ci"]


@dataclass(frozen=True)
class BootstrapResult:
    """A metric with its bootstrap interval.

    Attributes
    ----------
    estimate
        The metric on the full, un-resampled data.
    low, high
        The percentile interval bounds at level ``1 - alpha``.
    alpha
        One minus the confidence level (0.05 for a 95 % interval).
    n_boot
        The number of resamples requested.
    n_failed
        Resamples on which the metric was undefined (returned NaN); they are left out of the
        quantiles. Many failures mean the metric is fragile at this sample size.
    samples
        The resampled metric values (NaNs included), for histograms and exercises.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    n_boot: int
    n_failed: int = 0
    samples: np.ndarray = field(default=None, repr=False, compare=False)

    @property
    def level(self) -> float:
        """The confidence level, e.g. 0.95."""
        return 1.0 - self.alpha

    def as_dict(self) -> dict:
        """``{"estimate", "low", "high"}`` -- convenient for building tables."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _as_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a sequence with one entry per cell, got a scalar.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))
        raise ValueError(f"{name} has {bad.size} cells with NaN or infinite values (e.g. positions "
                         f"{bad[:5].tolist()}). Fix: drop those cells from both arrays, e.g. "
                         f"keep = np.isfinite({name}); bootstrap_ci(fn, y_true[keep], y_pred[keep]).")
    return arr


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true,
    y_pred,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    groups=None,
) -> BootstrapResult:
    """Percentile-bootstrap confidence interval of ``metric_fn(y_true, y_pred)``.

    Used in chapters 02 (label-transfer accuracy), 07 (the annotation table, rare-type recall)
    and 12 (bootstrap CIs versus rank tests).

    Parameters
    ----------
    metric_fn
        Called as ``metric_fn(y_true[idx], y_pred[idx])`` and must return a number, e.g.
        :func:`sklearn.metrics.accuracy_score` or
        ``functools.partial(sklearn.metrics.f1_score, average="macro")``.
    y_true, y_pred
        One entry (or one row, for predicted probabilities) per evaluation cell.
    n_boot
        Number of resamples (1,000 is enough for a 95 % interval's second digit).
    seed
        Seed of the resampling generator; the same seed gives the same interval.
    alpha
        One minus the confidence level.
    groups
        Optional group label per cell (donor, sample). If given, whole groups are resampled
        with replacement, so cells from the same group stay together.

    Returns
    -------
    BootstrapResult
        ``estimate``, ``low``, ``high`` (and the resampled values in ``samples``).

    Examples
    --------
    >>> from sklearn.metrics import accuracy_score
    >>> res = bootstrap_ci(accuracy_score, [0, 1, 1, 0], [0, 1, 0, 0], n_boot=200, seed=0)
    >>> res.estimate
    0.75
    """
    y_true = _as_array(y_true, "y_true")
    y_pred = _as_array(y_pred, "y_pred")
    n = y_true.shape[0]
    if y_pred.shape[0] != n:
        raise ValueError(
            f"y_true has {n} entries but y_pred has {y_pred.shape[0]}: pass one prediction per "
            "evaluation cell, in the same order."
        )
    if n == 0:
        raise ValueError("No evaluation cells: y_true is empty. Check the split or the filter.")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1 (0.05 for 95 %), got {alpha}.")

    rng = np.random.default_rng(seed)
    estimate = float(metric_fn(y_true, y_pred))

    if groups is None:
        draws = (rng.integers(0, n, size=n) for _ in range(int(n_boot)))
    else:
        groups = _as_array(groups, "groups")
        if groups.shape[0] != n:
            raise ValueError(f"groups has {groups.shape[0]} entries, expected {n} (one per cell).")
        _, codes = np.unique(groups, return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        if len(members) < 2:
            raise ValueError(
                "Only one group: a group bootstrap cannot vary anything. Pass groups=None to "
                "resample cells, or evaluate on more than one donor/sample."
            )
        draws = (
            np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
            for _ in range(int(n_boot))
        )

    samples = np.array([float(metric_fn(y_true[idx], y_pred[idx])) for idx in draws])
    ok = np.isfinite(samples)
    if not ok.any():
        raise ValueError(
            "The metric was undefined (NaN) on every resample; it cannot be bootstrapped at this "
            "sample size. Evaluate on more cells or choose a metric defined on small samples."
        )
    low, high = np.quantile(samples[ok], [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(
        estimate=estimate,
        low=float(low),
        high=float(high),
        alpha=float(alpha),
        n_boot=int(n_boot),
        n_failed=int((~ok).sum()),
        samples=samples,
    )
