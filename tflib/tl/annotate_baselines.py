"""Annotation baselines that need no foundation model, scored with bootstrap intervals.

Chapters 02 and 07 put every annotation method into one table, on one explicit split, with
95 % bootstrap intervals (Kedzierska et al. 2025 found that such simple baselines often beat
zero-shot foundation-model embeddings, so they must be in the table):

* :func:`pca_logreg` -- logistic regression on the PCA of highly variable genes, where the
  genes, the scaling and the PCA are all fitted on the training cells only;
* :func:`project_pca` -- the reference's PCA applied to a query (the linear mapping baseline);
* :func:`transfer_labels` -- kNN majority vote in a shared embedding (the scVI latent space,
  or a query mapped onto a reference with :func:`tflib.tl.map_query`);
* :func:`baseline_classifiers` -- the above trained and scored on one explicit split.

The scores, accuracy and macro-F1 (:func:`tflib.tl.evaluate_predictions`) and per-class recall
(:func:`tflib.tl.per_class_recall`), each with a bootstrap interval, live in
:mod:`tflib.tl.annotation_metrics`; the Transcriptformer rows of chapter 07 use them too.

The expression baselines read log-normalised values from ``layers["lognorm"]`` by default. When
that layer is absent it is computed on the fly from the raw counts (``layers["counts"]`` if
present, else ``X``): each cell scaled to 10,000 counts, then ``log1p`` -- the same values as
Seurat's and scanpy's ``normalize_total(target_sum=1e4)`` + ``log1p``. The result is used and
discarded; the user's AnnData is never modified. Input that is not raw counts (checked in full)
gets an error naming the one-line fix instead.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib._compat import dense, renamed_kwargs
from tflib.tl.annotation_metrics import evaluate_predictions, per_class_recall  # noqa: F401 (re-export)
from tflib.tl.splits import Split, check_class_sizes, check_split

__all__ = [
    "pca_logreg",
    "project_pca",
    "transfer_labels",
    "baseline_classifiers",
]


#: The layer the baselines read by default, computed from counts when absent.
LOGNORM = "lognorm"
#: Counts per cell after scaling, before ``log1p`` (Seurat's and scanpy's usual 1e4).
TARGET_SUM = 1e4


def lognorm_from_counts(counts, target_sum: float = TARGET_SUM):
    """``log1p(counts / cell total * target_sum)`` as a new float64 matrix (sparse stays sparse).

    Cells without counts stay all-zero. ``counts`` itself is not modified.
    """
    if sp.issparse(counts):
        M = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        totals = np.asarray(M.sum(axis=1)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        M = sp.csr_matrix(sp.diags(scale) @ M)
        np.log1p(M.data, out=M.data)
        return M
    M = np.array(counts, dtype=np.float64, copy=True)
    totals = M.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(M * scale)


def _matrix(adata, layer):
    """The matrix the baselines read: ``X``, ``layers[layer]``, or a computed ``"lognorm"``."""
    if layer is None:
        return adata.X
    if layer in adata.layers:
        return adata.layers[layer]
    have = list(adata.layers.keys())
    if layer != LOGNORM:
        raise KeyError(
            f"adata.layers has no {layer!r} (has {have}). Fix: pass the name of the layer with "
            f"log-normalised values, layer={LOGNORM!r} (computed from raw counts when absent), or "
            "layer=None to use X as it is."
        )
    from tflib.validation import CountsError, check_counts

    source = "counts" if "counts" in adata.layers else None
    where = f"adata.layers[{source!r}]" if source else "adata.X"
    try:
        check_counts(adata, layer=source)
    except CountsError as err:
        raise KeyError(
            f"adata.layers has no {LOGNORM!r} (has {have}), and it cannot be computed because {where} does "
            f"not hold raw counts ({err}). Fix, if {where} is already log-normalised: "
            f"adata.layers[{LOGNORM!r}] = {where}.copy() -- or pass layer=None to use X as it is."
        ) from None
    return lognorm_from_counts(adata.layers[source] if source else adata.X)


class PcaLogreg:
    """Fitted HVG -> standardise -> PCA -> logistic regression pipeline (see :func:`pca_logreg`)."""

    def __init__(self, genes, scaler, pca, clf):
        self.genes, self.scaler, self.pca, self.clf = genes, scaler, pca, clf

    @property
    def classes_(self):
        return self.clf.classes_

    def _features(self, adata, layer):
        missing = pd.Index(self.genes).difference(adata.var_names)
        if len(missing):
            raise ValueError(
                f"{len(missing)} of the {len(self.genes)} genes the PCA model was fitted on are "
                f"missing (e.g. {missing[:5].tolist()}). Fix: predict on data with the training "
                "genes (same identifiers), or retrain on the shared genes."
            )
        cols = adata.var_names.get_indexer(self.genes)
        X = dense(_columns(_matrix(adata, layer), cols))
        return self.pca.transform(np.clip(self.scaler.transform(X), -10, 10))

    def predict_proba(self, adata, layer=LOGNORM):
        """Class probabilities (columns in the order of ``classes_``); ``layer`` as in :func:`pca_logreg`."""
        return self.clf.predict_proba(self._features(adata, layer))

    def predict(self, adata, layer=LOGNORM):
        """Predicted labels; ``layer`` as in :func:`pca_logreg` (``"lognorm"`` computed if absent)."""
        return self.clf.predict(self._features(adata, layer))


def _columns(M, cols):
    """Columns ``cols`` of a dense or sparse matrix (after the full rows were normalised)."""
    return M[:, cols]


def pca_logreg(
    train,
    label_key: str,
    *,
    layer: str | None = LOGNORM,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    class_weight: str | None = "balanced",
    C: float = 1.0,
    seed: int = 0,
) -> PcaLogreg:
    """Fit logistic regression on the PCA of highly variable genes of the training cells.

    Used in chapters 02 and 07 as the "no deep learning" baseline. Everything that looks at
    expression (HVG choice, scaling, PCA) is fitted on ``train`` only, so nothing about the test
    cells leaks into the features.

    Parameters
    ----------
    train
        Training cells with log-normalised values in ``layers[layer]`` (or ``X`` if ``None``).
    layer
        Default ``"lognorm"``. If ``train`` has no such layer, it is computed from the raw counts
        (``layers["counts"]`` if present, else ``X``; every value checked) as
        ``log1p(counts / cell total * 1e4)`` on a copy: ``train`` is never modified. Input that is
        not raw counts raises an error naming the one-line fix.
    label_key
        ``obs`` column with the cell type. Every class needs at least 2 training cells.
    n_top_genes, n_pcs
        Genes kept (scanpy's ``"seurat"`` dispersion ranking) and principal components.
    class_weight
        ``"balanced"`` up-weights rare types; ``None`` weights every cell equally.
    C, seed
        Inverse regularisation strength and the seed of the PCA solver and the classifier.

    Returns
    -------
    PcaLogreg
        The fitted model (the purpose of this function; nothing is written to ``train``), with
        ``predict(adata, layer)`` and ``predict_proba(adata, layer)``.
    """
    from sklearn.linear_model import LogisticRegression

    if label_key not in train.obs:
        raise KeyError(f"train.obs has no column {label_key!r}.")
    y = train.obs[label_key].astype(str).to_numpy()
    check_class_sizes(y, min_cells=2, where="training")
    genes, scaler, pca = _fit_pca_features(train, layer, n_top_genes, n_pcs, seed)
    model = PcaLogreg(genes, scaler, pca, None)
    clf = LogisticRegression(C=C, max_iter=2000, class_weight=class_weight, random_state=seed)
    model.clf = clf.fit(model._features(train, layer), y)
    return model


def _fit_pca_features(train, layer, n_top_genes, n_pcs, seed):
    """HVGs, standard scaler and PCA fitted on the training cells only."""
    import anndata as ad
    import scanpy as sc
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = _matrix(train, layer)
    n_top = int(min(n_top_genes, train.n_vars))
    if n_top < train.n_vars:
        tmp = ad.AnnData(X=X.copy(), var=pd.DataFrame(index=train.var_names))
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
        keep = tmp.var["highly_variable"].to_numpy()
    else:
        keep = np.ones(train.n_vars, dtype=bool)
    genes = train.var_names[keep]
    Xg = dense(_columns(X, np.flatnonzero(keep)))
    scaler = StandardScaler().fit(Xg)
    Z = np.clip(scaler.transform(Xg), -10, 10)
    n_comp = int(min(n_pcs, Z.shape[0] - 1, Z.shape[1]))
    pca = PCA(n_components=n_comp, random_state=seed).fit(Z)
    return np.asarray(genes), scaler, pca


@renamed_kwargs(key="key_added")
def project_pca(
    reference,
    query,
    *,
    layer: str | None = LOGNORM,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    seed: int = 0,
    key_added: str = "X_pca_ref",
) -> None:
    """Fit HVGs + scaling + PCA on the reference and project both onto it (chapter 02).

    The linear counterpart of :func:`tflib.tl.map_query`: the query is placed in the
    reference's PCA space without refitting anything, so kNN label transfer in
    ``obsm[key_added]`` is a fair baseline for scArches-style mapping. Nothing corrects the batch
    effect between the two.

    Parameters
    ----------
    reference, query
        AnnData objects with the same gene identifiers (the query needs the reference's HVGs).
    layer
        As in :func:`pca_logreg` (``"lognorm"`` is computed from raw counts when absent,
        without modifying either object).
    n_top_genes, n_pcs, seed
        HVGs kept, principal components and the PCA solver's seed.
    key_added
        ``obsm`` key written in both objects (``key`` is still accepted for one release).

    Returns
    -------
    None
        Writes ``reference.obsm[key_added]`` and ``query.obsm[key_added]`` (cells x PCs), both only
        after both projections succeeded.
    """
    genes, scaler, pca = _fit_pca_features(reference, layer, n_top_genes, n_pcs, seed)
    proj = PcaLogreg(genes, scaler, pca, None)
    ref_pcs, query_pcs = proj._features(reference, layer), proj._features(query, layer)
    reference.obsm[key_added] = ref_pcs
    query.obsm[key_added] = query_pcs


@renamed_kwargs(key="embed_key", result_key="key_added")
def transfer_labels(
    reference,
    query,
    *,
    embed_key: str = "X_scvi",
    label_key: str = "cell_type",
    k: int = 15,
    key_added: str | None = None,
) -> pd.Series:
    """Label query cells by a majority vote of their ``k`` nearest reference cells.

    Used in chapter 02 (label transfer after atlas mapping) and chapter 07 (kNN baselines on
    scVI and zero-shot Transcriptformer embeddings).

    Parameters
    ----------
    reference, query
        AnnData objects sharing an embedding in ``obsm[embed_key]`` (same dimensions, same space --
        e.g. a reference from :func:`tflib.tl.scvi_integrate` and a query from
        :func:`tflib.tl.map_query`). They may be the same object's train/test views.
    embed_key
        The ``obsm`` embedding read in both (``key`` is still accepted for one release).
    label_key
        Reference ``obs`` column to transfer. Every class needs at least 2 reference cells.
    k
        Neighbours per vote (capped at the reference size).
    key_added
        Prefix of the columns written into the query (``result_key`` is still accepted for one
        release). Default ``f"{label_key}_pred"``.

    Returns
    -------
    pandas.Series
        Predicted labels, indexed by the query's ``obs_names`` (the table is the result). Also
        written into the query (the reference is not modified):

        - ``query.obs[key_added]``: the predicted label (categorical);
        - ``query.obs[key_added + "_confidence"]``: the fraction of the k neighbours that agree.
    """
    from sklearn.neighbors import KNeighborsClassifier

    for name, a in (("reference", reference), ("query", query)):
        if embed_key not in a.obsm:
            raise KeyError(f"The {name} has no obsm[{embed_key!r}] (has {list(a.obsm.keys())}). Fix: compute "
                           "the embedding first (e.g. tl.scvi_integrate / tl.map_query / tl.embed) or pass "
                           "embed_key= naming one that exists.")
    if label_key not in reference.obs:
        raise KeyError(f"The reference has no obs[{label_key!r}] to transfer.")
    R, Q = np.asarray(reference.obsm[embed_key]), np.asarray(query.obsm[embed_key])
    if R.shape[1] != Q.shape[1]:
        raise ValueError(
            f"The reference embedding has {R.shape[1]} dimensions and the query {Q.shape[1]}: they "
            "are not the same space. Fix: map the query onto the reference (tflib.tl.map_query)."
        )
    y = reference.obs[label_key].astype(str).to_numpy()
    check_class_sizes(y, min_cells=2, where="reference")
    knn = KNeighborsClassifier(n_neighbors=int(min(k, R.shape[0]))).fit(R, y)
    proba = knn.predict_proba(Q)
    pred = knn.classes_[proba.argmax(axis=1)]
    key_added = key_added or f"{label_key}_pred"
    query.obs[key_added] = pd.Categorical(pred)
    query.obs[f"{key_added}_confidence"] = proba.max(axis=1)
    return pd.Series(pred, index=query.obs_names, name=key_added)


def baseline_classifiers(
    adata,
    label_key: str,
    split: Split,
    *,
    layer: str | None = LOGNORM,
    embed_key: str | None = None,
    k: int = 15,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    n_boot: int = 1000,
    seed: int = 0,
    key_added: str = "baseline",
) -> pd.DataFrame:
    """Train and score the model-free annotation baselines on one explicit split (chapters 02 and 07).

    The split is checked for leaks first.

    * ``"PCA + logistic regression"`` (always): :func:`pca_logreg` on the training cells.
    * ``"kNN on <embed_key>"`` (if ``embed_key`` is given): :func:`transfer_labels` from the
      training to the test cells. For an honest number the embedding itself must not have been
      fitted with the test labels; scVI never sees labels, and for a strict split fit it on the
      training cells and map the test cells with :func:`tflib.tl.map_query`.

    Parameters
    ----------
    adata
        All cells; ``split`` names the training and test cells.
    label_key
        ``obs`` column with the cell type.
    split
        An explicit :class:`~tflib.tl.Split` (:func:`tflib.tl.make_split`).
    layer
        As in :func:`pca_logreg`: default ``"lognorm"``, computed from raw counts (on a copy)
        when ``adata`` has no such layer.
    embed_key
        ``obsm`` embedding for the kNN baseline (none if ``None``).
    k, n_top_genes, n_pcs
        Neighbours of the kNN vote; HVGs and PCs of the PCA baseline.
    n_boot, seed
        Bootstrap resamples of the intervals and the seed of everything random.
    key_added
        Prefix of the ``obs`` columns written.

    Returns
    -------
    pandas.DataFrame
        Long table, columns ``method, metric, estimate, low, high, n_cells`` (the result). The
        test cells' predictions are also written, once every baseline has run (NaN for training
        cells):

        - ``obs[key_added + "_pca_logreg"]``;
        - ``obs[key_added + "_knn_" + embed_key]`` (with ``embed_key``).
    """
    check_split(adata, split=split)
    if label_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {label_key!r} (label_key); columns: {list(adata.obs.columns)}.")
    train_mask, test_mask = split.masks(adata)
    train, test = adata[train_mask], adata[test_mask]
    y_test = test.obs[label_key].astype(str).to_numpy()
    tables, columns = [], {}

    model = pca_logreg(train, label_key, layer=layer, n_top_genes=n_top_genes, n_pcs=n_pcs, seed=seed)
    pred = model.predict(test, layer=layer)
    columns[f"{key_added}_pca_logreg"] = pred
    tables.append(evaluate_predictions(y_test, pred, method="PCA + logistic regression",
                                       n_boot=n_boot, seed=seed))

    if embed_key is not None:
        test_copy = test.copy()
        pred = transfer_labels(train, test_copy, embed_key=embed_key, label_key=label_key, k=k,
                               key_added="_knn").to_numpy()
        columns[f"{key_added}_knn_{embed_key}"] = pred
        tables.append(evaluate_predictions(y_test, pred, method=f"kNN on {embed_key}",
                                           n_boot=n_boot, seed=seed))
    for col, values in columns.items():
        adata.obs[col] = pd.Series(values, index=test.obs_names).reindex(adata.obs_names).astype("category")
    return pd.concat(tables, ignore_index=True)
