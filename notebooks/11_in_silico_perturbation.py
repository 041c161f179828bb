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
# # 11 In-silico perturbation
#
# Chapters 01–10 built a model that reads a cell's ranked genes and, after chapter 10, predicts
# where the cell is heading. Panel D of the article's workflow asks the next question: *what
# if we changed one gene?* In silico, a knockout is the deletion of the gene's token, and an
# overexpression moves it to the front of the cell's sentence, as Geneformer defines them
# {cite:p}`theodoris2023geneformer`. Whatever the model then predicts differently is a
# **hypothesis**, not a result. This chapter makes such hypotheses, scores them four ways,
# and, because the simulator of chapter 03 knows the true effect of every knockout, checks
# them against the truth and against simple baselines. The verdict is not flattering, and
# the chapter says so.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. delete and overexpress genes in a rank-value token sequence, and say what the model
#    sees (and does not see) of each change;
# 2. run a batched in-silico screen with `tflib.tl.perturb` and read its four scores:
#    embedding shift, goal-state cosine shift (Geneformer), fate shift (chapter 10's model)
#    and flow score (CellOracle's idea);
# 3. put a linear fate model and a random-gene null beside the Transcriptformer;
# 4. compare predicted and true knockout effects, and explain why snapshot models confuse
#    correlation with causation;
# 5. use a simulated Perturb-seq screen, interventional data, to see what the snapshot missed;
# 6. judge perturbation-response predictions on real data (Kang IFN-β, Norman doubles)
#    against no-change and additive baselines;
# 7. hold out perturbations of a screen (not cells), predict their fate shifts and expression
#    responses, and score a fine-tuned model against no-change, additive and linear baselines.
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
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

import tflib
import tflib.datasets as tds
import tflib.tl as tl
from tflib.pl.workflow import OKABE_ITO

SEED = 0
SIM_SEED = 11  # a world the course checkpoint was not pretrained on
rng = tflib.utils.notebook_setup(SEED)
torch.set_num_threads(2)
warnings.filterwarnings(
    "ignore", category=UserWarning, module="tflib"
)  # the vocabulary-drop notes
T0 = time.perf_counter()

model, tokenizer = tflib.models.course_checkpoint()
print(
    model.config.n_layer,
    "blocks,",
    model.config.n_embd,
    "dimensions, context",
    model.config.max_len,
    "tokens",
)

# %% [markdown]
# ## 1 A world whose answers we know
#
# We simulate a fresh world (chapter 03) with `tl.course_world`, the small world of chapters
# 08 to 13 (`tds.simulate` with one batch at three times the default depth): 600 cells, 300
# genes, three fates, each driven by a master transcription factor (TF) with secondary TFs,
# targets, decoy TFs that regulate nothing, and housekeeping genes. As in chapter 10, `tl.vocab_labels` relabels the simulated
# genes with vocabulary genes of matching median expression, so the course tokenizer can read
# them. We follow eleven genes of five roles through the chapter. The world is saved to
# `_artifacts/11_world.h5ad` for chapters 12 and 13.

# %%
sim = tl.course_world(world_seed=SIM_SEED)  # tds.simulate(n_cells=600, n_genes=300, ...)
tl.save_artifact(  # chapters 12 and 13 load this world, or rebuild it with the same call
    sim, Path("_artifacts") / "11_world.h5ad", tl.course_world, world_seed=SIM_SEED,
    overwrite=True,
)
tl.vocab_labels(sim, tokenizer)  # writes sim.var["tf_symbol"]
truth = sim.obsm["fate_probs_true"]
FATES = list(truth.columns)
v = sim.var
panel = {}
for fate in FATES:
    panel[v.index[(v.role == "master_tf") & (v.module == fate)][0]] = (
        "master TF",
        fate,
    )
for role, label in [
    ("secondary_tf", "secondary TF"),
    ("decoy_tf", "decoy TF"),
    ("target", "target"),
    ("housekeeping", "housekeeping"),
]:
    for g in v.index[v.role == role][:2]:
        panel[g] = (
            label,
            v.loc[g, "module"] if v.loc[g, "module"] in FATES else FATES[0],
        )
genes = list(panel)
sym = dict(zip(genes, v.loc[genes, "tf_symbol"]))  # simulated name -> vocabulary symbol
X = sim.X.toarray()
detected = pd.Series(
    {g: float((X[:, list(sim.var_names).index(g)] > 0).mean()) for g in genes}
)
roles = pd.DataFrame(
    {
        "role": [panel[g][0] for g in genes],
        "fate it is scored on": [panel[g][1] for g in genes],
        "cells detecting it": detected.round(2),
    },
    index=pd.Index(genes, name="gene"),
)
roles

# %%
rng_split = np.random.default_rng(SEED)
order = rng_split.permutation(sim.n_obs)
train, test = sim.obs_names[order[:400]], sim.obs_names[order[400:]]
cells_test = sim[test].copy()
masters = [g for g in genes if panel[g][0] == "master TF"]
glue("c11_master_detect", float(detected[masters].mean() * 100), display=False)

# %% [markdown]
# The master TFs are detected in only about {glue:text}`c11_master_detect:.0f` % of cells: TFs
# are lowly expressed, in this world as in real cells. Keep that number in mind.
#
# ## 2 What a deletion does to a sentence
#
# Take one cell's tokens. Deleting a gene removes its token, and every gene behind it moves up
# one place. Overexpressing a gene moves it right behind `<cls>`; a gene the cell did not
# express is inserted there. `tflib` does this for a whole batch at once, as index arithmetic
# on the padded token array: every variant is a row of source positions, and one `gather`
# builds them all. The forward pass then exploits what the variants of one cell have in
# common: a deletion behind the model's context changes nothing the model reads, so it is
# scored without running the model, and the others share almost every (token, position)
# pair, whose embeddings and first-block projections are computed once per batch (chapter
# 05). `benchmarks/perturb.py` measures the result against one forward pass per (cell, gene).
#
# ````{admonition} Library code: tflib.tl.perturb_tokens.perturbed_batch
# :class: dropdown
# ```{literalinclude} ../tflib/tl/perturb_tokens.py
# :pyobject: perturbed_batch
# ```
# ````

# %%
from tflib.tl.perturb_tokens import gene_positions, pad_cells, perturbed_batch

one = tokenizer.encode(cells_test[:1], gene_key="tf_symbol")
ids, lengths = pad_cells(one, tokenizer.vocab.pad_id)
shown = [t for t in tokenizer.vocab.decode(ids[0, 1:8].tolist())]
victim = shown[2]  # the third-ranked gene of this cell
vid = torch.tensor([tokenizer.vocab.token_to_id(victim)])
pos = gene_positions(ids, lengths, vid)[:, 0]
rows = {}
for kind in ("delete", "overexpress"):
    new, mask = perturbed_batch(
        ids,
        lengths,
        torch.tensor([0]),
        vid
        if kind == "delete"
        else torch.tensor([tokenizer.vocab.token_to_id(shown[5])]),
        pos
        if kind == "delete"
        else gene_positions(
            ids, lengths, torch.tensor([tokenizer.vocab.token_to_id(shown[5])])
        )[:, 0],
        kind=kind,
        front=1,
        max_len=model.config.max_len,
        pad_id=tokenizer.vocab.pad_id,
        eos_id=tokenizer.vocab.eos_id,
    )
    rows[kind] = tokenizer.vocab.decode(new[0, :8].tolist())
pd.DataFrame(
    {
        "original": tokenizer.vocab.decode(ids[0, :8].tolist()),
        f"delete {victim}": rows["delete"],
        f"overexpress {shown[5]}": rows["overexpress"],
    },
    index=pd.RangeIndex(8, name="position"),
)

# %% [markdown]
# Two properties follow from the definition, and both matter later. A **deletion is not a
# knockout**: in a real cell, losing a TF changes its targets too; here only one token goes,
# and the other genes keep their ranks. And the course model reads at most
# {glue:text}`c11_ctx` tokens: **a gene ranked behind that cannot be deleted in any way the
# model sees**. `tl.perturb` knows this and skips such deletions (their shift is exactly 0).

# %%
glue("c11_ctx", int(model.config.max_len), display=False)
tok_all = tokenizer.encode(cells_test, gene_key="tf_symbol")
visible = pd.Series(
    {
        g: float(
            np.mean(
                [
                    tokenizer.vocab.token_to_id(sym[g])
                    in set(tok_all[i][: model.config.max_len])
                    for i in range(len(tok_all))
                ]
            )
        )
        for g in genes
    }
)
glue("c11_master_visible", float(visible[masters].mean() * 100), display=False)
print("cells in which the model sees the gene:", visible[masters].round(2).to_dict())

# %% [markdown]
# Only about {glue:text}`c11_master_visible:.0f` % of test cells carry a master TF within the
# model's context: detected in more cells, but ranked too low to fit.
#
# ## 3 A batched in-silico screen, scored four ways
#
# The fate model is chapter 10's fate-aware Transcriptformer. Here it learns the simulator's
# *true* fate probabilities on the 400 training cells, reading the full context
# (`max_len=128`), so that nothing but the model limits what it can learn. We also need an
# embedding velocity for the flow score; the simulator's true velocity, carried into the
# embedding as in chapter 10, is the most favourable choice.

# %%
t0 = time.perf_counter()
student = tl.TrajectoryAwareTranscriptformer(  # chapter 10's recipe, the full context
    model, tokenizer, gene_key="tf_symbol", max_len=model.config.max_len, seed=SEED
)
student.fit(sim, truth.loc[train])
P_test = student.predict_fates(cells_test)
mae_student = float(np.abs(P_test.to_numpy() - truth.loc[test].to_numpy()).mean())
mae_mean = float(  # baseline: every test cell gets the training cells' mean fate probabilities
    np.abs(truth.loc[train].mean().to_numpy() - truth.loc[test].to_numpy()).mean()
)
assert mae_student < 0.8 * mae_mean  # the prose: the student learned part of the fates
tl.embedding_velocity(
    cells_test,
    model,
    tokenizer,
    xkey="spliced_true",
    vkey="velocity_true",
    genes=None,
    gene_key="tf_symbol",
    seed=SEED,
)  # obsm["X_tf"], obsm["velocity_tf"]
table = tl.perturb(
    cells_test,
    model,
    tokenizer,
    [sym[g] for g in genes],
    kind="delete",
    fate_model=student,
    goal_key="lineage",
    goal=FATES[0],
    velocity_key="velocity_tf",
    pooling="mean",
    encode_kwargs={"gene_key": "tf_symbol"},
)
table["gene"] = table["gene"].map({s: g for g, s in sym.items()})
t_perturb = time.perf_counter() - t0
glue("c11_mae_student", mae_student, display=False)
glue("c11_mae_mean", mae_mean, display=False)
glue("c11_n_rows", int(len(table)), display=False)
print(
    f"fit + embedding velocity + {len(table):,} perturbations: {t_perturb:.0f} s; "
    f"fate MAE: student {mae_student:.3f}, training mean {mae_mean:.3f}"
)
table.head(3).round(4)

# %% [markdown]
# First, did the fate model learn the fates? On the test cells its predicted probabilities
# miss the true ones by {glue:text}`c11_mae_student:.3f` on average, against
# {glue:text}`c11_mae_mean:.3f` for giving every cell the training cells' mean probabilities.
# It has learned a good part of the fate landscape, far from all of it; so small fate shifts
# below do not come from a model that learned nothing, and a better fate model could move
# them.
#
# One row per (cell, gene), {glue:text}`c11_n_rows` in all, with every score side by side.
# `tl.perturb_summary` reduces it to one row per gene, averaging over the cells where the
# deletion changed the input:

# %%
summary = tl.perturb_summary(table)
own = [f"fate_shift_{panel[g][1]}" for g in summary.index]
view = pd.DataFrame(
    {
        "role": [panel[g][0] for g in summary.index],
        "cells": summary["n_expressed"],
        "embedding shift": summary["mean_embedding_shift_l2"],
        f"goal cosine ({FATES[0]})": summary[f"mean_goal_cosine_shift"],
        "flow score": summary["mean_flow_score"],
        "fate shift (own fate)": [
            summary.loc[g, f"mean_{c}"] for g, c in zip(summary.index, own)
        ],
    },
    index=summary.index,
)
view.round(4)

# %% [markdown]
# What each score can and cannot tell:
#
# - **Embedding shift** says the model noticed; not in which direction. Highly ranked genes
#   move the embedding most, whatever they do.
# - **Goal-state cosine** (Geneformer) says whether the cell moved towards the centroid of a
#   chosen state. It needs a goal, and it inherits the embedding's geometry.
# - **Fate shift** is the question we care about, answered by a model fitted to a snapshot.
# - **Flow score** says whether the displacement points along the cell's developmental flow
#   (a CellOracle-style projection); it depends on the embedding velocity being right.
#
# ## 4 Against the truth, beside a linear baseline
#
# The simulator re-runs each test cell's future with the gene knocked out, with common
# random numbers, so the difference is the knockout's effect (chapter 03). The linear
# baseline is a multinomial logistic regression from log-normalised expression to the same
# fate probabilities; its knockout sets the gene to zero. Simple linear models are hard to
# beat at predicting perturbation effects {cite:p}`ahlmanneltze2025linear`, so the
# Transcriptformer must stand beside one. A random gene of matched expression gives the
# null, and "no change" (a shift of 0 for every gene) the floor.

# %%
t0 = time.perf_counter()
true_shift = {g: tds.knockout(cells_test, g, n_futures=10, seed=SEED) for g in genes}
linear = tl.LinearFateModel(C=0.1).fit(sim, truth.loc[train])
lin_table = tl.perturb_linear(cells_test, linear, genes, kind="delete")
rand = tl.matched_random_genes(sim, masters, n_per_gene=1, exclude=genes, seed=SEED)
rand_table = tl.perturb(
    cells_test,
    model,
    tokenizer,
    list(sim.var.loc[rand["random_gene"], "tf_symbol"]),
    kind="delete",
    fate_model=student,
    pooling="mean",
    encode_kwargs={"gene_key": "tf_symbol"},
)
t_truth = time.perf_counter() - t0


def mean_shift(tab, g, fate, where="expressed"):
    rows = tab[tab["gene"] == g]
    rows = rows[rows["expressed"]] if where == "expressed" else rows
    return float(rows[f"fate_shift_{fate}"].mean()) if len(rows) else 0.0


compare = pd.DataFrame(
    {
        "role": [panel[g][0] for g in genes],
        "fate": [panel[g][1] for g in genes],
        "true (all cells)": [float(true_shift[g][panel[g][1]].mean()) for g in genes],
        "Transcriptformer": [mean_shift(table, g, panel[g][1], "all") for g in genes],
        "linear": [mean_shift(lin_table, g, panel[g][1], "all") for g in genes],
    },
    index=pd.Index(genes, name="gene"),
)
null_sd = float(
    rand_table.groupby("gene")[[f"fate_shift_{f}" for f in FATES]]
    .mean()
    .abs()
    .to_numpy()
    .mean()
)
compare.round(4)

# %%
from sklearn.metrics import roc_auc_score

is_master = np.array([panel[g][0] == "master TF" for g in genes])
auroc = {
    m: float(roc_auc_score(is_master, -compare[m]))
    for m in ("Transcriptformer", "linear")
}
right_dir = {
    m: int((compare.loc[masters, m] < 0).sum()) for m in ("Transcriptformer", "linear")
}
ratio = {
    m: float(
        compare.loc[masters, m].abs().mean() / compare.loc[~is_master, m].abs().mean()
    )
    for m in ("Transcriptformer", "linear")
}
true_master = float(compare.loc[masters, "true (all cells)"].mean())
for m in auroc:
    glue(f"c11_auroc_{m[:3].lower()}", auroc[m], display=False)
    glue(f"c11_dir_{m[:3].lower()}", right_dir[m], display=False)
    glue(f"c11_ratio_{m[:3].lower()}", ratio[m], display=False)
glue("c11_true_master", true_master, display=False)
n_pairs = int(is_master.sum() * (~is_master).sum())  # (master, other) pairs behind the AUROC
glue("c11_auroc_pairs", n_pairs, display=False)
glue("c11_auroc_step", 1 / n_pairs, display=False)
glue(
    "c11_pred_master_tra",
    float(compare.loc[masters, "Transcriptformer"].mean()),
    display=False,
)
glue("c11_null", null_sd, display=False)
print(
    "AUROC for ranking the 3 master TFs first (most negative shift):",
    {k: round(x, 2) for k, x in auroc.items()},
)
print("masters predicted in the right direction:", right_dir)
assert true_master < -0.08  # the true knockouts really do shift fates
# the prose below says no snapshot predictor singles out the masters: keep it true
assert max(ratio.values()) < 2.0, (
    ratio
)  # masters' predicted shifts are no larger than non-causal genes'
assert (
    abs(float(compare.loc[masters, "Transcriptformer"].mean())) < abs(true_master) / 10
)  # and far below the truth

fig, ax = plt.subplots(figsize=(5.2, 4.2))
colors = {
    "master TF": OKABE_ITO["vermillion"],
    "secondary TF": OKABE_ITO["orange"],
    "decoy TF": OKABE_ITO["sky_blue"],
    "target": OKABE_ITO["blue"],
    "housekeeping": "#999999",
}
for m, marker in (("Transcriptformer", "o"), ("linear", "s")):
    ax.scatter(
        compare["true (all cells)"],
        compare[m],
        c=[colors[r] for r in compare["role"]],
        marker=marker,
        s=45,
        edgecolor="black",
        linewidth=0.4,
        label=m,
    )
lim = [min(compare.min(numeric_only=True).min(), -0.05) * 1.1, 0.05]
ax.plot(lim, lim, color="grey", linestyle="--", linewidth=0.8)
ax.axhline(0, color="black", linewidth=0.5)
ax.set(
    xlabel="true mean fate shift (knockout)",
    ylabel="predicted mean fate shift (deletion)",
    title="predicted vs true, own fate",
)
ax.legend(frameon=False, loc="upper left")
fig.tight_layout()
glue("c11_fig_scatter", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} c11_fig_scatter
# :alt: Scatter of predicted against true mean fate shifts for eleven genes. True shifts of the three master transcription factors lie far left (around minus 0.1 to minus 0.2) while every prediction, Transcriptformer circles and linear squares, sits close to zero.
# :name: fig-11-scatter
#
# Predicted (in-silico deletion) against true (simulated knockout) mean shift of each gene's
# own fate, averaged over all test cells. Colours: master TFs vermillion, secondary TFs
# orange, decoy TFs sky blue, targets blue, housekeeping grey. The dashed line is perfect
# agreement.
# ```
#
# **The main result of this chapter: no snapshot predictor found the causal regulators.** The
# true knockouts of the master TFs lower their own fate by {glue:text}`c11_true_master:.2f` on
# average; the Transcriptformer predicts {glue:text}`c11_pred_master_tra:.3f`. The masters'
# predicted shifts point the right way in {glue:text}`c11_dir_tra` of 3 cases for the
# Transcriptformer and {glue:text}`c11_dir_lin` of 3 for the linear model, but they are no
# larger than those of genes with no causal role (ratio of mean magnitudes, masters to the
# rest: {glue:text}`c11_ratio_tra:.1f` and {glue:text}`c11_ratio_lin:.1f`; AUROC for ranking
# the masters first {glue:text}`c11_auroc_tra:.2f` and {glue:text}`c11_auroc_lin:.2f`, where
# 0.5 is chance). Read an AUROC over eleven genes with care: it compares only
# {glue:text}`c11_auroc_pairs` (master, other gene) pairs, so each swapped pair moves it by
# {glue:text}`c11_auroc_step:.2f`, and a ranking by sign can look good while every predicted
# shift is a small fraction of the true one. Even a random gene of matched expression moves the
# predicted fates by {glue:text}`c11_null:.4f` on average, the same order as the masters. Why:
#
# - the masters are lowly expressed, so most cells do not carry them within the context;
# - a snapshot model learns what *co-occurs* with a fate. Targets and housekeeping genes
#   correlate with fates as well as TFs do, and are far easier to see;
# - the true effect of a knockout acts through time (targets fall, then fates shift); a
#   deletion of one token cannot replay that.
#
# Chapter 12 tests these hypotheses formally and chapter 13 asks the same of other
# regulator rankings. Before that, the one kind of data that does carry causal information.
#
# One gene at a time: `tflib.widgets.fate_shift_explorer` draws the mean fate probabilities
# of the test cells before and after a deletion, as the Transcriptformer predicts them and as
# the simulator's knockout gives them. In Jupyter or Colab, `explorer.show()` adds a menu of
# the genes; the book shows the three master TFs.

# %%
from tflib import widgets as tw

explorer = tw.fate_shift_explorer(
    table, true_shift, before=P_test, true_before=truth.loc[test]
)

# %% tags=["skip-execution"]
# interactive: a menu over the genes (Jupyter, Colab; not run in the book)
explorer.show()

# %% mystnb={"image": {"alt": "Donut charts for the three master transcription factors: for each, the mean fate probabilities before and after its deletion as predicted by the Transcriptformer, and before and after its knockout in the simulator. The predicted donuts barely change, while the true donuts lose a visible share of the master's own fate."}}
fig = explorer.static(masters)
plt.show()

# %% [markdown]
# *Figure: mean fate probabilities before and after removing each master TF, predicted by
# the Transcriptformer (in-silico deletion, averaged over the cells whose context holds the
# gene) and true (simulated knockout, averaged over all test cells). The predicted pair
# barely differs; the true pair loses part of the master's own fate.*
#
# ## 5 Interventional data: a simulated Perturb-seq screen
#
# `tds.screen` grows cells of the same world with one gene knocked out from the start and
# measures them like the original cells, with non-targeting controls: a Perturb-seq
# experiment with a known answer.

# %%
t0 = time.perf_counter()
screened = masters + [g for g in genes if panel[g][0] in ("target", "housekeeping")][:2]
scr = tds.screen(sim, screened, n_cells_per_gene=200, n_control=400, seed=SEED)
comp = pd.crosstab(scr.obs["perturbation"], scr.obs["lineage"], normalize="index")
shift_screen = comp.sub(comp.loc["control"], axis=1).drop(index="control")
screen_table = pd.DataFrame(
    {
        "role": [panel[g][0] for g in shift_screen.index],
        "own fate": [panel[g][1] for g in shift_screen.index],
        "screen shift (own fate)": [
            shift_screen.loc[g, panel[g][1]] for g in shift_screen.index
        ],
        "true shift (snapshot cells)": [
            true_shift[g][panel[g][1]].mean() for g in shift_screen.index
        ],
    },
    index=shift_screen.index,
)
t_screen = time.perf_counter() - t0
glue(
    "c11_screen_master",
    float(screen_table.loc[masters, "screen shift (own fate)"].mean()),
    display=False,
)
non_reg = [g for g in screened if g not in masters]
glue(
    "c11_screen_nonreg",
    float(screen_table.loc[non_reg, "screen shift (own fate)"].abs().max()),
    display=False,
)
assert (screen_table.loc[masters, "screen shift (own fate)"] < -0.1).all()
assert screen_table.loc[non_reg, "screen shift (own fate)"].abs().max() < 0.1
screen_table.round(3)

# %% [markdown]
# Each master TF's knockout cells reach its fate far less often (mean shift
# {glue:text}`c11_screen_master:.2f`), while the non-regulators' cells stay close to the
# controls (largest difference {glue:text}`c11_screen_nonreg:.2f`, the size of sampling noise
# with 200 cells per group).
# The screen's shifts are larger than the snapshot knockouts' because the gene is missing from
# the start, not from each cell's current state. Interventional data answers the question
# the snapshot could not. The fate donuts show the same for one master TF, cell by cell, on
# the snapshot: before and after its true knockout.

# %%
g0 = masters[0]
shift0 = true_shift[g0]
donut = cells_test.copy()
from sklearn.decomposition import PCA

donut.obsm["X_pca"] = PCA(2, random_state=SEED).fit_transform(
    np.log1p(donut.X.toarray())
)
donut.obsm["before"] = truth.loc[test].to_numpy()
donut.obsm["after"] = np.clip(truth.loc[test].to_numpy() + shift0.to_numpy(), 0, None)
donut.obsm["after"] /= donut.obsm["after"].sum(1, keepdims=True)
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for ax, key, title in (
    (axes[0], "before", "unperturbed"),
    (axes[1], "after", f"{g0} knocked out (true)"),
):
    tflib.pl.fate_donuts(
        donut,
        basis="pca",
        key=key,
        names=FATES,
        n_donuts=45,
        seed=SEED,
        ax=ax,
        title=title,
        legend=key == "after",
    )
fig.tight_layout()
glue("c11_fig_donuts", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} c11_fig_donuts
# :alt: Two panels of fate donut charts on the first two principal components of the test cells. Left, before the knockout, donuts near the first master transcription factor's branch are mostly of its fate colour. Right, after its true knockout, those donuts show much less of that colour and more of the other two fates.
# :name: fig-11-donuts
#
# True fate probabilities of 45 test cells before (left) and after (right) the simulated
# knockout of the first fate's master TF, on the first two principal components.
# ```
#
# ## 6 Real data: perturbation response against simple baselines
#
# Two public perturbation datasets put the same discipline on real cells. Predicting a
# perturbation's *expression* response is where scGen-style latent arithmetic
# {cite:p}`lotfollahi2019scgen` and many foundation models claim success, and where an
# additive baseline is hard to beat {cite:p}`ahlmanneltze2025linear`.
#
#
# **Kang IFN-β (scGen's own split).** Hold out the stimulated CD4 T cells, train scVI on
# everything else, and predict them from the CD4 T controls by adding the mean latent
# stimulation vector of the other cell types: scGen's latent arithmetic, here on scvi-tools'
# scVI because the maintained scGen implementations pull in a second deep-learning stack
# (JAX) that the course's CPU install avoids. Beside it: **no change** (the controls) and the
# **additive** shift (the controls plus the mean stimulated-minus-control difference of the
# other cell types, in log-normalised expression).

# %%
import logging

for name in (
    "lightning.pytorch",
    "lightning.fabric",
    "scvi",
):  # training chatter, not results
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="Transforming to str index")
t0 = time.perf_counter()
kang = tds.load("kang_scgen_valid")
tl.counts_from_lognorm(
    kang, total_key="n_counts"
)  # the split stores log-normalised values; scVI needs counts
res = tl.latent_arithmetic(
    kang,
    condition_key="condition",
    control="control",
    stimulated="stimulated",
    group_key="cell_type",
    held_out="CD4T",
    layer="counts",
    seed=SEED,
)
kang_scores = res.scores()[["r2_all", "r2_top_de", "delta_pearson_all"]]
t_kang = time.perf_counter() - t0
for m in ("latent_arithmetic", "latent_shift", "additive", "no_change"):
    glue(f"c11_kang_{m}", float(kang_scores.loc[m, "r2_top_de"]), display=False)
gain = kang_scores.loc[["latent_arithmetic", "latent_shift"], "r2_top_de"] - kang_scores.loc[
    "additive", "r2_top_de"
]
glue("c11_kang_gain_lo", float(gain.min()), display=False)
glue("c11_kang_gain_hi", float(gain.max()), display=False)
assert 0 < gain.min() and gain.max() < 0.1  # the prose: a small gain over the additive baseline
assert (
    kang_scores.loc["additive", "r2_top_de"] > kang_scores.loc["no_change", "r2_top_de"]
)
kang_scores.round(3)

# %% [markdown]
# On the 100 genes most changed by the stimulation, latent arithmetic reaches R²
# {glue:text}`c11_kang_latent_arithmetic:.2f`, the additive baseline
# {glue:text}`c11_kang_additive:.2f` and no change {glue:text}`c11_kang_no_change:.2f`
# (one held-out cell type, one seed). The `latent_shift` row keeps only the change the model
# predicts: the measured controls plus (decoded prediction − decoded controls), so the
# decoder's own error in reproducing the controls cancels; it reaches
# {glue:text}`c11_kang_latent_shift:.2f`. Interferon responses are shared by most blood cells,
# which is why the additive baseline is already strong: the learned model adds
# {glue:text}`c11_kang_gain_lo:.2f` to {glue:text}`c11_kang_gain_hi:.2f` of R² on top of
# "the other cell types' average response", on one split without an interval.
#
# **Norman double perturbations (Perturbench development file).** For each pair A+B whose
# singles were also measured, the additive prediction is control + (A − control) +
# (B − control).

# %%
norman = tds.load("perturbench_devel")
with warnings.catch_warnings():
    warnings.simplefilter(
        "ignore", tl.ResponseWarning
    )  # doubles whose single is missing are skipped
    doubles = tl.additive_doubles(
        norman,
        perturbation_key="perturbation",
        control="control",
        context_key="cell_type",
    )
glue("c11_norman_n", int(len(doubles)), display=False)
glue("c11_norman_add", float(doubles["r2_additive"].mean()), display=False)
glue("c11_norman_none", float(doubles["r2_no_change"].mean()), display=False)
assert (doubles["r2_additive"] >= doubles["r2_no_change"]).all()
doubles.set_index("double")[
    ["n_cells", "r2_additive", "r2_no_change", "delta_pearson_additive"]
].round(3)

# %% [markdown]
# Over the {glue:text}`c11_norman_n` scorable doubles, the additive prediction reaches mean R²
# {glue:text}`c11_norman_add:.3f` against {glue:text}`c11_norman_none:.3f` for no change.
# Most genes do not respond to most perturbations, so R² over all genes flatters every
# method; the change-based columns are the stricter test. Any model that claims to predict
# combinations must beat this line first.
#
# Does the Transcriptformer's in-silico overexpression of the same genes move control cells
# towards the cells that were really perturbed? The file stores log-normalised values of 500
# variable genes; `expm1` turns them back into per-cell normalised values, which the
# tokenizer reads with `input="normalized"` (a cell's ranks do not depend on its total). Most
# perturbed genes are not among the 500 measured ones; `tl.perturb` treats a vocabulary gene
# that the assay did not measure as unexpressed, so overexpression inserts its token at the
# front. For each perturbation whose genes all have a token, we overexpress them in 60 control
# cells and score `goal_cosine_shift` towards the centroid of the really perturbed cells,
# beside ten random vocabulary genes overexpressed in the same cells.

# %%
k562 = norman[norman.obs["cell_type"] == "k562"].copy()
k562.layers["normalized"] = k562.X.copy()
k562.layers["normalized"].data = np.expm1(k562.layers["normalized"].data)
enc = {
    "layer": "normalized",
    "input": "normalized",
    "id_type": "symbol",
    "species": "human",
}
labels = [p for p in k562.obs["perturbation"].astype(str).unique() if p != "control"]
testable = sorted(p for p in labels if all(g in tokenizer.vocab for g in p.split("+")))
targets = sorted({g for p in labels for g in p.split("+")})
glue("c11_norman_targets", len(targets), display=False)
glue("c11_norman_known", sum(g in tokenizer.vocab for g in targets), display=False)
glue("c11_norman_testable", len(testable), display=False)
glue("c11_norman_labels", len(labels), display=False)
pool = [g for g in tokenizer.vocab.genes if g not in set(targets)]
random_genes = list(np.random.default_rng(SEED).choice(pool, size=10, replace=False))
control_ids = k562.obs_names[k562.obs["perturbation"] == "control"][:60]
rows = []
with warnings.catch_warnings():
    warnings.simplefilter(
        "ignore", UserWarning
    )  # the cells' count coverage is reported below
    for label in testable:
        sub = k562[k562.obs["perturbation"].isin(["control", label])]
        unit = tuple(label.split("+")) if "+" in label else label
        tab = tl.perturb(
            sub,
            model,
            tokenizer,
            [unit] + random_genes,
            kind="overexpress",
            goal_key="perturbation",
            goal=label,
            cells=control_ids,
            encode_kwargs=enc,
            check_coverage=False,
        )
        per_gene = tab.groupby("gene")["goal_cosine_shift"].mean()
        real, null = per_gene[label], per_gene.drop(label)
        rows.append(
            {
                "perturbation": label,
                "real gene": real,
                "random genes (mean)": null.mean(),
                "random genes beaten": int((real > null).sum()),
            }
        )
toward = pd.DataFrame(rows).set_index("perturbation")
cover = tokenizer.encode(
    k562[k562.obs["perturbation"] == "control"], check_coverage=False, **enc
)
glue("c11_norman_cover", 100 * cover.report["count_fraction_covered"], display=False)
glue(
    "c11_norman_beats_all",
    int((toward["random genes beaten"] == 10).sum()),
    display=False,
)
glue(
    "c11_norman_beats_half",
    int((toward["random genes beaten"] >= 5).sum()),
    display=False,
)
glue(
    "c11_norman_median_beaten",
    float(toward["random genes beaten"].median()),
    display=False,
)
toward.round(4)

# %% [markdown]
# The course vocabulary knows {glue:text}`c11_norman_known` of the
# {glue:text}`c11_norman_targets` perturbed genes, so {glue:text}`c11_norman_testable` of the
# {glue:text}`c11_norman_labels` perturbations can be tried; the vocabulary covers
# {glue:text}`c11_norman_cover:.0f` % of the control cells' normalised expression over the 500
# measured genes. The overexpressed gene moves the cells towards the real perturbed cells more
# than all ten random genes in {glue:text}`c11_norman_beats_all` perturbations, and more than at
# least half of them in {glue:text}`c11_norman_beats_half`; the median perturbation beats
# {glue:text}`c11_norman_median_beaten:.0f` of ten. A score near five of ten is what chance
# gives. An inserted token always moves the embedding; only the comparison with random genes
# says whether it moves it the right way. This model was never trained on K562 cells, and
# the additive baseline above needs no model at all.

# %% [markdown]
# ## 7 Predicting knockouts the screen never measured
#
# Section 5's screen measured five knockouts. A real screen measures hundreds, never all, and
# the modern hope is that a model fitted on some perturbations predicts the rest. We test it
# here. Every regulator of the world and a few targets and housekeeping genes are added to the
# screen (30 cells each, with three double knockouts of the master TFs), and
# `tl.split_perturbations` holds out 30 % of the *perturbations*, not of the cells: no
# held-out knockout's cells are ever seen in training. `tl.predict_unseen` then predicts each
# held-out knockout's fate shift (mean true fate probabilities of its cells minus the
# controls') and its expression response (mean log-normalised expression minus the
# controls'), with predictors fitted on the training knockouts only:
#
# - **no change**: a zero response;
# - **additive**: a double gets the sum of its singles' measured responses; a held-out single
#   gets the mean response of the training singles (the "average perturbation");
# - **linear** {cite:p}`ahlmanneltze2025linear`: ridge regression from the knocked-out gene's loadings on
#   the controls' top ten principal components to the response;
#   **linear (TF embedding)**: the same with the Transcriptformer's input embedding of the gene;
# - **Transcriptformer**: chapter 10's fate model, fine-tuned on the cells of the training
#   knockouts and the controls (so it sees, for some genes, what their absence does), then
#   asked about a held-out knockout by deleting its gene's token in 40 control cells. It
#   predicts fate shifts only.
#
# Expression is scored like the Norman doubles: R² of the mean profile and Pearson correlation
# of the predicted change with the real one, on all genes and on the knockout's 20 top DE genes.

# %%
t0 = time.perf_counter()
import anndata as ad

v_reg = v.index[v.role.str.endswith("_tf")]
extra = (
    [g for g in v_reg if g not in screened]
    + [g for g in v.index[v.role == "target"] if g not in genes][:6]
    + [g for g in v.index[v.role == "housekeeping"] if g not in genes][:3]
)
doubles_ko = [
    (masters[0], masters[1]),
    (masters[1], masters[2]),
    (masters[0], masters[2]),
]
more = tds.screen(sim, extra + doubles_ko, n_cells_per_gene=30, n_control=0, seed=SEED)
t_more = time.perf_counter() - t0
big = ad.concat([scr, more], merge="same")
big.obsm["fate_probs_true"] = pd.concat(
    [scr.obsm["fate_probs_true"], more.obsm["fate_probs_true"]]
).to_numpy()
big.uns["fate_names"] = np.array(FATES, dtype=object)
big.var["tf_symbol"] = sim.var.loc[big.var_names, "tf_symbol"]
tl.split_perturbations(
    big, perturbation_key="perturbation", control="control", frac_test=0.3, seed=SEED
)
held_out = list(big.uns["split"]["test"])

# the Transcriptformer fate model, fine-tuned on the training knockouts' cells and the controls
fit_cells = (
    big.obs[big.obs["split"] != "test"]
    .groupby("perturbation", observed=True)
    .head(8)
    .index
)
fit_cells = fit_cells.union(big.obs_names[big.obs["perturbation"] == "control"][:40])
screen_student = tl.TrajectoryAwareTranscriptformer(  # 64 tokens, half the epochs
    model, tokenizer, gene_key="tf_symbol", epochs=4, seed=SEED
)
screen_student.fit(
    big,
    pd.DataFrame(big.obsm["fate_probs_true"], index=big.obs_names, columns=FATES).loc[
        fit_cells
    ],
)
t_fit = time.perf_counter() - t0
emb = tl.gene_embeddings(
    big, model, tokenizer, kind="static", gene_key="tf_symbol"
).set_axis(big.var_names)
unseen = tl.predict_unseen(
    big,
    perturbation_key="perturbation",
    control="control",
    split_key="split",
    fate_key="fate_probs_true",
    features={"linear (TF embedding)": emb},
    n_top_de=20,
    model=model,
    tokenizer=tokenizer,
    fate_model=screen_student,
    n_control_cells=40,
    encode_kwargs={"gene_key": "tf_symbol"},
    seed=SEED,
)
t_unseen = time.perf_counter() - t0
cols = [
    "fate_mae",
    "fate_sign",
    "r2_all",
    "r2_top_de",
    "delta_pearson_all",
    "delta_pearson_top_de",
]
order_p = [
    "no_change",
    "additive",
    "linear",
    "linear (TF embedding)",
    "transcriptformer",
]
unseen_mean = unseen.groupby("predictor")[cols].mean().loc[order_p]
for p_, row in unseen_mean.iterrows():
    key = p_.split(" ")[0] + ("_emb" if "embedding" in p_ else "")
    for c in cols:
        glue(
            f"c11_unseen_{key}_{c}",
            float(row[c]) if np.isfinite(row[c]) else float("nan"),
            display=False,
        )
glue("c11_unseen_n", int(len(held_out)), display=False)
glue("c11_unseen_n_train", int(len(big.uns["split"]["train"])), display=False)
glue("c11_unseen_time", float(t_unseen), display=False)
print(f"{len(held_out)} held-out knockouts: {held_out}")
print(
    f"section runtime {t_unseen:.0f} s (screen {t_more:.0f} s, fine-tune {t_fit - t_more:.0f} s)"
)
unseen_mean.round(3)

# %%
per_pert = unseen.pivot(
    index="perturbation",
    columns="predictor",
    values=["fate_mae", "delta_pearson_top_de"],
)
per_pert = per_pert.reindex(
    columns=pd.MultiIndex.from_product([["fate_mae", "delta_pearson_top_de"], order_p])
)
per_pert.insert(
    0,
    "role",
    [" + ".join(v.loc[g, "role"] for g in p_.split("+")) for p_ in per_pert.index],
)
pair = [p_ for p_ in held_out if "+" in p_]
singles_ = [p_ for p_ in held_out if "+" not in p_]
for name_ in ("no_change", "additive"):
    glue(
        f"c11_unseen_pair_{name_}",
        float(per_pert.loc[pair, ("fate_mae", name_)].mean()) if pair else float("nan"),
        display=False,
    )
    glue(
        f"c11_unseen_single_{name_}",
        float(per_pert.loc[singles_, ("fate_mae", name_)].mean()),
        display=False,
    )
glue("c11_unseen_n_single", len(singles_), display=False)
m_ = unseen_mean
# the prose below follows these numbers; keep it true
assert m_["fate_mae"].idxmin() == "additive"
assert (
    m_.loc[["linear", "linear (TF embedding)"], "fate_mae"]
    > m_.loc["no_change", "fate_mae"]
).all()
assert (
    abs(m_.loc["transcriptformer", "fate_mae"] - m_.loc["no_change", "fate_mae"]) < 0.01
)
assert (
    m_["delta_pearson_top_de"].idxmax() == "additive"
    and m_["delta_pearson_top_de"].max() < 0.3
)
assert m_.loc["no_change", "r2_all"] > 0.9
assert (  # on the singles the additive baseline is no better than no change
    abs(
        per_pert.loc[singles_, ("fate_mae", "additive")].mean()
        - per_pert.loc[singles_, ("fate_mae", "no_change")].mean()
    )
    < 0.005
)
assert (
    not pair
    or (
        per_pert.loc[pair, ("fate_mae", "additive")]
        < per_pert.loc[pair, ("fate_mae", "no_change")]
    ).all()
)
per_pert.round(3)

# %% [markdown]
# Over the {glue:text}`c11_unseen_n` held-out knockouts (the model and the baselines saw
# {glue:text}`c11_unseen_n_train` others), the best fate-shift predictor is the plainest one:
# the additive baseline, which for a held-out single is just the average training response,
# misses the fate probabilities by {glue:text}`c11_unseen_additive_fate_mae:.3f` on average,
# against {glue:text}`c11_unseen_no_change_fate_mae:.3f` for no change. All of its advantage
# comes from the held-out double knockout of two master TFs, where the sum of the two
# measured singles cuts the error from {glue:text}`c11_unseen_pair_no_change:.2f` to
# {glue:text}`c11_unseen_pair_additive:.2f`; on the {glue:text}`c11_unseen_n_single`
# held-out singles it errs as much as no change ({glue:text}`c11_unseen_single_additive:.3f`
# against {glue:text}`c11_unseen_single_no_change:.3f`). "Best" here rests on one knockout,
# so it is a reading of this split, not a ranking of methods. Both ridge regressions do *worse* than no change
# ({glue:text}`c11_unseen_linear_fate_mae:.3f` on the control PCA loadings,
# {glue:text}`c11_unseen_linear_emb_fate_mae:.3f` on the Transcriptformer's gene embeddings):
# with a few dozen training knockouts, most of which do nothing, a gene's co-expression or
# its embedding does not say what its knockout does. The fine-tuned Transcriptformer errs by
# {glue:text}`c11_unseen_transcriptformer_fate_mae:.3f`, almost exactly as much as no change:
# deleting a held-out gene's token in control cells barely moves its fate predictions, the
# same failure as in section 4. Its shifts point the right way on the most shifted fate in a
# fraction {glue:text}`c11_unseen_transcriptformer_fate_sign:.1f` of the held-out knockouts,
# a sign with almost no size.
#
# In expression space the picture matches the Norman doubles. R² of the mean profile
# flatters everyone: no change scores {glue:text}`c11_unseen_no_change_r2_all:.2f` over all
# genes because the baseline levels dominate. The change-based score is the honest one, and
# there the best predictor, again the additive baseline, reaches a Pearson correlation of only
# {glue:text}`c11_unseen_additive_delta_pearson_top_de:.2f` with the real change on each
# knockout's 20 top DE genes (linear {glue:text}`c11_unseen_linear_delta_pearson_top_de:.2f`,
# linear on the Transcriptformer's embeddings
# {glue:text}`c11_unseen_linear_emb_delta_pearson_top_de:.2f`). One world, one split, ten
# held-out knockouts: a small test, but no predictor here learned much about what an unseen
# knockout does.

# %% [markdown]
# ## Caveats
#
# - **An in-silico deletion is not a knockout.** Only the token goes; the other genes keep
#   their ranks, so a TF's downstream programme is not removed.
# - **A rank-only model cannot express dosage.** Halving a gene changes nothing unless its
#   rank changes; overexpression is "move to the front", whatever the level.
# - **Context limits what can be perturbed.** A gene ranked beyond the model's context is
#   invisible to it; lowly expressed regulators are exactly those genes.
# - **Correlation is not causation.** A model fitted to a snapshot rewards genes that
#   co-occur with a fate; targets and housekeeping genes do, and they are easier to see.
# - **The fate model's ceiling is its teacher.** Here it learnt the true probabilities; with
#   CellRank's estimates (chapter 10) every error of the velocity fit is inherited.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-11-overexpress
# Repeat section 3 with `kind="overexpress"` for the three master TFs. Which direction do
# their own-fate shifts take, and are they larger than the deletions'? Why might
# overexpression be easier for this model to see?
# ```
#
# ````{solution} ex-11-overexpress
# :class: dropdown
# Overexpression moves the TF to the front in every cell, including the many cells where it
# was invisible, so every cell's input changes. The executed solution below prints each
# master's own-fate shift for both perturbations. Overexpression moved the shift further than
# deletion for {glue:text}`c11_ex_over_bigger` of the 3 masters (largest
# {glue:text}`c11_ex_over_max:.3f` in magnitude), but it *raised* the own fate, as a master's
# overexpression should, for only {glue:text}`c11_ex_over_up` of them (mean
# {glue:text}`c11_ex_over_mean:.3f`, against {glue:text}`c11_pred_master_tra:.3f` for the
# deletions). The model sees that the input changed more; it has not learned what the change
# means.
# ````

# %% tags=["hide-input"]
over = tl.perturb(
    cells_test,
    model,
    tokenizer,
    [sym[g] for g in masters],
    kind="overexpress",
    fate_model=student,
    pooling="mean",
    encode_kwargs={"gene_key": "tf_symbol"},
)
over["gene"] = over["gene"].map({s: g for g, s in sym.items()})
over_own = pd.Series(
    {
        g: float(over.loc[over.gene == g, f"fate_shift_{panel[g][1]}"].mean())
        for g in masters
    }
)
assert len(over) == len(masters) * cells_test.n_obs  # overexpression acts on every cell
glue("c11_ex_over_mean", float(over_own.mean()), display=False)
glue("c11_ex_over_max", float(over_own.abs().max()), display=False)
deleted_own = compare.loc[masters, "Transcriptformer"]  # section 4's deletions, same genes
n_up = int((over_own > 0).sum())  # a master's overexpression should raise its own fate
n_bigger = int((over_own.abs() > deleted_own.abs()).sum())
glue("c11_ex_over_up", n_up, display=False)
glue("c11_ex_over_bigger", n_bigger, display=False)
assert n_up < len(masters)  # the solution's reading: the direction is not what biology says
pd.DataFrame({"overexpression": over_own, "deletion": deleted_own}).round(4)

# %% [markdown]
# ```{exercise}
# :label: ex-11-deciding
# Geneformer scores perturbations on the cells in the state of interest rather than on all
# cells. Restrict the comparison of section 4 to the *deciding* cells (differentiating but not
# yet committed: `obs["differentiating"] & ~obs["committed"]`). Do the true shifts grow? Do
# the predicted ones?
# ```
#
# ````{solution} ex-11-deciding
# :class: dropdown
# The true knockout effects are largest in deciding cells, because their futures are still
# open. The predicted shifts do not grow with them: the model's view of those cells has not
# changed. The executed solution below computes both: in deciding cells the masters' true
# own-fate shift averages {glue:text}`c11_ex_dec_true:.2f`, the Transcriptformer's prediction
# {glue:text}`c11_ex_dec_pred:.3f`.
# ````

# %% tags=["hide-input"]
deciding = set(
    cells_test.obs_names[
        (cells_test.obs["differentiating"] & ~cells_test.obs["committed"]).to_numpy()
    ]
)
dec = pd.DataFrame(
    {
        "true (deciding)": [
            float(
                true_shift[g]
                .loc[true_shift[g].index.isin(deciding), panel[g][1]]
                .mean()
            )
            for g in masters
        ],
        "Transcriptformer (deciding)": [
            float(
                table.loc[
                    (table.gene == g) & table.cell.isin(deciding),
                    f"fate_shift_{panel[g][1]}",
                ].mean()
            )
            for g in masters
        ],
    },
    index=masters,
)
assert (dec["true (deciding)"] <= compare.loc[masters, "true (all cells)"] + 1e-9).all()
assert (
    dec["Transcriptformer (deciding)"].abs().max()
    < dec["true (deciding)"].abs().min() / 5
)  # far below the truth
glue("c11_ex_dec_true", float(dec["true (deciding)"].mean()), display=False)
glue("c11_ex_dec_pred", float(dec["Transcriptformer (deciding)"].mean()), display=False)
dec.round(4)

# %% [markdown]
# ## Quiz
#
# :::{admonition} 1. Why does deleting a master TF's token leave most cells' input unchanged?
# :class: dropdown
# Because the master TFs are lowly expressed and ranked low: only about
# {glue:text}`c11_master_visible:.0f` % of test cells carry one within the model's
# {glue:text}`c11_ctx`-token context, and a gene outside the context cannot be deleted in any
# way the model sees.
# :::
#
# :::{admonition} 2. Why must a screen be split by perturbation rather than by cell?
# :class: dropdown
# Cells of the same knockout share its response; if some of them were in training, a model
# could memorise that response and would look as if it predicted an unseen knockout.
# :::
#
# :::{admonition} 3. No change scores an R² of {glue:text}`c11_unseen_no_change_r2_all:.2f` over all genes in section 7. Does it predict well?
# :class: dropdown
# No. It scored {glue:text}`c11_unseen_no_change_r2_all:.2f` because the genes' baseline levels
# dominate the mean profile; it predicts no change at all, so its correlation with the real
# change is undefined. Change-based scores are the stricter test.
# :::
#
# :::{admonition} 4. Which predictor of held-out fate shifts had the smallest error in section 7, and what does it know?
# :class: dropdown
# The additive baseline ({glue:text}`c11_unseen_additive_fate_mae:.3f`, against
# {glue:text}`c11_unseen_no_change_fate_mae:.3f` for no change). For a held-out single it
# knows only the average response of the training knockouts; for a double, the sum of its two
# measured singles.
# :::
#
# ## Key takeaways
#
# - An in-silico deletion removes one token; an overexpression moves it to the front.
#   `tl.perturb` runs many such variants per forward pass and scores each four ways.
# - On a world with known answers, the master TFs' true knockouts shift their fates by
#   {glue:text}`c11_true_master:.2f` on average, while the Transcriptformer predicts
#   {glue:text}`c11_pred_master_tra:.3f`. Neither it nor the linear baseline predicts larger
#   shifts for the masters than for genes with no causal role (ratio of magnitudes
#   {glue:text}`c11_ratio_tra:.1f` and {glue:text}`c11_ratio_lin:.1f`); the Transcriptformer's
#   AUROC of {glue:text}`c11_auroc_tra:.2f` on eleven genes comes from signs, not sizes.
# - The reasons are measurable: low expression puts regulators outside the context, and a
#   snapshot rewards correlation.
# - Interventional data (a Perturb-seq screen) shows the masters' effects directly (mean
#   own-fate shift {glue:text}`c11_screen_master:.2f`). Model outputs are hypotheses;
#   experiments decide. Chapter 12 puts numbers on that loop.
# - On real perturbation data, simple baselines set the bar: the additive shift reaches R²
#   {glue:text}`c11_kang_additive:.2f` on Kang's top DE genes (latent arithmetic
#   {glue:text}`c11_kang_latent_arithmetic:.2f`) and {glue:text}`c11_norman_add:.3f` on the
#   Norman doubles, over all genes, where no change already scores
#   {glue:text}`c11_norman_none:.3f`. The Transcriptformer's in-silico overexpression moved K562 cells towards
#   the really perturbed cells more than all ten random genes in
#   {glue:text}`c11_norman_beats_all` of {glue:text}`c11_norman_testable` perturbations.
# - Predicting knockouts a screen never measured is hard: on {glue:text}`c11_unseen_n` held-out knockouts the
#   additive baseline had the smallest fate-shift error ({glue:text}`c11_unseen_additive_fate_mae:.3f`
#   against {glue:text}`c11_unseen_no_change_fate_mae:.3f` for no change, all of it from the
#   one held-out double), the fine-tuned
#   Transcriptformer erred as much as no change ({glue:text}`c11_unseen_transcriptformer_fate_mae:.3f`),
#   and the ridge regressions did worse than no change.

# %%
glue("c11_runtime", float(time.perf_counter() - T0), display=False)
tflib.utils.footer(seed=SEED)
