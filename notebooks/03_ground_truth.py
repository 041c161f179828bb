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
# # 03 A ground-truth world
#
# Real single-cell data never tell us the answer. We do not know a cell's true
# {term}`RNA velocity`, which fate it will reach, or what would happen if one of its genes were
# switched off. A method that draws convincing arrows on a UMAP can still be wrong, and with
# real data alone we cannot find out. This chapter builds a small simulated world in which
# every one of these answers is known. Chapters 08 to 13 then score velocity, fate mapping,
# in-silico perturbation, hypothesis tests and regulator inference against worlds built by
# the same simulator (section 6 lists which world each chapter uses).
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. explain why a method has to be validated on data with a known answer, and why a
#    correlation in real data is not evidence of a causal effect;
# 2. describe the simulator's {term}`gene regulatory network`: a toggle switch of master
#    transcription factors, secondary factors that lock a decision in, and target modules;
# 3. write down the splicing kinetics that turn transcription into unspliced and spliced counts;
# 4. find the stored truth in the AnnData object: true velocity, true {term}`fate probability`,
#    {term}`pseudotime`, fate labels and the network;
# 5. run a true knockout and tell a real regulator from a gene that only carries a
#    transcription-factor name.
# ```

# %% tags=["remove-cell"]
# Colab / fresh hub only: install the course library once (skipped when tflib imports).
try:
    import tflib
except ImportError:
    # %pip install --quiet "tflib @ git+https://github.com/transcriptformers/course@main"
    import tflib

# %%
# %matplotlib inline
import time
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from myst_nb import glue

import tflib
import tflib.datasets as tds
from tflib.pl.workflow import OKABE_ITO

SEED = 0
rng = tflib.utils.notebook_setup(SEED)  # seeds, quiet libraries, plot style
# Colour-blind-safe (Okabe-Ito): progenitors grey, then one colour per fate.
FATE_COLOURS = ["#999999", OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["green"]]
ACTIVATE, REPRESS = OKABE_ITO["blue"], OKABE_ITO["vermillion"]

# %% [markdown]
# ## 1 Why a course needs known answers
#
# Two problems make real data a poor judge of the methods in this course.
#
# - **No ground truth.** Velocity is estimated from unspliced and spliced counts, and fate
#   probabilities from a velocity-driven random walk {cite:p}`bergen2020scvelo,lange2022cellrank`.
#   No measurement tells us what they should have been. Two methods that disagree cannot be
#   ranked.
# - **Correlation is not causation.** A foundation model such as Geneformer
#   {cite:p}`theodoris2023geneformer` learns which genes go together. If deleting a gene's
#   token moves a cell's embedding, that shows the model's associations, not the biology. It
#   is a hypothesis about a knockout. Simple linear baselines often predict perturbation
#   effects as well as large models {cite:p}`ahlmanneltze2025linear`, so every claim needs a
#   yardstick.
#
# A simulator gives us that yardstick. We write down a mechanism (a network of regulators,
# transcription, splicing and degradation, measurement noise), so we know every cell's true
# state. We can also *re-run* a cell's future as often as we like, with and without a
# perturbation. The price is realism: a simulator is only as good as its mechanism (see the
# caveats in section 7).
#
# ## 2 One call builds the world
#
# `tflib.datasets.simulate` returns an ordinary AnnData object. The course size is 3,000
# cells × 500 genes, 3 fates and 2 batches. Everything follows from the seed.

# %%
t0 = time.perf_counter()
sim = tds.simulate(n_cells=3000, n_genes=500, n_fates=3, n_batches=2, seed=SEED)
sim_seconds = time.perf_counter() - t0
glue("c03_sim_seconds", sim_seconds, display=False)
glue("c03_n_progenitors", int((sim.obs["fate"] == "progenitor").sum()), display=False)
sim

# %% [markdown]
# It took {glue:text}`c03_sim_seconds:.0f` s, including the true fate probabilities. Here is
# the function's signature and the start of its documentation, straight from the library:

# %%
import inspect

print(f"simulate{inspect.signature(tds.simulate)}")
print(tds.simulate.__doc__.split("Parameters")[0])

# %% [markdown]
# ```{admonition} The gene names are labels only
# :class: warning
# The simulator's genes carry real human gene symbols. Regulators and "decoy" factors are
# drawn from a list of human transcription factors, and all other genes from other
# GENCODE symbols. This lets one vocabulary and one tokenizer (chapter 04) serve simulated
# and real cells alike. **The names mean nothing biologically.** A simulated `SOX2` (if the
# seed draws it) shares nothing with the real gene except its spelling.
# ```
#
# ## 3 The gene regulatory network
#
# Every gene has a role. The network is stored as an edge table in `uns["grn"]`, and the roles
# are in `var["role"]` and `var["module"]`:

# %%
grn = pd.DataFrame(sim.uns["grn"])
roles = sim.var.groupby(["role", "module"], observed=True).size().unstack(fill_value=0)
display(roles)
grn.head()

# %% [markdown]
# The regulators form a small circuit.
#
# - **A progenitor factor** is transcribed only while a cell sits in the progenitor pool (an
#   external "niche" signal). It represses every master regulator.
# - **One master regulator per fate** activates itself and represses the other masters. This
#   is a many-way version of the classic toggle switch. When the progenitor factor fades, the
#   masters start to rise together. Any small random advantage then grows, and one master wins.
# - **Secondary factors** are switched on by their master. They activate themselves and repress
#   the other masters, so a decision stays in place even if the master is lost later.
# - **Targets** are activated by one or two regulators of their module, and some are repressed
#   by another fate's master. **Decoy factors** are targets that carry transcription-factor
#   names but regulate nothing. **Housekeeping genes** are transcribed at a constant rate.


# %% mystnb={"image": {"alt": "Network diagram of the simulated regulators: a grey progenitor factor in the centre repressing three large master regulators, one per fate colour; each master activates itself and its two outer secondary factors and represses the other masters."}}
def draw_regulators(sim, ax):
    """Draw the regulators: activation solid blue, repression dashed vermillion."""
    v, e = sim.var, pd.DataFrame(sim.uns["grn"])
    fates = list(sim.uns["fate_names"])
    pos = {v.index[v["role"] == "progenitor_tf"][0]: (0.0, 0.0)}
    for i, fate in enumerate(fates):
        ang = np.pi / 2 + 2 * np.pi * i / len(fates)
        pos[v.index[(v["role"] == "master_tf") & (v["module"] == fate)][0]] = (
            np.cos(ang),
            np.sin(ang),
        )
        secs = v.index[(v["role"] == "secondary_tf") & (v["module"] == fate)]
        for k, g in enumerate(secs):
            a2 = ang + 0.35 * (k - (len(secs) - 1) / 2)
            pos[g] = (1.9 * np.cos(a2), 1.9 * np.sin(a2))
    for _, row in e[e["target"].isin(list(pos))].iterrows():
        if row["regulator"] == row["target"]:
            continue
        act = row["sign"] > 0
        ax.annotate(
            "",
            xy=pos[row["target"]],
            xytext=pos[row["regulator"]],
            arrowprops=dict(
                arrowstyle="-|>" if act else "-[",
                lw=1.2 if act else 0.8,
                color=ACTIVATE if act else REPRESS,
                ls="-" if act else "--",
                shrinkA=14,
                shrinkB=14,
                alpha=0.8,
            ),
        )
    self_loops = set(e.loc[e["regulator"] == e["target"], "regulator"])
    for g, (x, y) in pos.items():
        role, mod = v.loc[g, "role"], v.loc[g, "module"]
        colour = (
            FATE_COLOURS[0]
            if mod == "progenitor"
            else FATE_COLOURS[1 + fates.index(mod)]
        )
        ax.scatter(
            x,
            y,
            s=900 if role == "master_tf" else 500,
            color=colour,
            zorder=3,
            edgecolor="black",
            linewidth=2.5 if g in self_loops else 0.5,
        )
        ax.text(x, y - 0.3, g, ha="center", va="top", fontsize=8)
    (
        ax.set_xlim(-2.5, 2.5),
        ax.set_ylim(-2.5, 2.5),
        ax.set_aspect("equal"),
        ax.axis("off"),
    )


fig, ax = plt.subplots(figsize=(6.5, 6.5))
draw_regulators(sim, ax)
ax.set_title("Regulators of the simulated world")
plt.show()

# %% [markdown]
# *Figure: the regulator circuit. The centre node is the progenitor factor (grey), the large
# nodes are the three master regulators (one colour per fate), and the outer nodes are their
# secondary factors. Solid blue arrows activate and dashed vermillion bars repress. A thick
# outline marks self-activation. The 490 other genes are not drawn.*
#
# ## 4 Kinetics: from transcription to spliced and unspliced counts
#
# Each gene $g$ is transcribed at a rate that depends on its regulators,
#
# $$
# \alpha_g(t) = \alpha^{\max}_g \,\sigma\!\Big(b_g + \sum_r w_{rg}\, x_r(t)\Big),
# \qquad \sigma(z) = \frac{1}{1+e^{-z}},
# $$
#
# where $x_r$ is regulator $r$'s spliced abundance divided by its maximum, $w_{rg}$ the signed
# edge weight and $b_g$ a baseline. Transcripts are spliced and degraded as in the RNA velocity
# model {cite:p}`lamanno2018velocity,bergen2020scvelo`:
#
# $$
# \frac{du_g}{dt} = \alpha_g(t) - \beta_g u_g, \qquad
# \frac{ds_g}{dt} = \beta_g u_g - \gamma_g s_g .
# $$
#
# The true velocity stored in `layers["velocity_true"]` is exactly $ds_g/dt$. It is computed for
# the *expected* abundance (per unit library size, before batch effects and sampling noise).
# Degradation rates are spread around a median of 0.25 per time unit, and cells are observed
# up to 14 time units after leaving the pool. Regulators also receive transcriptional noise,
# simulated with an Euler–Maruyama scheme: this noise is what breaks the symmetry of the
# toggle switch. Finally, counts are drawn from a negative binomial distribution whose mean
# is the expected abundance × the cell's library size × a per-gene batch factor.
#
# `````{admonition} Library code: one step of the splicing kinetics
# :class: dropdown
# The simulator integrates the two equations above exactly over each step, holding the
# transcription rate fixed during the step (the comments give the closed form):
# ````{literalinclude} ../tflib/datasets/_kinetics.py
# :language: python
# :pyobject: Stepper
# ````
# `````
#
# The phase portrait of a target gene shows the kinetics at work.

# %% mystnb={"image": {"alt": "Two phase portraits of one fate-A target gene. Left, expected abundances: fate-A cells rise above the dotted steady-state line and bend back towards it, while other cells stay near zero. Right, the observed counts of the same cells: a noisy, jittered cloud with the same trend."}}
fates = list(sim.uns["fate_names"])
targets_A = sim.var[(sim.var["role"] == "target") & (sim.var["module"] == "fate_A")]
gene = (
    targets_A["alpha_max"] / targets_A["gamma"]
).idxmax()  # the most highly expressed one
g = sim[:, gene]
colours = np.array(FATE_COLOURS)[sim.obs["fate"].cat.codes]
ratio = float(sim.var.loc[gene, "gamma"] / sim.var.loc[gene, "beta"])
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
axes[0].scatter(
    g.layers["spliced_true"].ravel(), g.layers["unspliced_true"].ravel(), s=4, c=colours
)
smax = float(g.layers["spliced_true"].max())
axes[0].plot(
    [0, smax],
    [0, ratio * smax],
    color="black",
    lw=1,
    ls=":",
    label=r"steady state $u = \gamma s/\beta$",
)
axes[0].set(
    xlabel="spliced (expected)",
    ylabel="unspliced (expected)",
    title=f"{gene}: the truth",
)
axes[0].legend(frameon=False, loc="upper left")
jitter = rng.uniform(-0.3, 0.3, size=(2, sim.n_obs))
axes[1].scatter(
    g.layers["spliced"].toarray().ravel() + jitter[0],
    g.layers["unspliced"].toarray().ravel() + jitter[1],
    s=3,
    c=colours,
    alpha=0.5,
)
axes[1].set(
    xlabel="spliced counts (jittered)",
    ylabel="unspliced counts (jittered)",
    title=f"{gene}: what we measure",
)
for name, col in zip(["progenitor"] + fates, FATE_COLOURS):
    axes[1].scatter([], [], color=col, label=name)
axes[1].legend(frameon=False, markerscale=2, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: a fate-A target gene. Left: the expected abundances. Cells heading for fate A
# (blue) switch the gene on, so unspliced RNA rises first and they sit above the steady-state
# line (positive velocity). Cells of the other fates and progenitors stay near zero. Right:
# the counts we observe for the same cells. Sampling noise and library size blur the picture.
# This is the signal scVelo has to work with (chapter 08).*
#
# ## 5 Branching fates, asynchronous commitment and batches
#
# Cells leave the progenitor pool at a constant rate: each has an exponentially distributed
# waiting time. In a snapshot of such a steady population, the pool keeps its size
# ({glue:text}`c03_n_progenitors` of 3,000 cells here). The cells that have left it are spread
# evenly over the 14 time units since leaving, and `obs["pseudotime"]` is that time ÷ 14 (0 in
# the pool). The fate of a cell is uncertain just after it leaves the pool and becomes certain
# once the toggle switch has flipped and the secondary factors have locked the decision in.
#
# The **true fate probabilities** in `obsm["fate_probs_true"]` come from re-simulating each
# cell's future 30 times from its current state (a progenitor first waits for a fresh
# exponential time) and counting which fate each future reaches.

# %% mystnb={"image": {"alt": "Left: line plot of the mean largest true fate probability against pseudotime, rising steeply to nearly 1 by pseudotime 0.2, above a dashed progenitor level. Right: histograms of the three true fate probabilities of progenitor cells, with fate A centred slightly higher than B and C."}}
fp = sim.obsm["fate_probs_true"]
obs = sim.obs
bins = pd.cut(obs["pseudotime"], np.linspace(0, 1, 11), include_lowest=True)
certainty = fp.max(axis=1).groupby([obs["differentiating"], bins], observed=True).mean()
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
centres = np.linspace(0.05, 0.95, 10)
axes[0].plot(
    centres,
    certainty.loc[True].to_numpy(),
    marker="o",
    color="black",
    label="differentiating cells",
)
axes[0].axhline(
    fp[~obs["differentiating"]].max(axis=1).mean(),
    color=FATE_COLOURS[0],
    ls="--",
    label="progenitor pool",
)
axes[0].set(
    xlabel="pseudotime",
    ylabel="mean of largest true fate probability",
    ylim=(0.3, 1.02),
)
axes[0].legend(frameon=False)
fp[~obs["differentiating"]].plot.hist(
    ax=axes[1], bins=np.linspace(0, 1, 21), alpha=0.6, color=FATE_COLOURS[1:]
)
axes[1].set(xlabel="true fate probability", title="progenitor pool")
plt.tight_layout()
plt.show()
prog_mean = fp[~obs["differentiating"]].mean()
glue("c03_prog_fate_A", float(prog_mean["fate_A"]), display=False)
assert np.allclose(fp.sum(axis=1), 1.0)
assert (
    certainty.loc[True].iloc[-1] > 0.95
    and fp[~obs["differentiating"]].max(axis=1).mean() < 0.8
)

# %% [markdown]
# *Figure: left, how certain the true fate is along pseudotime. Progenitors (dashed) are
# uncommitted; a cell's fate is essentially fixed about three time units (pseudotime ≈ 0.2)
# after it leaves the pool. Right: in the pool the three fates are not equally likely. Fate A
# has a slightly stronger master (mean probability {glue:text}`c03_prog_fate_A:.2f`).*
#
# **Batches** add purely technical differences. Each batch multiplies every gene by a factor
# whose logarithm has standard deviation 0.1, and it shifts the cells' library sizes. Batches
# are assigned at random, so batch is independent of biology. The 0.1 is deliberate: at 0.25
# the neighbour graph splits by batch and downstream fate mapping merges fates.
# {ref}`The batch exercise <ex03-batch>` lets you see this.
#
# ## 6 What the truth contains
#
# | where | what |
# |---|---|
# | `layers["spliced"]`, `X`; `layers["unspliced"]` | observed counts (integers) |
# | `layers["velocity_true"]` | true $ds/dt$ of the expected abundance, same genes |
# | `layers["spliced_true"]`, `layers["unspliced_true"]` | expected abundance behind the counts |
# | `obs["fate"]` | `progenitor` while in the pool, otherwise the fate the cell's own future reaches |
# | `obs["lineage"]` | that fate for every cell, progenitors included (a lineage-tracing label) |
# | `obs["pseudotime"]`, `obs["differentiating"]`, `obs["committed"]` | time since leaving the pool ÷ 14; left the pool; lineage probability ≥ 0.9 |
# | `obs["batch"]`, `obs["library_size"]` | technical batch and true size factor |
# | `obsm["fate_probs_true"]` | true fate probabilities (DataFrame, rows sum to 1); names in `uns["fate_names"]` |
# | `var["role"]`, `var["module"]`, kinetics | gene role, module, $\alpha^{\max}, \beta, \gamma$, baseline $b$ |
# | `uns["grn"]`, `uns["simulation"]` | true edges; every parameter and the seed |
#
# A standard scanpy analysis of the counts, without any truth, gives the familiar picture.

# %% mystnb={"image": {"alt": "Three UMAP panels of the simulated cells: coloured by true fate, three branches grow out of a grey progenitor pool; coloured by pseudotime, it increases along each branch; coloured by batch, the two batches are mixed evenly."}}
view = sim.copy()
sc.pp.normalize_total(view, target_sum=1e4)
sc.pp.log1p(view)
sc.pp.highly_variable_genes(view, n_top_genes=300, subset=True)
sc.pp.pca(view, n_comps=30, random_state=SEED)
sc.pp.neighbors(view, n_neighbors=30, random_state=SEED)
sc.tl.umap(view, random_state=SEED)
view.uns["fate_colors"] = FATE_COLOURS
view.uns["batch_colors"] = [OKABE_ITO["purple"], OKABE_ITO["sky_blue"]]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
sc.pl.umap(view, color="fate", ax=axes[0], show=False, frameon=False)
sc.pl.umap(
    view, color="pseudotime", ax=axes[1], show=False, frameon=False, color_map="viridis"
)
sc.pl.umap(view, color="batch", ax=axes[2], show=False, frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: UMAP of the simulated counts coloured by the true fate label (left), true
# pseudotime (middle) and batch (right). Three branches grow out of the progenitor pool, and
# pseudotime increases along each. The two batches mix, as they should when batch effects are
# small and independent of biology.*
#
# ### Which world each later chapter uses, and what the chapters pass on
#
# The world is saved to `_artifacts/03_world.h5ad`, for the exercises below and for your own
# experiments; the knockouts of section 7 run on the copy read back from disk, which shows that
# they need nothing from this Python session. **No later chapter reads this file**, because
# the course size would not fit the three-minute budget of a chapter that runs velocity, fate
# mapping or a transformer on top of it. The later chapters use smaller worlds, and they pass
# them on: a chapter that computes something the next one needs saves it in `_artifacts/`
# through `tflib.tl.save_artifact`, which records the call that made it inside the file. The
# next chapter calls `tflib.tl.load_or_build` with the same call: it reads the file when the
# recorded call matches, and otherwise runs the call itself (the file is then left as it is).
# It prints which of the two happened. So every chapter also runs on its own, and gets the
# same numbers whether or not the chapters before it ran.
#
# | chapter | saves in `_artifacts/` (the recorded call) | loads, or rebuilds with the same call |
# |---|---|---|
# | 06 | its toy pretraining runs, `06_toy_run*/` | its corpus: `simulate(n_cells=1000, seed=s)` for seeds 0, 101, 102 (`tflib.train.corpus`) |
# | 07 | – | chapter 02's `02_kang_integrated.h5ad` (scVI and PCA of Kang) |
# | 08 | `08_pancreas_velocity.h5ad` (`tl.pancreas_velocity(seed=0)`), `08_world_velocity.h5ad` (`tl.world_velocity(world_seed=0, seed=0)`: 600 cells × 300 genes, 1 batch) | – |
# | 09 | `09_pancreas_fates.h5ad` (`tl.pancreas_fates(seed=0)`) | both files of chapter 08 |
# | 10 | `10_world_velocity.h5ad` (`tl.world_velocity(world_seed=1, n_cells=500, umap=False)`) | chapter 08's pancreas velocity |
# | 11 | `11_world.h5ad` (`tl.course_world(world_seed=11)`, which is `tds.simulate(n_cells=600, n_genes=300, n_fates=3, n_batches=1, seed=11, library_size=3.0)`) | – |
# | 12 | `12_cellrank_world.h5ad` (`tl.cellrank_world(world_seed=11, seed=0)`: velocity, fates, drivers) | chapter 11's world |
# | 13 | – | chapter 11's world, chapter 12's CellRank run, chapter 09's pancreas fates |
#
# Two chapters start a new world on purpose. Chapter 10 uses seed 1 because the course
# checkpoint was pretrained on simulator seeds 0, 101 and 102, and a model should be
# validated on a world it has not read; chapter 11 uses seed 11, a world that neither the
# checkpoint nor chapter 10's fate model has seen. Chapter 12's
# null world for pseudobulk testing (800 × 250, 8 batches, seed 5) is built and used there
# only. Chapters 08 and 09 use seed 0 at the smaller size: the size changes the network and
# the gene names, so it is a different world from this chapter's, built by the same
# mechanism.

# %%
artifacts = Path("_artifacts")
artifacts.mkdir(exist_ok=True)
sim.write_h5ad(artifacts / "03_world.h5ad")
world = ad.read_h5ad(artifacts / "03_world.h5ad")
assert world.obsm["fate_probs_true"].equals(sim.obsm["fate_probs_true"])

# %% [markdown]
# ## 7 The in-silico wet lab: true knockouts
#
# `tds.knockout(world, gene)` takes every cell's current state, sets the gene's transcription
# to zero, and re-simulates the cell's future. It then subtracts the unperturbed probabilities
# from the same number of futures. Both runs use the *same* random numbers (common random
# numbers), so the difference is the effect of the knockout and not Monte-Carlo noise.
# `tds.overexpress` works in the same way with constitutive transcription.
#
# `````{admonition} Library code: a true knockout
# :class: dropdown
# Both the knockout and the overexpression call one helper, which re-simulates every cell's
# future twice from the same seed:
# ````{literalinclude} ../tflib/datasets/_perturb.py
# :language: python
# :pyobject: _shift
# ````
# The perturbation itself is applied inside the transcription rates: a perturbed gene's
# rate is fixed, whatever its regulators say.
# ````{literalinclude} ../tflib/datasets/_kinetics.py
# :language: python
# :pyobject: rates
# ````
# `````
#
# We compare fate A's master regulator with a decoy: a gene whose name is on the
# transcription-factor list but which regulates nothing in this world.

# %%
v = world.var
master_A = v.index[(v["role"] == "master_tf") & (v["module"] == "fate_A")][0]
decoy = v.index[v["role"] == "decoy_tf"][0]
ko_master = tds.knockout(world, master_A, n_futures=20, seed=SEED)
ko_decoy = tds.knockout(world, decoy, n_futures=20, seed=SEED)
stage = np.select(
    [~world.obs["differentiating"], world.obs["committed"]],
    ["progenitor", "committed"],
    "deciding",
)
shift_table = pd.DataFrame(
    {
        f"knockout {master_A} (master A)": ko_master["fate_A"],
        f"knockout {decoy} (decoy TF)": ko_decoy["fate_A"],
        "stage": stage,
    }
)
display(shift_table.groupby("stage").mean().round(3))
glue("c03_ko_mean", float(ko_master["fate_A"].mean()), display=False)
glue(
    "c03_ko_prog",
    float(ko_master.loc[stage == "progenitor", "fate_A"].mean()),
    display=False,
)
assert ko_master["fate_A"].mean() < -0.1  # measured about -0.2 on seed 0
assert (ko_decoy.to_numpy() == 0).all()  # exactly zero: it regulates nothing

# %% mystnb={"image": {"alt": "Three histograms of the per-cell shift in true P(fate A) for progenitor, deciding and committed cells. The master knockout shifts progenitors and deciding cells far below zero, committed cells mostly not, with a small group at minus one; the decoy knockout is a single bar at exactly zero."}}
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)
edges = np.linspace(-1, 0.2, 25)
for ax, st in zip(axes, ["progenitor", "deciding", "committed"]):
    m = stage == st
    ax.hist(
        ko_master.loc[m, "fate_A"],
        bins=edges,
        color=FATE_COLOURS[1],
        alpha=0.8,
        label=f"{master_A} (master A)",
    )
    ax.hist(
        ko_decoy.loc[m, "fate_A"],
        bins=edges,
        color="black",
        histtype="step",
        lw=2,
        label=f"{decoy} (decoy)",
    )
    ax.set(title=f"{st} cells (n = {m.sum()})", xlabel="shift in true P(fate A)")
axes[0].set_ylabel("cells")
axes[0].legend(frameon=False, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: per-cell shift in the true probability of fate A after a knockout of the master
# regulator of fate A (filled) or of a decoy factor (outline, a single bar at exactly 0; the
# gene names are in the legend). Cells are split by stage: in the pool, deciding, or committed
# (true probability of their own fate ≥ 0.9). The master matters most before the decision
# (progenitors: {glue:text}`c03_ko_prog:.2f` on average). Most committed cells do not react,
# because their secondary factors keep the fate in place. The committed cells at −1 committed
# only recently (median pseudotime about 0.26, against 0.66 for the rest), and their secondary
# factors were not yet switched on. Averaged over all cells, the shift is
# {glue:text}`c03_ko_mean:.2f`.*
#
# This is the "in-silico wet lab" of chapters 11 to 13. When a model predicts that removing a
# gene lowers a fate's probability, we can check the claim here. The check itself is tested
# with the statistics of chapter 12.
#
# ```{admonition} Caveats: what this world leaves out
# :class: caution
# - A regulator's mRNA stands in for its protein activity. There are no separate protein,
#   chromatin or signalling layers.
# - There is no cell cycle, no doublets, no ambient RNA and no spatial structure. Noise is
#   transcriptional (regulators only) plus negative-binomial sampling.
# - The network is small and modular. Real regulators overlap, and real targets respond to
#   many inputs.
# - The fate of a future is the programme (master + secondary factors) most active at the end,
#   a sharper definition than any real assay gives.
# - The velocity model's assumptions (constant splicing and degradation rates per gene) hold
#   *exactly* here. Real data violate them, so methods will look better here than on real data.
# Agreement with this world is therefore necessary, not sufficient.
# ```
#
# ## Exercises
#
# ```{exercise}
# :label: ex03-batch
# Simulate 1,500 cells with `batch_log_sd=0.25` (and, to compare, the default 0.1). Run the
# UMAP pipeline of section 6 and colour by batch. What changes? Why would a neighbour graph
# that splits by batch hurt RNA velocity and fate mapping?
# ```
#
# ````{solution} ex03-batch
# :class: dropdown
# ```python
# for sd in [0.1, 0.25]:
#     w = tds.simulate(n_cells=1500, n_genes=500, seed=SEED, batch_log_sd=sd)
#     sc.pp.normalize_total(w, target_sum=1e4); sc.pp.log1p(w)
#     sc.pp.highly_variable_genes(w, n_top_genes=300, subset=True)
#     sc.pp.pca(w, random_state=SEED); sc.pp.neighbors(w, n_neighbors=30, random_state=SEED)
#     sc.tl.umap(w, random_state=SEED); sc.pl.umap(w, color=["fate", "batch"])
#     nn = w.obsp["connectivities"].tocoo(); b = w.obs["batch"].cat.codes.to_numpy()
#     print(sd, "neighbours from the same batch:", round((b[nn.row] == b[nn.col]).mean(), 2))
# ```
# At 0.25 the two batches drift apart. In our run {glue:text}`c03_ex_same_025:.0f` % of each
# cell's neighbours come from its own batch, against {glue:text}`c03_ex_same_010:.0f` % at 0.1
# (50 % would be perfect mixing of two equal batches). scVelo smooths counts over these neighbours and CellRank's random walk moves along
# them, so the graph now follows technical rather than biological similarity. Cells of one
# fate but different batches look less alike than they should.
# ````

# %% tags=["hide-input"]
# Executed solution (without the plots): the build fails if the claim stops holding.
# Two futures per cell instead of 30: the counts and batches come from their own random
# stream, so the neighbour graph is the same as in the solution's code, only faster.
same_batch = {}
for sd in [0.1, 0.25]:
    w = tds.simulate(n_cells=1500, n_genes=500, seed=SEED, batch_log_sd=sd, n_futures=2)
    sc.pp.normalize_total(w, target_sum=1e4)
    sc.pp.log1p(w)
    sc.pp.highly_variable_genes(w, n_top_genes=300, subset=True)
    sc.pp.pca(w, random_state=SEED)
    sc.pp.neighbors(w, n_neighbors=30, random_state=SEED)
    nn = w.obsp["connectivities"].tocoo()
    b = w.obs["batch"].cat.codes.to_numpy()
    same_batch[sd] = float(100 * (b[nn.row] == b[nn.col]).mean())
glue("c03_ex_same_010", same_batch[0.1], display=False)
glue("c03_ex_same_025", same_batch[0.25], display=False)
assert same_batch[0.1] < 65 and same_batch[0.25] > same_batch[0.1] + 15

# %% [markdown]
#
# ```{exercise}
# :label: ex03-secondary
# Knock out one *secondary* factor of fate A instead of the master. Is the effect on fate A
# larger or smaller? Use `world.uns["grn"]` to explain your answer.
# ```
#
# ````{solution} ex03-secondary
# :class: dropdown
# ```python
# sec = v.index[(v["role"] == "secondary_tf") & (v["module"] == "fate_A")][0]
# print(tds.knockout(world, sec, n_futures=20).mean())
# grn = pd.DataFrame(world.uns["grn"]); print(grn[grn["regulator"] == sec])
# ```
# The effect is much smaller than the master's. In our run, knocking out
# {glue:text}`c03_ex_sec` shifted P(fate A) by {glue:text}`c03_ex_sec_mean:.3f` on average
# (the master: {glue:text}`c03_ko_mean:.2f`), by {glue:text}`c03_ex_sec_prog:.2f` in the
# pool and by {glue:text}`c03_ex_sec_committed:.3f` in committed cells. Each fate has
# {glue:text}`c03_ex_n_sec` secondary factors. Both are switched on by the master and both
# repress the rival masters, so losing one leaves the other to lock the decision in. This redundancy is one reason why single knockouts in real cells often show
# little effect.
# ````

# %% tags=["hide-input"]
# Executed solution: the build fails if the secondary knockout stops being the weaker
# one.
secs = v.index[(v["role"] == "secondary_tf") & (v["module"] == "fate_A")]
ko_sec = tds.knockout(world, secs[0], n_futures=20, seed=SEED)
sec_by_stage = ko_sec["fate_A"].groupby(stage).mean()
glue("c03_ex_sec", str(secs[0]), display=False)
glue("c03_ex_n_sec", len(secs), display=False)
glue("c03_ex_sec_mean", float(ko_sec["fate_A"].mean()), display=False)
glue("c03_ex_sec_prog", float(sec_by_stage["progenitor"]), display=False)
glue("c03_ex_sec_committed", float(sec_by_stage["committed"]), display=False)
assert len(secs) == 2
assert abs(ko_sec["fate_A"].mean()) < abs(ko_master["fate_A"].mean()) / 2
assert abs(sec_by_stage["committed"]) < 0.01

# %% [markdown]
#
# ```{exercise}
# :label: ex03-overexpress
# Overexpress fate C's master with `tds.overexpress(world, gene, factor=2.0)`. Which cells
# change fate, and does the effect depend on the stage, as the knockout's did?
# ```
#
# ````{solution} ex03-overexpress
# :class: dropdown
# ```python
# master_C = v.index[(v["role"] == "master_tf") & (v["module"] == "fate_C")][0]
# oe = tds.overexpress(world, master_C, factor=2.0, n_futures=20)
# print(oe.groupby(stage).mean())
# ```
# Uncommitted cells move to fate C. Forced expression at twice the natural maximum also
# overrides the secondary factors of committed cells, which reprogramme: in our run the mean
# probability of fate C after overexpression was {glue:text}`c03_ex_oe_progenitor:.2f` in the pool,
# {glue:text}`c03_ex_oe_deciding:.2f` in deciding and {glue:text}`c03_ex_oe_committed:.2f` in
# committed cells. So, unlike the knockout, the effect hardly depends on the stage:
# overexpression is a stronger intervention than a knockout in this network.
# ````

# %% tags=["hide-input"]
# Executed solution: the build fails if overexpression stops overriding committed cells.
master_C = v.index[(v["role"] == "master_tf") & (v["module"] == "fate_C")][0]
oe, _, oe_probs = tds.overexpress(
    world, master_C, factor=2.0, n_futures=20, seed=SEED, return_probs=True
)
p_C = oe_probs["fate_C"].groupby(stage).mean()
for st in ("progenitor", "deciding", "committed"):
    glue(f"c03_ex_oe_{st}", float(p_C[st]), display=False)
assert p_C["progenitor"] > 0.9 and p_C["deciding"] > 0.9 and p_C["committed"] > 0.8

# %% [markdown]
# ## Quiz
#
# :::{admonition} 1. Knocking out the decoy factor shifted every cell's fate probabilities by exactly 0, not by a small random amount. Why?
# :class: dropdown
# The perturbed and unperturbed futures use the same random numbers (common random numbers),
# and the decoy regulates nothing, so every future is identical with and without it.
# :::
#
# :::{admonition} 2. The master knockout shifted P(fate A) by {glue:text}`c03_ko_prog:.2f` in the pool but {glue:text}`c03_ko_mean:.2f` over all cells. Why is the average smaller?
# :class: dropdown
# Most committed cells do not react: their secondary factors hold the decision even without
# the master. The average mixes them with the responsive progenitors and deciding cells.
# :::
#
# :::{admonition} 3. In the pool the mean true probability of fate A is {glue:text}`c03_prog_fate_A:.2f`, not 1/3. Is that sampling noise?
# :class: dropdown
# No: fate A's master is slightly stronger, so the toggle switch tips to it more often. The
# truth is computed from re-simulated futures, not estimated from the fate labels.
# :::
#
# :::{admonition} 4. Why does this world use a batch log-effect of 0.1 and not 0.25?
# :class: dropdown
# At 0.25 the neighbour graph splits by batch ({ref}`the batch exercise <ex03-batch>`),
# and velocity and fate mapping, which move along that graph, would follow technical rather
# than biological similarity.
# :::
#
# :::{admonition} 5. A method agrees perfectly with this world. Will it work on real data?
# :class: dropdown
# Not necessarily: the world's assumptions (constant kinetic rates, mRNA as protein activity,
# a small modular network) hold exactly here. Agreement is necessary, not sufficient.
# :::
#
# ## Key takeaways
#
# - A method can only be validated where the answer is known. A simulator provides true
#   velocity, true fate probabilities, true regulators and true perturbation effects.
# - The world here is a toggle switch of master regulators, secondary factors that lock the
#   decision in, target modules, and splicing kinetics with realistic noise and small batches.
# - The true fate probabilities and knockout effects come from re-simulating each cell's
#   future. Common random numbers make a non-regulator's effect exactly zero.
# - A transcription-factor *name* is not a regulatory role: the decoy factor did nothing. In
#   real data only experiments can make that distinction, and chapter 12 tests predictions
#   against this world's knockouts.
# - The world is saved to `_artifacts/03_world.h5ad` for the exercises. Later chapters use
#   smaller worlds and pass them on (section 6): chapter 08 saves its world and velocity for
#   09, chapter 11 its world for 12 and 13, chapter 12 its CellRank run for 13. Each loads
#   the saved file or rebuilds it with the same call, and says which.

# %%
tflib.utils.footer(seed=SEED)
