"""Embedding throughput: ``tflib.tl.embed`` vs HF BERT used the way Geneformer's extractor uses it.

Same model (6 layers, hidden 256, 4 heads, FFN 512, ReLU, vocabulary ~20k, cells of up to 512
tokens), same weights, same cells. The reference follows Geneformer's ``EmbExtractor``:
length-sorted batches padded to the batch maximum, ``BertForMaskedLM(..., output_hidden_states=True)``
(the MLM head runs over the whole vocabulary and its logits are thrown away), then pooling of
the chosen layer. Geneformer's default is mean pooling of the second-to-last layer
(``emb_layer=-1`` there, ``layer=-2`` here); the last layer and ``<cls>`` pooling are timed too.
``tflib.tl.embed`` runs no head, skips the blocks after ``layer``, skips compute on padding (in
batches with much of it) and -- for ``<cls>`` pooling -- runs the last block for the ``<cls>``
position only. Runs alternate between the two so that machine load hits both alike.

    python benchmarks/embed.py --cells 64 --batch-size 8
"""
from __future__ import annotations

import os
import sys

# Run as a script, Python puts benchmarks/ first on sys.path, where a sibling script named
# tokenize.py would shadow the standard library module of that name: drop that entry.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

import tflib.tl as tl
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tl.embedding import _batches
from tflib.tokenize import GeneVocab, RankValueTokenizer
from tflib.train import SyntheticCorpus
from tflib.utils import get_device


def hf_embed(hf, cells, batch_size, pooling, layer, device):
    """Geneformer-style extraction: full forward incl. MLM logits, hidden states of the last layer."""
    out = np.zeros((len(cells), hf.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for pos, ids, mask in _batches(cells, batch_size, hf.config.max_position_embeddings, 0):
            res = hf(input_ids=ids.to(device), attention_mask=mask.long().to(device), output_hidden_states=True)
            h = res.hidden_states[layer].float().cpu()                   # res.logits (B, L, V) discarded
            if pooling == "cls":
                out[pos] = h[:, 0].numpy()
            else:
                keep = (mask & (ids > 3)).float()
                out[pos] = ((h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).numpy()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab", type=int, default=20_000)
    p.add_argument("--min-len", type=int, default=256)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--rounds", type=int, default=2, help="alternating timed rounds per pooling")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    genes = [f"G{i}" for i in range(args.vocab)]
    vocab = GeneVocab.from_genes(genes)
    tok = RankValueTokenizer(vocab, {g: 1.0 for g in genes}, preset="V2")   # used for its vocabulary only
    cfg = TranscriptformerConfig(vocab_size=len(vocab), max_len=args.max_len, n_layer=6, n_head=4, n_embd=256,
                                 n_inner=512, activation="relu")
    torch.manual_seed(0)
    model = Transcriptformer(cfg).eval().to(device)
    hf = model.to_hf_bert().eval().to(device)
    cells = SyntheticCorpus(n_cells=args.cells, vocab_size=len(vocab), min_len=args.min_len, max_len=args.max_len)
    adata = ad.AnnData(sp.csr_matrix((args.cells, 1), dtype=np.float32))
    n_tok = int(cells.lengths.sum())
    print(f"device {device}, threads {torch.get_num_threads()}, {args.cells} cells, {n_tok / args.cells:.0f} tokens/cell, "
          f"batch {args.batch_size}, HF attention: {hf.config._attn_implementation}")
    hf_embed(hf, [cells[i] for i in range(args.batch_size)], args.batch_size, "mean", -1, device)  # warm-up
    ratios = {}
    print("cells/s by wall clock, and by this process's CPU time (robust to other load on the machine)")
    for pooling, layer in (("mean", -2), ("mean", -1), ("cls", -1)):
        wall, cpu = {"hf": 0.0, "tflib": 0.0}, {"hf": 0.0, "tflib": 0.0}
        for r in range(args.rounds):
            for name in (("hf", "tflib") if r % 2 == 0 else ("tflib", "hf")):
                s, c = time.perf_counter(), time.process_time()
                if name == "hf":
                    ref = hf_embed(hf, cells, args.batch_size, pooling, layer, device)
                else:
                    tl.embed(adata, model, tok, key_added="bench", pooling=pooling, layer=layer,
                             batch_size=args.batch_size, tokens=cells, device=device)
                    ours = adata.obsm["bench"]
                wall[name] += time.perf_counter() - s
                cpu[name] += time.process_time() - c
        n = args.cells * args.rounds
        ratios[(pooling, layer)] = (wall["hf"] / wall["tflib"], cpu["hf"] / cpu["tflib"])
        note = "  <- Geneformer's default" if (pooling, layer) == ("mean", -2) else ""
        print(f"[{pooling:>4}, layer {layer}] HF: {n / wall['hf']:5.2f} cells/s | tflib.tl.embed: {n / wall['tflib']:5.2f} "
              f"cells/s | ratio wall {wall['hf'] / wall['tflib']:.2f}x, CPU {cpu['hf'] / cpu['tflib']:.2f}x "
              f"(target >= 2x) | max |diff| {np.abs(ref - ours).max():.1e}{note}")
    return ratios


if __name__ == "__main__":
    main()
