"""Fate probabilities with CellRank 2: kernels, GPCCA macrostates, terminal states (chapter 09).

Chapter 09 (fate mapping) runs :func:`fates` after :func:`tflib.tl.velocity`; chapter 10 compares
its output with the Transcriptformer-based kernels.

Keys written by :func:`fates` (``key_added="fate_probs"`` by default):

- ``.obsm[key_added]``: cells × terminal states, a plain ``float64`` NumPy array whose rows
  sum to 1 (CellRank's ``Lineage`` converted, because ``write_h5ad`` fails on ``Lineage``).
- ``.uns[key_added + "_names"]``: its column names (the terminal states).
- ``.uns[key_added + "_colors"]``: CellRank's colour per terminal state (plots may use their own).
- ``.obs["macrostate"]``, ``.obs["terminal_state"]``: categorical; cells that belong to no
  macrostate / terminal state are ``NaN``. Only the ``n_cells`` most typical cells of a state
  carry its label. ``.obs["initial_state"]`` likewise, with ``n_initial >= 1``.
- ``.uns["tflib_fates"]``: settings and diagnostics (weights, number of macrostates, the
  stability and coarse inflow/outflow of each macrostate, the terminal states, how they were
  chosen, the :class:`~tflib.tl.fate_checks.FateWarning` kinds raised, versions).

The input checks and the diagnostics live in :mod:`tflib.tl.fate_checks`. A failed call leaves
``adata`` as it was (CellRank's partial writes are rolled back).

- CellRank's own keys, kept so that ``cellrank.estimators.GPCCA.from_adata(adata,
  obsp_key="T_fwd")`` rebuilds the estimator (and :func:`tflib.tl.fate_drivers` works after a
  reload): ``.obsp["T_fwd"]``, ``.obs["macrostates_fwd"|"term_states_fwd"|...]``,
  ``.obsm["lineages_fwd"|"macrostates_fwd_memberships"|...]`` (as plain arrays) and their
  ``.uns`` entries.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import warnings
from typing import Any

import numpy as np
import pandas as pd

from tflib._compat import renamed_kwargs
from tflib.tl import fate_checks as checks
from tflib.tl.fate_checks import DisconnectedGraphError, FateWarning, NoTerminalStateError

__all__ = ["DisconnectedGraphError", "FateWarning", "NoTerminalStateError", "fates", "fate_probs_frame"]


def _next_steps(n_states_used: int | None, velocity_weight: float, cluster_key: str | None, bar: str | None) -> str:
    """The settings to try next; ``bar`` is a stability threshold computed from the observed stabilities."""
    more = f"n_states={n_states_used + 1}" if n_states_used else "a larger n_states"
    vw = 0.5 if velocity_weight > 0.5 else 0.8
    lower = (
        f"stability_threshold={bar} (the most stable remaining macrostate passes it)"
        if bar is not None
        else "a lower stability_threshold (no valid stability lies below the current one)"
    )
    clusters = (
        f"terminal_states={{'<fate>': '<label in adata.obs[{cluster_key!r}]>', ...}}"
        if cluster_key
        else "cluster_key='<obs column>' with terminal_states=['<cluster label>', ...]"
    )
    return (
        "Settings to try next: (1) more macrostates, e.g. " + more + " (macrostates split and "
        "stable end points separate from transient ones); (2) a lower stability bar, e.g. "
        f"{lower}, or n_terminal=<number of fates> to keep the most stable "
        "macrostates; (3) a different kernel mix, e.g. velocity_weight=" + f"{vw}, "
        f"connectivity_weight={1 - vw:.1f}; (4) give the terminal states by cluster: " + clusters + "."
    )


def _plain(x) -> np.ndarray:
    """A CellRank ``Lineage`` (or anything array-like) as a plain float64 ``ndarray``."""
    return np.array(np.asarray(x), dtype=np.float64)


def _delineage(adata) -> None:
    """Replace every ``Lineage`` CellRank left in ``.obsm`` by a plain array (``write_h5ad`` needs it)."""
    from cellrank import Lineage

    for key in list(adata.obsm.keys()):
        if isinstance(adata.obsm[key], Lineage):
            adata.obsm[key] = _plain(adata.obsm[key])


@renamed_kwargs(key="key_added")
def fates(
    adata,
    *,
    velocity_weight: float = 0.8,
    connectivity_weight: float = 0.2,
    n_states: int | Sequence[int] | None = None,
    terminal_states: Sequence[str] | Mapping[str, Any] | str | None = None,
    cluster_key: str | None = None,
    n_cells: int = 30,
    n_terminal: int | None = None,
    n_initial: int = 0,
    stability_threshold: float = 0.96,
    use_petsc: bool = False,
    solver: str = "gmres",
    tol: float = 1e-6,
    softmax_scale: float | None = None,
    seed: int = 0,
    kernel=None,
    key_added: str = "fate_probs",
    verbose: bool = False,
):
    """Fate probabilities with CellRank 2: velocity + connectivity kernel, GPCCA, terminal states.

    The transition matrix is ``velocity_weight * VelocityKernel(model="deterministic") +
    connectivity_weight * ConnectivityKernel``. GPCCA coarse-grains the chain into macrostates;
    terminal states are predicted (macrostates whose probability of staying, the diagonal of
    the coarse transition matrix, is at least ``stability_threshold``; or the ``n_terminal``
    most stable ones) or given by the caller; CellRank then solves for the probability that a
    random walk from each cell is absorbed in each terminal state (chapter 09; chapter 10 runs
    it on a Transcriptformer kernel).

    Checked before the slow part: the cell graph is connected (else
    :class:`~tflib.tl.fate_checks.DisconnectedGraphError`, with the component sizes), the
    numbers of states and cells are possible, ``cluster_key`` exists. Checked after GPCCA, with a
    :class:`~tflib.tl.fate_checks.FateWarning`: a terminal state where the flow starts (coarse
    inflow far below outflow, e.g. a self-renewing progenitor pool), clusters that no terminal
    state represents but that one absorbs almost entirely, fewer terminal states than
    ``n_terminal``. Stabilities outside [0, 1] (tiny data) are refused when terminal states are
    predicted from them. A failed call leaves ``adata`` as it was.

    Parameters
    ----------
    adata
        Output of :func:`tflib.tl.velocity` (needs ``.layers["velocity"]``, ``.layers["Ms"]`` and
        the kNN graph).
    velocity_weight, connectivity_weight
        Non-negative weights of the two kernels (CellRank normalises their sum).
    n_states
        Number of macrostates; ``None`` picks it from the eigengap of the transition matrix; a
        pair ``(min, max)`` uses the minChi criterion. One more than the expected number of fates
        usually works well.
    terminal_states
        ``None`` (predict them), a list of macrostate names (as in ``.obs["macrostate"]``), a list
        of cluster labels of ``cluster_key`` or a mapping ``{state name: cluster label(s)}``; a
        cluster-given state uses all cells of those clusters as its end point. A list whose names
        are all macrostates is read as macrostates (their ``n_cells`` most typical cells), even
        when clusters carry the same names; the mapping form always means whole clusters.
    cluster_key
        ``.obs`` column used to name macrostates after clusters, to resolve cluster labels and to
        check that every annotated fate has a terminal state of its own.
    n_cells
        Cells per macrostate/terminal state (the most typical ones by membership); at most
        ``n_obs // n_states``.
    n_terminal
        Keep this many (>= 1) of the most stable macrostates as terminal states instead of the
        stability threshold.
    n_initial
        Exclude this many macrostates from the terminal candidates: those with the smallest coarse
        stationary probability (CellRank's initial-state heuristic), written to
        ``.obs["initial_state"]``. Use 1 when a self-renewing progenitor pool is itself a stable
        macrostate (as in the course simulator); it would otherwise pass as a terminal state, and
        a :class:`~tflib.tl.fate_checks.FateWarning` says so.
    stability_threshold
        Minimum self-transition probability of a terminal macrostate (``n_terminal=None``).
    use_petsc, solver, tol
        Passed to ``compute_fate_probabilities``; the default avoids needing PETSc.
    softmax_scale
        Velocity kernel's softmax scale; ``None`` estimates it as CellRank does (one over the
        median absolute logit).
    seed
        Seeds NumPy and CellRank; the same seed and input give the same probabilities.
    kernel
        A CellRank kernel with a computed transition matrix, built on ``adata`` itself, e.g. the
        Transcriptformer kernel of :func:`tflib.tl.embedding_kernel` (chapter 10). When given,
        the velocity checks and the kernel building are skipped (``velocity_weight``,
        ``connectivity_weight`` and ``softmax_scale`` are ignored) and the same GPCCA, terminal
        state and fate steps run on it.
    key_added
        Name of the fate-probability matrix in ``.obsm`` (and prefix of its ``.uns`` names and
        colours). ``key=`` is accepted for one release.
    verbose
        Show CellRank's progress bars and its notices about PETSc (missing PETSc is expected with
        ``use_petsc=False``); other CellRank warnings are always shown.

    Returns
    -------
    cellrank.estimators.GPCCA
        The fitted estimator (for plots, ``coarse_T`` and :func:`tflib.tl.fate_drivers`): the verb
        works in place on ``adata`` and returns the model, like ``scvi_integrate``. Keys written:

        - ``.obsm[key_added]``: cells × terminal states, float64, rows sum to 1;
        - ``.uns[key_added + "_names"]``, ``.uns[key_added + "_colors"]``;
        - ``.obs["macrostate"]``, ``.obs["terminal_state"]`` (categorical, NaN outside the
          ``n_cells`` most typical cells), ``.obs["initial_state"]`` (with ``n_initial``);
        - ``.uns["tflib_fates"]``: settings and diagnostics (stabilities, coarse inflow/outflow,
          warnings raised, versions);
        - CellRank's own keys (``.obsp["T_fwd"]``, ``.obs``/``.obsm``/``.uns`` entries ending in
          ``_fwd``), see the module docstring.

    Raises
    ------
    NoTerminalStateError
        No macrostate qualifies as terminal, requested states match nothing, or the stabilities
        are not probabilities. The message names the settings to try next.
    DisconnectedGraphError
        The kNN graph (or the kernel) has several connected components.
    ValueError, KeyError
        Impossible numbers of states or cells, or an unknown ``cluster_key`` (CellRank's own
        errors of this kind are re-raised naming tflib's parameters).
    """
    import cellrank as cr

    if kernel is not None:
        checks.check_kernel(kernel, adata)
    elif "velocity" not in adata.layers or "Ms" not in adata.layers or "connectivities" not in adata.obsp:
        raise ValueError(
            "fates needs RNA velocity and a kNN graph (layers 'velocity' and 'Ms', obsp 'connectivities'): "
            "run `tflib.tl.velocity(adata)` first."
        )
    if kernel is None and (velocity_weight < 0 or connectivity_weight < 0
                           or velocity_weight + connectivity_weight <= 0):
        raise ValueError("velocity_weight and connectivity_weight must be >= 0 and not both 0.")
    checks.check_counts(n_states=n_states, n_terminal=n_terminal, n_initial=n_initial, n_cells=n_cells,
                        stability_threshold=stability_threshold, n_obs=adata.n_obs)
    checks.check_cluster_key(adata, cluster_key)
    checks.check_connected(adata, kernel)
    checks.check_requested_states(adata, terminal_states, cluster_key)

    with checks.rollback_on_error(adata), checks.quiet_cellrank(verbose):
        try:
            return _run_fates(
                cr, adata, velocity_weight=velocity_weight, connectivity_weight=connectivity_weight,
                n_states=n_states, terminal_states=terminal_states, cluster_key=cluster_key, n_cells=n_cells,
                n_terminal=n_terminal, n_initial=n_initial, stability_threshold=stability_threshold,
                use_petsc=use_petsc, solver=solver, tol=tol, softmax_scale=softmax_scale, seed=seed,
                kernel=kernel, key_added=key_added, verbose=verbose,
            )
        except (ValueError, KeyError) as err:
            if isinstance(err, NoTerminalStateError):
                raise
            better = checks.translate_cellrank_error(err, n_cells=n_cells, cluster_key=cluster_key, n_states=n_states)
            if better is None:
                raise
            raise better from err


def _velocity_kernel(cr, adata, softmax_scale, seed, verbose):
    """CellRank's deterministic velocity kernel; the softmax scale is estimated without a progress bar."""
    vk = cr.kernels.VelocityKernel(adata)
    if softmax_scale is None:  # CellRank's estimate (1 / median |logit| at scale 1), computed quietly
        vk.compute_transition_matrix(model="deterministic", softmax_scale=1.0, seed=seed,
                                     show_progress_bar=verbose)
        logits = vk.logits
        softmax_scale = 1.0 / float(np.median(np.abs(logits.data if hasattr(logits, "data") else logits)))
    return vk.compute_transition_matrix(model="deterministic", softmax_scale=softmax_scale, seed=seed,
                                        show_progress_bar=verbose)


def _run_fates(cr, adata, *, velocity_weight, connectivity_weight, n_states, terminal_states, cluster_key,
               n_cells, n_terminal, n_initial, stability_threshold, use_petsc, solver, tol, softmax_scale,
               seed, kernel, key_added, verbose):
    np.random.seed(seed)
    given = kernel is not None
    kernels = []
    if velocity_weight > 0 and not given:
        kernels.append(velocity_weight * _velocity_kernel(cr, adata, softmax_scale, seed, verbose))
    if connectivity_weight > 0 and not given:
        ck = cr.kernels.ConnectivityKernel(adata).compute_transition_matrix()
        kernels.append(connectivity_weight * ck)
    if not given:
        kernel = kernels[0] if len(kernels) == 1 else kernels[0] + kernels[1]
        kernel = kernel.compute_transition_matrix() if len(kernels) > 1 else kernel
    kernel.write_to_adata()  # .obsp["T_fwd"]: lets GPCCA.from_adata rebuild the estimator

    g = cr.estimators.GPCCA(kernel)
    g.fit(n_states=n_states, cluster_key=cluster_key, n_cells=n_cells)
    n_macro = len(g.macrostates.cat.categories)
    if g.coarse_T is not None:
        stability = {str(k): float(v) for k, v in zip(g.coarse_T.columns, np.diag(g.coarse_T))}
        balance = checks.flow_balance(g.coarse_T)
    else:  # a single macrostate (CellRank uses the stationary distribution): it cannot be left
        stability = {str(k): 1.0 for k in g.macrostates.cat.categories}
        balance = pd.DataFrame({"inflow": 0.0, "outflow": 0.0}, index=list(stability))
    checks.check_stabilities(stability, predicting=terminal_states is None, n_obs=adata.n_obs, n_macro=n_macro)
    hint = _next_steps(n_macro, velocity_weight, cluster_key,
                      checks.suggest_threshold(stability.values(), below=stability_threshold))

    initial: list[str] = []
    if n_initial and n_macro > 1:
        g.predict_initial_states(n_states=int(n_initial), n_cells=n_cells)
        initial = [str(c) for c in g.initial_states.cat.categories]
    issues: list[str] = []
    origins: list[str] = []
    if terminal_states is None:
        candidates = pd.Series({k: v for k, v in stability.items() if k not in initial}, dtype=float)
        if n_terminal is not None:
            chosen = list(candidates.sort_values(ascending=False).index[: int(n_terminal)])
            how = f"top_{int(n_terminal)}_stable"
            if len(chosen) < n_terminal:
                issues.append("fewer_than_n_terminal")
                warnings.warn(
                    f"Asked for n_terminal={n_terminal} terminal states but only {len(chosen)} macrostates are "
                    f"candidates ({n_macro} macrostates, {len(initial)} set aside as initial). Fix: "
                    f"n_states={n_terminal + len(initial)} or more.",
                    checks.FateWarning,
                    stacklevel=3,
                )
        else:
            chosen = list(candidates[candidates >= stability_threshold].index)
            how = f"stability>={stability_threshold}"
        if not chosen:
            hint = _next_steps(n_macro, velocity_weight, cluster_key,
                              checks.suggest_threshold(candidates.values, below=stability_threshold))
            raise NoTerminalStateError(
                f"No terminal state found: none of the {n_macro} macrostates"
                + (f" (initial states {initial} excluded)" if initial else "")
                + f" reaches the stability threshold {stability_threshold} (stabilities: "
                + ", ".join(f"{k}={v:.3f}" for k, v in stability.items())
                + "). "
                + hint
            )
        origins = checks.warn_origin_terminal(chosen, balance, how=how)
        if origins:
            issues.append("terminal_state_at_origin")
        g.set_terminal_states(chosen, n_cells=n_cells)
    else:
        how = checks.resolve_terminal_states(g, adata, terminal_states, cluster_key, n_cells, hint)
    if g.terminal_states is None or len(g.terminal_states.cat.categories) == 0:
        raise NoTerminalStateError("No terminal state was set. " + hint)

    if len(g.terminal_states.cat.categories) == 1:
        issues.append("one_terminal_state")
        warnings.warn(
            f"Only one terminal state ({str(g.terminal_states.cat.categories[0])!r}): every cell reaches it with "
            "probability 1. " + hint,
            checks.FateWarning,
            stacklevel=3,
        )
    g.compute_fate_probabilities(use_petsc=use_petsc, solver=solver, tol=tol, show_progress_bar=verbose)
    lineage = g.fate_probabilities
    names = [str(n) for n in lineage.names]
    probs = _plain(lineage)
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)  # CellRank's iterative solver leaves ~1e-6 residuals

    adata.obsm[key_added] = probs
    adata.uns[f"{key_added}_names"] = names
    adata.uns[f"{key_added}_colors"] = [str(c) for c in lineage.colors]
    adata.obs["macrostate"] = g.macrostates.astype("category")
    adata.obs["terminal_state"] = g.terminal_states.astype("category")
    if initial:
        adata.obs["initial_state"] = g.initial_states.astype("category")
    elif "initial_state" in adata.obs:
        del adata.obs["initial_state"]
    _delineage(adata)
    absorbed = checks.warn_absorption(adata, probs, names, cluster_key)
    if absorbed:
        issues.append("clusters_absorbed_by_other_state")
    adata.uns["tflib_fates"] = {
        "velocity_weight": float("nan") if given else float(velocity_weight),
        "connectivity_weight": float("nan") if given else float(connectivity_weight),
        "kernel": repr(kernel) if given else "velocity+connectivity",
        "n_states_requested": -1 if n_states is None else (n_states if isinstance(n_states, int) else list(n_states)),
        "n_macrostates": int(n_macro),
        "macrostates": list(stability),
        "macrostate_stability": list(stability.values()),
        "macrostate_inflow": [float(v) for v in balance["inflow"]],
        "macrostate_outflow": [float(v) for v in balance["outflow"]],
        "terminal_states": names,
        "terminal_states_from": how,
        "initial_states": initial,
        "stability_threshold": float(stability_threshold),
        "n_cells": int(n_cells),
        "cluster_key": cluster_key or "",
        "key_added": key_added,
        "warnings": issues,
        "origin_terminal_states": list(origins),
        "absorbed_clusters": dict(absorbed),
        "use_petsc": bool(use_petsc),
        "seed": int(seed),
        "cellrank_version": str(cr.__version__),
    }
    return g


def fate_probs_frame(adata, *, probs_key: str = "fate_probs") -> pd.DataFrame:
    """Fate probabilities written by :func:`fates` as a DataFrame (chapters 09 and 10).

    Parameters
    ----------
    adata
        An AnnData after :func:`fates`.
    probs_key
        The ``key_added`` given to :func:`fates`: reads ``.obsm[probs_key]`` and its column
        names from ``.uns[probs_key + "_names"]``.

    Returns
    -------
    pandas.DataFrame
        Cells × terminal states (index ``obs_names``); nothing is written to ``adata``.
    """
    if probs_key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {probs_key!r}: run `tflib.tl.fates(adata, key_added={probs_key!r})` first.")
    names = list(adata.uns.get(f"{probs_key}_names", range(adata.obsm[probs_key].shape[1])))
    return pd.DataFrame(np.asarray(adata.obsm[probs_key]), index=adata.obs_names, columns=names)
