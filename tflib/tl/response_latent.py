"""scGen-style latent arithmetic on scVI's latent space (chapter 11).

:func:`latent_arithmetic` predicts a held-out cell type's stimulated cells from its control
cells the way scGen does (Lotfollahi et al. 2019): move the controls' latent codes by the mean
stimulation vector of the other cell types and decode. The latent space is scVI's (scvi-tools,
already used in chapter 02); scGen itself and ``pertpy.tl.Scgen`` need JAX/flax, which the
course's pinned stack does not carry. The prediction is returned beside the no-change and
additive-shift baselines of :func:`tflib.tl.response_baselines`, computed in the same space on
the same cells, and scored with :func:`tflib.tl.response_scores`.

(Not named ``latent_arithmetic.py``: a submodule named like the function would shadow
``tflib.tl.latent_arithmetic``.)
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib.tl.response import TARGET_SUM, _baseline_frame, _design, _lognorm_counts
from tflib.tl.response_metrics import _matrix, response_scores, top_de_genes

__all__ = ["latent_arithmetic", "LatentArithmeticResult"]


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
