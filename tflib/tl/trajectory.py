"""The trajectory-aware Transcriptformer: fate-aware fine-tuning on top of the embedding velocity
(chapter 10).

The coupling has three parts. The first two live in :mod:`tflib.tl.embedding_flow` and are
re-exported here:

1. :func:`embedding_velocity` carries RNA velocity into the model's embedding (extrapolate a
   cell along its velocity, re-embed, take the central difference);
2. :func:`embedding_kernel` builds a CellRank 2 kernel on that embedding, for
   :func:`tflib.tl.fates` (``kernel=``);
3. :class:`TrajectoryAwareTranscriptformer` (this module) fine-tunes the model on the fate
   probabilities of training cells (soft targets, with :func:`tflib.train.finetune`) and then
   predicts fates of cells from their counts alone: no unspliced counts, no neighbours, no
   velocity fit.

:func:`vocab_labels` is the small helper that lets the course model read simulated worlds
whose gene symbols are outside its vocabulary; it writes ``var[key_added]`` (default
``"tf_symbol"``). The validation metrics are in :mod:`tflib.tl.trajectory_metrics`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib._compat import renamed_kwargs
from tflib.validation import check_counts

from .embedding_flow import _check_pair, embedding_kernel, embedding_velocity

__all__ = ["vocab_labels", "embedding_velocity", "embedding_kernel", "TrajectoryAwareTranscriptformer"]


@renamed_kwargs(key="key_added")
def vocab_labels(adata, tokenizer, *, key_added: str = "tf_symbol", layer: str | None = None, copy: bool = False):
    """Give every gene a vocabulary symbol, matched by median expression, in ``adata.var[key_added]``.

    The simulator names its genes with human symbols drawn anew for every seed; for a seed the
    course model was not pretrained on, only about 10 % of them are in its 2,000-gene vocabulary.
    The symbols are labels only, so we may relabel: each gene gets a distinct vocabulary gene
    whose tokenizer median is closest (on a log scale) to the gene's own non-zero median of
    ``counts / total * 1e4``. Matching medians keeps the rank-value normalisation meaningful
    (a gene's value is divided by a median of the right size). Deterministic: genes are visited
    from the highest median down and ties go to the vocabulary order. Chapter 10 uses it.

    Parameters
    ----------
    adata
        Cells × genes with counts in ``X`` or ``layers[layer]``.
    tokenizer
        A :class:`~tflib.tokenize.RankValueTokenizer` (its ``gene_medians`` are matched).
    key_added
        ``var`` column to write (formerly ``key``, accepted for one release); pass it to
        ``tokenizer.encode(..., gene_key=key_added)``.
    layer
        Counts layer (``None``: ``X``).
    copy
        ``False``: write ``var[key_added]`` into ``adata`` and return ``None``; ``True``: return
        a new AnnData with the column and leave ``adata`` alone.

    Returns
    -------
    ``None``, or the new AnnData when ``copy=True``. The only key written is ``var[key_added]``
    (strings, one distinct vocabulary symbol per gene); it is written after every label is chosen.
    """
    if not hasattr(tokenizer, "gene_medians"):
        raise TypeError("vocab_labels needs a rank-value tokenizer (it matches gene medians).")
    check_counts(adata, layer=layer)                                         # every value, before any work
    vocab = tokenizer.vocab
    med_by_id = tokenizer.gene_medians.for_vocab(vocab)                      # (V,) NaN for specials
    ids = np.flatnonzero(np.isfinite(med_by_id))
    if ids.size < adata.n_vars:
        raise ValueError(f"The vocabulary has {ids.size} genes with a median but adata has {adata.n_vars} genes; "
                         "subset adata to at most that many genes (e.g. the highly variable ones).")
    X = sp.csr_matrix(adata.X if layer is None else adata.layers[layer], dtype=np.float64)
    totals = np.asarray(X.sum(1)).ravel()
    norm = sp.diags(1e4 / np.maximum(totals, 1e-12)) @ X                      # (n, G) counts per 10k
    norm = sp.csc_matrix(norm)
    gene_med = np.array([np.median(norm.data[norm.indptr[j]:norm.indptr[j + 1]])
                         if norm.indptr[j + 1] > norm.indptr[j] else 1e-3 for j in range(adata.n_vars)])
    log_vocab = np.log(med_by_id[ids])
    free = np.ones(ids.size, dtype=bool)
    chosen = np.empty(adata.n_vars, dtype=object)
    for j in np.argsort(-gene_med, kind="stable"):
        dist = np.where(free, np.abs(log_vocab - np.log(gene_med[j])), np.inf)
        k = int(np.argmin(dist))
        free[k] = False
        chosen[j] = vocab.id_to_token(int(ids[k]))
    target = adata.copy() if copy else adata
    target.var[key_added] = pd.Series(chosen.astype(str), index=adata.var_names)
    return target if copy else None

class TrajectoryAwareTranscriptformer:
    """A Transcriptformer fine-tuned to predict CellRank fate probabilities from tokens (chapter 10).

    The teacher is a fate computation (e.g. :func:`tflib.tl.fates` on velocity) over a set of
    *training* cells; the student reads only each cell's counts, through the tokenizer, and
    learns the teacher's probabilities as soft targets (cross-entropy against the probability
    rows; :func:`tflib.train.finetune`). Afterwards it predicts fates for any cell from its
    expression alone: no unspliced counts, no neighbour graph, no new velocity or GPCCA run,
    so it scores cells that were never part of the velocity fit. Its fine-tuned pooled
    embedding (:meth:`embed`) is the trajectory-aware embedding.

    Parameters
    ----------
    model, tokenizer
        The pretrained model (copied by the engine, never modified) and its tokenizer.
    config
        A :class:`tflib.train.FinetuneConfig`; default: top block and head trained, ``<cls>``
        pooling, 8 epochs with brisk learning rates (head 3e-3, block 2e-3), early stopping on a
        15 % validation split, no calibration, and only the first 64 tokens (the 62 top-ranked
        genes). Measured on the simulator: the engine's gentler defaults (8 epochs, lr 1e-3 /
        2e-4) were still far from converged; 15 epochs at 2e-3 / 1e-3 were only slightly more
        accurate (mean absolute error against the truth 0.152 vs 0.159) at twice the cost, and
        64 tokens were as accurate as 128, so chapter 10 fits its 2.5-minute budget.
    max_len, epochs, seed
        Override the config's context length, epochs and seed (``None``: keep them). Chapters 11--13
        keep the default recipe and read the model's full context:
        ``max_len=model.config.max_len``.
    layer, gene_key, species, input
        How cells are tokenized (``tokenizer.encode`` arguments): counts in ``X`` by default.

    Examples
    --------
    >>> ta = TrajectoryAwareTranscriptformer(model, tokenizer)              # doctest: +SKIP
    >>> ta.fit(raw[train], tflib.tl.fate_probs_frame(velo[train]))          # doctest: +SKIP
    >>> ta.predict_fates(raw[test])                                          # doctest: +SKIP
    """

    def __init__(self, model, tokenizer, *, config=None, max_len: int | None = None,
                 epochs: int | None = None, seed: int | None = None, layer: str | None = None, gene_key: str | None = None,
                 species: str = "auto", input: str = "counts"):
        import dataclasses

        from tflib.train import FinetuneConfig

        _check_pair(model, tokenizer)
        self.model, self.tokenizer = model, tokenizer
        config = config if config is not None else FinetuneConfig(
            mode="top", n_unfrozen=1, epochs=8, batch_size=32, lr=3e-3, encoder_lr=2e-3, patience=3,
            class_weight=None, pooling="cls", calibrate=False, max_len=64, seed=0, device=None)
        overrides = {k: v for k, v in (("max_len", max_len), ("epochs", epochs), ("seed", seed))
                     if v is not None}
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.encode_kwargs = {"layer": layer, "gene_key": gene_key, "species": species, "input": input}
        self.result = None

    def _tokens(self, adata):
        cells = self.tokenizer.encode(adata, **self.encode_kwargs)
        rows = np.asarray(getattr(cells, "obs_index", np.arange(len(cells))), dtype=np.int64)
        return [cells[i] for i in range(len(cells))], rows

    def fit(self, adata, fate_probs) -> "TrajectoryAwareTranscriptformer":
        """Learn ``fate_probs`` (cells × fates DataFrame, index = ``obs_names``) from ``adata``'s counts.

        ``fate_probs`` may cover a subset of ``adata``: only those cells are used. Rows must be
        probabilities (non-negative, summing to 1), e.g. ``tflib.tl.fate_probs_frame(velo)``.
        """
        from tflib.train import finetune

        if not isinstance(fate_probs, pd.DataFrame):
            raise TypeError("fate_probs must be a DataFrame (cells x fates) indexed by obs_names, e.g. "
                            "tflib.tl.fate_probs_frame(adata_after_fates).")
        missing = fate_probs.index.difference(adata.obs_names)
        if len(missing):
            raise KeyError(f"{len(missing)} cells of fate_probs are not in adata (e.g. {missing[0]!r}); "
                           "pass the AnnData whose obs_names the probabilities were computed on.")
        train = adata[fate_probs.index]
        cells, rows = self._tokens(train)
        targets = fate_probs.to_numpy(dtype=np.float64)[rows]                    # (n, K)
        targets = np.clip(targets, 0.0, None)
        targets /= targets.sum(1, keepdims=True)
        self.result = finetune(self.model, cells, targets, config=self.config,
                               classes=[str(c) for c in fate_probs.columns], tokenizer=self.tokenizer)
        return self

    def _fitted(self):
        if self.result is None:
            raise RuntimeError("The model is not trained yet: call .fit(adata, fate_probs) first.")
        return self.result

    @property
    def fates(self) -> list[str]:
        """The fate names (columns of :meth:`predict_fates`)."""
        return list(self._fitted().classes)

    @property
    def history(self) -> pd.DataFrame:
        """Training and validation loss per epoch."""
        return self._fitted().history

    def predict_fates(self, adata) -> pd.DataFrame:
        """Fate probabilities of every cell of ``adata`` (cells × fates; rows sum to 1).

        Cells without any tokenizable gene get a row of NaN.
        """
        res = self._fitted()
        cells, rows = self._tokens(adata)
        out = np.full((adata.n_obs, len(res.classes)), np.nan)
        if cells:
            out[rows] = res.predict_proba(cells)                                # (n, K)
        return pd.DataFrame(out, index=adata.obs_names, columns=res.classes)

    @renamed_kwargs(key="key_added")
    def embed(self, adata, *, key_added: str | None = None) -> np.ndarray:
        """Pooled ``(n_obs, n_embd)`` embedding from the fine-tuned encoder.

        ``key_added`` (formerly ``key``) also writes it to ``adata.obsm[key_added]``.
        """
        res = self._fitted()
        cells, rows = self._tokens(adata)
        out = np.full((adata.n_obs, self.model.config.n_embd), np.nan, dtype=np.float32)
        if cells:
            out[rows] = res.embed(cells)                                         # (n, D)
        if key_added is not None:
            adata.obsm[key_added] = out
        return out
