"""Short pretraining runs on the course corpus that chose the course recipe (issue 11).

Every run starts from the course recipe (``tflib/resources/recipes/course.toml``) and changes
one thing: the peak learning rate, the batch size or the model's size. Each run is short (a
fixed wall-time-like budget of ``--steps`` optimizer steps, with its own warm-up and cosine
decay, so the schedule is complete), and is then scored on the recipe's held-out cells at
``<mask>`` positions with the recipe's fixed mask (:func:`tflib.train.evaluation.evaluate_mlm`).
The position-aware baseline is printed beside it; the ratio model / baseline is the number the
recipe is chosen on. Results go to ``tflib/resources/recipes/course_sweep.csv``, beside the
recipe they chose (committed; chapter 06's model-size curve reads its ``size`` rows).

    .venv/bin/python benchmarks/pretrain_sweep.py                 # every row (about 20 minutes)
    .venv/bin/python benchmarks/pretrain_sweep.py --only lr       # one group

Run it on an otherwise idle machine: ``seconds`` and ``tokens_per_second`` are wall-clock.
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.path and os.path.abspath(sys.path[0]) == str(HERE):
    sys.path.pop(0)  # benchmarks/tokenize.py would shadow the standard library module
OUT = HERE.parent / "tflib" / "resources" / "recipes" / "course_sweep.csv"

# (group, label, changes to [pretrain] and [pretrain.model])
SMALL = {"n_layer": 2, "n_embd": 128, "n_inner": 256, "n_head": 4}
LARGE = {"n_layer": 4, "n_embd": 192, "n_inner": 384, "n_head": 4}
BASE = {"batch_size": 64}              # the sweep's common ground (the recipe itself uses 128)
RUNS = [
    ("lr", "lr 1e-3", {"lr": 1e-3}, SMALL),
    ("lr", "lr 2e-3", {"lr": 2e-3}, SMALL),
    ("lr", "lr 4e-3", {"lr": 4e-3}, SMALL),
    ("lr", "4 x 192 at lr 2e-3", {"lr": 2e-3}, LARGE),
    ("batch", "batch 32", {"lr": 2e-3, "batch_size": 32}, SMALL),
    ("batch", "batch 128", {"lr": 2e-3, "batch_size": 128}, SMALL),
    # sizes at lr 1e-3, which every size trains at (4 x 192 collapses at 2e-3: see the lr group)
    ("size", "2 x 64", {"lr": 1e-3}, {"n_layer": 2, "n_embd": 64, "n_inner": 128, "n_head": 4}),
    ("size", "2 x 128", {"lr": 1e-3}, SMALL),
    ("size", "4 x 192", {"lr": 1e-3}, LARGE),
]


def main(argv=None):
    os.environ.setdefault("TFLIB_DATA_MIRROR", str(HERE.parent.parent / "shared" / "data"))
    from tflib.train.corpus import corpus_from_recipe, load_recipe
    from tflib.train.evaluation import evaluate_mlm, frequency_baselines
    from tflib.train.pretrain import run_pretraining

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps per run (batch 64: 16k cells)")
    parser.add_argument("--only", choices=sorted({r[0] for r in RUNS}), help="run one group only")
    args = parser.parse_args(argv)

    recipe = load_recipe()
    corpus = corpus_from_recipe(recipe)
    base = frequency_baselines(corpus.train_cells, len(corpus.tokenizer.vocab), recipe["pretrain"]["model"]["max_len"])
    rows = []
    for group, label, train_change, model_change in RUNS:
        if args.only and group != args.only:
            continue
        cfg = copy.deepcopy(recipe["pretrain"])
        cfg.update(BASE)
        cfg.update(train_change, max_steps=args.steps, warmup_steps=max(10, args.steps // 20),
                   checkpoint_every=10**9, progress=False, resume=False)
        cfg["model"].update(model_change)
        with tempfile.TemporaryDirectory() as run:
            t0 = time.perf_counter()
            result = run_pretraining({**cfg, "out_dir": run}, dataset=corpus.train_cells, tokenizer=corpus.tokenizer)
            seconds = time.perf_counter() - t0
        ev = evaluate_mlm(result.model, corpus.tokenizer, corpus.heldout_cells, baselines=base, **recipe["eval"])
        acc, pos = ev["mask_token"]["accuracy"]["model"], ev["mask_token"]["accuracy"]["position"]
        tokens = sum(r["n_tokens"] for r in result.log)
        row = {"group": group, "label": label, "sim_seeds": " ".join(map(str, recipe["corpus"]["sim_seeds"])), "batch_size": cfg["batch_size"], "lr": cfg["lr"],
               "n_layer": cfg["model"]["n_layer"], "n_embd": cfg["model"]["n_embd"],
               "n_parameters": result.model.num_parameters(), "steps": args.steps, "tokens": tokens,
               "seconds": round(seconds, 1), "tokens_per_second": round(tokens / seconds),
               "final_train_loss": round(sum(result.losses[-20:]) / 20, 4),
               "heldout_mask_loss": round(ev["mask_token"]["loss"], 4), "heldout_mask_accuracy": round(acc, 5),
               "position_baseline": round(pos, 5), "ratio": round(acc / pos, 2)}
        rows.append(row)
        print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    old = []
    if OUT.exists():                                                  # keep rows of groups not re-run
        with open(OUT) as fh:
            old = [r for r in csv.DictReader(fh) if r["label"] not in {r["label"] for r in rows}]
    with open(OUT, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(old + rows)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
