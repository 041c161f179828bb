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

from .data import Subset
from .evaluation import evaluate_mlm

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


def _counts_from_scaled(S: sp.csr_matrix, name: str, tol: float = 0.01) -> sp.csr_matrix:
    """Counts from a matrix whose rows were scaled per cell (``counts * c_cell``), as in scVelo's files.

    In each cell the smallest non-zero value is one count, so dividing a row by it gives integers;
    that is checked (up to ``tol``) before the values are trusted.
    """
    S = sp.csr_matrix(S, dtype=np.float64)
    S.eliminate_zeros()
    nnz = np.diff(S.indptr)
    unit = np.ones(S.shape[0])
    unit[nnz > 0] = np.minimum.reduceat(S.data, S.indptr[:-1][nnz > 0])
    C = sp.csr_matrix(sp.diags(1.0 / unit) @ S)
    residual = float(np.abs(C.data - np.round(C.data)).max()) if C.nnz else 0.0
    if residual > tol:
        raise ValueError(f"{name}: the per-cell scaled values are not a multiple of one count (largest residual "
                         f"{residual:.3g}); this source cannot be turned back into counts.")
    C.data = np.round(C.data)
    return C.astype(np.float32)


def _mouse(name, X, var_names, obs):
    """A mouse source mapped to human symbols (unmapped genes dropped)."""
    from tflib.tokenize import mouse_to_human

    human, _ = mouse_to_human(list(var_names))
    keep = np.array([h is not None for h in human])
    return (name, X[:, keep], [h for h in human if h is not None], np.asarray(X.sum(1)).ravel(), obs)


def _source_matrices(n_sim_cells: int, sim_seeds):
    """``[(name, counts CSR, human gene names, full per-cell totals, obs), ...]`` for every source."""
    from tflib import datasets

    out = []
    kang = datasets.load("kang_pbmc")
    X = sp.csr_matrix(kang.X, dtype=np.float32)
    out.append(("kang_pbmc", X, list(kang.var_names), np.asarray(X.sum(1)).ravel(),
                kang.obs[["cell_type"]].astype(str).rename(columns={"cell_type": "label"})))
    pan = datasets.load("pancreas")
    out.append(_mouse("pancreas", sp.csr_matrix(pan.X, dtype=np.float32), pan.var_names,
                      pan.obs[["clusters"]].astype(str).rename(columns={"clusters": "label"})))
    dg = datasets.load("dentategyrus")                                  # spliced counts, scaled per cell
    out.append(_mouse("dentategyrus", _counts_from_scaled(dg.layers["spliced"], "dentategyrus spliced"),
                      dg.var_names, dg.obs[["clusters"]].astype(str).rename(columns={"clusters": "label"})))
    for seed in sim_seeds:                                              # each seed draws its own gene names
        sim = datasets.simulate(n_cells=n_sim_cells, seed=seed)
        X = sp.csr_matrix(sim.X, dtype=np.float32)
        obs = sim.obs[["fate"]].astype(str).rename(columns={"fate": "label"})
        obs.index = [f"s{seed}:{i}" for i in obs.index]
        out.append(("simulator", X, list(sim.var_names), np.asarray(X.sum(1)).ravel(), obs))
    return out


def _collapse(X: sp.csr_matrix, names: list[str]):
    """Sum columns that share a (mapped) gene name; returns ``(X, unique names)``."""
    uniq, inverse = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    if len(uniq) == len(names):
        return X, list(names)
    P = sp.csr_matrix((np.ones(len(names), np.float32), (np.arange(len(names)), inverse)),
                      shape=(len(names), len(uniq)))
    return sp.csr_matrix(X @ P), list(uniq)


def build_course_corpus(n_genes: int | None = None, max_len: int = 256, n_sim_cells: int = 1000,
                        sim_seeds=(0,), heldout_fraction: float = 0.1, split_seed: int = 0, min_cells: int = 10):
    """Build the chapter-06 corpus: vocabulary, exact medians, V2 tokens and a held-out split.

    Parameters
    ----------
    n_genes
        Vocabulary cap (genes; 4 special tokens come on top), or ``None`` for every gene detected
        in at least ``min_cells`` cells of some source. Genes are ranked by their highest
        detection rate in any one source; genes detected in fewer than ``min_cells`` cells of
        every source are never included.
    max_len
        The V2 tokenizer's total length (``<cls>`` + up to ``max_len - 2`` genes + ``<eos>``).
    n_sim_cells, sim_seeds
        Cells per simulator seed, and the seeds (each seed draws its own gene names and network).
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
               in _source_matrices(n_sim_cells, sim_seeds)]
    # vocabulary: the best detection rate of each gene in any source
    best: dict[str, float] = {}
    for name, X, names, totals, obs in sources:
        n_det = np.asarray((X > 0).sum(0)).ravel()
        rate = n_det / X.shape[0]
        for g, r, n in zip(names, rate, n_det):
            if n >= min_cells and r > best.get(g, -1.0):
                best[g] = float(r)
    ranked = sorted(best, key=lambda g: (-best[g], g))[:n_genes]  # n_genes=None keeps all       # ties broken by name: deterministic
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


# ---- the recipe ---------------------------------------------------------------------------------
def learning_curve(run_dir, tokenizer, cells, baselines, log, *, seed: int = 1234, batch_size: int = 64) -> list:
    """Held-out ``<mask>`` accuracy and loss of every checkpoint a run kept, by training tokens seen.

    ``run_dir`` is a :func:`~tflib.train.run_pretraining` folder (its ``checkpoints/step-*``),
    ``log`` its loss log; each row is ``{"step", "tokens", "loss", "accuracy", "position_baseline"}``.
    This is chapter 06's "loss against training tokens" curve.
    """
    from tflib.models import Transcriptformer

    tokens = np.cumsum([row["n_tokens"] for row in log])
    rows = []
    for path in sorted((Path(run_dir) / "checkpoints").glob("step-*")):
        step = int(path.name.split("-")[1])
        model = Transcriptformer.from_pretrained(path, device="cpu")
        ev = evaluate_mlm(model, tokenizer, cells, baselines=baselines, seed=seed, batch_size=batch_size)
        rows.append({"step": step, "tokens": int(tokens[step - 1]), "loss": ev["mask_token"]["loss"],
                     "accuracy": ev["mask_token"]["accuracy"]["model"],
                     "position_baseline": ev["mask_token"]["accuracy"]["position"]})
    return rows


def train_course_model(out_dir, recipe=None, *, corpus: CourseCorpus | None = None, max_steps: int | None = None,
                       progress: bool = True, resume: bool = False):
    """Run the course recipe: build the corpus, pretrain, evaluate; returns ``(PretrainResult, corpus, metrics)``.

    ``max_steps`` cuts the run short *without* changing the schedule (it sets ``stop_after``),
    so the first losses equal those of the full run: that is how the tests check the
    committed loss log. Files go to ``out_dir`` (see :func:`tflib.train.run_pretraining`);
    ``resume=True`` continues a run found there from its last checkpoint.

    ``metrics`` (``None`` for a cut run) holds the corpus report, the held-out scores of
    :func:`~tflib.train.evaluation.evaluate_mlm`, the scores on real cells from outside the
    corpus (:func:`~tflib.train.evaluation.evaluate_unseen`), the vocabulary's coverage of
    tissues the corpus lacks (:func:`~tflib.train.evaluation.vocabulary_coverage`) and the
    learning curve of the kept checkpoints (:func:`learning_curve`).
    """
    from .evaluation import evaluate_unseen, frequency_baselines, vocabulary_coverage
    from .pretrain import run_pretraining

    recipe = load_recipe(recipe) if not isinstance(recipe, dict) else recipe
    corpus = corpus if corpus is not None else corpus_from_recipe(recipe)
    cfg = dict(recipe["pretrain"])
    cfg.update(out_dir=str(out_dir), progress=progress, resume=resume)
    if max_steps is not None:
        cfg["stop_after"] = max_steps
        cfg["checkpoint_every"] = 10**9
    t0 = time.perf_counter()
    result = run_pretraining(cfg, dataset=corpus.train_cells, tokenizer=corpus.tokenizer)
    seconds = time.perf_counter() - t0
    metrics = None
    if max_steps is None:
        ev = recipe.get("eval", {})
        ev = {"seed": ev.get("seed", 1234), "batch_size": ev.get("batch_size", 64)}
        base = frequency_baselines(corpus.train_cells, len(corpus.tokenizer.vocab), result.model.config.max_len)
        metrics = {"corpus": corpus.report, "train_seconds": round(seconds, 1),
                   "tokens_per_second": round(result.tokens_per_second, 1),
                   "n_parameters": result.model.num_parameters(), "steps": len(result.log),
                   "train_tokens": int(sum(row["n_tokens"] for row in result.log)),
                   "final_train_loss": float(np.mean(result.losses[-20:])),
                   "heldout": evaluate_mlm(result.model, corpus.tokenizer, corpus.heldout_cells, baselines=base, **ev),
                   "unseen": evaluate_unseen(result.model, corpus.tokenizer, **ev),
                   "coverage_outside_corpus": vocabulary_coverage(corpus.tokenizer),
                   "curve": learning_curve(out_dir, corpus.tokenizer, corpus.heldout_cells, base, result.log, **ev)}
    return result, corpus, metrics


def train_course_checkpoint(directory=None, recipe=None, *, overwrite: bool = False, progress: bool = True,
                            work_dir=None):
    """Run the course recipe and write the checkpoint folder ``directory``; returns its path.

    ``directory`` defaults to :func:`tflib.models.course.default_cache_dir`. The folder is
    checked *before* the (minutes-long) training: a folder holding anything tflib did not
    write is refused, and an earlier course checkpoint is replaced only with ``overwrite=True``
    (see :mod:`tflib.train.course`). Load the result with
    ``tflib.models.course_checkpoint(cache_dir=directory)``. Used in chapter 06.

    ``work_dir``: where the run keeps its checkpoints. ``None`` uses a temporary folder that is
    removed at the end (an interrupted run starts again); a folder you name is kept, and calling
    again with the same ``work_dir`` resumes an interrupted run from its last checkpoint.
    """
    import tempfile

    from tflib.models.course import default_cache_dir

    from .course import check_target, write_checkpoint

    directory = Path(directory) if directory is not None else default_cache_dir()
    check_target(directory, overwrite=overwrite)                        # fail before training
    if work_dir is not None:
        result, corpus, metrics = train_course_model(work_dir, recipe, progress=progress, resume=True)
        return write_checkpoint(directory, result.model, corpus.tokenizer, Path(work_dir) / "loss_log.csv", metrics,
                                overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="tflib-course-run-") as run:
        result, corpus, metrics = train_course_model(run, recipe, progress=progress)
        return write_checkpoint(directory, result.model, corpus.tokenizer, Path(run) / "loss_log.csv", metrics,
                                overwrite=overwrite)


def main(argv=None) -> None:
    """``python -m tflib.train.corpus [--recipe FILE] --out DIR [--overwrite] [--work-dir RUN]``: train and write a course checkpoint."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tflib.train.corpus", description=main.__doc__)
    parser.add_argument("--recipe", default=str(COURSE_RECIPE), help="recipe TOML ([corpus], [pretrain], [eval])")
    parser.add_argument("--out", required=True,
                        help="checkpoint folder to write: missing or empty, or an earlier course checkpoint "
                             "(replaced only with --overwrite); any other folder is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a course checkpoint that tflib wrote earlier in --out")
    parser.add_argument("--work-dir", default=None,
                        help="keep the run's checkpoints here; run the same command again to resume an "
                             "interrupted run (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    try:
        print(train_course_checkpoint(args.out, args.recipe, overwrite=args.overwrite, work_dir=args.work_dir))
    except FileExistsError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
