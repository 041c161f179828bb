"""Splicing kinetics and stochastic regulator dynamics of the simulator (chapter 03).

Each gene follows the splicing ODE of RNA velocity (La Manno et al. 2018; scVelo)::

    du/dt = alpha(t) - beta * u          (unspliced: transcription, then splicing)
    ds/dt = beta * u - gamma * s         (spliced: splicing, then degradation)

We integrate in *normalised* units ``u' = u beta / alpha_max`` and ``s' = s gamma / alpha_max``,
in which both sit at ``a = alpha / alpha_max`` in steady state::

    du'/dt = beta (a - u'),    ds'/dt = gamma (u' - s').

With ``a`` held constant over a step the update is exact (an exponential integrator), so the
step size only limits how often ``a`` is refreshed. Regulators additionally receive
transcriptional noise, ``sigma * sqrt(dt) * N(0, 1)`` added to ``u'`` each step: an
Euler--Maruyama scheme for the stochastic part. Their spliced level ``x = s'`` is the input of
the network. Non-regulators do not feed back, so they are integrated afterwards, on a coarser
grid, from the recorded regulator path.

The fate a future reaches is the fate whose programme (master + secondary TFs) has the highest
mean activity at the end of the horizon.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

from tflib.datasets._grn import Network


class Stepper:
    """Exact one-step update of ``(u', s')`` for a fixed set of genes and step ``dt``.

    With ``a`` constant over the step::

        u1 = eb u0 + (1 - eb) a
        s1 = eg s0 + d u0 + (1 - eg - d) a,   d = gamma (eb - eg) / (gamma - beta)

    where ``eb = exp(-beta dt)`` and ``eg = exp(-gamma dt)``.
    """

    def __init__(self, beta: np.ndarray, gamma: np.ndarray, dt: float, dtype=np.float64):
        eb, eg = np.exp(-beta * dt), np.exp(-gamma * dt)
        d = gamma / (gamma - beta) * (eb - eg)
        self.eb, self.eg, self.d = (x.astype(dtype) for x in (eb, eg, d))
        self.cu, self.cs = (1.0 - eb).astype(dtype), (1.0 - eg - d).astype(dtype)

    def __call__(self, u: np.ndarray, s: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> None:
        """Advance ``u, s`` (cells, genes) in place; ``a`` is overwritten, ``tmp`` is scratch."""
        s *= self.eg
        np.multiply(u, self.d, out=tmp)
        s += tmp
        u *= self.eb
        np.multiply(a, self.cs, out=tmp)
        s += tmp
        a *= self.cu
        u += a


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def rates(x: np.ndarray, net: Network, cols: np.ndarray, perturb: dict | None = None) -> np.ndarray:
    """Normalised transcription rates ``a`` of genes ``cols`` given regulator activity ``x``.

    ``perturb`` maps a gene index to a fixed rate: 0 is a knockout, ``factor`` a constitutive
    overexpression at ``factor`` times the gene's maximal rate.
    """
    a = expit(x @ net.W[:, cols] + net.bias[cols])
    for gene, value in (perturb or {}).items():
        hit = np.flatnonzero(cols == gene)
        if len(hit):
            a[:, hit[0]] = value
    return a


def regulator_fixed_point(net: Network, n_steps: int = 4000, dt: float = 0.05,
                          perturb: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free steady state of all genes in the progenitor pool (niche signal on).

    ``perturb`` as in :func:`rates`: the pool of a world where those genes are fixed.
    """
    cols = np.arange(len(net.genes))
    step = Stepper(net.beta, net.gamma, dt)
    u, s = np.zeros((1, len(cols))), np.zeros((1, len(cols)))
    for _ in range(n_steps):
        step(u, s, rates(s[:, net.reg], net, cols, perturb), np.empty_like(u))
    return u[0], s[0]


def run_regulators(net: Network, u: np.ndarray, s: np.ndarray, leave_step: np.ndarray, n_steps: int,
                   dt: float, noise: float, rng: np.random.Generator, perturb: dict | None = None,
                   record_every: int = 0, chunk: int = 4096) -> np.ndarray | None:
    """Euler--Maruyama on the regulator subsystem, in place on ``u, s`` (cells, regulators).

    ``leave_step`` (cells,) is the step at which each trajectory leaves the progenitor pool:
    before it the progenitor TF is transcribed, from it on not. If ``record_every`` > 0, the
    mean regulator activity over each block of that many steps is returned, shape
    (blocks, cells, regulators), for integrating the non-regulators. Cells are processed in
    chunks (cache-friendly); the random numbers depend only on ``rng``, the shapes and ``chunk``.
    Genes in ``perturb`` (gene index -> fixed normalised rate) get no transcriptional noise.
    """
    reg, dtype = net.reg, u.dtype
    p_col = int(np.flatnonzero(reg == net.progenitor_tf)[0])
    step = Stepper(net.beta[reg], net.gamma[reg], dt, dtype=dtype)
    Wrr, b = net.W[:, reg].astype(dtype), net.bias[reg].astype(dtype)
    pert = {int(np.flatnonzero(reg == g)[0]): v for g, v in (perturb or {}).items() if g in reg}
    scale = dtype.type(noise * np.sqrt(dt))
    path = np.zeros((n_steps // record_every, *u.shape), dtype) if record_every else None
    for sl in _chunks(len(u), chunk):
        uc, sc, leave = u[sl], s[sl], leave_step[sl]
        a, tmp, eps = (np.empty_like(uc) for _ in range(3))
        for t in range(n_steps):
            np.matmul(sc, Wrr, out=a)
            a += b
            expit(a, out=a)
            a[:, p_col] *= t < leave
            for c, v in pert.items():
                a[:, c] = v
            step(uc, sc, a, tmp)
            rng.standard_normal(dtype=dtype, out=eps)
            eps *= scale
            for c in pert:                  # a fixed rate is fixed: no transcriptional noise
                eps[:, c] = 0.0
            uc += eps
            np.maximum(uc, 0.0, out=uc)
            if record_every:
                path[t // record_every, sl] += sc
    if record_every:
        path /= record_every
    return path


def run_targets(net: Network, cols: np.ndarray, u: np.ndarray, s: np.ndarray, path: np.ndarray,
                dt: float, chunk: int = 512, perturb: dict | None = None) -> None:
    """Integrate non-regulator genes ``cols`` in place along a recorded regulator ``path``.

    ``perturb`` maps a gene index to a fixed normalised rate, as in :func:`rates`.
    """
    step = Stepper(net.beta[cols], net.gamma[cols], dt, dtype=u.dtype)
    W, b = net.W[:, cols].astype(u.dtype), net.bias[cols].astype(u.dtype)
    pert = {int(np.flatnonzero(cols == g)[0]): v for g, v in (perturb or {}).items() if g in cols}
    for sl in _chunks(len(u), chunk):
        uc, sc = u[sl], s[sl]
        a, tmp = np.empty_like(uc), np.empty_like(uc)
        for x in path[:, sl]:
            np.matmul(x.astype(u.dtype), W, out=a)
            a += b
            expit(a, out=a)
            for c, v in pert.items():
                a[:, c] = v
            step(uc, sc, a, tmp)


def future_fates(net: Network, u0: np.ndarray, s0: np.ndarray, waiting: np.ndarray, p: dict,
                 n_futures: int, seed, perturb: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Re-simulate every cell's future ``n_futures`` times; return (probabilities, outcomes).

    ``u0, s0`` are the cells' normalised regulator states (cells, regulators). Cells still in
    the progenitor pool (``waiting``) leave it after an exponential waiting time (mean
    ``mean_wait``, memoryless, capped at ``wait_cap``); then each future runs ``t_decide``
    more time units. The random numbers depend only on ``seed`` and the shapes, so a
    perturbed and a baseline call share them (common random numbers): a perturbation that
    changes no regulator's path changes no outcome. ``outcomes`` is (cells, n_futures).
    """
    n_cells, dt = len(u0), float(p["dt"])
    rng = np.random.default_rng(seed)
    u = np.repeat(u0.astype(np.float32), n_futures, axis=0)
    s = np.repeat(s0.astype(np.float32), n_futures, axis=0)
    wait = np.minimum(rng.exponential(p["mean_wait"], size=len(u)), p["wait_cap"])
    wait[~np.repeat(np.asarray(waiting, bool), n_futures)] = 0.0
    n_steps = int(np.ceil((p["wait_cap"] + p["t_decide"]) / dt))
    run_regulators(net, u, s, np.ceil(wait / dt), n_steps, dt, p["noise"], rng, perturb)
    score = s @ net.programmes().T                  # (cells * futures, fates)
    outcome = score.argmax(axis=1).reshape(n_cells, n_futures)
    probs = np.stack([(outcome == f).mean(axis=1) for f in range(len(net.fates))], axis=1)
    return probs, outcome
