"""RNA velocity with scVelo 0.3: input checks, the standard pipeline and quality control.

Chapter 08 (RNA velocity) runs :func:`velocity` and :func:`velocity_qc`; chapters 09 and 10
start from what :func:`velocity` writes.

Keys written by :func:`velocity` (on ``adata`` itself, or on the copy when ``copy=True``):

- ``.layers["spliced"]``, ``.layers["unspliced"]``: normalised in place by scVelo (per-cell size
  factors; *not* log-transformed). ``.X`` becomes log1p of the normalised counts.
- ``.var["highly_variable"]`` and genes subset to the highly variable ones (``n_top_genes``).
- ``.obsm["X_pca"]``, ``.obsp["distances"/"connectivities"]``, ``.uns["neighbors"]``;
  ``.obsm["X_umap"]`` when ``umap=True`` and no UMAP exists yet.
- ``.layers["Ms"]``, ``.layers["Mu"]``: first-order moments (kNN-smoothed abundances).
- ``.layers["velocity"]`` and ``.var["velocity_genes"|"velocity_gamma"|"velocity_r2"|...]``.
- dynamical mode only: ``.var["fit_*"]``, ``.layers["fit_t"|"fit_tau"|...]``,
  ``.uns["recover_dynamics"]``.
- ``.uns["velocity_graph"]``, ``.uns["velocity_graph_neg"]``: the cosine-similarity graph
  (scVelo 0.3.4 keeps it in ``.uns``; files written by other versions may have it in ``.obsp``).
- ``.uns["tflib_velocity"]``: the settings used (a plain dict, safe for ``write_h5ad``).

:func:`velocity_qc` adds ``.obs["velocity_length"|"velocity_confidence"|
"velocity_confidence_transition"]`` and ``.uns["tflib_velocity_qc"]``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["VelocityInputError", "velocity", "velocity_qc", "check_velocity_input"]

_LAYER_HINT = (
    "RNA velocity needs spliced and unspliced count matrices from a splice-aware quantifier "
    "(velocyto, alevin-fry with a USA index, kb-python `--workflow lamanno`/`nac`, STARsolo "
    "`--soloFeatures Velocyto`). For the course data use `tflib.datasets.load(\"pancreas\")` or "
    "`tflib.datasets.simulate(...)`, which both ship raw `spliced`/`unspliced` layers."
)


class VelocityInputError(ValueError):
    """The AnnData handed to :func:`velocity` cannot be used as it is (the message says why and what to do)."""


def _sample_values(X, n_rows: int = 300) -> np.ndarray:
    """Nonzero values of the first ``n_rows`` rows (enough to tell counts from normalised data)."""
    block = X[: min(n_rows, X.shape[0])]
    if sp.issparse(block):
        return np.asarray(block.data)
    block = np.asarray(block)
    return block[block != 0]


def _looks_like_counts(X) -> bool:
    vals = _sample_values(X)
    if vals.size == 0:
        return True
    if not np.all(np.isfinite(vals)) or np.any(vals < 0):
        return False
    return bool(np.allclose(vals, np.round(vals), atol=1e-6))


def check_velocity_input(adata, *, check_counts: bool = True) -> str:
    """Raise :class:`VelocityInputError` unless ``adata`` has raw spliced/unspliced counts.

    Returns where the expression matrix for HVG/PCA will come from: ``"X"`` when ``.X`` holds raw
    counts, ``"spliced"`` when ``.X`` is missing or already processed (it is then replaced by the
    spliced counts). Used by :func:`velocity` (chapter 08).
    """
    missing = [key for key in ("spliced", "unspliced") if key not in adata.layers]
    if missing:
        have = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise VelocityInputError(
            f"adata.layers has no {' or '.join(repr(m) for m in missing)} layer (layers present: {have}). "
            + _LAYER_HINT
        )
    if adata.layers["spliced"].shape != adata.layers["unspliced"].shape:
        raise VelocityInputError("The 'spliced' and 'unspliced' layers have different shapes.")
    if check_counts:
        for key in ("spliced", "unspliced"):
            if not _looks_like_counts(adata.layers[key]):
                raise VelocityInputError(
                    f"adata.layers[{key!r}] does not hold raw integer counts (non-integer or negative values "
                    "found): it looks normalised or log-transformed already. scVelo normalises the spliced and "
                    "unspliced layers itself, and normalising twice distorts the unspliced/spliced ratios that "
                    "velocity is estimated from. Pass the raw counts (e.g. reload the data, or restore them from "
                    "a counts layer), or call `velocity(..., check_counts=False)` if you are sure the layers "
                    "were only size-normalised and not log-transformed."
                )
    if adata.X is not None and _looks_like_counts(adata.X):
        return "X"
    return "spliced"


def velocity(
    adata,
    mode: Literal["stochastic", "deterministic", "dynamical"] = "stochastic",
    *,
    n_neighbors: int = 30,
    n_pcs: int = 30,
    min_shared_counts: int = 20,
    n_top_genes: int | None = 2000,
    genes: Sequence[str] | None = None,
    umap: bool = True,
    check_counts: bool = True,
    seed: int = 0,
    n_jobs: int = 1,
    copy: bool = False,
):
    """Estimate RNA velocity with scVelo (stochastic by default, dynamical optional).

    The pipeline (chapter 08) is the one recommended for scVelo 0.3:
    ``scv.pp.filter_and_normalize`` (gene filter and per-cell normalisation of ``X`` and both
    layers) → ``log1p`` → highly variable genes with scanpy (scVelo 0.3 no longer selects them)
    → PCA and kNN graph with scanpy → ``scv.pp.moments`` → (``scv.tl.recover_dynamics`` for
    ``mode="dynamical"``) → ``scv.tl.velocity`` → ``scv.tl.velocity_graph``.

    Parameters
    ----------
    adata
        AnnData with raw integer counts in ``.layers["spliced"]`` and ``.layers["unspliced"]``.
        If ``.X`` does not hold raw counts it is replaced by the spliced counts.
    mode
        ``"stochastic"`` (default, the steady-state model with second moments),
        ``"deterministic"`` (the steady-state model of La Manno et al.) or ``"dynamical"``
        (the likelihood-based splicing kinetics; slow, see ``genes``).
    n_neighbors, n_pcs
        kNN graph used for the moments and the velocity graph.
    min_shared_counts
        Genes need at least this many counts in both spliced and unspliced.
    n_top_genes
        Highly variable genes kept (scanpy ``flavor="seurat"`` on log data). ``None`` or a
        number ≥ the number of genes keeps all genes.
    genes
        Dynamical mode only: fit the kinetics on these genes (others get no velocity). Default:
        scVelo's velocity genes. A few dozen genes keep the fit within a notebook's budget.
    umap
        Compute ``.obsm["X_umap"]`` if it is missing (needed by the stream and donut plots).
    check_counts
        Refuse layers that are not raw integer counts (see :class:`VelocityInputError`).
    seed
        Random state for PCA, neighbours and UMAP; the same seed gives the same result.
    n_jobs
        Parallel jobs for scVelo's graph and dynamical fit.
    copy
        Work on and return a copy instead of modifying ``adata``.

    Returns
    -------
    The processed copy if ``copy=True``, else ``None``. The keys written are listed in the
    module docstring.

    Raises
    ------
    VelocityInputError
        Missing layers, non-count layers, or nothing left after gene filtering.
    """
    import scanpy as sc
    import scvelo as scv

    if mode not in ("stochastic", "deterministic", "dynamical"):
        raise ValueError(f"mode must be 'stochastic', 'deterministic' or 'dynamical', not {mode!r}.")
    x_source = check_velocity_input(adata, check_counts=check_counts)
    adata = adata.copy() if copy else adata
    np.random.seed(seed)
    if x_source == "spliced":
        adata.X = adata.layers["spliced"].copy()
    for key in ("spliced", "unspliced"):  # scVelo normalises in place and needs floats
        adata.layers[key] = adata.layers[key].astype(np.float32)
    adata.X = adata.X.astype(np.float32)

    n_genes_in = adata.n_vars
    scv.pp.filter_and_normalize(adata, min_shared_counts=min_shared_counts)
    if adata.n_vars < 2:
        raise VelocityInputError(
            f"Only {adata.n_vars} of {n_genes_in} genes have at least min_shared_counts={min_shared_counts} "
            "spliced and unspliced counts. Lower `min_shared_counts` (e.g. 5) or use deeper data."
        )
    sc.pp.log1p(adata)
    if n_top_genes is not None and n_top_genes < adata.n_vars:
        sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat", subset=True)
    else:
        adata.var["highly_variable"] = True

    n_comps = int(min(n_pcs, adata.n_vars - 1, adata.n_obs - 1))
    sc.tl.pca(adata, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, n_pcs=n_comps, random_state=seed)
    scv.pp.moments(adata, n_pcs=None, n_neighbors=None)

    fitted = None
    if mode == "dynamical":
        var_names = "velocity_genes" if genes is None else [g for g in genes if g in adata.var_names]
        if genes is not None and not var_names:
            raise VelocityInputError(
                "None of the requested `genes` survived filtering and HVG selection; pick genes from "
                "adata.var_names after filtering, or raise `n_top_genes` / lower `min_shared_counts`."
            )
        scv.tl.recover_dynamics(adata, var_names=var_names, n_jobs=n_jobs, show_progress_bar=False)
        fitted = int(np.isfinite(adata.var["fit_alpha"]).sum())
    scv.tl.velocity(adata, mode=mode)
    n_velocity_genes = int(adata.var["velocity_genes"].sum())
    if n_velocity_genes == 0:
        raise VelocityInputError(
            "scVelo found no velocity genes (no gene fits the splicing model). Use more cells or genes, "
            "lower `min_shared_counts`, or check that the unspliced layer is not empty."
        )
    scv.tl.velocity_graph(adata, n_jobs=n_jobs, show_progress_bar=False)
    if umap and "X_umap" not in adata.obsm:
        sc.tl.umap(adata, random_state=seed)

    adata.uns["tflib_velocity"] = {
        "mode": mode,
        "n_neighbors": int(n_neighbors),
        "n_pcs": n_comps,
        "min_shared_counts": int(min_shared_counts),
        "n_top_genes": -1 if n_top_genes is None else int(n_top_genes),
        "n_genes_in": int(n_genes_in),
        "n_genes_kept": int(adata.n_vars),
        "n_velocity_genes": n_velocity_genes,
        "n_dynamical_fits": -1 if fitted is None else fitted,
        "x_source": x_source,
        "seed": int(seed),
        "scvelo_version": str(scv.__version__),
    }
    return adata if copy else None


def velocity_qc(adata, groupby: str | None = None) -> pd.DataFrame:
    """Per-cell velocity quality scores and their summary (chapter 08).

    Runs ``scv.tl.velocity_confidence`` and ``scv.tl.velocity_confidence_transition``, which add

    - ``.obs["velocity_length"]``: the speed, the norm of the (centred) velocity vector;
    - ``.obs["velocity_confidence"]``: the *coherence* of the velocity field, the mean
      correlation of a cell's velocity with its neighbours' velocities (0--1; high = smooth flow);
    - ``.obs["velocity_confidence_transition"]``: how well the velocity points where the
      velocity graph sends the cell (correlation of the velocity with the expected displacement).

    Parameters
    ----------
    adata
        Output of :func:`velocity`.
    groupby
        Optional ``.obs`` column (e.g. clusters) to summarise per group as well.

    Returns
    -------
    A DataFrame with one row per group (plus ``"all"``): number of cells, the median length,
    the mean and median coherence, the fraction of cells with coherence above 0.5, and the
    mean transition confidence. It is also stored in ``.uns["tflib_velocity_qc"]`` as a dict.
    """
    import scvelo as scv

    if "velocity" not in adata.layers or not ("velocity_graph" in adata.obsp or "velocity_graph" in adata.uns):
        raise ValueError("No velocity found: run `tflib.tl.velocity(adata)` first.")
    scv.tl.velocity_confidence(adata)
    scv.tl.velocity_confidence_transition(adata)
    obs = adata.obs[["velocity_length", "velocity_confidence", "velocity_confidence_transition"]].copy()

    def _summary(frame: pd.DataFrame) -> dict:
        conf = frame["velocity_confidence"]
        return {
            "n_cells": int(len(frame)),
            "median_length": float(frame["velocity_length"].median()),
            "mean_coherence": float(conf.mean()),
            "median_coherence": float(conf.median()),
            "frac_coherence_gt_0.5": float((conf > 0.5).mean()),
            "mean_transition_confidence": float(frame["velocity_confidence_transition"].mean()),
        }

    rows = {"all": _summary(obs)}
    if groupby is not None:
        if groupby not in adata.obs:
            raise KeyError(f"adata.obs has no column {groupby!r} to group the QC by.")
        for name, frame in obs.groupby(adata.obs[groupby].astype(str), sort=True):
            rows[str(name)] = _summary(frame)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = groupby or "group"
    adata.uns["tflib_velocity_qc"] = {k: {c: float(v) for c, v in r.items()} for k, r in rows.items()}
    return table
