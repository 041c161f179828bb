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
# # 13 Regulator inference
#
# Chapter 12 asked whether knocking out one gene changes a fate. This chapter asks the
# question a biologist usually starts with: *which transcription factors drive this fate?*
# Five ways of ranking candidates are common in practice. Two read the model: how much
# attention a gene's token receives in the fate's cells, and how close its learned embedding
# lies to the fate's marker genes. Three read the data or a simulation: CellRank's driver
# correlation, an in-silico knockout, and plain co-expression with the markers. On the
# simulator we know the true regulatory network, so each ranking gets a score. On the
# pancreas we do not, and the rankings there are an illustration only.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. rank candidate regulators of a fate five ways with `tflib.tl.rank_regulators`, and say
#    what each statistic measures;
# 2. score a ranking against a known network with AUROC and precision at *k*, with intervals;
# 3. explain why attention weights are not an explanation by default, and what would make
#    them one;
# 4. read a ranking on real data (the pancreas) as a list of hypotheses, not of findings.
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
from tflib import stats

SEED = 0
SIM_SEED = 11  # chapters 11 and 12's world, which the course checkpoint never saw
rng = tflib.utils.notebook_setup(SEED)
torch.set_num_threads(2)
warnings.filterwarnings(
    "ignore", category=UserWarning, module="tflib"
)  # the vocabulary-drop notes
T0 = time.perf_counter()

model, tokenizer = tflib.models.course_checkpoint()

# %% [markdown]
# ## 1 The world and its true regulators
#
# The simulated world of chapters 11 and 12 has three fates. Each is driven by a master TF
# and a few secondary TFs; decoy TFs are expressed like TFs but regulate nothing.
# `tds.true_regulators` reads the true network stored with the simulation and returns, for
# each fate, its master and secondary TFs. Every TF of the world is a candidate, so a ranking
# must tell the real regulators from the decoys and from the regulators of the other fates.
# The genes are relabelled with vocabulary genes of matching expression
# (`tl.vocab_labels`, chapter 10) so that the model can read them.

# %%
ARTIFACTS = Path("_artifacts")
sim = tl.load_or_build(  # chapter 11's world, or the same call again
    ARTIFACTS / "11_world.h5ad", tl.course_world, world_seed=SIM_SEED
)
tl.vocab_labels(sim, tokenizer)  # writes sim.var["tf_symbol"]
truth = tds.true_regulators(sim)
FATES = list(truth)
v = sim.var
candidates = list(v.index[v.role.isin(["master_tf", "secondary_tf", "decoy_tf"])])
glue("c13_n_candidates", len(candidates), display=False)
glue("c13_n_true", int(np.mean([len(truth[f]) for f in FATES])), display=False)
pd.DataFrame({f: [", ".join(truth[f])] for f in FATES}, index=["true regulators"]).T

# %% [markdown]
# ## 2 Fates and drivers from the data, a fate model from the Transcriptformer
#
# Everything below uses what an analyst would have, not the simulator's answers: RNA
# velocity estimated from the counts (chapter 08), CellRank fate probabilities and driver
# correlations (chapter 09), and chapter 10's fate-aware Transcriptformer fitted to those
# CellRank probabilities. Each terminal state is named after the true fate of most of its
# cells, only so that the rankings can be scored by name. The velocity, fates and drivers are
# chapter 12's, loaded from `_artifacts/12_cellrank_world.h5ad` (or rebuilt with the same
# call, `tl.cellrank_world`, when that file is missing).

# %%
t0 = time.perf_counter()
velo = tl.load_or_build(  # chapter 12's CellRank run, or the same call again
    ARTIFACTS / "12_cellrank_world.h5ad", tl.cellrank_world, world_seed=SIM_SEED, seed=SEED
)
P_cr = velo.obsm["fate_probs_cellrank"].reindex(sim.obs_names)
sim.obsm["fate_probs_cellrank"] = P_cr[FATES]
sim.varm["terminal_lineage_drivers"] = velo.varm["fate_drivers_cellrank"].reindex(
    sim.var_names
)
r_fates = float(
    np.corrcoef(
        P_cr[FATES].to_numpy().ravel(),
        sim.obsm["fate_probs_true"][FATES].to_numpy().ravel(),
    )[0, 1]
)
glue("c13_r_fates", r_fates, display=False)
glue("c13_t_cellrank", time.perf_counter() - t0, display=False)

t0 = time.perf_counter()
student = tl.TrajectoryAwareTranscriptformer(  # chapter 11's recipe
    model, tokenizer, gene_key="tf_symbol", max_len=model.config.max_len, seed=SEED
)
student.fit(sim, P_cr[FATES])
ko_table = tl.perturb(
    sim,
    model,
    tokenizer,
    list(v.loc[candidates, "tf_symbol"]),
    kind="delete",
    fate_model=student,
    cells=list(np.random.default_rng(SEED).choice(sim.obs_names, 200, replace=False)),
    encode_kwargs={"gene_key": "tf_symbol"},
)
glue("c13_t_student", time.perf_counter() - t0, display=False)
print(
    f"CellRank fates vs true fates: r = {r_fates:.2f}; in-silico deletions: {len(ko_table):,} rows"
)

# %% [markdown]
# CellRank's fate probabilities follow the true ones with r = {glue:text}`c13_r_fates:.2f`
# over all cells and fates. The knockout ranking uses the Transcriptformer's in-silico
# deletions in 200 cells, scored by its fate head (chapter 11).
#
# ## 3 Five rankings, one call
#
# `tl.rank_regulators` computes, for each fate and candidate:
#
# | method | statistic | reads |
# |---|---|---|
# | attention | mean attention the gene's token receives in the fate's cells, minus in the other cells | model |
# | embedding | cosine of the gene's input embedding with the fate's marker genes' mean embedding | model |
# | drivers | CellRank's correlation of expression with the fate probability | data |
# | knockout | how much the in-silico deletion lowers the fate | model + fate head |
# | coexpression | mean correlation of expression with the fate's marker genes | data |
#
# ````{admonition} Library code: tflib.tl.attention.attention_received
# :class: dropdown
# ```{literalinclude} ../tflib/tl/attention.py
# :pyobject: attention_received
# ```
# ````

# %%
t0 = time.perf_counter()
ranks = tl.rank_regulators(
    sim,
    model=model,
    tokenizer=tokenizer,
    fate_key="fate_probs_cellrank",
    candidates=candidates,
    perturb_table=ko_table,
    gene_key="tf_symbol",
    seed=SEED,
)
glue("c13_t_rank", time.perf_counter() - t0, display=False)
top = ranks[ranks["rank"] <= 3].assign(
    true=lambda d: [g in truth[f] for f, g in zip(d.fate, d.gene)]
)
top["gene"] = np.where(top["true"], top["gene"] + " ✓", top["gene"])
top.pivot_table(
    index=["fate", "rank"], columns="method", values="gene", aggfunc="first"
)

# %% [markdown]
# The top three candidates of each method and fate; a ✓ marks a true regulator of that fate.
#
# ## 4 Scored against the true network
#
# `tl.score_regulators` treats each ranking as a classifier of "is a true regulator of this
# fate": AUROC over the {glue:text}`c13_n_candidates` candidates (with a bootstrap interval
# over genes) and precision among the top *k* = 3, where a random ranking would reach about
# {glue:text}`c13_n_true` / {glue:text}`c13_n_candidates`.

# %%
scores = tl.score_regulators(ranks, truth, k=3, n_boot=500, seed=SEED)
mean_auc = scores.groupby("method")["auroc"].mean().sort_values(ascending=False)
for m, x in mean_auc.items():
    glue(f"c13_auc_{m}", float(x), display=False)
glue("c13_best", str(mean_auc.index[0]), display=False)
glue("c13_best_auc", float(mean_auc.iloc[0]), display=False)
glue("c13_worst", str(mean_auc.index[-1]), display=False)
glue("c13_base_rate", float(scores["base_rate"].mean()), display=False)
glue(
    "c13_p_drivers",
    float(scores.loc[scores.method == "drivers", "precision_at_k"].mean()),
    display=False,
)
shown = stats.with_intervals(
    scores.set_index(["fate", "method"])[
        ["auroc", "auroc_low", "auroc_high", "precision_at_k"]
    ],
    ("auroc",),
)
shown["precision_at_k"] = shown["precision_at_k"].astype(float).round(2)
shown.unstack("fate")

# %% mystnb={"image": {"alt": "Heatmap of AUROC values with ranking methods as rows (ordered from best to worst mean AUROC) and the three simulated fates as columns; each cell is annotated with its AUROC. Drivers, attention and co-expression rows are mostly bright (close to 1), the knockout row is intermediate, and the embedding row is dark (below 0.5)."}}
fig, ax = plt.subplots(figsize=(5.6, 3.2))
grid = scores.pivot(index="method", columns="fate", values="auroc").loc[mean_auc.index]
im = ax.imshow(grid.to_numpy(), cmap="cividis", vmin=0, vmax=1)
ax.set(
    xticks=range(len(grid.columns)),
    xticklabels=grid.columns,
    yticks=range(len(grid)),
    yticklabels=grid.index,
)
for (i, j), x in np.ndenumerate(grid.to_numpy()):
    ax.text(
        j,
        i,
        f"{x:.2f}",
        ha="center",
        va="center",
        color="white" if x < 0.6 else "black",
    )
fig.colorbar(im, ax=ax, label="AUROC")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: AUROC of each ranking method (rows) for each fate (columns) against the
# simulator's true regulators; 0.5 is a random ranking.*
#
# Averaged over the three fates, the best ranking is {glue:text}`c13_best` and the worst
# {glue:text}`c13_worst`. In AUROC: attention {glue:text}`c13_auc_attention:.2f`, embedding
# {glue:text}`c13_auc_embedding:.2f`, drivers {glue:text}`c13_auc_drivers:.2f`, knockout
# {glue:text}`c13_auc_knockout:.2f`, co-expression {glue:text}`c13_auc_coexpression:.2f`.
# With one world and a handful of true regulators per fate, the intervals are wide; a
# difference that lies inside them is not a result.
#
# Why can statistics that know nothing of causes score well here? In this world a fate's
# regulators are, by construction, switched on in the fate's cells, so anything that
# measures "high in this fate" finds them, and the decoys (which follow no fate) are easy to
# set aside. The hard cases of chapter 12, targets and housekeeping genes that co-vary with a
# fate, are not among these candidates: we restricted the list to TFs, which is itself prior
# knowledge. What happens when we restrict less?

# %%
everyone = tl.rank_regulators(
    sim,
    fate_key="fate_probs_cellrank",
    methods=("drivers", "coexpression"),
    candidates=list(
        v.index[
            v.role.isin(
                ["master_tf", "secondary_tf", "decoy_tf", "target", "housekeeping"]
            )
        ]
    ),
    key_added="regulators_all",
)
wide = tl.score_regulators(everyone, truth, k=3, n_boot=200, seed=SEED)
wide_auc = wide.groupby("method")[["auroc", "precision_at_k"]].mean()
roles_top = everyone[everyone["rank"] <= 10].assign(
    role=lambda d: v.loc[d.gene, "role"].to_numpy()
)
share_targets = float((roles_top.role == "target").mean())
glue("c13_all_auc_drivers", float(wide_auc.loc["drivers", "auroc"]), display=False)
glue(
    "c13_all_p_drivers", float(wide_auc.loc["drivers", "precision_at_k"]), display=False
)
glue("c13_share_targets", 100 * share_targets, display=False)
glue("c13_n_all", int(everyone.gene.nunique()), display=False)
wide_auc.round(2)

# %% [markdown]
# Over {glue:text}`c13_n_all` genes (TFs, their targets and housekeeping genes), the driver
# ranking's mean AUROC is {glue:text}`c13_all_auc_drivers:.2f` and its precision in the top
# three {glue:text}`c13_all_p_drivers:.2f`, against {glue:text}`c13_p_drivers:.2f` among the
# TFs alone; {glue:text}`c13_share_targets:.0f` % of the top ten genes of the two
# correlational methods are targets, which respond to the fate rather than cause it. The
# AUROC stays high because most of the many non-regulators are easy to rank low; the top of
# the list, the part a lab would test, is where targets crowd in. A TF list is a cheap prior.
#
# ## 5 What attention can and cannot tell
#
# Attention weights say which tokens a layer mixed into each position's representation. They
# are easy to read and tempting to over-read. In language models, attention distributions can
# often be replaced by very different ones without changing the prediction
# {cite:p}`jain2019attention`, while other work showed that whether attention "explains" a
# prediction depends on the test one sets for it {cite:p}`wiegreffe2019attention`. Three
# cautions carry over to cells:
#
# - **Attention is not an effect.** A heavily attended gene may change nothing when deleted;
#   the knockout column measures effects, attention does not.
# - **Attention follows rank.** Genes near the front of the sentence (highly expressed ones)
#   receive attention in every cell; the fate-minus-rest difference used here removes part of
#   that, not all.
# - **Heads and layers disagree.** Averaging them is one choice among many, and a ranking that
#   depends on that choice is fragile.
#
# Attention becomes evidence when it makes a prediction that an experiment can refute, as in
# chapter 12's loop. On this world, attention's mean AUROC was
# {glue:text}`c13_auc_attention:.2f` against {glue:text}`c13_auc_coexpression:.2f` for plain
# co-expression, a baseline that needs no model: attention {glue:text}`c13_att_verdict`.

# %% tags=["remove-cell"]
gap = float(mean_auc["attention"] - mean_auc["coexpression"])
glue(
    "c13_att_verdict",
    "did better than it"
    if gap > 0.05
    else (
        "was not clearly different from it (a gap within 0.05, inside the intervals)"
        if gap > -0.05
        else "did worse"
    ),
    display=False,
)

# %% [markdown]
# ## 6 The pancreas: an illustration, not a validation
#
# On real data nobody holds the true network. Endocrine development in the mouse pancreas is,
# however, well studied {cite:p}`bastidasponce2019pancreas`: *Neurog3* marks the endocrine
# progenitors, *Pax4* and *Pdx1* push towards beta cells, *Arx* towards alpha cells, and
# *Nkx2-2*, *Nkx6-1*, *Neurod1*, *Isl1*, *Pax6*, *Mafa*, *Mafb*, *Irx1* and *Irx2* are part
# of the endocrine programme (the two *Irx* genes in alpha cells). These thirteen are the
# "named regulators" below. We rank the pancreas's TFs (genes
# whose upper-case symbol is in the course's human TF list) for the Alpha and Beta fates
# with chapter 09's fate probabilities (loaded from `_artifacts/09_pancreas_fates.h5ad`, or
# rebuilt with the same call). There is no knockout ranking here: it would need a
# fate head fitted on the pancreas, which chapter 10 did not do.

# %%
t0 = time.perf_counter()
panc = tds.load("pancreas")  # raw counts, for the tokenizer
pv = tl.load_or_build(  # chapter 09's velocity and fates, or the same call again
    ARTIFACTS / "09_pancreas_fates.h5ad", tl.pancreas_fates, seed=SEED
)
panc.obsm["fate_probs"] = tl.fate_probs_frame(pv).reindex(panc.obs_names)
tf_upper = set(tds.tf_symbols())  # human TF symbols
panc_tfs = [g for g in panc.var_names if g.upper() in tf_upper]
fates_here = [f for f in ("Alpha", "Beta") if f in panc.obsm["fate_probs"].columns]
panc_ranks = tl.rank_regulators(
    panc,
    model=model,
    tokenizer=tokenizer,
    fate_key="fate_probs",
    fates=fates_here,
    candidates=panc_tfs,
    methods=("attention", "embedding", "drivers", "coexpression"),
    seed=SEED,
)
KNOWN = {
    "Neurog3",
    "Pax4",
    "Pdx1",
    "Arx",
    "Nkx2-2",
    "Nkx6-1",
    "Mafb",
    "Mafa",
    "Isl1",
    "Pax6",
    "Neurod1",
    "Irx1",
    "Irx2",
}
top10 = panc_ranks[panc_ranks["rank"] <= 8].copy()
top10["gene"] = np.where(top10.gene.isin(KNOWN), top10.gene + " ★", top10.gene)
n_known = top10[top10.gene.str.endswith("★")].groupby(["fate", "method"]).size()
glue("c13_panc_n_tfs", len(panc_tfs), display=False)
glue("c13_panc_fates", ", ".join(fates_here), display=False)
glue("c13_t_panc", time.perf_counter() - t0, display=False)
glue("c13_panc_known_drivers", int(n_known.get(("Beta", "drivers"), 0)), display=False)
top10.pivot_table(
    index=["fate", "rank"], columns="method", values="gene", aggfunc="first"
)

# %% [markdown]
# The top eight of {glue:text}`c13_panc_n_tfs` candidate TFs for each method and fate
# ({glue:text}`c13_panc_fates`); ★ marks a regulator named in the literature above. For the
# Beta fate, {glue:text}`c13_panc_known_drivers` of the driver ranking's top eight are such
# genes. This looks reassuring, and it is weak evidence: the named regulators are also
# markers of the endocrine cells, so any "high in this fate" statistic will list them, and
# the list of names was chosen by us, after the fact. Only a perturbation experiment, or an
# in-silico prediction confirmed by one, turns a line of this table into a finding.
#
# ## Caveats
#
# - **The truth is the simulator's.** Its regulators are switched on in their fate's cells by
#   construction; real regulators can act transiently, at low levels, or in combination.
# - **The candidate list is a prior.** Restricting to TFs helps every method (section 4);
#   a list that misses the true regulator makes every ranking wrong.
# - **Fates come from CellRank.** A wrong terminal state, or a fate mixed with another, moves
#   every ranking with it.
# - **Attention and embeddings depend on the checkpoint,** its context length and the
#   relabelled genes; a different checkpoint can reorder them.
#
# ## Exercises
#
# ```{exercise}
# :label: ex-13-markers
# The embedding and co-expression methods compare a candidate with the fate's marker
# programme. Rank again with `n_markers=5` and with `n_markers=50`. Which method is more
# sensitive to that choice?
# ```
#
# ````{solution} ex-13-markers
# :class: dropdown
# The executed solution below reruns both methods with 5 and 50 markers and prints the mean
# AUROC over fates. In our run, co-expression went from {glue:text}`c13_coexp_5:.2f` to
# {glue:text}`c13_coexp_50:.2f` and the embedding method from {glue:text}`c13_emb_5:.2f` to
# {glue:text}`c13_emb_50:.2f`, so {glue:text}`c13_more_sensitive` is the more sensitive one.
# Co-expression averages correlations over the markers: a few markers make it noisy, many
# make it a smoother programme score. The embedding method averages vectors that the model
# learned on other tissues, so the marker choice changes little when the embedding itself
# does not separate the programmes.
# ````

# %% tags=["hide-input"]
sens = {}
for n in (5, 50):
    r = tl.rank_regulators(
        sim,
        model=model,
        tokenizer=tokenizer,
        fate_key="fate_probs_cellrank",
        candidates=candidates,
        methods=("embedding", "coexpression"),
        gene_key="tf_symbol",
        n_markers=n,
        key_added="regulators_markers",
    )
    sens[f"{n} markers"] = (
        tl.score_regulators(r, truth, k=3, n_boot=50).groupby("method")["auroc"].mean()
    )
sens = pd.DataFrame(sens)
assert sens.notna().all().all() and ((sens >= 0) & (sens <= 1)).all().all()
glue("c13_coexp_5", float(sens.loc["coexpression", "5 markers"]), display=False)
glue("c13_coexp_50", float(sens.loc["coexpression", "50 markers"]), display=False)
glue("c13_emb_5", float(sens.loc["embedding", "5 markers"]), display=False)
glue("c13_emb_50", float(sens.loc["embedding", "50 markers"]), display=False)
change = (sens["50 markers"] - sens["5 markers"]).abs()
glue("c13_more_sensitive", str(change.idxmax()), display=False)
sens.round(2)

# %% [markdown]
# ```{exercise}
# :label: ex-13-truth-fates
# Replace CellRank's fate probabilities by the simulator's true ones
# (`fate_key="fate_probs_true"`) for the drivers method. Does a better fate estimate give a
# better driver ranking?
# ```
#
# ````{solution} ex-13-truth-fates
# :class: dropdown
# The executed solution compares the two mean AUROCs: {glue:text}`c13_auc_drivers:.2f` with
# CellRank's fates, {glue:text}`c13_auc_drivers_true:.2f` with the true ones. The drivers statistic is a
# correlation with the fate probability, so it inherits the fate estimate's errors; with the
# true probabilities it can only lose the noise of the estimate, not gain causal knowledge.
# ````

# %% tags=["hide-input"]
sim.varm.pop("terminal_lineage_drivers")  # recompute the statistic on the true fates
true_fate_drivers = tl.rank_regulators(
    sim,
    fate_key="fate_probs_true",
    candidates=candidates,
    methods=("drivers",),
    key_added="regulators_true_fates",
)
auc_true = float(
    tl.score_regulators(true_fate_drivers, truth, k=3, n_boot=50)["auroc"].mean()
)
glue("c13_auc_drivers_true", auc_true, display=False)
assert 0 <= auc_true <= 1
pd.Series(
    {"CellRank fates": float(mean_auc["drivers"]), "true fates": auc_true},
    name="drivers, mean AUROC",
).round(2)

# %% [markdown]
# ## Quiz
#
# ```{admonition} 1. A gene receives the most attention in beta cells. Is it a beta-cell regulator?
# :class: dropdown
# Not on that evidence. Attention measures what the model mixes into its representations, not
# what happens when the gene is removed; it is a hypothesis to test.
# ```
#
# ```{admonition} 2. Which ranking scored best on the simulated world, and what was its mean AUROC?
# :class: dropdown
# {glue:text}`c13_best`, with a mean AUROC of {glue:text}`c13_best_auc:.2f` over the fates;
# see the table of section 4. With a few true regulators per fate, its interval overlaps
# several others.
# ```
#
# ```{admonition} 3. Why do correlational methods do well when the candidates are TFs only?
# :class: dropdown
# Because the list removes the targets and housekeeping genes that co-vary with a fate
# without causing it; over all genes, {glue:text}`c13_share_targets:.0f` % of their top ten
# were targets.
# ```
#
# ```{admonition} 4. The pancreas ranking lists some of the named regulators (★) near the top. What has been shown?
# :class: dropdown
# That the ranking agrees with prior knowledge we chose after the fact. Nothing causal: those
# genes are also markers of the cells in question.
# ```
#
# ## Key takeaways
#
# - Five rankings, one table: on the simulated world the mean AUROC was
#   {glue:text}`c13_auc_attention:.2f` for attention, {glue:text}`c13_auc_embedding:.2f` for
#   embeddings, {glue:text}`c13_auc_drivers:.2f` for CellRank drivers,
#   {glue:text}`c13_auc_knockout:.2f` for the in-silico knockout and
#   {glue:text}`c13_auc_coexpression:.2f` for co-expression.
# - The candidate list does much of the work: the driver ranking's precision in its top three
#   was {glue:text}`c13_p_drivers:.2f` among TFs and {glue:text}`c13_all_p_drivers:.2f` over
#   all genes, where targets took {glue:text}`c13_share_targets:.0f` % of the top ten.
# - Attention is a description of the model, not of the cell; compared with co-expression it
#   {glue:text}`c13_att_verdict`.
# - On real data, agreement with known regulators is an illustration; only experiments, as in
#   chapter 12's loop, validate a regulator.

# %%
glue("c13_runtime", time.perf_counter() - T0, display=False)
tflib.utils.footer(seed=SEED)
