"""The course's four-panel workflow figure, drawn with matplotlib only.

The welcome page of the book shows it; it mirrors the four stages the course follows:
(A) a single-cell corpus, (B) pretraining where a cell is a document and a gene a word,
(C) direction from RNA velocity and fate probabilities, (D) the loop from a hypothesis
through statistics to validation. Everything is drawn from patches, arrows and a tiny
synthetic scatter with a fixed seed, so the figure is identical on every build.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The Okabe--Ito palette (colour-blind safe). Chapters may reuse it for consistency.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}

#: Thirteen colour-blind-safe colours for the 13 PBMC types of the Kang data (chapters 01, 02
#: and 07): Paul Tol's "muted" scheme extended with four of his "light" colours, and black.
TOL_13: list[str] = [
    "#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99",
    "#999933", "#AA4499", "#EE8866", "#77AADD", "#BBCC33", "#000000",
]

# One colour per fate, used in panel C and D alike.
_FATES = {"A": OKABE_ITO["orange"], "B": OKABE_ITO["blue"], "C": OKABE_ITO["purple"]}
_GREY = "#8C8C8C"
_LIGHT = "#F2F2F2"

TITLES = (
    "A  Single-cell corpus",
    "B  Pretraining: cell = document, gene = word",
    "C  Direction: velocity and fate",
    "D  Hypothesis, statistics, validation",
)


def _box(ax, x, y, w, h, text="", *, face=_LIGHT, edge=_GREY, size=9.5, weight="normal",
         color="black", round_=0.02):
    """Draw a rounded box centred on ``(x, y)`` (axes units) with a centred label."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle=f"round,pad=0,rounding_size={round_}",
                                facecolor=face, edgecolor=edge, linewidth=1.0))
    if text:
        ax.text(x, y, text, ha="center", va="center", fontsize=size, fontweight=weight,
                color=color)


def _arrow(ax, start, end, *, color="black", rad=0.0, lw=1.4, style="-|>", scale=12):
    """Draw an arrow between two points given in axes units."""
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=scale,
                                 connectionstyle=f"arc3,rad={rad}", color=color,
                                 linewidth=lw, shrinkA=0, shrinkB=0))


def _prepare(ax, title):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("auto")
    ax.set_axis_off()
    ax.set_title(title, loc="left", fontsize=11.5, fontweight="bold")


def _panel_corpus(ax, rng):
    """(A) Several studies are cleaned and pooled into one cells x genes training matrix."""
    _prepare(ax, TITLES[0])
    sources = [("tissues", OKABE_ITO["sky_blue"]), ("labs", OKABE_ITO["green"]),
               ("species", OKABE_ITO["yellow"])]
    for i, (label, colour) in enumerate(sources):
        y = 0.78 - i * 0.27
        # a small matrix tile per study, shaded by a random sparse "expression"
        tile = rng.random((4, 5)) * (rng.random((4, 5)) > 0.45)
        x0, y0, cw, ch = 0.04, y - 0.09, 0.045, 0.045
        for r in range(4):
            for c in range(5):
                ax.add_patch(_rect(x0 + c * cw, y0 + r * ch, cw, ch, colour, 0.15 + 0.85 * tile[r, c]))
        ax.text(x0 + 2.5 * cw, y0 - 0.035, label, ha="center", va="top", fontsize=9)
        _arrow(ax, (0.29, y), (0.43, 0.5 + (y - 0.5) * 0.35), color=_GREY, lw=1.1)
    _box(ax, 0.55, 0.5, 0.2, 0.2, "QC\nnormalise\nmetadata", size=9)
    _arrow(ax, (0.655, 0.5), (0.725, 0.5))
    # the pooled training matrix: rows are cells, columns genes
    pooled = rng.random((9, 6)) * (rng.random((9, 6)) > 0.5)
    x0, y0, cw, ch = 0.74, 0.27, 0.037, 0.05
    row_colours = [OKABE_ITO["sky_blue"]] * 3 + [OKABE_ITO["green"]] * 3 + [OKABE_ITO["yellow"]] * 3
    for r in range(9):
        for c in range(6):
            ax.add_patch(_rect(x0 + c * cw, y0 + r * ch, cw, ch, row_colours[r], 0.15 + 0.85 * pooled[r, c]))
    ax.text(x0 + 3 * cw, y0 + 9 * ch + 0.03, "training pool", ha="center", va="bottom", fontsize=9)
    ax.text(x0 + 3 * cw, y0 - 0.03, "genes \u2192", ha="center", va="top", fontsize=8.5)
    ax.text(x0 + 6 * cw + 0.015, y0 + 4.5 * ch, "cells", ha="left", va="center", fontsize=9.5,
            rotation=90)


def _rect(x, y, w, h, colour, alpha):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=colour, alpha=float(alpha), edgecolor="white",
                     linewidth=0.5)


def _panel_pretraining(ax, rng):
    """(B) A cell becomes a sentence of gene tokens; one is masked and predicted."""
    _prepare(ax, TITLES[1])
    genes = ["<cls>", "GATA1", "KLF1", "[MASK]", "TAL1", "CD34", "\u2026"]
    ax.text(0.03, 0.9, "a cell, read as a sentence of genes ranked by expression",
            fontsize=9, va="center")
    width = 0.125
    for i, gene in enumerate(genes):
        masked = gene == "[MASK]"
        face = OKABE_ITO["vermillion"] if masked else "white"
        _box(ax, 0.08 + i * (width + 0.012), 0.76, width, 0.1, gene, face=face,
             edge=OKABE_ITO["vermillion"] if masked else _GREY, size=8.5,
             color="white" if masked else "black", weight="bold" if masked else "normal")
    # the transformer encoder
    _box(ax, 0.5, 0.5, 0.84, 0.17, "Transformer encoder (self-attention over all genes)",
         face=OKABE_ITO["sky_blue"], edge=OKABE_ITO["blue"], size=9.5)
    for i in range(len(genes)):
        x = 0.08 + i * (width + 0.012)
        _arrow(ax, (x, 0.705), (x, 0.59), color=_GREY, lw=0.9, scale=8)
    # what comes out: a prediction for the masked word and embeddings
    _arrow(ax, (0.3, 0.41), (0.3, 0.3), color=_GREY, lw=0.9, scale=8)
    _arrow(ax, (0.72, 0.41), (0.72, 0.3), color=_GREY, lw=0.9, scale=8)
    _box(ax, 0.3, 0.2, 0.4, 0.13, "predict the masked gene\n(here: NFE2)", size=8.5,
         face="white", edge=OKABE_ITO["vermillion"])
    values = rng.normal(size=9)
    values = (values - values.min()) / (values.max() - values.min())
    for i, v in enumerate(values):
        ax.add_patch(_rect(0.56 + i * 0.04, 0.165, 0.04, 0.07, OKABE_ITO["green"], 0.2 + 0.8 * v))
    ax.text(0.72, 0.1, "cell & gene embeddings", ha="center", va="top", fontsize=8.5)


def _branching_cells(rng, n=150):
    """A Y-shaped trajectory: a progenitor stem that splits into three fates."""
    t = rng.random(n)
    branch = rng.integers(0, 3, n)
    angles = np.array([np.deg2rad(150), np.deg2rad(90), np.deg2rad(30)])
    stem_end = np.array([0.5, 0.42])
    pts = np.empty((n, 2))
    vel = np.empty((n, 2))
    on_stem = t < 0.4
    # stem: from the bottom up to the branch point
    pts[on_stem] = np.c_[np.full(on_stem.sum(), 0.5), 0.08 + t[on_stem] / 0.4 * 0.34]
    vel[on_stem] = [0.0, 1.0]
    s = (t[~on_stem] - 0.4) / 0.6
    direction = np.c_[np.cos(angles[branch[~on_stem]]), np.sin(angles[branch[~on_stem]])]
    pts[~on_stem] = stem_end + s[:, None] * 0.42 * direction
    vel[~on_stem] = direction
    pts += rng.normal(scale=0.025, size=pts.shape)
    return pts, vel, t, branch


def _donut(ax, centre, probs, radius=0.075):
    """A small fate-probability donut drawn with wedges (no extra axes)."""
    from matplotlib.patches import Circle, Wedge

    start = 90.0
    for p, colour in zip(probs, _FATES.values()):
        ax.add_patch(Wedge(centre, radius, start, start + 360 * p, width=radius * 0.45,
                           facecolor=colour, edgecolor="white", linewidth=0.6, zorder=4))
        start += 360 * p
    ax.add_patch(Circle(centre, radius * 0.55, facecolor="white", edgecolor="none", zorder=4))


def _panel_direction(ax, rng):
    """(C) Cells on a UMAP-like map with velocity arrows and fate donuts."""
    _prepare(ax, TITLES[2])
    ax.set_xlim(-0.25, 1.25)
    ax.set_ylim(-0.08, 1.0)
    ax.set_aspect("equal", adjustable="box")  # round donuts whatever the panel shape
    pts, vel, t, branch = _branching_cells(rng)
    colours = np.where(t < 0.4, _GREY, np.array(list(_FATES.values()))[branch])
    ax.scatter(pts[:, 0], pts[:, 1], s=10, c=colours, alpha=0.8, linewidths=0, zorder=2)
    keep = rng.random(len(pts)) < 0.25
    ax.quiver(pts[keep, 0], pts[keep, 1], vel[keep, 0], vel[keep, 1], angles="xy",
              scale_units="xy", scale=17, width=0.005, color="black", alpha=0.75, zorder=3)
    ends = {"A": (0.1, 0.72), "B": (0.5, 0.9), "C": (0.9, 0.72)}
    for name, (x, y) in ends.items():
        ax.text(x, y + 0.03, f"fate {name}", ha="center", va="bottom", fontsize=9.5,
                color=_FATES[name], fontweight="bold")
    # a progenitor is undecided; a cell far along branch A is mostly committed to A
    _donut(ax, (0.95, 0.2), [0.36, 0.33, 0.31], radius=0.09)
    ax.text(0.95, 0.07, "progenitor", ha="center", va="top", fontsize=8.5)
    _arrow(ax, (0.845, 0.2), (0.56, 0.2), color=_GREY, lw=0.8, scale=7)
    _donut(ax, (0.02, 0.3), [0.8, 0.12, 0.08], radius=0.09)
    ax.text(0.02, 0.17, "committed", ha="center", va="top", fontsize=8.5)
    _arrow(ax, (0.08, 0.39), (0.2, 0.53), color=_GREY, lw=0.8, scale=7)
    ax.text(0.5, -0.06, "arrows: RNA velocity · donuts: P(fate A, B, C)", ha="center",
            va="bottom", fontsize=8.5, color="#333333")


def _panel_loop(ax):
    """(D) Hypothesis -> statistics -> validation -> revised model -> hypothesis."""
    _prepare(ax, TITLES[3])
    nodes = {
        "model": ((0.5, 0.8), "model prediction\n(in-silico knockout)", OKABE_ITO["sky_blue"]),
        "hyp": ((0.83, 0.5), "hypothesis\n\u201cKO of G lowers\nP(fate A)\u201d", OKABE_ITO["yellow"]),
        "stats": ((0.5, 0.18), "statistics\ntest + FDR", OKABE_ITO["green"]),
        "exp": ((0.17, 0.5), "experiment\nconfirm or\nrevise", OKABE_ITO["orange"]),
    }
    for (x, y), text, colour in nodes.values():
        _box(ax, x, y, 0.3, 0.2, text, face=colour, edge="black", size=8.5, round_=0.04)
    order = ["model", "hyp", "stats", "exp", "model"]
    offsets = {"model": (0.15, 0.1), "hyp": (0.15, 0.1), "stats": (0.15, 0.1), "exp": (0.15, 0.1)}
    for a, b in zip(order[:-1], order[1:]):
        (xa, ya), (xb, yb) = nodes[a][0], nodes[b][0]
        dx, dy = np.sign(xb - xa), np.sign(yb - ya)
        wa, ha = offsets[a]
        wb, hb = offsets[b]
        start = (xa + dx * wa * 0.6, ya + dy * ha * 1.0)
        end = (xb - dx * wb * 0.3, yb - dy * hb * 1.05)
        _arrow(ax, start, end, rad=-0.3, lw=1.5)
    ax.text(0.5, 0.5, "\u27f3", ha="center", va="center", fontsize=26, color=_GREY)


def workflow_figure(ax: Sequence | None = None, *, seed: int = 0):
    """Draw the four-panel Transcriptformer workflow and return its matplotlib ``Figure``.

    Used on the welcome page of the book (chapter 0). Panels: (A) corpus, (B) pretraining
    with cells as documents and genes as words, (C) velocity arrows on a UMAP-like map and
    fate-probability donuts, (D) the hypothesis -> statistics -> validation loop. Colours
    come from the colour-blind-safe Okabe--Ito palette (:data:`OKABE_ITO`).

    Parameters
    ----------
    ax
        ``None`` (default) creates a new 2 x 2 figure sized for the book's text width.
        Otherwise a sequence of exactly four matplotlib ``Axes`` (any layout, all in the
        same figure) to draw panels A--D into.
    seed
        Seed of the tiny synthetic scatter and matrices, so the figure is deterministic.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the four panels (exactly four axes when ``ax`` is ``None``).

    Raises
    ------
    ValueError
        If ``ax`` is not four axes of one figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, grid = plt.subplots(2, 2, figsize=(9.5, 7.4), layout="constrained")
        axes = list(grid.ravel())
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != 4:
            raise ValueError(
                f"workflow_figure needs 4 axes (panels A-D), got {len(axes)}; "
                "pass ax=None to create a new figure, or e.g. plt.subplots(2, 2)[1]."
            )
        fig = axes[0].figure
        if any(a.figure is not fig for a in axes):
            raise ValueError("workflow_figure: all four axes must belong to the same figure.")
    rng = np.random.default_rng(seed)
    _panel_corpus(axes[0], rng)
    _panel_pretraining(axes[1], rng)
    _panel_direction(axes[2], rng)
    _panel_loop(axes[3])
    return fig
