"""Scoring a pretrained Transcriptformer at masked genes, beside frequency baselines (chapter 06).

* :func:`evaluate_mlm` masks held-out cells with a fixed seed and reports the accuracy at
  ``<mask>`` positions (the headline), the loss there, and the same numbers for two baselines
  fitted by :func:`frequency_baselines`: the most frequent gene, and the gene seen most often at
  that rank position (the one to beat: a rank-value cell is mostly "which genes are high").
* :func:`unseen_pbmc` tokenizes real blood cells that the course corpus never used (scGen's
  Kang validation split, minus every barcode that the corpus's Kang subset holds), and
  :func:`evaluate_unseen` scores the model on half of them against a position baseline fitted
  on the *other half of that same dataset*: a baseline that knows the new data, while the
  model has never seen it.

The course recipe writes both into ``metrics.json``; ``tests/test_course_checkpoint.py``
recomputes them from the shipped weights.
"""
from __future__ import annotations

import numpy as np

from .data import Subset

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


def _counts(cells, vocab_size: int, max_len: int):
    """Gene counts ``(V,)`` and position-by-gene counts ``(max_len, V)`` over ``cells`` (specials zeroed)."""
    counts = np.zeros(vocab_size, np.int64)
    pos = np.zeros((max_len, vocab_size), np.int64)
    for i in range(len(cells)):
        t = np.asarray(cells[i], np.int64)[:max_len]
        counts += np.bincount(t[1:-1], minlength=vocab_size)
        np.add.at(pos, (np.arange(len(t)), t), 1)
    pos[:, :4] = 0                                                      # specials are never targets
    counts[:4] = 0
    return counts, pos


def _position_probs(counts, pos, prior: float) -> np.ndarray:
    """``p(gene | position)``: position counts plus ``prior`` pseudo-cells spread like the add-one gene frequencies."""
    uni = (counts + 1.0) / (counts + 1.0)[4:].sum()                     # (V,)
    uni[:4] = 0.0
    return (pos + prior * uni[None, :]) / (pos.sum(1, keepdims=True) + prior)  # (max_len, V)


PRIORS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def frequency_baselines(train_cells, vocab_size: int, max_len: int, prior: float | str = "fit") -> dict:
    """Two baselines fitted on the training cells.

    ``unigram``: always predict the gene that appears in most cells.
    ``position``: predict the gene seen most often at that rank position (position 0 is ``<cls>``).
    ``position_logp`` (max_len, vocab_size): the position baseline as a probability model, so it
    has a cross-entropy to compare with the model's loss: ``p(gene | position)`` is the
    position's gene counts plus ``prior`` pseudo-cells spread like the overall (add-one smoothed)
    gene frequencies, so no gene gets probability 0. With ``prior="fit"`` the prior is the one
    of :data:`PRIORS` with the lowest cross-entropy on the last 10 % of the training cells,
    fitted on the other 90 %: a few thousand cells leave most (position, gene) pairs unseen, and
    the best baseline leans on the gene frequencies (``"prior"`` in the result says how much).
    """
    counts, pos = _counts(train_cells, vocab_size, max_len)
    if prior == "fit":
        n = len(train_cells)
        cut = n - max(1, n // 10)
        c_fit, p_fit = _counts(Subset(train_cells, np.arange(cut)), vocab_size, max_len)
        _, p_val = _counts(Subset(train_cells, np.arange(cut, n)), vocab_size, max_len)
        nll = {}
        for a in PRIORS:
            with np.errstate(divide="ignore"):
                logp = np.log(_position_probs(c_fit, p_fit, a))
            nll[a] = -float((p_val * np.where(p_val > 0, logp, 0.0)).sum())
        prior = min(nll, key=nll.get)
    with np.errstate(divide="ignore"):
        logp = np.log(_position_probs(counts, pos, float(prior))).astype(np.float32)  # -inf only at specials
    return {"unigram": int(counts[4:].argmax() + 4), "position": pos.argmax(1), "position_logp": logp,
            "prior": float(prior)}


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
        "mask_token": {"n", "loss", "position_baseline_loss", "accuracy": {"model", "position", "unigram"}},
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
    base_loss_mask = 0.0 if baselines is not None and "position_logp" in baselines else None
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
            if baselines is not None and "position_logp" in baselines:
                nll = -baselines["position_logp"][positions, target.numpy()]
                base_loss_mask += float(nll[at_mask.numpy()].sum())
            n_all += int(picked.sum())
            n_mask += int(at_mask.sum())
    model.train(was_training)
    mask_acc = {k: hits_mask[k] / max(1, n_mask) for k in names}
    all_acc = {k: hits_all[k] / max(1, n_all) for k in names}
    return {
        "headline": {"metric": "accuracy at <mask> positions", "model": mask_acc["model"],
                     "position_baseline": mask_acc.get("position"), "n": n_mask},
        "mask_token": {"n": n_mask, "loss": loss_mask / max(1, n_mask), "accuracy": mask_acc,
                       "position_baseline_loss": base_loss_mask / max(1, n_mask) if base_loss_mask is not None else None},
        "all_chosen": {"n": n_all, "loss": loss_all / max(1, n_all), "accuracy": all_acc,
                       "note": "every position chosen for prediction, including the 10 % left unchanged, "
                               "which a model gets right by copying its input: not a fair score"},
        "seed": seed,
    }


# ---- real cells from outside the corpus ---------------------------------------------------------
def _barcode(name: str) -> str:
    """The 14-letter cell barcode of a Kang cell name (``'ACGT...G.1'`` or ``'ACGT...G-1-control'``)."""
    return str(name).split(".")[0].split("-")[0]


def unseen_pbmc(tokenizer):
    """Tokens of real PBMCs that the course corpus never used; returns ``(TokenizedCells, report)``.

    The cells are scGen's Kang validation split (``datasets.load("kang_scgen_valid")``), from
    the same study as the corpus's ``kang_pbmc`` but a different subset; every cell whose barcode
    also occurs in ``kang_pbmc`` is dropped, so no cell can have been memorised. The file holds
    log-normalised values and each cell's total count, from which the raw counts are rebuilt
    exactly (:func:`tflib.pp.counts_from_lognorm`) and tokenized like any count matrix.
    ``report`` gives the cell counts and the share of the counts that fall in the vocabulary.
    """
    from tflib import datasets
    from tflib.pp.counts import counts_from_lognorm

    corpus_barcodes = {_barcode(n) for n in datasets.load("kang_pbmc").obs_names}
    valid = datasets.load("kang_scgen_valid")
    keep = np.array([_barcode(n) not in corpus_barcodes for n in valid.obs_names])
    adata = valid[keep].copy()
    counts_from_lognorm(adata, total_key="n_counts")
    cells = tokenizer.encode(adata, layer="counts", id_type="symbol", species="human", obs_keys=["cell_type"])
    report = {"dataset": "kang_scgen_valid", "n_cells": int(keep.sum()), "n_dropped_shared_barcode": int((~keep).sum()),
              "count_fraction_covered": float(cells.report["count_fraction_covered"])}
    return cells, report


def evaluate_unseen(model, tokenizer, *, split_seed: int = 0, seed: int = 1234, batch_size: int = 64,
                    cells=None) -> dict:
    """:func:`evaluate_mlm` on cells the corpus never saw, against baselines fitted on that dataset.

    The cells of :func:`unseen_pbmc` (or ``cells``, a ``(TokenizedCells, report)`` pair from it)
    are split in two halves with ``split_seed``; the frequency baselines are fitted on one half
    and everything is scored on the other, with the fixed mask of ``seed``. Returns
    :func:`evaluate_mlm`'s dict plus ``"data"`` (the report, and the two halves' sizes).
    """
    tokens, report = cells if cells is not None else unseen_pbmc(tokenizer)
    order = np.random.default_rng(split_seed).permutation(len(tokens))
    half = len(order) // 2
    fit, test = np.sort(order[:half]), np.sort(order[half:])
    base = frequency_baselines(Subset(tokens, fit), len(tokenizer.vocab), model.config.max_len)
    ev = evaluate_mlm(model, tokenizer, Subset(tokens, test), baselines=base, batch_size=batch_size, seed=seed)
    ev["data"] = {**report, "n_fit": int(len(fit)), "n_scored": int(len(test)), "split_seed": split_seed}
    return ev


def vocabulary_coverage(tokenizer) -> dict:
    """Share of the expression that falls in the vocabulary, on real cells from outside the corpus.

    Measured on Perturbench's control cells (``datasets.load("perturbench_devel")``): K562
    (a leukaemia line) and three glioma lines, tissues that the course corpus lacks. The file
    keeps only 500 highly variable genes, log-normalised, so the share is over those genes'
    normalised expression (``expm1``), not over a whole transcriptome. Returns
    ``{cell_type: count_fraction_covered}``.
    """
    import warnings

    from tflib import datasets
    from tflib.tokenize import EmptyCellsWarning

    pb = datasets.load("perturbench_devel")
    control = pb.obs["perturbation"].astype(str).str.lower().isin(["control", "ctrl", "non-targeting"])
    out = {}
    for cell_type in sorted(pb.obs["cell_type"].astype(str).unique()):
        sub = pb[control.to_numpy() & (pb.obs["cell_type"].astype(str) == cell_type).to_numpy()].copy()
        if sub.n_obs == 0:
            continue
        X = sub.X.copy()
        X.data = np.expm1(X.data) if hasattr(X, "data") else np.expm1(X)
        sub.X = X
        with warnings.catch_warnings():                                  # cells with no vocabulary gene
            warnings.simplefilter("ignore", EmptyCellsWarning)           # count as 0 % covered: that is the point
            cells = tokenizer.encode(sub, input="normalized", id_type="symbol", species="human", check_coverage=False)
        out[cell_type] = float(cells.report["count_fraction_covered"])
    return out
