"""In-silico perturbation throughput: ``tflib.tl.perturb`` (batched) vs one forward per (cell, gene).

Same model, same weights, same cells, same genes. The reference is the obvious loop: for every
cell and every gene it expresses, copy the token list, remove the gene (``list.remove``), cut to
the context keeping ``<eos>``, and run the model on that one sequence (Geneformer's perturber
runs batches of one cell's variants; this is the per-perturbation floor the issue asks about).
``tflib.tl.perturb`` builds many variants per forward pass by index arithmetic on the padded
token array (``tflib/tl/perturb_tokens.py``), length-sorted, and skips the forward pass of a
deletion behind the model's context (the model reads exactly the unperturbed cell, so the shift is
exactly zero; the loop computes it and gets zero too). The script prints how many were skipped:
on cells longer than the context, that is where much of the ratio comes from.

Inside the forward pass, ``tl.perturb`` asks the model for ``encode(..., dedupe=True)``: the
embeddings and the first block's query/key/value projections are computed once per distinct
(token, position) pair of the batch (the variants of one cell share almost all of them), and,
with ``<cls>`` pooling, the last block attends from ``<cls>`` alone without projecting keys or
values (``SelfAttention.attend_one_query``; the loop gets that saving too, it is the model's
``first_only`` path). Both are exact rewrites of the same arithmetic.

Real-shaped input: a 3,000-gene vocabulary, 2 % of the data's genes outside it, integer counts
(so many exact ties inside a cell), and cells longer than the model's context (truncation runs).
The model has the course checkpoint's shape (2 blocks, 128 wide, GELU, a 128-token context:
the model chapter 11 perturbs); ``--max-len 256`` doubles the context. The script checks that
both give the same shifts (max abs difference <= 1e-5), then prints perturbations/s for both,
the ratio (target >= 10x) and the peak RSS of the batched run. Each side is timed ``--repeat``
times, alternately, and its fastest run counts (the usual rule for timings on a shared machine).

    python benchmarks/perturb.py                 # 300 cells batched (RSS); 30 of them side by side
    python benchmarks/perturb.py --cells 40      # quick check
"""
from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # benchmarks/tokenize.py would shadow the standard library module

import argparse
import resource
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

import tflib.tl as tl
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tokenize import GeneVocab, RankValueTokenizer


def make_data(n_cells: int, n_genes: int, seed: int):
    rng = np.random.default_rng(seed)
    genes = [f"GENE{i:05d}" for i in range(n_genes)]
    outside = rng.choice(n_genes, size=int(0.02 * n_genes), replace=False)       # 2 % outside the vocabulary
    in_vocab = [g for i, g in enumerate(genes) if i not in set(outside.tolist())]
    rates = rng.gamma(0.3, 2.0, n_genes)                                          # skewed expression
    size = rng.lognormal(0.0, 0.4, n_cells)[:, None]
    X = rng.poisson(rates[None, :] * size * 0.2).astype(np.float32)               # integer counts: ties
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = genes
    medians = {g: float(rng.lognormal(0, 0.5)) for g in in_vocab}
    tok = RankValueTokenizer(GeneVocab.from_genes(in_vocab), medians, preset="V2")
    return a, tok


def looped(adata, model, tok, max_len):
    """One forward per (cell, expressed gene); returns {(cell, gene_token): L2 shift} and the count."""
    cells = tok.encode(adata)
    eos = tok.vocab.eos_id
    out = {}

    def emb(seq):
        if len(seq) > max_len:
            seq = seq[: max_len - 1] + [eos]
        ids = torch.tensor([seq])
        return model.encode(ids, torch.ones_like(ids, dtype=torch.bool), first_only=True)[0, 0]

    with torch.inference_mode():
        for i in range(len(cells)):
            seq = [int(t) for t in cells[i]]
            e0 = emb(seq)
            for t in seq[1:-1]:
                new = list(seq)
                new.remove(t)
                out[(int(cells.obs_index[i]), t)] = float((emb(new) - e0).norm())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=300)
    p.add_argument("--genes", type=int, default=3060)
    p.add_argument("--max-len", type=int, default=128, help="model context (the course checkpoint's: 128)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per side; the fastest counts")
    p.add_argument("--batch-size", type=int, default=64, help="tl.perturb's default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loop-cells", type=int, default=30,
                   help="cells for the side-by-side timing (the loop is slow); all --cells run batched for RSS")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    adata, tok = make_data(a.cells, a.genes, seed=0)
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(tok.vocab), max_len=a.max_len, n_layer=2,
                                                    n_head=4, n_embd=128, n_inner=256, activation="gelu")).eval()
    lengths = np.diff(adata.X.indptr)
    print(f"{a.cells} cells, {a.genes} genes ({len(tok.vocab)} tokens), model context {a.max_len}; expressed "
          f"genes per cell: median {int(np.median(lengths))}, {int((lengths + 2 > a.max_len).sum())} cells truncated")

    t0 = time.perf_counter()
    full = tl.perturb(adata, model, tok, "all", kind="delete", batch_size=a.batch_size, progress=False)
    t_full = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"batched, all {a.cells} cells x all expressed genes: {len(full):,} perturbations in {t_full:.1f} s; "
          f"peak RSS {rss_mb:.0f} MB")

    sub = adata[: a.loop_cells].copy()                                  # the same cells for both timings
    t_batched = t_loop = float("inf")
    for _ in range(a.repeat):                                           # alternate the two; keep each one's best
        t0 = time.perf_counter()
        table = tl.perturb(sub, model, tok, "all", kind="delete", batch_size=a.batch_size, progress=False)
        t_batched = min(t_batched, time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = looped(sub, model, tok, a.max_len)
        t_loop = min(t_loop, time.perf_counter() - t0)
    adata = sub

    name_to_tok = {g: tok.vocab.token_to_id(g) for g in set(table["gene"])}
    row_of = {n: i for i, n in enumerate(adata.obs_names)}
    got = {(row_of[c], name_to_tok[g]): v for c, g, v in zip(table["cell"], table["gene"],
                                                              table["embedding_shift_l2"])}
    assert got.keys() == ref.keys(), "the two runs perturbed different (cell, gene) pairs"
    diff = max(abs(got[k] - ref[k]) for k in ref)
    n = len(ref)
    skipped = int((table["embedding_shift_l2"] == 0).sum())
    print(f"perturbations: {n:,}; max |batched - looped| of the L2 shift: {diff:.2e} (must be <= 1e-5)")
    print(f"deletions behind the model's context (no forward pass needed, shift exactly 0): {skipped:,}")
    print(f"looped : {n / t_loop:10.1f} perturbations/s ({t_loop:.2f} s, best of {a.repeat})")
    print(f"batched: {n / t_batched:10.1f} perturbations/s ({t_batched:.2f} s, best of {a.repeat})")
    print(f"ratio  : {t_loop / t_batched:.1f}x (target >= 10x)")
    if diff > 1e-5:
        raise SystemExit("the batched and looped shifts differ")

    # Overexpression changes every cell (nothing can be skipped): the ratio of batching alone.
    genes = list(adata.var_names[:20])
    t0 = time.perf_counter()
    over = tl.perturb(adata, model, tok, [g for g in genes if g in tok.vocab], kind="overexpress",
                      batch_size=a.batch_size, progress=False)
    t_over = time.perf_counter() - t0
    cells = tok.encode(adata)
    eos = tok.vocab.eos_id
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(len(cells)):
            seq = [int(t) for t in cells[i]]
            for g in genes:
                if g not in tok.vocab:
                    continue
                t = tok.vocab.token_to_id(g)
                new = [x for x in seq if x != t]
                new.insert(1, t)
                new = new if len(new) <= a.max_len else new[: a.max_len - 1] + [eos]
                ids = torch.tensor([new])
                model.encode(ids, torch.ones_like(ids, dtype=torch.bool), first_only=True)
    t_over_loop = time.perf_counter() - t0
    print(f"overexpression of {len(over) // len(cells)} genes in {len(cells)} cells ({len(over):,} perturbations, "
          f"no forward pass can be skipped): looped {len(over) / t_over_loop:.1f}/s, batched "
          f"{len(over) / t_over:.1f}/s, ratio {t_over_loop / t_over:.1f}x")


if __name__ == "__main__":
    main()
