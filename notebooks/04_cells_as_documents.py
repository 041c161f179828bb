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
# # 04 Cells as documents
#
# A language model reads a document as a sequence of {term}`tokens <token>`. A
# Transcriptformer reads a cell the same way: the words are genes, and the order of the words
# says which genes matter most in that cell. This chapter builds that translation from counts
# to tokens by hand, on real cells, and then with the course library `tflib.tokenize`.
# It covers the two conventions that today's single-cell
# {term}`foundation models <foundation model>` use: Geneformer's {term}`rank-value encoding`
# {cite:p}`theodoris2023geneformer` and scGPT's value binning {cite:p}`cui2024scgpt`. The
# model that reads these tokens, and the {term}`embedding` it gives each one, come in chapter 05.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. turn one cell's raw counts into its Geneformer token sequence step by step, and say why
#    the per-cell total drops out of the order;
# 2. explain, with data, why dividing by each gene's corpus median lifts transcription factors
#    above housekeeping genes;
# 3. build a gene vocabulary with special tokens, map symbols, Ensembl IDs and mouse genes onto
#    it, and read a coverage report;
# 4. compare rank-value tokens with scGPT-style expression bins for the same cell;
# 5. measure what a maximum sequence length throws away;
# 6. tokenize a whole corpus into an on-disk token store, and save the tokenizer beside it.
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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from myst_nb import glue

import tflib
import tflib.datasets as tds
import tflib.tokenize as tt
import tflib.widgets as tw
from tflib.pl.workflow import OKABE_ITO

SEED = 0
rng = tflib.utils.notebook_setup(SEED)  # seeds, quiet libraries, plot style
ARTIFACTS = Path("_artifacts")
ARTIFACTS.mkdir(exist_ok=True)


pd.set_option("display.float_format", tflib.utils.format_sig)

# %% [markdown]
# ## 1 A vocabulary of genes
#
# Before a cell can become a sequence we need a dictionary: which genes exist as words, and
# which integer each gets. `tflib` puts four special tokens first, with fixed ids, and the
# genes after them:
#
# | id | token | used for |
# |---|---|---|
# | 0 | `<pad>` | filling short sequences up to a batch's length |
# | 1 | `<mask>` | hiding a gene during masked-gene pretraining (chapter 06) |
# | 2 | `<cls>` | the first token; its output summarises the cell |
# | 3 | `<eos>` | the end of the cell's sequence |
#
# Geneformer names genes by human Ensembl IDs, which are stable across annotation releases,
# while symbols get renamed. We build the vocabulary from all 62,754 GENCODE v44 gene IDs;
# datasets named by symbols are translated through the same GENCODE table.

# %%
# fetched and checksum-verified through tflib.datasets
gencode = tt.load_gencode_table()
vocab = tt.GeneVocab.from_genes(gencode["gene_id"])
print(vocab)
print([vocab.id_to_token(i) for i in range(6)])
assert (vocab.pad_id, vocab.mask_id, vocab.cls_id, vocab.eos_id) == (0, 1, 2, 3)

# %% [markdown]
# Our corpus for this chapter is the Kang PBMC subset {cite:p}`kang2018multiplexed`: 2,000
# human blood cells, half of them stimulated with interferon-β, with raw counts in `X` and
# genes named by symbol. A coverage report says how much of the dataset the vocabulary can
# read, as a fraction of genes and, more importantly, of counts.

# %%
kang = tds.load("kang_pbmc")
coverage = vocab.coverage(kang)
print(coverage)
glue("c04_gene_cov", float(100 * coverage.gene_fraction), display=False)
glue("c04_count_cov", float(100 * coverage.count_fraction), display=False)
assert coverage.count_fraction > 0.95

# %% [markdown]
# The vocabulary covers {glue:text}`c04_gene_cov:.1f` % of the genes but
# {glue:text}`c04_count_cov:.1f` % of the counts: the symbols it cannot place are mostly
# lowly expressed (retired names, read-through transcripts). Had we passed mouse genes or the
# wrong identifier type, `coverage` would have raised an error with the fix in its message,
# instead of silently producing near-empty cells.
#
# ## 2 Gene medians
#
# Rank-value encoding needs one number per gene from the whole corpus: the median of the
# gene's normalised expression `counts / n_counts * 1e4` over the cells that express it
# (zeros excluded). Geneformer computed these over 30 million cells; we use our 2,000, which
# is enough to see the effect but gives noisy medians for rarely detected genes.
# `gene_medians` streams over the cells in chunks; in memory it is exact, over a file on
# disk it switches to a histogram sketch with a documented error bound (chapter 06 uses that
# for a larger corpus).

# %%
medians = tt.gene_medians(kang, vocab=vocab)
print(medians, "| cells:", medians.n_cells)
sym = dict(zip(gencode["gene_id"], gencode["symbol"]))
med_table = pd.DataFrame(
    {
        "symbol": [sym[g] for g in medians.genes],
        "median": medians.medians,
        "cells expressing": medians.n_nonzero,
    },
    index=medians.genes,
)
med_table.sort_values("median", ascending=False).head(8)

# %% [markdown]
# The genes with the highest medians are the ones that are high *whenever* they are detected:
# ribosomal proteins, *MALAT1*, *TMSB4X*, *B2M*. Keep them in mind.
#
# ## 3 One cell, step by step
#
# We take one CD14 monocyte and follow its counts to its tokens.

# %%
cell_idx = int(np.flatnonzero(kang.obs["cell_type"] == "CD14 Mono")[0])
counts = kang.X[cell_idx].toarray().ravel()
n_counts = counts.sum()
genes_here = kang.var_names[counts > 0]
steps = pd.DataFrame({"count": counts[counts > 0]}, index=genes_here)
steps["normalised"] = steps["count"] / n_counts * 1e4  # counts per 10,000
steps["id"] = vocab.map_genes(list(genes_here)).ids  # vocabulary id (-1: not in it)
steps = steps[steps["id"] >= 0]
steps["median"] = [medians.get(vocab.id_to_token(i), np.nan) for i in steps["id"]]
steps = steps.dropna()
steps["value"] = steps["normalised"] / steps["median"]  # how far above its usual level
# sort: highest first; tflib sorts by count / median (the same order: see below) and puts
# equal values in vocabulary-id order (its documented tie rule)
steps["count / median"] = steps["count"] / steps["median"]
steps = steps.sort_values(
    ["count / median", "id"], ascending=[False, True], kind="stable"
)
steps["rank"] = np.arange(len(steps))
print(
    f"cell {kang.obs_names[cell_idx]}: {int(n_counts):,} counts, "
    f"{len(steps)} expressed genes in the vocabulary"
)
steps.head(10)

# %% [markdown]
# Each row is one step of the recipe: the raw count, the count per 10,000, the gene's corpus
# median, and their ratio, by which the genes are sorted. The sorted genes, written as their
# vocabulary ids and framed by `<cls>` … `<eos>` (Geneformer's V2 convention), are the cell's
# document. The tokenizer does exactly this for all cells at once:

# %%
tokenizer = tt.RankValueTokenizer(vocab, medians, preset="V2")
cell_tokens = tokenizer.encode(kang[cell_idx : cell_idx + 1])[0]
print(cell_tokens[:8], "...", cell_tokens[-3:], f"({len(cell_tokens)} tokens)")
print(vocab.decode(cell_tokens[:6]))
by_hand = steps["id"].tolist()
assert cell_tokens[0] == vocab.cls_id and cell_tokens[-1] == vocab.eos_id
assert list(cell_tokens[1:-1]) == by_hand

# %% [markdown]
# Notice what did *not* matter: `n_counts`. Dividing by the cell's total multiplies every gene
# of the cell by the same number, which cannot change their order. The total matters for the
# medians (they compare different cells), not for one cell's ranking; `tflib` therefore ranks
# `counts / median` directly. When two genes tie (the same count and the same median, common
# for genes seen in only a few cells), the one with the smaller vocabulary id comes first;
# Geneformer's own sort leaves ties in arbitrary order. Here is the heart of the vectorised
# implementation: every entry of a chunk becomes one 64-bit key that holds its value (inverted,
# so that an ascending sort puts the highest first) and, in the low 20 bits, its token id.
# The keys of all cells of a chunk go into one padded table, a row per cell, and a single
# row-wise sort orders every cell at once; no Python loop runs over cells.
#
# ````{admonition} Library code: tflib.tokenize.rank_keys.rank_order
# :class: dropdown
# ```{literalinclude} ../tflib/tokenize/rank_keys.py
# :language: python
# :pyobject: rank_order
# ```
# ````
#
# ````{admonition} Library code: tflib.tokenize.rank_keys.sorted_tokens (the one row-wise sort)
# :class: dropdown
# ```{literalinclude} ../tflib/tokenize/rank_keys.py
# :language: python
# :pyobject: sorted_tokens
# ```
# ````
#
# ### Explore other cells
#
# `tflib.widgets.rank_explorer` draws any cell's first gene tokens with the value that ranked
# them (`count / n_counts × 10⁴ / median`). In Jupyter or Colab, `explorer.show()` gives a
# slider over all 2,000 cells; the built book cannot run it, so it shows the same drawing for
# three cells of different types instead.

# %%
explorer = tw.rank_explorer(
    kang, tokenizer, n_show=12, label_key="cell_type", cell=cell_idx
)
first_b = int(np.flatnonzero(kang.obs["cell_type"] == "B")[0])
first_t = int(np.flatnonzero(kang.obs["cell_type"] == "CD4 Naive T")[0])
shown = explorer.data(cell_idx)
# the explorer shows the tokenizer's order, highest value first
assert shown["token"].tolist() == by_hand[:12]
assert (np.diff(shown["value"]) <= 1e-9 * shown["value"].to_numpy()[:-1]).all()

# %% tags=["skip-execution"]
# interactive: a slider over the cells (Jupyter, Colab; not run in the book)
explorer.show()

# %% mystnb={"image": {"alt": "Three horizontal bar charts, one per cell: a CD14 monocyte, a B cell and a CD4 naive T cell. Each lists the cell's first twelve gene tokens from top to bottom with bars for count divided by total times ten thousand divided by the gene median; the bars shrink from top to bottom and the gene names differ between the three cell types."}}
fig = explorer.static([cell_idx, first_b, first_t])
plt.show()

# %% [markdown]
# *Figure: the first twelve gene tokens of a CD14 monocyte, a B cell and a CD4 naive T cell,
# with the value that ranked them (static view of the rank explorer).* Each bar is a gene's
# expression relative to its corpus median; the order of the bars is the cell's document.

# %% [markdown]
# ## 4 Why divide by the median? Transcription factors versus housekeeping genes
#
# Ranking by raw counts would put the same abundant genes on top of every cell: a blood cell's
# first words would always be ribosomal proteins. Dividing by each gene's median asks instead
# "which genes are unusually high *here*?". Transcription factors are typically low in
# absolute terms but switched on in specific cells, so they should move up. We check this on
# all 2,000 cells, using the 1,892 human transcription factors of the cisTarget list and, as
# housekeeping genes, the ribosomal proteins plus a few classics.

# %%
tfs = set(pd.read_csv(tds.fetch("tfs_human"), header=None)[0])
symbols = np.array([sym.get(t, t) for t in vocab.tokens])
is_tf = np.isin(symbols, list(tfs))
housekeeping = {
    "ACTB",
    "GAPDH",
    "B2M",
    "TMSB4X",
    "MALAT1",
    "EEF1A1",
    "TPT1",
    "FTL",
    "FTH1",
}
is_hk = np.array([s.startswith(("RPL", "RPS")) or s in housekeeping for s in symbols])

by_median = tokenizer.encode(kang)
# every median = 1: rank by counts
flat_medians = tt.GeneMedians(medians.genes, np.ones(len(medians)))
by_count = tt.RankValueTokenizer(vocab, flat_medians, preset="V2").encode(kang)


def relative_positions(cells, mask):
    """Position of each token of the class in its cell (0 = first gene, 1 = last)."""
    lengths = np.diff(cells.offsets) - 2
    pos = (
        np.arange(cells.tokens.size)
        - np.repeat(cells.offsets[:-1], np.diff(cells.offsets))
        - 1
    )
    rel = pos / np.maximum(np.repeat(lengths, np.diff(cells.offsets)) - 1, 1)
    return rel[mask[cells.tokens] & (cells.tokens > 3)]


def first_words_share(cells, mask, k=25):
    """Share of the first k gene tokens of every cell that belong to the class."""
    pos = np.arange(cells.tokens.size) - np.repeat(
        cells.offsets[:-1], np.diff(cells.offsets)
    )
    first = (pos >= 1) & (pos <= k) & (cells.tokens > 3)
    return mask[cells.tokens[first]].mean()


classes = [("transcription factors", is_tf), ("housekeeping", is_hk)]
encodings = [("by count", by_count), ("by count / median", by_median)]
summary = pd.DataFrame(
    [
        {
            "class": cls,
            "encoding": enc,
            "share of the first 25 words": first_words_share(cells, m),
            "share of all words": m[cells.tokens[cells.tokens > 3]].mean(),
            "mean position (0 = first, 1 = last)": relative_positions(cells, m).mean(),
        }
        for cls, m in classes
        for enc, cells in encodings
    ]
).set_index(["class", "encoding"])
for (cls, enc), row in summary.iterrows():
    which = "median" if "median" in enc else "count"
    key = f"c04_{'tf' if cls.startswith('t') else 'hk'}_{which}"
    glue(key + "_top", float(100 * row["share of the first 25 words"]), display=False)
    glue(key + "_pos", float(row["mean position (0 = first, 1 = last)"]), display=False)
summary.round(3)

# %% mystnb={"image": {"alt": "Two grouped bar charts comparing transcription factors (blue, hatched) with housekeeping genes (orange) when cells are ranked by raw count or by count divided by median. Left: share of each cell's first 25 gene tokens; housekeeping genes dominate when ranking by count and drop sharply with median scaling, while transcription factors rise. Right: mean relative position; with median scaling housekeeping genes sit later in the sequence than transcription factors."}}
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
x = np.arange(2)
for j, (cls, _) in enumerate(classes):
    colour, hatch = (OKABE_ITO["blue"], "//") if j == 0 else (OKABE_ITO["orange"], "")
    for ax, col in zip(
        axes, ["share of the first 25 words", "mean position (0 = first, 1 = last)"]
    ):
        vals = [summary.loc[(cls, enc), col] for enc, _ in encodings]
        ax.bar(
            x + (j - 0.5) * 0.38,
            vals,
            width=0.38,
            color=colour,
            hatch=hatch,
            edgecolor="k",
            label=cls,
        )
for ax, title in zip(
    axes, ["share of each cell's first 25 gene tokens", "mean position in the sequence"]
):
    ax.set_xticks(x, ["ranked by count", "ranked by count / median"])
    ax.set_title(title)
axes[0].set_ylabel("share")
axes[1].set_ylabel("relative position (0 = first)")
axes[0].legend(frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: transcription factors (blue, hatched) and housekeeping genes (orange) in the 2,000
# Kang cells' token sequences, ranked by raw count and by count divided by the gene median.
# Left: their share of each cell's first 25 words; right: their mean position.* Ranked by
# counts, housekeeping genes fill {glue:text}`c04_hk_count_top:.0f` % of each cell's first 25
# words and transcription factors {glue:text}`c04_tf_count_top:.1f` %. Median scaling cuts the
# housekeeping share to {glue:text}`c04_hk_median_top:.0f` % and multiplies the transcription
# factors' share to {glue:text}`c04_tf_median_top:.1f` %, close to their share among all
# expressed genes. On average, housekeeping genes move from position
# {glue:text}`c04_hk_count_pos:.2f` to {glue:text}`c04_hk_median_pos:.2f`, now *behind*
# transcription factors ({glue:text}`c04_tf_count_pos:.2f` → {glue:text}`c04_tf_median_pos:.2f`).
# The front of each document now describes the cell's identity and state rather than its
# metabolism. The effect on transcription factors is modest here because our medians come from
# only 2,000 cells of one tissue; Geneformer's came from 30 million cells of many tissues.

# %%
tf_top = summary.xs("transcription factors")["share of the first 25 words"]
hk_top = summary.xs("housekeeping")["share of the first 25 words"]
assert tf_top["by count / median"] > 2 * tf_top["by count"]
assert hk_top["by count / median"] < 0.5 * hk_top["by count"]
pos_median = summary.xs("by count / median", level="encoding")[
    "mean position (0 = first, 1 = last)"
]
assert pos_median["transcription factors"] < pos_median["housekeeping"]

# %% [markdown]
# ## 5 Ranks versus bins
#
# scGPT {cite:p}`cui2024scgpt` makes a different choice. It keeps the genes in a fixed order
# and gives each a second token, its *expression bin*: the cell's non-zero values are cut at
# their own quantiles into 50 bins (51 with bin 0 for "not expressed"). Quantiles of the cell's
# own values make the bins independent of sequencing depth, without any corpus statistic,
# and repeated values (many genes have a count of 1) get a random bin among the ones their
# value spans, drawn from a seeded generator.

# %%
binner = tt.BinningTokenizer(vocab, n_bins=51, seed=SEED)
binned = binner.encode(kang[cell_idx : cell_idx + 1])
bin_of = dict(zip(binned[0][1:], binned.values_of(0)[1:]))
rank_of = {t: r for r, t in enumerate(cell_tokens[1:-1])}
side = pd.DataFrame(
    {
        "symbol": [sym[vocab.id_to_token(t)] for t in rank_of],
        "rank (Geneformer)": list(rank_of.values()),
        "bin (scGPT)": [bin_of[t] for t in rank_of],
        "count": [steps["count"].iloc[r] for r in rank_of.values()],
    }
)
side.head(8)

# %% mystnb={"image": {"alt": "Scatter plot of one monocyte's expressed genes: x is the gene's position in the rank-value sequence, y its scGPT expression bin from 1 to 50. Points fall loosely from high bins at the front to low bins at the back with wide spread; horizontal bands of tied genes fill the lowest bins; transcription factors, drawn as blue triangles, sit in low bins but in the first half of the sequence."}}
fig, ax = plt.subplots(figsize=(6, 3.6))
tf_here = np.isin(side["symbol"], list(tfs))
ax.scatter(
    side["rank (Geneformer)"][~tf_here],
    side["bin (scGPT)"][~tf_here],
    s=8,
    alpha=0.5,
    color="0.55",
    label="other genes",
)
ax.scatter(
    side["rank (Geneformer)"][tf_here],
    side["bin (scGPT)"][tf_here],
    s=30,
    marker="^",
    color=OKABE_ITO["blue"],
    label="transcription factors",
)
ax.set(
    xlabel="position in the rank-value sequence", ylabel="scGPT expression bin (1-50)"
)
ax.legend(frameon=False)
plt.tight_layout()
plt.show()
rho = side[["rank (Geneformer)", "bin (scGPT)"]].corr(method="spearman").iloc[0, 1]
glue("c04_rho", float(rho), display=False)

# %% [markdown]
# *Figure: the same monocyte tokenized both ways. Each point is an expressed gene: its place in
# the Geneformer sequence (x) and its scGPT bin (y); triangles are transcription factors.* The
# two agree only loosely (Spearman ρ = {glue:text}`c04_rho:.2f`): bins follow the raw level
# inside the cell, so the high bins hold the same abundant genes in every cell, while the rank
# sequence, after median scaling, puts genes that are high *for them* first. Transcription
# factors, expressed at a few counts, sit in low bins but reach the first half of the rank
# sequence. The horizontal bands are ties: hundreds of genes with one count share the lowest
# bins.
#
# ## 6 What truncation loses
#
# Attention costs grow with the square of the sequence length, so models cut sequences:
# Geneformer V1 at 2,048 genes, V2 at 4,094, scGPT's pretraining at 1,200. Kang cells express
# a few hundred to 2,500 genes, so nothing is cut at 4,094. With shorter limits the tail of
# each sequence goes: the genes least above their usual level.

# %%
rows = []
n_genes = (by_median.lengths - 2).sum()
tf_ids, hk_ids = np.flatnonzero(is_tf), np.flatnonzero(is_hk)
n_tf, n_hk = (
    np.isin(by_median.tokens, tf_ids).sum(),
    np.isin(by_median.tokens, hk_ids).sum(),
)
for max_len in [64, 128, 256, 512, 1024, 2048]:
    short = tt.RankValueTokenizer(vocab, medians, preset="V2", max_len=max_len).encode(
        kang
    )
    short_count = tt.RankValueTokenizer(
        vocab, flat_medians, preset="V2", max_len=max_len
    ).encode(kang)
    rows.append(
        {
            "max_len": max_len,
            "cells cut": short.report["n_cells_truncated"]
            / short.report["n_cells_out"],
            "genes kept": (short.lengths - 2).sum() / n_genes,
            "TFs kept (count/median)": np.isin(short.tokens, tf_ids).sum() / n_tf,
            "TFs kept (count)": np.isin(short_count.tokens, tf_ids).sum() / n_tf,
            "housekeeping kept (count/median)": np.isin(short.tokens, hk_ids).sum()
            / n_hk,
            "housekeeping kept (count)": np.isin(short_count.tokens, hk_ids).sum()
            / n_hk,
        }
    )
trunc = pd.DataFrame(rows).set_index("max_len")
trunc.round(3)

# %% mystnb={"image": {"alt": "Line chart of the fraction of tokens kept against the maximum sequence length from 64 to 2,048 on a log axis. All curves rise towards 1. Housekeeping tokens ranked by count (dotted) are kept most at short lengths and ranked by count over median (dashed) least; transcription-factor tokens are kept more with median scaling than by raw count."}}
fig, ax = plt.subplots(figsize=(6.5, 3.6))
styles = {
    "genes kept": ("-", "o", OKABE_ITO["black"]),
    "TFs kept (count/median)": ("--", "^", OKABE_ITO["blue"]),
    "TFs kept (count)": (":", "^", OKABE_ITO["sky_blue"]),
    "housekeeping kept (count/median)": ("--", "s", OKABE_ITO["orange"]),
    "housekeeping kept (count)": (":", "s", OKABE_ITO["vermillion"]),
}
for col, (ls, mk, c) in styles.items():
    ax.plot(trunc.index, trunc[col], ls=ls, marker=mk, color=c, label=col)
ax.set(
    xscale="log",
    xlabel="maximum sequence length (tokens, incl. <cls>/<eos>)",
    ylabel="fraction kept",
    ylim=(0, 1.05),
)
ax.set_xticks(trunc.index, [str(i) for i in trunc.index])
ax.legend(frameon=False, fontsize=8)
plt.tight_layout()
plt.show()
for col, key in [
    ("genes kept", "genes"),
    ("TFs kept (count/median)", "tf"),
    ("TFs kept (count)", "tf_count"),
    ("housekeeping kept (count/median)", "hk"),
    ("housekeeping kept (count)", "hk_count"),
]:
    glue(f"c04_{key}_256", float(100 * trunc.loc[256, col]), display=False)
assert (np.diff(trunc["genes kept"].to_numpy()) >= 0).all()
assert (
    trunc.loc[256, "housekeeping kept (count/median)"]
    < trunc.loc[256, "housekeeping kept (count)"]
)
assert trunc.loc[256, "TFs kept (count/median)"] >= trunc.loc[256, "TFs kept (count)"]

# %% [markdown]
# *Figure: the fraction of all expressed genes (solid black), of transcription-factor tokens
# (triangles) and of housekeeping tokens (squares) that survive a maximum length, for sequences
# ranked by count divided by median (dashed) or by raw count (dotted).* At 256 tokens the cells
# keep {glue:text}`c04_genes_256:.0f` % of their genes. Ranked by raw counts, the cut would keep
# {glue:text}`c04_hk_count_256:.0f` % of the housekeeping tokens and
# {glue:text}`c04_tf_count_256:.0f` % of the transcription factors; after median scaling it
# keeps {glue:text}`c04_hk_256:.0f` % and {glue:text}`c04_tf_256:.0f` %. Median scaling makes
# the budget go to genes that are high *for them*, not to abundant ones. Whatever the order,
# the cut removes the long tail of genes detected once or twice, and with them the information
# that those genes are *on at all*: a model cannot tell a gene that was cut from one that was
# never expressed.
#
# ## 7 Mouse cells, human words
#
# Our pretrained vocabulary is human. The pancreas data {cite:p}`bastidasponce2019pancreas`
# are mouse, named by mouse symbols (`Neurog3`, `Ins1`). The Ensembl ortholog table maps each
# mouse gene to a human gene; when a mouse gene has several human orthologs, `tflib` prefers the
# one whose symbol is the mouse symbol in capitals, otherwise the first listed. Several mouse
# genes can map to one human gene (*Ins1* and *Ins2* both to *INS*): their counts are added.

# %%
pancreas = tds.load("pancreas")
pancreas.X = pancreas.layers["spliced"]
panc_cov = vocab.coverage(pancreas)
print(panc_cov)
print("mapping steps:", panc_cov.mapping["steps"])
print(
    "mouse genes that share a human gene with another:",
    panc_cov.mapping["n_duplicate_targets"],
)
glue("c04_panc_genes", float(100 * panc_cov.gene_fraction), display=False)
glue("c04_panc_counts", float(100 * panc_cov.count_fraction), display=False)
assert panc_cov.species == "mouse" and panc_cov.count_fraction > 0.8

# %%
panc_medians = tt.gene_medians(pancreas, vocab=vocab)
panc_tok = tt.RankValueTokenizer(vocab, panc_medians, preset="V2")
panc_cells = panc_tok.encode(pancreas)
beta = int(np.flatnonzero(pancreas.obs["clusters"] == "Beta")[0])
first = panc_cells[int(np.searchsorted(panc_cells.obs_index, beta))][1:11]
print("a beta cell's first ten words:", [sym[vocab.id_to_token(t)] for t in first])
print("INS in the vocabulary:", vocab.map_genes(["Ins1", "Ins2"], species="mouse").ids)

# %% [markdown]
# {glue:text}`c04_panc_genes:.0f` % of the mouse genes, carrying
# {glue:text}`c04_panc_counts:.0f` % of the counts, find a human word. The medians here come
# from the pancreas itself: medians from blood would leave pancreatic genes without a median,
# and a gene without a median cannot be ranked. In a real corpus the medians come from all
# tissues together.
#
# ## 8 A corpus on disk
#
# Pretraining (chapter 06) reads millions of cells; they do not fit in memory as AnnData, and
# not at all as Python lists. `encode_to_store` streams an `.h5ad` file in chunks and writes a
# *token store*: all token ids back to back (int32), the offsets where each cell starts, the
# lengths and the cells' metadata. Memory stays bounded by the chunk size. We also save the
# tokenizer, so the model can check it was trained on the same vocabulary and preset.

# %%
kang_path = ARTIFACTS / "04_kang_counts.h5ad"
kang_small = kang.copy()
kang_small.obs = kang_small.obs[["cell_type", "stim"]].astype("category")
kang_small.write_h5ad(kang_path)
store = tokenizer.encode_to_store(
    kang_path, ARTIFACTS / "04_kang.tokens", chunk_size=512, overwrite=True
)
tokenizer.save_pretrained(ARTIFACTS / "04_tokenizer", overwrite=True)
print(store)
print(
    "cell 0:",
    store[0][:6],
    "length",
    store.lengths[0],
    "| obs:",
    dict(store.obs.iloc[0]),
)
assert np.array_equal(store[0], by_median[0]) and len(store) == kang.n_obs
assert tt.load_tokenizer(ARTIFACTS / "04_tokenizer").config() == tokenizer.config()
tokenizer.config()

# %% [markdown]
# The configuration is what a later step compares against: `tflib.pp.tokenize` writes it to
# `adata.uns`, the token store keeps it in `store.json`, and the model checkpoint of chapter 06
# records `vocab_size` and `preset`. Tokens made with the V1 convention have no `<cls>`, and
# id 2 means a gene in V1 but `<cls>` in V2, so mixing them raises an error instead of
# training on garbage.

# %%
v1 = tt.RankValueTokenizer(vocab, medians, preset="V1")
try:
    store.check_compatible(v1)
except tt.TokenizerMismatchError as err:
    print("refused:", str(err)[:160], "...")

# %% [markdown]
# ```{admonition} Caveats: what a rank sentence cannot say
# :class: warning
# - **Levels are gone.** A rank sequence keeps the order of a cell's genes, not how far apart
#   they are: doubling a gene changes nothing unless it overtakes a neighbour (chapter 11
#   meets this as "a rank-only model cannot express dosage").
# - **Ties are broken by a rule.** Hundreds of genes with one or two counts share a value; the
#   tokenizer orders them deterministically, but the order among them carries no biology.
# - **The medians are a choice of corpus.** Median scaling rewards genes that are high *for
#   them*; medians from another corpus (another tissue, another protocol) reorder the same
#   cell. A model must be used with the medians it was trained with, which is why the
#   tokenizer travels with every checkpoint.
# - **The vocabulary decides what exists.** A gene outside it is not low, it is absent; the
#   coverage check measures the share of counts lost, and chapter 06 shows how a vocabulary
#   built from blood and pancreas covers other tissues.
# - **Truncation removes the tail silently.** A gene cut at `max_len` looks exactly like a gene
#   that was never expressed (section 6).
# ```
#
# ## Exercises
#
# Each solution below is also run when the book is built: the hidden cell after it computes
# the answer and checks it with `assert`, and the numbers quoted come from that run.
#
# ```{exercise}
# :label: ex04-ncounts
# Show numerically that the per-cell total does not change the tokens: multiply every count of
# the monocyte `cell_idx` by 7, tokenize it again, and compare. Then explain why the *medians*
# do change if you scale only half of the cells.
# ```
#
# ```{solution} ex04-ncounts
# :class: dropdown
# Tokenize the cell and its 7-fold copy and compare the sequences (code in the hidden cell
# below): they are identical, {glue:text}`c04_ex_len` tokens each. Within one cell every gene
# is multiplied by the same factor, so the order is unchanged. The medians pool *different*
# cells: `gene_medians` divides by each cell's total, which undoes the factor only if
# `n_counts` is recomputed; if half of the cells are scaled but their totals are not (e.g. a
# stale `obs["n_counts"]`), those cells' normalised values are 7 times larger and every median
# moves.
# ```

# %% tags=["hide-input"]
one = kang[cell_idx : cell_idx + 1].copy()
scaled = one.copy()
scaled.X = scaled.X * 7
assert np.array_equal(tokenizer.encode(one)[0], tokenizer.encode(scaled)[0])
glue("c04_ex_len", int(len(tokenizer.encode(one)[0])), display=False)

# %% [markdown]
# ```{exercise}
# :label: ex04-v1v2
# Tokenize the Kang cells with `preset="V1"` and compare each cell with its V2 sequence without
# `<cls>`/`<eos>`. Are they the same? Would they differ for a cell with 3,000 expressed genes?
# ```
#
# ```{solution} ex04-v1v2
# :class: dropdown
# Encode with `v1` and compare each cell with `by_median[i][1:-1]` (hidden cell below). All
# cells agree except the {glue:text}`c04_ex_n_differ` with more than 2,048 expressed genes
# (the longest has {glue:text}`c04_ex_longest` genes): V1 cuts them at 2,048 genes, V2 keeps
# all of them (up to 4,094), and the first 2,048 are the same. A corpus of cells with 3,000
# genes would differ in every cell. The token *ids* mean the same in both only because the two
# tokenizers share one vocabulary: Geneformer's real V1 and V2 dictionaries differ (in V2,
# id 2 is `<cls>`).
# ```

# %% tags=["hide-input"]
c1 = v1.encode(kang)
differ = [i for i in range(len(c1)) if not np.array_equal(c1[i], by_median[i][1:-1])]
n_genes_of = by_median.lengths - 2
# exactly the long cells differ, and only after their first 2,048 genes
assert sorted(differ) == np.flatnonzero(n_genes_of > 2048).tolist()
assert all(np.array_equal(c1[i], by_median[i][1:2049]) for i in differ)
glue("c04_ex_n_differ", len(differ), display=False)
glue("c04_ex_longest", int(n_genes_of.max()), display=False)

# %% [markdown]
# ```{exercise}
# :label: ex04-bins
# Tokenize the monocyte with `BinningTokenizer` seeds 0 and 1. Which genes change bin, and
# what do they have in common? What would happen to a model if the bins were *not* randomised?
# ```
#
# ```{solution} ex04-bins
# :class: dropdown
# Compare `values_of(0)` of the two encodings (hidden cell below):
# {glue:text}`c04_ex_bins_changed` genes change bin, and every one of them shares its count
# with other genes of the cell; {glue:text}`c04_ex_bins_low:.0f` % have a count of 1 or 2.
# Such a value sits on several quantile edges at once and gets a random bin among them.
# Without randomisation they would all land in the same bin, a large block of identical
# values that tells the model nothing and biases it toward that bin.
# ```

# %% tags=["hide-input"]
b0 = tt.BinningTokenizer(vocab, seed=0).encode(kang[cell_idx : cell_idx + 1])
b1 = tt.BinningTokenizer(vocab, seed=1).encode(kang[cell_idx : cell_idx + 1])
assert np.array_equal(b0[0], b1[0])  # same genes in the same order; only bins differ
changed = b0.values_of(0) != b1.values_of(0)
ids_all = vocab.map_genes(list(kang.var_names)).ids
count_of = pd.Series(counts, index=ids_all)
count_of = count_of[(count_of.index >= 0) & (count_of > 0)].groupby(level=0).sum()
changed_counts = count_of.reindex(b0[0][changed])
assert changed.sum() > 0 and changed_counts.notna().all()
# every one shares its count with other genes of the cell: a tied value
assert (changed_counts.map(count_of.value_counts()) > 1).all()
glue("c04_ex_bins_changed", int(changed.sum()), display=False)
glue("c04_ex_bins_low", float(100 * (changed_counts <= 2).mean()), display=False)

# %% [markdown]
# ```{exercise}
# :label: ex04-mouse
# Find three mouse genes of the pancreas data that share a human ortholog with another mouse
# gene, and look up which human gene they map to. Why does `tflib` add their counts instead of
# keeping the first?
# ```
#
# ```{solution} ex04-mouse
# :class: dropdown
# Map the pancreas genes with `species="mouse"` and keep the ids that occur twice (hidden cell
# below): {glue:text}`c04_ex_mouse_n` mouse genes share {glue:text}`c04_ex_mouse_targets`
# human genes. Pairs such as *Pot1a*/*Pot1b* → *POT1* or *Rsph3a*/*Rsph3b* → *RSPH3* (and, in
# general, *Ins1*/*Ins2* → *INS*) come from gene duplications in the mouse lineage; both
# copies make the product that the single human gene makes, so the human-equivalent
# expression is their sum (Geneformer V2 sums duplicated Ensembl IDs in the same way).
# ```

# %% tags=["hide-input"]
ids = vocab.map_genes(list(pancreas.var_names), species="mouse").ids
s = pd.Series(ids[ids >= 0], index=pancreas.var_names[ids >= 0])
shared = s[s.duplicated(keep=False)].sort_values()
human_of = {g: sym[vocab.id_to_token(i)] for g, i in shared.items()}
assert human_of["Pot1a"] == human_of["Pot1b"] == "POT1"
assert human_of["Rsph3a"] == human_of["Rsph3b"] == "RSPH3"
glue("c04_ex_mouse_n", int(len(shared)), display=False)
glue("c04_ex_mouse_targets", int(shared.nunique()), display=False)

# %% [markdown]
# ## Quiz
#
# ```{admonition} 1. A cell is sequenced twice as deeply, so every count doubles. What happens to its token sequence?
# :class: dropdown
# Nothing: every gene's value is multiplied by the same factor, so their order, and hence the
# tokens, stay the same (section 3).
# ```
#
# ```{admonition} 2. In this chapter's run, what share of each cell's first 25 words were housekeeping genes when ranked by raw count, and after dividing by the gene medians?
# :class: dropdown
# {glue:text}`c04_hk_count_top:.0f` % by count and {glue:text}`c04_hk_median_top:.0f` % after
# median scaling: the medians push genes that are high everywhere to the back (section 4).
# ```
#
# ```{admonition} 3. At a maximum length of 256 tokens, what fraction of the expressed genes did the Kang cells keep, and can a model tell a cut gene from an unexpressed one?
# :class: dropdown
# {glue:text}`c04_genes_256:.0f` % of the genes; no: a gene cut at `max_len` is simply absent
# from the sequence, exactly like a gene that was never expressed (section 6).
# ```
#
# ```{admonition} 4. Which of the two encodings needs a statistic of the whole corpus, rank-value or scGPT's bins?
# :class: dropdown
# Rank-value encoding, which divides by each gene's corpus median; scGPT's bins are cut at the
# quantiles of the cell's own values (section 5).
# ```
#
# ```{admonition} 5. Mouse *Ins1* and *Ins2* both map to human *INS*. What does the tokenizer do with their counts?
# :class: dropdown
# It adds them: the two mouse copies together make what the single human gene makes
# (section 7).
# ```
#
# ## Key takeaways
#
# - A cell becomes a document of gene tokens framed by special tokens (`<pad>` 0, `<mask>` 1,
#   `<cls>` 2, `<eos>` 3); the vocabulary, and its coverage of the data, come first.
# - Rank-value encoding sorts genes by `counts / n_counts * 1e4 / median`; the per-cell total
#   cancels within a cell, the gene median does not: it moves transcription factors forward
#   (share of the first 25 words {glue:text}`c04_tf_count_top:.1f` % →
#   {glue:text}`c04_tf_median_top:.1f` %) and housekeeping genes back
#   ({glue:text}`c04_hk_count_top:.0f` % → {glue:text}`c04_hk_median_top:.0f` %).
# - scGPT's bins keep expression levels inside each cell, with no corpus statistic, but follow
#   raw abundance; ties get seeded random bins.
# - Truncation removes the least informative genes first, but it also erases the fact that they
#   were expressed.
# - Mouse genes reach a human vocabulary through orthologs; duplicated genes are summed.
# - At scale, tokenize by streaming into a token store and save the tokenizer's config with the
#   tokens, so that a mismatch (V1 vs V2, another vocabulary) fails loudly.

# %%
tflib.utils.footer(seed=SEED)
