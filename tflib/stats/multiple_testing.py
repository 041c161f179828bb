"""False discovery rate control: Benjamini--Hochberg and Benjamini--Yekutieli q-values.

Chapter 09 reports a q-value beside every driver gene (:func:`tflib.tl.fate_drivers`), and the
later perturbation chapters adjust their per-gene tests the same way. The arithmetic is done by
``statsmodels.stats.multitest.multipletests``; this module adds the input checks a user needs
(a NaN p-value would otherwise turn into a silently wrong ranking).
"""
from __future__ import annotations

import numpy as np

__all__ = ["fdr"]

_METHODS = {"bh": "fdr_bh", "by": "fdr_by"}


def _where(mask: np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` flat positions of ``mask`` as text, e.g. ``"3, 17 (and 2 more)"``."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f" (and {len(idx) - limit} more)" if len(idx) > limit else "")


def fdr(pvals, method: str = "bh") -> np.ndarray:
    """Adjust p-values for multiple testing: the q-value of each test (chapters 09 and 12--13).

    The q-value of a test is the smallest false discovery rate at which it would be called
    significant. ``method="bh"`` (Benjamini--Hochberg) assumes independent or positively
    dependent tests; ``method="by"`` (Benjamini--Yekutieli) holds under any dependence and is
    more conservative (each q-value is multiplied by about ``ln(n) + 0.58``).

    Parameters
    ----------
    pvals
        P-values, any shape (e.g. genes × fates); every value must be a number in ``[0, 1]``.
        The adjustment runs over all values together.
    method
        ``"bh"`` or ``"by"``.

    Returns
    -------
    A float64 array of q-values with the shape of ``pvals``; each q-value is at least its
    p-value and at most 1.

    Raises
    ------
    ValueError
        Unknown method, or p-values that are NaN or outside ``[0, 1]`` (the message says how many
        and at which flat positions; drop or fix them, e.g. ``p[~np.isnan(p)]``, before adjusting).

    Examples
    --------
    >>> fdr([0.01, 0.04, 0.03, 0.2])
    array([0.04      , 0.05333333, 0.05333333, 0.2       ])
    """
    from statsmodels.stats.multitest import multipletests

    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}.")
    p = np.asarray(pvals, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    flat = p.ravel()
    nan = np.isnan(flat)
    if nan.any():
        raise ValueError(
            f"{int(nan.sum())} of {flat.size} p-values are NaN (flat positions {_where(nan)}). "
            "Drop them before adjusting (e.g. `p = p[~np.isnan(p)]`), or find out why the test returned NaN "
            "(often a constant gene)."
        )
    bad = (flat < 0) | (flat > 1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {flat.size} p-values lie outside [0, 1] (flat positions {_where(bad)}; e.g. "
            f"{flat[bad][0]!r}). Pass p-values, not statistics or log-p-values (for -log10 p use `10 ** -x`)."
        )
    q = multipletests(flat, method=_METHODS[method])[1]
    return np.asarray(q, dtype=np.float64).reshape(p.shape)
