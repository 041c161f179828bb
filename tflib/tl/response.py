"""Expression-response baselines for perturbation prediction (chapter 11).

Chapter 11 asks whether a model predicts how cells *respond* to a perturbation better than
simple arithmetic does. Two real-data questions, each scored on the same cells and genes:

- **Held-out cell type, IFN-beta (Kang et al. 2018).** :func:`response_baselines` predicts a
  cell type's stimulated mean from its control cells in two ways: *no change* (the held-out
  controls' mean) and the *additive shift* (the other cell types' mean stimulated-minus-control
  difference added to the held-out controls' mean, in log-normalised expression). scGen-style
  latent arithmetic on scVI's latent space (:func:`tflib.tl.latent_arithmetic`, module
  :mod:`tflib.tl.response_latent`) is compared with them on the same cells and genes.
- **Double perturbations (Norman et al. 2019).** :func:`additive_doubles` predicts each double
  ``A+B`` as control + effect of A + effect of B and scores it against the real double.

:func:`counts_from_lognorm` (home: :mod:`tflib.pp.counts`) rebuilds raw counts from a
log-normalised file when the inversion is exact, so that scVI can be trained on it. The scores and the top differentially expressed genes
(:func:`tflib.tl.response_r2`, :func:`tflib.tl.response_scores`, :func:`tflib.tl.top_de_genes`)
live in :mod:`tflib.tl.response_metrics`, with the two AnnData accessors all three modules
share; the design checks and the log-normalisation helpers here are shared with latent arithmetic.

Nothing here writes into the caller's AnnData.
"""
from __future__ import annotations

import importlib
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib.pp.counts import _check_lognorm, counts_from_lognorm  # noqa: F401 (re-exported: tl.counts_from_lognorm)
from tflib.tl.response_metrics import (  # noqa: F401 (the scores are re-exported: they were defined here)
    _matrix,
    _obs_column,
    response_r2,
    response_scores,
    top_de_genes,
)

__all__ = [
    "ResponseWarning",
    "counts_from_lognorm",
    "response_baselines",
    "additive_doubles",
]

#: Names that moved to :mod:`tflib.tl.response_latent`; still importable from here, loaded on
#: first use because that module imports this one. (The scores imported above are importable
#: from here as well.)
_MOVED = {"latent_arithmetic": "response_latent", "LatentArithmeticResult": "response_latent"}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"tflib.tl.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Scale of the log-normalisation used throughout: ``log1p(counts / total * 1e4)``.
TARGET_SUM = 1e4


class ResponseWarning(UserWarning):
    """Something was skipped or is weaker than it looks (chapter 11)."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _design(adata, condition_key, control, stimulated, group_key, held_out):
    """Validate the held-out design and return (condition, group, training groups)."""
    cond = _obs_column(adata, condition_key, "condition labels")
    group = _obs_column(adata, group_key, "cell-type/group labels")
    values = sorted(set(cond))
    for name, v in (("control", control), ("stimulated", stimulated)):
        if str(v) not in set(cond):
            raise ValueError(f"{name}={v!r} is not a value of obs[{condition_key!r}] (values: {values}). "
                             f"Fix: pass {name}= one of these.")
    if str(control) == str(stimulated):
        raise ValueError("control and stimulated are the same label. Fix: pass two different conditions.")
    control, stimulated, held_out = str(control), str(stimulated), str(held_out)
    groups = sorted(set(group))
    if held_out not in set(group):
        raise ValueError(f"held_out={held_out!r} is not a value of obs[{group_key!r}] (values: {groups}).")
    both = [g for g in groups
            if ((group == g) & (cond == control)).any() and ((group == g) & (cond == stimulated)).any()]
    in_hold = group == held_out
    if not (in_hold & (cond == control)).any():
        raise ValueError(
            f"The held-out group {held_out!r} has no {control!r} cells, so there is nothing to predict "
            f"from. Fix: hold out a group with control and stimulated cells, e.g. one of {both}.")
    if not (in_hold & (cond == stimulated)).any():
        raise ValueError(
            f"The held-out group {held_out!r} has no {stimulated!r} cells, so there is no truth to score "
            f"against. Fix: hold out a group with control and stimulated cells, e.g. one of {both}.")
    train = [g for g in both if g != held_out]
    if not train:
        raise ValueError(
            f"No group other than {held_out!r} has both {control!r} and {stimulated!r} cells, so no "
            "stimulation response can be learned. Fix: use data with at least one more group measured "
            "in both conditions.")
    return cond, group, train, control, stimulated, held_out


def _lognorm_counts(C):
    """``log1p(C / rowsum * 1e4)`` as CSR float64 (cells with no counts stay zero)."""
    C = sp.csr_matrix(C, dtype=np.float64)
    tot = np.asarray(C.sum(1)).ravel()
    scale = np.divide(TARGET_SUM, tot, out=np.zeros_like(tot), where=tot > 0)
    L = sp.diags(scale) @ C
    L = sp.csr_matrix(L)
    L.data = np.log1p(L.data)
    return L


def _mean_rows(X, mask):
    return np.asarray(X[np.flatnonzero(mask)].mean(axis=0)).ravel().astype(np.float64)


def _additive_shift(X, cond, group, train, control, stimulated):
    """Mean over training groups of (mean stimulated - mean control): each group weighs the same."""
    diffs = [_mean_rows(X, (group == g) & (cond == stimulated)) - _mean_rows(X, (group == g) & (cond == control))
             for g in train]
    return np.mean(diffs, axis=0)


def _baseline_frame(X, genes, cond, group, train, control, stimulated, held_out):
    hold = group == held_out
    ctrl = _mean_rows(X, hold & (cond == control))
    truth = _mean_rows(X, hold & (cond == stimulated))
    shift = _additive_shift(X, cond, group, train, control, stimulated)
    return pd.DataFrame({"control": ctrl, "truth": truth, "no_change": ctrl, "additive": ctrl + shift},
                        index=pd.Index(np.asarray(genes).astype(str), name="gene"))


# --------------------------------------------------------------------------------------------
# counts from a log-normalised matrix
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# held-out group: no-change and additive-shift baselines
# --------------------------------------------------------------------------------------------
def response_baselines(adata, *, condition_key: str, control: str, stimulated: str, group_key: str,
                       held_out: str, layer: str | None = None) -> pd.DataFrame:
    """No-change and additive-shift predictions of a held-out group's stimulated mean (chapter 11).

    - ``no_change``: the held-out group's control mean (the perturbation does nothing);
    - ``additive``: that control mean plus the stimulation shift of the *other* groups, the mean
      over groups of (stimulated mean - control mean), each group weighing the same so that an
      abundant cell type does not dominate (the same balancing as
      :func:`tflib.tl.latent_arithmetic`).

    Parameters
    ----------
    adata
        Cells x genes with log-normalised expression (``log1p(counts / total * 1e4)``) in ``X``
        or ``layers[layer]``. Not modified.
    condition_key, control, stimulated
        ``obs`` column of conditions and its two values (Kang scGen split: ``"condition"``,
        ``"control"``, ``"stimulated"``).
    group_key, held_out
        ``obs`` column of cell types and the one held out (e.g. ``"cell_type"``, ``"CD4T"``).
    layer
        Layer with the log-normalised values (``None``: ``X``).

    Returns
    -------
    pandas.DataFrame
        One row per gene: ``control`` and ``truth`` (the held-out group's observed control and
        stimulated means), ``no_change`` and ``additive``. Score it with
        :func:`tflib.tl.response_scores`.
    """
    cond, group, train, control, stimulated, held_out = _design(
        adata, condition_key, control, stimulated, group_key, held_out)
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    X = sp.csr_matrix(X, dtype=np.float64)
    return _baseline_frame(X, adata.var_names, cond, group, train, control, stimulated, held_out)



# --------------------------------------------------------------------------------------------
# double perturbations
# --------------------------------------------------------------------------------------------
def _pooled_contexts(adata, pert, control, labels, *, exclude, max_values: int = 50):
    """``[(column, values)]``: categorical ``obs`` columns over which the controls spread while some of
    ``labels`` occur in only part of those values (different cell lines or datasets pooled)."""
    found = []
    is_ctrl = pert == control
    for col in adata.obs.columns:
        if col == exclude:
            continue
        series = adata.obs[col]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            continue
        vals = series.astype(str).to_numpy()
        ctrl_values = sorted(set(vals[is_ctrl]))
        if not 2 <= len(ctrl_values) <= max_values:
            continue
        if any(set(vals[pert == lab]) < set(ctrl_values) for lab in labels):
            found.append((col, ctrl_values))
    return found


def additive_doubles(adata, *, perturbation_key: str, control: str, separator: str = "+",
                     context_key: str | None = None, layer: str | None = None) -> pd.DataFrame:
    """The additive baseline for double perturbations, scored against the real doubles (chapter 11).

    For each label ``A+B`` whose singles ``A`` and ``B`` are both measured (in the same context),
    the prediction is ``control + (A - control) + (B - control)`` on the mean log-normalised
    profiles, and the no-change prediction is ``control``. Doubles lacking a single are skipped
    with a :class:`ResponseWarning` that lists them.

    In PerturBench's development file (``load("perturbench_devel")``) the Norman 2019 doubles are
    labelled ``"KLF1+MAP2K6"`` in ``obs["perturbation"]``, the controls ``"control"``; the file
    also holds McFaline-Figueroa's glioma lines with their own controls, so pass
    ``context_key="cell_type"`` (or subset to ``obs["dataset"] == "norman19"``).

    Parameters
    ----------
    adata
        Cells x genes, log-normalised in ``X`` or ``layers[layer]``. Not modified.
    perturbation_key
        ``obs`` column with the perturbation labels.
    control
        Label of the control cells.
    separator
        What joins the two genes of a double.
    context_key
        Optional ``obs`` column (cell line, dataset): every mean is taken within one context.
        Without it, a :class:`ResponseWarning` names any ``obs`` column whose values split the
        controls while the scored perturbations occur in only some of them.
    layer
        Layer with the log-normalised values.

    Returns
    -------
    pandas.DataFrame
        One row per evaluated double: ``context``, ``double``, ``single_a``, ``single_b``,
        ``n_cells``, and for ``additive`` and ``no_change`` the scores of :func:`tflib.tl.response_r2`
        (``r2_*``, ``pearson_r2_*``, ``delta_pearson_*``, ``delta_r2_*``) over all genes.
    """
    pert = _obs_column(adata, perturbation_key, "perturbation labels")
    ctx = _obs_column(adata, context_key, "contexts") if context_key is not None else np.full(len(pert), "all")
    control = str(control)
    if not (pert == control).any():
        raise ValueError(f"control={control!r} is not a value of obs[{perturbation_key!r}] "
                         f"(e.g. {sorted(set(pert))[:10]}). Fix: pass the label of the control cells.")
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    X = sp.csr_matrix(X, dtype=np.float64)
    rows, skipped, n_doubles = [], [], 0
    for c in sorted(set(ctx)):
        in_c = ctx == c
        labels = set(pert[in_c])
        doubles = sorted(lab for lab in labels if separator in lab and lab != control)
        if not doubles:
            continue
        if control not in labels:
            skipped += [f"{d} ({context_key}={c}: no {control!r} cells)" for d in doubles]
            continue
        ctrl = _mean_rows(X, in_c & (pert == control))
        for d in doubles:
            parts = [p.strip() for p in d.split(separator) if p.strip() and p.strip() != control]
            if len(parts) != 2:
                continue  # "A+ctrl"-style labels are singles; three-way labels are not doubles
            n_doubles += 1
            missing = [p for p in parts if p not in labels]
            if missing:
                where = f" in {context_key}={c}" if context_key is not None else ""
                skipped.append(f"{d} (missing single {', '.join(missing)}{where})")
                continue
            a, b = parts
            truth = _mean_rows(X, in_c & (pert == d))
            add = ctrl + (_mean_rows(X, in_c & (pert == a)) - ctrl) + (_mean_rows(X, in_c & (pert == b)) - ctrl)
            row = {"context": c, "double": d, "single_a": a, "single_b": b,
                   "n_cells": int((in_c & (pert == d)).sum())}
            for name, pred in (("additive", add), ("no_change", ctrl)):
                s = response_r2(truth, pred, control_mean=ctrl)
                row.update({f"{k}_{name}": s[k] for k in ("r2", "pearson_r2", "delta_pearson", "delta_r2")})
            rows.append(row)
    if n_doubles == 0:
        raise ValueError(f"No label of obs[{perturbation_key!r}] contains {separator!r}, so no double perturbation "
                         f"was found (labels e.g. {sorted(set(pert) - {control})[:8]}). Either these cells hold "
                         "single perturbations only (then there is nothing to score), or their doubles are joined "
                         "by another character: pass it as separator=.")
    if context_key is None and rows:
        used = {r["double"] for r in rows} | {r["single_a"] for r in rows} | {r["single_b"] for r in rows}
        mixed = _pooled_contexts(adata, pert, control, used, exclude=perturbation_key)
        if mixed:
            finest = max(mixed, key=lambda cv: len(cv[1]))[0]
            spans = "; ".join(f"obs[{c!r}]: {v[:5]}" for c, v in mixed[:4])
            warnings.warn(f"The control cells span several values of {spans}, and some of the scored "
                          f"perturbations occur in only part of them: without context_key every mean pools "
                          f"those contexts. If they are different cell lines or datasets, pass the finest as "
                          f"context_key, e.g. context_key={finest!r}.", ResponseWarning, stacklevel=2)
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} of {n_doubles} doubles whose singles are not both measured: "
                      + "; ".join(skipped), ResponseWarning, stacklevel=2)
    if not rows:
        raise ValueError("No double has both of its singles measured, so the additive baseline cannot be "
                         "formed. Fix: include the single-perturbation cells (and check separator=).")
    return pd.DataFrame(rows)
