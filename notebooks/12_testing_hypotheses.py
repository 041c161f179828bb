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
#    bootstrap interval.
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
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown
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
sim = tds.simulate(n_cells=600, n_genes=300, n_fates=3, n_batches=1, seed=SIM_SEED, library_size=3.0)
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
fate_of = {g: (v.loc[g, "module"] if v.loc[g, "module"] in FATES else FATES[0]) for g in candidates + null_genes}

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
three = pd.concat([
    stats.rank_test(x, y, alternative="less").assign(test="rank-sum (Mann–Whitney)"),
    stats.permutation_test(x, y, alternative="less", n_resamples=4999, seed=SEED).assign(test="permutation"),
]).set_index("test")[["effect", "pvalue", "n_x", "n_y"]]
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
    tables.append(stats.test_hypotheses(sub, f, "decrease", null_genes=null_genes, alpha=0.1, n_boot=499,
                                        seed=SEED).assign(fate=f))
calls = pd.concat(tables)
calls["qvalue"] = stats.fdr(calls["pvalue"].to_numpy(), method="bh")  # one adjustment over all tests
calls["qvalue_by"] = stats.fdr(calls["pvalue"].to_numpy(), method="by")
calls["role"] = v.loc[calls.index, "role"].to_numpy()
n_bh, n_by = int((calls.qvalue <= 0.1).sum()), int((calls.qvalue_by <= 0.1).sum())
n_raw = int((calls.pvalue <= 0.05).sum())
glue("c12_n_raw", n_raw, display=False)
glue("c12_n_bh", n_bh, display=False)
glue("c12_n_by", n_by, display=False)
calls.sort_values("pvalue").head(10)[["role", "fate", "n_cells", "mean_shift", "ci_low", "ci_high", "pvalue",
                                      "qvalue", "qvalue_by"]].round(4)

# %% [markdown]
# {glue:text}`c12_n_raw` genes pass p ≤ 0.05; at a false discovery rate of 10 %, BH calls
# {glue:text}`c12_n_bh` and BY {glue:text}`c12_n_by`. A call means "the model predicts a
# stronger decrease for this gene than for random genes". It says nothing yet about whether
# the knockout really does that: the calls are statements about the *model*.
#
# ## 4 Are the calls right? The validation against true knockouts
#
# The simulator can run the experiment: `tds.knockout` re-simulates each test cell's future
# with the gene's transcription set to zero (chapter 03). A gene is **truly fate-changing**
# when its knockout lowers its own fate's probability by more than 0.02 on average. We score
# the linear model's ranking (by mean predicted shift) and a random ranking with AUROC, and
# the BH calls with precision and recall, each with a bootstrap interval over genes.

# %%
t0 = time.perf_counter()
true_mean = pd.Series({g: float(tds.knockout(cells, g, n_futures=8, seed=SEED)[fate_of[g]].mean())
                       for g in candidates})
t_ko = time.perf_counter() - t0
is_real = (true_mean < -0.02).to_numpy()
score_linear = -calls.loc[candidates, "mean_shift"].to_numpy()           # more negative shift = stronger claim
score_random = np.random.default_rng(SEED).permutation(len(candidates)).astype(float)
called = (calls.loc[candidates, "qvalue"] <= 0.1).to_numpy()
valid = stats.validation_table({"linear fate model": score_linear, "random ranking": score_random}, is_real,
                            calls={"linear fate model": called}, n_boot=1000, seed=SEED)
glue("c12_n_real", int(is_real.sum()), display=False)
glue("c12_t_ko", t_ko, display=False)
for name, short in (("linear fate model", "lin"), ("random ranking", "rand")):
    glue(f"c12_auroc_{short}", float(valid.loc[name, "auroc"]), display=False)
valid.round(3)

# %% [markdown]
# Of the {glue:text}`c12_n_candidates` candidates, {glue:text}`c12_n_real` truly lower
# their fate (the knockouts took {glue:text}`c12_t_ko:.0f` s). The linear model's ranking
# reaches AUROC {glue:text}`c12_auroc_lin:.2f`; a random ranking
# {glue:text}`c12_auroc_rand:.2f`. The table lists what the calls got wrong by name below:
# those are the chapter's lesson on correlation and causation.

# %%
show = pd.DataFrame({"role": v.loc[candidates, "role"], "predicted": calls.loc[candidates, "mean_shift"],
                     "q": calls.loc[candidates, "qvalue"], "true": true_mean, "truly changes fate": is_real})
false_pos = show[(show.q <= 0.1) & ~show["truly changes fate"]]
missed = show[(show.q > 0.1) & show["truly changes fate"]]
glue("c12_n_false_pos", len(false_pos), display=False)
glue("c12_n_missed", len(missed), display=False)
pd.concat([false_pos.assign(kind="called, not real"), missed.assign(kind="real, not called")]).round(3)

# %% [markdown]
# The linear model calls {glue:text}`c12_n_false_pos` genes whose knockout does not change
# the fate, and misses {glue:text}`c12_n_missed` that do. Targets and housekeeping genes that
# *co-vary* with a fate are what a model fitted to a snapshot learns to use; the TFs that
# *cause* the fate are lowly expressed and easy to miss (chapter 11).
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
null_sim = tds.simulate(n_cells=800, n_genes=250, n_fates=3, n_batches=8, seed=5, batch_log_sd=0.3)
samples = sorted(null_sim.obs["batch"].astype(str).unique())
treated = set(np.random.default_rng(SEED).permutation(samples)[:4])
null_sim.obs["sample"] = null_sim.obs["batch"].astype(str).to_numpy()
null_sim.obs["condition"] = np.where(null_sim.obs["sample"].isin(treated), "treated", "control")
per_cell = stats.cell_level_test(null_sim, "condition", reference="control")
bulk = stats.pseudobulk_test(null_sim, "sample", "condition", reference="control")
t_null = time.perf_counter() - t0
rates = pd.Series({"each cell a replicate (Mann–Whitney)": float((per_cell.pvalue < 0.05).mean()),
                   "pseudobulk, 4 vs 4 animals (DESeq2)": float((bulk.pvalue < 0.05).mean())},
                  name="false-positive rate at α = 0.05")
glue("c12_fpr_cell", float(100 * rates.iloc[0]), display=False)
glue("c12_fpr_bulk", float(100 * rates.iloc[1]), display=False)
glue("c12_n_null_genes", len(bulk), display=False)
assert rates.iloc[0] > 0.2 and rates.iloc[1] < 0.1
(100 * rates).round(1).to_frame("% of null genes called")

# %%
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
curve = pd.Series({n: stats.power(d, n) for n in (2, 3, 5, 8, 12, 20, 30)}, name="power")
glue("c12_d", d, display=False)
glue("c12_n80", n80, display=False)
curve.round(2).to_frame().T

# %% [markdown]
# The knockout's effect is d = {glue:text}`c12_d:.2f` standard deviations, so a two-group
# comparison needs {glue:text}`c12_n80` replicates per group for 80 % power at α = 0.05.
# Fewer replicates would miss a true effect most of the time, and a "failed validation" would
# then say nothing about the hypothesis.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-12-by
# Why does BY call fewer genes than BH on the same p-values? When would you prefer it here?
# ```
#
# ````{solution} ex-12-by
# :class: dropdown
# BY multiplies the BH adjustment by about ln(m) + 0.58 for m tests, which makes it valid
# under any dependence between tests. Perturbation scores of genes in one network are
# dependent (targets of one TF move together), so BY is the safe choice when the calls feed
# an expensive experiment. The executed solution below prints both counts per role.
# ````

# %% tags=["hide-input"]
pd.crosstab(calls["role"], [calls["qvalue"] <= 0.1, calls["qvalue_by"] <= 0.1]).rename_axis(
    columns=["BH call", "BY call"])

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
alt = pd.concat([stats.test_hypotheses(table[table.gene.isin([g for g in candidates if fate_of[g] == f])], f,
                                       "decrease", alpha=0.1, n_boot=99, seed=SEED) for f in FATES])
alt["role"] = v.loc[alt.index, "role"].to_numpy()
pd.DataFrame({"vs random genes": calls[calls.qvalue <= 0.1].groupby("role").size(),
              "vs all other genes": alt[alt.verdict == "supported"].groupby("role").size()}).fillna(0).astype(int)

# %% [markdown]
# ## Quiz
#
# 1. A gene's predicted shift has p = 0.001 and mean −0.002. Is it a good hypothesis to test
#    in the lab? *(Probably not: the effect is tiny; check its size and the power first.)*
# 2. Ten mice, 5,000 cells each, two conditions. How many replicates per group?
#    *(Five: the mice.)*
# 3. What does a q-value of 0.08 promise? *(That calling every gene with q ≤ 0.08 is
#    expected to make about 8 % false calls among them; nothing about this one gene alone.)*
#
# ## Key takeaways
#
# - A prediction becomes a hypothesis when it names a direction and a reference: here, the
#   master TF {glue:text}`c12_master` against expression-matched random genes.
# - Over many genes, control the false discovery rate: {glue:text}`c12_n_raw` genes passed
#   p ≤ 0.05, {glue:text}`c12_n_bh` survived BH at 10 % and {glue:text}`c12_n_by` BY.
# - Calls about a model are not facts about biology: against the true knockouts, the linear
#   model's ranking reached AUROC {glue:text}`c12_auroc_lin:.2f` (random:
#   {glue:text}`c12_auroc_rand:.2f`), with {glue:text}`c12_n_false_pos` false calls.
# - Cells are not replicates of a treatment: on null data, per-cell tests called
#   {glue:text}`c12_fpr_cell:.0f` % of genes, pseudobulk {glue:text}`c12_fpr_bulk:.0f` %.
# - Size the validation before running it: {glue:text}`c12_n80` replicates per group for the
#   master TF's effect at 80 % power.

# %%
glue("c12_runtime", time.perf_counter() - T0, display=False)
tflib.utils.footer(seed=SEED)
