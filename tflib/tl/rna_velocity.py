"""RNA velocity with scVelo 0.3: input checks, the standard pipeline and quality control.

Chapter 08 (RNA velocity) runs :func:`velocity` and :func:`velocity_qc`; chapters 09 and 10
start from what :func:`velocity` writes.

Every count is checked first (:func:`tflib.validation.check_counts`); :func:`velocity` then runs
scVelo on an internal copy and writes into ``adata`` only at the end, so a failure leaves
``adata`` untouched. Its docstring lists every key it writes; the main ones are
``.layers["Ms"|"Mu"|"velocity"]``, ``.uns["velocity_graph"]`` and ``.uns["tflib_velocity"]``.

:func:`velocity_qc` adds ``.obs["velocity_length"|"velocity_confidence"|
"velocity_confidence_transition"]`` and ``.uns["tflib_velocity_qc"]``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd

from tflib.validation import CountsError, check_zero_counts, zero_count_cells
from tflib.validation import check_counts as check_counts_full

__all__ = ["VelocityInputError", "VelocityCountsError", "velocity", "velocity_qc", "check_velocity_input"]

_LAYER_HINT = (
    "RNA velocity needs spliced and unspliced count matrices from a splice-aware quantifier "
    "(velocyto, alevin-fry with a USA index, kb-python `--workflow lamanno`/`nac`, STARsolo "
    "`--soloFeatures Velocyto`). For the course data use `tflib.datasets.load(\"pancreas\")` or "
    "`tflib.datasets.simulate(...)`, which both ship raw `spliced`/`unspliced` layers."
)


class VelocityInputError(ValueError):
    """The AnnData handed to :func:`velocity` cannot be used as it is (the message says why and what to do)."""


class VelocityCountsError(VelocityInputError, CountsError):
    """A spliced/unspliced layer is not raw counts (both a :class:`VelocityInputError` and a
    :class:`tflib.validation.CountsError`)."""


_COUNTS_ADVICE = (
    "Fix: put the raw spliced and unspliced counts (as velocyto, STARsolo or alevin-fry write them) in "
    "adata.layers['spliced'] and adata.layers['unspliced'], before any normalisation."
)
_COUNTS_HINT = (
    "scVelo normalises the spliced and unspliced layers itself, and normalising twice distorts the "
    "unspliced/spliced ratios that velocity is estimated from. If you are sure the layers were only "
    "size-normalised (not log-transformed), call `velocity(..., check_counts=False)`, which still refuses "
    "NaN, infinite and negative values."
)


def _is_counts(M) -> bool:
    """Whether every value of ``M`` is a finite non-negative integer (checked in full)."""
    try:
        check_counts_full(M)
    except CountsError:
        return False
    return True


def check_velocity_input(adata, *, check_counts: bool = True) -> str:
    """Raise :class:`VelocityInputError` unless ``adata`` has raw spliced/unspliced counts.

    Every value of both layers is checked (:func:`tflib.validation.check_counts`). Returns where
    the expression matrix for HVG/PCA will come from: ``"X"`` when ``.X`` holds raw counts,
    ``"spliced"`` when ``.X`` is missing or already processed (it is then replaced by the spliced
    counts). Used by :func:`velocity` (chapter 08).
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
    for key in ("spliced", "unspliced"):
        try:
            check_counts_full(adata, layer=key, require_integer=check_counts, advice=_COUNTS_ADVICE)
        except CountsError as err:
            message = str(err).replace("does not hold raw counts", "does not hold raw integer counts", 1)
            raise VelocityCountsError(f"{message} {_COUNTS_HINT}") from None
    if adata.X is not None and _is_counts(adata.X):
        return "X"
    return "spliced"


def _velocity_pipeline(adata, *, mode, n_neighbors, n_pcs, min_shared_counts, n_top_genes, genes, umap, seed,
                       n_jobs) -> dict:
    """Run scVelo on ``adata`` (modified in place: :func:`velocity` passes its copy). Returns the settings."""
    import scanpy as sc
    import scvelo as scv

    np.random.seed(seed)
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
    if "velocity_genes" not in adata.var:
        # scVelo writes no column for a flag that is the same for every gene; since it falls back to
        # the top 20 % by r2 when fewer than 2 genes qualify, a missing flag means every gene did.
        adata.var["velocity_genes"] = True
    n_velocity_genes = int(adata.var["velocity_genes"].sum())
    if n_velocity_genes == 0:
        raise VelocityInputError(
            "scVelo found no velocity genes (no gene fits the splicing model). Use more cells or genes, "
            "lower `min_shared_counts`, or check that the unspliced layer is not empty."
        )
    scv.tl.velocity_graph(adata, n_jobs=n_jobs, show_progress_bar=False)
    if umap and "X_umap" not in adata.obsm:
        sc.tl.umap(adata, random_state=seed)
    return {
        "mode": mode,
        "n_neighbors": int(n_neighbors),
        "n_pcs": n_comps,
        "min_shared_counts": int(min_shared_counts),
        "n_top_genes": -1 if n_top_genes is None else int(n_top_genes),
        "n_genes_in": int(n_genes_in),
        "n_genes_kept": int(adata.n_vars),
        "n_velocity_genes": n_velocity_genes,
        "n_dynamical_fits": -1 if fitted is None else fitted,
        "seed": int(seed),
        "scvelo_version": str(scv.__version__),
    }


def velocity(
    adata,
    *,
    mode: Literal["stochastic", "deterministic", "dynamical"] = "stochastic",
    n_neighbors: int = 30,
    n_pcs: int = 30,
    min_shared_counts: int = 20,
    n_top_genes: int | None = 2000,
    genes: Sequence[str] | None = None,
    umap: bool = True,
    check_counts: bool = True,
    on_zero_cells: str = "warn",
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

    Every value of both layers is checked before anything runs. The pipeline then works on an
    internal copy and writes the results into ``adata`` only when every step has succeeded, so a
    failed call leaves ``adata`` exactly as it was (at the cost of holding the data twice while
    it runs).

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
        ``True``: refuse layers that are not raw integer counts (see :class:`VelocityCountsError`).
        ``False``: accept size-normalised (non-integer) layers; NaN, infinite and negative values
        are refused either way.
    on_zero_cells
        Cells without a single spliced or unspliced count: ``"warn"`` (default) keeps them and
        says how many (their velocity carries no information: there is no expression to
        extrapolate); ``"raise"`` refuses. Cells are never dropped from ``adata``; to drop them
        first, call ``sc.pp.filter_cells(adata, min_counts=1)``. Layers without any count are refused.
    seed
        Random state for PCA, neighbours and UMAP; the same seed gives the same result.
    n_jobs
        Parallel jobs for scVelo's graph and dynamical fit.
    copy
        ``False`` (default): write the results into ``adata`` and return ``None``.
        ``True``: leave ``adata`` alone and return a new, processed AnnData.

    Returns
    -------
    The processed AnnData if ``copy=True``, else ``None``.

    Notes
    -----
    Keys written (on ``adata``, or on the returned AnnData when ``copy=True``):

    - ``.X`` (log1p of the normalised counts) and ``.layers["spliced"]``/``.layers["unspliced"]``
      (per-cell normalised, not log); genes are subset to those passing ``min_shared_counts``
      and to the ``n_top_genes`` highly variable ones, with ``.var["highly_variable"]`` and the
      per-gene statistics of scanpy's HVG selection (``.var["means"|"dispersions"|"dispersions_norm"]``);
    - ``.obs["initial_size"|"initial_size_spliced"|"initial_size_unspliced"|"n_counts"]``
      (scVelo's size factors) and ``.obs["velocity_self_transition"]`` (from the velocity graph);
    - ``.obsm["X_pca"]``, ``.varm["PCs"]``, ``.uns["pca"]``, ``.obsp["distances"|"connectivities"]``,
      ``.uns["neighbors"]``, ``.uns["log1p"]``, ``.uns["hvg"]``; ``.obsm["X_umap"]`` and
      ``.uns["umap"]`` when ``umap=True`` and no UMAP exists yet;
    - ``.layers["Ms"]``, ``.layers["Mu"]`` (first-order moments), ``.layers["velocity"]``,
      ``.layers["variance_velocity"]``, ``.var["velocity_genes"|"velocity_gamma"|"velocity_r2"|
      "velocity_qreg_ratio"]`` and ``.uns["velocity_params"]``;
    - dynamical mode only: ``.var["fit_*"]``, ``.layers["fit_t"|"fit_tau"|"fit_tau_"]``,
      ``.uns["recover_dynamics"]``;
    - ``.uns["velocity_graph"]``, ``.uns["velocity_graph_neg"]`` (the cosine-similarity graph;
      scVelo 0.3.4 keeps it in ``.uns``);
    - ``.uns["tflib_velocity"]``: the settings used, ``x_source`` and ``n_zero_count_cells``.

    Raises
    ------
    VelocityInputError
        Missing layers, or nothing left after gene filtering.
    VelocityCountsError
        (also a :class:`tflib.validation.CountsError`) a layer with NaN, infinite, negative or
        (with ``check_counts=True``) non-integer values, layers without any count, or zero-count
        cells with ``on_zero_cells="raise"``; the message names the first bad cell and gene
        and the fix.
    """
    if mode not in ("stochastic", "deterministic", "dynamical"):
        raise ValueError(f"mode must be 'stochastic', 'deterministic' or 'dynamical', not {mode!r}.")
    x_source = check_velocity_input(adata, check_counts=check_counts)
    zero = zero_count_cells(adata, layer="spliced") & zero_count_cells(adata, layer="unspliced")
    try:
        check_zero_counts(adata, layer="spliced", name="adata.layers['spliced'] and ['unspliced']", mask=zero,
                          on_zero_cells=on_zero_cells, stacklevel=2,
                          consequence="They are kept, but their velocity carries no information.")
    except CountsError as err:
        raise VelocityCountsError(str(err)) from None

    work = adata.copy()  # every step below runs on the copy; adata changes only at the very end
    if x_source == "spliced":
        work.X = work.layers["spliced"].copy()
    settings = _velocity_pipeline(work, mode=mode, n_neighbors=n_neighbors, n_pcs=n_pcs,
                                  min_shared_counts=min_shared_counts, n_top_genes=n_top_genes, genes=genes,
                                  umap=umap, seed=seed, n_jobs=n_jobs)
    settings.update(x_source=x_source, n_zero_count_cells=int(zero.sum()))
    work.uns["tflib_velocity"] = settings
    if copy:
        return work
    adata._init_as_actual(work)  # the write-back: adata takes over the processed object's contents
    return None


def velocity_qc(adata, *, groupby: str | None = None) -> pd.DataFrame:
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
