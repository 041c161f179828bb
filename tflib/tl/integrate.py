"""scVI integration and scArches-style atlas mapping through scvi-tools.

Chapter 02 removes the stimulation "batch" from Kang PBMC with scVI (Lopez et al. 2018,
scvi-tools by Gayoso et al. 2022), then maps held-out cells onto a frozen reference the way
scArches does (Lotfollahi et al. 2022): the reference network is copied, only the weights of
the new batch are trained, and the query lands in the reference's latent space. Chapter 07
reuses the latent space as a baseline for annotation.

Results are written under documented keys:

* ``adata.obsm[key_added]`` (default ``"X_scvi"``): the latent mean per cell;
* ``adata.uns["scvi_integrate"]`` / ``query.uns["map_query"]``: parameters and final losses;
* scvi-tools' registration keys on the reference (listed in :func:`scvi_integrate`).

Counts are checked in full first (:func:`tflib.validation.check_counts`); see :func:`check_counts`.

Training runs on the accelerator scvi-tools picks automatically (``"auto"``), or on the one
passed in ``accelerator`` (e.g. derived from :func:`tflib.utils.get_device`).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from tflib._compat import renamed_kwargs

__all__ = ["scvi_integrate", "map_query", "check_counts", "check_query_genes"]

#: Architecture recommended for reference models that will receive queries (scArches):
#: layer norm instead of batch norm, and the batch fed to the encoder too.
SCARCHES_ARCH = dict(
    n_layers=2,
    use_layer_norm="both",
    use_batch_norm="none",
    encode_covariates=True,
    dropout_rate=0.2,
)


def check_counts(adata, *, layer: str | None = None, on_zero_cells: str = "warn", n_check=None) -> np.ndarray:
    """Raise unless ``adata.X`` (or ``layers[layer]``) holds raw counts; report empty cells.

    scVI models counts with a negative binomial; fed log-normalised data it trains without
    complaint and returns a misleading latent space, and a NaN makes it fail deep inside torch.
    Every value is checked (:func:`tflib.validation.check_counts`, chunked). An all-zero matrix is
    refused; cells without counts give a warning (``on_zero_cells="warn"``), or an error with
    ``"raise"``: scVI keeps them but places all of them on one point of the latent space, a
    spurious "cluster" without biology. Used by :func:`scvi_integrate` and :func:`map_query`
    (chapter 02). Nothing is written into ``adata``.

    Parameters
    ----------
    adata
        Cells x genes.
    layer
        Layer holding the counts (``None``: ``X``).
    on_zero_cells
        ``"warn"`` or ``"raise"`` for cells whose counts sum to 0.
    n_check
        Deprecated and ignored (the old check read only the first ``n_check`` values).

    Returns
    -------
    The boolean mask of cells with zero counts (all ``False`` for clean input).

    Raises
    ------
    tflib.validation.CountsError
        (a ``ValueError``) naming the number of bad values, the first bad cell and gene, and the fix.
    """
    from tflib.validation import check_counts as _check_all, check_zero_counts

    if n_check is not None:
        warnings.warn("check_counts(n_check=...) is deprecated and ignored: every value is checked now.",
                      FutureWarning, stacklevel=2)
    fix = ("scVI needs raw counts: pass layer= naming the counts layer, or put the raw counts in X "
           "(tflib.datasets.load('kang_pbmc') keeps them in X).")
    _check_all(adata, layer=layer, fix=fix)
    return check_zero_counts(
        adata, layer=layer, on_zero_cells=on_zero_cells, stacklevel=3,
        consequence="scVI keeps them (the object is not changed) but maps them all to one point of the "
                    "latent space, which can look like a small extra cluster.")


def _train_kwargs(max_epochs, accelerator, batch_size, early_stopping, extra):
    kw = dict(max_epochs=max_epochs, batch_size=batch_size, early_stopping=early_stopping)
    if accelerator is not None:
        kw["accelerator"] = str(accelerator)
    kw.update(extra or {})
    return kw


def _final_losses(model) -> dict:
    out = {}
    for name, frame in (getattr(model, "history", None) or {}).items():
        if name in ("elbo_train", "elbo_validation", "reconstruction_loss_train") and len(frame):
            out[name] = float(frame.iloc[-1, 0])
    return out


class _RollBack:
    """Undo what scvi-tools and this module added to an AnnData when a call fails halfway.

    scvi-tools' ``setup_anndata`` writes ``obs["_scvi_batch"|"_scvi_labels"]`` and
    ``uns["_scvi_uuid"|"_scvi_manager_uuid"]`` before training starts; if training then fails,
    the user's object would keep them. The snapshot is of column and key *names* (plus the batch
    column itself), so it costs no copy of the data.
    """

    def __init__(self, adata, batch_key=None):
        self.adata, self.batch_key = adata, batch_key
        self.obs_cols = list(adata.obs.columns)
        self.batch = adata.obs[batch_key].copy() if batch_key is not None and batch_key in adata.obs else None
        self.uns = {k: adata.uns[k] for k in adata.uns}
        self.obsm = set(adata.obsm.keys())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        a = self.adata
        a.obs.drop(columns=[c for c in a.obs.columns if c not in self.obs_cols], inplace=True)
        if self.batch is not None:
            a.obs[self.batch_key] = self.batch
        for k in [k for k in a.uns if k not in self.uns]:
            del a.uns[k]
        a.uns.update(self.uns)
        for k in [k for k in a.obsm if k not in self.obsm]:
            del a.obsm[k]
        return False


@renamed_kwargs(key="key_added")
def scvi_integrate(
    adata,
    *,
    batch_key: str,
    layer: str | None = None,
    n_latent: int = 10,
    n_hidden: int = 128,
    max_epochs: int | None = 200,
    batch_size: int = 128,
    early_stopping: bool = False,
    seed: int = 0,
    key_added: str = "X_scvi",
    query_ready: bool = True,
    on_zero_cells: str = "warn",
    accelerator: str | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
):
    """Train scVI with ``batch_key`` as the batch covariate and store its latent space.

    Used in chapters 02 (integration, reference for atlas mapping) and 07 (kNN baseline).

    The counts are checked in full before anything is changed (:func:`check_counts`): a NaN,
    a negative or a non-integer value anywhere raises :class:`tflib.validation.CountsError`
    naming the first bad cell and gene. If training fails, the keys scvi-tools had already
    added are removed again, so a failed call leaves ``adata`` as it was.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` (or in ``layers[layer]``). Select highly
        variable genes first (about 2,000): scVI is faster and not worse on them.
    batch_key
        ``obs`` column whose effect scVI should remove (Kang: ``"stim"``). Keyword-only.
    layer
        Counts layer, if the counts are not in ``X``.
    n_latent, n_hidden
        Latent dimensions and hidden units per layer.
    max_epochs
        Training epochs. ``None`` lets scvi-tools choose from the data size.
    batch_size, early_stopping
        Passed to ``SCVI.train``.
    seed
        Stored in ``scvi.settings.seed`` (seeds torch, NumPy and Python) before building.
    key_added
        ``obsm`` key for the latent mean (formerly ``key``, still accepted for one release).
    query_ready
        Use the scArches-recommended architecture (:data:`SCARCHES_ARCH`) so that queries can
        later be mapped with :func:`map_query`. ``False`` gives scvi-tools' defaults.
    on_zero_cells
        Cells whose counts sum to 0: ``"warn"`` (default; they are kept, and all land on one
        point of the latent space) or ``"raise"``. They are never dropped from ``adata``; to drop
        them call ``sc.pp.filter_cells(adata, min_counts=1)`` first. An all-zero matrix is refused.
    accelerator
        ``None`` (scvi-tools' ``"auto"``) or an explicit choice, e.g. ``get_device().type``.
    model_kwargs, train_kwargs
        Extra arguments for ``scvi.model.SCVI(...)`` and ``SCVI.train(...)``.

    Returns
    -------
    scvi.model.SCVI
        The trained model (``model.adata`` is ``adata``). The verb's purpose is the model, so it
        is returned; the latent space is also written into ``adata``.

    Keys written to ``adata``:

    - ``obsm[key_added]`` (default ``"X_scvi"``): the latent mean per cell;
    - ``uns["scvi_integrate"]``: the settings, ``n_zero_count_cells`` and the final losses;
    - by scvi-tools' ``setup_anndata``: ``obs["_scvi_batch"]``, ``obs["_scvi_labels"]``,
      ``uns["_scvi_uuid"]`` and ``uns["_scvi_manager_uuid"]``;
    - ``obs[batch_key]``: if categorical, its unused categories are removed (an unused category
      would become an untrained batch slot).
    """
    import scvi

    if batch_key not in adata.obs:
        raise KeyError(f"adata.obs has no column {batch_key!r}. Available: {list(adata.obs.columns)}.")
    zero = check_counts(adata, layer=layer, on_zero_cells=on_zero_cells)
    with _RollBack(adata, batch_key):
        if isinstance(adata.obs[batch_key].dtype, pd.CategoricalDtype):
            # An unused category would become an untrained batch slot that a later query with
            # that value would silently reuse instead of getting its own parameters.
            adata.obs[batch_key] = adata.obs[batch_key].cat.remove_unused_categories()
        n_batches = adata.obs[batch_key].nunique()
        if n_batches < 2:
            warnings.warn(
                f"obs[{batch_key!r}] has a single value: scVI will learn a latent space but has no "
                "batch effect to remove. That is fine for a reference that queries will be mapped onto.",
                stacklevel=3,
            )
        scvi.settings.seed = seed
        scvi.model.SCVI.setup_anndata(adata, layer=layer, batch_key=batch_key)
        arch = dict(SCARCHES_ARCH) if query_ready else {}
        arch.update(model_kwargs or {})
        model = scvi.model.SCVI(adata, n_latent=n_latent, n_hidden=n_hidden, **arch)
        model.train(**_train_kwargs(max_epochs, accelerator, batch_size, early_stopping, train_kwargs))
        latent = model.get_latent_representation()
    adata.obsm[key_added] = latent
    adata.uns["scvi_integrate"] = {
        "batch_key": batch_key,
        "n_latent": n_latent,
        "max_epochs": -1 if max_epochs is None else int(max_epochs),
        "seed": int(seed),
        "query_ready": bool(query_ready),
        "key_added": key_added,
        "n_zero_count_cells": int(zero.sum()),
        **_final_losses(model),
    }
    return model


def check_query_genes(reference_genes, query_genes, *, min_overlap: float = 0.8) -> float:
    """Return the fraction of reference genes found in the query; raise if it is too small.

    A query with other gene identifiers (Ensembl IDs vs symbols, mouse vs human) shares almost
    no names with the reference; scvi-tools would silently fill every missing gene with zeros
    and map nonsense. Used by :func:`map_query` (chapter 02).
    """
    ref = np.asarray(reference_genes).astype(str)
    qry = set(np.asarray(query_genes).astype(str))
    found = np.array([g in qry for g in ref])
    frac = float(found.mean()) if ref.size else 0.0
    if frac < min_overlap:
        missing = ref[~found]
        raise ValueError(
            f"The query has only {found.sum()} of the reference's {ref.size} genes "
            f"({frac:.0%} < min_overlap={min_overlap:.0%}); missing e.g. {missing[:5].tolist()}. "
            "Fix: use the same gene identifiers as the reference (symbols vs Ensembl IDs, "
            "same species or ortholog-mapped), or, if the genes are truly absent, lower "
            "min_overlap to let them be zero-filled."
        )
    return frac


@renamed_kwargs(key="key_added")
def map_query(
    reference_model,
    query,
    *,
    layer: str | None = None,
    max_epochs: int = 100,
    batch_size: int = 128,
    seed: int = 0,
    key_added: str = "X_scvi",
    min_overlap: float = 0.8,
    on_zero_cells: str = "warn",
    weight_decay: float = 0.0,
    accelerator: str | None = None,
    train_kwargs: dict | None = None,
):
    """Map ``query`` cells onto a trained scVI reference without retraining the reference.

    scArches-style surgery through scvi-tools' query API (chapter 02, atlas mapping):
    ``SCVI.prepare_query_anndata`` reorders the query's genes to the reference's (zero-filling
    the few that are missing), ``SCVI.load_query_data`` copies the reference network and freezes
    it except for the parameters of the query's new batch categories, and a short training fits
    those. The reference model itself is left untouched.

    Parameters
    ----------
    reference_model
        A trained ``scvi.model.SCVI``, ideally built with ``query_ready=True`` in
        :func:`scvi_integrate`.
    query
        Cells x genes with raw counts; ``obs`` must contain the reference's batch column (new
        batch values are expected: they are what the surgery learns). Its counts are checked in
        full first (:func:`check_counts`). The query is not modified except for the keys
        listed below; scvi-tools works on a gene-aligned copy.
    layer
        Counts layer of the query, if not ``X``.
    max_epochs
        Epochs for the query-only training (scArches uses about 100-200; the course uses
        fewer to stay within its time budget).
    seed
        Stored in ``scvi.settings.seed`` before training.
    key_added
        ``obsm`` key for the query's latent mean (formerly ``key``, accepted for one release).
    min_overlap
        Smallest fraction of reference genes that must be present in the query; see
        :func:`check_query_genes`.
    on_zero_cells
        As in :func:`scvi_integrate` (``"warn"`` or ``"raise"``; cells are never dropped).
    weight_decay
        0 (the scArches recommendation) keeps the frozen weights exactly frozen under AdamW.
    accelerator, train_kwargs
        As in :func:`scvi_integrate`.

    Returns
    -------
    scvi.model.SCVI
        The query model; ``model.adata`` is a gene-aligned copy of the query.

    Keys written to ``query``: ``obsm[key_added]`` (the latent mean) and ``uns["map_query"]``
    (settings, gene overlap, ``n_zero_count_cells`` and final losses).
    """
    import scvi

    registry = reference_model.adata_manager.registry
    setup_args = registry["setup_args"]
    batch_key = setup_args.get("batch_key")
    ref_layer = setup_args.get("layer")
    if batch_key is not None and batch_key not in query.obs:
        raise KeyError(
            f"The query lacks obs[{batch_key!r}], the reference's batch column. Fix: add it, "
            f"e.g. query.obs[{batch_key!r}] = 'query_batch_1' (new values are expected)."
        )
    frac = check_query_genes(reference_model.adata.var_names, query.var_names, min_overlap=min_overlap)
    if frac < 1.0:
        warnings.warn(
            f"{(1 - frac):.1%} of the reference genes are missing from the query; they are "
            "filled with zeros.",
            stacklevel=2,
        )
    zero = check_counts(query, layer=layer, on_zero_cells=on_zero_cells)

    q = query.copy()
    if layer is not None and layer != ref_layer:
        # scvi-tools reads the query from the layer the reference was set up with.
        target = ref_layer
        if target is None:
            q.X = q.layers[layer].copy()
        else:
            q.layers[target] = q.layers[layer].copy()
    elif layer is None and ref_layer is not None:
        q.layers[ref_layer] = q.X.copy()
    if q.var_names.has_duplicates:
        raise ValueError("The query has duplicated gene names. Fix: query.var_names_make_unique().")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*genes.*")
        q = scvi.model.SCVI.prepare_query_anndata(q, reference_model, inplace=False)

    scvi.settings.seed = seed
    model = scvi.model.SCVI.load_query_data(q, reference_model, freeze_dropout=True)
    plan = {"weight_decay": weight_decay}
    extra = dict(train_kwargs or {})
    plan.update(extra.pop("plan_kwargs", {}) or {})
    model.train(**_train_kwargs(max_epochs, accelerator, batch_size, False, extra), plan_kwargs=plan)
    query.obsm[key_added] = model.get_latent_representation()
    query.uns["map_query"] = {
        "key_added": key_added,
        "n_zero_count_cells": int(zero.sum()),
        "max_epochs": int(max_epochs),
        "seed": int(seed),
        "gene_overlap": frac,
        "batch_key": batch_key if batch_key is not None else "",
        **_final_losses(model),
    }
    return model
