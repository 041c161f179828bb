"""Training and scaling curves (chapter 06).

:func:`loss_curve` draws a loss per step, faint, with its rolling mean on top and a dashed
chance line: the picture chapter 06 uses for the toy run and for the course recipe.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["loss_curve", "scaling_curves", "PUBLISHED_SCALES"]


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
        _, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")  # labels stay inside on savefig
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


#: Published scales, for orientation only (**not measured here**). Parameters are estimated from
#: each model's published architecture (embeddings included); tokens are the corpus's cells
#: times the model's input length, an upper bound for one pass over the corpus.
PUBLISHED_SCALES = {
    "Geneformer (6 layers)": {"parameters": 1.0e7, "tokens": 27.4e6 * 2048},   # 27.4 M cells, <= 2,048 genes
    "scGPT (whole human)": {"parameters": 5.0e7, "tokens": 33e6 * 1200},       # 33 M cells, <= 1,200 genes
}


def scaling_curves(curve, sizes=None, *, published=PUBLISHED_SCALES, baseline: float | None = None,
                   color: str = "#0072B2", axes=None):
    """Held-out ``<mask>`` accuracy against training tokens and against model size (chapter 06).

    Parameters
    ----------
    curve
        Rows with ``tokens`` and ``accuracy`` (e.g. ``metrics["curve"]`` of the course checkpoint:
        its saved intermediate checkpoints, scored on the held-out cells).
    sizes
        Optional rows with ``n_parameters`` and ``heldout_mask_accuracy`` (the ``size`` rows of
        ``benchmarks/results/pretrain_sweep.csv``: short runs of a few model sizes).
    published
        ``{name: {"parameters", "tokens"}}`` drawn as grey dotted markers on the x axes and labelled
        "not measured here": where real foundation models sit, never an accuracy of theirs.
    baseline
        The rank-position baseline's accuracy, drawn as a dashed line.
    axes
        Two axes to draw on (default: a new 11 × 3.8 inch figure).
    """
    import matplotlib.pyplot as plt

    curve = pd.DataFrame(curve)
    panels = 2 if sizes is not None else 1
    if axes is None:
        _, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
        axes = axes[0]
    jobs = [(axes[0], curve["tokens"], curve["accuracy"], "training tokens seen", "tokens")]
    if sizes is not None:
        sizes = pd.DataFrame(sizes).sort_values("n_parameters")
        jobs.append((axes[1], sizes["n_parameters"], sizes["heldout_mask_accuracy"], "parameters", "parameters"))
    for ax, x, y, xlabel, key in jobs:
        ax.plot(x, 100 * np.asarray(y, float), "o-", color=color, lw=2, label="measured here")
        if baseline is not None:
            ax.axhline(100 * baseline, color="grey", ls="--", lw=1, label="rank-position baseline")
        marks = sorted((scale[key], name) for name, scale in (published or {}).items())
        for i, (x_pub, name) in enumerate(marks):                   # labels alternate sides of their line
            ax.axvline(x_pub, color="0.55", ls=":", lw=1.2)
            ax.annotate(f"{name}\n(published scale,\nnot measured here)", (x_pub, 0.97),
                        xycoords=("data", "axes fraction"), ha="right" if i % 2 == 0 else "left", va="top",
                        fontsize=7.5, color="0.35", rotation=90)
        ax.set_xscale("log")
        if marks:
            ax.set_xlim(right=max(ax.get_xlim()[1], marks[-1][0] * 4))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out accuracy at <mask> (%)")
        ax.legend(frameon=False, loc="center left", fontsize=8)
    return axes
