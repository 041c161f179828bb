"""Training curves (chapter 06).

:func:`loss_curve` draws a loss per step, faint, with its rolling mean on top and a dashed
chance line: the picture chapter 06 uses for the toy run and for the course recipe.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["loss_curve"]


def loss_curve(losses, *, steps=None, window: int = 10, ax=None, color: str = "#0072B2",
               chance: float | None = None, title: str | None = None,
               ylabel: str = "masked-gene cross-entropy"):
    """Plot per-step losses and their ``window``-step rolling mean; return the axes.

    Parameters
    ----------
    losses
        One loss per step (list, array or Series).
    steps
        The step of each loss (default ``0, 1, ...``).
    window
        Steps in the rolling mean (``min_periods=1``, so the curve starts at step 0).
    ax
        Axes to draw on (default: a new 7 × 3.6 inch figure).
    color
        Colour of both curves (the per-step one is drawn at 35 % opacity).
    chance
        Draw a grey dashed line at this loss (e.g. ``ln V`` for a uniform guess over V tokens).
    title, ylabel
        Axis labels. Add more lines (e.g. a held-out loss) to the returned axes.
    """
    import matplotlib.pyplot as plt

    losses = pd.Series(np.asarray(losses, dtype=float))
    if losses.empty:
        raise ValueError("losses is empty: nothing to plot (did training run any step?).")
    x = np.arange(len(losses)) if steps is None else np.asarray(steps)
    if len(x) != len(losses):
        raise ValueError(f"{len(x)} steps for {len(losses)} losses; they must line up.")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(x, losses, color=color, alpha=0.35, lw=1, label="per step")
    ax.plot(x, losses.rolling(window, min_periods=1).mean(), color=color, lw=2.2, label=f"{window}-step mean")
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance (ln V)")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return ax
