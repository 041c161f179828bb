"""Cell-type annotation with a fine-tuned Transcriptformer, and the metrics that judge it (chapter 07).

The AnnData side of :func:`tflib.train.finetune`:

* :func:`finetune_annotator` trains a classifier on the *training* part of an explicit
  :class:`~tflib.tl.Split` (checked for leaks first; the test cells are never tokenized here);
* :func:`annotate` writes its predictions for any cells into ``adata`` (or a copy):

  - ``obs[key_added]`` -- the predicted label (categorical; ``NaN`` for cells without tokens);
  - ``obs[key_added + "_confidence"]`` -- the probability of that label;
  - ``obsm[key_added + "_proba"]`` -- cells × classes probabilities (rows sum to 1);
  - ``uns[key_added]`` -- the class order (the ``_proba`` columns) and the fine-tuning settings.

* :func:`confusion_frame`, :func:`expected_calibration_error` and :func:`calibration_report`
  complete :func:`tflib.tl.evaluate_predictions` and :func:`tflib.tl.per_class_recall`: the
  confusion matrix, and whether a predicted probability of 0.8 is right 80 % of the time.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tflib.tl.splits import Split, check_class_sizes, check_split

from ._tokens import encode_cells

__all__ = ["finetune_annotator", "annotate", "bag_of_tokens", "confusion_frame", "expected_calibration_error",
           "calibration_report"]


def finetune_annotator(adata, label_key: str, split: Split, model, tokenizer, *, config=None, tokens=None,
                       check_coverage: bool = True, encode_kwargs=None, **overrides):
    """Fine-tune ``model`` to predict ``obs[label_key]`` on the training cells of ``split`` (chapter 07).

    Parameters
    ----------
    adata
        All cells (counts as the tokenizer expects them); ``split`` names the training cells.
    label_key
        ``obs`` column with the cell type. Every class needs at least 2 training cells.
    split
        An explicit :class:`~tflib.tl.Split` (:func:`tflib.tl.make_split`); it is checked for
        leaks (:class:`~tflib.tl.SplitLeakError`). Early stopping and calibration use a
        stratified part of the *training* cells, never the test cells.
    model, tokenizer
        The pretrained :class:`~tflib.models.Transcriptformer` and its tokenizer.
    config, overrides
        A :class:`tflib.train.FinetuneConfig` and/or single fields (``mode="full"``, ``epochs=5``).
    tokens
        Pre-computed ``tokenizer.encode(training cells)`` (skips tokenizing again).
    check_coverage
        Passed to ``tokenizer.encode``: refuse cells whose counts fall mostly outside the
        tokenizer's genes (chapter 04). The same rule and default as :func:`tflib.tl.embed` and
        :func:`annotate`; ``False`` tokenizes the covered genes anyway.
    encode_kwargs
        Other arguments of ``tokenizer.encode`` (e.g. ``{"layer": "counts"}``).

    Returns
    -------
    tflib.train.FinetunedModel
        The purpose of this verb is the model: it is returned, and ``adata`` is not modified.
        Pass it to :func:`annotate`. ``.tokenizer`` and ``.label_key`` are attached.
    """
    from tflib.train.finetuning import finetune

    if label_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {label_key!r} (label_key); columns: {list(adata.obs.columns)}.")
    check_split(adata, split=split)
    train_mask, _ = split.masks(adata)
    train = adata[train_mask]
    check_class_sizes(train.obs[label_key].astype(str), min_cells=2, where="training")
    cells, rows = encode_cells(train, tokenizer, tokens=tokens, encode_kwargs=encode_kwargs,
                               check_coverage=check_coverage)
    labels = train.obs[label_key].astype(str).to_numpy()[rows]
    ft = finetune(model, cells, labels, config=config, tokenizer=tokenizer, **overrides)
    ft.tokenizer, ft.label_key = tokenizer, label_key
    return ft


def annotate(adata, classifier, *, tokenizer=None, key_added: str = "tf_annot", tokens=None,
             check_coverage: bool = True, encode_kwargs=None, batch_size: int = 64, copy: bool = False):
    """Predict a label for every cell of ``adata`` with a fine-tuned classifier (chapter 07).

    Parameters
    ----------
    adata
        Cells to label (any cells: training, test or new data with the same gene identifiers).
    classifier
        A :class:`tflib.train.FinetunedModel` (from :func:`finetune_annotator`).
    tokenizer
        The tokenizer the classifier was trained with; default ``classifier.tokenizer``.
    key_added
        Prefix of the keys written (all listed below).
    tokens
        Pre-computed tokens of ``adata`` (their coverage was checked when they were made).
    check_coverage
        Passed to ``tokenizer.encode``, as in :func:`tflib.tl.embed` and :func:`finetune_annotator`.
    encode_kwargs
        Other arguments of ``tokenizer.encode``.
    batch_size
        Cells per forward pass.
    copy
        ``False`` (default): write into ``adata`` and return ``None``. ``True``: leave ``adata``
        as it is and return a copy holding the predictions.

    Returns
    -------
    None or anndata.AnnData
        ``None``, or the copy when ``copy=True``. Written keys:

        - ``obs[key_added]``: the predicted label (categorical; ``NaN`` for cells without tokens);
        - ``obs[key_added + "_confidence"]``: the probability of that label;
        - ``obsm[key_added + "_proba"]``: cells x classes probabilities (rows sum to 1);
        - ``uns[key_added]``: the class order (the ``_proba`` columns) and the fine-tuning settings.

        Nothing is written when the call fails.
    """
    tokenizer = tokenizer if tokenizer is not None else getattr(classifier, "tokenizer", None)
    if tokenizer is None and tokens is None:
        raise ValueError("annotate needs the tokenizer the classifier was trained with (tokenizer=...).")
    cells, rows = encode_cells(adata, tokenizer, tokens=tokens, encode_kwargs=encode_kwargs,
                               check_coverage=check_coverage)
    proba = np.full((adata.n_obs, len(classifier.classes)), np.nan)
    proba[rows] = classifier.predict_proba(cells, batch_size=batch_size)
    classes = np.asarray(classifier.classes, dtype=object)
    pred = pd.Series(pd.NA, index=adata.obs_names, dtype=object)
    pred.iloc[rows] = classes[proba[rows].argmax(1)]
    cfg = classifier.config
    info = {"classes": list(classifier.classes), "mode": cfg.mode, "pooling": cfg.pooling,
            "temperature": classifier.temperature, "best_epoch": int(classifier.best_epoch),
            "label_key": str(getattr(classifier, "label_key", "")),
            "n_cells_without_tokens": int(adata.n_obs - rows.size)}
    target = adata.copy() if copy else adata
    target.obs[key_added] = pd.Categorical(pred, categories=list(classifier.classes))
    target.obs[f"{key_added}_confidence"] = proba.max(axis=1)                  # NaN where no tokens
    target.obsm[f"{key_added}_proba"] = proba
    target.uns[key_added] = info
    return target if copy else None


def bag_of_tokens(cells, vocab_size: int, *, weighting: str = "binary"):
    """Cells × vocabulary sparse matrix of which genes each cell's token sequence contains.

    The "tokens without a transformer" baseline of chapter 07: a linear model on this matrix
    sees exactly the genes the Transcriptformer sees (the top of each cell's ranking, after
    truncation), but not their order. If it beats the fine-tuned model, the information was in
    the tokens and the model failed to use it.

    Parameters
    ----------
    cells
        Token sequences (``tokenizer.encode`` output or a list of int arrays).
    vocab_size
        Columns of the matrix (``len(tokenizer.vocab)``).
    weighting
        ``"binary"`` (1 for every token present) or ``"rank"`` (``1 / log2(position + 2)``,
        so higher-ranked genes weigh more).
    """
    import scipy.sparse as sp

    if weighting not in ("binary", "rank"):
        raise ValueError(f"weighting={weighting!r}; use 'binary' or 'rank'.")
    seqs = [np.asarray(cells[i], dtype=np.int64) for i in range(len(cells))]
    lengths = np.array([len(s) for s in seqs])
    cols = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    if cols.size and (cols.min() < 0 or cols.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got {cols.min()}..{cols.max()}.")
    rows = np.repeat(np.arange(len(seqs)), lengths)
    pos = np.concatenate([np.arange(n) for n in lengths]) if seqs else np.zeros(0)
    vals = np.ones(cols.size) if weighting == "binary" else 1.0 / np.log2(pos + 2.0)
    X = sp.csr_matrix((vals, (rows, cols)), shape=(len(seqs), vocab_size))
    X.sum_duplicates()
    return X


def confusion_frame(y_true, y_pred, labels=None, normalize: str | None = "true") -> pd.DataFrame:
    """Confusion matrix as a labelled table: rows are true classes, columns predicted ones.

    ``normalize="true"`` divides each row by its total (the diagonal is per-class recall);
    ``None`` gives counts. Used in chapter 07 (scikit-learn computes it).
    """
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    m = confusion_matrix(y_true, y_pred, labels=labels, normalize=normalize)
    return pd.DataFrame(m, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def expected_calibration_error(y_true, proba, classes, n_bins: int = 10) -> float:
    """Top-label expected calibration error: the gap between confidence and accuracy, averaged over bins.

    Cells are binned by their highest probability (``n_bins`` equal-width bins on [0, 1]); the
    ECE is the cell-weighted mean of ``|accuracy - mean confidence|`` over bins. 0 is perfect
    calibration. Used in chapter 07 before and after temperature scaling.
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = np.asarray(classes).astype(str)
    y_true = np.asarray(y_true).astype(str)
    if proba.shape != (len(y_true), len(classes)):
        raise ValueError(f"proba has shape {proba.shape}; expected ({len(y_true)}, {len(classes)}).")
    conf = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == y_true
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def calibration_report(y_true, proba, classes, n_bins: int = 10) -> dict:
    """``{"ece", "log_loss", "brier"}`` of predicted probabilities (chapter 07).

    The log loss is the mean of ``-log p(true class)`` (clipped at 1e-12, so a true class the
    model has never seen costs about 27.6); the multi-class Brier score is the mean squared
    distance between the probability vector and the one-hot truth.
    """
    proba = np.asarray(proba, dtype=np.float64)
    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true).astype(str)
    onehot = (y_true[:, None] == np.asarray(classes)[None, :]).astype(float)       # (n, K)
    return {
        "ece": expected_calibration_error(y_true, proba, classes, n_bins),
        "log_loss": float(np.mean(-np.log(np.clip((proba * onehot).sum(axis=1), 1e-12, 1.0)))),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
    }
