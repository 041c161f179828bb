"""Baselines for in-silico perturbation, on the same cells and genes as :func:`tflib.tl.perturb` (chapter 11).

- :class:`LinearFateModel`: a multinomial logistic regression from log-normalised expression
  to fate probabilities (soft targets). Simple linear models are hard to beat at predicting
  perturbation effects (Ahlmann-Eltze et al. 2025), so every Transcriptformer score in the
  course stands beside this one.
- :func:`perturb_linear`: its in-silico knockout (the gene's log-normalised value set to zero)
  or overexpression (set to the cell's highest value, the analogue of moving a token to the
  front), in the same tidy table as :func:`tflib.tl.perturb` (``fate_shift_<fate>`` columns).
- :func:`matched_random_genes`: for each gene of interest, random genes of matched expression
  level, the null a perturbation score must beat (a "no-change" baseline scores every gene 0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib.validation import check_counts

__all__ = ["LinearFateModel", "perturb_linear", "matched_random_genes"]


#: The counts advice of the fate model's paths: there the layer is the model's, fixed when it is built.
_MODEL_LAYER_ADVICE = ("Fix: tell the model where the counts are when you build it, e.g. "
                       "tl.LinearFateModel(layer='counts'), and fit it again (predict and tl.perturb_linear "
                       "then read the same layer); if adata has no counts, rebuild them with "
                       "tflib.pp.counts_from_lognorm. Counts are never normalised or log-transformed beforehand.")


def _lognorm(adata, layer, advice: str | None = None):
    """``log1p(counts / total * 1e4)`` as a CSR float64 matrix (the input is not modified)."""
    X = adata.X if layer is None else adata.layers[layer]
    check_counts(X, name="adata.X" if layer is None else f"adata.layers[{layer!r}]", advice=advice)
    X = sp.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(1)).ravel()
    if (totals == 0).any():
        raise ValueError(f"{int((totals == 0).sum())} cells have zero counts; remove them first "
                         "(sc.pp.filter_cells(adata, min_counts=1)).")
    X = sp.diags(1e4 / totals) @ X                                               # (n, G) counts per 10k
    X.data = np.log1p(X.data)
    return X.tocsr()


class LinearFateModel:
    """Multinomial logistic regression: log-normalised expression → fate probabilities (chapter 11).

    Soft targets are fitted exactly: each cell appears once per fate, weighted by its
    probability of that fate, which is the cross-entropy against the probability rows.

    Parameters
    ----------
    C
        Inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
    layer
        Where the counts are (default ``X``).
    max_iter
        Solver iterations.
    """

    def __init__(self, *, C: float = 0.1, layer: str | None = None, max_iter: int = 500):
        self.C, self.layer, self.max_iter = C, layer, max_iter
        self.clf, self.genes, self.fates = None, None, None

    def fit(self, adata, fate_probs: pd.DataFrame) -> "LinearFateModel":
        """Fit on the cells of ``fate_probs`` (cells × fates, indexed by ``obs_names``)."""
        from sklearn.linear_model import LogisticRegression

        if not isinstance(fate_probs, pd.DataFrame):
            raise TypeError("fate_probs must be a DataFrame (cells x fates) indexed by obs_names, e.g. "
                            "tflib.tl.fate_probs_frame(adata).")
        missing = fate_probs.index.difference(adata.obs_names)
        if len(missing):
            raise KeyError(f"{len(missing)} cells of fate_probs are not in adata (e.g. {missing[0]!r}).")
        P = fate_probs.to_numpy(dtype=np.float64)
        if not np.isfinite(P).all() or (P < -1e-9).any():
            raise ValueError("fate_probs must be finite and non-negative (probability rows).")
        off = np.abs(P.sum(1) - 1.0)
        if (off > 1e-3).any():
            i = int(np.argmax(off))
            raise ValueError(f"fate_probs rows must sum to 1 over the fates; {int((off > 1e-3).sum())} do not (cell "
                             f"{fate_probs.index[i]!r} sums to {P[i].sum():.3g}): was a fate column left out? Fix: "
                             "pass every fate's column, or renormalise on purpose: "
                             "fate_probs.div(fate_probs.sum(axis=1), axis=0).")
        P = np.clip(P, 0, None)
        P /= P.sum(1, keepdims=True)
        X = _lognorm(adata[fate_probs.index], self.layer, _MODEL_LAYER_ADVICE)                        # (n, G)
        K = P.shape[1]
        Xr = sp.vstack([X] * K).tocsr()                                          # (n*K, G): one copy per fate
        y = np.repeat(np.arange(K), X.shape[0])
        w = P.T.ravel()                                                          # weight = P(cell, fate)
        keep = w > 0
        self.clf = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.clf.fit(Xr[keep], y[keep], sample_weight=w[keep])
        self.genes = list(map(str, adata.var_names))
        self.fates = [str(f) for f in fate_probs.columns]
        self._classes = self.clf.classes_
        return self

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W (K, G), b (K,))`` with probabilities ``softmax(x @ W.T + b)``, one row per fate.

        A fate that no training cell could reach gets logit ``-inf`` (probability 0).
        """
        if self.clf is None:
            raise RuntimeError("The model is not trained yet: call .fit(adata, fate_probs) first.")
        coef, icpt = self.clf.coef_, self.clf.intercept_
        if coef.shape[0] == 1:                                                   # sklearn's binary form
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, icpt]
        K, G = len(self.fates), coef.shape[1]
        W, b = np.zeros((K, G)), np.full(K, -np.inf)
        W[self._classes], b[self._classes] = coef, icpt
        return W, b

    def _proba(self, X) -> np.ndarray:
        W, b = self.weights()
        return _softmax(np.asarray(X @ W.T) + b)                                 # (n, K)

    def predict_fates(self, adata) -> pd.DataFrame:
        """Fate probabilities of every cell of ``adata`` (cells × fates; rows sum to 1)."""
        self._check_genes(adata)
        return pd.DataFrame(self._proba(_lognorm(adata, self.layer, _MODEL_LAYER_ADVICE)), index=adata.obs_names, columns=self.fates)

    def _check_genes(self, adata):
        if self.clf is None:
            raise RuntimeError("The model is not trained yet: call .fit(adata, fate_probs) first.")
        if list(map(str, adata.var_names)) != self.genes:
            raise ValueError("adata's genes differ from those the linear model was fitted on; subset or "
                             "reorder adata to the same var_names (adata[:, model.genes]).")


def perturb_linear(adata, fate_model: LinearFateModel, genes, *, kind: str = "delete") -> pd.DataFrame:
    """In-silico knockout or overexpression through the linear fate baseline (chapter 11).

    Parameters
    ----------
    adata
        The cells (counts; the same genes as the model was fitted on). Not modified.
    fate_model
        A fitted :class:`LinearFateModel`.
    genes
        A gene name, a list of them, or ``"all"`` (every gene, in the cells that express it).
    kind
        ``"delete"``: the gene's log-normalised value is set to 0 (cells that do not express it
        are unchanged, ``expressed=False``); ``"overexpress"``: set to the cell's highest value.

    Returns
    -------
    pandas.DataFrame
        One row per (cell, gene): ``cell``, ``gene``, ``kind``, ``expressed`` and one
        ``fate_shift_<fate>`` column per fate (perturbed minus unperturbed probability), the
        columns :func:`tflib.tl.perturb` uses, so the tables can be compared row by row.
    """
    if kind not in ("delete", "overexpress"):
        raise ValueError(f"kind={kind!r} is not a perturbation; use kind='delete' or kind='overexpress'.")
    fate_model._check_genes(adata)
    names = np.asarray(fate_model.genes, dtype=object)
    if isinstance(genes, str) and genes == "all":
        cols = np.arange(len(names))
    else:
        asked = [genes] if isinstance(genes, str) else list(genes)
        if not asked:
            raise ValueError("genes is empty; pass a gene name, a list of them, or genes='all'.")
        where = {g: j for j, g in enumerate(names)}
        unknown = [g for g in asked if g not in where]
        if unknown:
            raise KeyError(f"{len(unknown)} of the genes are not in adata ({unknown[:5]}); genes are "
                           "matched against adata.var_names.")
        cols = np.array([where[g] for g in asked])
    X = _lognorm(adata, fate_model.layer, _MODEL_LAYER_ADVICE).tocsc()                                # (n, G)
    W, b = fate_model.weights()                                                  # (K, G), (K,)
    z0 = np.asarray(X @ W.T) + b                                                 # (n, K) logits
    p0 = _softmax(z0)
    top = np.asarray(X.max(1).todense()).ravel()                                # (n,) each cell's highest value
    every = isinstance(genes, str) and genes == "all"
    frames = []
    for j in cols:
        col = np.asarray(X[:, j].todense()).ravel()                             # (n,)
        expressed = col > 0
        rows = np.flatnonzero(expressed) if (every and kind == "delete") else np.arange(X.shape[0])
        new = np.zeros(len(rows)) if kind == "delete" else top[rows]            # (r,)
        # the model is linear in the input: changing x_j moves every logit by (new - x_j) * W[:, j]
        z = z0[rows] + (new - col[rows])[:, None] * W[:, j][None, :]            # (r, K)
        shift = _softmax(z) - p0[rows]                                           # (r, K)
        frame = pd.DataFrame(shift, columns=[f"fate_shift_{f}" for f in fate_model.fates])
        frame.insert(0, "expressed", expressed[rows])
        frame.insert(0, "kind", kind)
        frame.insert(0, "gene", names[j])
        frame.insert(0, "cell", np.asarray(adata.obs_names)[rows])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def matched_random_genes(adata, genes, *, n_per_gene: int = 1, n_bins: int = 20, layer: str | None = None,
                         exclude=(), seed: int = 0) -> pd.DataFrame:
    """Random genes of matched expression level, the null for perturbation scores (chapters 11, 12).

    Genes are binned by mean log-normalised expression (``n_bins`` quantile bins); for each
    gene of interest, ``n_per_gene`` other genes are drawn from its bin (never a gene of
    interest or of ``exclude``).

    Parameters
    ----------
    adata
        Cells with counts in ``X`` (or ``layers[layer]``).
    genes
        Genes of interest (``adata.var_names``).
    n_per_gene, n_bins, layer, exclude, seed
        Draws per gene; expression bins; where the counts are; genes never drawn; the seed.
        The genes draw in turn from one random stream, so the same genes in another order
        give another (equally valid) null; keep the order fixed to reproduce a table. A random
        gene can be drawn for several genes: pass ``random_gene`` to
        :func:`tflib.stats.test_hypotheses` as it is (repeats count once).

    Returns
    -------
    pandas.DataFrame
        Columns ``gene`` (of interest), ``random_gene``, ``bin``.
    """
    genes = [genes] if isinstance(genes, str) else list(genes)
    names = np.asarray(adata.var_names, dtype=object)
    missing = [g for g in genes if g not in set(names)]
    if missing:
        raise KeyError(f"{missing[:5]} not in adata.var_names.")
    mean = np.asarray(_lognorm(adata, layer).mean(0)).ravel()                  # (G,)
    edges = np.unique(np.quantile(mean, np.linspace(0, 1, n_bins + 1)))
    bins = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, len(edges) - 2)
    banned = set(genes) | set(exclude)
    rng = np.random.default_rng(seed)
    rows = []
    for g in genes:
        b = bins[np.flatnonzero(names == g)[0]]
        pool = [n for n in names[bins == b] if n not in banned]
        if len(pool) < n_per_gene:
            raise ValueError(f"only {len(pool)} genes share {g!r}'s expression bin; lower n_per_gene or n_bins.")
        for r in rng.choice(pool, size=n_per_gene, replace=False):
            rows.append({"gene": g, "random_gene": str(r), "bin": int(b)})
    return pd.DataFrame(rows)
