"""Velocity plots: phase portraits of chosen genes and the velocity stream on an embedding (chapter 08).

Both return a Matplotlib ``Figure`` so that notebooks can ``glue`` them and tests can render
them with the Agg backend.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["phase_portraits", "velocity_stream"]

_OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000")


def _dense_col(M, j: int) -> np.ndarray:
    col = M[:, j]
    return np.asarray(col.todense() if hasattr(col, "todense") else col).ravel().astype(float)


def _category_colors(adata, key: str) -> tuple[list[str], dict[str, str]]:
    """Colour per cell and per category: ``.uns[f"{key}_colors"]`` when present (as scanpy and
    scVelo plots use), else Okabe--Ito in category order (tab20 beyond eight categories)."""
    import pandas as pd

    values = adata.obs[key]
    cats = values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else pd.Categorical(values).categories
    names = [str(c) for c in cats]
    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) == len(names):
        table = dict(zip(names, (str(c) for c in stored)))
    elif len(names) <= len(_OKABE_ITO):
        table = dict(zip(names, _OKABE_ITO))
    else:
        import matplotlib as mpl

        cmap = mpl.colormaps["tab20"]
        table = {n: mpl.colors.to_hex(cmap(i % 20)) for i, n in enumerate(names)}
    return [table.get(str(v), "#BDBDBD") for v in values.astype(str)], table


def phase_portraits(
    adata,
    genes: Sequence[str] | str,
    *,
    color: str | None = None,
    ncols: int = 3,
    use_moments: bool = True,
    size: float = 8.0,
    panel_size: float = 3.0,
):
    """Unspliced against spliced abundance for each gene, with the fitted steady-state line.

    A gene whose cells lie above the line (more unspliced than steady state predicts) is being
    induced there: positive velocity; below the line, repressed: negative velocity. Used in
    chapter 08. Writes nothing into ``adata``.

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.velocity`.
    genes
        Gene name(s) from ``adata.var_names``.
    color
        ``.obs`` column to colour cells by (categorical: colour-blind-safe palette and legend;
        numeric: viridis with a colour bar).
    ncols
        Panels per row.
    use_moments
        Plot the kNN-smoothed ``Ms``/``Mu`` (what scVelo fits) rather than the normalised layers.
    size, panel_size
        Marker size and panel edge in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise KeyError(f"Genes {missing} are not in adata.var_names (after velocity's gene filtering).")
    skey, ukey = ("Ms", "Mu") if use_moments else ("spliced", "unspliced")
    for k in (skey, ukey):
        if k not in adata.layers:
            raise KeyError(f"adata.layers has no {k!r}: run `tflib.tl.velocity(adata)` first.")

    colours, table, numeric = "#4D4D4D", None, False
    if color is not None:
        if color not in adata.obs:
            raise KeyError(f"adata.obs has no column {color!r}.")
        values = adata.obs[color]
        numeric = values.dtype.kind in "fiu"
        if numeric:
            colours = values.to_numpy(dtype=float)
        else:
            colours, table = _category_colors(adata, color)

    ncols = max(1, min(ncols, len(genes)))
    nrows = int(np.ceil(len(genes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    mappable, drew_line = None, False
    for ax, gene in zip(axes.ravel(), genes):
        j = int(adata.var_names.get_loc(gene))
        s, u = _dense_col(adata.layers[skey], j), _dense_col(adata.layers[ukey], j)
        mappable = ax.scatter(s, u, s=size, c=colours, cmap="viridis" if numeric else None,
                              linewidths=0, alpha=0.8, rasterized=True)
        gamma = adata.var["velocity_gamma"].iloc[j] if "velocity_gamma" in adata.var else np.nan
        if np.isfinite(gamma):
            offset = adata.var["velocity_offset"].iloc[j] if "velocity_offset" in adata.var else 0.0
            offset = 0.0 if not np.isfinite(offset) else offset
            xs = np.linspace(0, np.nanmax(s) if np.nanmax(s) > 0 else 1.0, 50)
            ax.plot(xs, gamma * xs + offset, color="#000000", linestyle="--", linewidth=1.2)
            drew_line = True
        is_vgene = bool(adata.var["velocity_genes"].iloc[j]) if "velocity_genes" in adata.var else True
        ax.set_title(gene if is_vgene else f"{gene} (not a velocity gene)", fontsize=10)
        ax.set_xlabel("spliced" + (" (Ms)" if use_moments else ""))
        ax.set_ylabel("unspliced" + (" (Mu)" if use_moments else ""))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in axes.ravel()[len(genes):]:
        ax.set_visible(False)
    # The steady-state line exists only after a steady-state/stochastic fit (not after dynamical).
    handles = [Line2D([], [], color="#000000", linestyle="--", label="steady state (u = γ s)")] if drew_line else []
    if table:
        handles += [Line2D([], [], marker="o", linestyle="", color=c, label=n) for n, c in table.items()]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               title=color if table else None)
    if numeric and mappable is not None:
        fig.colorbar(mappable, ax=axes.ravel().tolist(), label=color, shrink=0.8)
    else:
        fig.tight_layout()
    return fig


def velocity_stream(
    adata,
    *,
    basis: str = "umap",
    color: str | None = None,
    ax=None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 5.0),
    **kwargs,
):
    """Streamlines of the velocity field projected on an embedding (scVelo's stream plot).

    Wraps ``scv.pl.velocity_embedding_stream``, which projects the velocity graph onto the
    embedding (``.obsm[f"velocity_{basis}"]``, computed if missing) and draws streamlines. The
    projection is a visual summary: chapter 08 shows where it misleads.

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.velocity` with ``.obsm[f"X_{basis}"]``.
    basis
        Embedding (``"umap"``, ``"pca"``, ...).
    color
        ``.obs`` column or gene to colour the cells by.
    ax
        Axes to draw into; a new figure when ``None``.
    title, figsize
        Decoration.
    **kwargs
        Passed to ``scv.pl.velocity_embedding_stream`` (e.g. ``density``, ``palette``).

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Keys written (by scVelo, as a cache for later plots): ``obsm[f"velocity_{basis}"]`` when it
    was missing, and ``uns[f"{color}_colors"]`` when ``color`` is a categorical column without
    colours yet.
    """
    import matplotlib.pyplot as plt
    import scvelo as scv

    if f"X_{basis}" not in adata.obsm:
        raise KeyError(f"adata.obsm has no 'X_{basis}': compute the embedding first (e.g. scanpy.tl.{basis}).")
    if "velocity_graph" not in adata.obsp and "velocity_graph" not in adata.uns:
        raise KeyError("No velocity graph: run `tflib.tl.velocity(adata)` first.")
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    if (
        color is not None
        and "palette" not in kwargs
        and color in adata.obs
        and adata.obs[color].dtype.kind not in "fiu"
        and f"{color}_colors" not in adata.uns
    ):  # no colours chosen yet: colour-blind-safe ones (scVelo stores them in .uns for later plots)
        n_cat = adata.obs[color].astype("category").cat.categories.size
        if n_cat <= len(_OKABE_ITO):
            kwargs["palette"] = list(_OKABE_ITO[:n_cat])
    kwargs.setdefault("legend_loc", "right margin")
    scv.pl.velocity_embedding_stream(adata, basis=basis, color=color, ax=ax, show=False,
                                     title=title if title is not None else "", **kwargs)
    return fig
