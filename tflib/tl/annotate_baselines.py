"""Annotation baselines that need no foundation model, scored with bootstrap intervals.

Chapters 02 and 07 put every annotation method into one table, on one explicit split, with
95 % bootstrap intervals (Kedzierska et al. 2025 found that such simple baselines often beat
zero-shot foundation-model embeddings, so they must be in the table):

* :func:`pca_logreg` -- logistic regression on the PCA of highly variable genes, where the
  genes, the scaling and the PCA are all fitted on the training cells only;
* :func:`project_pca` -- the reference's PCA applied to a query (the linear mapping baseline);
* :func:`transfer_labels` -- kNN majority vote in a shared embedding (the scVI latent space,
  or a query mapped onto a reference with :func:`tflib.tl.map_query`);
* :func:`evaluate_predictions` -- accuracy, macro-F1 (and, per class, recall) with
  :func:`tflib.stats.bootstrap_ci`; the Transcriptformer rows of chapter 07 use it too.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from tflib.tl.splits import Split, check_class_sizes, check_split

__all__ = [
    "pca_logreg",
    "project_pca",
    "transfer_labels",
    "evaluate_predictions",
    "per_class_recall",
    "baseline_classifiers",
]


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def _matrix(adata, layer):
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"adata.layers has no {layer!r} (has {list(adata.layers.keys())}). Pass layer=None to "
            "use X, which must then hold log-normalised values."
        )
    return adata.layers[layer] if layer is not None else adata.X


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
        X = _dense(_matrix(adata[:, self.genes], layer)).astype(np.float64)
        return self.pca.transform(np.clip(self.scaler.transform(X), -10, 10))

    def predict_proba(self, adata, layer="lognorm"):
        return self.clf.predict_proba(self._features(adata, layer))

    def predict(self, adata, layer="lognorm"):
        return self.clf.predict(self._features(adata, layer))


def pca_logreg(
    train,
    label_key: str,
    *,
    layer: str | None = "lognorm",
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
        With ``predict(adata, layer)`` and ``predict_proba(adata, layer)``.
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
    tmp = ad.AnnData(X=X.copy(), var=pd.DataFrame(index=train.var_names))
    n_top = int(min(n_top_genes, train.n_vars))
    if n_top < train.n_vars:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
        genes = train.var_names[tmp.var["highly_variable"].to_numpy()]
    else:
        genes = train.var_names
    Xg = _dense(_matrix(train[:, genes], layer)).astype(np.float64)
    scaler = StandardScaler().fit(Xg)
    Z = np.clip(scaler.transform(Xg), -10, 10)
    n_comp = int(min(n_pcs, Z.shape[0] - 1, Z.shape[1]))
    pca = PCA(n_components=n_comp, random_state=seed).fit(Z)
    return np.asarray(genes), scaler, pca


def project_pca(
    reference,
    query,
    *,
    layer: str | None = "lognorm",
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    seed: int = 0,
    key: str = "X_pca_ref",
) -> None:
    """Fit HVGs + scaling + PCA on the reference and project both onto it (``obsm[key]``).

    The linear counterpart of :func:`tflib.tl.map_query` (chapter 02): the query is placed in
    the reference's PCA space without refitting anything, so kNN label transfer in
    ``obsm[key]`` is a fair baseline for scArches-style mapping. Nothing corrects the batch
    effect between the two.
    """
    genes, scaler, pca = _fit_pca_features(reference, layer, n_top_genes, n_pcs, seed)
    proj = PcaLogreg(genes, scaler, pca, None)
    reference.obsm[key] = proj._features(reference, layer)
    query.obsm[key] = proj._features(query, layer)


def transfer_labels(
    reference,
    query,
    *,
    key: str = "X_scvi",
    label_key: str = "cell_type",
    k: int = 15,
    result_key: str | None = None,
) -> pd.Series:
    """Label query cells by a majority vote of their ``k`` nearest reference cells.

    Used in chapter 02 (label transfer after atlas mapping) and chapter 07 (kNN baselines on
    scVI and zero-shot Transcriptformer embeddings).

    Parameters
    ----------
    reference, query
        AnnData objects sharing an embedding in ``obsm[key]`` (same dimensions, same space --
        e.g. a reference from :func:`tflib.tl.scvi_integrate` and a query from
        :func:`tflib.tl.map_query`). They may be the same object's train/test views.
    key
        The ``obsm`` embedding.
    label_key
        Reference ``obs`` column to transfer. Every class needs at least 2 reference cells.
    k
        Neighbours per vote (capped at the reference size).
    result_key
        Write ``query.obs[result_key]`` (prediction) and ``query.obs[result_key + "_confidence"]``
        (fraction of the k neighbours that agree). Default ``f"{label_key}_pred"``.

    Returns
    -------
    pandas.Series
        Predicted labels, indexed by the query's ``obs_names``.
    """
    from sklearn.neighbors import KNeighborsClassifier

    for name, a in (("reference", reference), ("query", query)):
        if key not in a.obsm:
            raise KeyError(f"The {name} has no obsm[{key!r}] (has {list(a.obsm.keys())}).")
    if label_key not in reference.obs:
        raise KeyError(f"The reference has no obs[{label_key!r}] to transfer.")
    R, Q = np.asarray(reference.obsm[key]), np.asarray(query.obsm[key])
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
    result_key = result_key or f"{label_key}_pred"
    query.obs[result_key] = pd.Categorical(pred)
    query.obs[f"{result_key}_confidence"] = proba.max(axis=1)
    return pd.Series(pred, index=query.obs_names, name=result_key)


def evaluate_predictions(
    y_true, y_pred, *, method: str = "method", n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy and macro-F1 with 95 % bootstrap intervals, as one table row per metric.

    Used for every row of the annotation tables (chapters 02 and 07). Test cells whose true
    class never occurred in training count as errors: that is what a user would experience.

    Returns
    -------
    pandas.DataFrame
        Columns ``method, metric, estimate, low, high, n_cells``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    from tflib.stats.bootstrap import bootstrap_ci

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    metrics = {
        "accuracy": accuracy_score,
        "macro_f1": partial(f1_score, average="macro", zero_division=0),
    }
    rows = []
    for name, fn in metrics.items():
        res = bootstrap_ci(fn, y_true, y_pred, n_boot=n_boot, seed=seed)
        rows.append({"method": method, "metric": name, **res.as_dict(), "n_cells": len(y_true)})
    return pd.DataFrame(rows)


def per_class_recall(y_true, y_pred, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Recall of every true class with a 95 % bootstrap interval (rare-type sensitivity, ch. 07).

    Resamples are taken within each class, so a class's interval reflects only its own cells.
    """
    from tflib.stats.bootstrap import bootstrap_ci

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    rows = []
    for i, cls in enumerate(np.unique(y_true)):
        m = y_true == cls
        res = bootstrap_ci(lambda t, p: float(np.mean(t == p)), y_true[m], y_pred[m],
                           n_boot=n_boot, seed=seed + i)
        rows.append({"class": cls, "recall": res.estimate, "low": res.low, "high": res.high,
                     "n_cells": int(m.sum())})
    return pd.DataFrame(rows).set_index("class")


def baseline_classifiers(
    adata,
    label_key: str,
    split: Split,
    *,
    layer: str | None = "lognorm",
    embed_key: str | None = None,
    k: int = 15,
    n_top_genes: int = 2000,
    n_pcs: int = 50,
    n_boot: int = 1000,
    seed: int = 0,
    key_added: str = "baseline",
) -> pd.DataFrame:
    """Train and score the model-free annotation baselines on one explicit split.

    Used in chapters 02 and 07. The split is checked for leaks first.

    * ``"PCA + logistic regression"`` (always): :func:`pca_logreg` on the training cells.
    * ``"kNN on <embed_key>"`` (if ``embed_key`` is given): :func:`transfer_labels` from the
      training to the test cells. For an honest number the embedding itself must not have been
      fitted with the test labels; scVI never sees labels, and for a strict split fit it on the
      training cells and map the test cells with :func:`tflib.tl.map_query`.

    Predictions are written to ``adata.obs[f"{key_added}_<short name>"]`` for the test cells.

    Returns
    -------
    pandas.DataFrame
        Long table, columns ``method, metric, estimate, low, high, n_cells``.
    """
    check_split(adata, split)
    train_mask, test_mask = split.masks(adata)
    train, test = adata[train_mask], adata[test_mask]
    y_test = test.obs[label_key].astype(str).to_numpy()
    tables = []

    model = pca_logreg(train, label_key, layer=layer, n_top_genes=n_top_genes, n_pcs=n_pcs, seed=seed)
    pred = model.predict(test, layer=layer)
    col = f"{key_added}_pca_logreg"
    adata.obs[col] = pd.Series(pred, index=test.obs_names).reindex(adata.obs_names).astype("category")
    tables.append(evaluate_predictions(y_test, pred, method="PCA + logistic regression",
                                       n_boot=n_boot, seed=seed))

    if embed_key is not None:
        test_copy = test.copy()
        pred = transfer_labels(train, test_copy, key=embed_key, label_key=label_key, k=k,
                               result_key="_knn").to_numpy()
        col = f"{key_added}_knn_{embed_key}"
        adata.obs[col] = pd.Series(pred, index=test.obs_names).reindex(adata.obs_names).astype("category")
        tables.append(evaluate_predictions(y_test, pred, method=f"kNN on {embed_key}",
                                           n_boot=n_boot, seed=seed))
    return pd.concat(tables, ignore_index=True)
