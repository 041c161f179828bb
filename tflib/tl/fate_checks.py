"""Input checks and diagnostics for :func:`tflib.tl.fates` (chapter 09).

Kept apart from ``fate.py`` so that the CellRank pipeline reads in one piece. Everything here
either refuses bad input before the slow part, with the fix in the message, or warns after
GPCCA when its choices look wrong (a progenitor pool taken as a fate, a fate nobody
represents, a coarse matrix that is not a probability matrix).
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
import logging
import numbers
import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["DisconnectedGraphError", "FateWarning", "NoTerminalStateError"]


class NoTerminalStateError(RuntimeError):
    """GPCCA produced no usable terminal state; the message lists the settings to try next."""


class DisconnectedGraphError(ValueError):
    """The cell graph falls apart into several pieces; GPCCA needs one connected chain."""


class FateWarning(UserWarning):
    """A terminal-state choice of :func:`tflib.tl.fates` that deserves a second look."""


# ---------------------------------------------------------------------------- before CellRank
def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_counts(*, n_states, n_terminal, n_initial, n_cells, stability_threshold, n_obs) -> None:
    """Refuse impossible numbers of states/cells before any kernel is computed."""
    if n_terminal is not None and (not _is_int(n_terminal) or n_terminal < 1):
        raise ValueError(
            f"n_terminal={n_terminal!r} is not a number of terminal states: n_terminal >= 1 is required (an integer, "
            "e.g. the number of fates you expect), or n_terminal=None to choose them by stability_threshold."
        )
    if not _is_int(n_initial) or n_initial < 0:
        raise ValueError(f"n_initial={n_initial!r}: it must be an integer >= 0 (0 sets no initial state aside).")
    if not _is_int(n_cells) or n_cells < 1:
        raise ValueError(f"n_cells={n_cells!r}: it must be an integer >= 1 (cells per macrostate, e.g. 30).")
    if not (isinstance(stability_threshold, numbers.Real) and 0 < stability_threshold <= 1):
        raise ValueError(f"stability_threshold={stability_threshold!r}: it must lie in (0, 1], e.g. 0.96.")
    if n_states is None:
        k_max = None
    elif _is_int(n_states):
        if n_states < 1:
            raise ValueError(f"n_states={n_states!r}: it must be >= 1, a (min, max) pair, or None (eigengap).")
        k_max = int(n_states)
    else:
        ks = list(n_states)
        if len(ks) != 2 or not all(_is_int(k) and k >= 2 for k in ks) or ks[0] > ks[1]:
            raise ValueError(f"n_states={n_states!r}: a range must be a pair (min, max) of integers >= 2, min <= max.")
        k_max = int(ks[1])
    if k_max is not None:
        if n_terminal is not None and n_terminal + n_initial > k_max:
            raise ValueError(
                f"n_terminal={n_terminal} terminal plus n_initial={n_initial} initial states need at least "
                f"{n_terminal + n_initial} macrostates, but n_states={n_states!r}. Fix: n_states={n_terminal + n_initial} "
                "or more, or a smaller n_terminal."
            )
        if n_cells > n_obs // k_max:
            raise ValueError(
                f"n_cells={n_cells} is too many: {n_obs} cells split into {k_max} macrostates leave at most "
                f"{n_obs // k_max} cells per state. Fix: n_cells={max(1, n_obs // k_max)} (or fewer), or fewer "
                "macrostates (n_states)."
            )


def check_cluster_key(adata, cluster_key) -> None:
    if cluster_key is not None and cluster_key not in adata.obs:
        cats = [c for c in adata.obs.columns if not pd.api.types.is_numeric_dtype(adata.obs[c])]
        raise KeyError(
            f"cluster_key={cluster_key!r} is not a column of adata.obs. Fix: pass one of the categorical columns "
            f"{cats} or cluster_key=None."
        )


def check_connected(adata, kernel=None) -> None:
    """Refuse a cell graph with several connected components (pygpcca fails on it, obscurely)."""
    from scipy.sparse.csgraph import connected_components

    if kernel is not None:
        G, what = kernel.transition_matrix, "the kernel's transition matrix"
    else:
        G, what = adata.obsp["connectivities"], "the kNN graph adata.obsp['connectivities']"
    G = G if sp.issparse(G) else sp.csr_matrix(np.asarray(G))
    n, labels = connected_components(G, directed=True, connection="weak")
    if n <= 1:
        return
    sizes = np.bincount(labels)
    order = np.argsort(-sizes)
    shown = ", ".join(str(int(s)) for s in sizes[order[:8]]) + (", ..." if n > 8 else "")
    raise DisconnectedGraphError(
        f"{what} has {n} connected components (sizes {shown} cells); a Markov chain on it cannot move "
        "between them, and GPCCA fails. Fix: rebuild the graph with more neighbours, e.g. "
        "`tflib.tl.velocity(adata, n_neighbors=50)`, or keep the largest component: "
        "`from scipy.sparse.csgraph import connected_components; "
        "_, lab = connected_components(adata.obsp['connectivities']); "
        "adata = adata[lab == np.bincount(lab).argmax()].copy()` (then rerun tflib.tl.velocity)."
    )


def check_kernel(kernel, adata) -> None:
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


def check_requested_states(adata, terminal_states, cluster_key) -> None:
    """Requested terminal states must name existing clusters/macrostates (checked before the slow part)."""
    if isinstance(terminal_states, Mapping) and cluster_key is not None:
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
        and isinstance(terminal_states, (str, Sequence))
        and not isinstance(terminal_states, Mapping)
    ):  # with cluster_key, macrostates are named "<cluster>" or "<cluster>_<k>"
        known = set(adata.obs[cluster_key].astype(str))
        wanted = [terminal_states] if isinstance(terminal_states, str) else [str(t) for t in terminal_states]
        unknown = [t for t in wanted if t not in known and t.rsplit("_", 1)[0] not in known]
        if unknown:
            raise NoTerminalStateError(
                f"Requested terminal states {unknown} match no macrostate or cluster of {cluster_key!r} "
                f"(clusters: {sorted(known)}; macrostates are named after them, e.g. '<cluster>_1'). "
                "Give existing names, or leave terminal_states=None to predict them."
            )


def resolve_terminal_states(estimator, adata, terminal_states, cluster_key, n_cells, hint) -> str:
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


# ---------------------------------------------------------------------------- CellRank's voice
_PETSC_NOISE = re.compile(r"Unable to import `petsc4py` or `slepc4py`|dense matrix is required\. Densifying")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _PETSC_NOISE.search(record.getMessage())


@contextlib.contextmanager
def quiet_cellrank(verbose: bool):
    """Silence CellRank's PETSc/densify notices (expected without PETSc) unless ``verbose``.

    Other CellRank warnings still reach the user. Only these two messages and pygpcca's
    missing-PETSc ``UserWarning`` are filtered, and only inside the block.
    """
    if verbose:
        yield
        return
    import cellrank as cr

    logger = getattr(cr.settings, "_root_logger", None)
    flt = _DropNoise()
    if logger is not None:
        logger.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*petsc4py.*slepc4py.*", category=UserWarning)
            yield
    finally:
        if logger is not None:
            logger.removeFilter(flt)


def translate_cellrank_error(err: Exception, *, n_cells, cluster_key, n_states):
    """CellRank's message rephrased with tflib's parameter names, or ``None`` if not recognised."""
    msg = str(err)
    m = re.search(r"You've selected `?(\d+)`? cells, please decrease this to at most `?(\d+)`?", msg)
    if m:
        return ValueError(
            f"n_cells={n_cells} is too many for these macrostates: at most {m.group(2)} cells per state fit "
            f"(CellRank: {msg}). Fix: n_cells={m.group(2)} or fewer, or fewer macrostates (n_states)."
        )
    if "Unable to find clusters in" in msg:
        return KeyError(
            f"cluster_key={cluster_key!r} is not usable as clusters (CellRank: {msg}). Fix: pass a categorical "
            "column of adata.obs as cluster_key, or cluster_key=None."
        )
    if "overlapping cells between initial and terminal states" in msg:
        return ValueError(
            f"CellRank picked some of the same cells for an initial and a terminal state ({msg}). Each state "
            f"takes the n_cells={n_cells} cells most attached to its macrostate, so a small macrostate borrows "
            f"its neighbours' cells. Fix: a smaller n_cells (e.g. n_cells={max(n_cells // 3, 5)}), or n_initial=0."
        )
    if "Discretizing leads to a cluster" in msg:
        return ValueError(
            f"GPCCA could not form n_states={n_states} macrostates of n_cells={n_cells} cells each ({msg}). "
            "Fix: fewer macrostates (n_states), a smaller n_cells (e.g. 10), or more cells."
        )
    return None


# ---------------------------------------------------------------------------- after GPCCA
def check_stabilities(stability: dict, *, predicting: bool, n_obs: int, n_macro: int) -> None:
    """Stabilities are probabilities: refuse to predict from values outside [0, 1], warn otherwise."""
    bad = {k: v for k, v in stability.items() if not (-1e-6 <= v <= 1 + 1e-6)}
    if not bad:
        return
    listed = ", ".join(f"{k}={v:.3f}" for k, v in bad.items())
    text = (
        f"GPCCA's coarse transition matrix is not a probability matrix: macrostate stabilities {listed} lie "
        f"outside [0, 1] ({n_obs} cells in {n_macro} macrostates; common with very few cells). "
    )
    fix = (
        f"Fix: fewer macrostates (n_states={max(2, n_macro - 1)}), more cells, or give the terminal states by "
        "cluster (terminal_states=[...] with cluster_key=...)."
    )
    if predicting:
        raise NoTerminalStateError(text + "Terminal states chosen from these numbers would be meaningless. " + fix)
    warnings.warn(text + fix, FateWarning, stacklevel=3)


def suggest_threshold(stabilities, below: float) -> str | None:
    """A lower stability bar that one more candidate passes: its stability rounded down to 2 decimals.

    Only valid stabilities (in [0, 1]) below the current bar ``below`` count; ``None`` if there is none.
    """
    vals = [float(v) for v in stabilities if 0 <= v <= 1 and v < below]
    if not vals:
        return None
    return f"{max(0.01, np.floor(max(vals) * 100) / 100):.2f}"


def flow_balance(coarse_T: pd.DataFrame) -> pd.DataFrame:
    """Per macrostate: coarse inflow from the others (column sum off the diagonal) and outflow (1 - diagonal)."""
    C = coarse_T.to_numpy(dtype=float)
    inflow = C.sum(0) - np.diag(C)
    outflow = 1 - np.diag(C)
    return pd.DataFrame({"inflow": inflow, "outflow": outflow}, index=[str(c) for c in coarse_T.columns])


def warn_origin_terminal(chosen, balance: pd.DataFrame, *, how: str, ratio: float = 0.25) -> list[str]:
    """Warn when a chosen terminal macrostate receives far less than it loses: the flow starts there."""
    origins = [
        s for s in chosen
        if s in balance.index and balance.loc[s, "outflow"] > 1e-3
        and balance.loc[s, "inflow"] < ratio * balance.loc[s, "outflow"]
    ]
    if origins:
        detail = "; ".join(
            f"{s}: inflow {balance.loc[s, 'inflow']:.3f} vs outflow {balance.loc[s, 'outflow']:.3f} per step"
            for s in origins
        )
        warnings.warn(
            f"Terminal state(s) {origins} look like where the flow starts, not where it ends ({detail}; a real "
            "end point receives more than it loses). A self-renewing progenitor pool often passes the stability bar "
            f"({how}). Fix: pass n_initial=1 to set the origin aside as the initial state, or give the terminal "
            "states explicitly (terminal_states=[...]).",
            FateWarning,
            stacklevel=3,
        )
    return origins


def warn_absorption(adata, probs: np.ndarray, names, cluster_key, *, min_cells: int = 5,
                    level: float = 0.9) -> dict[str, str]:
    """Warn when clusters that no terminal state represents are absorbed almost entirely by one of them.

    A terminal state stands for the cluster most of its typical cells belong to. When, say, every
    alpha, delta and epsilon cell ends in the beta state with probability ~1, these types have no
    end point of their own and their probabilities say nothing about them.
    """
    if cluster_key is None or cluster_key not in adata.obs:
        return {}
    clusters = adata.obs[cluster_key].astype(str).to_numpy()
    term = adata.obs["terminal_state"] if "terminal_state" in adata.obs else None
    own = {}
    for j, name in enumerate(names):
        cells = (term.astype(str).to_numpy() == name) if term is not None else np.zeros(len(clusters), bool)
        own[name] = pd.Series(clusters[cells]).value_counts().index[0] if cells.any() else name
    represented = set(own.values())
    absorbed = {}
    for c in pd.unique(clusters):
        in_c = clusters == c
        if c in represented or in_c.sum() < min_cells:
            continue
        j = int(np.argmax(probs[in_c].mean(0)))
        if np.mean(probs[in_c, j] >= level) >= level:
            absorbed[str(c)] = str(names[j])
    if absorbed:
        by_state = {}
        for c, s in absorbed.items():
            by_state.setdefault(s, []).append(c)
        listed = "; ".join(f"{s} (mostly {own[s]!r}) absorbs clusters {cs}" for s, cs in by_state.items())
        warnings.warn(
            f"{listed}: at least {level:.0%} of their cells reach it with probability >= {level}, and no terminal "
            f"state stands for them in adata.obs[{cluster_key!r}]. That is expected for progenitors that lead only "
            "there; a cluster that is a fate of its own has no end point and its probabilities say nothing about "
            "it. Fix for such a fate: ask for more macrostates (n_states), or give the fates by cluster, e.g. "
            f"terminal_states={sorted(set(own.values()))!r} plus the absorbed clusters that are fates, with "
            f"cluster_key={cluster_key!r}.",
            FateWarning,
            stacklevel=3,
        )
    return absorbed


# ---------------------------------------------------------------------------- failure leaves no trace
_SLOTS = ("obsm", "obsp", "varm", "layers")


@contextlib.contextmanager
def rollback_on_error(adata):
    """If the block raises, put ``adata``'s obs/var/uns and mapping slots back as they were."""
    obs, var, uns = adata.obs.copy(deep=False), adata.var.copy(deep=False), dict(adata.uns)
    slots = {s: dict(getattr(adata, s).items()) for s in _SLOTS}
    try:
        yield
    except BaseException:
        adata.obs = obs
        adata.var = var
        for k in list(adata.uns.keys()):
            if k not in uns:
                del adata.uns[k]
        for k, v in uns.items():
            adata.uns[k] = v
        for s, before in slots.items():
            mapping = getattr(adata, s)
            for k in list(mapping.keys()):
                if k not in before:
                    del mapping[k]
            for k, v in before.items():
                if mapping.get(k) is not v:
                    mapping[k] = v
        raise
