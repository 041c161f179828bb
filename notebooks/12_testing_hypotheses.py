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
# # 12 Testing hypotheses
#
# Chapter 11 turned a model into a generator of statements such as "deleting gene G lowers
# the probability of fate F". A statement like that is a **hypothesis**: it can be wrong, and
# it is worth something only if we say how we would find out. This chapter states the
# predictions as falsifiable claims, tests them with the standard tools (rank-sum and
# permutation tests, bootstrap intervals, false discovery rate control), shows live how
# treating cells as independent replicates manufactures discoveries, sizes the experiment that
# would confirm a claim, and finally checks the claims against the simulator's true knockouts.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. turn a predicted perturbation effect into a one-sided, falsifiable test with a stated
#    reference (all other genes, or expression-matched random genes);
# 2. choose between a rank-sum test, a permutation test and a bootstrap interval, and read
#    each one's output;
# 3. control the false discovery rate over many genes (Benjamini–Hochberg vs
#    Benjamini–Yekutieli) and say what a q-value promises;
# 4. recognise pseudoreplication and fix it with pseudobulk tests across samples;
# 5. compute the power of a validation experiment and the replicates it needs;
# 6. score a predictor against the true effects with precision, recall and AUROC, each with a
#    bootstrap interval;
# 7. close the loop: spend a budget of experiments in rounds and let their results revise the
#    ranking.
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
from myst_nb import glue

import tflib
import tflib.datasets as tds
import tflib.tl as tl
from tflib import stats
from tflib.pl.workflow import OKABE_ITO

SEED = 0
SIM_SEED = 11  # chapter 11's world
rng = tflib.utils.notebook_setup(SEED)
T0 = time.perf_counter()

# %% [markdown]
# ## 1 From a prediction to a falsifiable statement
#
# We reuse chapter 11's simulated world and its fastest predictor, the linear fate model (a
# logistic regression from expression to the simulator's fate probabilities, whose in-silico
# knockout sets a gene to zero). It gives one predicted fate shift per (cell, gene). We
# perturb every transcription factor (TF) of the world and as many genes of other roles, plus
# twenty genes drawn at random within the same expression bins as the TFs: the **null genes**.
#
# A testable statement needs four parts: the gene, the fate, the direction, and what
# "no effect" looks like. Here: *deleting G lowers the probability of G's own fate more than
# deleting a random gene of similar expression does.*

# %%
ARTIFACTS = Path("_artifacts")
sim = tl.load_or_build(  # chapter 11's world, or the same call again
    ARTIFACTS / "11_world.h5ad", tl.course_world, world_seed=SIM_SEED
)
truth = sim.obsm["fate_probs_true"]
FATES = list(truth.columns)
v = sim.var
tfs = list(v.index[v.role.isin(["master_tf", "secondary_tf", "decoy_tf"])])
others = []
for role in ("target", "housekeeping"):
    others += list(v.index[v.role == role][: len(tfs) // 2])
candidates = tfs + others
null = tl.matched_random_genes(sim, tfs, n_per_gene=1, exclude=candidates, seed=SEED)
null_genes = list(dict.fromkeys(null["random_gene"]))[:20]
# the fate each gene is scored on: its module's fate (TFs and targets); the first fate otherwise
fate_of = {
    g: (v.loc[g, "module"] if v.loc[g, "module"] in FATES else FATES[0])
    for g in candidates + null_genes
}

order = np.random.default_rng(SEED).permutation(sim.n_obs)
train, test = sim.obs_names[order[:400]], sim.obs_names[order[400:]]
cells = sim[test].copy()
linear = tl.LinearFateModel(C=0.1).fit(sim, truth.loc[train])
table = tl.perturb_linear(cells, linear, candidates + null_genes, kind="delete")
roles = v.loc[candidates, "role"].value_counts()
glue("c12_n_tfs", len(tfs), display=False)
glue("c12_n_candidates", len(candidates), display=False)
glue("c12_n_cells", cells.n_obs, display=False)
roles.rename("genes").to_frame()

# %% [markdown]
# ## 2 One gene, three tests
#
# Take the first master TF. Its per-cell predicted shifts (in the cells that express it) form
# one sample, the null genes' shifts the other. Three standard tools answer slightly different
# questions:
#
# - the **rank-sum test** (Mann–Whitney) asks whether a random cell's shift tends to be lower
#   than a random null shift, using ranks only, so a few extreme cells cannot dominate it;
# - the **permutation test** asks whether the *difference of means* is larger than label
#   shuffling produces;
# - the **bootstrap interval** does not test anything: it says how precisely the mean shift is
#   known, by resampling cells.

# %%
master = v.index[(v.role == "master_tf")][0]
fate = fate_of[master]
col = f"fate_shift_{fate}"
x = table.loc[(table.gene == master) & table.expressed, col].to_numpy()
y = table.loc[table.gene.isin(null_genes) & table.expressed, col].to_numpy()
three = pd.concat(
    [
        stats.rank_test(x, y, alternative="less").assign(
            test="rank-sum (Mann–Whitney)"
        ),
        stats.permutation_test(
            x, y, alternative="less", n_resamples=4999, seed=SEED
        ).assign(test="permutation"),
    ]
).set_index("test")[["effect", "pvalue", "n_x", "n_y"]]
ci = stats.bootstrap_ci(lambda a, _: float(np.mean(a)), x, x, n_boot=1000, seed=SEED)
glue("c12_master", master, display=False)
glue("c12_master_fate", fate, display=False)
glue("c12_master_mean", float(x.mean()), display=False)
glue("c12_master_ci_low", ci.low, display=False)
glue("c12_master_ci_high", ci.high, display=False)
glue("c12_p_rank", float(three.loc["rank-sum (Mann–Whitney)", "pvalue"]), display=False)
glue("c12_p_perm", float(three.loc["permutation", "pvalue"]), display=False)
three.round(4)

# %% [markdown]
# For {glue:text}`c12_master` (scored on fate {glue:text}`c12_master_fate`) the predicted
# mean shift is {glue:text}`c12_master_mean:.3f` (95 % bootstrap CI
# {glue:text}`c12_master_ci_low:.3f` to {glue:text}`c12_master_ci_high:.3f`). The rank-sum
# test gives p = {glue:text}`c12_p_rank:.2g`, the permutation test p =
# {glue:text}`c12_p_perm:.2g`. The `effect` column means different things in the two rows:
# for the rank test, the chance that a cell's shift exceeds a null shift (0.5 = no
# difference); for the permutation test, the difference of means. A p-value says how
# surprising the data are if the gene were like a random one; it is not the probability that
# the claim is true, and a tiny p-value with a tiny effect is still a tiny effect.
#
# These tests treat each cell as one observation. That is right here, because the
# *prediction* is made per cell and we ask about the model's output. Section 5 shows when it
# is wrong.
#
# ## 3 Many genes at once: the false discovery rate
#
# Testing every candidate gene turns one question into {glue:text}`c12_n_candidates`. At
# α = 0.05, a few null genes would pass by luck alone. `stats.test_hypotheses` runs the
# one-sided test for every gene against the null genes and adjusts the p-values together:
# Benjamini–Hochberg (BH) controls the expected share of false calls among the calls when the
# tests are independent or positively dependent; Benjamini–Yekutieli (BY) holds under any
# dependence and is stricter.

# %%
tables = []
for f in FATES:  # each gene is tested on its own fate
    genes_f = [g for g in candidates if fate_of[g] == f]
    sub = table[table.gene.isin(genes_f + null_genes)]
    tables.append(
        stats.test_hypotheses(
            sub, f, "decrease", null_genes=null_genes, alpha=0.1, n_boot=499, seed=SEED
        ).assign(fate=f)
    )
calls = pd.concat(tables)
calls["qvalue"] = stats.fdr(
    calls["pvalue"].to_numpy(), method="bh"
)  # one adjustment over all tests
calls["qvalue_by"] = stats.fdr(calls["pvalue"].to_numpy(), method="by")
calls["role"] = v.loc[calls.index, "role"].to_numpy()
n_bh, n_by = int((calls.qvalue <= 0.1).sum()), int((calls.qvalue_by <= 0.1).sum())
n_raw = int((calls.pvalue <= 0.05).sum())
glue("c12_n_raw", n_raw, display=False)
glue("c12_n_bh", n_bh, display=False)
glue("c12_n_by", n_by, display=False)
calls.sort_values("pvalue").head(10)[
    [
        "role",
        "fate",
        "n_cells",
        "mean_shift",
        "ci_low",
        "ci_high",
        "pvalue",
        "qvalue",
        "qvalue_by",
    ]
].round(4)

# %% [markdown]
# {glue:text}`c12_n_raw` genes pass p ≤ 0.05; at a false discovery rate of 10 %, BH calls
# {glue:text}`c12_n_bh` and BY {glue:text}`c12_n_by`. A call means "the model predicts a
# stronger decrease for this gene than for random genes". It says nothing yet about whether
# the knockout really does that: the calls are statements about the *model*.
#
# ## 4 Are the calls right? Five predictors against the true knockouts
#
# The simulator can run the experiment: `tds.knockout` re-simulates each test cell's future
# with the gene's transcription set to zero (chapter 03). A gene is **truly fate-changing**
# when its knockout lowers its own fate's probability by more than 0.02 on average. The
# knockouts are simulated afresh for this chapter's cells, so the master TFs' true shifts
# differ from chapter 11's in the second or third decimal.
#
# Five predictors rank the same candidates, each by the strength of its claim that the gene
# lowers its fate:
#
# - the **Transcriptformer fate shift** (chapter 11): the course checkpoint with chapter 10's
#   fate head, fitted to the training cells' true fate probabilities; its deletions are
#   tested against the null genes exactly as the linear model's were in section 3;
# - **Geneformer's goal-state cosine**: how far a deletion moves the cell's embedding *away*
#   from the centroid of the gene's fate (from the same forward passes);
# - the **linear fate model** of sections 1–3;
# - **CellRank driver correlation** (chapter 09): scVelo velocity and CellRank fates on the
#   same world, then `tl.fate_drivers`, the correlation of each gene with its fate's
#   probability; a call is q ≤ 0.1 with a positive correlation;
# - a **random ranking**.
#
# ```{admonition} Why not RegVelo?
# :class: note
# RegVelo {cite:p}`wang2024regvelo` is the published tool for exactly this question: a
# velocity model with a regulatory prior whose knockouts are scored as CellRank fate
# depletion. Its current release (0.4.2) requires scvi-tools < 1.2.1 and torch < 2.6, while
# this course pins scvi-tools 1.4 and torch 2.13, so it cannot be installed beside the rest
# of the stack. If you install it in a separate environment, give it a prior that does not
# contain the answer (every TF to every gene, or co-expression), never the simulator's GRN.
# ```
#
# First the Transcriptformer. The simulated genes are relabelled with vocabulary genes of
# matching expression (`tl.vocab_labels`, chapter 10) so that the course tokenizer can read
# them.

# %%
import torch


torch.set_num_threads(2)
warnings.filterwarnings(
    "ignore", category=UserWarning, module="tflib"
)  # the vocabulary-drop notes
t0 = time.perf_counter()
model, tokenizer = tflib.models.course_checkpoint()
tl.vocab_labels(sim, tokenizer)  # writes sim.var["tf_symbol"]
cells = sim[test].copy()
sym = dict(zip(sim.var_names, sim.var["tf_symbol"]))
student = tl.TrajectoryAwareTranscriptformer(  # chapter 11's recipe
    model, tokenizer, gene_key="tf_symbol", max_len=model.config.max_len, seed=SEED
)
student.fit(sim, truth.loc[train])
parts = []
for (
    f
) in FATES:  # one call per fate: its genes, with that fate as Geneformer's goal state
    genes_f = [g for g in candidates + null_genes if fate_of[g] == f]
    part = tl.perturb(
        cells,
        model,
        tokenizer,
        [sym[g] for g in genes_f],
        kind="delete",
        fate_model=student,
        goal_key="lineage",
        goal=f,
        encode_kwargs={"gene_key": "tf_symbol"},
    )
    parts.append(part.assign(gene=part["gene"].map({sym[g]: g for g in genes_f})))
tf_table = pd.concat(parts, ignore_index=True)
tf_calls = pd.concat(
    [
        stats.test_hypotheses(
            tf_table[
                tf_table.gene.isin(
                    [g for g in candidates if fate_of[g] == f] + null_genes
                )
            ],
            f,
            "decrease",
            null_genes=null_genes,
            alpha=0.1,
            n_boot=199,
            seed=SEED,
        )
        for f in FATES
    ]
)
tf_calls["qvalue"] = stats.fdr(tf_calls["pvalue"].to_numpy(), method="bh")
goal_cos = (
    tf_table[tf_table.expressed]
    .groupby("gene")["goal_cosine_shift"]
    .mean()
    .reindex(candidates)
    .fillna(0.0)
)
glue("c12_t_tf", time.perf_counter() - t0, display=False)
print(
    f"Transcriptformer: fit + {len(tf_table):,} deletions in {time.perf_counter() - t0:.0f} s"
)

# %% [markdown]
# Then CellRank's drivers, on velocity estimated from the counts (not the simulator's true
# velocity). Each terminal state is named after the true fate of most of its cells.
# `tl.cellrank_world` is that recipe (chapters 08 and 09's calls, one after the other); its
# result is saved for chapter 13.

# %%
t0 = time.perf_counter()
velo = tl.cellrank_world(world_seed=SIM_SEED, seed=SEED)
tl.save_artifact(  # chapter 13 loads it
    velo,
    ARTIFACTS / "12_cellrank_world.h5ad",
    tl.cellrank_world,
    world_seed=SIM_SEED,
    seed=SEED,
    overwrite=True,
)
drivers = velo.varm["fate_drivers_cellrank"]  # columns named by true fate, e.g. "A_corr"
driver_corr = pd.Series(
    {g: drivers.loc[g, f"{fate_of[g]}_corr"] for g in candidates}
).astype(float)
driver_q = pd.Series(
    {g: drivers.loc[g, f"{fate_of[g]}_qval"] for g in candidates}
).astype(float)
glue("c12_t_cellrank", time.perf_counter() - t0, display=False)
print(
    f"velocity + fates + drivers: {time.perf_counter() - t0:.0f} s; states:",
    tl.match_terminal_states(velo)["label"].to_dict(),
)

# %% [markdown]
# Now the experiment, and the five rankings scored against it: AUROC for the rankings,
# precision and recall for the predictors that make calls, each with a bootstrap interval
# over genes.

# %%
t0 = time.perf_counter()
true_mean = pd.Series(
    {
        g: float(tds.knockout(cells, g, n_futures=8, seed=SEED)[fate_of[g]].mean())
        for g in candidates
    }
)
t_ko = time.perf_counter() - t0
is_real = (true_mean < -0.02).to_numpy()
predicted = pd.DataFrame(
    {  # higher = stronger claim "lowers its fate"
        "Transcriptformer fate shift": -tf_calls.loc[
            candidates, "mean_shift"
        ].to_numpy(),
        "Geneformer goal cosine": -goal_cos.to_numpy(),
        "linear fate model": -calls.loc[candidates, "mean_shift"].to_numpy(),
        "CellRank driver correlation": driver_corr.fillna(0.0).to_numpy(),
        "random ranking": np.random.default_rng(SEED)
        .permutation(len(candidates))
        .astype(float),
    },
    index=pd.Index(candidates, name="gene"),
)
called = pd.DataFrame(
    {
        "Transcriptformer fate shift": (
            tf_calls.loc[candidates, "qvalue"] <= 0.1
        ).to_numpy(),
        "linear fate model": (calls.loc[candidates, "qvalue"] <= 0.1).to_numpy(),
        "CellRank driver correlation": (
            (driver_q <= 0.1) & (driver_corr > 0)
        ).to_numpy(),
    },
    index=predicted.index,
)
valid = stats.validation_table(
    predicted.to_dict("series"),
    is_real,
    calls=called.to_dict("series"),
    n_boot=1000,
    seed=SEED,
)
glue("c12_n_real", int(is_real.sum()), display=False)
glue("c12_t_ko", t_ko, display=False)
for name, short in (
    ("Transcriptformer fate shift", "tf"),
    ("Geneformer goal cosine", "cos"),
    ("linear fate model", "lin"),
    ("CellRank driver correlation", "drv"),
    ("random ranking", "rand"),
):
    glue(f"c12_auroc_{short}", float(valid.loc[name, "auroc"]), display=False)
best = str(valid["auroc"].astype(float).idxmax())
glue("c12_best", best, display=False)
shown = stats.with_intervals(
    valid[
        [
            "auroc",
            "auroc_low",
            "auroc_high",
            "n_called",
            "precision",
            "precision_low",
            "precision_high",
            "recall",
            "recall_low",
            "recall_high",
        ]
    ]
)
shown["n_called"] = ["–" if pd.isna(n) else int(n) for n in shown["n_called"]]
shown

# %% [markdown]
# Of the {glue:text}`c12_n_candidates` candidates, {glue:text}`c12_n_real` truly lower
# their fate (the knockouts took {glue:text}`c12_t_ko:.0f` s). Ranking AUROC: Transcriptformer
# {glue:text}`c12_auroc_tf:.2f`, Geneformer's goal cosine {glue:text}`c12_auroc_cos:.2f`,
# linear {glue:text}`c12_auroc_lin:.2f`, CellRank drivers {glue:text}`c12_auroc_drv:.2f`,
# random {glue:text}`c12_auroc_rand:.2f`. The best ranking here is the
# {glue:text}`c12_best`. The intervals are wide: with a few dozen genes, differences of
# 0.1 in AUROC are within chance. Read the table as "which predictors are better than random
# on this world", not as a leaderboard.
#
# The goal-state cosine is a similarity in the embedding, not a statement about fate: a
# deletion can move a cell away from a centroid without changing where the cell goes.
#
# Direction matters as much as rank. Among the truly fate-changing genes, how often does
# each predictor get the sign right (a negative predicted shift, a move away from the fate,
# a positive driver correlation)?

# %%
sign_right = (
    (predicted.loc[is_real].drop(columns="random ranking") > 0)
    .mean()
    .rename("sign right among true regulators")
)
glue(
    "c12_sign_tf", float(100 * sign_right["Transcriptformer fate shift"]), display=False
)
glue("c12_sign_lin", float(100 * sign_right["linear fate model"]), display=False)
(100 * sign_right).round(0).to_frame("% of true regulators")

# %% [markdown]
# The three master TFs have by far the largest true effects. Where does each predictor rank
# them among the {glue:text}`c12_n_candidates` candidates (1 = its strongest claim)?

# %%
master_tfs = list(v.index[v.role == "master_tf"])
master_rank = predicted.rank(ascending=False).loc[master_tfs].astype(int)
master_rank.insert(0, "true shift", true_mean[master_tfs].round(3))
for name, short in (
    ("Transcriptformer fate shift", "tf"),
    ("Geneformer goal cosine", "cos"),
    ("linear fate model", "lin"),
    ("CellRank driver correlation", "drv"),
):
    glue(f"c12_master_rank_{short}", int(master_rank[name].min()), display=False)
secondary = v.index[v.role == "secondary_tf"]
glue(
    "c12_master_vs_secondary",
    float(true_mean[master_tfs].mean() / true_mean[secondary].mean()),
    display=False,
)
master_rank

# %% [markdown]
# The best rank any master TF reaches is {glue:text}`c12_master_rank_tf` for the
# Transcriptformer, {glue:text}`c12_master_rank_cos` for the goal cosine,
# {glue:text}`c12_master_rank_lin` for the linear model and {glue:text}`c12_master_rank_drv`
# for CellRank's drivers, although a master's knockout moves its fate
# {glue:text}`c12_master_vs_secondary:.0f` times more than a secondary TF's on average. A good
# AUROC can come from ranking the many genes with small true effects above the genes with
# none; it does not mean that the genes that matter most come first.
#
# And the names behind the errors. Each row is a gene that at least one predictor calls
# although its knockout does not change the fate, or that is truly fate-changing and no
# predictor calls:

# %%
short = {
    "Transcriptformer fate shift": "Transcriptformer",
    "linear fate model": "linear",
    "CellRank driver correlation": "CellRank drivers",
}
show = called.rename(columns=short).assign(
    role=v.loc[candidates, "role"].to_numpy(),
    true_shift=true_mean.to_numpy(),
    real=is_real,
)
false_pos = show[~show.real & called.any(axis=1).to_numpy()]
missed = show[show.real & ~called.any(axis=1).to_numpy()]
glue("c12_n_false_pos", len(false_pos), display=False)
glue("c12_n_missed", len(missed), display=False)
for name, key in (("linear", "lin"), ("CellRank drivers", "drv"), ("Transcriptformer", "tf")):
    glue(f"c12_n_fp_{key}", int((~show.real & show[name]).sum()), display=False)  # false calls
    glue(f"c12_n_calls_{key}", int(show[name].sum()), display=False)  # all calls
pd.concat(
    [false_pos.assign(kind="called, not real"), missed.assign(kind="real, not called")]
).drop(columns="real").round(3)

# %% [markdown]
# {glue:text}`c12_n_false_pos` genes are called by some predictor although knocking them out
# does nothing to the fate, and {glue:text}`c12_n_missed` truly fate-changing genes are called
# by none. Decoy TFs, targets and housekeeping genes that *co-vary* with a fate are what
# models fitted to a snapshot learn to use; a correlation with a fate (CellRank's drivers) is
# not a cause either. Every call in this table is a hypothesis until an experiment tests it.
#
# ## 5 Pseudoreplication, live
#
# Now a different situation: an experiment. Suppose eight animals are sequenced, four
# treated, four not, and the treatment does nothing. Each animal has its own small, gene-wise
# offsets (the simulator's batch effects play that role). A test that treats each *cell* as a
# replicate compares 400 cells with 400 cells, but the cells of one animal share its offsets:
# the real number of independent replicates per group is four. Summing each animal's counts
# into one **pseudobulk** profile and testing those with a count model (DESeq2, through
# `pydeseq2`) respects that.

# %%
t0 = time.perf_counter()
null_sim = tds.simulate(
    n_cells=800, n_genes=250, n_fates=3, n_batches=8, seed=5, batch_log_sd=0.3
)
samples = sorted(null_sim.obs["batch"].astype(str).unique())
treated = set(np.random.default_rng(SEED).permutation(samples)[:4])
null_sim.obs["sample"] = null_sim.obs["batch"].astype(str).to_numpy()
null_sim.obs["condition"] = np.where(
    null_sim.obs["sample"].isin(treated), "treated", "control"
)
per_cell = stats.cell_level_test(null_sim, "condition", reference="control")
bulk = stats.pseudobulk_test(null_sim, "sample", "condition", reference="control")
t_null = time.perf_counter() - t0
rates = pd.Series(
    {
        "each cell a replicate (Mann–Whitney)": float((per_cell.pvalue < 0.05).mean()),
        "pseudobulk, 4 vs 4 animals (DESeq2)": float((bulk.pvalue < 0.05).mean()),
    },
    name="false-positive rate at α = 0.05",
)
glue("c12_fpr_cell", float(100 * rates.iloc[0]), display=False)
glue("c12_fpr_bulk", float(100 * rates.iloc[1]), display=False)
glue("c12_n_null_genes", len(bulk), display=False)
assert rates.iloc[0] > 0.2 and rates.iloc[1] < 0.1
(100 * rates).round(1).to_frame("% of null genes called")

# %% mystnb={"image": {"alt": "Two histograms of p-values for null genes under a treatment that does nothing. Left, cells tested as replicates: a tall spike of p-values near zero far above the dashed flat line. Right, pseudobulk across animals: bars close to the dashed flat line across the whole range from 0 to 1."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
for ax, p, title in zip(axes, (per_cell.pvalue, bulk.pvalue), rates.index):
    ax.hist(p, bins=20, range=(0, 1), color=OKABE_ITO["blue"], edgecolor="white")
    ax.axhline(len(p) / 20, color="black", ls="--", lw=1)
    ax.set(title=title, xlabel="p-value")
axes[0].set_ylabel("genes")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: p-values of {glue:text}`c12_n_null_genes` genes under a treatment that does
# nothing. Left, cells as replicates; right, pseudobulk across animals. The dashed line is the
# flat histogram that true nulls give.*
#
# With cells as replicates, {glue:text}`c12_fpr_cell:.0f` % of the null genes are
# "significant" at α = 0.05: the test has detected the animals, not the treatment.
# Pseudobulk calls {glue:text}`c12_fpr_bulk:.0f` %, close to the nominal 5 %. The unit of
# replication is the unit that was randomised to the treatment.
#
# ## 6 How many replicates would confirm a claim?
#
# Before running the validation experiment, size it. If the knockout of
# {glue:text}`c12_master` shifts its fate by the true mean effect, and replicate experiments
# vary with the spread we see between the simulator's cells, the effect in standard-deviation
# units (Cohen's d) sets the number of replicates needed.

# %%
ko = tds.knockout(cells, master, n_futures=8, seed=SEED)[fate]
d = float(abs(ko.mean()) / ko.std())
n80 = stats.sample_size(d, 0.8)
curve = pd.Series(
    {n: stats.power(d, n) for n in (2, 3, 5, 8, 12, 20, 30)}, name="power"
)
glue("c12_d", d, display=False)
glue("c12_n80", n80, display=False)
curve.round(2).to_frame().T

# %% [markdown]
# The knockout's effect is d = {glue:text}`c12_d:.2f` standard deviations, so a two-group
# comparison needs {glue:text}`c12_n80` replicates per group for 80 % power at α = 0.05.
# Fewer replicates would miss a true effect most of the time, and a "failed validation" would
# then say nothing about the hypothesis.
#
# ## 7 Closing the loop: a budgeted in-silico lab
#
# A real lab cannot knock out every candidate. Suppose it can afford four knockouts per
# round, for three rounds. `tl.InSilicoLab` plays that game with the simulator as the wet lab:
# each "experiment" measures a gene's true knockout in {glue:text}`c12_lab_reps` replicate
# cells, adds measurement noise, and tests "the knockout lowers the fate" with a one-sided
# t-test and BH within the round. Three ways to spend the same budget:
#
# - **fixed**: test the Transcriptformer's ranking from the top, never looking back;
# - **random**: test random candidates;
# - **adaptive**: start like fixed, then, after each round, re-rank the untested genes by how
#   similar they are to the hits and to the misses so far (a kernel-weighted hit rate with a
#   prior from the initial ranking), using the four predictors' scores and what a lab knows
#   without experiments: expression level, detection rate, and whether a TF database lists the
#   gene (decoy TFs are TFs too, so this does not give the answer away).
#
# Nothing in the loop sees the true network; it learns only from its own experiments.

# %%
t0 = time.perf_counter()
X = tflib.utils.dense(cells.X)
col = [list(cells.var_names).index(g) for g in candidates]
features = pd.DataFrame(
    {
        "log mean expression": np.log1p(X[:, col].mean(0)),
        "detection": (X[:, col] > 0).mean(0),
        "listed as TF": [float(g in tfs) for g in candidates],
    },
    index=predicted.index,
)
lab = tl.InSilicoLab(
    cells,
    predicted.drop(columns="random ranking"),
    fate_of={g: fate_of[g] for g in candidates},
    features=features,
    rank_by="Transcriptformer fate shift",
    budget=4,
    n_rounds=3,
    n_replicates=30,
    noise=0.02,
    seed=SEED,
)
loop = lab.compare(("adaptive", "fixed", "random"))
found = loop.pivot(index="round", columns="strategy", values="cumulative_true")
hits = loop.pivot(index="round", columns="strategy", values="cumulative_hits")
glue("c12_lab_reps", 30, display=False)
for strat in found.columns:
    glue(f"c12_lab_{strat}", int(found[strat].iloc[-1]), display=False)  # true regulators tested
    glue(f"c12_lab_hits_{strat}", int(hits[strat].iloc[-1]), display=False)  # genes its tests called
glue("c12_lab_n_real", int(is_real.sum()), display=False)
glue("c12_t_lab", time.perf_counter() - t0, display=False)
loop[["strategy", "round", "genes", "n_hits", "n_true", "cumulative_true"]]

# %% mystnb={"image": {"alt": "Line chart of cumulative true regulators found (y) over three rounds of four knockouts (x) for three strategies: adaptive in vermillion, fixed in blue and random in grey. All start from the same first round; the adaptive line rises most steeply and ends highest, random ends lowest."}}
fig, ax = plt.subplots(figsize=(4.8, 3.2))
for strat, color in zip(
    found.columns, (OKABE_ITO["vermillion"], OKABE_ITO["blue"], "#999999")
):
    ax.plot(found.index, found[strat], marker="o", color=color, label=strat)
ax.set(
    xlabel="round (4 knockouts each)",
    ylabel="true regulators found",
    xticks=found.index,
)
ax.legend(frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: cumulative true regulators found by each strategy of the in-silico lab, with the
# same budget of four knockouts per round. The adaptive strategy revises its ranking after
# every round; fixed and random do not.*
#
# With twelve knockouts, the adaptive lab tested {glue:text}`c12_lab_adaptive` of the
# {glue:text}`c12_lab_n_real` truly fate-changing genes, the fixed ranking
# {glue:text}`c12_lab_fixed` and random picks {glue:text}`c12_lab_random`; their experiments
# called {glue:text}`c12_lab_hits_adaptive`, {glue:text}`c12_lab_hits_fixed` and
# {glue:text}`c12_lab_hits_random` genes hits (noise and a 30-replicate test miss some true
# regulators). This is the article's loop in miniature: the model proposes, the experiment
# disposes, and the ranking is revised by what the experiments said, not by what the model
# believed. One world is one draw. The course's tests (`tests/test_lab.py`) repeat the
# comparison over five simulated worlds and check that the adaptive lab tests more true
# regulators in total than either other strategy; when the test was written the totals were
# 32 (adaptive), 8 (fixed) and 13 (random), so there the Transcriptformer's fixed ranking did
# worse than random picks.
#
# ## Caveats
#
# - **The truth is a simulation.** "Truly fate-changing" means a mean shift below −0.02 in
#   this world's knockouts; another threshold, or a world with subtler regulators, changes
#   which genes count and every number of section 4.
# - **A few dozen genes make wide intervals.** Two AUROCs whose intervals overlap (see the
#   table of section 4) are not a ranking of methods. To compare two methods, bootstrap the
#   *difference* of their AUROCs over the same resampled genes (a paired interval), and check
#   on a second world (another seed).
# - **Here a replicate is an independent experiment.** The power calculation of section 6
#   and the lab of section 7 count replicates as independent knockout experiments. Cells of
#   one experiment are not that (section 5): they share its offsets, so a sample size computed
#   from the spread between cells is a lower bound.
# - **The null genes define the test.** Tests against expression-matched random genes and
#   against all other genes call different genes (see the second exercise); say which
#   reference a claim uses.
# - **Pseudobulk needs replicates.** With one sample per condition there is nothing to test;
#   `stats.pseudobulk_test` refuses rather than return a p-value.
# - **The lab loop's experiment is idealised:** true knockouts plus Gaussian noise, cells drawn
#   at random, no failed experiments and no batch effects between rounds. Its advantage on
#   one world is one draw; the five-world comparison lives in the tests.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-12-by
# BY is stricter than BH: it can never call more genes on the same p-values. Here BH called
# {glue:text}`c12_n_bh` and BY {glue:text}`c12_n_by`. Why can the two counts be equal, and
# when would you prefer BY here?
# ```
#
# ````{solution} ex-12-by
# :class: dropdown
# BY multiplies the BH adjustment by about ln(m) + 0.58 for m tests, which makes it valid
# under any dependence between tests. That factor only matters for p-values near the
# threshold: genes whose p-values are close to zero survive either way, so when every call
# is far below it the two methods call the same genes. Perturbation scores of genes in one
# network are dependent (targets of one TF move together), so BY is the safe choice when the
# calls feed an expensive experiment. The executed solution below prints both calls per role.
# ````

# %% tags=["hide-input"]
assert (
    n_by <= n_bh
)  # BY's adjusted p-values are never below BH's, so it never calls more
pd.crosstab(
    calls["role"], [calls["qvalue"] <= 0.1, calls["qvalue_by"] <= 0.1]
).rename_axis(columns=["BH call", "BY call"])

# %% [markdown]
# ```{exercise}
# :label: ex-12-reference
# Repeat the tests of section 3 against *all other genes* (`null_genes=None`, Geneformer's
# reference) instead of the random genes. Which reference makes a housekeeping gene look
# more interesting, and why?
# ```
#
# ````{solution} ex-12-reference
# :class: dropdown
# All other genes include the candidates with the strongest predicted shifts, so that
# reference is stricter than expression-matched random genes, and a gene needs a larger shift
# to stand out. Genes with a broad, consistent shift (housekeeping genes, targets) keep their
# calls under both; genes with a weak one lose them first. Neither reference says anything
# about causation. The executed solution below counts the calls per role with each reference.
# ````

# %% tags=["hide-input"]
alt = pd.concat(
    [
        stats.test_hypotheses(
            table[table.gene.isin([g for g in candidates if fate_of[g] == f])],
            f,
            "decrease",
            alpha=0.1,
            n_boot=99,
            seed=SEED,
        )
        for f in FATES
    ]
)
alt["role"] = v.loc[alt.index, "role"].to_numpy()
per_reference = pd.DataFrame(
    {
        "vs random genes": calls[calls.qvalue <= 0.1].groupby("role").size(),
        "vs all other genes": alt[alt.verdict == "supported"].groupby("role").size(),
    }
)
per_reference = per_reference.fillna(0).astype(int)
assert set(alt.index) == set(
    candidates
)  # every candidate was tested against the other reference
assert (
    per_reference["vs all other genes"].sum() <= per_reference["vs random genes"].sum()
)  # the stricter reference
per_reference

# %% [markdown]
# ## Quiz
#
# ```{admonition} 1. A gene's predicted shift has p = 0.001 and mean −0.002. Is it a good hypothesis to test in the lab?
# :class: dropdown
# Probably not: the effect is tiny. A small p-value says the shift is unlikely to be zero, not
# that it matters; check its size and the power of the experiment first.
# ```
#
# ```{admonition} 2. Ten mice, 5,000 cells each, two conditions. How many replicates per group?
# :class: dropdown
# Five: the mice. The cells of one mouse share its offsets, so they are not independent
# replicates of the condition (section 5).
# ```
#
# ```{admonition} 3. What does a q-value of 0.08 promise?
# :class: dropdown
# That if every gene with q ≤ 0.08 is called, the expected share of false calls among them is
# at most about 8 %; it says nothing about this one gene alone.
# ```
#
# ```{admonition} 4. In section 5, how many null genes did the per-cell test call at α = 0.05, and why is that a problem?
# :class: dropdown
# {glue:text}`c12_fpr_cell:.0f` %, against {glue:text}`c12_fpr_bulk:.0f` % for pseudobulk. The
# treatment did nothing, so every call is false: the per-cell test detected the animals.
# ```
#
# ```{admonition} 5. In section 7, why can the adaptive lab beat the fixed ranking with the same budget?
# :class: dropdown
# Its misses are information: genes that look like the misses drop in its ranking, genes that
# look like the hits rise. Here it tested {glue:text}`c12_lab_adaptive` true regulators against
# {glue:text}`c12_lab_fixed` for the fixed ranking.
# ```
#
# ## Key takeaways
#
# - A prediction becomes a hypothesis when it names a direction and a reference: here, the
#   master TF {glue:text}`c12_master` against expression-matched random genes.
# - Over many genes, control the false discovery rate: {glue:text}`c12_n_raw` genes passed
#   p ≤ 0.05, {glue:text}`c12_n_bh` survived BH at 10 % and {glue:text}`c12_n_by` BY.
# - Calls about a model are not facts about biology: against the true knockouts, ranking
#   AUROC was {glue:text}`c12_auroc_tf:.2f` for the Transcriptformer,
#   {glue:text}`c12_auroc_lin:.2f` for the linear model, {glue:text}`c12_auroc_drv:.2f` for
#   CellRank's drivers, {glue:text}`c12_auroc_cos:.2f` for Geneformer's goal cosine and
#   {glue:text}`c12_auroc_rand:.2f` for a random ranking, with wide intervals. False calls:
#   {glue:text}`c12_n_fp_lin` of the linear model's {glue:text}`c12_n_calls_lin` calls and
#   {glue:text}`c12_n_fp_drv` of the drivers' {glue:text}`c12_n_calls_drv`; the
#   Transcriptformer made {glue:text}`c12_n_calls_tf` calls ({glue:text}`c12_n_fp_tf` false).
# - Cells are not replicates of a treatment: on null data, per-cell tests called
#   {glue:text}`c12_fpr_cell:.0f` % of genes, pseudobulk {glue:text}`c12_fpr_bulk:.0f` %.
# - Size the validation before running it: {glue:text}`c12_n80` replicates per group for the
#   master TF's effect at 80 % power.
# - Let experiments revise the ranking: with twelve knockouts, the adaptive lab tested
#   {glue:text}`c12_lab_adaptive` true regulators, the fixed Transcriptformer ranking
#   {glue:text}`c12_lab_fixed`, random picks {glue:text}`c12_lab_random` (one world; over the
#   tests' five worlds the adaptive lab came first, and the fixed ranking did no better than
#   random picks when that test was written).

# %%
glue("c12_runtime", time.perf_counter() - T0, display=False)
tflib.utils.footer(seed=SEED)
