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
# # 02 Integration and atlas mapping
#
# Chapter 01 ended with a warning: in the Kang PBMC data {cite:p}`kang2018multiplexed`,
# control and interferon-β-stimulated cells of the same type sit apart in every
# {term}`embedding`. Any model trained on a corpus like this one, a Transcriptformer
# included, has to cope with such differences between samples. This chapter measures a
# {term}`batch effect` and removes it with scVI {cite:p}`lopez2018scvi,gayoso2022scvitools`.
# It then maps new cells onto a frozen reference the way scArches does
# {cite:p}`lotfollahi2022scarches`. Every result is compared with a plain PCA baseline,
# because published benchmarks show that simple baselines are hard to beat
# {cite:p}`kedzierska2025zeroshot`.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. show a batch effect in a UMAP and put a number on it;
# 2. explain what scVI learns and why its latent space can ignore the batch;
# 3. score embeddings for batch mixing (batch ASW, iLISI, kBET) and biology conservation
#    (label ASW, NMI, ARI), and read the trade-off between the two;
# 4. map a query onto a frozen reference with scvi-tools' query API (scArches-style surgery);
# 5. transfer labels by kNN and report the accuracy with a bootstrap confidence interval,
#    against baselines evaluated on the same explicit split;
# 6. recognise the inputs that make mapping fail: mismatched genes, leaking splits and
#    classes too small to learn.
# ```
#
# ```{admonition} Compute budget
# :class: note
# scVI is trained for far fewer epochs here than scvi-tools would choose by default (about
# 400 for 2,000 cells): 30 epochs on all cells, 30 for the reference and 20 for the query
# surgery, on 1,200 genes, with the KL warm-up shortened to match. That keeps the chapter
# within about three minutes on two CPU cores. Longer training changes the results (the
# mapping accuracy especially), so read every scVI number below as the outcome of this short
# schedule, not as what scVI can do at best. {ref}`The training-budget exercise <ex02-budget>` lets you train longer.
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
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from myst_nb import glue

import tflib
import tflib.datasets as tds
import tflib.stats as stats
import tflib.tl as tl
from tflib.pl.workflow import OKABE_ITO, TOL_13
from tflib.utils import round_sig

SEED = 0
rng = tflib.utils.notebook_setup(SEED)  # seeds, quiet libraries, plot style
sc.settings.n_jobs = 2

# Training lengths, chosen for the ~3-minute budget (see the note above).
# scvi-tools ramps the KL term up over 400 epochs by default; in a 30-epoch run it would
# stay below 10 % of its weight, the latent space would barely be regularised and would
# keep the batch. The warm-up is therefore shortened to 30 epochs.
EPOCHS_ALL = 30  # scVI on all 2,000 cells
EPOCHS_REF = 30  # the reference (1,000 control cells)
EPOCHS_QUERY = 20  # the query surgery (1,000 stimulated cells)
TRAIN = dict(
    enable_progress_bar=False, plan_kwargs=dict(lr=3e-3, n_epochs_kl_warmup=30)
)
FIT = dict(batch_size=128, train_kwargs=TRAIN)
N_HVG = 1200  # genes kept for every model
N_BOOT = 300  # bootstrap resamples per confidence interval
print("device:", tflib.utils.get_device())

# Colour-blind-safe palettes (Paul Tol's muted + light for 13 types, Okabe-Ito for the
# condition).
STIM_COLOURS = [OKABE_ITO["blue"], OKABE_ITO["orange"]]


# %% [markdown]
# ## 1 The data and its batch effect
#
# We load the 2,000 Kang PBMCs through the registry (raw counts in `X`, log-normalised
# values in `layers["lognorm"]`) and keep the 1,200 most variable genes (`N_HVG`). scVI models raw
# counts, so the genes are chosen with scanpy's `seurat_v3` flavour, which works on counts,
# and per condition (`batch_key="stim"`), so that genes variable in only one condition are
# not missed.

# %%
adata = tds.load("kang_pbmc")
adata.obs = adata.obs[["cell_type", "stim"]].copy()
sc.pp.highly_variable_genes(
    adata, n_top_genes=N_HVG, flavor="seurat_v3", batch_key="stim"
)
adata = adata[:, adata.var["highly_variable"]].copy()
adata.uns["cell_type_colors"] = TOL_13[: adata.obs["cell_type"].nunique()]
adata.uns["stim_colors"] = STIM_COLOURS
print(adata)
print(pd.crosstab(adata.obs["cell_type"], adata.obs["stim"]).T)
assert adata.shape == (2000, N_HVG)
assert np.array_equal(adata.X.data, np.round(adata.X.data))  # counts, as scVI needs

# %% [markdown]
# The baseline embedding is the textbook one: scale the log-normalised genes, then PCA.
# Nothing in it knows about the condition.

# %%
pca_input = sc.AnnData(adata.layers["lognorm"].copy())
sc.pp.scale(pca_input, max_value=10)
sc.pp.pca(pca_input, n_comps=30, random_state=SEED)
adata.obsm["X_pca"] = pca_input.obsm["X_pca"]

sc.pp.neighbors(adata, use_rep="X_pca", random_state=SEED, key_added="pca")
sc.tl.umap(adata, neighbors_key="pca", random_state=SEED)
adata.obsm["X_umap_pca"] = adata.obsm.pop("X_umap")

# %% [markdown]
# ## 2 scVI: a generative model with a batch covariate
#
# scVI {cite:p}`lopez2018scvi` is a variational autoencoder for counts. An encoder maps each
# cell's counts to a small latent vector $z$ (here 10 numbers). A decoder turns $z$ **and the
# batch label** back into the parameters of a negative binomial distribution for every gene.
# Because the decoder is told the batch, the latent space does not have to encode it: the
# training objective rewards a $z$ that describes the cell's state and leaves the batch-specific
# shifts to the decoder. The course wraps scvi-tools {cite:p}`gayoso2022scvitools` in one verb
# that writes the latent mean to `adata.obsm["X_scvi"]`:
#
# ````{literalinclude} ../tflib/tl/integrate.py
# :language: python
# :pyobject: scvi_integrate
# ````
#
# Here the "batch" is the stimulation. That is a deliberate stress test: interferon is
# biology, not a technical artefact, and section 5 comes back to what is lost by removing it.

# %%
model_all = tl.scvi_integrate(
    adata, batch_key="stim", max_epochs=EPOCHS_ALL, seed=SEED, **FIT
)
sc.pp.neighbors(adata, use_rep="X_scvi", random_state=SEED, key_added="scvi")
sc.tl.umap(adata, neighbors_key="scvi", random_state=SEED)
adata.obsm["X_umap_scvi"] = adata.obsm.pop("X_umap")
elbo = model_all.history["elbo_train"].iloc[:, 0]
assert elbo.iloc[-1] < elbo.iloc[0]  # training made progress

# %% mystnb={"image": {"alt": "Four UMAP panels. Top, the PCA embedding: coloured by condition, control and stimulated cells of each type form two neighbouring islands; coloured by cell type, the types are separate. Bottom, the scVI latent space: the two conditions overlap while the cell types stay apart."}}
fig, axes = plt.subplots(2, 2, figsize=(11, 9))
for row, (basis, name) in enumerate(
    [("umap_pca", "PCA"), ("umap_scvi", "scVI latent")]
):
    sc.pl.embedding(
        adata,
        basis=basis,
        color="stim",
        ax=axes[row, 0],
        show=False,
        title=f"{name}: condition",
        frameon=False,
    )
    sc.pl.embedding(
        adata,
        basis=basis,
        color="cell_type",
        ax=axes[row, 1],
        show=False,
        title=f"{name}: cell type",
        frameon=False,
        legend_loc="on data",
        legend_fontsize=7,
        legend_fontoutline=2,
    )
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure 1.** {term}`UMAP` of the PCA embedding (top) and of the scVI latent space (bottom),
# coloured by condition (left; blue = control, orange = stimulated) and by annotated cell type
# (right, labels on the clusters). In the PCA view, control and stimulated cells of one type
# form two neighbouring islands. In the scVI view they overlap, and the types stay apart.
# A UMAP is a picture, not a measurement: the next section scores the two embeddings
# themselves.
#
# ## 3 Measuring integration
#
# Integration has two goals that pull in opposite directions: cells from different batches
# should mix (**batch mixing**), and cells of different types should stay apart (**biology
# conservation**). The course scores both with the metrics of the scIB benchmark, rebuilt
# on scikit-learn in `tflib.tl.metrics` and tested against hand-computed cases:
#
# | metric | question it asks | 1 means |
# |---|---|---|
# | batch ASW | within each cell type, can the silhouette tell the batches apart? | not at all |
# | iLISI | how many batches are among a cell's 30 nearest neighbours (inverse Simpson)? | all, in equal shares |
# | kBET | does each neighbourhood's batch mix pass a chi-square test against the global mix? | every cell passes |
# | label ASW | are cell types compact and separated (silhouette)? | perfectly |
# | NMI, ARI | does a k-means clustering of the embedding recover the cell types? | exactly |
#
# The batch metric that reads most directly is the batch ASW:
#
# ````{literalinclude} ../tflib/tl/metrics.py
# :language: python
# :pyobject: batch_asw
# ````

# %%
metrics = tl.integration_metrics(
    adata, ["X_pca", "X_scvi"], batch_key="stim", label_key="cell_type", seed=SEED
)
round_sig(metrics)

# %%
for emb in metrics.index:
    for col in [
        "batch_asw",
        "ilisi",
        "kbet",
        "label_asw",
        "nmi",
        "ari",
        "batch_score",
        "bio_score",
    ]:
        glue(f"c02_{emb}_{col}", float(metrics.loc[emb, col]), display=False)
assert metrics.loc["X_scvi", "ilisi"] > metrics.loc["X_pca", "ilisi"] + 0.2
assert metrics.loc["X_scvi", "batch_score"] > metrics.loc["X_pca", "batch_score"]

# %% [markdown]
# **Table 1.** Integration metrics on all 2,000 cells (higher is better in every column;
# `batch_score` and `bio_score` are the means of the batch and biology columns, and `overall`
# weights them 40:60 as scIB does).
#
# The batch columns say it clearly: the iLISI rises from {glue:text}`c02_X_pca_ilisi:.2f`
# with PCA to {glue:text}`c02_X_scvi_ilisi:.2f` with scVI, and the kBET acceptance rate from
# {glue:text}`c02_X_pca_kbet:.2f` to {glue:text}`c02_X_scvi_kbet:.2f`. The biology columns
# move much less (label ASW {glue:text}`c02_X_pca_label_asw:.2f` vs
# {glue:text}`c02_X_scvi_label_asw:.2f`; NMI {glue:text}`c02_X_pca_nmi:.2f` vs
# {glue:text}`c02_X_scvi_nmi:.2f`). Those small biology differences rest on one k-means run
# and one training seed, so read them as "about equal", not as a ranking ({ref}`the seed
# exercise <ex02-seed>` asks how much they move with the seed).
#
# ## 4 Atlas mapping: a frozen reference and a new query
#
# In practice the cells you want to annotate arrive after the atlas was built. Retraining the
# atlas for every new sample is slow and changes everyone else's coordinates. scArches
# {cite:p}`lotfollahi2022scarches` instead performs *architecture surgery*: it copies the
# trained reference network, adds parameters for the new batch, and trains **only those**
# on the query. The reference space stays fixed.
#
# Our scenario is the hard version of that: the reference is built from the **control**
# cells only, and the query is the **stimulated** cells, a condition the reference has never
# seen. The split is explicit and checked for leaks before anything is trained.

# %%
split = tl.make_split(adata, by="stim", test="STIM")
tl.check_split(
    adata, split=split
)  # raises SplitLeakError if a cell or a condition were shared
print(split.describe())
reference = adata[split.train].copy()
query = adata[split.test].copy()
for part in (
    reference,
    query,
):  # drop the all-cell results, so nothing from section 3 leaks in
    for key in ("X_scvi", "X_umap_scvi", "X_umap_pca"):
        part.obsm.pop(key, None)

# %% [markdown]
# A reference model for surgery needs one architectural choice: layer normalisation instead
# of batch normalisation, and the batch fed to the encoder as well. `scvi_integrate` makes
# these choices by default (`query_ready=True`). With only one condition in the reference
# there is no batch effect to remove there, which the function points out with a warning.

# %%
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*single value.*")
    ref_model = tl.scvi_integrate(
        reference, batch_key="stim", max_epochs=EPOCHS_REF, seed=SEED, **FIT
    )
frozen_before = {k: v.clone() for k, v in ref_model.module.state_dict().items()}

# %% [markdown]
# The mapping itself goes through scvi-tools' query API: `SCVI.prepare_query_anndata`
# aligns the query's genes to the reference, and `SCVI.load_query_data` builds the query model
# with every reference weight frozen:
#
# ````{literalinclude} ../tflib/tl/integrate.py
# :language: python
# :pyobject: map_query
# ````

# %%
query_model = tl.map_query(ref_model, query, max_epochs=EPOCHS_QUERY, seed=SEED, **FIT)
after = ref_model.module.state_dict()
assert all(
    (frozen_before[k] == after[k]).all() for k in frozen_before
)  # reference untouched
q_state = query_model.module.state_dict()
same = [k for k, v in frozen_before.items() if q_state[k].shape == v.shape]
assert all(
    (q_state[k] == frozen_before[k]).all() for k in same
)  # shared weights stayed frozen
print(
    f"{len(same)} of {len(frozen_before)} weight tensors are shared unchanged; "
    f"{len(frozen_before) - len(same)} grew columns for the new condition"
)

# %% [markdown]
# ### Label transfer and its baselines
#
# The query's cell types are known, so the mapping can be graded: every query cell gets the
# majority label of its 15 nearest reference cells in the scVI space (`tl.transfer_labels`).
# Two baselines use the same split and the same test cells:
#
# - **kNN on the reference PCA**: the query is projected onto the reference's PCA
#   (`tl.project_pca`: scaling and PCA fitted on control cells only) and labelled the same
#   way. This is mapping without any batch correction.
# - **PCA + logistic regression**: a linear classifier on the reference PCA (scaling and PCA
#   fitted on control cells only). All three methods share the 1,200 genes chosen in
#   section 1 on all cells, labels unseen; a stricter protocol would pick them on the
#   reference alone.
#
# Each accuracy and macro-F1 comes with a 95 % bootstrap interval over the 1,000 query cells
# (`tflib.stats.bootstrap_ci`). The 5 erythrocytes of the query have no counterpart in the
# reference: every method must get them wrong, and they are counted as errors.

# %%
tl.transfer_labels(
    reference,
    query,
    embed_key="X_scvi",
    label_key="cell_type",
    k=15,
    key_added="pred_scvi",
)
tl.project_pca(reference, query, n_top_genes=N_HVG, n_pcs=30, seed=SEED)
tl.transfer_labels(
    reference,
    query,
    embed_key="X_pca_ref",
    label_key="cell_type",
    k=15,
    key_added="pred_pca",
)
logreg = tl.pca_logreg(reference, "cell_type", n_top_genes=N_HVG, n_pcs=30, seed=SEED)
query.obs["pred_logreg"] = logreg.predict(query)

truth = query.obs["cell_type"].astype(str).to_numpy()
methods = {
    "scArches-style mapping + kNN (scVI)": "pred_scvi",
    "reference PCA + kNN": "pred_pca",
    "reference PCA + logistic regression": "pred_logreg",
}
results = pd.concat(
    [
        tl.evaluate_predictions(
            truth, query.obs[col].astype(str), method=name, n_boot=N_BOOT, seed=SEED
        )
        for name, col in methods.items()
    ],
    ignore_index=True,
)
wide = results.pivot(
    index="method", columns="metric", values=["estimate", "low", "high"]
)
scores = sorted(results["metric"].unique())
flat = pd.DataFrame(
    {
        f"{m}{suffix}": wide[(col, m)]
        for m in scores
        for col, suffix in [("estimate", ""), ("low", "_low"), ("high", "_high")]
    }
)
stats.with_intervals(flat.loc[list(methods)], metrics=scores)

# %%
acc = results[results["metric"] == "accuracy"].set_index("method")
short = dict(zip(methods, ["scvi", "pca_knn", "logreg"]))
for name, row in acc.iterrows():
    for col in ("estimate", "low", "high"):
        glue(f"c02_acc_{short[name]}_{col}", float(row[col]), display=False)
best = acc["estimate"].idxmax()
glue("c02_best_method", best, display=False)
print("highest accuracy:", best)
# the majority-class guess: always CD14 Mono
majority = pd.Series(truth).value_counts(normalize=True).iloc[0]
assert (acc["low"] > majority).all()  # every method beats the majority-class guess
# The claim the prose makes: on this split the uncorrected PCA baseline beats the
# mapping, by more than both intervals (measured with the schedule above: 0.78 vs 0.42;
# with the earlier 60/30 reference/query epochs on 2,000 genes 0.80 vs 0.53).
assert (
    acc.loc["reference PCA + kNN", "low"]
    > acc.loc["scArches-style mapping + kNN (scVI)", "high"]
)

# %% [markdown]
# **Table 2.** Label transfer from 1,000 control cells (reference) to 1,000 stimulated cells
# (query): point estimate and 95 % bootstrap interval, `estimate [low, high]`, for accuracy
# and macro-F1.
#
# The result is not the one the method's reputation suggests. kNN on the **uncorrected**
# reference PCA labels {glue:text}`c02_acc_pca_knn_estimate:.1%` of the stimulated cells
# correctly (95 % CI {glue:text}`c02_acc_pca_knn_low:.1%` to
# {glue:text}`c02_acc_pca_knn_high:.1%`), and the linear classifier
# {glue:text}`c02_acc_logreg_estimate:.1%` ({glue:text}`c02_acc_logreg_low:.1%` to
# {glue:text}`c02_acc_logreg_high:.1%`). The scArches-style mapping reaches only
# {glue:text}`c02_acc_scvi_estimate:.1%` ({glue:text}`c02_acc_scvi_low:.1%` to
# {glue:text}`c02_acc_scvi_high:.1%`). Two reasons fit the evidence. First, the reference
# saw a single condition, so it never learned how conditions differ; the surgery trains only
# the new condition's input columns, a shift that cannot express a cell-type-specific
# interferon response. Second, the scVI models were trained briefly. Meanwhile, cell-type
# differences dominate the top principal components strongly enough that a projected
# stimulated cell still finds control neighbours of its own type most of the time.
# The per-type view below shows where the errors are.

# %%
recall = tl.per_class_recall(
    truth, query.obs["pred_scvi"].astype(str), n_boot=N_BOOT, seed=SEED
)
recall["pca_knn"] = (
    pd.Series(truth == query.obs["pred_pca"].astype(str).to_numpy())
    .groupby(truth)
    .mean()
)
recall = recall.rename(columns={"low": "recall_low", "high": "recall_high"})
stats.with_intervals(round_sig(recall), metrics=["recall"])

# %% [markdown]
# **Table 3.** Recall per query cell type after scArches-style mapping (with its 95 %
# bootstrap interval in brackets) and, for comparison, after kNN on the reference PCA. Most of the mapping's loss
# comes from the CD4 T cells (naive and memory are a continuum, and the mapped cells drift
# across it) and the CD14 monocytes, the type that responds most to interferon; erythrocytes (absent from the reference) and the handful of pDCs are missed by
# both. For types with a few dozen query cells the intervals are wide: no ranking there.

# %% mystnb={"image": {"alt": "Two UMAP panels of the reference control cells and the mapped stimulated query cells in the frozen scVI space. Left, coloured by role (reference blue, query orange); right, coloured by known cell type, with labels on the clusters."}}
joint = sc.concat({"reference (CTRL)": reference, "query (STIM)": query}, label="role")
joint.obsm["X_scvi"] = np.vstack([reference.obsm["X_scvi"], query.obsm["X_scvi"]])
sc.pp.neighbors(joint, use_rep="X_scvi", random_state=SEED)
sc.tl.umap(joint, random_state=SEED)
joint.uns["role_colors"] = STIM_COLOURS
joint.uns["cell_type_colors"] = adata.uns["cell_type_colors"]
joint.obs["cell_type"] = joint.obs["cell_type"].cat.set_categories(
    adata.obs["cell_type"].cat.categories
)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
sc.pl.umap(
    joint,
    color="role",
    ax=axes[0],
    show=False,
    frameon=False,
    title="reference vs query",
)
sc.pl.umap(
    joint,
    color="cell_type",
    ax=axes[1],
    show=False,
    frameon=False,
    title="annotated cell type",
    legend_loc="on data",
    legend_fontsize=7,
    legend_fontoutline=2,
)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Figure 2.** UMAP of the reference (control, blue) and the mapped query (stimulated,
# orange) in the frozen reference's scVI space, coloured by role (left) and by the known
# cell types (right). The reference was never retrained. Where stimulated cells sit next to
# control cells of another type, kNN label transfer errs.
#
# ### When mapping must refuse
#
# Three inputs make numbers like Table 2 meaningless, and the course library stops on each of
# them with a message that names the fix:

# %%
wrong_ids = query.copy()
wrong_ids.var_names = [
    f"ENSG{i:011d}" for i in range(wrong_ids.n_vars)
]  # other identifiers
try:
    tl.map_query(ref_model, wrong_ids, max_epochs=1)
except ValueError as err:
    print("genes:", err)
else:
    raise AssertionError("a query with other gene identifiers must be refused")

try:
    tl.check_split(adata, train=adata.obs_names[:1200], test=adata.obs_names[1000:])
except tl.SplitLeakError as err:
    print("split:", err)

try:
    tl.check_class_sizes(query.obs["cell_type"], min_cells=10, where="query")
except ValueError as err:
    print("classes:", err)

# %% [markdown]
# The first message stops a query whose genes are Ensembl IDs while the reference uses
# symbols: scvi-tools alone would fill every missing gene with zeros and map noise. The second
# catches cells that sit in both parts of a split. The third is the check that
# `pca_logreg` and `transfer_labels` run with `min_cells=2`; raised to 10 here, it shows
# which query types would be too rare to learn from.
#
# ## 5 Which method won, and how sure are we?
#
# - **Integration (Table 1).** scVI mixes the two conditions far better than PCA on every
#   batch metric. The biology scores of the two embeddings are close; from one seed and one
#   clustering we do not claim either is better at keeping cell types apart.
# - **Atlas mapping (Table 2).** The simple baselines won: {glue:text}`c02_best_method` had
#   the highest accuracy, and kNN on the uncorrected reference PCA beat the scArches-style
#   mapping by more than the width of both bootstrap intervals (the cell asserts it), so the
#   gap is not noise in the choice of query cells. The accuracy intervals of the two PCA
#   baselines overlap, so we do not rank them against each other. This verdict is for *this* setting: a
#   reference built from one condition, a query from another, and short training.
# - **How confident?** The intervals cover only the resampling of query cells. They do not
#   cover the training seed, the number of epochs, or the fact that all cells come from one
#   pool of donors. A different donor, a different laboratory or longer training can move the
#   numbers more than the intervals suggest.
#
# ## Caveats and failure modes
#
# - **Over-correction.** Here the "batch" is interferon stimulation. scVI was asked to make
#   the latent space blind to it, and with this short training it got partway: a linear
#   classifier told stimulated from control CD14 monocytes with accuracy
#   {glue:text}`c02_ex_stim_pca:.2f` in PCA space but {glue:text}`c02_ex_stim_scvi:.2f` in
#   the scVI space ({ref}`the over-correction exercise <ex02-overcorrect>`); longer training
#   removes more. For a question about the interferon response that is exactly the wrong
#   direction. Decide what a batch is before integrating.
# - **A reference that has seen one condition** cannot teach the surgery how conditions
#   differ. scArches-style mapping is at its best when the reference already spans several
#   batches, so that the query's difference resembles differences it has learned.
# - **A query with a new cell type** (the erythrocytes here) is forced onto the nearest
#   reference type. The kNN confidence (`obs["pred_scvi_confidence"]`) is a weak warning at
#   best; dedicated uncertainty scores exist for this.
# - **Genes.** A query must share the reference's gene identifiers. `map_query` refuses
#   below 80 % overlap and warns when genes are zero-filled.
# - **Short training.** Fewer epochs than scvi-tools' default: the numbers here are a lower
#   bound for scVI, and the loss was still falling.
# - **Metrics are not neutral.** kNN-based scores depend on `k`, the k-means clustering on
#   its seed, and the scIB aggregate on its 40:60 weighting.
#
# ## Exercises
#
# ```{exercise}
# :label: ex02-overcorrect
# Show the over-correction directly. For the CD14 monocytes, train a logistic regression
# that predicts `stim` from (a) `X_pca` and (b) `X_scvi` (5-fold cross-validation). What
# accuracies do you get, and what do they mean for someone who wants to study the
# interferon response in the integrated space?
# ```
#
# ````{solution} ex02-overcorrect
# :class: dropdown
# ```python
# from sklearn.linear_model import LogisticRegression
# from sklearn.model_selection import cross_val_score
#
# mono = adata[adata.obs["cell_type"] == "CD14 Mono"]
# y = mono.obs["stim"].astype(str)
# for key in ("X_pca", "X_scvi"):
#     scores = cross_val_score(LogisticRegression(max_iter=2000), mono.obsm[key], y, cv=5)
#     print(key, scores.mean().round(3))
# ```
# In our run the condition was predicted with accuracy {glue:text}`c02_ex_stim_pca:.2f` from
# PCA and {glue:text}`c02_ex_stim_scvi:.2f` from scVI (always guessing the larger condition
# gives {glue:text}`c02_ex_stim_chance:.2f`). The accuracy fell but stayed far above
# chance: with this short training, scVI weakened the condition in the latent space without
# removing it. Differential expression between conditions must therefore be run on the
# counts (or with scVI's own decoder), not on distances in the integrated space.
# ````

# %% tags=["hide-input"]
# Executed solution: the build fails if scVI stops hiding the condition.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

mono = adata[adata.obs["cell_type"] == "CD14 Mono"]
y = mono.obs["stim"].astype(str)
stim_acc = {
    key: float(
        cross_val_score(
            LogisticRegression(max_iter=2000), mono.obsm[key], y, cv=5
        ).mean()
    )
    for key in ("X_pca", "X_scvi")
}
glue("c02_ex_stim_pca", stim_acc["X_pca"], display=False)
glue("c02_ex_stim_scvi", stim_acc["X_scvi"], display=False)
glue("c02_ex_stim_chance", float(y.value_counts(normalize=True).iloc[0]), display=False)
chance = y.value_counts(normalize=True).iloc[0]
assert stim_acc["X_pca"] > 0.9 and stim_acc["X_scvi"] < stim_acc["X_pca"] - 0.05
assert stim_acc["X_scvi"] > chance + 0.2  # weakened, not removed: the text says so

# %% [markdown]
#
# ```{exercise}
# :label: ex02-seed
# How stable is Table 1? Re-run `scvi_integrate` with seed 1 (keep `EPOCHS_ALL`, write to
# `key_added="X_scvi_s1"`) and recompute the metrics. Which columns move by more than 0.02?
# (Add more seeds for a better estimate of the spread.)
# ```
#
# ````{solution} ex02-seed
# :class: dropdown
# ```python
# tl.scvi_integrate(adata, batch_key="stim", max_epochs=EPOCHS_ALL, seed=1,
#                   key_added="X_scvi_s1", **FIT)
# tl.integration_metrics(adata, ["X_scvi", "X_scvi_s1"], batch_key="stim",
#                        label_key="cell_type", seed=SEED).round(3)
# ```
# In our run the columns that moved by more than 0.02 between the two seeds were
# {glue:text}`c02_ex_seed_moved`; the largest spread was {glue:text}`c02_ex_seed_max:.3f`
# ({glue:text}`c02_ex_seed_max_col`). So scores move by up to a few hundredths with the
# training seed alone, and differences in Table 1 smaller than this spread are not
# evidence. The batch verdict survives it: scVI's iLISI stayed above PCA's
# by at least {glue:text}`c02_ex_seed_ilisi_gap:.2f` for both seeds.
# ````

# %% tags=["hide-input"]
# Executed solution: the build fails if scVI's batch-mixing advantage depends on the
# seed.
tl.scvi_integrate(
    adata, batch_key="stim", max_epochs=EPOCHS_ALL, seed=1, key_added="X_scvi_s1", **FIT
)
by_seed = tl.integration_metrics(
    adata,
    ["X_scvi", "X_scvi_s1"],
    batch_key="stim",
    label_key="cell_type",
    seed=SEED,
)
cols = ["batch_asw", "ilisi", "kbet", "label_asw", "nmi", "ari"]
spread = (by_seed[cols].max() - by_seed[cols].min()).astype(float)
moved = [c for c in cols if spread[c] > 0.02]
glue("c02_ex_seed_moved", ", ".join(moved) if moved else "none", display=False)
glue("c02_ex_seed_max", float(spread.max()), display=False)
glue("c02_ex_seed_max_col", str(spread.idxmax()), display=False)
ilisi_gap = float(by_seed["ilisi"].min() - metrics.loc["X_pca", "ilisi"])
glue("c02_ex_seed_ilisi_gap", ilisi_gap, display=False)
assert ilisi_gap > 0.2  # Table 1's batch verdict holds for every seed
adata.obsm.pop("X_scvi_s1")  # keep the saved artifact as it was
adata.uns.pop("integration_metrics", None)

# %% [markdown]
#
# ```{exercise}
# :label: ex02-budget
# Train the reference and the query surgery for twice as many epochs
# (`EPOCHS_REF * 2`, `EPOCHS_QUERY * 2`) and redo Table 2. Does the accuracy change by more
# than its confidence interval? What does that say about the "lower bound" in the compute
# note at the top?
# ```
#
# ````{solution} ex02-budget
# :class: dropdown
# ```python
# ref2, q2 = reference.copy(), query.copy()
# m2 = tl.scvi_integrate(ref2, batch_key="stim", max_epochs=EPOCHS_REF * 2, seed=SEED,
#                        **FIT)
# tl.map_query(m2, q2, max_epochs=EPOCHS_QUERY * 2, seed=SEED, **FIT)
# pred = tl.transfer_labels(ref2, q2, embed_key="X_scvi", label_key="cell_type")
# tl.evaluate_predictions(truth, pred, method="scVI, 2x epochs", seed=SEED)
# ```
# Compare the new accuracy with Table 2. If it rises by more than its interval, the short
# training was holding the mapping back; if it barely moves, the single-condition reference
# is the bottleneck (see the caveats). In our run it went from
# {glue:text}`c02_acc_scvi_estimate:.1%` to {glue:text}`c02_ex_budget_acc:.1%` (95 % CI
# {glue:text}`c02_ex_budget_low:.1%` to {glue:text}`c02_ex_budget_high:.1%`): it
# {glue:text}`c02_ex_budget_verdict`, and kNN on the uncorrected PCA
# ({glue:text}`c02_acc_pca_knn_estimate:.1%`) {glue:text}`c02_ex_budget_vs_pca`. Either way, the bootstrap interval does not include
# this training variability, so quote both when you compare methods.
# ````

# %% tags=["hide-input"]
# Executed solution: the build fails if longer training breaks the mapping.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*single value.*")
    ref2, q2 = reference.copy(), query.copy()
    m2 = tl.scvi_integrate(
        ref2, batch_key="stim", max_epochs=EPOCHS_REF * 2, seed=SEED, **FIT
    )
    tl.map_query(m2, q2, max_epochs=EPOCHS_QUERY * 2, seed=SEED, **FIT)
pred = tl.transfer_labels(ref2, q2, embed_key="X_scvi", label_key="cell_type")
longer = tl.evaluate_predictions(
    truth, pred.astype(str), method="scVI, 2x epochs", n_boot=N_BOOT, seed=SEED
).set_index("metric")
new = longer.loc["accuracy"]
old = acc.loc["scArches-style mapping + kNN (scVI)"]
glue("c02_ex_budget_acc", float(new["estimate"]), display=False)
glue("c02_ex_budget_low", float(new["low"]), display=False)
glue("c02_ex_budget_high", float(new["high"]), display=False)
if new["low"] > old["high"]:
    verdict = "rose by more than both intervals"
elif new["high"] < old["low"]:
    verdict = "fell by more than both intervals"
else:
    verdict = "stayed within the intervals"
glue("c02_ex_budget_verdict", verdict, display=False)
pca_low = acc.loc["reference PCA + kNN", "low"]
glue(
    "c02_ex_budget_vs_pca",
    "still wins" if pca_low > new["high"] else "no longer wins",
    display=False,
)
assert new["low"] > majority  # longer training still beats the majority-class guess

# %% [markdown]
#
# ## Quiz
#
# :::{admonition} 1. scVI raised the iLISI from {glue:text}`c02_X_pca_ilisi:.2f` to {glue:text}`c02_X_scvi_ilisi:.2f`. Is scVI's embedding therefore better?
# :class: dropdown
# Better at mixing the two conditions, yes. But mixing is half of the score: the biology
# columns were about equal, and here the "batch" is interferon, a signal some questions need.
# :::
#
# :::{admonition} 2. kNN on the uncorrected PCA labelled {glue:text}`c02_acc_pca_knn_estimate:.1%` of the query cells, the scArches-style mapping {glue:text}`c02_acc_scvi_estimate:.1%`. Is the gap noise?
# :class: dropdown
# Not cell-sampling noise: the PCA baseline's lower bound lies above the mapping's upper
# bound. The intervals do not cover training seeds, epochs or donors, though.
# :::
#
# :::{admonition} 3. Why does the query surgery train only the new condition's weights?
# :class: dropdown
# So that the reference space stays fixed: other users' coordinates do not change, and the
# atlas need not be retrained for every new sample.
# :::
#
# :::{admonition} 4. The query holds 5 erythrocytes that the reference never saw. What happens to them?
# :class: dropdown
# They are forced onto the nearest reference type and counted as errors by every method; a
# kNN confidence is only a weak warning that a type is new.
# :::
#
# ## Key takeaways
#
# - A batch effect is visible in a UMAP but must be measured: batch ASW, iLISI and kBET for
#   mixing; label ASW, NMI and ARI for biology. Report both, never one alone.
# - scVI removes a batch covariate by giving it to the decoder; on Kang it raised the iLISI
#   from {glue:text}`c02_X_pca_ilisi:.2f` (PCA) to {glue:text}`c02_X_scvi_ilisi:.2f` while the
#   biology scores stayed close to PCA's.
# - scArches-style mapping (`prepare_query_anndata` + `load_query_data` + a short training of
#   the new batch's weights) places new cells in a frozen reference. Here, from a control-only
#   reference to stimulated cells, it transferred labels with
#   {glue:text}`c02_acc_scvi_estimate:.1%` accuracy (95 % CI
#   {glue:text}`c02_acc_scvi_low:.1%`–{glue:text}`c02_acc_scvi_high:.1%`) and **lost** to kNN
#   on the uncorrected PCA ({glue:text}`c02_acc_pca_knn_estimate:.1%`): always run the
#   baseline.
# - Every comparison uses one explicit, leak-checked split, and every accuracy carries a
#   bootstrap interval, which covers cell sampling only, not seeds or donors.
# - "Batch" is a modelling decision: integrating away a biological condition erases the very
#   signal a perturbation study needs.

# %%
artifacts = Path("_artifacts")
artifacts.mkdir(exist_ok=True)
keep = adata.copy()
keep.uns.pop(
    "integration_metrics", None
)  # a DataFrame in uns; the table is rebuilt in ch. 07
keep.write_h5ad(artifacts / "02_kang_integrated.h5ad")
print("saved", artifacts / "02_kang_integrated.h5ad", "with obsm:", list(keep.obsm))

# %%
tflib.utils.footer(seed=SEED)
