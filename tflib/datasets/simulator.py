"""``simulate``: a ground-truth single-cell world with known velocity, fates and regulators.

Chapter 03 introduces it; chapters 08--13 validate velocity, fate mapping, perturbation
predictions, hypothesis tests and regulator inference against its truth. The pieces:

* :mod:`tflib.datasets._grn` -- the gene regulatory network (toggle switch of master TFs,
  secondary TFs that lock decisions in, target modules) and per-gene kinetics;
* :mod:`tflib.datasets._kinetics` -- splicing ODEs, Euler--Maruyama on regulators, futures;
* :mod:`tflib.datasets._perturb` -- ``knockout`` / ``overexpress`` (re-exported here);
* this module -- cells, measurement (library size, batches, negative-binomial counts) and the
  AnnData that records everything.

Gene names are real human symbols used as labels only (see :mod:`tflib.datasets._names`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib.datasets._grn import DEFAULTS, build_network
from tflib.datasets._kinetics import future_fates, regulator_fixed_point, run_regulators, run_targets
from tflib.datasets._perturb import knockout, overexpress  # noqa: F401  (public re-exports)

__all__ = ["simulate", "knockout", "overexpress", "DEFAULTS"]

SIMULATOR_VERSION = "1"
_RECORD_EVERY = 2   # non-regulators are refreshed every 2 regulator steps (0.2 time units)


def _check_params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"simulate() got unknown parameters {unknown}. Fix: use any of "
                        f"{sorted(DEFAULTS)} (their defaults: tflib.datasets.simulator.DEFAULTS).")
    p = {**DEFAULTS, **params}
    if not 0.0 <= p["frac_progenitor"] < 1.0:
        raise ValueError("frac_progenitor must lie in [0, 1). Fix: e.g. frac_progenitor=0.2.")
    return p


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, theta: float) -> np.ndarray:
    """Gamma--Poisson draws with mean ``mean`` and variance ``mean + mean**2 / theta``."""
    return rng.poisson(rng.gamma(theta, mean / theta)).astype(np.float32)


def _grow(net, p: dict, n_cells: int, rng: np.random.Generator, perturb: dict | None = None):
    """Trajectories of ``n_cells`` cells: normalised ``u, s`` (cells, genes), ``waiting``, ``age``.

    A steady progenitor pool plus differentiating cells of uniformly spread ages. ``perturb``
    (gene index -> fixed normalised rate) holds from the start, the pool's steady state included.
    """
    dt = float(p["dt"])
    waiting = rng.random(n_cells) < p["frac_progenitor"]
    age = np.where(waiting, 0.0, rng.uniform(0.0, p["t_diff"], n_cells))
    n_steps = int(round((p["t_burn"] + p["t_diff"]) / dt)) // _RECORD_EVERY * _RECORD_EVERY
    leave = np.where(waiting, np.inf, n_steps - np.round(age / dt))

    u0, s0 = regulator_fixed_point(net, dt=dt, perturb=perturb)
    u = np.tile(u0, (n_cells, 1))
    s = np.tile(s0, (n_cells, 1))
    reg = net.reg
    ur, sr = u[:, reg].copy(), s[:, reg].copy()
    path = run_regulators(net, ur, sr, leave, n_steps, dt, p["noise"], rng, perturb=perturb,
                          record_every=_RECORD_EVERY)
    others = np.setdiff1d(np.arange(len(net.genes)), reg)
    uo, so = u[:, others].astype(np.float32), s[:, others].astype(np.float32)
    run_targets(net, others, uo, so, path, dt * _RECORD_EVERY, perturb=perturb)
    u[:, reg], s[:, reg], u[:, others], s[:, others] = ur, sr, uo, so
    return u, s, waiting, age


def _measure(net, p: dict, crng: np.random.Generator, u, s, waiting, age, probs, lineage, batch,
             gene_effect, lib_effect, obs_names):
    """The AnnData of measured cells: library sizes and negative-binomial counts drawn from
    ``crng`` (batch ``gene_effect`` (batches, genes) and ``lib_effect`` given), the true
    layers, ``obs`` and ``obsm["fate_probs_true"]``; ``uns`` is left to the caller."""
    import anndata as ad

    n_cells, n_batches = len(u), len(lib_effect)
    lib = p["library_size"] * np.exp(p["library_log_sd"] * crng.standard_normal(n_cells)) * lib_effect[batch]
    u_true = (u * net.alpha_max / net.beta).astype(np.float32)
    s_true = (s * net.alpha_max / net.gamma).astype(np.float32)
    scale = lib[:, None] * gene_effect[batch]
    spliced = _negative_binomial(crng, s_true * scale, p["nb_theta"])
    unspliced = _negative_binomial(crng, u_true * scale, p["theta_unspliced"])

    fates = list(net.fates)
    lineage_names = np.array(fates)[lineage]
    obs = pd.DataFrame({
        "fate": pd.Categorical(np.where(waiting, "progenitor", lineage_names), categories=["progenitor"] + fates),
        "lineage": pd.Categorical(lineage_names, categories=fates),
        "pseudotime": (age / p["t_diff"]).astype(np.float64),
        "differentiating": ~waiting,
        "committed": probs[np.arange(n_cells), lineage] >= 0.9,
        "batch": pd.Categorical([f"batch{b}" for b in batch], categories=[f"batch{b}" for b in range(n_batches)]),
        "library_size": lib,
    }, index=obs_names)
    adata = ad.AnnData(X=sp.csr_matrix(spliced), obs=obs, var=net.var_frame())
    adata.layers["spliced"] = sp.csr_matrix(spliced)
    adata.layers["unspliced"] = sp.csr_matrix(unspliced)
    adata.layers["velocity_true"] = (net.alpha_max * (u - s)).astype(np.float32)
    adata.layers["spliced_true"], adata.layers["unspliced_true"] = s_true, u_true
    adata.obsm["fate_probs_true"] = pd.DataFrame(probs, index=obs_names, columns=fates)
    return adata


def simulate(n_cells: int = 3000, n_genes: int = 500, n_fates: int = 3, n_batches: int = 2,
             seed: int = 0, **params):
    """Simulate a branching differentiation with a known answer to every question we ask.

    A progenitor pool feeds ``n_fates`` terminal fates. Cells leave the pool at a constant
    rate (an exponential waiting time), so a snapshot holds a steady progenitor pool plus
    differentiating cells of every age. The decision is made by a toggle switch of master
    transcription factors and locked in by secondary TFs; target modules follow through
    splicing kinetics; counts are drawn with library-size variation and batch effects.
    Used in chapters 03 and 08--13.

    Parameters
    ----------
    n_cells, n_genes, n_fates, n_batches
        Size of the world. The default (3,000 x 500, 3 fates, 2 batches) is the course size.
    seed
        Everything (network, gene names, trajectories, futures, counts) follows from it.
    **params
        Any key of :data:`DEFAULTS`, e.g. ``batch_log_sd=0.1`` (per-gene batch log-effect),
        ``n_futures=30`` (futures per cell for the true fate probabilities), ``noise``.

    Returns
    -------
    AnnData
        ``X`` and ``layers["spliced"]``: spliced counts; ``layers["unspliced"]``: unspliced
        counts (integer-valued float32 CSR); ``layers["velocity_true"]``: the true ``ds/dt =
        beta u - gamma s`` of the expected abundance (per unit library size, before batch
        effects and sampling); ``layers["spliced_true"]``/``["unspliced_true"]``: that
        expected abundance.
        ``obs``: ``fate`` (``progenitor`` while in the pool, else the fate the cell's own
        future reaches), ``lineage`` (that fate for every cell, progenitors included),
        ``pseudotime`` (time since leaving the pool / ``t_diff``; 0 in the pool),
        ``differentiating`` (left the pool), ``committed`` (its lineage has true probability
        >= 0.9), ``batch``, ``library_size``.
        ``obsm["fate_probs_true"]``: DataFrame (cells x fates), each row the fraction of
        ``n_futures`` re-simulated futures reaching each fate; rows sum to 1. Column names are
        also in ``uns["fate_names"]``.
        ``var``: ``role``, ``module``, ``alpha_max``, ``beta``, ``gamma``, ``bias``.
        ``uns["grn"]``: true edges (``regulator``, ``target``, ``sign``, ``weight`` arrays);
        ``uns["simulation"]``: every parameter and the seed.

    Notes
    -----
    The gene symbols are borrowed from human gene lists so that one vocabulary serves real
    and simulated cells. They are labels only: the simulated regulation has nothing to do with
    what these genes do in a real cell.
    """
    p = _check_params(params)
    if min(n_cells, n_batches) < 1:
        raise ValueError("n_cells and n_batches must be positive. Fix: e.g. n_cells=3000, n_batches=2.")
    s_net, s_traj, s_fut, s_count = np.random.SeedSequence(seed).spawn(4)
    net = build_network(n_genes, n_fates, np.random.default_rng(s_net), p)
    u, s, waiting, age = _grow(net, p, n_cells, np.random.default_rng(s_traj))
    probs, outcome = future_fates(net, u[:, net.reg], s[:, net.reg], waiting, p, int(p["n_futures"]), s_fut)

    # Measurement: library size, batches, negative-binomial sampling.
    crng = np.random.default_rng(s_count)
    batch = crng.integers(0, n_batches, n_cells)
    gene_effect = np.exp(p["batch_log_sd"] * crng.standard_normal((n_batches, n_genes)))
    lib_effect = np.exp(p["batch_library_log_sd"] * crng.standard_normal(n_batches))
    obs_names = pd.Index([f"cell{i:05d}" for i in range(n_cells)])
    adata = _measure(net, p, crng, u, s, waiting, age, probs, outcome[:, 0], batch, gene_effect,
                     lib_effect, obs_names)
    adata.uns["fate_names"] = np.array(list(net.fates), dtype=object)
    adata.uns["grn"] = net.grn_dict()
    adata.uns["simulation"] = {"simulator_version": SIMULATOR_VERSION, "seed": int(seed),
                               "n_cells": int(n_cells), "n_genes": int(n_genes), "n_fates": int(n_fates),
                               "n_batches": int(n_batches), **{k: p[k] for k in DEFAULTS},
                               "batch_gene_log_effect": np.log(gene_effect),
                               "batch_library_log_effect": np.log(lib_effect)}
    return adata
