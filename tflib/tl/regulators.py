"""Candidate regulators of each fate, five ways, and their score against a known answer (chapter 13).

:func:`rank_regulators` ranks candidate genes (e.g. every transcription factor) for each fate
by five statistics, two read from the model and three from the data:

- ``attention``: how much more attention the gene's token receives in the fate's cells than
  in the other cells (:func:`tflib.tl.attention.attention_received`);
- ``embedding``: cosine similarity of the gene's static embedding to the mean embedding of the
  fate's marker programme;
- ``drivers``: CellRank's driver statistic, the correlation of expression with the fate
  probability across cells (chapter 09);
- ``knockout``: how much an in-silico deletion lowers the fate (a table of
  :func:`tflib.tl.perturb` or :func:`tflib.tl.perturb_linear`, chapter 11);
- ``coexpression``: mean correlation with the fate's marker genes, the plain baseline.

:func:`score_regulators` compares each ranking with the true regulators (for the simulator:
:func:`tflib.datasets.true_regulators`) by AUROC, with a bootstrap interval, and precision in
the top ``k``. None of these statistics is causal by construction, which is the chapter's point.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib._compat import dense, layer_matrix

__all__ = ["METHODS", "rank_regulators", "score_regulators"]

#: The statistics :func:`rank_regulators` knows, in its default order.
METHODS = ("attention", "embedding", "drivers", "knockout", "coexpression")
_MODEL_METHODS = ("attention", "embedding")
#: A fate's cells: most probable fate is this one, with at least this probability ...
MIN_PROB = 0.5
#: ... unless fewer cells than this pass; then the top decile of the fate's probability is used.
MIN_CELLS = 10


def _fate_frame(adata, fate_key: str) -> pd.DataFrame:
    if fate_key not in adata.obsm:
        raise KeyError(f"fate_key={fate_key!r} is not in adata.obsm (keys: {sorted(adata.obsm.keys())}). Fix: "
                       "run tflib.tl.fates(adata) (writes 'fate_probs') or pass the key of a cells x fates "
                       "table, e.g. fate_key='fate_probs_true' for the simulator.")
    P = adata.obsm[fate_key]
    if isinstance(P, pd.DataFrame):
        return pd.DataFrame(P.to_numpy(dtype=float), index=adata.obs_names, columns=[str(c) for c in P.columns])
    from .fate import fate_probs_frame

    frame = fate_probs_frame(adata, probs_key=fate_key)
    frame.columns = [str(c) for c in frame.columns]
    return frame.astype(float)


def _fate_cells(p: np.ndarray, is_top: np.ndarray) -> tuple[np.ndarray, str]:
    """Boolean mask of a fate's cells and the rule that chose them."""
    sel = is_top & (p >= MIN_PROB)
    if sel.sum() >= MIN_CELLS:
        return sel, f"most probable fate with p >= {MIN_PROB}"
    n = min(len(p) - 1, max(MIN_CELLS, int(np.ceil(len(p) / 10))))
    sel = np.zeros(len(p), dtype=bool)
    sel[np.argsort(-p, kind="stable")[:n]] = True
    return sel, f"top {n} cells by probability (fewer than {MIN_CELLS} had p >= {MIN_PROB})"


def _expression(adata, layer) -> np.ndarray:
    """Log-normalised expression, cells x genes: ``log1p(CP10k)`` of counts, or the values as given."""
    X = layer_matrix(adata, layer)
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and np.all(values >= 0) and np.all(values == np.round(values)):    # counts
        from .perturb_baselines import _lognorm

        return dense(_lognorm(adata, layer))
    return dense(X)


def _standardise(M: np.ndarray) -> np.ndarray:
    """Columns with mean 0 and (population) sd 1; constant columns become NaN."""
    sd = M.std(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (M - M.mean(axis=0)) / np.where(sd > 0, sd, np.nan)


def _programme(markers: np.ndarray, gene: int, n: int) -> np.ndarray:
    """The first ``n`` marker columns other than ``gene``."""
    return markers[markers != gene][:n]


def _check(adata, model, tokenizer, fate_key, fates, candidates, methods, perturb_table, gene_key, n_markers,
           max_cells, layer):
    """Every input check, before any work (so a failed call writes nothing)."""
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown or methods!r}; choose from {METHODS} "
                         "(e.g. methods=('drivers', 'coexpression')).")
    P = _fate_frame(adata, fate_key)
    fates = list(P.columns) if fates is None else [str(f) for f in ([fates] if isinstance(fates, str) else fates)]
    missing = [f for f in fates if f not in P.columns]
    if missing:
        raise ValueError(f"fate unknown: {missing}; the fates of obsm[{fate_key!r}] are {list(P.columns)}. "
                         "Fix: pass fates= from that list (or None for all).")
    names = list(map(str, adata.var_names)) if candidates is None else [str(g) for g in candidates]
    names = list(dict.fromkeys(names))
    bad = [g for g in names if g not in adata.var_names]
    if bad or not names:
        hint = " Fix: pass names of adata.var_names"
        if gene_key is not None and gene_key in adata.var:
            hint += f" (not adata.var[{gene_key!r}] symbols)"
        raise KeyError(f"{len(bad)} candidates are not in adata.var_names (e.g. {bad[:5]})." + hint +
                       ", or candidates=None for every gene.")
    need_model = [m for m in methods if m in _MODEL_METHODS]
    if need_model and (model is None or tokenizer is None):
        raise ValueError(f"method(s) {need_model} need a model and its tokenizer. Fix: pass them "
                         "(model, tokenizer = tflib.models.course_checkpoint()) or leave those methods out.")
    if gene_key is not None and gene_key not in adata.var:
        raise KeyError(f"gene_key={gene_key!r} is not a column of adata.var. Fix: run "
                       "tflib.tl.vocab_labels(adata, tokenizer) (writes 'tf_symbol') or pass gene_key=None.")
    if layer is not None:
        layer_matrix(adata, layer)
    if "attention" in methods and model is not None:
        M = layer_matrix(adata, layer) if layer is not None else adata.X
        vals = M.data if sp.issparse(M) else np.asarray(M)                       # every stored value
        n_bad = int((vals != np.round(vals)).sum())
        if n_bad:
            where = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
            raise ValueError(
                f"method 'attention' tokenizes the cells, which needs raw counts, but {where} has {n_bad:,} "
                "non-integer values. After tl.velocity, X is log-normalised and the spliced/unspliced layers "
                "are scaled. Fix: keep the counts before normalising (adata.layers['counts'] = adata.X.copy()) "
                "and pass layer='counts', or leave 'attention' out.")
    if "knockout" in methods:
        if perturb_table is None:
            raise ValueError("method 'knockout' needs perturb_table= (the output of tl.perturb(..., kind='delete', "
                             "fate_model=...) or tl.perturb_linear(...)); pass one or leave 'knockout' out.")
        cols = [f"fate_shift_{f}" for f in fates]
        lack = [c for c in ["gene", *cols] if c not in perturb_table.columns]
        if lack:
            raise KeyError(f"perturb_table lacks the column(s) {lack} (it has "
                           f"{[c for c in perturb_table.columns if c.startswith('fate_shift_')]}). Fix: make it with "
                           "a fate model over the same fates (tl.perturb(..., fate_model=...) or tl.perturb_linear).")
    for name, value, low in (("n_markers", n_markers, 1), ("max_cells", max_cells, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}={value!r}: it must be an integer >= {low}.")
    return methods, P, fates, names


def _warn_outside_vocabulary(adata, tokenizer, cand, names, gene_key) -> None:
    """Say so when the model methods cannot score some candidates (they are not in the vocabulary)."""
    import warnings

    colmap, _ = tokenizer.gene_columns(adata, gene_key=gene_key, check_coverage=False)
    outside = [str(n) for n, c in zip(names, cand) if colmap[c] < 0]
    if outside:
        hint = ("; if adata names its genes differently from the vocabulary (e.g. simulator genes), label them "
                "first with tflib.tl.vocab_labels(adata, tokenizer) and pass gene_key='tf_symbol'"
                if gene_key is None else "")
        warnings.warn(f"{len(outside)} of the {len(names)} candidates are not in the tokenizer's vocabulary "
                      f"(e.g. {outside[:5]}): the attention and embedding methods score them NaN, ranked last"
                      f"{hint}.", UserWarning, stacklevel=3)


def rank_regulators(adata, *, model=None, tokenizer=None, fate_key: str = "fate_probs", fates=None,
                    candidates: Sequence[str] | None = None, methods: Sequence[str] | str = METHODS,
                    perturb_table: pd.DataFrame | None = None, gene_key: str | None = None, layer: str | None = None,
                    n_markers: int = 20, max_cells: int = 300, batch_size: int = 32, device=None, seed: int = 0,
                    key_added: str = "regulators") -> pd.DataFrame:
    """Rank candidate regulators of each fate five ways: attention, embedding, drivers, knockout, coexpression (chapter 13).

    A fate's cells are those whose most probable fate it is with probability >= 0.5; when
    fewer than 10 cells qualify, the top decile of that fate's probability (at least 10 cells).
    All other cells are the comparison. A fate's *marker programme* is the ``n_markers`` genes
    (of all ``var_names``) with the largest mean log-expression difference between its cells and
    the rest, leaving out the candidate being scored.

    Parameters
    ----------
    adata
        Cells with counts (``X`` or ``layer``; log-normalised as ``log1p(counts / total * 1e4)``
        for the expression statistics, and tokenized for the model) and fate probabilities.
        Non-integer values are taken as already log-normalised (then the model methods fail in
        the tokenizer, which needs counts).
    model, tokenizer
        A :class:`~tflib.models.Transcriptformer` and its tokenizer (keyword-only, e.g.
        ``model=model, tokenizer=tokenizer``); needed by ``attention`` and ``embedding`` only.
    fate_key
        ``obsm`` key of the cells x fates probabilities: a DataFrame with fate names as columns,
        or an array with names in ``uns[fate_key + "_names"]`` (as :func:`tflib.tl.fates` writes).
    fates
        Fates to rank for (default: all).
    candidates
        Genes to rank, from ``var_names`` (default: all; chapter 13 passes the TFs).
    methods
        Any of ``"attention"`` (mean attention received, over layers, heads and real query
        tokens, in the fate's cells minus in the other cells; 0 in a cell whose context lacks
        the gene; only ``max_cells`` randomly chosen cells go through the model),
        ``"embedding"`` (cosine of the gene's static input embedding, :func:`tflib.tl.gene_embeddings`,
        with the mean embedding of the marker programme's genes that are in the vocabulary),
        ``"drivers"`` (``varm["terminal_lineage_drivers"][f"{fate}_corr"]`` after
        :func:`tflib.tl.fate_drivers`; otherwise the same statistic, the Pearson correlation of
        log-expression with ``obsm[fate_key][fate]`` over all cells, via
        :func:`tflib.stats.row_pearson`; column ``source`` says which), ``"knockout"`` (minus
        the mean of ``perturb_table[f"fate_shift_{fate}"]`` over the table's rows for the gene,
        so a deletion that lowers the fate scores high) and ``"coexpression"`` (mean Pearson
        correlation with the marker programme's genes over all cells).
    perturb_table
        Output of :func:`tflib.tl.perturb` (with a fate model) or :func:`tflib.tl.perturb_linear`,
        ``kind="delete"``; its ``gene`` may be ``var_names`` or ``var[gene_key]`` symbols.
    gene_key
        ``var`` column with the vocabulary symbols (e.g. ``"tf_symbol"`` from
        :func:`tflib.tl.vocab_labels`). Genes are still reported by ``var_names``.
    layer
        ``layers`` key with the counts (default ``X``).
    n_markers
        Size of each fate's marker programme.
    max_cells, seed
        At most this many cells (a random subset drawn with ``seed``) go through the model for
        ``attention``; every other statistic uses all cells.
    batch_size, device
        Forward passes; the device comes from :func:`tflib.utils.get_device` when ``None``.
    key_added
        ``uns`` key of the result.

    Returns
    -------
    pandas.DataFrame
        A long table, one row per (fate, method, candidate), sorted by fate, method and rank:
        ``fate, method, gene, score, rank, n_fate_cells, source``. ``rank`` 1 is the strongest
        candidate; a NaN score (a gene outside the vocabulary for the model methods, absent from
        ``perturb_table``, or without variance) ranks after every scored gene. Written key:
        ``uns[key_added]`` (this table). Nothing is written when the call fails.
    """
    methods, P, fates, names = _check(adata, model, tokenizer, fate_key, fates, candidates, methods,
                                      perturb_table, gene_key, n_markers, max_cells, layer)
    cand = adata.var_names.get_indexer(names)                                     # (C,) columns of the candidates
    if {"attention", "embedding"} & set(methods):
        _warn_outside_vocabulary(adata, tokenizer, cand, names, gene_key)
    expr = _expression(adata, layer)                                              # (N, G)
    probs = P.to_numpy()                                                          # (N, F)
    top = probs.argmax(1)
    groups = {f: _fate_cells(probs[:, j], top == j) for j, f in enumerate(P.columns) if f in fates}
    for f, (sel, _) in groups.items():
        if sel.all() or not sel.any():
            raise ValueError(f"fate {f!r}: its cells and the other cells must both be non-empty "
                             f"({int(sel.sum())} of {len(sel)} cells are its cells). Fix: pass a fate table with "
                             "more than one fate represented.")
    markers = {}
    for f, (sel, _) in groups.items():
        diff = expr[sel].mean(0) - expr[~sel].mean(0)                             # (G,)
        markers[f] = np.argsort(-diff, kind="stable")[: n_markers + 1]
    if "attention" in methods:
        from .attention import attention_received

        rng = np.random.default_rng(seed)
        sub = np.sort(rng.choice(adata.n_obs, max_cells, replace=False)) if adata.n_obs > max_cells \
            else np.arange(adata.n_obs)
        att = attention_received(adata[sub], model, tokenizer, genes=names, gene_key=gene_key, layer=layer,
                                 batch_size=batch_size, device=device)            # (n_sub, C)
    if "embedding" in methods:
        from .embedding import gene_embeddings

        E = gene_embeddings(adata, model, tokenizer, kind="static", gene_key=gene_key).to_numpy(np.float64)  # (G, D)
    if "coexpression" in methods:
        Z = _standardise(expr)                                                    # (N, G)
    if "drivers" in methods:
        wide = adata.varm["terminal_lineage_drivers"] if "terminal_lineage_drivers" in adata.varm else None
        if wide is not None and not isinstance(wide, pd.DataFrame):
            wide = None
    if "knockout" in methods:
        gene_col = perturb_table["gene"].astype(str)
        if gene_key is not None:                                                 # symbols back to var_names
            back = dict(zip(adata.var[gene_key].astype(str), map(str, adata.var_names)))
            gene_col = gene_col.map(lambda g: g if g in adata.var_names else back.get(g, g))
        ko = perturb_table.groupby(gene_col.to_numpy(), sort=False)[[f"fate_shift_{f}" for f in fates]].mean()

    frames = []
    for f in fates:
        sel, rule = groups[f]
        for m in methods:
            if m == "attention":
                s_sel = sel[sub]
                score = att[s_sel].mean(0) - att[~s_sel].mean(0)
                source = (f"attention received, mean over {model.config.n_layer} layers x {model.config.n_head} heads "
                          f"x query tokens; {len(sub)} cells ({int(s_sel.sum())} of the fate)")
            elif m == "embedding":
                score = np.full(len(names), np.nan)
                for i, c in enumerate(cand):
                    prog = E[_programme(markers[f], c, n_markers)]
                    prog = prog[np.isfinite(prog).all(1)]
                    if len(prog) and np.isfinite(E[c]).all():
                        mean = prog.mean(0)
                        score[i] = E[c] @ mean / (np.linalg.norm(E[c]) * np.linalg.norm(mean) + 1e-12)
                source = f"cosine of static gene embedding with the mean of {n_markers} marker genes"
            elif m == "drivers":
                if wide is not None and f"{f}_corr" in wide.columns:
                    score = wide[f"{f}_corr"].reindex(names).to_numpy(dtype=float)
                    source = "varm['terminal_lineage_drivers'] (tl.fate_drivers)"
                else:
                    from tflib.stats import row_pearson

                    x = expr[:, cand].T                                           # (C, N)
                    with np.errstate(invalid="ignore"):
                        score = row_pearson(x, np.broadcast_to(probs[:, list(P.columns).index(f)], x.shape))
                    source = f"Pearson of log-expression with obsm[{fate_key!r}][{f!r}] (row_pearson)"
            elif m == "knockout":
                score = -ko[f"fate_shift_{f}"].reindex(names).to_numpy(dtype=float)
                source = "minus mean fate_shift over perturb_table rows"
            else:
                score = np.full(len(names), np.nan)
                with np.errstate(invalid="ignore"):
                    C = Z[:, cand].T @ Z[:, markers[f]] / Z.shape[0]             # (C, n_markers + 1)
                for i, c in enumerate(cand):
                    keep = markers[f] != c
                    vals = C[i, keep][:n_markers]
                    score[i] = vals.mean() if np.isfinite(vals).all() else np.nan
                source = f"mean Pearson with {n_markers} marker genes"
            frames.append(pd.DataFrame({"fate": f, "method": m, "gene": names, "score": np.asarray(score, float),
                                        "n_fate_cells": int(sel.sum()), "source": f"{source}; fate cells: {rule}"}))
    table = pd.concat(frames, ignore_index=True)
    table.insert(4, "rank", table.groupby(["fate", "method"], sort=False)["score"]
                 .rank(ascending=False, method="min", na_option="bottom").astype(int))
    order = {m: i for i, m in enumerate(methods)}
    table = (table.assign(_f=table["fate"].map({f: i for i, f in enumerate(fates)}), _m=table["method"].map(order))
             .sort_values(["_f", "_m", "rank", "gene"], kind="stable").drop(columns=["_f", "_m"])
             .reset_index(drop=True))
    adata.uns[key_added] = table
    return table


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    """AUROC as the Mann--Whitney statistic (ties count one half): the same number as
    ``sklearn.metrics.roc_auc_score``, cheap enough to call once per bootstrap resample."""
    from scipy.stats import rankdata

    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return np.nan
    return float((rankdata(score)[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def score_regulators(table: pd.DataFrame, truth: Mapping[str, Sequence[str]], *, k: int = 5, n_boot: int = 200,
                     seed: int = 0) -> pd.DataFrame:
    """How well each ranking of :func:`rank_regulators` finds the true regulators (chapter 13).

    Parameters
    ----------
    table
        Output of :func:`rank_regulators` (columns ``fate, method, gene, score``).
    truth
        ``{fate: true regulator genes}``, e.g. :func:`tflib.datasets.true_regulators` (sim).
    k
        Precision is measured in each ranking's top ``k`` (ties broken by the table's order).
    n_boot, seed
        Percentile-bootstrap resamples over candidates for the AUROC interval
        (:func:`tflib.stats.bootstrap_ci`; resamples without both kinds of gene are skipped),
        and their seed.

    Returns
    -------
    pandas.DataFrame
        One row per (fate, method): ``n_candidates``, ``n_scored`` (finite scores),
        ``n_true`` (true regulators among the candidates), ``auroc``
        (``sklearn.metrics.roc_auc_score``) with its 95 % interval
        ``auroc_low``/``auroc_high``, ``average_precision``, ``precision_at_k``, ``k`` and
        ``base_rate`` (``n_true / n_candidates``, what a random ranking gets). A NaN score counts
        as lower than every finite one. AUROC is NaN when the candidates hold no true regulator
        (or only true ones). Nothing is written anywhere.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    from tflib.stats import bootstrap_ci

    need = [c for c in ("fate", "method", "gene", "score") if c not in table.columns]
    if need:
        raise KeyError(f"table lacks the column(s) {need}; pass the output of tl.rank_regulators.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r}: it must be an integer >= 1.")
    unknown = [f for f in pd.unique(table["fate"]) if f not in truth]
    if unknown:
        raise KeyError(f"fate unknown to truth: {unknown}; truth has {list(truth)}. Fix: pass truth with every "
                       "fate of the table (e.g. tflib.datasets.true_regulators(sim)) or filter the table.")
    rows = []
    for (f, m), g in table.groupby(["fate", "method"], sort=False):
        score = g["score"].to_numpy(dtype=float)
        ok = np.isfinite(score)
        filled = np.where(ok, score, (score[ok].min() - 1.0) if ok.any() else 0.0)
        y = g["gene"].astype(str).isin([str(t) for t in truth[f]]).to_numpy()
        row = {"fate": f, "method": m, "n_candidates": len(g), "n_scored": int(ok.sum()), "n_true": int(y.sum())}
        if 0 < y.sum() < len(y):
            ci = bootstrap_ci(_auroc, y, filled, n_boot=n_boot, seed=seed)
            row.update(auroc=float(roc_auc_score(y, filled)), auroc_low=ci.low, auroc_high=ci.high,
                       average_precision=float(average_precision_score(y, filled)))
        else:
            row.update(auroc=np.nan, auroc_low=np.nan, auroc_high=np.nan, average_precision=np.nan)
        best = np.argsort(-filled, kind="stable")[:k]
        row.update(precision_at_k=float(y[best].mean()), k=int(k), base_rate=float(y.mean()))
        rows.append(row)
    return pd.DataFrame(rows)
