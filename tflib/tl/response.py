"""Expression-response baselines for perturbation prediction (chapter 11).

Chapter 11 asks whether a model predicts how cells *respond* to a perturbation better than
simple arithmetic does. Two real-data questions, each scored on the same cells and genes:

- **Held-out cell type, IFN-beta (Kang et al. 2018).** :func:`latent_arithmetic` predicts a
  cell type's stimulated cells from its control cells the way scGen does (Lotfollahi et al.
  2019): move the controls' latent codes by the mean stimulation vector of the other cell types
  and decode. The latent space is scVI's (scvi-tools, already used in chapter 02); scGen itself
  and ``pertpy.tl.Scgen`` need JAX/flax, which the course's pinned stack does not carry. It is
  compared with :func:`response_baselines`: *no change* (the held-out controls' mean) and the
  *additive shift* (the other cell types' mean stimulated-minus-control difference added to the
  held-out controls' mean, in log-normalised expression).
- **Double perturbations (Norman et al. 2019).** :func:`additive_doubles` predicts each double
  ``A+B`` as control + effect of A + effect of B and scores it against the real double.

Scores (:func:`response_r2`, :func:`response_scores`) are computed on mean expression per gene:
the coefficient of determination (``sklearn.metrics.r2_score``, penalises any bias), the squared
Pearson correlation that scGen reports, and the Pearson correlation of the *change* from control
(``pred - control`` against ``truth - control``), which is not inflated by the genes' baseline
levels. The top differentially expressed genes come from :func:`top_de_genes`.

Nothing here writes into the caller's AnnData, except :func:`counts_from_lognorm`, which
documents its keys.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp


__all__ = [
    "ResponseWarning",
    "counts_from_lognorm",
    "response_baselines",
    "latent_arithmetic",
    "LatentArithmeticResult",
    "top_de_genes",
    "response_r2",
    "response_scores",
    "additive_doubles",
]

#: Scale of the log-normalisation used throughout: ``log1p(counts / total * 1e4)``.
TARGET_SUM = 1e4


class ResponseWarning(UserWarning):
    """Something was skipped or is weaker than it looks (chapter 11)."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _matrix(adata, layer):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"adata.layers has no {layer!r}. Available: {list(adata.layers.keys())}. "
                       "Fix: pass layer=None to use adata.X, or one of the layers listed.")
    return adata.layers[layer]


def _obs_column(adata, key, what):
    if key not in adata.obs:
        raise KeyError(f"adata.obs has no column {key!r} ({what}). Available: {list(adata.obs.columns)}. "
                       f"Fix: pass the name of the column holding the {what}.")
    return adata.obs[key].astype(str).to_numpy()


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


def _check_lognorm(X, name):
    """Refuse NaN/inf/negative values and matrices that are obviously raw counts."""
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{name} contains NaN or infinite values. Fix: remove or impute them first.")
    if data.size and (data < 0).any():
        raise ValueError(f"{name} has negative values: it is not log-normalised expression (scaled data?). "
                         "Fix: pass the log-normalised layer (log1p(counts / total * 1e4)) with layer=.")
    if data.size and np.all(data == np.round(data)) and data.max() > 1:
        raise ValueError(f"{name} holds integer counts, not log-normalised expression. Fix: normalise "
                         "first (sc.pp.normalize_total(a, target_sum=1e4); sc.pp.log1p(a)) or pass the "
                         "log-normalised layer with layer=.")


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
def counts_from_lognorm(adata, *, total_key: str, layer: str | None = None, key_added: str = "counts",
                        tol: float = 0.01, copy: bool = False):
    """Rebuild raw counts from ``log1p(counts / total * target)`` when that inversion is exact.

    Used in chapter 11 for scGen's Kang split (``tflib.datasets.load("kang_scgen_valid")``),
    which ships only log-normalised values but keeps each cell's total count in
    ``obs["n_counts"]``. In every cell the smallest non-zero value is one count, so
    ``expm1(min) * total`` estimates the normalisation target; the median over cells is used
    (scanpy's ``normalize_per_cell`` used one target for all cells: 1,832.5 for this file), and
    ``counts = expm1(X) * total / target`` must then be integers up to ``tol``. If it is not, the
    matrix is not a plain normalisation of counts and an error is raised: scVI must not be fed
    non-count data.

    Parameters
    ----------
    adata
        Cells x genes; ``X`` (or ``layers[layer]``) log-normalised.
    total_key
        ``obs`` column with each cell's total count before normalisation (scGen file: ``"n_counts"``).
    layer
        Layer holding the log-normalised values (``None``: ``X``).
    key_added
        Layer the counts are written to.
    tol
        Largest accepted distance of a rebuilt count from an integer.
    copy
        ``False``: write into ``adata`` and return ``None``. ``True``: return a modified copy.

    Returns
    -------
    None, or the modified copy when ``copy=True``.

    Keys written: ``layers[key_added]`` (the counts, float32 CSR) and
    ``uns["counts_from_lognorm"]`` (the inferred target, the largest rounding residual, ``total_key``).

    Raises
    ------
    ValueError
        When the rebuilt values are not integers (with the residual and the fix).
    """
    totals = pd.to_numeric(adata.obs[total_key], errors="coerce").to_numpy(dtype=np.float64) \
        if total_key in adata.obs else None
    if totals is None:
        raise KeyError(f"adata.obs has no column {total_key!r} (total counts per cell). Available: "
                       f"{list(adata.obs.columns)}. Fix: pass total_key= the column of counts per cell.")
    if not np.isfinite(totals).all() or (totals <= 0).any():
        raise ValueError(f"obs[{total_key!r}] must be positive and finite in every cell. Fix: pass the "
                         "column of total counts per cell.")
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    E = sp.csr_matrix(X, dtype=np.float64)
    E.data = np.expm1(E.data)
    E.eliminate_zeros()
    nnz = np.diff(E.indptr)
    if (nnz == 0).any():
        raise ValueError(f"{int((nnz == 0).sum())} cells have no expressed gene. Fix: remove them first "
                         "(sc.pp.filter_cells(adata, min_genes=1)).")
    unit = np.minimum.reduceat(E.data, E.indptr[:-1])
    target = float(np.median(unit * totals))
    C = sp.diags(totals / target) @ E
    C = sp.csr_matrix(C)
    residual = float(np.abs(C.data - np.round(C.data)).max()) if C.nnz else 0.0
    if residual > tol:
        raise ValueError(
            f"expm1(X) * {total_key} / {target:.4g} is not integer-valued (largest residual {residual:.3g} > "
            f"tol={tol}): the values are not a plain log1p(counts / total * target) of these totals. "
            "Fix: use a dataset with raw counts instead (tflib.datasets.load('kang_pbmc') keeps them in X).")
    C.data = np.round(C.data)
    C.eliminate_zeros()
    out = adata.copy() if copy else adata
    out.layers[key_added] = C.astype(np.float32)
    out.uns["counts_from_lognorm"] = {"target_sum": target, "max_rounding_residual": residual,
                                      "total_key": total_key, "source": "X" if layer is None else layer}
    return out if copy else None


# --------------------------------------------------------------------------------------------
# baselines and latent arithmetic
# --------------------------------------------------------------------------------------------
def response_baselines(adata, *, condition_key: str, control: str, stimulated: str, group_key: str,
                       held_out: str, layer: str | None = None) -> pd.DataFrame:
    """No-change and additive-shift predictions of a held-out group's stimulated mean (chapter 11).

    - ``no_change``: the held-out group's control mean (the perturbation does nothing);
    - ``additive``: that control mean plus the stimulation shift of the *other* groups, the mean
      over groups of (stimulated mean - control mean), each group weighing the same so that an
      abundant cell type does not dominate (the same balancing as :func:`latent_arithmetic`).

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
        stimulated means), ``no_change`` and ``additive``. Score it with :func:`response_scores`.
    """
    cond, group, train, control, stimulated, held_out = _design(
        adata, condition_key, control, stimulated, group_key, held_out)
    X = _matrix(adata, layer)
    _check_lognorm(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    X = sp.csr_matrix(X, dtype=np.float64)
    return _baseline_frame(X, adata.var_names, cond, group, train, control, stimulated, held_out)


@dataclass
class LatentArithmeticResult:
    """What :func:`latent_arithmetic` returns (chapter 11).

    Attributes
    ----------
    means
        One row per gene of the model's gene set, all in the same log-normalised space:
        ``control``, ``truth``, ``latent_arithmetic`` (scGen's prediction: decoded shifted
        codes), ``latent_shift``, ``additive``, ``no_change`` and ``decoded_control`` (the
        held-out controls decoded without the shift). ``decoded_control`` against ``control``
        measures how well the decoder reproduces its input; a short training reproduces it only
        roughly, and that error is inherited by ``latent_arithmetic``. ``latent_shift`` =
        ``control + latent_arithmetic - decoded_control`` keeps only the change the model
        predicts (the decoder's bias cancels), a fairer test of the latent response itself.
    predicted
        AnnData of the predicted stimulated cells (one per held-out control cell): the mean over
        ``n_samples`` negative-binomial draws of log-normalised expression.
    de_genes
        The top differentially expressed genes of the held-out group (:func:`top_de_genes`).
    delta
        The latent stimulation vector.
    model
        The trained ``scvi.model.SCVI``.
    settings
        Parameters, the number of cells per role, the training wall time (``train_seconds``) and
        CPU time of this process (``train_cpu_seconds``).
    """

    means: pd.DataFrame
    predicted: object
    de_genes: list
    delta: np.ndarray
    model: object = None
    settings: dict = field(default_factory=dict)

    def scores(self) -> pd.DataFrame:
        """:func:`response_scores` of the three predictions on all genes and on :attr:`de_genes`."""
        return response_scores(self.means, methods=["latent_arithmetic", "latent_shift", "additive", "no_change"],
                               de_genes=self.de_genes)


def _hvgs(L, genes, n_top_genes):
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=L, var=pd.DataFrame(index=pd.Index(np.asarray(genes).astype(str))))
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def latent_arithmetic(adata, *, condition_key: str, control: str, stimulated: str, group_key: str,
                      held_out: str, layer: str | None = None, n_top_genes: int | None = 2000,
                      n_latent: int = 10, n_hidden: int = 128, n_layers: int = 1, max_epochs: int = 50,
                      lr: float = 5e-3, gene_likelihood: str = "nb",
                      batch_size: int = 128, balance: str = "groups", n_samples: int = 20,
                      n_de_genes: int = 100, seed: int = 0, num_threads: int | None = 1,
                      accelerator: str | None = None, train_kwargs: dict | None = None) -> LatentArithmeticResult:
    """scGen-style prediction of a held-out cell type's response in scVI's latent space (chapter 11).

    1. Train scVI (scvi-tools, no batch covariate: the stimulation must stay *in* the latent
       space) on every cell except the held-out group's stimulated ones.
    2. ``delta`` = mean latent code of stimulated cells - mean latent code of control cells,
       over the training groups measured in both conditions. With ``balance="groups"`` (default)
       it is the mean of the per-group differences, so each cell type weighs the same; scGen
       reaches the same end by resampling every cell type to one size. ``balance="cells"`` pools
       the cells instead (abundant types dominate, and composition differences between the two
       conditions leak into ``delta``).
    3. Decode the held-out controls' latent codes plus ``delta`` and draw counts from scVI's
       negative binomial at each control cell's own library size (``n_samples`` draws per
       cell), then log-normalise them like the observed cells. Comparing the decoder's smooth
       mean ``log1p(scale * 1e4)`` with the mean of log-normalised *sparse* counts instead
       would be biased for every lowly expressed gene (the log of a mean is not the mean of
       logs); the draws put the prediction through the same measurement as the truth.

    Everything is compared on the model's genes, in ``log1p(counts / total * 1e4)`` where the
    total is taken over those genes, because that is the space the decoder predicts. With
    ``n_top_genes`` the genes are the highly variable ones of the *training* cells (scanpy,
    ``flavor="seurat"``), so the held-out response cannot steer the choice. The baselines of
    :func:`response_baselines` are computed in the same space on the same cells.

    scVI needs raw counts. scGen's Kang split (``load("kang_scgen_valid")``) holds log-normalised
    values, but the normalisation inverts exactly: chapter 11 rebuilds the counts with
    :func:`counts_from_lognorm` (``total_key="n_counts"``) and passes ``layer="counts"``. The
    course's other Kang file (``load("kang_pbmc")``, counts in ``X``) works as well.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` or ``layers[layer]`` (checked in full). Not modified.
    condition_key, control, stimulated
        ``obs`` column of conditions and its two values.
    group_key, held_out
        ``obs`` column of cell types and the one whose stimulated cells are hidden and predicted.
    layer
        Counts layer (``None``: ``X``).
    n_top_genes
        Highly variable genes to model (``None``: all genes).
    n_latent, n_hidden, n_layers
        scVI architecture.
    max_epochs, batch_size, lr
        Training length and Adam's learning rate. scvi-tools' defaults (400 epochs, 1e-3) are
        too slow for the chapter; 50 epochs at 5e-3 reproduce the controls to R² ≈ 0.95 on the
        Kang split (see ``decoded_control``) in well under a minute on 2 cores.
    gene_likelihood
        ``"nb"`` (negative binomial, for UMI counts) or ``"poisson"``; the draws of step 3 use it.
    balance
        ``"groups"`` or ``"cells"``, see step 2.
    n_samples
        Negative-binomial draws per predicted cell (step 3); the prediction is their mean.
    n_de_genes
        Size of the top-DE gene set the scores also use.
    seed
        ``scvi.settings.seed``.
    num_threads
        CPU threads for torch during this call (restored afterwards; ``None`` leaves torch's
        setting). The network is small, so one thread loses little, while two threads on cores
        that other processes also use spin-wait at every step: measured on the course machine,
        0.45 s per epoch with one thread against 3-13 s with two.
    accelerator, train_kwargs
        Passed to ``SCVI.train`` (``None``: scvi-tools chooses).

    Returns
    -------
    LatentArithmeticResult
        ``means`` (per-gene table), ``predicted`` cells, ``de_genes``, ``delta``, the ``model``
        and ``settings``; ``result.scores()`` gives the R² table.
    """
    import anndata as ad

    from tflib.validation import check_counts

    if gene_likelihood not in ("nb", "poisson"):
        raise ValueError(f"gene_likelihood={gene_likelihood!r}; use 'nb' (UMI counts) or 'poisson'.")
    if balance not in ("groups", "cells"):
        raise ValueError(f"balance={balance!r}; use 'groups' (each cell type weighs the same) or 'cells'.")
    cond, group, train, control, stimulated, held_out = _design(
        adata, condition_key, control, stimulated, group_key, held_out)
    counts = _matrix(adata, layer)
    check_counts(counts, name="adata.X" if layer is None else f"adata.layers[{layer!r}]",
                 fix="scVI needs raw counts. If X is log-normalised with known totals, rebuild them with "
                     "tflib.tl.counts_from_lognorm(adata, total_key='n_counts') and pass layer='counts'; "
                     "or use tflib.datasets.load('kang_pbmc'), whose X holds counts.")
    C = sp.csr_matrix(counts, dtype=np.float64)
    is_train = ~((group == held_out) & (cond == stimulated))
    genes = np.asarray(adata.var_names).astype(str)
    if n_top_genes is not None and n_top_genes < C.shape[1]:
        keep = _hvgs(_lognorm_counts(C[np.flatnonzero(is_train)]), genes, n_top_genes)
        C, genes = C[:, keep], genes[keep]
    if (np.asarray(C.sum(1)).ravel() == 0).any():
        raise ValueError("Some cells have no counts on the modelled genes. Fix: remove them first "
                         "(sc.pp.filter_cells(adata, min_counts=1)) or raise n_top_genes.")
    L = _lognorm_counts(C)
    means = _baseline_frame(L, genes, cond, group, train, control, stimulated, held_out)

    import scvi
    import torch

    tr = np.flatnonzero(is_train)
    obs = pd.DataFrame({"condition": cond[tr], "group": group[tr]}, index=adata.obs_names[tr].astype(str))
    train_ad = ad.AnnData(X=C[tr].astype(np.float32), obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(train_ad)
        model = scvi.model.SCVI(train_ad, n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers,
                                gene_likelihood=gene_likelihood)
        kw = dict(max_epochs=max_epochs, batch_size=batch_size, early_stopping=False,
                  enable_progress_bar=False, plan_kwargs={"lr": lr})
        if accelerator is not None:
            kw["accelerator"] = str(accelerator)
        kw.update(train_kwargs or {})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            model.train(**kw)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        Z = model.get_latent_representation(train_ad)
        tc, tg = cond[tr], group[tr]
        if balance == "groups":
            delta = np.mean([Z[(tg == g) & (tc == stimulated)].mean(0) - Z[(tg == g) & (tc == control)].mean(0)
                             for g in train], axis=0)
        else:
            in_train = np.isin(tg, train)
            delta = Z[in_train & (tc == stimulated)].mean(0) - Z[in_train & (tc == control)].mean(0)
        hold_ctrl = (tg == held_out) & (tc == control)
        z0 = Z[hold_ctrl]

        lib = np.asarray(C[tr][np.flatnonzero(hold_ctrl)].sum(1), dtype=np.float64)        # (n, 1)
        rng = np.random.default_rng(seed)

        def simulate(z):
            """Posterior-predictive counts at each control cell's library size, log-normalised."""
            module = model.module
            module.eval()
            with torch.no_grad():
                zt = torch.as_tensor(z, dtype=torch.float32, device=module.device)
                n = zt.shape[0]
                out = module.generative(z=zt, library=torch.as_tensor(np.log(lib), dtype=torch.float32,
                                                                      device=module.device),
                                        batch_index=torch.zeros((n, 1), dtype=torch.long, device=module.device))
                px = out["px"]
                mu = px.mu.cpu().numpy().astype(np.float64) if gene_likelihood == "nb" else \
                    px.rate.cpu().numpy().astype(np.float64)
                theta = None if gene_likelihood == "poisson" else \
                    np.broadcast_to(px.theta.cpu().numpy().astype(np.float64), mu.shape)
            # NB(mu, theta) drawn as a Poisson-Gamma mixture: (n_samples, cells, genes)
            rate = mu if theta is None else rng.gamma(theta, mu / theta, size=(n_samples, *mu.shape))
            x = rng.poisson(np.broadcast_to(rate, (n_samples, *mu.shape))).astype(np.float64)
            tot = x.sum(-1, keepdims=True)
            return np.log1p(np.divide(x, tot, out=np.zeros_like(x), where=tot > 0) * TARGET_SUM).mean(0)

        pred = simulate(z0 + delta)
        decoded = simulate(z0)
    finally:
        torch.set_num_threads(threads_before)
    means["latent_arithmetic"] = pred.mean(0)
    means["decoded_control"] = decoded.mean(0)
    means["latent_shift"] = means["control"] + means["latent_arithmetic"] - means["decoded_control"]
    means = means[["control", "truth", "latent_arithmetic", "latent_shift", "additive", "no_change",
                   "decoded_control"]]

    hold = group == held_out
    de = top_de_genes(ad.AnnData(X=L[np.flatnonzero(hold)], obs=pd.DataFrame({"c": cond[hold]}),
                                 var=pd.DataFrame(index=pd.Index(genes))),
                      condition_key="c", control=control, stimulated=stimulated, n_genes=n_de_genes)
    predicted = ad.AnnData(
        X=pred.astype(np.float32),
        obs=pd.DataFrame({condition_key: f"predicted_{stimulated}", group_key: held_out},
                         index=obs.index[hold_ctrl]),
        var=pd.DataFrame(index=pd.Index(genes)))
    settings = dict(condition_key=condition_key, control=control, stimulated=stimulated, group_key=group_key,
                    held_out=held_out, training_groups=list(train), balance=balance, n_genes=len(genes),
                    n_train_cells=int(len(tr)), n_heldout_control=int(hold_ctrl.sum()),
                    n_heldout_stimulated=int((hold & (cond == stimulated)).sum()), n_latent=n_latent,
                    max_epochs=max_epochs, lr=lr, gene_likelihood=gene_likelihood, seed=seed,
                    n_samples=n_samples, num_threads=num_threads, train_seconds=seconds,
                    train_cpu_seconds=cpu_seconds)
    return LatentArithmeticResult(means=means, predicted=predicted, de_genes=de, delta=delta,
                                  model=model, settings=settings)


# --------------------------------------------------------------------------------------------
# DE genes and scores
# --------------------------------------------------------------------------------------------
def top_de_genes(adata, *, condition_key: str, control: str, stimulated: str, n_genes: int = 100,
                 layer: str | None = None, method: str = "wilcoxon") -> list:
    """The ``n_genes`` genes most changed between two conditions, both directions (chapter 11).

    scanpy's ``rank_genes_groups`` (``stimulated`` against ``control``, default Wilcoxon rank-sum)
    on log-normalised values; genes are ordered by the absolute test statistic, so strongly
    repressed genes count as well as induced ones. Works on a private copy; ``adata`` is not modified.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised in ``X`` or ``layers[layer]``; usually one cell type.
    condition_key, control, stimulated
        ``obs`` column and its two values.
    n_genes
        How many genes to return.
    layer
        Layer with the log-normalised values.
    method
        Any ``rank_genes_groups`` method (``"wilcoxon"``, ``"t-test"``, ...).

    Returns
    -------
    list of str
        Gene names, most changed first.
    """
    import anndata as ad
    import scanpy as sc

    cond = _obs_column(adata, condition_key, "condition labels")
    for v in (control, stimulated):
        if not (cond == str(v)).any():
            raise ValueError(f"No cell has obs[{condition_key!r}] == {v!r}. Values: {sorted(set(cond))}.")
    keep = np.isin(cond, [str(control), str(stimulated)])
    X = _matrix(adata, layer)
    tmp = ad.AnnData(X=sp.csr_matrix(X[np.flatnonzero(keep)], dtype=np.float32),
                     obs=pd.DataFrame({"c": pd.Categorical(cond[keep])}),
                     var=pd.DataFrame(index=pd.Index(np.asarray(adata.var_names).astype(str))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(tmp, "c", groups=[str(stimulated)], reference=str(control), method=method,
                                n_genes=tmp.n_vars)
    res = tmp.uns["rank_genes_groups"]
    names = np.asarray(res["names"][str(stimulated)]).astype(str)
    score = np.nan_to_num(np.asarray(res["scores"][str(stimulated)], dtype=np.float64))
    order = np.argsort(-np.abs(score), kind="stable")
    return names[order][:n_genes].tolist()


def _select(x, genes):
    if genes is None:
        return np.asarray(x, dtype=np.float64)
    if isinstance(x, pd.Series):
        missing = pd.Index(genes).difference(x.index)
        if len(missing):
            raise KeyError(f"{len(missing)} genes are not in the means, e.g. {list(missing[:5])}.")
        return x.loc[list(genes)].to_numpy(dtype=np.float64)
    return np.asarray(x, dtype=np.float64)[np.asarray(genes)]


def response_r2(truth_mean, pred_mean, *, control_mean=None, genes=None) -> dict:
    """Scores of a predicted mean expression profile against the observed one (chapter 11).

    Parameters
    ----------
    truth_mean, pred_mean
        Mean expression per gene (arrays, or Series indexed by gene).
    control_mean
        Control mean per gene; needed for the change-based scores.
    genes
        Subset to score: gene names (Series input) or positions / a boolean mask (arrays).

    Returns
    -------
    dict
        ``r2``: coefficient of determination (``sklearn.metrics.r2_score``; 1 is perfect, 0 is
        as good as predicting the truth's average, negative is worse). ``pearson_r2``: squared
        Pearson correlation (``scipy.stats.pearsonr``), what scGen reports; blind to a constant
        offset or scale. With ``control_mean``: ``delta_pearson``, the Pearson correlation of
        ``pred - control`` with ``truth - control`` (NaN when the predicted change is constant,
        e.g. for no-change), and ``delta_r2``, the R² of those changes. ``n_genes`` counts the genes.
    """
    from scipy.stats import pearsonr
    from sklearn.metrics import r2_score

    t, p = _select(truth_mean, genes), _select(pred_mean, genes)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"truth_mean and pred_mean must be 1-D and equally long; got {t.shape} and {p.shape}.")
    if t.size < 2:
        raise ValueError("At least 2 genes are needed to compute R².")

    def corr(a, b):
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(pearsonr(a, b)[0])

    out = {"r2": float(r2_score(t, p)), "pearson_r2": corr(t, p) ** 2, "n_genes": int(t.size)}
    if control_mean is not None:
        c = _select(control_mean, genes)
        out["delta_pearson"] = corr(p - c, t - c)
        out["delta_r2"] = float(r2_score(t - c, p - c))
    return out


def response_scores(means: pd.DataFrame, *, truth: str = "truth", control: str = "control",
                    methods=None, de_genes=None) -> pd.DataFrame:
    """:func:`response_r2` for several prediction columns, on all genes and on the DE genes (chapter 11).

    Parameters
    ----------
    means
        Per-gene table with a truth column, a control column and one column per method (as
        returned by :func:`response_baselines` or in :attr:`LatentArithmeticResult.means`).
    truth, control
        Names of the observed columns.
    methods
        Prediction columns to score (default: every other column).
    de_genes
        Gene names for the ``*_top_de`` columns (e.g. :func:`top_de_genes`).

    Returns
    -------
    pandas.DataFrame
        One row per method: ``r2_all``, ``pearson_r2_all``, ``delta_pearson_all`` and, with
        ``de_genes``, the same three with ``_top_de``.
    """
    for col in (truth, control):
        if col not in means:
            raise KeyError(f"means has no column {col!r}; columns: {list(means.columns)}.")
    methods = [c for c in means.columns if c not in (truth, control)] if methods is None else list(methods)
    rows = {}
    for m in methods:
        row = {}
        for suffix, genes in (("all", None), ("top_de", de_genes)):
            if suffix == "top_de" and de_genes is None:
                continue
            s = response_r2(means[truth], means[m], control_mean=means[control], genes=genes)
            row.update({f"r2_{suffix}": s["r2"], f"pearson_r2_{suffix}": s["pearson_r2"],
                        f"delta_pearson_{suffix}": s["delta_pearson"]})
        rows[m] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


# --------------------------------------------------------------------------------------------
# double perturbations
# --------------------------------------------------------------------------------------------
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
    layer
        Layer with the log-normalised values.

    Returns
    -------
    pandas.DataFrame
        One row per evaluated double: ``context``, ``double``, ``single_a``, ``single_b``,
        ``n_cells``, and for ``additive`` and ``no_change`` the scores of :func:`response_r2`
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
        raise ValueError(f"No label of obs[{perturbation_key!r}] contains {separator!r}: no double perturbation "
                         "found. Fix: pass separator= the character joining the two genes.")
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} of {n_doubles} doubles whose singles are not both measured: "
                      + "; ".join(skipped), ResponseWarning, stacklevel=2)
    if not rows:
        raise ValueError("No double has both of its singles measured, so the additive baseline cannot be "
                         "formed. Fix: include the single-perturbation cells (and check separator=).")
    return pd.DataFrame(rows)
