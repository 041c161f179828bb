"""Power and sample size of a two-group comparison (chapter 12).

Before an experiment validates a prediction, ask how many replicates it needs to see the
predicted effect. Both functions wrap ``statsmodels.stats.power.TTestIndPower`` (a two-sample
t-test with equal group sizes) and take the effect as Cohen's d: the difference of means in
units of the pooled standard deviation.
"""
from __future__ import annotations

import math

__all__ = ["power", "sample_size"]


def _check(effect: float, alpha: float, alternative: str) -> None:
    if not (isinstance(effect, (int, float)) and math.isfinite(effect) and effect != 0):
        raise ValueError(f"effect={effect!r}: give a non-zero Cohen's d (difference of means / pooled SD).")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1), e.g. 0.05.")
    if alternative not in ("two-sided", "larger", "smaller"):
        raise ValueError(f"alternative={alternative!r}; use 'two-sided', 'larger' or 'smaller'.")


def power(effect: float, n: int, *, alpha: float = 0.05, alternative: str = "two-sided") -> float:
    """Chance that a two-sample t-test with ``n`` replicates per group detects Cohen's d ``effect``.

    Used in chapter 12 to size the validation experiment of a predicted knockout.
    """
    from statsmodels.stats.power import TTestIndPower

    _check(effect, alpha, alternative)
    if n < 2:
        raise ValueError(f"n={n}: a two-sample test needs at least 2 replicates per group.")
    return float(TTestIndPower().power(effect_size=abs(effect), nobs1=n, alpha=alpha, ratio=1.0,
                                       alternative=alternative if alternative == "two-sided" else "larger"))


def sample_size(effect: float, power: float = 0.8, *, alpha: float = 0.05, alternative: str = "two-sided") -> int:
    """Replicates per group needed to detect Cohen's d ``effect`` with probability ``power`` (rounded up).

    Used in chapter 12.
    """
    from statsmodels.stats.power import TTestIndPower

    _check(effect, alpha, alternative)
    if not 0 < power < 1:
        raise ValueError(f"power={power!r} must lie in (0, 1), e.g. 0.8.")
    n = TTestIndPower().solve_power(effect_size=abs(effect), nobs1=None, alpha=alpha, power=power, ratio=1.0,
                                    alternative=alternative if alternative == "two-sided" else "larger")
    return int(math.ceil(float(n)))
