"""The course corpus and the course-checkpoint recipe (chapter 06).

The corpus mixes three sources so the model sees real and simulated human-named genes:

* ``kang_pbmc``: real human PBMCs (gene symbols), raw counts in ``X``;
* ``pancreas``: real mouse pancreas (spliced counts in ``X``), mapped to human symbols through
  the ortholog table (:func:`tflib.tokenize.mouse_to_human`; unmapped genes are dropped);
* the simulator (:func:`tflib.datasets.simulate`), whose genes carry human symbols.

One vocabulary covers all of it: genes ranked by their *highest* detection rate in any one
source (so the 500 simulator genes are not drowned by 13,000 PBMC genes), capped at
``n_genes``. Gene medians are computed exactly over the whole corpus, the cells are tokenized
with the V2 rank-value tokenizer at a short ``max_len``, and a seeded fraction of cells is held
out for evaluation. :func:`build_course_corpus` does all of it; :func:`evaluate_mlm` measures
masked-gene accuracy at ``<mask>`` positions against two frequency baselines;
:func:`train_course_model` runs the recipe and :func:`train_course_checkpoint` writes its result
(through :mod:`tflib.train.course`, which never deletes a folder tflib did not write).

The recipe lives in ``tflib/resources/recipes/course.toml`` (``[corpus]`` and ``[pretrain]``
tables; the latter holds :class:`~tflib.train.PretrainConfig` keys).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

RECIPES = Path(__file__).resolve().parent.parent / "resources" / "recipes"
COURSE_RECIPE = RECIPES / "course.toml"


def load_recipe(path=None) -> dict:
    """Read a recipe TOML (default: the course recipe) into ``{"corpus": {...}, "pretrain": {...}}``."""
    import tomllib

    path = Path(path) if path is not None else COURSE_RECIPE
    raw = tomllib.loads(path.read_text())
    unknown = set(raw) - {"corpus", "pretrain", "eval"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)}; a recipe has [corpus], [pretrain] and [eval].")
    return raw


@dataclass
class CourseCorpus:
    """What :func:`build_course_corpus` returns.

    ``cells`` is a :class:`tflib.tokenize.TokenizedCells` over every corpus cell (``cells.obs``
    has ``source``); ``train``/``heldout`` are the cell positions of the two splits;
    ``train_cells``/``heldout_cells`` are views that behave like a token store.
    """

    cells: object
    tokenizer: object
    train: np.ndarray
    heldout: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def train_cells(self) -> "Subset":
        return Subset(self.cells, self.train)

    @property
    def heldout_cells(self) -> "Subset":
        return Subset(self.cells, self.heldout)


class Subset:
    """Some cells of a token collection, indexable like a token store (``len``, ``[i]``, ``.lengths``)."""

    def __init__(self, cells, index):
        self.cells, self.index = cells, np.asarray(index)
        self.lengths = np.asarray(cells.lengths)[self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i) -> np.ndarray:
        return self.cells[int(self.index[i])]


def _source_matrices(n_sim_cells: int, sim_seed: int):
    """``[(name, counts CSR, human gene names, full per-cell totals, obs), ...]`` for the three sources."""
    from tflib import datasets
    from tflib.tokenize import mouse_to_human

    out = []
    kang = datasets.load("kang_pbmc")
    X = sp.csr_matrix(kang.X, dtype=np.float32)
    out.append(("kang_pbmc", X, list(kang.var_names), np.asarray(X.sum(1)).ravel(),
                kang.obs[["cell_type"]].astype(str).rename(columns={"cell_type": "label"})))
    pan = datasets.load("pancreas")
    X = sp.csr_matrix(pan.X, dtype=np.float32)
    human, _ = mouse_to_human(list(pan.var_names))
    keep = np.array([h is not None for h in human])
    out.append(("pancreas", X[:, keep], [h for h in human if h is not None], np.asarray(X.sum(1)).ravel(),
                pan.obs[["clusters"]].astype(str).rename(columns={"clusters": "label"})))
    sim = datasets.simulate(n_cells=n_sim_cells, seed=sim_seed)
    X = sp.csr_matrix(sim.X, dtype=np.float32)
    out.append(("simulator", X, list(sim.var_names), np.asarray(X.sum(1)).ravel(),
                sim.obs[["fate"]].astype(str).rename(columns={"fate": "label"})))
    return out


def _collapse(X: sp.csr_matrix, names: list[str]):
    """Sum columns that share a (mapped) gene name; returns ``(X, unique names)``."""
    uniq, inverse = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    if len(uniq) == len(names):
        return X, list(names)
    P = sp.csr_matrix((np.ones(len(names), np.float32), (np.arange(len(names)), inverse)),
                      shape=(len(names), len(uniq)))
    return sp.csr_matrix(X @ P), list(uniq)


def build_course_corpus(n_genes: int = 2000, max_len: int = 256, n_sim_cells: int = 1000, sim_seed: int = 0,
                        heldout_fraction: float = 0.1, split_seed: int = 0, min_cells: int = 10):
    """Build the chapter-06 corpus: vocabulary, exact medians, V2 tokens and a held-out split.

    Parameters
    ----------
    n_genes
        Vocabulary cap (genes; 4 special tokens come on top). Genes are ranked by their highest
        detection rate in any one source; genes detected in fewer than ``min_cells`` cells of
        every source are never included.
    max_len
        The V2 tokenizer's total length (``<cls>`` + up to ``max_len - 2`` genes + ``<eos>``).
    n_sim_cells, sim_seed
        Size and seed of the simulator source.
    heldout_fraction, split_seed
        Share of cells held out for evaluation, drawn with ``split_seed`` within each source.

    Returns
    -------
    CourseCorpus
    """
    import anndata as ad

    from tflib.tokenize import GeneVocab, RankValueTokenizer, gene_medians

    t0 = time.perf_counter()
    sources = [(name, *_collapse(X, names), totals, obs) for name, X, names, totals, obs
               in _source_matrices(n_sim_cells, sim_seed)]
    # vocabulary: the best detection rate of each gene in any source
    best: dict[str, float] = {}
    for name, X, names, totals, obs in sources:
        n_det = np.asarray((X > 0).sum(0)).ravel()
        rate = n_det / X.shape[0]
        for g, r, n in zip(names, rate, n_det):
            if n >= min_cells and r > best.get(g, -1.0):
                best[g] = float(r)
    ranked = sorted(best, key=lambda g: (-best[g], g))[:n_genes]       # ties broken by name: deterministic
    genes = sorted(ranked)
    vocab = GeneVocab.from_genes(genes, id_type="symbol")
    col = {g: i for i, g in enumerate(genes)}
    # one cells x vocabulary count matrix, keeping each cell's full library size in obs
    blocks, obs = [], []
    for name, X, names, totals, o in sources:
        src = np.array([i for i, g in enumerate(names) if g in col])
        dst = np.array([col[names[i]] for i in src])
        P = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(len(names), len(genes)))
        blocks.append(sp.csr_matrix(X @ P))
        o = o.copy()
        o["source"] = name
        o["n_counts"] = totals
        o.index = [f"{name}:{i}" for i in o.index]
        obs.append(o)
    adata = ad.AnnData(sp.vstack(blocks).tocsr(), obs=pd.concat(obs), var=pd.DataFrame(index=genes))
    adata.obs["source"] = adata.obs["source"].astype("category")
    med = gene_medians(adata, vocab=vocab, method="exact", n_counts_key="n_counts")
    tokenizer = RankValueTokenizer(vocab, med, preset="V2", max_len=max_len)
    cells = tokenizer.encode(adata, id_type="symbol", species="human")
    # held-out split, seeded, stratified by source
    rng = np.random.default_rng(split_seed)
    src = cells.obs["source"].to_numpy()
    held = []
    for name in sorted(set(src)):
        idx = np.flatnonzero(src == name)
        held.append(rng.choice(idx, size=int(round(heldout_fraction * len(idx))), replace=False))
    heldout = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(cells)), heldout)
    report = {"n_cells": len(cells), "n_train": int(len(train)), "n_heldout": int(len(heldout)),
              "cells_per_source": cells.obs["source"].value_counts().sort_index().astype(int).to_dict(),
              "n_genes": len(genes), "vocab_size": len(vocab), "max_len": max_len,
              "mean_length": float(np.mean(cells.lengths)), "seconds": round(time.perf_counter() - t0, 1)}
    return CourseCorpus(cells, tokenizer, train, heldout, report)


def corpus_from_recipe(recipe: dict) -> CourseCorpus:
    """:func:`build_course_corpus` with the recipe's ``[corpus]`` table."""
    return build_course_corpus(**recipe.get("corpus", {}))


# ---- evaluation ---------------------------------------------------------------------------------
def _masked_batches(cells, tokenizer, batch_size: int, seed: int, mask_prob: float = 0.15):
    """Fixed masked batches of ``cells`` (a pure function of ``seed``) for evaluation."""
    import torch

    from .data import MaskingCollator

    vocab = tokenizer.vocab
    coll = MaskingCollator(len(vocab), mask_prob, mask_token_id=vocab.mask_id, pad_token_id=vocab.pad_id,
                           special_ids=[vocab.token_to_id(t) for t in vocab.special_tokens])
    g = torch.Generator().manual_seed(seed)
    for start in range(0, len(cells), batch_size):
        batch = coll([cells[i] for i in range(start, min(len(cells), start + batch_size))], generator=g)
        batch["masked_input"] = batch["input_ids"] == vocab.mask_id
        yield batch


def frequency_baselines(train_cells, vocab_size: int, max_len: int) -> dict:
    """Two baselines fitted on the training cells.

    ``unigram``: always predict the gene that appears in most cells.
    ``position``: predict the gene seen most often at that rank position (position 0 is ``<cls>``).
    """
    counts = np.zeros(vocab_size, np.int64)
    pos = np.zeros((max_len, vocab_size), np.int64)
    for i in range(len(train_cells)):
        t = np.asarray(train_cells[i], np.int64)
        counts += np.bincount(t[1:-1], minlength=vocab_size)
        np.add.at(pos, (np.arange(len(t)), t), 1)
    pos[:, :4] = 0                                                      # specials are never targets
    return {"unigram": int(counts[4:].argmax() + 4), "position": pos.argmax(1)}


def evaluate_mlm(model, tokenizer, cells, train_cells=None, *, batch_size: int = 64, seed: int = 1234,
                 baselines: dict | None = None) -> dict:
    """Masked-gene accuracy and loss on ``cells`` with a fixed seeded mask, beside the baselines.

    The mask is drawn as in training (15 % of the gene tokens; of those 80 % become ``<mask>``,
    10 % a random gene, 10 % stay unchanged). The **headline** is the accuracy at ``<mask>``
    positions only: there the model cannot see the gene it must name. Over *all* chosen
    positions a model also wins the unchanged 10 % by copying its input, which flatters it; that
    number is kept, labelled, under ``"all_chosen"``.

    Pass ``train_cells`` (or precomputed ``baselines`` from :func:`frequency_baselines`) to score
    the baselines on the very same positions; the headline's baseline is the position-aware one
    (the gene seen most often at that rank in the training cells).

    Returns
    -------
    dict
        ``{"headline": {"metric", "model", "position_baseline", "n"},
        "mask_token": {"n", "loss", "accuracy": {"model", "position", "unigram"}},
        "all_chosen": {"n", "loss", "accuracy": {...}, "note"}, "seed"}``; without baselines the
        accuracy tables hold ``"model"`` only and ``position_baseline`` is ``None``.

    Used in chapter 06 and by the course recipe's ``metrics.json``.
    """
    import torch
    import torch.nn.functional as F

    from tflib.utils import get_device

    device = next(model.parameters()).device if any(True for _ in model.parameters()) else get_device()
    if baselines is None and train_cells is not None:
        baselines = frequency_baselines(train_cells, len(tokenizer.vocab), model.config.max_len)
    names = ["model", "position", "unigram"] if baselines is not None else ["model"]
    hits_all = dict.fromkeys(names, 0)
    hits_mask = dict.fromkeys(names, 0)
    n_all = n_mask = 0
    loss_all = loss_mask = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in _masked_batches(cells, tokenizer, batch_size, seed):
            labels = batch["labels"]
            picked = labels != -100
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device), labels.to(device),
                        logits="masked")
            target = labels[picked]
            logits = out.logits.float().cpu()
            losses = F.cross_entropy(logits, target, reduction="none")
            at_mask = batch["masked_input"][picked]                      # the input was <mask> here
            guesses = {"model": logits.argmax(-1)}
            if baselines is not None:
                guesses["unigram"] = torch.full_like(target, baselines["unigram"])
                positions = picked.nonzero()[:, 1].numpy()
                guesses["position"] = torch.as_tensor(baselines["position"][positions])
            for k in names:
                right = guesses[k] == target
                hits_all[k] += int(right.sum())
                hits_mask[k] += int(right[at_mask].sum())
            loss_all += float(losses.sum())
            loss_mask += float(losses[at_mask].sum())
            n_all += int(picked.sum())
            n_mask += int(at_mask.sum())
    model.train(was_training)
    mask_acc = {k: hits_mask[k] / max(1, n_mask) for k in names}
    all_acc = {k: hits_all[k] / max(1, n_all) for k in names}
    return {
        "headline": {"metric": "accuracy at <mask> positions", "model": mask_acc["model"],
                     "position_baseline": mask_acc.get("position"), "n": n_mask},
        "mask_token": {"n": n_mask, "loss": loss_mask / max(1, n_mask), "accuracy": mask_acc},
        "all_chosen": {"n": n_all, "loss": loss_all / max(1, n_all), "accuracy": all_acc,
                       "note": "every position chosen for prediction, including the 10 % left unchanged, "
                               "which a model gets right by copying its input: not a fair score"},
        "seed": seed,
    }


# ---- the recipe ---------------------------------------------------------------------------------
def train_course_model(out_dir, recipe=None, *, corpus: CourseCorpus | None = None, max_steps: int | None = None,
                       progress: bool = True):
    """Run the course recipe: build the corpus, pretrain, evaluate; returns ``(PretrainResult, corpus, metrics)``.

    ``max_steps`` cuts the run short *without* changing the schedule (it sets ``stop_after``),
    so the first losses equal those of the full run: that is how the tests check the
    committed loss log. Files go to ``out_dir`` (see :func:`tflib.train.run_pretraining`).
    """
    from .pretrain import run_pretraining

    recipe = load_recipe(recipe) if not isinstance(recipe, dict) else recipe
    corpus = corpus if corpus is not None else corpus_from_recipe(recipe)
    cfg = dict(recipe["pretrain"])
    cfg.update(out_dir=str(out_dir), progress=progress, resume=False)
    if max_steps is not None:
        cfg["stop_after"] = max_steps
        cfg["checkpoint_every"] = 10**9
    t0 = time.perf_counter()
    result = run_pretraining(cfg, dataset=corpus.train_cells, tokenizer=corpus.tokenizer)
    seconds = time.perf_counter() - t0
    metrics = None
    if max_steps is None:
        ev = recipe.get("eval", {})
        metrics = {"corpus": corpus.report, "train_seconds": round(seconds, 1),
                   "tokens_per_second": round(result.tokens_per_second, 1),
                   "n_parameters": result.model.num_parameters(), "steps": len(result.log),
                   "final_train_loss": float(np.mean(result.losses[-20:])),
                   "heldout": evaluate_mlm(result.model, corpus.tokenizer, corpus.heldout_cells, corpus.train_cells,
                                           seed=ev.get("seed", 1234), batch_size=ev.get("batch_size", 64))}
    return result, corpus, metrics


def train_course_checkpoint(directory=None, recipe=None, *, overwrite: bool = False, progress: bool = True):
    """Run the course recipe and write the checkpoint folder ``directory``; returns its path.

    ``directory`` defaults to :func:`tflib.models.course.default_cache_dir`. The folder is
    checked *before* the (minutes-long) training: a folder holding anything tflib did not
    write is refused, and an earlier course checkpoint is replaced only with ``overwrite=True``
    (see :mod:`tflib.train.course`). Load the result with
    ``tflib.models.course_checkpoint(cache_dir=directory)``. Used in chapter 06.
    """
    import tempfile

    from tflib.models.course import default_cache_dir

    from .course import check_target, write_checkpoint

    directory = Path(directory) if directory is not None else default_cache_dir()
    check_target(directory, overwrite=overwrite)                        # fail before training
    with tempfile.TemporaryDirectory(prefix="tflib-course-run-") as run:
        result, corpus, metrics = train_course_model(run, recipe, progress=progress)
        return write_checkpoint(directory, result.model, corpus.tokenizer, Path(run) / "loss_log.csv", metrics,
                                overwrite=overwrite)


def main(argv=None) -> None:
    """``python -m tflib.train.corpus [--recipe FILE] --out DIR [--overwrite]``: train and write a course checkpoint."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tflib.train.corpus", description=main.__doc__)
    parser.add_argument("--recipe", default=str(COURSE_RECIPE), help="recipe TOML ([corpus], [pretrain], [eval])")
    parser.add_argument("--out", required=True,
                        help="checkpoint folder to write: missing or empty, or an earlier course checkpoint "
                             "(replaced only with --overwrite); any other folder is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a course checkpoint that tflib wrote earlier in --out")
    args = parser.parse_args(argv)
    try:
        print(train_course_checkpoint(args.out, args.recipe, overwrite=args.overwrite))
    except FileExistsError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
