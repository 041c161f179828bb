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
# # 05 The transformer
#
# Chapter 04 turned each cell into a document: a sequence of gene {term}`tokens <token>`,
# most characteristic gene first. This chapter builds the model that reads those documents, a
# {term}`transformer` encoder {cite:p}`vaswani2017attention` with the layout of BERT
# {cite:p}`devlin2019bert`, which is also the layout of Geneformer
# {cite:p}`theodoris2023geneformer`. We start with one attention step on a five-gene toy cell,
# computed by hand, and check that the course library `tflib.models` computes exactly the same
# numbers. Then we assemble the encoder block, count parameters, look at attention maps of real
# cells, and finally show that our model and Hugging Face's `BertForMaskedLM` are the same
# function, so Geneformer checkpoints can be read by `tflib`.
#
# ```{admonition} Learning objectives
# :class: tip
# After this chapter you can
# 1. compute scaled dot-product attention by hand (queries, keys, values, softmax, weighted
#    sum) and state the shape of every intermediate tensor;
# 2. explain what multiple heads and the padding mask do, and why a fused kernel gives the same
#    result as the step-by-step computation;
# 3. read an encoder block (attention, feed-forward network, residuals, post-LayerNorm) and
#    count the parameters of a configuration by hand;
# 4. plot and interpret per-head attention maps of real cells, and say what they do *not* show;
# 5. convert weights between `tflib` and `transformers.BertForMaskedLM` and verify that both
#    compute the same hidden states and logits.
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
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue

import tflib
import tflib.datasets as tds
import tflib.tokenize as tt
import tflib.widgets as tw
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.pl.workflow import OKABE_ITO

SEED = 0
rng = tflib.utils.notebook_setup(SEED)  # seeds, quiet libraries, plot style
torch.set_num_threads(2)
ARTIFACTS = Path("_artifacts")
ARTIFACTS.mkdir(exist_ok=True)
# this chapter is tiny; CPU keeps the numbers comparable
device = tflib.utils.get_device("cpu")
print("device:", device)


pd.set_option("display.float_format", tflib.utils.format_sig)

# %% [markdown]
# ## 1 Attention from scratch
#
# Attention lets every token of a sequence look at every other token and take in a weighted
# mix of what it finds there. For a cell, this means each gene's representation can be updated
# by the other genes expressed in the same cell: a monocyte gene can "notice" that other
# monocyte genes are present.
#
# ### A toy cell of five genes
#
# Our toy cell has five gene tokens. Each token starts as an {term}`embedding`, a vector of
# `D = 4` numbers; in a real model these come from a learned table (section 2), here we write
# them by hand. The first two coordinates mark a *myeloid* program (*LYZ*, *S100A8*, *CD14*),
# the last two a *B-cell* program (*MS4A1*, *CD79A*), plus a little noise.

# %%
genes = ["LYZ", "S100A8", "CD14", "MS4A1", "CD79A"]
g = torch.Generator().manual_seed(SEED)
myeloid, b_cell = [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]
programs = torch.tensor([myeloid] * 3 + [b_cell] * 2)  # (L, D)
x = programs + 0.3 * torch.randn(5, 4, generator=g)  # (L, D) = (5, 4)
L, D = x.shape
pd.DataFrame(x.numpy(), index=genes, columns=[f"dim {i}" for i in range(D)])

# %% [markdown]
# Three learned matrices turn each embedding into three roles:
#
# - a **query** $q_i = x_i W_Q$: what token $i$ is looking for;
# - a **key** $k_j = x_j W_K$: what token $j$ offers to be found by;
# - a **value** $v_j = x_j W_V$: what token $j$ hands over when it is attended to.
#
# We choose $W_Q = W_K$ close to a multiple of the identity, so that a token's query matches
# the keys of tokens with similar embeddings, and a random $W_V$. In a trained model all three
# are learned.

# %%
W_q = 2.0 * torch.eye(D) + 0.1 * torch.randn(D, D, generator=g)  # (D, D)
W_k = W_q.clone()  # (D, D)
W_v = torch.randn(D, D, generator=g)  # (D, D)

Q = x @ W_q  # (L, D) @ (D, D) -> (L, D)
K = x @ W_k  # (L, D)
V = x @ W_v  # (L, D)
print("Q, K, V:", tuple(Q.shape), tuple(K.shape), tuple(V.shape))

# %% [markdown]
# **Scores.** The match between query $i$ and key $j$ is their dot product. All of them at
# once form the $L \times L$ matrix $Q K^\top$. We divide by $\sqrt{d}$, the square root of
# the query/key size: a dot product of $d$ random terms grows like $\sqrt{d}$, and without the
# division large models would feed huge numbers into the softmax (see {ref}`ex-05-scale`).
#
# **Softmax.** Each row of scores becomes a probability distribution over the keys:
# $A_{ij} = \exp(s_{ij}) / \sum_{j'} \exp(s_{ij'})$. Row $i$ says how token $i$ splits its
# attention over the cell.
#
# **Weighted sum.** The output of token $i$ is $\sum_j A_{ij} v_j$, i.e. the matrix product
# $A V$. Altogether:
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V .$$

# %%
scores = Q @ K.T / math.sqrt(D)  # (L, D) @ (D, L) -> (L, L)
A = torch.softmax(scores, dim=-1)  # (L, L), every row sums to 1
out = A @ V  # (L, L) @ (L, D) -> (L, D)
print(
    "scores:",
    tuple(scores.shape),
    "| weights:",
    tuple(A.shape),
    "| output:",
    tuple(out.shape),
)
assert torch.allclose(A.sum(dim=-1), torch.ones(L))
# attention a myeloid gene keeps inside its program
within = A[:3, :3].sum(dim=1).mean().item()
glue("c05_within", 100 * within, display=False)
assert within > 0.8

# %% mystnb={"image": {"alt": "Five by five heat map of attention weights for the toy cell, queries as rows and keys as columns, each cell printed with its weight. The upper-left three by three block (LYZ, S100A8, CD14) is bright and the lower-right two by two block (MS4A1, CD79A) is bright; weights between the two programs are dark."}}
fig, ax = plt.subplots(figsize=(4.6, 3.9))
im = ax.imshow(A.numpy(), cmap="viridis", vmin=0, vmax=1)
for i in range(L):
    for j in range(L):
        ax.text(
            j,
            i,
            f"{A[i, j]:.2f}",
            ha="center",
            va="center",
            color="white" if A[i, j] < 0.5 else "black",
            fontsize=8,
        )
ax.set_xticks(range(L), genes, rotation=45, ha="right")
ax.set_yticks(range(L), genes)
ax.set(xlabel="key (attended to)", ylabel="query (attending)")
fig.colorbar(im, ax=ax, label="attention weight")
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: attention weights of the toy cell. Row $i$ is the distribution of query gene $i$
# over the five keys; each row sums to 1, and the printed numbers repeat the colours.* The
# block structure comes straight from the embeddings: because $W_Q = W_K$, genes of the same
# program have aligned queries and keys. The three myeloid genes keep
# {glue:text}`c05_within:.0f` % of their attention inside their program, so their outputs
# become mixtures of myeloid values. This is how context enters each gene's representation.
#
# ### The same computation in `tflib`
#
# `tflib.models.SelfAttention` holds the three projections as `nn.Linear` layers. A linear
# layer computes $x W^\top + b$, so we copy in the *transposed* matrices and zero biases; with
# one head its per-head size is all of $D$. The readable path `attend_step_by_step` must return
# our weights and output, and the fused path, PyTorch's `scaled_dot_product_attention`, must
# return the same output (it never forms the weight matrix, which is why it is faster and uses
# less memory on long sequences).

# %%
from tflib.models.blocks import SelfAttention

toy_config = TranscriptformerConfig(
    vocab_size=10,
    max_len=8,
    n_layer=1,
    n_head=1,
    n_embd=D,
    n_inner=8,
    dropout=0.0,
    attn_dropout=0.0,
)
attn = SelfAttention(toy_config).eval()
with torch.no_grad():
    for layer, W in [(attn.query, W_q), (attn.key, W_k), (attn.value, W_v)]:
        layer.weight.copy_(W.T)
        layer.bias.zero_()

xb = x[None]  # (B, L, D) = (1, 5, 4)
with torch.no_grad():
    # each (B, H, L, Dh)
    q, k, v = (attn.split_heads(lin(xb)) for lin in (attn.query, attn.key, attn.value))
    # (1, 1, 5, 4) and (1, 1, 5, 5)
    ctx_steps, weights = attn.attend_step_by_step(q, k, v, key_mask=None)
    ctx_fused = attn.attend_fused(q, k, v, key_mask=None)  # (1, 1, 5, 4)
print(
    "per-head q:",
    tuple(q.shape),
    "| weights:",
    tuple(weights.shape),
    "| context:",
    tuple(ctx_steps.shape),
)
torch.testing.assert_close(weights[0, 0], A, rtol=0, atol=1e-6)
torch.testing.assert_close(ctx_steps[0, 0], out, rtol=0, atol=1e-6)
fused_gap = (ctx_fused - ctx_steps).abs().max().item()
glue("c05_fused_gap", fused_gap, display=False)
print(
    "step-by-step vs by hand: equal | fused vs step-by-step:",
    f"max |diff| = {fused_gap:.1e}",
)
assert fused_gap < 1e-6

# %% [markdown]
# The library reproduces our hand computation, and the fused kernel agrees with it to
# {glue:text}`c05_fused_gap:.1e` (floating-point rounding: it sums in a different order). Here
# is the real class. Besides the two attention paths it has an output projection `proj`, a
# residual connection and a LayerNorm (section 2), and `split_heads`, which we turn to next.
#
# ```{literalinclude} ../tflib/models/blocks.py
# :language: python
# :pyobject: SelfAttention
# ```
#
# Two shortcuts in `forward` serve later chapters and change no number. `attend_one_query`
# runs attention for the first position only (`<cls>`, whose state is the cell embedding of
# chapter 07): since a score is $q \cdot (W_K x_j + b_K)$, it multiplies $q$ by $W_K$ once
# and takes dot products with the inputs themselves, so no key and no value is ever projected.
# `rows` lets a batch pass each distinct (token, position) input only once through the three
# projections; chapter 11 uses it, because the hundreds of perturbed copies of one cell share
# almost all of those pairs. We check the first shortcut on the toy cell.

# %%
with torch.no_grad():
    ctx_one, w_one = attn.attend_one_query(xb, key_mask=None)  # (1, 1, 1, 4), (1, 1, 1, 5)
torch.testing.assert_close(ctx_one[0, 0, 0], ctx_steps[0, 0, 0], rtol=0, atol=1e-6)
torch.testing.assert_close(w_one[0, 0, 0], weights[0, 0, 0], rtol=0, atol=1e-6)
print("<cls> by the one-query path: same weights and output as row 0 above")

# %% [markdown]
# ### Heads and padding
#
# **Multi-head attention** cuts the $D$ coordinates into $H$ slices of $D_h = D / H$ and runs
# the computation above on each slice independently, with its own weights, so one head can
# follow a co-expression program while another follows something else. `split_heads` only
# reshapes `(B, L, D)` into `(B, H, L, Dh)`; the outputs of the heads are concatenated back and
# mixed by `proj`. The cost is the same as one big head.
#
# **Padding.** Cells have different numbers of expressed genes, so a batch is padded on the
# right with `<pad>` tokens. The key mask sets the scores of padding keys to the most negative
# float before the softmax, so they get zero weight: real tokens never read padding. We check
# it by appending two padding positions to the toy cell.

# %%
# (1, 7, 4): two junk positions
x_pad = torch.cat([xb, torch.randn(1, 2, D, generator=g)], dim=1)
key_mask = torch.tensor([[True] * 5 + [False] * 2])  # (B, L), True = real token
with torch.no_grad():
    qp, kp, vp = (
        attn.split_heads(lin(x_pad)) for lin in (attn.query, attn.key, attn.value)
    )
    ctx_pad, w_pad = attn.attend_step_by_step(qp, kp, vp, key_mask)
    ctx_pad_fused = attn.attend_fused(qp, kp, vp, key_mask)
print("weight on padding keys:", w_pad[0, 0, :, 5:].abs().max().item())
assert w_pad[0, 0, :, 5:].abs().max() == 0
torch.testing.assert_close(ctx_pad[0, 0, :5], out, rtol=0, atol=1e-6)
assert (ctx_pad_fused - ctx_pad).abs().max() < 1e-6

# %% [markdown]
# ## 2 The encoder block
#
# Attention alone only mixes values. An encoder **block** wraps it in three more ingredients:
#
# - a **residual connection**: the block adds its result to its input, $x + f(x)$, so
#   information (and gradients) can pass through many layers unchanged;
# - **LayerNorm**: after each addition, every token's vector is rescaled to mean 0 and variance
#   1 and then given a learned scale and shift. BERT and Geneformer normalise *after* the
#   residual addition (post-LN); many newer models normalise before it (pre-LN), which trains
#   more stably when deep. We keep post-LN so that Geneformer's weights mean the same here;
# - a **feed-forward network** (FFN, `MLP` in the code): two linear layers with an activation
#   in between, applied to every token separately. It widens each vector from $D$ to $F$ and
#   back; Geneformer V1 uses ReLU, BERT GELU.
#
# In formulas, one block computes
#
# $$h = \operatorname{LN}\big(x + \operatorname{Proj}(\operatorname{Attention}(x))\big), \qquad
#   y = \operatorname{LN}\big(h + W_2\, \phi(W_1 h)\big).$$
#
# ```{literalinclude} ../tflib/models/blocks.py
# :language: python
# :pyobject: MLP
# ```
#
# ```{literalinclude} ../tflib/models/blocks.py
# :language: python
# :pyobject: Block
# ```
#
# To make sure the formulas are the code, we rebuild a randomly initialised block by hand from
# its parts and compare.

# %%
from tflib.models.blocks import Block

block_config = TranscriptformerConfig(
    vocab_size=10,
    max_len=16,
    n_layer=1,
    n_head=2,
    n_embd=8,
    n_inner=16,
    dropout=0.0,
    attn_dropout=0.0,
)
block = Block(block_config).eval()
for p in block.parameters():  # random, not the LayerNorm's default 1 and 0
    torch.nn.init.normal_(p, std=0.3, generator=g)
xs = torch.randn(1, 6, 8, generator=g)  # (B, L, D)

with torch.no_grad():
    a = block.attn
    # each (B, H, L, Dh)
    heads = [
        t.view(1, 6, 2, 4).transpose(1, 2)
        for t in (a.query(xs), a.key(xs), a.value(xs))
    ]
    scores = heads[0] @ heads[1].transpose(-2, -1) / math.sqrt(4)  # (B, H, L, L)
    w = torch.softmax(scores, dim=-1)
    ctx = (w @ heads[2]).transpose(1, 2).reshape(1, 6, 8)  # heads concatenated
    h = a.ln(xs + a.proj(ctx))  # residual, post-LN
    ffn = block.mlp.proj(torch.relu(block.mlp.fc(h)))
    y = block.mlp.ln(h + ffn)  # FFN, residual, LN
    y_lib, _ = block(xs)
torch.testing.assert_close(y_lib, y, rtol=0, atol=1e-5)
print("block by hand == tflib Block | output shape", tuple(y.shape))

# %% [markdown]
# ### The whole model and its configuration
#
# The full `Transcriptformer` is: an embedding layer (a gene table with one learned vector per
# token, plus a position table that tells the model each gene's *rank*, plus LayerNorm), a
# stack of `n_layer` blocks, and a masked-language-model head that maps each output vector to
# scores over the vocabulary. The head's last matrix is the gene table itself (weight tying).
# Every size is in one dataclass, whose defaults describe Geneformer V1-10M:
#
# ```{literalinclude} ../tflib/models/blocks.py
# :language: python
# :pyobject: TranscriptformerConfig
# ```
#
# Parameters can be counted by hand. With vocabulary $V$, maximum length $L_{max}$, hidden size
# $D$, FFN size $F$ and $N$ layers: the embeddings have $(V + L_{max} + 2) D$ weights plus a
# LayerNorm ($2D$); each block has four $D \times D$ attention matrices with biases
# ($4D^2 + 4D$), the FFN ($2DF + F + D$) and two LayerNorms ($4D$); the head has a $D \times D$
# layer, a LayerNorm and one bias per token ($D^2 + 3D + V$), its big matrix being shared.
# We compare the Geneformer-V1-like default with the configuration of the course checkpoint
# (chapter 06: 2 layers of width 128, a vocabulary of 11,964 genes plus 4 special tokens, at most
# 128 tokens per cell), and with the same small model over the full GENCODE vocabulary of
# chapter 04 (62,758 tokens).


# %%
def count_by_hand(c: TranscriptformerConfig) -> dict:
    D, F, V = c.n_embd, c.n_inner, c.vocab_size
    return {
        "embeddings": (V + c.max_len + c.type_vocab_size) * D + 2 * D,
        "blocks": c.n_layer * (4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D),
        "MLM head": D * D + 3 * D + V,
    }


configs = {
    "Geneformer V1-10M-like": TranscriptformerConfig(),
    "course checkpoint": TranscriptformerConfig(
        vocab_size=11_968,
        max_len=128,
        n_layer=2,
        n_head=4,
        n_embd=128,
        n_inner=256,
        activation="gelu",
    ),
}
configs["course, GENCODE vocabulary"] = TranscriptformerConfig(
    **{**configs["course checkpoint"].to_dict(), "vocab_size": 62_758}
)
rows = {}
for name, c in configs.items():
    parts = count_by_hand(c)
    n_model = Transcriptformer(c).num_parameters()
    assert sum(parts.values()) == n_model, (name, parts, n_model)
    rows[name] = {
        **parts,
        "total": n_model,
        "layers x hidden": f"{c.n_layer} x {c.n_embd}",
        "vocabulary": c.vocab_size,
    }
params = pd.DataFrame(rows).T
glue(
    "c05_gf_params", params.loc["Geneformer V1-10M-like", "total"] / 1e6, display=False
)
glue("c05_small_params", params.loc["course checkpoint", "total"] / 1e6, display=False)
glue(
    "c05_big_vocab_params",
    params.loc["course, GENCODE vocabulary", "total"] / 1e6,
    display=False,
)
emb_share = {k: r["embeddings"] / r["total"] for k, r in rows.items()}
glue("c05_gf_emb", 100 * emb_share["Geneformer V1-10M-like"], display=False)
glue("c05_small_emb", 100 * emb_share["course checkpoint"], display=False)
glue("c05_big_vocab_emb", 100 * emb_share["course, GENCODE vocabulary"], display=False)
assert emb_share["course, GENCODE vocabulary"] > 0.9
params

# %% mystnb={"image": {"alt": "Stacked horizontal bars of parameter counts in millions for three configurations, split into embeddings (blue, hatched), encoder blocks (orange) and MLM head (green, dotted). The course model with the full GENCODE vocabulary is the longest bar and is almost all embeddings; in the Geneformer-like model and the course checkpoint the embeddings are also the largest part."}}
fig, ax = plt.subplots(figsize=(7, 2.8))
left = np.zeros(len(params))
for part, colour, hatch in [
    ("embeddings", OKABE_ITO["blue"], "//"),
    ("blocks", OKABE_ITO["orange"], ""),
    ("MLM head", OKABE_ITO["green"], ".."),
]:
    vals = params[part].astype(float).to_numpy() / 1e6
    ax.barh(
        params.index,
        vals,
        left=left,
        color=colour,
        hatch=hatch,
        edgecolor="k",
        label=part,
    )
    left += vals
ax.set_xlabel("parameters (millions)")
ax.legend(frameon=False, ncol=3, loc="lower right", bbox_to_anchor=(1, 1))
plt.tight_layout()
plt.show()

# %% [markdown]
# *Figure: where the parameters of the three configurations sit: the embedding tables (blue,
# hatched), the encoder blocks (orange) and the MLM head (green, dotted).* The Geneformer-like
# model has {glue:text}`c05_gf_params:.2f` million parameters, the course checkpoint
# {glue:text}`c05_small_params:.2f` million; the hand count matches `num_parameters()` exactly.
# In small models the gene table dominates: embeddings are {glue:text}`c05_gf_emb:.0f` % of the
# Geneformer-like model and {glue:text}`c05_small_emb:.0f` % of the course checkpoint. Give the
# course model the full GENCODE vocabulary and it grows to
# {glue:text}`c05_big_vocab_params:.1f` million parameters, {glue:text}`c05_big_vocab_emb:.0f` %
# of them in the table, without computing anything more per token. Restricting the vocabulary
# to the genes a corpus expresses is the cheapest way to shrink a small model; compute per
# token is set by the blocks (it grows with $D^2$, and attention with the square of the
# sequence length).
#
# ## 3 Attention maps of real cells
#
# Now real documents, read by a model that has learned something: the course checkpoint, a
# 2-layer Transcriptformer pretrained with masked-gene modelling on Kang PBMCs, mouse pancreas
# cells (through orthologs) and simulator cells. Chapter 06 shows how it was trained; here we
# only load it with `tflib.models.course_checkpoint()`, which also returns the tokenizer it was
# trained with (about 12,000 genes, at most 128 tokens per cell). Attention maps are only meaningful
# with the model's own tokenizer, so we use it rather than chapter 04's. As a reference we build
# a randomly initialised model of the same architecture. Both return their attention weights
# with `output_attentions=True`, which routes attention through the step-by-step path.

# %%
from tflib.models import course_checkpoint

model, ck_tokenizer = course_checkpoint(device=device)
torch.manual_seed(SEED)
# same architecture, untrained
random_model = Transcriptformer(model.config).to(device).eval()
vocab = ck_tokenizer.vocab
print(model.config)
print(ck_tokenizer)

kang = tds.load("kang_pbmc")
cell_types = ["CD14 Mono", "B", "CD4 Naive T"]
cells = [int(np.flatnonzero(kang.obs["cell_type"] == ct)[0]) for ct in cell_types]
# the course vocabulary keeps the ~12,000 genes seen in >= 10 cells of a corpus
# source; Kang's others carry few counts. The default coverage check is on counts
# (chapter 04).
tokens = ck_tokenizer.encode(kang[cells])
ids_of_kang = vocab.map_genes(list(kang.var_names)).ids
symbol_of = {int(i): s for i, s in zip(ids_of_kang, kang.var_names) if i >= 0}
symbol_of.update({vocab.cls_id: "<cls>", vocab.eos_id: "<eos>", vocab.pad_id: "<pad>"})
print("sequence lengths:", tokens.lengths.tolist())
for i, ct in enumerate(cell_types):
    print(f"{ct:12s}", [symbol_of.get(t, vocab.id_to_token(t)) for t in tokens[i][1:9]])

# %% [markdown]
# Only some of the first words are cell-type markers (*CD74*, the MHC-II chaperone, leads the
# B cell; *S100A4* is among the monocyte's first words). This tokenizer's medians come from the
# mixed course corpus (blood, pancreas, simulator), not from blood alone as in chapter 04, and
# its 128-token budget keeps each cell's top 126 genes only.

# %%
padded_tokens = tokens.padded(pad_id=vocab.pad_id)
input_ids = torch.as_tensor(padded_tokens, dtype=torch.long).to(device)  # (3, L)
with torch.no_grad():  # first-layer weights, each (B, H, L, L)
    att = model(input_ids, output_attentions=True, logits=None).attentions[0].cpu()
    out_random = random_model(input_ids, output_attentions=True, logits=None)
    att_random = out_random.attentions[0].cpu()
n_seq = input_ids.shape[1]
print("first layer:", tuple(att.shape))


def row_entropy_ratio(w):
    """Entropy of each attention row over that of uniform attention (1 = uniform)."""
    ent = -(w.clamp_min(1e-12) * w.clamp_min(1e-12).log()).sum(-1)
    return ent / math.log(w.shape[-1])


ent = pd.DataFrame(
    {
        "trained": row_entropy_ratio(att).mean(dim=(0, 2)).numpy(),
        "random": row_entropy_ratio(att_random).mean(dim=(0, 2)).numpy(),
    },
    index=pd.Index([f"head {h}" for h in range(att.shape[1])], name="first layer"),
)
glue("c05_ent_random", float(ent["random"].mean()), display=False)
glue("c05_ent_trained_min", float(ent["trained"].min()), display=False)
glue("c05_ent_trained_max", float(ent["trained"].max()), display=False)
glue("c05_max_random", att_random.max().item(), display=False)
glue("c05_uniform", 1 / n_seq, display=False)
glue("c05_n_seq", n_seq, display=False)
glue("c05_max_trained", att.max().item(), display=False)
glue("c05_max_ratio", att.max().item() * n_seq, display=False)
assert ent["random"].min() > 0.99 and att_random.max() < 3 / n_seq
assert ent["trained"].mean() < ent["random"].mean() and att.max() > 10 / n_seq
ent

# %% mystnb={"image": {"alt": "Grid of first-layer attention heat maps for the CD14 monocyte over its cls token and 15 top-ranked genes, one column per head. Top row, random model: every panel is a flat, uniform dark colour. Bottom row, course checkpoint: the panels show bright vertical stripes, where most queries read from the same few keys, and the heads differ from one another."}}
n_top = 16
labels = [symbol_of.get(t, vocab.id_to_token(t)) for t in input_ids[0, :n_top].tolist()]
n_head = att.shape[1]
fig, axes = plt.subplots(2, n_head, figsize=(3 * n_head, 6.4), sharex=True, sharey=True)
vmax = float(att[0, :, :n_top, :n_top].max())
for row, (name, w) in enumerate([("random", att_random), ("trained", att)]):
    for h in range(n_head):
        ax = axes[row, h]
        im = ax.imshow(
            w[0, h, :n_top, :n_top].numpy(), cmap="viridis", vmin=0, vmax=vmax
        )
        ax.set_title(f"{name}, head {h}", fontsize=9)
        ax.set_xticks(range(n_top), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n_top), labels, fontsize=7)
fig.colorbar(im, ax=axes, label="attention weight", shrink=0.8)
plt.show()

# %% [markdown]
# *Figure: first-layer attention for the CD14 monocyte, one panel per head, restricted to
# `<cls>` and the 15 top-ranked genes (rows: queries, columns: keys); top row a randomly
# initialised model, bottom row the course checkpoint, on one colour scale.* The untrained model
# attends almost uniformly: every weight is close to {glue:text}`c05_uniform:.3f`, the value
# for uniform attention over the cell's {glue:text}`c05_n_seq` tokens (the largest is
# {glue:text}`c05_max_random:.3f`), and its rows' entropy is {glue:text}`c05_ent_random:.4f` of
# the maximum. With initial weights of standard deviation 0.02, queries and keys are tiny, all
# scores are near 0, and the softmax of near-equal scores is near-uniform: each gene receives
# the *average* of the cell and the heads are indistinguishable. The course checkpoint is only
# somewhat less uniform on average (row entropy {glue:text}`c05_ent_trained_min:.2f` to
# {glue:text}`c05_ent_trained_max:.2f` of the maximum, per head), but single weights reach
# {glue:text}`c05_max_trained:.2f`, {glue:text}`c05_max_ratio:.0f` times the uniform value, and
# the heads no longer look alike. Most of their structure is vertical stripes: nearly every
# gene reads from the same few keys (`<cls>` and a handful of genes), whatever the query.
# All of that was put there by pretraining. Keep the scale in mind: this is a model of
# 1.8 million parameters trained on 68 million tokens from some 5,000 cells (51 minutes on 2
# CPU cores, chapter 06), not Geneformer after 30 million cells, so expect far less structure
# than in published maps.

# %% [markdown]
# ```{admonition} Caveat: attention is not explanation
# :class: warning
# Even in a trained model, an attention weight says where a head *read from* in one layer, not
# why the model made its prediction. Later layers mix everything again, values can be small
# even where weights are large, and several heads can do the same job. Chapter 13 scores
# attention-derived regulator candidates against a known gene network instead of trusting the
# maps by eye.
# ```
#
# ### Explore layers and heads
#
# The figure above shows the first layer only. `tflib.widgets.attention_explorer` computes a
# cell's attention in every layer and head once and draws the one you pick; in Jupyter or
# Colab `att_explorer.show()` gives two dropdowns, and the book shows the second (last) layer's
# heads for the same monocyte, on one colour scale for all layers and heads.

# %%
att_explorer = tw.attention_explorer(
    model, ck_tokenizer, kang, cell=cells[0], n_tokens=n_top
)
# the explorer's first layer is the map above (the cell alone = the cell in its padded batch)
for h in range(n_head):
    np.testing.assert_allclose(
        att_explorer.matrix((0, h)), att[0, h, :n_top, :n_top].numpy(), atol=1e-5
    )
last = att_explorer.n_layer - 1
glue("c05_last_max", float(att_explorer.weights[last].max()), display=False)
glue("c05_first_max", float(att_explorer.weights[0].max()), display=False)
# share of each last-layer head's weight on the query's own rank and its two neighbours
L_cell = att_explorer.weights.shape[-1]
near = np.abs(np.subtract.outer(np.arange(L_cell), np.arange(L_cell))) <= 1
band = [float(w[1:][near[1:]].sum() / (L_cell - 1)) for w in att_explorer.weights[last]]
band_head = int(np.argmax(band))
band_rest = max(b for h, b in enumerate(band) if h != band_head)
assert band[band_head] > 0.3 and band[band_head] > 5 * band_rest
glue("c05_band_head", band_head, display=False)
glue("c05_band_share", 100 * band[band_head], display=False)
glue("c05_band_rest", 100 * band_rest, display=False)
glue("c05_band_uniform", 100 * 3 / L_cell, display=False)

# %% tags=["skip-execution"]
# interactive: dropdowns for layer and head (Jupyter, Colab; not run in the book)
att_explorer.show()

# %% mystnb={"image": {"alt": "Four attention heat maps of the course checkpoint's second layer for the CD14 monocyte, one per head, each over the cls token and the 15 top-ranked genes with queries as rows and keys as columns. Three heads spread their weight thinly with a few faint columns; one head shows a bright band along the diagonal, where each gene attends mostly to itself and to the genes ranked just before and after it."}}
fig = att_explorer.static([(last, h) for h in range(n_head)], ncols=4)
plt.show()

# %% [markdown]
# *Figure: second-layer attention of the course checkpoint for the same monocyte, one panel
# per head (static view of the attention explorer).* The largest weight of the cell is
# {glue:text}`c05_first_max:.2f` in the first layer and {glue:text}`c05_last_max:.2f` in the
# second. One second-layer head, head {glue:text}`c05_band_head`, is positional: it puts
# {glue:text}`c05_band_share:.0f` % of its weight on the query's own rank and the two ranks
# next to it (uniform attention would put {glue:text}`c05_band_uniform:.1f` % there), while
# the other heads put at most {glue:text}`c05_band_rest:.1f` % there. Neighbouring ranks hold
# genes with similar `count / median`, so this head mixes each gene with the genes at a
# similar relative level in the same cell.
#
# ## 4 Parity with Hugging Face BERT
#
# Geneformer's checkpoints are `transformers.BertForMaskedLM` models. If `tflib` computes the
# same function from the same weights, everything in this course applies to them. We build a
# small `BertForMaskedLM` locally from a `BertConfig` (no download), copy its weights into a
# `Transcriptformer` with `from_hf_bert`, and compare every hidden state and the MLM logits on
# a padded batch.

# %%
from transformers import BertConfig, BertForMaskedLM
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
torch.manual_seed(SEED)
bert_config = BertConfig(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_act="relu",
    max_position_embeddings=128,
    pad_token_id=0,
)
hf_model = BertForMaskedLM(bert_config).eval()
ours = Transcriptformer.from_hf_bert(hf_model).eval()
print(ours.config)

ids = torch.randint(4, 300, (4, 40), generator=g)
ids[1, 30:] = 0
ids[2, 12:] = 0  # right padding, as the tokenizer makes it
mask = (ids != 0).long()
with torch.no_grad():
    ref = hf_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    mine = ours(ids, mask, output_hidden_states=True, logits="all")
hidden_gap = max(
    (a - b).abs().max().item() for a, b in zip(ref.hidden_states, mine.hidden_states)
)
logit_gap = (ref.logits - mine.logits).abs().max().item()
glue("c05_hidden_gap", hidden_gap, display=False)
glue("c05_logit_gap", logit_gap, display=False)
print(
    f"{len(mine.hidden_states)} hidden states, max |diff| = {hidden_gap:.1e}; "
    f"logits {tuple(mine.logits.shape)}, "
    f"max |diff| = {logit_gap:.1e}"
)
assert (
    len(ref.hidden_states)
    == len(mine.hidden_states)
    == bert_config.num_hidden_layers + 1
)
assert hidden_gap < 1e-5 and logit_gap < 1e-5

# %% [markdown]
# And back: `to_hf_bert` turns a `Transcriptformer` into a `BertForMaskedLM`. We take a fresh
# `tflib` model (so no weight could have come from HF), convert it, and compare again, once
# against HF's default attention and once against its step-by-step (`"eager"`) implementation.

# %%
torch.manual_seed(SEED + 1)
fresh = Transcriptformer(
    TranscriptformerConfig(
        vocab_size=300,
        max_len=128,
        n_layer=3,
        n_head=4,
        n_embd=64,
        n_inner=128,
        activation="gelu",
    )
).eval()
with torch.no_grad():
    ours_logits = fresh(ids, mask, logits="all").logits
    back_gaps = {}
    for impl in (None, "eager"):
        hf_back = fresh.to_hf_bert(attn_implementation=impl).eval()
        back_gaps[impl or hf_back.config._attn_implementation] = (
            (hf_back(input_ids=ids, attention_mask=mask).logits - ours_logits)
            .abs()
            .max()
            .item()
        )
print({k: f"{v:.1e}" for k, v in back_gaps.items()})
assert max(back_gaps.values()) < 1e-5
n_tensors = len(hf_back.state_dict())
print(
    f"{type(hf_back).__name__} with {n_tensors} tensors; "
    f"{fresh.num_parameters():,} parameters in tflib, "
    f"{hf_back.num_parameters():,} in HF"
)
assert fresh.num_parameters() == hf_back.num_parameters()

# %% [markdown]
# Hidden states agree to {glue:text}`c05_hidden_gap:.1e` and logits to
# {glue:text}`c05_logit_gap:.1e`: the differences are float32 rounding, far below the 1e-5
# tolerance the unit tests use in both directions. The conversion is a one-to-one renaming of
# tensors (`tflib.models.hf.key_map`); nothing is re-initialised, and a checkpoint whose MLM
# decoder is not tied to its gene table is refused rather than silently altered. To read a
# Geneformer folder saved by `transformers`, use `tflib.models.from_hf_dir(path)`.
#
# ## Caveats
#
# - **Attention weights are not explanations.** A map shows which tokens a head mixed into a
#   position; it does not show that removing a gene would change the output (chapter 13).
# - **Position means rank here.** Rank-value tokens put highly expressed genes first, so a
#   head that attends by position also attends by expression level; the two cannot be told
#   apart from a map alone.
# - **Parity is numerical, not behavioural.** Matching Hugging Face BERT's outputs to a small
#   tolerance checks the arithmetic of one configuration; other options (another attention
#   implementation, half precision) need their own check.
# - **Small model, small context.** The course model reads a short sentence per cell; genes
#   ranked behind its context are invisible to every head (chapter 11 measures what that
#   costs).
#
# ## Exercises
#
# Each solution below is also run when the book is built: the hidden cell after it computes
# the answer and checks it with `assert`, and the numbers quoted come from that run.
#
# ```{exercise}
# :label: ex-05-scale
# Why divide by $\sqrt{d}$? Draw random queries and keys with standard-normal entries for
# $d = 4, 64, 1024$, compute the attention weights of 16 tokens with and without the division,
# and compare the largest weight per row. What happens to the gradients of a softmax that has
# saturated?
# ```
#
# ```{solution} ex-05-scale
# :class: dropdown
# The hidden cell below draws the queries and keys. At $d = 1024$ the largest weight per row
# averages {glue:text}`c05_ex_raw_1024:.2f` without the division and
# {glue:text}`c05_ex_scaled_1024:.2f` with it (at $d = 4$: {glue:text}`c05_ex_raw_4:.2f` and
# {glue:text}`c05_ex_scaled_4:.2f`). Unscaled dot products have standard deviation
# $\sqrt{d}$, so with growing $d$ each row puts almost all its weight on one key. A saturated
# softmax has gradients near zero for every score, so the queries and keys stop learning.
# Dividing by $\sqrt{d}$ keeps the scores at unit scale whatever the head size.
# ```

# %% tags=["hide-input"]
gen = torch.Generator().manual_seed(0)
largest = {}
for d in (4, 64, 1024):
    q, k = torch.randn(16, d, generator=gen), torch.randn(16, d, generator=gen)
    raw = torch.softmax(q @ k.T, -1).amax(-1).mean().item()
    scaled = torch.softmax(q @ k.T / math.sqrt(d), -1).amax(-1).mean().item()
    largest[d] = (raw, scaled)
assert largest[4][0] < largest[64][0] < largest[1024][0] and largest[1024][0] > 0.9
assert max(v[1] for v in largest.values()) < 1.5 * min(v[1] for v in largest.values())
for d in (4, 1024):
    glue(f"c05_ex_raw_{d}", largest[d][0], display=False)
    glue(f"c05_ex_scaled_{d}", largest[d][1], display=False)

# %% [markdown]
# ```{exercise}
# :label: ex-05-order
# Self-attention by itself does not know the order of the tokens. Show it: permute the five
# toy genes, recompute `out`, and compare with `out` permuted in the same way. Then use the
# course checkpoint `model` of section 3 to show that the *full* model does depend on order.
# Which part of it is responsible, and why does rank-value encoding need it?
# ```
#
# ```{solution} ex-05-order
# :class: dropdown
# Permuting the toy genes permutes `out` in the same way (hidden cell below): attention only
# compares contents. Shuffling the genes of the monocyte behind `<cls>` changes the model's
# `<cls>` output by up to {glue:text}`c05_ex_order_gap:.2f`, because the embedding layer adds
# a *position* vector to each gene vector. In rank-value encoding the position *is* the
# information about expression (a gene at position 3 is far above its usual level, one at
# position 900 barely): without position embeddings the model would see a set of expressed
# genes and nothing about their levels.
# ```

# %% tags=["hide-input"]
perm = torch.tensor([3, 0, 4, 1, 2])
xp = x[perm]
out_p = torch.softmax((xp @ W_q) @ (xp @ W_k).T / math.sqrt(D), -1) @ (xp @ W_v)
assert torch.allclose(out_p, out[perm], atol=1e-6)  # permutation-equivariant

seq = input_ids[:1, :20]
order = torch.randperm(19, generator=torch.Generator().manual_seed(SEED))
shuffled = torch.cat([seq[:, :1], seq[:, 1:][:, order]], dim=1)  # keep <cls> first
with torch.no_grad():
    a = model(seq, logits=None).last_hidden_state[0, 0]
    b = model(shuffled, logits=None).last_hidden_state[0, 0]
order_gap = (a - b).abs().max().item()
assert order_gap > 1e-2  # clearly non-zero: the full model reads the order
glue("c05_ex_order_gap", order_gap, display=False)

# %% [markdown]
# ```{exercise}
# :label: ex-05-padding
# Batches are padded to the longest cell. Check that padding does not change a cell's result:
# take the first 32 tokens of the B cell of section 3 as a short cell, run it alone and padded
# with 30 `<pad>` tokens, and compare
# the hidden states of the real tokens. Does it still hold with `fused_attention=False`, and if
# you pass an `attention_mask` of all ones?
# ```
#
# ```{solution} ex-05-padding
# :class: dropdown
# With the default mask (built from `<pad>`) the largest difference is
# {glue:text}`c05_ex_pad_gap:.1e`, zero or rounding level (hidden cell below): padding keys get zero weight, and position vectors
# depend only on the index, which is the same for real tokens. Setting
# `model.config.fused_attention = False` is not enough to switch paths, because each attention
# layer read the flag when it was built; set `blk.attn.fused = False` on every block instead,
# and the gap stays at {glue:text}`c05_ex_pad_gap_steps:.1e`. With an all-ones mask the padding
# tokens are treated as genes and the real tokens attend to them: the hidden states change by
# up to {glue:text}`c05_ex_pad_gap_ones:.2f`. The mask is what makes padding harmless.
# ```

# %% tags=["hide-input"]
alone = input_ids[1:2, :32]  # (1, 32): a short cell
padded = torch.cat([alone, torch.zeros(1, 30, dtype=torch.long)], dim=1)  # (1, 62)


def padding_gaps():
    with torch.no_grad():
        h1 = model(alone, logits=None).last_hidden_state
        h2 = model(padded, logits=None).last_hidden_state[:, :32]
        h3 = model(padded, torch.ones_like(padded), logits=None).last_hidden_state[
            :, :32
        ]
    return (h1 - h2).abs().max().item(), (h1 - h3).abs().max().item()


pad_gap, ones_gap = padding_gaps()
blocks = model.encoder.blocks
fused_before = [blk.attn.fused for blk in blocks]
for blk in blocks:
    blk.attn.fused = False
try:
    pad_gap_steps, _ = padding_gaps()
finally:
    for blk, f in zip(blocks, fused_before):
        blk.attn.fused = f
assert pad_gap < 1e-4 and pad_gap_steps < 1e-4 and ones_gap > 1e-2
glue("c05_ex_pad_gap", pad_gap, display=False)
glue("c05_ex_pad_gap_steps", pad_gap_steps, display=False)
glue("c05_ex_pad_gap_ones", ones_gap, display=False)

# %% [markdown]
# ## Quiz
#
# ```{admonition} 1. A query of dimension 64 attends over 10 keys. What shape has the weight matrix for a sequence of 10 tokens, and what does each row sum to?
# :class: dropdown
# $10 \times 10$, one row per query, and each row sums to 1: it is a softmax over the keys
# (section 1).
# ```
#
# ```{admonition} 2. In the toy cell, what share of their attention did the three myeloid genes keep inside their program, and why?
# :class: dropdown
# {glue:text}`c05_within:.0f` %: with $W_Q = W_K$ close to a multiple of the identity, genes
# with similar embeddings have matching queries and keys (section 1).
# ```
#
# ```{admonition} 3. What share of the Geneformer-V1-like model's parameters sits in its embedding tables, and what would shrink a small model most?
# :class: dropdown
# {glue:text}`c05_gf_emb:.0f` %; restricting the vocabulary to the genes the corpus expresses,
# since the gene table grows with the vocabulary, not with the depth (section 2).
# ```
#
# ```{admonition} 4. The untrained model's attention rows have nearly maximal entropy. What does that mean, and does a bright attention weight in a trained model explain a prediction?
# :class: dropdown
# Near-uniform attention: every gene receives the average of the cell (here
# {glue:text}`c05_ent_random:.4f`). No: an attention weight says where one head read from in
# one layer, not why the model decided (the caveat of section 3).
# ```
#
# ```{admonition} 5. Why must padded positions get zero attention weight, and what makes them do so?
# :class: dropdown
# Otherwise real tokens would read the padding and a cell's result would depend on the
# length of its batch; the key mask sets padding scores to the most negative float before the
# softmax ({ref}`ex-05-padding`).
# ```
#
# ## Key takeaways
#
# - Attention is $\operatorname{softmax}(Q K^\top / \sqrt{d})\, V$: every token takes a
#   weighted average of the values of all tokens, weighted by how well its query matches their
#   keys. On the toy cell, genes of one program attended to each other
#   ({glue:text}`c05_within:.0f` % of their attention).
# - `tflib`'s `SelfAttention` reproduces the hand computation exactly; the fused
#   `scaled_dot_product_attention` path agrees within {glue:text}`c05_fused_gap:.0e`, and the
#   padding mask gives padding zero weight.
# - An encoder block is attention and a feed-forward network, each followed by a residual
#   addition and (post-)LayerNorm, as in BERT and Geneformer. Positions enter only through the
#   position embedding, and for rank-value tokens they carry the expression information.
# - The Geneformer-V1-like configuration has {glue:text}`c05_gf_params:.1f` M parameters,
#   {glue:text}`c05_gf_emb:.0f` % of them in the embedding tables: in small models the size of
#   the vocabulary, not the depth, dominates the parameter count.
# - An untrained model attends almost uniformly (entropy {glue:text}`c05_ent_random:.4f` of the
#   maximum); structure in attention is learned (the course checkpoint's largest first-layer
#   weight is {glue:text}`c05_max_ratio:.0f` times uniform), and even then it is a hint, not an
#   explanation.
# - `from_hf_bert` / `to_hf_bert` map weights one-to-one: hidden states and logits match HF's
#   `BertForMaskedLM` to about {glue:text}`c05_logit_gap:.0e`, so Geneformer checkpoints run in
#   `tflib`.

# %%
tflib.utils.footer(seed=SEED)
