"""Predicting the responses to perturbations a screen never measured (chapter 11, issue 12 item 5).

A Perturb-seq screen (:func:`tflib.datasets.screen`, or a real one) measures, for each
perturbation, how its cells differ from non-targeting controls. The modern question is whether
a model fitted on *some* perturbations predicts the others. The split is by perturbation, never
by cell (:func:`split_perturbations`), so no held-out perturbation's cells are seen in training.

:func:`screen_responses` gives each perturbation's measured response in two spaces: the **fate
shift** (mean fate probabilities of its cells, or fractions of a fate label, minus the
controls') and the **expression response** (mean log-normalised expression minus the
controls'). :func:`predict_unseen` predicts the held-out responses with

- ``no_change``: a zero response;
- ``additive``: a combination ``A+B`` gets the sum of its singles' measured responses; a gene
  whose single was not measured in training gets the mean response of the training singles
  (the "average perturbation" baseline). A held-out single therefore gets that mean;
- ridge regressions (Ahlmann-Eltze et al. 2025): a vector per perturbed gene (``"linear"``:
  the gene's loadings on the top principal components of the control cells' log-expression;
  each entry of ``features``, e.g. :func:`tflib.tl.gene_embeddings` for the Transcriptformer's
  view of the gene, adds one more) is mapped to the response by ridge regression fitted on
  the training perturbations; a combination's vector is the sum of its genes';
- ``transcriptformer`` (with ``fate_model``): a fate model (e.g. a
  :class:`tflib.tl.TrajectoryAwareTranscriptformer` fine-tuned on the training perturbations'
  cells) predicts a held-out knockout by the in-silico deletion (:func:`tflib.tl.perturb`) of
  its gene(s) in control cells, averaged over those cells. Fate shift only.

Expression predictions are scored with :func:`tflib.tl.response_r2` on all genes and on the
perturbation's top DE genes (:func:`tflib.tl.top_de_genes`), as chapter 11 scores the Norman
doubles; fate shifts by mean absolute error and by the sign on the most shifted fate.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from tflib._compat import dense
from tflib.tl.response import _lognorm_counts
from tflib.tl.response_metrics import _obs_column, response_r2, top_de_genes

__all__ = ["split_perturbations", "screen_responses", "predict_unseen"]

SPLITS = ("control", "train", "test")


def _labels(adata, perturbation_key, control):
    pert = _obs_column(adata, perturbation_key, "perturbation labels")
    control = str(control)
    if not (pert == control).any():
        raise ValueError(f"control={control!r} is not a value of obs[{perturbation_key!r}] (values include "
                         f"{sorted(set(pert))[:8]}). Fix: pass control= the label of the non-targeting "
                         "cells ('control' in tflib.datasets.screen).")
    labels = list(dict.fromkeys(p for p in pert if p != control))
    if not labels:
        raise ValueError(f"obs[{perturbation_key!r}] holds only controls. Fix: screen at least a few genes.")
    return pert, control, labels


def split_perturbations(adata, *, perturbation_key: str = "perturbation", control: str = "control",
                        frac_test: float = 0.3, seed: int = 0, separator: str = "+", min_train: int = 3,
                        key_added: str = "split", copy: bool = False):
    """Split a screen's perturbations (not its cells) into training and held-out ones (chapter 11).

    Singles and combinations (labels containing ``separator``) are shuffled and split
    separately, so each kind appears in both parts when there are enough of it. Every cell of a
    perturbation lands in the same part; controls are their own part.

    Parameters
    ----------
    adata
        A screen: cells with a perturbation label (e.g. :func:`tflib.datasets.screen`).
    perturbation_key, control
        ``obs`` column of labels and the label of the non-targeting controls.
    frac_test
        Fraction of perturbations held out (of each kind, rounded), in (0, 1).
    seed
        Seed of the shuffle.
    separator
        What joins the genes of a combination (``"A+B"``).
    min_train
        Fewest training perturbations accepted (the ridge baselines need a few).
    key_added
        Where the split is written.
    copy
        Return a split copy instead of writing into ``adata``.

    Returns
    -------
    None, or the copy with ``copy=True``. Writes ``obs[key_added]`` (categorical: ``"control"``,
    ``"train"``, ``"test"``) and ``uns[key_added]`` (``train`` and ``test``: label arrays;
    ``perturbation_key``, ``control``, ``frac_test``, ``seed``). A failed call writes nothing.
    """
    if isinstance(frac_test, bool) or not isinstance(frac_test, (int, float)) or not 0 < frac_test < 1:
        raise ValueError(f"frac_test must be a fraction in (0, 1), got {frac_test!r}. Fix: e.g. frac_test=0.3.")
    pert, control, labels = _labels(adata, perturbation_key, control)
    rng = np.random.default_rng(seed)
    test = []
    for kind in (False, True):
        group = [p for p in labels if (separator in p) == kind]
        if not group:
            continue
        n_test = int(round(frac_test * len(group)))
        n_test = min(n_test, len(group) - 1) if not kind else n_test
        test += [group[i] for i in sorted(rng.permutation(len(group))[:n_test])]
    train = [p for p in labels if p not in set(test)]
    if len(train) < min_train or not test:
        raise ValueError(f"{len(labels)} perturbations with frac_test={frac_test} give {len(train)} for training "
                         f"and {len(test)} held out; at least {min_train} training and 1 held-out are needed. "
                         "Fix: screen more genes, or change frac_test.")
    out = adata.copy() if copy else adata
    part = np.where(pert == control, "control", np.where(np.isin(pert, test), "test", "train"))
    out.obs[key_added] = pd.Categorical(part, categories=list(SPLITS))
    out.uns[key_added] = {"train": np.array(train, dtype=object), "test": np.array(test, dtype=object),
                          "perturbation_key": perturbation_key, "control": control,
                          "frac_test": float(frac_test), "seed": int(seed)}
    return out if copy else None


def _fate_matrix(adata, fate_key):
    if fate_key in adata.obsm:
        F = adata.obsm[fate_key]
        if isinstance(F, pd.DataFrame):
            return F.to_numpy(np.float64), [str(c) for c in F.columns]
        F = dense(F)
        names = adata.uns.get("fate_names", [f"fate_{i}" for i in range(F.shape[1])])
        return F, [str(c) for c in names]
    if fate_key in adata.obs:
        lab = adata.obs[fate_key].astype(str)
        cats = sorted(set(lab))
        return (lab.to_numpy()[:, None] == np.array(cats)[None]).astype(np.float64), cats
    raise KeyError(f"{fate_key!r} is neither in adata.obsm nor in adata.obs. Fix: pass fate_key= an obsm key of "
                   "fate probabilities (tflib.datasets.screen: 'fate_probs_true') or an obs column of fate labels.")


def screen_responses(adata, *, perturbation_key: str = "perturbation", control: str = "control",
                     fate_key: str | None = "fate_probs_true", layer: str | None = None) -> dict:
    """Each perturbation's measured fate shift and expression response (chapter 11).

    Parameters
    ----------
    adata
        A screen with counts in ``X`` (or ``layers[layer]``). Not modified.
    perturbation_key, control
        ``obs`` column of labels and the controls' label.
    fate_key
        ``obsm`` key of per-cell fate probabilities, or ``obs`` column of fate labels (then the
        shift is a change of fractions); ``None``: expression only.
    layer
        Layer with the counts (log-normalised here as ``log1p(counts / total * 1e4)``).

    Returns
    -------
    dict
        ``fate``: perturbations x fates, mean minus the controls' mean (absent without
        ``fate_key``); ``expression``: perturbations x genes, the same on log-normalised
        expression; ``control``: the controls' mean log-normalised expression (Series by gene);
        ``n_cells``: cells per perturbation. Rows in the order the labels first appear.
    """
    from tflib.validation import check_counts

    pert, control, labels = _labels(adata, perturbation_key, control)
    C = adata.X if layer is None else adata.layers[layer]
    check_counts(C, name="adata.X" if layer is None else f"adata.layers[{layer!r}]")
    L = _lognorm_counts(C)
    genes = pd.Index(np.asarray(adata.var_names).astype(str), name="gene")

    def means(M):
        rows = {p: np.asarray(M[np.flatnonzero(pert == p)].mean(axis=0)).ravel() for p in [control] + labels}
        ctrl = rows.pop(control)
        return ctrl, np.vstack([rows[p] - ctrl for p in labels])

    ctrl, dX = means(L)
    out = {"expression": pd.DataFrame(dX, index=pd.Index(labels, name="perturbation"), columns=genes),
           "control": pd.Series(ctrl, index=genes),
           "n_cells": pd.Series({p: int((pert == p).sum()) for p in labels})}
    if fate_key is not None:
        F, names = _fate_matrix(adata, fate_key)
        out["fate"] = pd.DataFrame(means(F)[1], index=out["expression"].index, columns=names)
    return out


def _pca_features(adata, control_mask, layer, n_pcs, seed):
    """Each gene's loadings on the top principal components of the controls' log-expression."""
    from sklearn.decomposition import PCA

    C = adata.X if layer is None else adata.layers[layer]
    L = dense(_lognorm_counts(C[np.flatnonzero(control_mask)]))
    k = max(1, min(n_pcs, L.shape[0] - 1, L.shape[1] - 1))
    pca = PCA(k, random_state=seed).fit(L)
    return pd.DataFrame(pca.components_.T * np.sqrt(pca.explained_variance_), index=adata.var_names.astype(str))


def _ridge(F, train, test, Y, alpha, separator):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    F = F.copy()
    F.index = F.index.astype(str)

    def vec(label):
        parts = label.split(separator)
        if any(p not in F.index for p in parts):
            return np.full(F.shape[1], np.nan)
        return F.loc[parts].to_numpy(np.float64).sum(0)

    Xtr = np.vstack([vec(p) for p in train])
    ok = np.isfinite(Xtr).all(1)
    if ok.sum() < 2:
        raise ValueError("Fewer than 2 training perturbations have a feature vector. Fix: pass features whose "
                         "index holds the perturbed genes (adata.var_names).")
    reg = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(Xtr[ok], Y.loc[train].to_numpy()[ok])
    Xte = np.vstack([vec(p) for p in test])
    pred = np.full((len(test), Y.shape[1]), np.nan)
    fine = np.isfinite(Xte).all(1)
    if fine.any():
        pred[fine] = reg.predict(Xte[fine])
    return pd.DataFrame(pred, index=test, columns=Y.columns)


def _split_labels(adata, pert, control, split_key, labels):
    if split_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {split_key!r}. Fix: run tflib.tl.split_perturbations(adata) first "
                       "(or pass split_key=).")
    part = adata.obs[split_key].astype(str).to_numpy()
    bad = sorted(set(part) - set(SPLITS))
    if bad:
        raise ValueError(f"obs[{split_key!r}] holds {bad}; only {SPLITS} are allowed. Fix: tl.split_perturbations.")
    leaked = [p for p in labels if len(set(part[pert == p])) > 1]
    if leaked:
        raise ValueError(f"Perturbations {leaked[:5]} have cells both in training and held out, so held-out "
                         "responses would be seen in training. Fix: split perturbations, not cells: "
                         "tflib.tl.split_perturbations(adata).")
    if (part[pert == control] != "control").any():
        raise ValueError(f"Some control cells are not marked 'control' in obs[{split_key!r}]. Fix: "
                         "tflib.tl.split_perturbations(adata).")
    train = [p for p in labels if part[pert == p][0] == "train"]
    test = [p for p in labels if part[pert == p][0] == "test"]
    if len(train) < 2 or not test:
        raise ValueError(f"The split has {len(train)} training and {len(test)} held-out perturbations; at least 2 "
                         "and 1 are needed. Fix: tflib.tl.split_perturbations(adata, frac_test=0.3) on a screen "
                         "of more genes.")
    return train, test


def _additive(Y, train, test, separator):
    singles = [p for p in train if separator not in p] or list(train)
    mean = Y.loc[singles].mean(0)
    rows = [sum((Y.loc[g] if g in singles else mean) for g in p.split(separator)) for p in test]
    return pd.DataFrame(np.vstack([np.asarray(r) for r in rows]), index=test, columns=Y.columns)


def _in_silico(adata, pert, control, test, fates, model, tokenizer, fate_model, n_control_cells, encode_kwargs,
               pooling, seed, separator):
    from tflib.tl.perturbation import perturb

    enc = dict(encode_kwargs or {})
    key = enc.get("gene_key")
    name = dict(zip(adata.var_names.astype(str), adata.var[key].astype(str))) if key else {}
    ctrl = np.flatnonzero(pert == control)
    take = np.sort(np.random.default_rng(seed).permutation(ctrl)[:n_control_cells])
    units = [tuple(name.get(g, g) for g in p.split(separator)) for p in test]
    units = [u[0] if len(u) == 1 else u for u in units]
    tab = perturb(adata[take], model, tokenizer, units, kind="delete", fate_model=fate_model, pooling=pooling,
                  encode_kwargs=enc)
    cols = [f"fate_shift_{f}" for f in fates]
    missing = [c for c in cols if c not in tab]
    if missing:
        raise ValueError(f"The fate model predicts other fates than the screen records ({missing} missing). Fix: "
                         "fine-tune it on the screen's own fate probabilities.")
    mean = tab.groupby("gene")[cols].mean()                                  # over all chosen control cells
    keys = ["+".join(u) if isinstance(u, tuple) else u for u in units]
    return pd.DataFrame(mean.reindex(keys).to_numpy(), index=test, columns=list(fates))


def predict_unseen(adata, *, perturbation_key: str = "perturbation", control: str = "control",
                   split_key: str = "split", fate_key: str | None = "fate_probs_true", layer: str | None = None,
                   features: dict | None = None, n_pcs: int = 10, alpha: float = 1.0, n_top_de: int = 20,
                   model=None, tokenizer=None, fate_model=None, n_control_cells: int = 100,
                   encode_kwargs: dict | None = None, pooling: str = "mean", seed: int = 0,
                   separator: str = "+", predictions: dict | None = None) -> pd.DataFrame:
    """Predict held-out perturbations' responses from the training ones, and score them (chapter 11).

    Every predictor is fitted on the training perturbations of ``obs[split_key]`` only (see the
    module docstring for each): ``no_change``, ``additive``, ``linear`` and one more ridge regression per
    entry of ``features`` and, with ``fate_model``, ``transcriptformer`` (in-silico deletion in up to
    ``n_control_cells`` control cells, fate shift only; its expression columns are NaN).

    Parameters
    ----------
    adata
        A split screen (:func:`split_perturbations`), counts in ``X`` or ``layers[layer]``. Not modified.
    perturbation_key, control, split_key, fate_key, layer
        As in :func:`split_perturbations` and :func:`screen_responses`.
    features
        Extra ridge predictors, ``{name: genes x d DataFrame}`` (index: ``adata.var_names``), e.g.
        ``{"linear (TF embedding)": tl.gene_embeddings(...)}``. The ``"linear"`` predictor (each
        gene's loadings on the controls' top ``n_pcs`` principal components, scaled by their
        standard deviations) is always included. A perturbation with a gene lacking a vector
        (NaN row, or absent) gets NaN for that predictor.
    alpha
        Ridge penalty (features are standardised first).
    n_top_de
        Genes per held-out perturbation for the ``*_top_de`` scores (:func:`tflib.tl.top_de_genes`,
        Wilcoxon, its cells against the controls).
    model, tokenizer, fate_model, encode_kwargs, pooling
        For the ``transcriptformer`` predictor (:func:`tflib.tl.perturb` arguments); with
        ``encode_kwargs["gene_key"]`` the labels' genes are translated through that ``var`` column.
    n_control_cells, seed
        Control cells perturbed in silico (drawn with ``seed``).
    separator
        What joins the genes of a combination.
    predictions
        Your own predictions, scored beside the others: ``{name: DataFrame}`` indexed by the
        held-out labels, columns fate names and/or gene names (responses, i.e. minus control);
        a space whose columns are missing scores NaN.

    Returns
    -------
    pandas.DataFrame
        The table is the result, one row per held-out perturbation x predictor: ``perturbation``,
        ``predictor``, ``n_cells``; ``fate_mae`` (mean over fates of ``|predicted - measured|`` shift)
        and ``fate_sign`` (1.0 when the predicted shift of the most shifted fate has the measured
        sign, else 0.0; a zero prediction scores 0); ``r2_all``, ``r2_top_de`` (R² of mean
        expression), ``delta_r2_all``, ``delta_r2_top_de``, ``delta_pearson_all``,
        ``delta_pearson_top_de`` (of the response; NaN when the prediction is constant) from
        :func:`tflib.tl.response_r2`.
    """
    pert, control, labels = _labels(adata, perturbation_key, control)
    train, test = _split_labels(adata, pert, control, split_key, labels)
    if fate_model is not None and (model is None or tokenizer is None):
        raise ValueError("fate_model needs model= and tokenizer= too (the in-silico deletion runs through them). "
                         "Fix: pass the model and tokenizer the fate model was fine-tuned from.")
    if fate_model is not None and fate_key is None:
        raise ValueError("fate_model predicts fate shifts, but fate_key=None. Fix: pass fate_key='fate_probs_true'.")
    if features is not None and not (isinstance(features, dict) and all(isinstance(f, pd.DataFrame)
                                                                        for f in features.values())):
        raise TypeError("features must be a dict of {name: genes x d DataFrame}. Fix: e.g. "
                        "features={'TF embedding': tl.gene_embeddings(adata, model, tokenizer)}.")
    resp = screen_responses(adata, perturbation_key=perturbation_key, control=control, fate_key=fate_key, layer=layer)
    E, ctrl = resp["expression"], resp["control"]
    Fd = resp.get("fate", pd.DataFrame(index=E.index))
    Y = pd.concat([Fd.add_prefix("fate:"), E.add_prefix("gene:")], axis=1)
    features = {"linear": _pca_features(adata, pert == control, layer, n_pcs, seed), **(features or {})}
    preds = {"no_change": pd.DataFrame(0.0, index=test, columns=Y.columns),
             "additive": _additive(Y, train, test, separator)}
    for name, F in features.items():
        preds[name] = _ridge(F, train, test, Y, alpha, separator)
    if fate_model is not None:
        fs = _in_silico(adata, pert, control, test, list(Fd.columns), model, tokenizer, fate_model, n_control_cells,
                        encode_kwargs, pooling, seed, separator)
        preds["transcriptformer"] = pd.concat([fs.add_prefix("fate:"),
                                               pd.DataFrame(np.nan, index=test, columns=E.add_prefix("gene:").columns)],
                                              axis=1)
    for name, P in (predictions or {}).items():
        if not isinstance(P, pd.DataFrame) or set(test) - set(map(str, P.index)):
            raise ValueError(f"predictions[{name!r}] must be a DataFrame indexed by every held-out perturbation "
                             f"({test[:5]}...). Fix: one row per label of adata.uns[{split_key!r}]['test'].")
        P = P.copy()
        P.index = P.index.astype(str)
        parts = [P.reindex(columns=Fd.columns).add_prefix("fate:"), P.reindex(columns=E.columns).add_prefix("gene:")]
        preds[name] = pd.concat(parts, axis=1).loc[test].astype(np.float64)
    import anndata as ad
    import scipy.sparse as sp

    C = adata.X if layer is None else adata.layers[layer]
    lab = ad.AnnData(X=sp.csr_matrix(_lognorm_counts(C), dtype=np.float32),
                     obs=pd.DataFrame({"p": pert}, index=pd.Index([str(i) for i in range(adata.n_obs)], dtype=object)),
                     var=pd.DataFrame(index=E.columns))
    fcols, gcols = [c for c in Y.columns if c.startswith("fate:")], [c for c in Y.columns if c.startswith("gene:")]
    rows = []
    for p in test:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Transforming to str index")   # inside top_de_genes
            top = top_de_genes(lab, condition_key="p", control=control, stimulated=p, n_genes=min(n_top_de, E.shape[1]))
        true_f, true_e = Y.loc[p, fcols].to_numpy(np.float64), E.loc[p]
        for name, P in preds.items():
            row = {"perturbation": p, "predictor": name, "n_cells": int(resp["n_cells"][p])}
            pf = P.loc[p, fcols].to_numpy(np.float64)
            if fcols and np.isfinite(pf).all():
                j = int(np.argmax(np.abs(true_f)))
                row["fate_mae"] = float(np.abs(pf - true_f).mean())
                row["fate_sign"] = float(np.sign(pf[j]) == np.sign(true_f[j]) and pf[j] != 0)
            else:
                row["fate_mae"] = row["fate_sign"] = float("nan")
            pe = pd.Series(P.loc[p, gcols].to_numpy(np.float64), index=E.columns)
            for suffix, genes in (("all", None), ("top_de", top)):
                if np.isfinite(pe.to_numpy()).all():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        s = response_r2(ctrl + true_e, ctrl + pe, control_mean=ctrl, genes=genes)
                else:
                    s = dict.fromkeys(("r2", "delta_r2", "delta_pearson"), float("nan"))
                row.update({f"r2_{suffix}": s["r2"], f"delta_r2_{suffix}": s["delta_r2"],
                            f"delta_pearson_{suffix}": s["delta_pearson"]})
            rows.append(row)
    return pd.DataFrame(rows)
