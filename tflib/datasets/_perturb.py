"""True perturbation effects: ``knockout`` and ``overexpress`` (chapters 03, 11--13).

Both rebuild the network, the kinetics and every cell's current regulator state from what
the AnnData stores (``var``, ``uns["grn"]``, ``uns["simulation"]``, the layers
``unspliced_true``/``spliced_true`` and ``obs["differentiating"]``), so they work on an
object read back from ``.h5ad`` in a fresh process. They re-simulate each cell's future
twice, without and with the perturbation, from the *same* random numbers (common random
numbers). The returned shift is therefore free of Monte-Carlo noise wherever the
perturbation does not touch the regulators: a gene that regulates nothing gives exactly 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tflib.datasets._grn import DEFAULTS, Network
from tflib.datasets._kinetics import future_fates


def _dense(m) -> np.ndarray:
    return np.asarray(m.toarray() if hasattr(m, "toarray") else m, dtype=np.float64)


def true_fate_probabilities(sim, perturb: dict[str, float] | None = None, *, n_futures: int | None = None,
                            seed: int = 0) -> pd.DataFrame:
    """Fraction of re-simulated futures reaching each fate, optionally under a perturbation.

    ``perturb`` maps gene symbols to a fixed normalised transcription rate (0 = knockout,
    ``f`` = constitutive expression at ``f`` times the gene's maximal rate).
    """
    net = Network.from_anndata(sim)
    for layer in ("unspliced_true", "spliced_true"):
        if layer not in sim.layers:
            raise ValueError(f"sim.layers[{layer!r}] is missing: it holds each cell's true state, from "
                             "which futures are re-simulated. Fix: keep the layers of simulate()'s output.")
    stored = dict(sim.uns["simulation"])
    p = {k: stored.get(k, v) for k, v in DEFAULTS.items()}
    reg = net.reg
    u0 = _dense(sim.layers["unspliced_true"][:, reg]) * net.beta[reg] / net.alpha_max[reg]
    s0 = _dense(sim.layers["spliced_true"][:, reg]) * net.gamma[reg] / net.alpha_max[reg]
    waiting = ~np.asarray(sim.obs["differentiating"], dtype=bool)
    genes = {net.index(g): float(v) for g, v in (perturb or {}).items()}
    n = int(p["n_futures"] if n_futures is None else n_futures)
    probs, _ = future_fates(net, u0, s0, waiting, p, n, np.random.SeedSequence([int(seed), 2024]), genes)
    return pd.DataFrame(probs, index=sim.obs_names.copy(), columns=net.fates)


def _shift(sim, genes, value, n_futures, seed, return_probs):
    if isinstance(genes, str):
        genes = [genes]
    elif isinstance(genes, (list, tuple, set, np.ndarray, pd.Index)) and all(isinstance(g, str) for g in genes):
        genes = list(genes)
    else:
        raise TypeError(f"gene={genes!r}: give a gene symbol of sim.var_names, or a list of them for a "
                        "combined perturbation.")
    if not genes:
        raise ValueError("the gene list is empty, so nothing would be perturbed; name at least one gene.")
    if n_futures is not None and (isinstance(n_futures, bool) or not isinstance(n_futures, (int, np.integer))
                                  or n_futures < 1):
        raise ValueError(f"n_futures={n_futures!r}: each cell's future is re-simulated that many times; "
                         "give a whole number >= 1 (or None for the world's own setting).")
    base = true_fate_probabilities(sim, None, n_futures=n_futures, seed=seed)
    pert = true_fate_probabilities(sim, {g: value for g in genes}, n_futures=n_futures, seed=seed)
    shift = pert - base
    return (shift, base, pert) if return_probs else shift


def knockout(sim, gene: str | Sequence[str], *, n_futures: int | None = None, seed: int = 0,
             return_probs: bool = False):
    """True per-cell fate-probability shift when ``gene`` is knocked out (chapters 03, 11--13).

    From each cell's current state, its future is re-simulated ``n_futures`` times (default:
    the value stored in ``sim.uns["simulation"]``) with the gene's transcription set to zero,
    and once more without; the same random numbers drive both.

    Parameters
    ----------
    sim
        The AnnData from :func:`tflib.datasets.simulate` (or its ``.h5ad`` read back).
    gene
        A gene symbol of ``sim.var_names``, or a list of them for a combined knockout.
    n_futures, seed
        Monte-Carlo size and seed of the re-simulated futures.
    return_probs
        Also return the baseline and perturbed probabilities: ``(shift, baseline, perturbed)``.

    Returns
    -------
    pandas.DataFrame
        Cells x fates, ``perturbed - baseline``; each row sums to 0.
    """
    return _shift(sim, gene, 0.0, n_futures, seed, return_probs)


def overexpress(sim, gene: str | Sequence[str], factor: float = 2.0, *, n_futures: int | None = None,
                seed: int = 0, return_probs: bool = False):
    """True per-cell fate-probability shift when ``gene`` is overexpressed (chapters 03, 11--13).

    The gene is transcribed constitutively at ``factor`` times its maximal native rate from
    the cell's current state on (a strong transgene). Otherwise as :func:`knockout`.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}. Fix: e.g. factor=2.0; use "
                         "knockout() for a loss of function.")
    return _shift(sim, gene, float(factor), n_futures, seed, return_probs)


def true_regulators(sim) -> dict[str, list[str]]:
    """The true regulators of each fate: its master TF and secondary TFs (chapter 13).

    These are the regulators whose programme makes up the fate in the simulator
    (``Network.programmes``): the ``master_tf`` and ``secondary_tf`` genes of the fate's module.
    Decoy TFs (no targets), the progenitor TF and target genes are not regulators of a fate.
    Rebuilt from ``sim.var`` and ``sim.uns`` only, so it works on an ``.h5ad`` read back.

    Parameters
    ----------
    sim
        The AnnData from :func:`tflib.datasets.simulate`.

    Returns
    -------
    dict
        ``{fate: [gene symbols of sim.var_names]}`` for every fate, genes in ``var_names`` order.
    """
    net = Network.from_anndata(sim)
    prog = net.programmes()                                                       # (F, R)
    return {fate: [str(net.genes[net.reg[r]]) for r in np.flatnonzero(prog[f] > 0)]
            for f, fate in enumerate(net.fates)}
