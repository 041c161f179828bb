"""Per-cell fate donut charts on an embedding: the article's Figure 1C (chapters 09 and 10).

Each drawn cell gets a ring whose slices are its fate probabilities; the hole keeps the
underlying cloud of cells readable. Only a subsample of cells gets a donut, spread over the
embedding so that donuts do not pile up in dense regions.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fate_donuts", "fate_colors"]

# Okabe--Ito (colour-blind safe), without black; yellow last because it is faint on white.
_PALETTE = ("#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442")
_CLOUD = "#BDBDBD"


def fate_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour-blind-safe colour per fate name (Okabe--Ito, in the given order)."""
    names = [str(n) for n in names]
    if len(names) > len(_PALETTE):
        import matplotlib as mpl

        extra = mpl.colormaps["tab20"].colors
        cols = list(_PALETTE) + [mpl.colors.to_hex(c) for c in extra]
    else:
        cols = list(_PALETTE)
    return {n: cols[i % len(cols)] for i, n in enumerate(names)}


def _spread_sample(xy: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` cells spread over the embedding (one random cell per occupied grid tile)."""
    n = min(n, len(xy))
    side = max(1, int(np.ceil(np.sqrt(n * 2))))
    lo, hi = xy.min(0), xy.max(0)
    tile = np.floor((xy - lo) / np.maximum(hi - lo, 1e-12) * (side - 1e-9)).astype(int)
    key = tile[:, 0] * side + tile[:, 1]
    order = rng.permutation(len(xy))
    _, first = np.unique(key[order], return_index=True)
    chosen = order[first]
    if len(chosen) > n:
        chosen = rng.choice(chosen, size=n, replace=False)
    elif len(chosen) < n:
        rest = np.setdiff1d(np.arange(len(xy)), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=n - len(chosen), replace=False)])
    return np.sort(chosen)


def fate_donuts(
    adata,
    *,
    basis: str = "umap",
    n_donuts: int = 60,
    seed: int = 0,
    ax=None,
    key: str = "fate_probs",
    names: Sequence[str] | None = None,
    colors: dict[str, str] | Sequence[str] | None = None,
    radius: float = 0.03,
    hole: float = 0.5,
    cells: Sequence[str] | None = None,
    show_cells: bool = True,
    title: str | None = "Fate probabilities per cell",
    legend: bool = True,
    figsize: tuple[float, float] = (6.0, 5.5),
):
    """Draw fate-probability donuts for a subsample of cells on an embedding (article Fig. 1C).

    Used in chapters 09 and 10. Writes nothing into ``adata``.

    Parameters
    ----------
    adata
        Has ``.obsm[f"X_{basis}"]`` and ``.obsm[key]`` (cells × fates, rows summing to 1), e.g.
        after :func:`tflib.tl.fates`.
    basis
        Embedding to draw on (``"umap"`` reads ``.obsm["X_umap"]``; the first two dimensions).
    n_donuts
        Number of cells that get a donut, chosen spread out over the embedding.
    seed
        Chooses the cells; the same seed gives the same figure.
    ax
        Matplotlib axes to draw into; a new figure is made when ``None``.
    key, names
        Fate probabilities in ``.obsm[key]``; column names from ``names`` or
        ``.uns[f"{key}_names"]`` (a DataFrame's columns are used directly).
    colors
        Colour per fate (mapping or list); default a colour-blind-safe Okabe--Ito palette.
    radius
        Donut radius as a fraction of the larger side of the embedding.
    hole
        Fraction of the radius left empty in the middle.
    cells
        Explicit ``obs_names`` to draw instead of a subsample.
    show_cells
        Draw all cells as a light grey cloud underneath.
    title, legend, figsize
        Decoration.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Wedge

    obsm_key = basis if basis.startswith("X_") else f"X_{basis}"
    if obsm_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {obsm_key!r}: compute the embedding first (e.g. `scanpy.tl.umap(adata)`, "
            "which `tflib.tl.velocity(adata, umap=True)` does) or pass another basis."
        )
    if key not in adata.obsm:
        have = [k for k in adata.obsm.keys() if "fate" in k.lower()]
        raise KeyError(f"adata.obsm has no {key!r}: run `tflib.tl.fates(adata)` first"
                       + (f", or pass key= one of the fate tables present: {have}." if have else "."))
    probs = adata.obsm[key]
    if hasattr(probs, "columns"):  # a DataFrame, e.g. the simulator's true fate probabilities
        names = list(probs.columns) if names is None else names
        probs = probs.to_numpy()
    probs = np.asarray(probs, dtype=float)
    if names is None:
        names = adata.uns.get(f"{key}_names", [f"fate {i + 1}" for i in range(probs.shape[1])])
    names = [str(n) for n in names]
    if len(names) != probs.shape[1]:
        raise ValueError(f"{len(names)} names for {probs.shape[1]} columns of adata.obsm[{key!r}].")
    if colors is None:
        palette = fate_colors(names)
    elif isinstance(colors, dict):
        missing = [n for n in names if n not in colors]
        if missing:
            raise ValueError(f"colors has no entry for the fates {missing}; give one colour per fate of {names}.")
        palette = {n: colors[n] for n in names}
    else:
        colors = list(colors)
        if len(colors) < len(names):
            raise ValueError(f"{len(colors)} colors for {len(names)} fates {names}; give one colour per fate "
                             "(or colors=None for the course palette).")
        palette = dict(zip(names, colors))

    xy = np.asarray(adata.obsm[obsm_key])[:, :2].astype(float)
    rng = np.random.default_rng(seed)
    if cells is not None:
        idx = adata.obs_names.get_indexer(list(cells))
        if (idx < 0).any():
            raise KeyError("Some `cells` are not in adata.obs_names.")
    else:
        idx = _spread_sample(xy, n_donuts, rng)

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    span = float(np.max(xy.max(0) - xy.min(0))) or 1.0
    r = radius * span
    if show_cells:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, c=_CLOUD, linewidths=0, alpha=0.6, zorder=1, rasterized=True)
    rows = np.clip(probs[idx], 0.0, None)
    rows = rows / np.maximum(rows.sum(1, keepdims=True), 1e-12)
    for (x, y), p in zip(xy[idx], rows):
        start = 90.0
        for name, share in zip(names, p):
            if share <= 0:
                continue
            end = start + 360.0 * share
            ax.add_patch(
                Wedge((x, y), r, start, end, width=r * (1.0 - hole), facecolor=palette[name],
                      edgecolor="white", linewidth=0.3, zorder=3)
            )
            start = end
    pad = 1.5 * r
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_aspect("equal", adjustable="box")  # round donuts whatever the figure shape
    ax.set_xticks([])
    ax.set_yticks([])
    label = basis[2:] if basis.startswith("X_") else basis
    ax.set_xlabel(f"{label.upper()} 1")
    ax.set_ylabel(f"{label.upper()} 2")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    if legend:
        handles = [Patch(facecolor=palette[n], label=n) for n in names]
        ax.legend(handles=handles, title="fate", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
