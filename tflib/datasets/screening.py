"""``screen``: a simulated Perturb-seq experiment in the world of a simulated dataset.

(The module is "screening", not "screen": a submodule named like the function would replace
the function on the package as soon as it is imported.)

Chapter 11 uses it as interventional data with a known answer; chapter 12 tests
hypotheses on it. Each perturbation's cells are grown like :func:`tflib.datasets.simulate`
grows its cells (a steady progenitor pool plus differentiating cells of every age), except
that the targeted genes are knocked out or overexpressed from the start, the progenitor
pool's steady state included. They are then measured with the world's own measurement
model: library sizes, the same batches with the same batch effects, negative-binomial counts.

Everything about the world (network, kinetics, batch effects) is rebuilt from what the
simulated AnnData stores (``var``, ``uns["grn"]``, ``uns["simulation"]``), never from
process memory, so a world read back from ``.h5ad`` gives the same screen.
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tflib.datasets._grn import DEFAULTS, Network
from tflib.datasets._kinetics import future_fates
from tflib.datasets.simulator import _grow, _measure

__all__ = ["screen"]

KINDS = ("knockout", "overexpress")


def _count(value, name: str, minimum: int, example: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}. Fix: e.g. {name}={example}.")
    return int(value)


def _world(sim) -> tuple[Network, dict, np.ndarray, np.ndarray]:
    """Network, parameters and batch effects of the world ``sim`` records."""
    uns = getattr(sim, "uns", None)
    if uns is None:
        raise TypeError(f"sim must be the AnnData returned by tflib.datasets.simulate, got "
                        f"{type(sim).__name__}. Fix: sim = tflib.datasets.simulate(...).")
    stored = dict(uns.get("simulation", {}))
    need = ("batch_gene_log_effect", "batch_library_log_effect", "n_genes")
    missing = [f'uns["simulation"][{k!r}]' for k in need if "simulation" in uns and k not in stored]
    if missing:
        raise ValueError(f"This AnnData lacks the simulator's records {missing}, which the screen needs "
                         "to measure cells with the world's batch effects. Fix: pass the object returned "
                         "by tflib.datasets.simulate (or its .h5ad read back) with its uns intact.")
    if "simulation" in uns and sim.n_vars != int(stored["n_genes"]):
        raise ValueError(f"sim has {sim.n_vars} genes but its world has {int(stored['n_genes'])}: the "
                         "screen needs every gene of the network. Fix: pass the full output of "
                         "tflib.datasets.simulate, not a gene subset (subset the screen's result instead).")
    net = Network.from_anndata(sim)            # names any other missing var/uns record
    p = {k: stored.get(k, v) for k, v in DEFAULTS.items()}
    gene_effect = np.exp(np.asarray(stored["batch_gene_log_effect"], dtype=np.float64))
    lib_effect = np.exp(np.asarray(stored["batch_library_log_effect"], dtype=np.float64))
    return net, p, gene_effect, lib_effect


def _perturbations(genes, var_names: pd.Index, roles: pd.Series) -> list[tuple[str, tuple[str, ...]]]:
    """``[(label, genes), ...]`` from a symbol, a list of symbols and/or tuples of symbols."""
    if isinstance(genes, str):
        items = [genes]
    elif isinstance(genes, (Sequence, np.ndarray, pd.Index)):
        items = list(genes)
    else:
        raise TypeError(f"genes must be a gene symbol or a list of symbols and tuples of symbols, got "
                        f"{type(genes).__name__}. Fix: e.g. genes=['GATA1', ('GATA1', 'SPI1')].")
    if not items:
        raise ValueError("genes is empty: there is nothing to perturb. Fix: pass at least one symbol of "
                         "sim.var_names, e.g. genes=list(sim.var_names[sim.var['role'] == 'master_tf']).")
    out, unknown = [], []
    for item in items:
        combo = (item,) if isinstance(item, str) else tuple(item) if isinstance(item, tuple | list) else None
        if not combo or not all(isinstance(g, str) for g in combo):
            raise TypeError(f"Each entry of genes must be a symbol or a tuple of symbols, got {item!r}. "
                            "Fix: e.g. 'GATA1' or ('GATA1', 'SPI1').")
        if len(set(combo)) < len(combo):
            raise ValueError(f"The combination {combo} names a gene twice. Fix: list each gene once.")
        unknown += [g for g in combo if g not in var_names and g not in unknown]
        out.append(("+".join(combo), combo))
    if unknown:
        regulators = ", ".join(f"{g} ({r})" for g, r in roles.items()
                               if r in ("progenitor_tf", "master_tf", "secondary_tf"))
        raise KeyError(f"Genes {unknown} are not in the simulated world. Fix: pick from sim.var_names "
                       f"(sim.var['role'] says what each gene does); its regulators are {regulators}.")
    labels = [label for label, _ in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"The perturbations {dup} appear more than once. Fix: list each once and raise "
                         "n_cells_per_gene for more cells.")
    return out


def screen(sim, genes, n_cells_per_gene: int = 200, *, kind: str = "knockout", n_control: int | None = None,
           factor: float = 2.0, seed: int = 0, n_futures: int | None = None):
    """A simulated Perturb-seq screen in the world of ``sim`` (chapters 11 and 12).

    For every perturbation, ``n_cells_per_gene`` new cells are grown from the progenitor pool
    of the same network with the targeted gene(s) knocked out (transcription fixed at 0) or
    overexpressed (fixed at ``factor`` times the gene's maximal rate) from the start, and
    measured like the world's own cells. ``n_control`` non-targeting controls are grown the
    same way without a perturbation, so differences between a perturbation's cells and the
    controls are its effect plus sampling noise (the cells are independent, as in a real
    screen; for noise-free per-cell shifts use :func:`tflib.datasets.knockout`).

    Parameters
    ----------
    sim
        The AnnData from :func:`tflib.datasets.simulate` (or its ``.h5ad`` read back), with
        all its genes. Its cells are not used, only the world it records.
    genes
        A symbol of ``sim.var_names``, or a list whose entries are symbols or tuples of
        symbols; a tuple inside the list, ``[("A", "B")]``, perturbs both genes in the same
        cells (label ``"A+B"``), whereas ``genes=("A", "B")`` screens A and B separately.
    n_cells_per_gene
        Cells per perturbation (>= 1).
    kind
        ``"knockout"`` or ``"overexpress"``.
    n_control
        Non-targeting control cells (>= 0); default ``n_cells_per_gene``.
    factor
        Overexpression level, times the gene's maximal native rate (> 0); ignored for knockouts.
    seed
        Seed of the screen's cells. Each perturbation's cells depend only on ``seed`` and its
        label, so the controls and a gene's cells are the same whichever other genes are
        screened.
    n_futures
        Re-simulated futures per cell for ``obsm["fate_probs_true"]``; default the world's.

    Returns
    -------
    AnnData
        Controls first, then each perturbation in the order given; ``var`` as ``sim.var``.
        ``X`` and ``layers["spliced"]``: spliced counts; ``layers["unspliced"]``,
        ``layers["velocity_true"]``, ``layers["spliced_true"]``, ``layers["unspliced_true"]``
        as in :func:`~tflib.datasets.simulate`.
        ``obs``: ``perturbation`` (categorical: ``"control"``, a symbol, or ``"A+B"``), and
        simulate's ``fate``, ``lineage``, ``pseudotime``, ``differentiating``, ``committed``,
        ``batch``, ``library_size``; the futures that decide ``lineage`` and
        ``obsm["fate_probs_true"]`` keep the perturbation.
        ``obsm["fate_probs_true"]``: cells x fates DataFrame.
        ``uns["screen"]``: ``kind``, ``level`` (the targeted genes' fixed normalised rate: 0
        for a knockout, ``factor`` for an overexpression), ``perturbations``,
        ``n_cells_per_gene``, ``n_control``, ``seed``, ``n_futures``, ``world_seed``;
        ``uns["fate_names"]``, ``uns["grn"]``, ``uns["simulation"]``: copied from ``sim``.

    Raises
    ------
    KeyError
        A gene that is not in ``sim.var_names``.
    ValueError
        An empty gene list, a repeated perturbation, ``n_cells_per_gene < 1``, ``kind`` not one
        of the two, ``factor <= 0``, or a ``sim`` without the records the rebuild needs.

    Examples
    --------
    >>> sim = tflib.datasets.simulate(n_cells=1000, n_genes=200, seed=0)       # doctest: +SKIP
    >>> masters = list(sim.var_names[sim.var["role"] == "master_tf"])         # doctest: +SKIP
    >>> scr = tflib.datasets.screen(sim, masters + [tuple(masters[:2])], 150)  # doctest: +SKIP
    >>> pd.crosstab(scr.obs["perturbation"], scr.obs["fate"], normalize="index")  # doctest: +SKIP
    """
    import anndata as ad

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}. Fix: kind='knockout' (transcription "
                         "fixed at 0) or kind='overexpress' (fixed at factor times the maximal rate).")
    n_cells_per_gene = _count(n_cells_per_gene, "n_cells_per_gene", 1, 200)
    n_control = n_cells_per_gene if n_control is None else _count(n_control, "n_control", 0, 200)
    if kind == "overexpress" and not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be positive, got {factor}. Fix: e.g. factor=2.0; use "
                         "kind='knockout' for a loss of function.")
    net, p, gene_effect, lib_effect = _world(sim)
    perts = _perturbations(genes, sim.var_names, sim.var["role"].astype(str))
    n_fut = _count(int(p["n_futures"]) if n_futures is None else n_futures, "n_futures", 1, 30)
    value = 0.0 if kind == "knockout" else float(factor)

    groups = [("control", ())] * (n_control > 0) + perts
    pieces = []
    for label, combo in groups:
        n = n_control if label == "control" else n_cells_per_gene
        perturb = {net.index(g): value for g in combo} or None
        s_traj, s_fut, s_count = np.random.SeedSequence([int(seed), zlib.crc32(label.encode())]).spawn(3)
        u, s, waiting, age = _grow(net, p, n, np.random.default_rng(s_traj), perturb)
        probs, outcome = future_fates(net, u[:, net.reg], s[:, net.reg], waiting, p, n_fut, s_fut, perturb)
        crng = np.random.default_rng(s_count)
        batch = crng.integers(0, len(lib_effect), n)
        names = pd.Index([f"{label}_{i:05d}" for i in range(n)])
        pieces.append(_measure(net, p, crng, u, s, waiting, age, probs, outcome[:, 0], batch,
                               gene_effect, lib_effect, names))
    out = ad.concat(pieces, merge="same")
    labels = [label for label, _ in groups]
    out.obs.insert(0, "perturbation", pd.Categorical(np.repeat(labels, [len(x) for x in pieces]),
                                                     categories=labels))
    out.uns["fate_names"] = np.array(list(net.fates), dtype=object)
    out.uns["grn"] = net.grn_dict()
    out.uns["simulation"] = dict(sim.uns["simulation"])
    out.uns["screen"] = {"kind": kind, "level": value,
                         "perturbations": np.array([label for label, _ in perts], dtype=object),
                         "n_cells_per_gene": n_cells_per_gene, "n_control": n_control, "seed": int(seed),
                         "n_futures": n_fut, "world_seed": int(sim.uns["simulation"].get("seed", -1))}
    return out
