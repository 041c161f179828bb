"""Pretraining throughput: tflib vs ``transformers.BertForMaskedLM`` used the way Geneformer pretrains.

Both models have the same architecture (6 layers, hidden 256, 4 heads, FFN 512, ReLU, vocabulary
~20k, cells of up to 512 tokens) and start from the *same weights* (the HF model is
``to_hf_bert()`` of the tflib one). They see the same length-grouped batches, padded to the batch
maximum, with the same masks, the same global batch and the same number of steps, with AdamW,
warm-up + cosine and clipping. Steps alternate between the two models so that machine load hits
both alike.

- reference: HF BERT as Geneformer's pretrainer uses it (logits over the whole vocabulary at
  every position, the loss taken over the masked ones);
- tflib: logits only at the masked positions (``logits="masked"``), optionally without compute
  on padding (``--unpad``).

Same model size and same work that matters: the gain comes from not computing ~85 % of the
vocabulary projections that the loss ignores. The script prints both losses per step (they
start equal and stay close) and the tokens/s ratio. Run::

    python benchmarks/pretrain.py --steps 6 --batch-size 8
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

import torch
import torch.nn.functional as F

from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.train import MaskingCollator, SyntheticCorpus, length_grouped_batches, padding_fraction
from tflib.train.pretrain import PretrainConfig, lr_at, step_seed
from tflib.utils import get_device


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per model (after 1 warm-up step)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--vocab", type=int, default=20_000)
    p.add_argument("--min-len", type=int, default=256)
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--unpad", action="store_true", help="also skip compute on padding in tflib")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    cfg = TranscriptformerConfig(vocab_size=args.vocab + 4, max_len=args.max_len, n_layer=6, n_head=4, n_embd=256,
                                 n_inner=512, activation="relu")
    torch.manual_seed(0)
    ours = Transcriptformer(cfg).to(device)
    hf = ours.to_hf_bert().to(device)                                 # HF's default attention (SDPA)
    print(f"device {device}, threads {torch.get_num_threads()}, {ours.num_parameters():,} parameters, "
          f"HF attention: {hf.config._attn_implementation}")

    n_steps = args.steps + 1
    corpus = SyntheticCorpus(n_cells=n_steps * args.batch_size, vocab_size=cfg.vocab_size,
                             min_len=args.min_len, max_len=args.max_len, seed=0)
    batches = length_grouped_batches(corpus.lengths, args.batch_size, seed=0)[:n_steps]
    print(f"{len(corpus)} cells, lengths {args.min_len}-{args.max_len}, batch {args.batch_size}, "
          f"padding {padding_fraction(corpus.lengths, batches):.1%}")
    collator = MaskingCollator(cfg.vocab_size, max_len=args.max_len)
    sched = PretrainConfig(lr=1e-3, warmup_steps=2, max_steps=n_steps)
    opt = {name: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01) for name, m in
           (("hf", hf), ("tflib", ours))}
    hf.train(), ours.train()

    def step(name, batch, k):
        model, o = (hf, opt["hf"]) if name == "hf" else (ours, opt["tflib"])
        ids, mask, labels = (batch[x].to(device) for x in ("input_ids", "attention_mask", "labels"))
        for g in o.param_groups:
            g["lr"] = lr_at(k, sched)
        torch.manual_seed(step_seed(0, k) + 1)
        t, c = time.perf_counter(), time.process_time()
        if name == "hf":                                               # Geneformer: full-vocab logits everywhere
            loss = model(input_ids=ids, attention_mask=mask.long(), labels=labels).loss
        else:
            out = model(ids, mask, labels, logits="masked", unpad=args.unpad)
            loss = F.cross_entropy(out.logits, labels[labels != -100])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        o.step()
        o.zero_grad(set_to_none=True)
        return float(loss.detach()), time.perf_counter() - t, time.process_time() - c

    seconds, cpu = {"hf": 0.0, "tflib": 0.0}, {"hf": 0.0, "tflib": 0.0}
    tokens = 0
    print(f"{'step':>4} {'tokens':>7} {'HF loss':>8} {'tflib loss':>10} {'HF s':>6} {'tflib s':>7}")
    for k, idx in enumerate(batches):
        batch = collator([corpus[i] for i in idx], generator=torch.Generator().manual_seed(step_seed(0, k)))
        order = ("hf", "tflib") if k % 2 == 0 else ("tflib", "hf")
        res = {name: step(name, batch, k) for name in order}
        n_tok = int(corpus.lengths[idx].sum())
        if k > 0:                                                      # step 0 is warm-up
            tokens += n_tok
            for name in seconds:
                seconds[name] += res[name][1]
                cpu[name] += res[name][2]
        print(f"{k:>4} {n_tok:>7} {res['hf'][0]:>8.4f} {res['tflib'][0]:>10.4f} {res['hf'][1]:>6.2f} {res['tflib'][1]:>7.2f}"
              + ("  (warm-up)" if k == 0 else ""))
    rate = {name: tokens / s for name, s in seconds.items()}
    print(f"HF BertForMaskedLM (Geneformer-style): {rate['hf']:8.0f} tokens/s")
    print(f"tflib (masked logits{', unpad' if args.unpad else ''}):        {rate['tflib']:8.0f} tokens/s")
    print(f"ratio tflib / HF: wall {rate['tflib'] / rate['hf']:.2f}x, CPU time {cpu['hf'] / cpu['tflib']:.2f}x "
          "(target >= 1.5x; CPU time is robust to other load on the machine)")
    return rate


if __name__ == "__main__":
    main()
