"""Fate probabilities with CellRank 2: kernels, GPCCA macrostates, terminal states (chapter 09).

Chapter 09 (fate mapping) runs :func:`fates` after :func:`tflib.tl.velocity`; chapter 10 compares
its output with the Transcriptformer-based kernels.

Keys written by :func:`fates`:

- ``.obsm["fate_probs"]``: cells × terminal states, a plain ``float64`` NumPy array whose rows
  sum to 1 (CellRank's ``Lineage`` converted, because ``write_h5ad`` fails on ``Lineage``).
- ``.uns["fate_probs_names"]``: the column names of ``fate_probs`` (the terminal states).
- ``.uns["fate_probs_colors"]``: CellRank's colour per terminal state (plots may use their own).
- ``.obs["macrostate"]``, ``.obs["terminal_state"]``: categorical; cells that belong to no
  macrostate / terminal state are ``NaN``. Only the ``n_cells`` most typical cells of a state
  carry its label.
- ``.uns["tflib_fates"]``: settings and diagnostics (weights, number of macrostates, the
  stability of each macrostate, the terminal states, how they were chosen, versions).
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

__all__ = ["NoTerminalStateError", "fates", "fate_probs_frame"]


class NoTerminalStateError(RuntimeError):
    """GPCCA produced no usable terminal state; the message lists the settings to try next."""


def _next_steps(
    n_states_used: int | None, velocity_weight: float, cluster_key: str | None, top_stability: float | None = None
) -> str:
    bar = f"{max(0.5, np.floor(top_stability * 100) / 100 - 0.01):.2f}" if top_stability is not None else "0.9"
    more = f"n_states={n_states_used + 1}" if n_states_used else "a larger n_states"
    vw = 0.5 if velocity_weight > 0.5 else 0.8
    clusters = (
        f"terminal_states={{'<fate>': '<label in adata.obs[{cluster_key!r}]>', ...}}"
        if cluster_key
        else "cluster_key='<obs column>' with terminal_states=['<cluster label>', ...]"
    )
    return (
        "Settings to try next: (1) more macrostates, e.g. " + more + " (macrostates split and "
        "stable end points separate from transient ones); (2) a lower stability bar, e.g. "
        f"stability_threshold={bar}, or n_terminal=<number of fates> to keep the most stable "
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


def _resolve_terminal_states(estimator, adata, terminal_states, cluster_key, n_cells, hint) -> str:
    """Set the terminal states the caller asked for; return how they were chosen."""
    macro = [str(m) for m in estimator.macrostates.cat.categories]
    if isinstance(terminal_states, str):
        terminal_states = [terminal_states]
    clusters = None
    if cluster_key is not None:
        if cluster_key not in adata.obs:
            raise KeyError(f"adata.obs has no column {cluster_key!r} (cluster_key).")
        clusters = adata.obs[cluster_key].astype(str)

    if isinstance(terminal_states, Mapping):
        if clusters is None:
            raise ValueError(
                "terminal_states given as a mapping {state: cluster label(s)} needs cluster_key, the "
                "adata.obs column that holds those labels."
            )
        mapping = {}
        for state, labels in terminal_states.items():
            labels = [labels] if isinstance(labels, str) else list(labels)
            cells = adata.obs_names[clusters.isin([str(lbl) for lbl in labels]).to_numpy()]
            if len(cells) == 0:
                raise NoTerminalStateError(
                    f"Terminal state {state!r}: no cell has {cluster_key!r} in {labels}. Known labels: "
                    f"{sorted(clusters.unique())}. " + hint
                )
            mapping[str(state)] = list(cells)
        estimator.set_terminal_states(mapping)
        return "clusters"

    if isinstance(terminal_states, Sequence):
        wanted = [str(s) for s in terminal_states]
        if not wanted:
            raise NoTerminalStateError("terminal_states is empty. " + hint)
        if all(s in macro for s in wanted):
            estimator.set_terminal_states(wanted, n_cells=n_cells)
            return "macrostates"
        if clusters is not None and all(s in set(clusters) for s in wanted):
            mapping = {s: list(adata.obs_names[(clusters == s).to_numpy()]) for s in wanted}
            estimator.set_terminal_states(mapping)
            return "clusters"
        unknown = [s for s in wanted if s not in macro and (clusters is None or s not in set(clusters))]
        known_clusters = "" if clusters is None else f" or clusters {sorted(clusters.unique())}"
        raise NoTerminalStateError(
            f"Requested terminal states {unknown} match no macrostate (macrostates: {macro}){known_clusters}. "
            + hint
        )
    raise TypeError(
        "terminal_states must be None, a list of macrostate or cluster names, or a mapping "
        f"{{state: cluster label(s)}}; got {type(terminal_states).__name__}."
    )


def _check_kernel(kernel, adata) -> None:
    """A kernel passed to :func:`fates` must be computed, row-stochastic and built on ``adata``."""
    if getattr(kernel, "adata", None) is not adata:
        raise ValueError(
            "The kernel was built on a different AnnData object than the one passed to fates; GPCCA writes its "
            "results to the kernel's AnnData. Fix: build the kernel on this adata "
            "(e.g. `kernel = tflib.tl.embedding_kernel(adata)`), then call `fates(adata, kernel=kernel)`."
        )
    try:
        T = kernel.transition_matrix
    except Exception as err:  # CellRank raises when nothing was computed yet
        raise ValueError(
            "The kernel has no transition matrix yet. Fix: call `kernel.compute_transition_matrix()` first."
        ) from err
    if T is None or T.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(f"The kernel's transition matrix must be {adata.n_obs} x {adata.n_obs} (cells x cells).")


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
):
    """Fate probabilities with CellRank 2: velocity + connectivity kernel, GPCCA, terminal states.

    The transition matrix is ``velocity_weight * VelocityKernel(model="deterministic") +
    connectivity_weight * ConnectivityKernel``. GPCCA coarse-grains the chain into macrostates;
    terminal states are predicted (macrostates whose probability of staying, the diagonal of
    the coarse transition matrix, is at least ``stability_threshold``; or the ``n_terminal``
    most stable ones) or given by the caller; CellRank then solves for the probability that a
    random walk from each cell is absorbed in each terminal state (chapter 09).

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
        cluster-given state uses all cells of those clusters as its end point.
    cluster_key
        ``.obs`` column used to name macrostates after clusters and to resolve cluster labels.
    n_cells
        Cells per macrostate/terminal state (the most typical ones by membership).
    n_terminal
        Keep this many of the most stable macrostates as terminal states instead of the
        stability threshold.
    n_initial
        Exclude this many macrostates from the terminal candidates: those with the smallest coarse
        stationary probability (CellRank's initial-state heuristic), written to
        ``.obs["initial_state"]``. Use 1 when a self-renewing progenitor pool is itself a stable
        macrostate (as in the course simulator); it would otherwise pass as a terminal state.
    stability_threshold
        Minimum self-transition probability of a terminal macrostate (``n_terminal=None``).
    use_petsc, solver, tol
        Passed to ``compute_fate_probabilities``; the default avoids needing PETSc.
    softmax_scale
        Velocity kernel's softmax scale; ``None`` lets CellRank estimate it.
    seed
        Seeds NumPy and CellRank; the same seed and input give the same probabilities.
    kernel
        A CellRank kernel with a computed transition matrix, built on ``adata`` itself, e.g. the
        Transcriptformer kernel of :func:`tflib.tl.embedding_kernel` (chapter 10). When given,
        the velocity checks and the kernel building are skipped (``velocity_weight``,
        ``connectivity_weight`` and ``softmax_scale`` are ignored) and the same GPCCA, terminal
        state and fate steps run on it.

    Returns
    -------
    The fitted :class:`cellrank.estimators.GPCCA` (for plots and :func:`tflib.tl.fate_drivers`).
    The keys written to ``adata`` are listed in the module docstring.

    Raises
    ------
    NoTerminalStateError
        No macrostate qualifies as terminal, or requested states match nothing. The message
        names the settings to try next.
    """
    import cellrank as cr

    if kernel is not None:
        _check_kernel(kernel, adata)
    elif "velocity" not in adata.layers or "Ms" not in adata.layers or "connectivities" not in adata.obsp:
        raise ValueError(
            "fates needs RNA velocity and a kNN graph (layers 'velocity' and 'Ms', obsp 'connectivities'): "
            "run `tflib.tl.velocity(adata)` first."
        )
    if kernel is None and (velocity_weight < 0 or connectivity_weight < 0
                           or velocity_weight + connectivity_weight <= 0):
        raise ValueError("velocity_weight and connectivity_weight must be >= 0 and not both 0.")
    if isinstance(terminal_states, Mapping) and cluster_key is not None:  # fail before the slow part
        if cluster_key not in adata.obs:
            raise KeyError(f"adata.obs has no column {cluster_key!r} (cluster_key).")
        known = set(adata.obs[cluster_key].astype(str))
        for state, labels in terminal_states.items():
            labels = [labels] if isinstance(labels, str) else list(labels)
            if not known.intersection(str(lbl) for lbl in labels):
                raise NoTerminalStateError(
                    f"Terminal state {state!r}: no cell has {cluster_key!r} in {labels}. Known labels: "
                    f"{sorted(known)}. Give existing cluster labels, or leave terminal_states=None to predict them."
                )
    if (
        cluster_key is not None
        and cluster_key in adata.obs
        and isinstance(terminal_states, (str, Sequence))
        and not isinstance(terminal_states, Mapping)
    ):  # with cluster_key, macrostates are named "<cluster>" or "<cluster>_<k>": check before the slow part
        known = set(adata.obs[cluster_key].astype(str))
        wanted = [terminal_states] if isinstance(terminal_states, str) else [str(t) for t in terminal_states]
        unknown = [t for t in wanted if t not in known and t.rsplit("_", 1)[0] not in known]
        if unknown:
            raise NoTerminalStateError(
                f"Requested terminal states {unknown} match no macrostate or cluster of {cluster_key!r} "
                f"(clusters: {sorted(known)}; macrostates are named after them, e.g. '<cluster>_1'). "
                "Give existing names, or leave terminal_states=None to predict them."
            )
    np.random.seed(seed)

    given = kernel is not None
    kernels = []
    if velocity_weight > 0 and not given:
        vk = cr.kernels.VelocityKernel(adata).compute_transition_matrix(
            model="deterministic", softmax_scale=softmax_scale, seed=seed, show_progress_bar=False
        )
        kernels.append(velocity_weight * vk)
    if connectivity_weight > 0 and not given:
        ck = cr.kernels.ConnectivityKernel(adata).compute_transition_matrix()
        kernels.append(connectivity_weight * ck)
    if not given:
        kernel = kernels[0] if len(kernels) == 1 else kernels[0] + kernels[1]
        kernel = kernel.compute_transition_matrix() if len(kernels) > 1 else kernel
    kernel.write_to_adata()  # .obsp["T_fwd"]: lets GPCCA.from_adata rebuild the estimator

    g = cr.estimators.GPCCA(kernel)
    try:
        g.fit(n_states=n_states, cluster_key=cluster_key, n_cells=n_cells)
    except ValueError as err:
        if "Discretizing leads to a cluster" not in str(err):
            raise
        raise ValueError(
            f"GPCCA could not form n_states={n_states} macrostates of n_cells={n_cells} cells each ({err}) "
            "Ask for fewer macrostates (n_states), a smaller n_cells (e.g. 10), or more cells."
        ) from err
    n_macro = len(g.macrostates.cat.categories)
    if g.coarse_T is not None:
        stability = {str(k): float(v) for k, v in zip(g.coarse_T.columns, np.diag(g.coarse_T))}
    else:  # a single macrostate (CellRank uses the stationary distribution): it cannot be left
        stability = {str(k): 1.0 for k in g.macrostates.cat.categories}
    hint = _next_steps(n_macro, velocity_weight, cluster_key, max(stability.values()))

    initial: list[str] = []
    if n_initial and n_macro > 1:
        g.predict_initial_states(n_states=int(n_initial), n_cells=n_cells)
        initial = [str(c) for c in g.initial_states.cat.categories]
    if terminal_states is None:
        candidates = pd.Series({k: v for k, v in stability.items() if k not in initial}, dtype=float)
        if n_terminal is not None:
            chosen = list(candidates.sort_values(ascending=False).index[: int(n_terminal)])
            how = f"top_{int(n_terminal)}_stable"
        else:
            chosen = list(candidates[candidates >= stability_threshold].index)
            how = f"stability>={stability_threshold}"
        if not chosen:
            top = float(candidates.max()) if len(candidates) else None
            hint = _next_steps(n_macro, velocity_weight, cluster_key, top)
            raise NoTerminalStateError(
                f"No terminal state found: none of the {n_macro} macrostates"
                + (f" (initial states {initial} excluded)" if initial else "")
                + f" reaches the stability threshold {stability_threshold} (stabilities: "
                + ", ".join(f"{k}={v:.3f}" for k, v in stability.items())
                + "). "
                + hint
            )
        g.set_terminal_states(chosen, n_cells=n_cells)
    else:
        how = _resolve_terminal_states(g, adata, terminal_states, cluster_key, n_cells, hint)
    if g.terminal_states is None or len(g.terminal_states.cat.categories) == 0:
        raise NoTerminalStateError("No terminal state was set. " + hint)

    if len(g.terminal_states.cat.categories) == 1:
        warnings.warn(
            f"Only one terminal state ({g.terminal_states.cat.categories[0]!r}): every cell reaches it with "
            "probability 1. " + hint,
            UserWarning,
            stacklevel=2,
        )
    g.compute_fate_probabilities(use_petsc=use_petsc, solver=solver, tol=tol, show_progress_bar=False)
    lineage = g.fate_probabilities
    names = [str(n) for n in lineage.names]
    probs = _plain(lineage)
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)  # CellRank's iterative solver leaves ~1e-6 residuals

    adata.obsm["fate_probs"] = probs
    adata.uns["fate_probs_names"] = names
    adata.uns["fate_probs_colors"] = [str(c) for c in lineage.colors]
    adata.obs["macrostate"] = g.macrostates.astype("category")
    adata.obs["terminal_state"] = g.terminal_states.astype("category")
    if initial:
        adata.obs["initial_state"] = g.initial_states.astype("category")
    elif "initial_state" in adata.obs:
        del adata.obs["initial_state"]
    _delineage(adata)
    adata.uns["tflib_fates"] = {
        "velocity_weight": float("nan") if given else float(velocity_weight),
        "connectivity_weight": float("nan") if given else float(connectivity_weight),
        "kernel": repr(kernel) if given else "velocity+connectivity",
        "n_states_requested": -1 if n_states is None else (n_states if isinstance(n_states, int) else list(n_states)),
        "n_macrostates": int(n_macro),
        "macrostates": list(stability),
        "macrostate_stability": list(stability.values()),
        "terminal_states": names,
        "terminal_states_from": how,
        "initial_states": initial,
        "stability_threshold": float(stability_threshold),
        "n_cells": int(n_cells),
        "cluster_key": cluster_key or "",
        "use_petsc": bool(use_petsc),
        "seed": int(seed),
        "cellrank_version": str(cr.__version__),
    }
    return g


def fate_probs_frame(adata) -> pd.DataFrame:
    """``.obsm["fate_probs"]`` as a DataFrame (cells × terminal states) with named columns."""
    if "fate_probs" not in adata.obsm:
        raise KeyError("adata.obsm has no 'fate_probs': run `tflib.tl.fates(adata)` first.")
    names = list(adata.uns.get("fate_probs_names", range(adata.obsm["fate_probs"].shape[1])))
    return pd.DataFrame(np.asarray(adata.obsm["fate_probs"]), index=adata.obs_names, columns=names)
