# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 09 Fate mapping with CellRank
#
# Chapter 08 gave every cell a velocity: a noisy, local guess of where its expression is
# heading. A biologist asks a different question: *which fate will this cell end up in, and
# how sure are we?* CellRank {cite:p}`lange2022cellrank,weiler2024cellrank2` answers it by
# turning the local guesses into a Markov chain on the cells, finding the chain's stable end
# points, and computing for every cell the probability of reaching each of them. These
# {term}`fate probabilities <fate probability>` are what the article draws as a donut chart per
# cell (its Figure 1C), and what the perturbation chapters try to shift.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. explain absorption probabilities of a Markov chain and compute them for a toy chain;
# 2. build a transition matrix from a velocity kernel and a connectivity kernel, and say what
#    each contributes and what the weights do;
# 3. describe how {term}`GPCCA` coarse-grains a chain into {term}`macrostates <macrostate>`
#    and how {term}`terminal states <terminal state>` are chosen among them;
# 4. compute and draw fate probabilities on the pancreas with `tflib.tl.fates` and
#    `tflib.pl.fate_donuts`;
# 5. rank candidate driver genes per fate with q-values, and say why they are candidates only;
# 6. validate fate probabilities against the simulator's truth (Pearson, MAE, AUROC) and
#    explain why GPCCA limits this chapter to a few thousand cells.
# ```

# %% tags=["remove-cell"]
# Colab / fresh hub only: install the course library once (skipped when tflib imports).
try:
    import tflib
except ImportError:
    # %pip install -q "tflib @ git+https://github.com/transcriptformers/course@main"
    import tflib

# %%
# %matplotlib inline
import time
from pathlib import Path
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scvelo as scv
from IPython.display import Markdown
from myst_nb import glue
from sklearn.metrics import roc_auc_score

import tflib
from tflib.pl.workflow import OKABE_ITO
from tflib.utils import round_sig

SEED = 0
rng = tflib.utils.notebook_setup(SEED)  # seeds, quiet libraries, plot style
scv.settings.verbosity = 0
# CellRank/scVelo deprecation chatter; results are asserted below
warnings.filterwarnings("ignore")


# %% [markdown]
# ## 1 Markov chain intuition
#
# Picture a cell as a walker on a graph whose nodes are the measured cells. At each step it
# moves to a neighbour with a probability given by row $i$ of a transition matrix $T$ (rows
# sum to 1). Some groups of states are *absorbing* in practice: once the walker is among
# mature beta cells it stays there. For a chain with transient states $Q$ (transitions among
# themselves) and absorbing states reached through $R$, the probability that a walker
# started in each transient state ends in each absorbing state is
#
# $$
# B = (I - Q)^{-1} R .
# $$
#
# These absorption probabilities are the fate probabilities. A four-state toy chain makes it
# concrete: a progenitor P that mostly stays put, an intermediate I, and two fates A and B.

# %%
states = ["P", "I", "A", "B"]
T_toy = np.array([
    [0.80, 0.15, 0.05, 0.00],  # P: mostly stays, sometimes moves on
    [0.10, 0.30, 0.40, 0.20],  # I: leans towards A
    [0.00, 0.00, 1.00, 0.00],  # A: absorbing
    [0.00, 0.00, 0.00, 1.00],  # B: absorbing
])
Q, R = T_toy[:2, :2], T_toy[:2, 2:]
B_exact = np.linalg.solve(np.eye(2) - Q, R)

# The same numbers by brute force: let 4,000 walkers start in P and follow the chain.
walk_rng = np.random.default_rng(SEED)
ends = []
for _ in range(4000):
    s = 0
    while s < 2:
        s = walk_rng.choice(4, p=T_toy[s])
    ends.append(states[s])
B_walk = pd.Series(ends).value_counts(normalize=True).reindex(["A", "B"]).to_numpy()
toy = pd.DataFrame(
    B_exact, index=["from P", "from I"], columns=["P(end in A)", "P(end in B)"]
)
toy.loc["from P, 4,000 walkers"] = B_walk
assert np.allclose(B_exact.sum(1), 1) and np.allclose(B_walk, B_exact[0], atol=0.03)
round_sig(toy)

# %% [markdown]
# The exact solution and the simulated walkers agree. CellRank does the same on a chain with
# one state per cell, where the "absorbing" states are groups of cells it has to find first,
# and where $(I-Q)^{-1}R$ is solved iteratively rather than by inversion.
#
# ## 2 Kernels: where the transition matrix comes from
#
# CellRank 2 builds $T$ from *kernels*, each a row-stochastic matrix over the kNN graph:
#
# - the **velocity kernel** scores each neighbour $j$ of cell $i$ by the cosine similarity
#   between $i$'s velocity and the displacement $x_j - x_i$ in gene space, and turns the
#   scores into probabilities with a softmax. It carries the *direction*, and all of
#   velocity's noise;
# - the **connectivity kernel** moves to neighbours in proportion to their kNN similarity.
#   It has no direction but is robust, and it keeps the walk on the data manifold.
#
# The course default is $T = 0.8\,T_\text{velocity} + 0.2\,T_\text{connectivity}$, the mix
# CellRank's authors recommend. More connectivity smooths noisy velocities but blurs
# direction; with the connectivity kernel alone the chain is undirected and fates are no longer defined by
# development. Other kernels plug into the same slot: pseudotime, experimental time, or (in
# chapter 10) a Transcriptformer embedding.
#
# ## 3 GPCCA: macrostates and terminal states
#
# Absorbing states are not given: CellRank has to find them. {term}`GPCCA` (generalised
# Perron cluster cluster analysis) computes a real Schur decomposition of $T$ for its leading
# eigenvalues, and finds the $k$ fuzzy groups of cells, the {term}`macrostates <macrostate>`,
# among which the walk moves slowly. Projected on these groups, $T$ becomes a small
# $k \times k$ *coarse* transition matrix. A macrostate whose coarse self-transition
# probability is close to 1 is hard to leave: a candidate {term}`terminal state`. The
# macrostate with the smallest stationary probability is where walks *start*, the initial
# state. `tflib.tl.fates` chains all of this: kernels, GPCCA, terminal states by a stability
# threshold (or given by the caller), and the fate probabilities. It raises a
# `NoTerminalStateError` naming the settings to try next when nothing qualifies, refuses a
# cell graph that falls apart into pieces, and emits a `FateWarning` (listed in
# `adata.uns["tflib_fates"]["warnings"]`) when a chosen terminal state is where the flow
# *starts* (coarse inflow far below outflow, typically a self-renewing progenitor pool) or
# when one terminal state absorbs whole clusters that have no state of their own.
#
# ````{admonition} Library code: tflib.tl.fates
# :class: dropdown
# ```{literalinclude} ../tflib/tl/fate.py
# :language: python
# :pyobject: fates
# ```
# ````
#
# ## 4 The pancreas
#
# We start from chapter 08's stochastic velocity. `tflib.tl.load_or_build` reads
# `_artifacts/08_pancreas_velocity.h5ad` when chapter 08 saved it with the same call, and
# otherwise reruns that call (`tflib.tl.pancreas_velocity(seed=0)`, seconds); the line it
# prints says which. We ask GPCCA for five macrostates. One is set aside as the initial
# state; those with self-transition probability at least 0.9 become terminal. The result is
# saved for chapter 13.

# %%
ARTIFACTS = Path("_artifacts")
panc = tflib.tl.load_or_build(
    ARTIFACTS / "08_pancreas_velocity.h5ad", tflib.tl.pancreas_velocity, seed=SEED
)
t0 = time.perf_counter()
g = tflib.tl.fates(
    panc,
    cluster_key="clusters",
    n_states=5,
    stability_threshold=0.9,
    n_initial=1,
    seed=SEED,
)
t_fates = time.perf_counter() - t0
tflib.tl.save_artifact(  # = tflib.tl.pancreas_fates(seed=0): the same two steps
    panc, ARTIFACTS / "09_pancreas_fates.h5ad", tflib.tl.pancreas_fates,
    seed=SEED, overwrite=True,
)
info = panc.uns["tflib_fates"]
stab = pd.Series(
    info["macrostate_stability"], index=info["macrostates"], name="self-transition"
)
terminal = list(info["terminal_states"])
print("macrostates:", ", ".join(f"{k} ({v:.3f})" for k, v in stab.items()))
print("initial:", info["initial_states"], "| terminal:", terminal, f"| {t_fates:.0f} s")
print("tflib.tl.fates warnings:", info["warnings"] or "none")
glue("c09_t_fates", t_fates, display=False)
glue("c09_terminal", Markdown(", ".join(terminal)), display=False)
glue("c09_initial", Markdown(", ".join(info["initial_states"])), display=False)
glue("c09_n_terminal", len(terminal), display=False)
P = tflib.tl.fate_probs_frame(panc)
assert np.allclose(P.sum(1), 1.0) and (P.to_numpy() >= 0).all()
assert any(t.startswith("Alpha") for t in terminal) and any(
    t.startswith("Beta") for t in terminal
)

# %% mystnb={"image": {"alt": "Left: pancreas UMAP with the five GPCCA macrostates labelled on their most typical cells and the rest grey. Right: a heat map of the coarse transition matrix between macrostates, with each macrostate's probability of staying on the diagonal."}}
fig, axes = plt.subplots(
    1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.3, 1]}
)
sc.pl.umap(
    panc,
    color="macrostate",
    ax=axes[0],
    show=False,
    frameon=False,
    palette=[
        OKABE_ITO[k] for k in ("orange", "sky_blue", "green", "blue", "vermillion")
    ],
    title="GPCCA macrostates (most typical cells)",
    na_color="#E0E0E0",
)
coarse = g.coarse_T.to_numpy()
im = axes[1].imshow(coarse, cmap="cividis", vmin=0, vmax=1)
labels = [str(c) for c in g.coarse_T.columns]
axes[1].set_xticks(range(len(labels)), labels, rotation=45, ha="right")
axes[1].set_yticks(range(len(labels)), labels)
for i in range(len(labels)):
    for j in range(len(labels)):
        axes[1].text(j, i, f"{coarse[i, j]:.2f}", ha="center", va="center", fontsize=8,
                     color="black" if coarse[i, j] > 0.5 else "white")
axes[1].set(title="coarse transition matrix", xlabel="to", ylabel="from")
fig.colorbar(im, ax=axes[1], shrink=0.8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure 1.** Left: the five GPCCA macrostates of the pancreas on the UMAP (only the 30
# most typical cells of each carry a label; the others are grey), named after the cluster
# most of their cells belong to. Right: the coarse transition matrix between macrostates;
# the diagonal is each macrostate's probability of staying. The initial state is
# {glue:md}`c09_initial`, and the macrostates above the 0.9 bar, the terminal states, are
# {glue:md}`c09_terminal`. The whole fate computation took {glue:text}`c09_t_fates:.0f` s.
#
# Two of the terminal states are endocrine fates, alpha and beta. The third is a second
# ductal macrostate, and it needs thought. Ductal cells in this dataset are a self-renewing
# pool: in chapter 08's QC table they have the shortest velocities of all clusters and a low
# transition confidence, so a walk that starts among them stays there for a long time, and
# GPCCA reports a part of them as stable. A "terminal state" is a statement about the Markov
# chain, not about biology. Delta and epsilon cells are few in this subset (16 and 27 cells),
# so they do not form macrostates of their own, and the Ngn3-low macrostate falls below the
# 0.9 bar because a fifth of its walks leave towards beta.
#
# ### Fate probabilities as donuts
#
# Each cell's fate probabilities form one row of `adata.obsm["fate_probs"]`. The article's
# Figure 1C draws them as a small donut chart on the cell's position.

# %% mystnb={"image": {"alt": "Left: pancreas UMAP coloured by cluster. Right: the same UMAP in grey with small donut charts for 70 cells, each donut split into the cell's probabilities of reaching each terminal state."}}
fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
sc.pl.umap(
    panc,
    color="clusters",
    ax=axes[0],
    show=False,
    frameon=False,
    legend_loc="on data",
    legend_fontsize=7,
    legend_fontoutline=2,
    title="clusters",
)
tflib.pl.fate_donuts(
    panc, n_donuts=70, seed=SEED, ax=axes[1], title="fate probabilities (70 cells)"
)
plt.show()

# %% [markdown]
# **Figure 2.** Pancreas UMAP coloured by cluster (left) and the fate probabilities of 70
# cells spread over the embedding (right; one donut per cell, slices in colour-blind-safe
# colours, all cells in grey underneath). Near the ductal tip the donuts split between the
# ductal state and beta; along the whole endocrine path they are almost entirely beta, and
# only cells at the alpha tip carry a large alpha slice.
#
# The table below averages the probabilities over each cluster: the mixture of fates that a
# typical cell of that cluster is heading to.

# %%
by_cluster = P.groupby(panc.obs["clusters"].to_numpy()).mean()
by_cluster = by_cluster.loc[
    [c for c in panc.obs["clusters"].cat.categories if c in by_cluster.index]
]
alpha_col = next(c for c in P.columns if c.startswith("Alpha"))
beta_col = next(c for c in P.columns if c.startswith("Beta"))
glue("c09_alpha_in_alpha", float(by_cluster.loc["Alpha", alpha_col]), display=False)
glue("c09_beta_in_beta", float(by_cluster.loc["Beta", beta_col]), display=False)
glue("c09_beta_in_pre", float(by_cluster.loc["Pre-endocrine", beta_col]), display=False)
glue("c09_beta_in_delta", float(by_cluster.loc["Delta", beta_col]), display=False)
absorbed = info[
    "absorbed_clusters"
]  # clusters without a state of their own, sent almost entirely to one
glue(
    "c09_absorbed",
    Markdown(", ".join(f"{c} → {s}" for c, s in absorbed.items()) or "none"),
    display=False,
)
assert (
    by_cluster[alpha_col].idxmax() == "Alpha"
    and by_cluster.loc["Alpha", alpha_col] > 0.4
)
assert by_cluster.loc["Beta", beta_col] > 0.8
round_sig(by_cluster)

# %% [markdown]
# Beta cells reach the beta state with mean probability {glue:text}`c09_beta_in_beta:.2f`,
# but alpha cells reach the alpha state with only {glue:text}`c09_alpha_in_alpha:.2f`, and
# pre-endocrine cells, which lineage tracing shows giving rise to all four endocrine types,
# are sent to beta with {glue:text}`c09_beta_in_pre:.2f`. Delta cells, a mature type, end in
# beta with {glue:text}`c09_beta_in_delta:.2f`. This is what the chain says, and it is
# biologically wrong in places. Three reasons: the velocity stream of chapter 08 (Figure 3)
# runs from the pre-endocrine cells mainly into the beta branch, the largest endocrine
# population here; the alpha terminal state is a small set of 30 cells at the far tip; and
# a cell type that is not a terminal state (delta, epsilon) must send its probability to
# one that is. `tflib.tl.fates` points at this itself: its `FateWarning` lists the clusters
# that have no terminal state and go almost entirely (at least 90 % of their cells with
# probability 0.9 or more) to one state, here {glue:md}`c09_absorbed`. For progenitors on the
# way to beta that is expected; on a subset with the pre-endocrine cells removed, the same
# warning names the alpha, delta and epsilon cells, all sent to beta. The next subsection
# gives the terminal states from biology instead of predicting them. Fate probabilities are conditional on the chosen
# terminal states, and they are only as good as the velocity field feeding the chain.
#
# ### Given terminal states, and why early cells all agree
#
# Giving the four endocrine types as terminal states by cluster (every cell of each cluster is
# absorbing) removes the ductal end point. The result has a striking feature: all ductal cells
# get the same fate mixture, to three decimals, and so do the Ngn3-low cells. Is that a bug in
# how the states are set, or what the chain says? Three checks answer it.

# %%
p2 = panc.copy()
endocrine = ["Alpha", "Beta", "Delta", "Epsilon"]
g2 = tflib.tl.fates(
    p2,
    cluster_key="clusters",
    n_states=5,
    seed=SEED,
    terminal_states={c: c for c in endocrine},
)
P2 = tflib.tl.fate_probs_frame(p2)
cl2 = p2.obs["clusters"].astype(str).to_numpy()
# largest within-cluster standard deviation over the fates
spread = P2.groupby(cl2).std().max(axis=1)
# (1) the absorbing cells are exactly the cells of the four clusters, no progenitor
#     among them
absorbing = p2.obs["terminal_state"].notna().to_numpy()
n_expected = int(np.isin(cl2, endocrine).sum())
# (2) CellRank's iterative answer equals the exact absorption probabilities
#     B = (I - Q)^-1 R
T2 = g2.transition_matrix
T2 = T2.toarray() if hasattr(T2, "toarray") else np.asarray(T2)
tr = ~absorbing
ends = p2.obs["terminal_state"].astype(str).to_numpy()[absorbing]
R2 = T2[np.ix_(tr, absorbing)] @ np.stack([ends == c for c in P2.columns], 1).astype(
    float
)
B2 = np.linalg.solve(np.eye(tr.sum()) - T2[np.ix_(tr, tr)], R2)
solve_err = float(np.abs(B2 - P2.to_numpy()[tr]).max())
# (3) where and when walks from ductal / Ngn3-low cells leave that region
early = np.isin(cl2, ["Ductal", "Ngn3 low EP"])
N_early = np.linalg.inv(np.eye(early.sum()) - T2[np.ix_(early, early)])
exit_where = (N_early @ T2[np.ix_(early, ~early)]).mean(0)
exit_via_high = float(exit_where[cl2[~early] == "Ngn3 high EP"].sum())
exit_steps = float(np.median(N_early.sum(1)))
glue("c09_given_absorbing", int(absorbing.sum()), display=False)
glue("c09_given_expected", n_expected, display=False)
glue("c09_given_solve_err", solve_err, display=False)
for name, short in (
    ("Ductal", "ductal"),
    ("Ngn3 low EP", "low"),
    ("Ngn3 high EP", "high"),
    ("Pre-endocrine", "pre"),
):
    glue(f"c09_given_sd_{short}", float(spread[name]), display=False)
glue("c09_given_exit_high", exit_via_high, display=False)
glue("c09_given_exit_steps", exit_steps, display=False)
assert int(absorbing.sum()) == n_expected and solve_err < 1e-4
assert (
    spread["Ductal"] < 0.01
    and spread["Ngn3 low EP"] < 0.01
    and spread["Pre-endocrine"] > 10 * spread["Ductal"]
)
assert exit_via_high > 0.99
round_sig(pd.DataFrame({"within-cluster sd (max over fates)": spread,
                   "mean P(Beta)": P2.groupby(cl2)["Beta"].mean()}))

# %% [markdown]
# First, the absorbing cells are {glue:text}`c09_given_absorbing` cells, exactly the
# {glue:text}`c09_given_expected` cells of the four endocrine clusters: no progenitor was made
# absorbing. Second, CellRank's iterative solution matches the exact absorption probabilities
# $B = (I-Q)^{-1}R$ from a dense solve to {glue:text}`c09_given_solve_err:.1e`. So the states
# are set as asked and the numbers are the chain's. Third, the reason: a fate probability is
# the average of the neighbours' fate probabilities one step ahead, so it only varies where
# walks starting nearby end differently. Every walk from a ductal or Ngn3-low cell leaves that
# region through Ngn3-high cells (a fraction {glue:text}`c09_given_exit_high:.3f`), after a
# median of {glue:text}`c09_given_exit_steps:.0f` steps of wandering inside it; by then it has
# forgotten where it started. The spread grows towards the endocrine clusters: the largest
# within-cluster standard deviation is {glue:text}`c09_given_sd_ductal:.4f` for ductal,
# {glue:text}`c09_given_sd_low:.4f` for Ngn3-low, {glue:text}`c09_given_sd_high:.3f` for
# Ngn3-high and {glue:text}`c09_given_sd_pre:.2f` for pre-endocrine cells. Identical
# probabilities upstream are a property of this chain, not a software error: in it, nothing in
# the progenitors' velocities or neighbourhoods separates a future alpha cell from a future
# beta cell. That is a statement about the data and the kernel, not evidence that the
# progenitors are uncommitted.
#
# ### Driver genes
#
# Which genes change along with the probability of a fate? CellRank correlates every gene's
# expression with each fate's probability across cells, with a confidence interval, a
# p-value and a Benjamini–Hochberg q-value per fate.
#
# ````{admonition} Library code: tflib.tl.fate_drivers
# :class: dropdown
# ```{literalinclude} ../tflib/tl/drivers.py
# :language: python
# :pyobject: fate_drivers
# ```
# ````

# %%
drivers = tflib.tl.fate_drivers(
    panc, estimator=g, lineages=[alpha_col, beta_col], n_top=8
)
glue(
    "c09_alpha_top",
    Markdown(", ".join(drivers.loc[drivers["fate"] == alpha_col, "gene"].head(3))),
    display=False,
)
glue(
    "c09_beta_top",
    Markdown(", ".join(drivers.loc[drivers["fate"] == beta_col, "gene"].head(3))),
    display=False,
)
assert (drivers["qval"] < 0.05).all()
drivers.pivot(index="rank", columns="fate", values="gene")

# %%
drivers.assign(corr=drivers["corr"].round(2)).set_index(["fate", "rank"])[
    ["gene", "corr", "qval"]
].head(8)

# %% [markdown]
# The top alpha drivers ({glue:md}`c09_alpha_top`) start with glucagon, the alpha-cell
# hormone. The top beta drivers ({glue:md}`c09_beta_top`) are general endocrine and neuronal
# genes rather than insulin: the beta probability is high along the whole endocrine path,
# so it correlates best with genes that rise along that path. Every listed gene has a tiny
# q-value, which says the correlation is unlikely to be zero, not that the gene causes the
# fate: glucagon is a *consequence* of becoming an alpha cell. With hundreds of correlated
# cells, nearly every gene near a fate passes a q-value filter. Chapters 12 and 13 turn such
# lists into falsifiable hypotheses and score them against a known network.
#
# ## 5 Checking fates against the truth
#
# The simulator knows the fate probabilities: for every cell it re-simulates the future
# many times and counts where the futures end (`obsm["fate_probs_true"]`). We run the same
# pipeline on chapter 08's 600-cell world with three fates, loaded with its velocity from
# `_artifacts/08_world_velocity.h5ad` (or rebuilt with the same call). The progenitor pool is itself a stable
# macrostate (cells wait there for a random time), so we ask for four macrostates and set one
# aside as the initial state.

# %%
simv = tflib.tl.load_or_build(  # chapter 08's world and velocity, or the same call again
    ARTIFACTS / "08_world_velocity.h5ad", tflib.tl.world_velocity, world_seed=SEED, seed=SEED
)
sim = simv  # velocity keeps the simulator's truth (obs, obsm["fate_probs_true"])
simv_velocity_only = simv.copy()  # before any fate run, for the weights exercise
t0 = time.perf_counter()
gs = tflib.tl.fates(simv, cluster_key="fate", n_states=4, n_initial=1, seed=SEED)
t_sim = time.perf_counter() - t0
truth = sim.obsm["fate_probs_true"]
Ps = tflib.tl.fate_probs_frame(simv)

rows = []
for state in Ps.columns:
    labels = simv.obs.loc[simv.obs["terminal_state"] == state, "fate"].astype(str)
    fate = labels.value_counts().index[0]
    est, tru = Ps[state].to_numpy(), np.asarray(truth[fate], dtype=float)
    lineage = (sim.obs["lineage"].astype(str) == fate).to_numpy()
    rows.append({"terminal state": state, "true fate": fate,
                 "purity": float((labels == fate).mean()),
                 "Pearson r": float(np.corrcoef(est, tru)[0, 1]),
                 "MAE": float(np.mean(np.abs(est - tru))),
                 "AUROC (true lineage)": float(roc_auc_score(lineage, est))})
val = pd.DataFrame(rows).set_index("terminal state")
pool = (sim.obs["fate"].astype(str) == "progenitor").to_numpy()
spread_est = float(Ps.to_numpy()[pool].std(0).mean())
spread_true = float(truth.to_numpy(dtype=float)[pool].std(0).mean())
glue("c09_pool_sd_est", spread_est, display=False)
glue("c09_pool_sd_true", spread_true, display=False)
initial_fate = (
    simv.obs.loc[simv.obs["initial_state"].notna(), "fate"]
    .astype(str)
    .value_counts()
    .index[0]
)
glue(
    "c09_sim_found",
    Markdown(f"{val['true fate'].nunique()} of {len(sim.uns['fate_names'])}"),
    display=False,
)
glue("c09_sim_r_min", float(val["Pearson r"].min()), display=False)
glue("c09_sim_r_max", float(val["Pearson r"].max()), display=False)
glue("c09_sim_mae", float(val["MAE"].mean()), display=False)
glue("c09_sim_auc", float(val["AUROC (true lineage)"].mean()), display=False)
glue("c09_sim_initial", Markdown(initial_fate), display=False)
glue("c09_t_sim", t_sim, display=False)
assert (
    set(val["true fate"]) == set(sim.uns["fate_names"]) and (val["purity"] >= 0.8).all()
)
# author measured 0.84-0.87 and 0.11-0.13
assert (val["Pearson r"] > 0.6).all() and (val["MAE"] < 0.2).all()
assert (val["AUROC (true lineage)"] > 0.8).all() and initial_fate == "progenitor"
round_sig(val)

# %% mystnb={"image": {"alt": "Three panels on the simulated world: donut charts of true fate probabilities on the UMAP, donut charts of CellRank's estimates for the same cells, and a scatter of estimated against true probability per fate with a black diagonal of perfect agreement."}}
order = list(val["true fate"])
est_named = pd.DataFrame(Ps.to_numpy(), index=Ps.index, columns=order)
simv.obsm["fate_probs_true"] = truth[order].to_numpy()
simv.obsm["fate_probs_est"] = est_named[order].to_numpy()
colours = tflib.pl.fate_colors(order)
fig, axes = plt.subplots(1, 3, figsize=(17, 5))
tflib.pl.fate_donuts(
    simv,
    key="fate_probs_true",
    names=order,
    colors=colours,
    ax=axes[0],
    n_donuts=60,
    seed=SEED,
    title="true fate probabilities",
    legend=False,
)
tflib.pl.fate_donuts(
    simv,
    key="fate_probs_est",
    names=order,
    colors=colours,
    ax=axes[1],
    n_donuts=60,
    seed=SEED,
    title="CellRank estimate (same cells)",
)
for fate in order:
    axes[2].scatter(
        truth[fate], est_named[fate], s=6, alpha=0.5, color=colours[fate], label=fate
    )
axes[2].plot([0, 1], [0, 1], color="black", linewidth=0.8)
axes[2].set(
    xlabel="true probability",
    ylabel="estimated probability",
    title="per cell and fate",
    aspect="equal",
)
axes[2].legend(frameon=False, markerscale=3)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure 3.** The simulated world on its UMAP: true fate probabilities from re-simulated
# futures (left) and CellRank's estimate for the same 60 cells (middle); right, every cell's
# estimated against true probability for each fate (black line: perfect agreement).
#
# All three fates are found ({glue:md}`c09_sim_found` true fates matched by a terminal
# state, each at least 80 % pure) and the set-aside initial state is the
# {glue:md}`c09_sim_initial` pool. Per fate, the Pearson correlation with the truth lies
# between {glue:text}`c09_sim_r_min:.2f` and {glue:text}`c09_sim_r_max:.2f`, the mean
# absolute error averages {glue:text}`c09_sim_mae:.2f`, and the estimated probability ranks
# the cells of the true lineage above the others with a mean AUROC of
# {glue:text}`c09_sim_auc:.2f`. The fate step took {glue:text}`c09_t_sim:.0f` s.
#
# The right panel shows where the errors are. The horizontal bands are the progenitor pool:
# CellRank gives its cells nearly the same mixture of fates (standard deviation across pool
# cells {glue:text}`c09_pool_sd_est:.3f`, averaged over fates), while the true probabilities
# of the same cells vary from cell to cell (standard deviation
# {glue:text}`c09_pool_sd_true:.2f`), and a few already lie close to 0 or 1, because in the
# simulator a progenitor's toggle switch can already lean one way. That lean
# is invisible in the velocity (chapter 08 found progenitor velocities uninformative) and in
# the neighbourhood graph, so no Markov chain built from them can recover it. Differentiating
# cells sit near 0 or 1 in both, which is where the high correlations come from.
#
# ## 6 Caveats and failure modes
#
# - **Cubic cost.** GPCCA needs a real Schur decomposition of the cell × cell transition
#   matrix. With dense linear algebra its cost grows roughly with the cube of the number of
#   cells: on the course machine (one core) it took about 4 s at 2,000 cells, about 185 s at
#   5,000, and did not finish at 10,000. That is why this chapter (and chapter 10) stays at or
#   below about 3,000 cells. For large data, use PETSc/SLEPc (`use_petsc=True`) with a sparse
#   Krylov–Schur solver, subsample, or aggregate cells into metacells first.
# - **Terminal states are a property of the chain.** A self-renewing or slowly moving
#   population (the ductal cells here, the progenitor pool in the simulator) can pass as
#   terminal; rare fates can be missed. Look at the coarse transition matrix, compare with
#   known biology, and give terminal states by cluster when they are known.
# - **Garbage in.** Fate probabilities inherit every velocity failure of chapter 08: constant
#   rate violations, backward-pointing boosts, incoherent regions. Check velocity QC before
#   interpreting fates.
# - **Sensitivity to settings.** The number of macrostates, the stability threshold and the
#   kernel weights change which states are terminal and hence every probability. Report them
#   (they are in `adata.uns["tflib_fates"]`) and show robustness over a few values.
# - **Drivers are correlations.** A driver list ranks genes that move with a fate, including
#   its consequences; q-values control false discoveries of *correlation*, not causation.
# - **Beyond velocity.** CellRank 2 offers kernels for pseudotime, real time points and
#   metabolic labelling; RegVelo {cite:p}`wang2024regvelo` couples velocity with a
#   regulatory network so that perturbations can be simulated. Chapter 10 plugs a
#   Transcriptformer embedding into the same kernel slot.

# %% [markdown]
# ## Exercises
#
# ```{exercise}
# :label: ex-09-weights
# Recompute the simulator's fate probabilities with `velocity_weight=0.5,
# connectivity_weight=0.5`, and then with `velocity_weight=1.0, connectivity_weight=0.0`
# (start again from a copy of the velocity-only world, `simv_velocity_only`, each time). How do the Pearson
# correlations and MAE of the validation table change? What happens with the connectivity
# kernel alone?
# ```
#
# ````{solution} ex-09-weights
# :class: dropdown
# The executed solution below reruns the fate computation from the same velocities for
# each weight and prints the per-fate Pearson correlation and MAE. In our run the mean
# Pearson correlation was {glue:md}`c09_ex_w10` with the velocity kernel alone,
# {glue:text}`c09_ex_w08:.2f` at the chapter's 0.8 and {glue:md}`c09_ex_w05` at 0.5, and the
# connectivity kernel alone gave {glue:md}`c09_ex_w00`. A connectivity weight smooths
# noisy velocities, which can help where they are noisy; in this world, whose velocities
# are good, more weight only lowered the correlation (the solution asserts the order), and
# too much blurs the direction entirely. With the
# connectivity kernel alone the chain is symmetric: it has no notion of development, its
# "stable" macrostates are simply well-separated groups of cells, and nothing makes the
# progenitor pool an origin rather than an end.
# ````

# %% tags=["hide-input"]
def fate_scores(vw):
    """Mean per-fate Pearson r and MAE against the truth for one kernel weighting."""
    b = simv_velocity_only.copy()
    tflib.tl.fates(b, cluster_key="fate", n_states=4, n_initial=1, seed=SEED,
                   velocity_weight=vw, connectivity_weight=round(1 - vw, 1))
    P_b = tflib.tl.fate_probs_frame(b)
    assert np.allclose(P_b.sum(1), 1.0)
    r_b, mae_b, found = [], [], set()
    for state in P_b.columns:
        fate = b.obs.loc[b.obs["terminal_state"] == state, "fate"].astype(str)
        label = fate.value_counts().index[0]
        if label not in truth.columns:  # e.g. the progenitor pool called terminal
            continue
        found.add(label)
        tru = np.asarray(truth[label], dtype=float)
        r_b.append(np.corrcoef(P_b[state], tru)[0, 1])
        mae_b.append(np.mean(np.abs(P_b[state].to_numpy() - tru)))
    return {"fates found": len(found),
            "mean Pearson r": float(np.mean(r_b)) if r_b else np.nan,
            "mean MAE": float(np.mean(mae_b)) if mae_b else np.nan}


weights = {0.8: {"fates found": len(val),  # the chapter's chain, section 5
                 "mean Pearson r": float(val["Pearson r"].mean()),
                 "mean MAE": float(val["MAE"].mean())}}
for vw in (1.0, 0.5, 0.0):
    try:
        weights[vw] = fate_scores(vw)
    except (tflib.tl.NoTerminalStateError, ValueError) as err:
        weights[vw] = {"fates found": 0, "mean Pearson r": np.nan, "mean MAE": np.nan}
        print(f"velocity weight {vw}: {type(err).__name__}: {str(err)[:100]}")
weights = pd.DataFrame(weights).T.sort_index(ascending=False)
weights.index.name = "velocity weight"


def words(vw):
    """The mean Pearson r of one weighting, with how many true fates it found."""
    r, k = weights.loc[vw, "mean Pearson r"], int(weights.loc[vw, "fates found"])
    if np.isnan(r):
        return "no result (no true fate found)"
    return f"{r:.2f} ({k} of 3 fates)"


glue("c09_ex_w08", float(weights.loc[0.8, "mean Pearson r"]), display=False)
r_by_weight = weights.loc[[1.0, 0.8, 0.5, 0.0], "mean Pearson r"].fillna(-1.0)
assert r_by_weight.is_monotonic_decreasing  # the prose: more smoothing, lower r here
for vw, key in [(1.0, "w10"), (0.5, "w05"), (0.0, "w00")]:
    glue(f"c09_ex_{key}", Markdown(words(vw)), display=False)
assert weights.loc[0.8, "fates found"] == 3  # the chapter's chain finds all three
round_sig(weights)

# %% [markdown]
# ```{exercise}
# :label: ex-09-given
# On the pancreas, give the four endocrine types as terminal states by cluster:
# `terminal_states={c: c for c in ["Alpha", "Beta", "Delta", "Epsilon"]}` with
# `cluster_key="clusters"` (the mapping form always means whole clusters; a list whose
# names are all macrostates means macrostates). Draw the donuts again. Which cells change
# most compared with the predicted terminal states, and which mature types are hard to tell
# apart early?
# ```
#
# ````{solution} ex-09-given
# :class: dropdown
# Section 4 already ran this chain (`p2`); the executed solution below draws its donuts and
# averages its probabilities per cluster. Each given state now uses all cells of its
# cluster as the end point, and there is no ductal end point, so every walk must end in an
# endocrine type. Delta and epsilon cells now keep their own fates (they are absorbing by
# construction, and the solution asserts it). The pre-endocrine cells' mean probability of
# beta moved from {glue:text}`c09_beta_in_pre:.2f` to {glue:text}`c09_ex_pre_beta:.2f`:
# that change is the part of the earlier answer that came from the choice of terminal
# states rather than from the data. Whether ductal cells "should" reach endocrine fates at
# all is a biological question the chain cannot settle.
# ````

# %% tags=["hide-input"] mystnb={"image": {"alt": "Pancreas UMAP in grey with 70 fate-probability donuts for the run with the four endocrine clusters given as terminal states; each donut is split into alpha, beta, delta and epsilon."}}
tflib.pl.fate_donuts(p2, n_donuts=70, seed=SEED)
plt.show()
given_means = P2.groupby(cl2).mean()
for c in endocrine:
    assert np.isclose(given_means.loc[c, c], 1.0)  # absorbing: they keep their own fate
glue("c09_ex_pre_beta", float(given_means.loc["Pre-endocrine", "Beta"]), display=False)
round_sig(given_means)

# %% [markdown]
# ```{exercise}
# :label: ex-09-drivers
# On the simulator, run `tflib.tl.fate_drivers(simv, estimator=gs, n_top=10)`. The true gene
# modules are in `sim.var["module"]`. What fraction of each fate's top 10 drivers belongs to
# that fate's module?
# ```
#
# ````{solution} ex-09-drivers
# :class: dropdown
# The executed solution below counts them. In our run the fraction was
# {glue:md}`c09_ex_drv_range`: the top drivers of each fate are mostly genes of that
# fate's module, which in the simulator are
# exactly the genes switched on in that lineage. They are still not necessarily the
# *regulators*; the master transcription factors that cause the decision can rank lower
# because their expression is transient. Chapter 13 scores drivers against the true
# network.
# ````

# %% tags=["hide-input"]
d = tflib.tl.fate_drivers(simv, estimator=gs, n_top=10)
true_fate = d["fate"].map(dict(zip(val.index, val["true fate"]))).to_numpy()
d["own module"] = sim.var.loc[d["gene"], "module"].astype(str).to_numpy() == true_fate
own = d.groupby("fate")["own module"].mean()
assert own.min() >= 0.5  # the prose: mostly the fate's own module
drv_range = (f"{own.min():.0%} for every fate" if own.min() == own.max()
             else f"between {own.min():.0%} and {own.max():.0%} per fate")
glue("c09_ex_drv_range", Markdown(drv_range), display=False)
own.rename("fraction in own module").to_frame()

# %% [markdown]
# ## Quiz
#
# ```{admonition} 1. What is a fate probability in CellRank, in one sentence?
# :class: dropdown
# The probability that a random walk on the cell-cell Markov chain, started at this cell, is
# absorbed in a given terminal state: $B = (I-Q)^{-1}R$.
# ```
#
# ```{admonition} 2. Which terminal states did GPCCA predict on the pancreas, and why is one of them surprising?
# :class: dropdown
# {glue:md}`c09_terminal`. Part of the self-renewing ductal pool is called terminal: a
# state is "terminal" when the chain rarely leaves it, which is a property of the chain,
# not a statement of biology.
# ```
#
# ```{admonition} 3. How well did the fate probabilities match the truth on the simulator, and where were the errors?
# :class: dropdown
# Per-fate Pearson {glue:text}`c09_sim_r_min:.2f`–{glue:text}`c09_sim_r_max:.2f`, mean MAE
# {glue:text}`c09_sim_mae:.2f`. The errors sit in the progenitor pool, where velocity is
# blind and the chain gives nearly the same mixture to every cell.
# ```
#
# ```{admonition} 4. A gene is a top driver of the beta fate with q < 0.001. Is it a regulator of beta-cell fate?
# :class: dropdown
# Not necessarily: drivers are genes whose expression correlates with the fate
# probability. Targets switched on in the lineage rank as high as their causes; only a
# perturbation can show causation.
# ```
#
# ## Key takeaways
#
# - Fate probabilities are absorption probabilities of a Markov chain on the cells,
#   $B = (I-Q)^{-1}R$.
# - The chain mixes a directed velocity kernel with an undirected connectivity kernel (here
#   0.8 / 0.2); GPCCA finds macrostates and calls the stable ones terminal.
# - On the pancreas the predicted terminal states are {glue:md}`c09_terminal`: alpha and
#   beta, plus part of the self-renewing ductal pool, a reminder that "terminal" is a
#   property of the chain. Most endocrine progenitors are sent to beta: fate probabilities
#   inherit the velocity field's biases and depend on which terminal states are chosen.
# - Driver genes come with q-values, but they are correlations, not causes.
# - On the simulator all three fates are recovered, with per-fate Pearson
#   {glue:text}`c09_sim_r_min:.2f`–{glue:text}`c09_sim_r_max:.2f`, mean MAE
#   {glue:text}`c09_sim_mae:.2f` and AUROC {glue:text}`c09_sim_auc:.2f`; the errors sit in the
#   progenitor pool, where velocity is blind.
# - GPCCA's dense Schur decomposition scales cubically: keep it to a few thousand cells, or
#   use sparse solvers.

# %%
tflib.utils.footer(seed=SEED)
