"""Power and sample size of a two-group comparison (chapter 12).

Before an experiment validates a prediction, ask how many replicates it needs to see the
predicted effect. Both functions wrap ``statsmodels.stats.power.TTestIndPower`` (a two-sample
t-test with equal group sizes) and take the effect as Cohen's d: the difference of means
(group 1 minus group 2) in units of the pooled standard deviation.

``alternative`` is ``"two-sided"``, ``"larger"`` (the test looks for d > 0) or ``"smaller"``
(d < 0); scipy's names ``"greater"`` and ``"less"``, which :func:`tflib.stats.rank_test` uses,
mean the same. A one-sided test of the wrong direction has almost no power, and the functions
say so instead of dropping the sign.
"""
from __future__ import annotations

import math
from numbers import Real

__all__ = ["power", "sample_size"]

_ALIASES = {"two-sided": "two-sided", "larger": "larger", "greater": "larger", "smaller": "smaller",
            "less": "smaller"}


def _check(effect, alpha, alternative) -> str:
    """Validate the shared arguments; returns statsmodels' name of ``alternative``."""
    if isinstance(effect, bool) or not (isinstance(effect, Real) and math.isfinite(effect) and effect != 0):
        raise ValueError(f"effect={effect!r}: give a non-zero Cohen's d (difference of means / pooled SD).")
    if not (isinstance(alpha, Real) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1), e.g. 0.05.")
    if alternative not in _ALIASES:
        raise ValueError(f"alternative={alternative!r}; use 'two-sided', 'larger' (or 'greater') or "
                         "'smaller' (or 'less').")
    return _ALIASES[alternative]


def power(effect: float, n: int, *, alpha: float = 0.05, alternative: str = "two-sided") -> float:
    """Chance that a two-sample t-test with ``n`` replicates per group detects Cohen's d ``effect``.

    ``effect`` keeps its sign: with ``alternative="larger"`` a negative d is (almost) never
    detected, and the power says so. Used in chapter 12 to size the validation experiment of a
    predicted knockout.
    """
    from statsmodels.stats.power import TTestIndPower

    alt = _check(effect, alpha, alternative)
    if isinstance(n, bool) or not isinstance(n, Real) or n < 2:
        raise ValueError(f"n={n!r}: a two-sample test needs at least 2 replicates per group.")
    d = abs(float(effect)) if alt == "two-sided" else float(effect)
    return float(TTestIndPower().power(effect_size=d, nobs1=float(n), alpha=float(alpha), ratio=1.0,
                                       alternative=alt))


def sample_size(effect: float, power: float = 0.8, *, alpha: float = 0.05, alternative: str = "two-sided") -> int:
    """Replicates per group needed to detect Cohen's d ``effect`` with probability ``power`` (rounded up).

    A one-sided ``alternative`` that points away from the sign of ``effect`` is refused: no
    number of replicates reaches the power. Used in chapter 12.
    """
    from statsmodels.stats.power import TTestIndPower

    alt = _check(effect, alpha, alternative)
    if not (isinstance(power, Real) and 0 < power < 1):
        raise ValueError(f"power={power!r} must lie in (0, 1), e.g. 0.8.")
    if (alt == "larger" and effect < 0) or (alt == "smaller" and effect > 0):
        raise ValueError(f"effect={effect!r} points the other way from alternative={alternative!r}, so no "
                         "sample size detects it. Fix: alternative='two-sided', or the one-sided direction "
                         f"of the effect ('{'smaller' if effect < 0 else 'larger'}').")
    d = abs(float(effect)) if alt == "two-sided" else float(effect)
    n = TTestIndPower().solve_power(effect_size=d, nobs1=None, alpha=float(alpha), power=float(power),
                                    ratio=1.0, alternative=alt)
    return int(math.ceil(float(n)))
