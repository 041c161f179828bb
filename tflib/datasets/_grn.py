"""The simulator's gene regulatory network and per-gene kinetics (chapter 03).

The network has four layers of genes:

``progenitor_tf``
    One transcription factor (TF) that keeps cells in the progenitor pool. It is transcribed
    only while a cell sits in the pool (an external "niche" signal); it represses every
    master regulator.
``master_tf``
    One per fate. Each activates itself and represses the other masters: a multi-way
    toggle switch. Once the progenitor TF fades, noise decides which master wins.
``secondary_tf``
    A few per fate, activated by their master, self-activating (so they lock a decision in
    once it is made) and repressing the other fates' masters.
``decoy_tf``, ``target``, ``housekeeping``
    Genes without outgoing edges. Targets belong to a module (the progenitor module or one
    fate's module) and are activated by one or two regulators of that module, sometimes
    repressed by another fate's master. Decoy TFs are targets that carry transcription-factor
    names but regulate nothing. Housekeeping genes are transcribed at a constant rate.

Every gene ``g`` has a transcription rate
``alpha_g(t) = alpha_max_g * sigmoid(bias_g + sum_r w_rg * x_r(t))`` where ``x_r`` is the
spliced abundance of regulator ``r`` divided by its maximal steady state. The network is
stored on the AnnData as an edge table in ``uns["grn"]`` and per-gene columns in ``var``
(``role``, ``module``, ``alpha_max``, ``beta``, ``gamma``, ``bias``), which is all that
:class:`Network.from_anndata` needs to rebuild it (used by ``knockout``/``overexpress``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tflib.datasets import _names

#: Every tunable parameter of the simulator with its default (stored in ``uns["simulation"]``).
DEFAULTS: dict = {
    # network
    "n_secondary": 2, "n_decoy_tfs": 10, "frac_progenitor_module": 0.10,
    "frac_housekeeping": 0.25, "frac_repressed": 0.15,
    "w_self": 8.0, "w_inhibit": 8.0, "w_progenitor": 8.0, "master_bias": 1.0,
    "fate_bias_step": 0.05, "w_secondary": 7.0, "w_secondary_self": 8.0,
    "w_secondary_inhibit": 3.0, "secondary_bias": -4.5, "target_bias": -3.0,
    # kinetics (rates per unit time)
    "gamma_median": 0.25, "gamma_log_sd": 0.4, "beta_median": 1.0, "beta_log_sd": 0.3,
    "tf_gamma": 0.8, "tf_beta": 2.0, "progenitor_tf_gamma": 1.2, "expr_median": 6.0, "expr_log_sd": 0.8,
    "tf_expr_median": 1.5,
    # trajectories
    "frac_progenitor": 0.2, "t_diff": 14.0, "t_burn": 8.0, "dt": 0.1, "noise": 0.12,
    # futures (true fate probabilities)
    "n_futures": 30, "mean_wait": 3.0, "wait_cap": 5.0, "t_decide": 12.0,
    # measurement
    "library_log_sd": 0.3, "library_size": 1.0, "batch_log_sd": 0.1, "batch_library_log_sd": 0.15,
    "nb_theta": 10.0, "theta_unspliced": 5.0,
}

ROLES = ("progenitor_tf", "master_tf", "secondary_tf", "decoy_tf", "target", "housekeeping")


def fate_names(n_fates: int) -> list[str]:
    """Names of the fates: ``fate_A``, ``fate_B``, ..."""
    return [f"fate_{chr(ord('A') + i)}" for i in range(n_fates)]


@dataclass
class Network:
    """A regulatory network with kinetics; regulators are the genes with outgoing edges."""

    genes: np.ndarray            # (G,) symbols
    role: np.ndarray             # (G,) one of ROLES
    module: np.ndarray           # (G,) fate name, "progenitor" or "none"
    alpha_max: np.ndarray        # (G,) maximal transcription rate (counts per unit time)
    beta: np.ndarray             # (G,) splicing rate
    gamma: np.ndarray            # (G,) degradation rate
    bias: np.ndarray             # (G,) baseline input of the sigmoid
    edges: pd.DataFrame          # regulator, target, sign, weight
    fates: list[str]
    reg: np.ndarray = field(init=False)   # indices of regulators (genes with outgoing edges)
    W: np.ndarray = field(init=False)     # (R, G) weights from regulators to every gene

    def __post_init__(self):
        index = {g: i for i, g in enumerate(self.genes)}
        src = np.array([index[g] for g in self.edges["regulator"]], dtype=int)
        dst = np.array([index[g] for g in self.edges["target"]], dtype=int)
        self.reg = np.unique(src)
        pos = {g: i for i, g in enumerate(self.reg)}
        self.W = np.zeros((len(self.reg), len(self.genes)))
        w = self.edges["sign"].to_numpy() * self.edges["weight"].to_numpy()
        np.add.at(self.W, (np.array([pos[s] for s in src], dtype=int), dst), w)

    # ---- views used by the dynamics -------------------------------------------------
    def index(self, gene: str) -> int:
        hits = np.flatnonzero(self.genes == gene)
        if len(hits) == 0:
            raise KeyError(f"Gene {gene!r} is not in the simulated world. Fix: pick one of "
                           f"sim.var_names (regulators: {', '.join(self.genes[self.reg])}).")
        return int(hits[0])

    def programmes(self) -> np.ndarray:
        """(F, R) 0/1 matrix: which regulators (master + secondaries) make up each fate."""
        prog = np.zeros((len(self.fates), len(self.reg)))
        for f, fate in enumerate(self.fates):
            member = np.isin(self.role[self.reg], ["master_tf", "secondary_tf"]) & (self.module[self.reg] == fate)
            prog[f] = member / max(member.sum(), 1)
        return prog

    @property
    def progenitor_tf(self) -> int:
        return int(np.flatnonzero(self.role == "progenitor_tf")[0])

    # ---- storage on AnnData ---------------------------------------------------------
    def var_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"role": pd.Categorical(self.role, categories=ROLES),
             "module": pd.Categorical(self.module),
             "alpha_max": self.alpha_max, "beta": self.beta, "gamma": self.gamma, "bias": self.bias},
            index=pd.Index(self.genes, name="gene"),
        )

    def grn_dict(self) -> dict:
        """The true edges as a dict of arrays (writes to ``.h5ad``)."""
        e = self.edges
        return {"regulator": e["regulator"].to_numpy(dtype=object).astype(str),
                "target": e["target"].to_numpy(dtype=object).astype(str),
                "sign": e["sign"].to_numpy(dtype=np.int8), "weight": e["weight"].to_numpy(dtype=float)}

    @classmethod
    def from_anndata(cls, adata) -> "Network":
        """Rebuild the network from ``adata.var`` and ``adata.uns`` (nothing from memory)."""
        missing = [k for k in ("grn", "simulation", "fate_names") if k not in adata.uns]
        missing += [c for c in ("role", "module", "alpha_max", "beta", "gamma", "bias") if c not in adata.var]
        if missing:
            raise ValueError(f"This AnnData lacks the simulator's records {missing}. Fix: pass the "
                             "object returned by tflib.datasets.simulate (or its .h5ad read back), "
                             "without dropping its var columns or uns entries.")
        n_world = dict(adata.uns["simulation"]).get("n_genes")
        if n_world is not None and adata.n_vars != int(n_world):
            raise ValueError(f"This AnnData has {adata.n_vars} genes but its simulated world has "
                             f"{int(n_world)}: re-simulating futures needs every gene of the network. Fix: "
                             "pass the full output of tflib.datasets.simulate, not a gene subset (subset "
                             "the result instead).")
        v, g = adata.var, adata.uns["grn"]
        edges = pd.DataFrame({k: np.asarray(g[k]) for k in ("regulator", "target", "sign", "weight")})
        return cls(np.asarray(adata.var_names, dtype=str), v["role"].astype(str).to_numpy(),
                   v["module"].astype(str).to_numpy(), v["alpha_max"].to_numpy(float),
                   v["beta"].to_numpy(float), v["gamma"].to_numpy(float), v["bias"].to_numpy(float),
                   edges, [str(f) for f in adata.uns["fate_names"]])


def _lognormal(rng, median, log_sd, size):
    return median * np.exp(log_sd * rng.standard_normal(size))


def build_network(n_genes: int, n_fates: int, rng: np.random.Generator, p: dict) -> Network:
    """Draw a network: roles, modules, edges, weights and kinetics (see module docstring)."""
    fates = fate_names(n_fates)
    n_sec, n_decoy = int(p["n_secondary"]), int(p["n_decoy_tfs"])
    n_reg = 1 + n_fates * (1 + n_sec)
    n_tf = n_reg + n_decoy
    n_hk = int(round(p["frac_housekeeping"] * n_genes))
    n_prog = int(round(p["frac_progenitor_module"] * n_genes))
    n_fate_targets = n_genes - n_tf - n_hk - n_prog
    if n_fates < 2:
        raise ValueError(f"n_fates={n_fates}: the simulator's progenitors choose between fates, so it needs "
                         "n_fates >= 2. Fix: n_fates=2 or more.")
    if n_fate_targets < 5 * n_fates:
        def targets(n):   # fate targets left in n genes once TFs, housekeeping and progenitor genes are drawn
            return n - n_tf - int(round(p["frac_housekeeping"] * n)) - int(round(p["frac_progenitor_module"] * n))
        smallest = next(n for n in range(n_tf, 100 * n_tf + 1000) if targets(n) >= 5 * n_fates)
        raise ValueError(f"n_genes={n_genes} is too small for n_fates={n_fates}: it needs at least "
                         f"n_genes={smallest} ({n_tf} TFs, housekeeping and progenitor genes, and 5 targets "
                         "per fate). Fix: raise n_genes to that, or lower n_fates.")
    tf_names, other_names = _names.draw_names(n_tf, n_genes - n_tf, rng)

    role = (["progenitor_tf"] + ["master_tf"] * n_fates + ["secondary_tf"] * (n_fates * n_sec)
            + ["decoy_tf"] * n_decoy + ["target"] * (n_prog + n_fate_targets) + ["housekeeping"] * n_hk)
    module = (["progenitor"] + fates + [f for f in fates for _ in range(n_sec)] + ["none"] * n_decoy
              + ["progenitor"] * n_prog + [fates[i % n_fates] for i in range(n_fate_targets)] + ["none"] * n_hk)
    # Decoy TFs are ordinary module targets that happen to carry TF names.
    decoy_modules = rng.choice(["progenitor"] + fates, size=n_decoy)
    module[n_reg:n_tf] = list(decoy_modules)
    genes = np.array(tf_names + other_names)
    role, module = np.array(role), np.array(module)

    master = {f: 1 + i for i, f in enumerate(fates)}
    secondary = {f: [1 + n_fates + i * n_sec + k for k in range(n_sec)] for i, f in enumerate(fates)}
    edges: list[tuple[int, int, int, float]] = []
    bias = np.full(n_genes, float(p["target_bias"]))
    bias[0] = 3.0                                   # progenitor TF: on while in the niche
    bias[role == "housekeeping"] = 3.0              # constant transcription
    # Fates differ slightly in how easily their master wins: A most, the last fate least.
    fate_bias = p["fate_bias_step"] * (np.arange(n_fates)[::-1] - (n_fates - 1) / 2)
    for i, f in enumerate(fates):
        m = master[f]
        bias[m] = p["master_bias"] + fate_bias[i]
        edges += [(0, m, -1, p["w_progenitor"]), (m, m, 1, p["w_self"])]
        edges += [(master[g], m, -1, p["w_inhibit"]) for g in fates if g != f]
        for s in secondary[f]:
            bias[s] = p["secondary_bias"]
            edges += [(m, s, 1, p["w_secondary"]), (s, s, 1, p["w_secondary_self"])]
            edges += [(s, master[g], -1, p["w_secondary_inhibit"]) for g in fates if g != f]
    for t in np.flatnonzero(np.isin(role, ["target", "decoy_tf"])):
        mod = module[t]
        if mod == "progenitor":
            edges.append((0, t, 1, float(rng.uniform(5.0, 7.0))))
            continue
        pool = [master[mod]] + secondary[mod]
        for r in rng.choice(pool, size=int(rng.integers(1, 3)), replace=False):
            edges.append((int(r), t, 1, float(rng.uniform(4.0, 8.0))))
        if rng.random() < p["frac_repressed"]:
            other = rng.choice([g for g in fates if g != mod])
            edges.append((master[other], t, -1, float(rng.uniform(2.0, 4.0))))

    is_tf = np.isin(role, ["progenitor_tf", "master_tf", "secondary_tf"])
    gamma = np.clip(_lognormal(rng, p["gamma_median"], p["gamma_log_sd"], n_genes), 0.05, 1.5)
    beta = np.clip(_lognormal(rng, p["beta_median"], p["beta_log_sd"], n_genes), 0.2, 5.0)
    gamma[is_tf] = _lognormal(rng, p["tf_gamma"], 0.1, is_tf.sum())
    beta[is_tf] = _lognormal(rng, p["tf_beta"], 0.1, is_tf.sum())
    gamma[0] = p["progenitor_tf_gamma"]            # the pool signal fades quickly after exit
    close = np.abs(beta - gamma) < 0.02             # the closed-form update needs beta != gamma
    beta[close] += 0.05
    level = _lognormal(rng, p["expr_median"], p["expr_log_sd"], n_genes)
    level[is_tf] = _lognormal(rng, p["tf_expr_median"], 0.3, is_tf.sum())
    alpha_max = level * gamma                       # spliced steady state alpha/gamma = level
    e = pd.DataFrame(edges, columns=["regulator", "target", "sign", "weight"])
    e["regulator"], e["target"] = genes[e["regulator"]], genes[e["target"]]
    return Network(genes, role, module, alpha_max, beta, gamma, bias, e, fates)
