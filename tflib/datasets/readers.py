"""Turn registered files into AnnData: h5ad files as they are, R data files via a converter.

All readers return cells x genes with gene symbols as ``var_names``, unique ``obs_names``,
string columns that :meth:`anndata.AnnData.write_h5ad` accepts, and a provenance record
in ``adata.uns["dataset"]`` (name, URL, SHA-256, licence, citation, ...).

Parsing an ``.rda`` takes a few seconds, so the converted AnnData is cached as h5ad in
``<cache>/converted/`` under a key made of the source checksum and :data:`READER_VERSION`;
a change of either makes a fresh conversion. Chapter 01 walks through these readers.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tflib.datasets.registry import DatasetEntry, get_entry
from tflib.datasets.retrieval import _set_aside, cache_dir, fetch

__all__ = ["load", "PANCREAS_ORDER", "READER_VERSION"]

#: Bump when a converter changes its output, so cached conversions are rebuilt.
READER_VERSION = 1

#: Cluster order of the pancreas data, following endocrine development.
PANCREAS_ORDER = ["Ductal", "Ngn3 low EP", "Ngn3 high EP", "Pre-endocrine", "Alpha", "Beta", "Delta", "Epsilon"]


def _sanitize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast nullable/arrow string columns to categoricals of plain ``str`` (h5ad-writable)."""
    frame = frame.copy()
    for col in frame.columns:
        s = frame[col]
        strings = s.dtype == object and s.notna().any() and s.dropna().map(type).eq(str).all()
        if isinstance(s.dtype, pd.StringDtype) or strings:
            frame[col] = pd.Categorical(s.astype(object).where(s.notna(), None))
        elif isinstance(s.dtype, pd.CategoricalDtype) and isinstance(s.cat.categories.dtype, pd.StringDtype):
            frame[col] = s.cat.rename_categories(s.cat.categories.astype(object))
    frame.index = pd.Index(frame.index.astype(str).astype(object), name=frame.index.name)
    return frame


def _finish(adata, entry: DatasetEntry, path: Path):
    """Common last step: unique names, writable columns, provenance."""
    adata.obs = _sanitize_frame(adata.obs)
    adata.var = _sanitize_frame(adata.var)
    if not adata.obs_names.is_unique:
        adata.obs_names_make_unique()
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    record = entry.provenance()
    record["loaded_from"] = str(path)
    record["reader_version"] = READER_VERSION
    adata.uns["dataset"] = record
    return adata


def _read_h5ad(path: Path):
    import anndata as ad

    with warnings.catch_warnings():
        # Old files keep neighbour graphs in uns; anndata moves them and says so.
        warnings.filterwarnings("ignore", message=".*adjacency matrices.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=getattr(ad, "OldFormatWarning", UserWarning))
        return ad.read_h5ad(path)


def _cells_by_genes(m) -> sp.csr_matrix:
    """An R genes x cells :class:`RMatrix` (dense or dgCMatrix) -> CSR cells x genes, float32."""
    if sp.issparse(m.matrix):
        return m.matrix.T.tocsr().astype(np.float32)
    return sp.csr_matrix(np.asarray(m.matrix, dtype=np.float32).T)


def _read_pancreas(path: Path):
    """VeloViz's ``pancreas`` list: spliced/unspliced genes x cells, PCs and clusters."""
    import anndata as ad

    from tflib.datasets._rdata import read_rda

    obj = read_rda(path)["pancreas"]
    spliced, unspliced = obj["spliced"], obj["unspliced"]
    genes = np.asarray(spliced.row_names).astype(str)
    cells = np.asarray(spliced.col_names).astype(str)
    if not (np.array_equal(np.asarray(unspliced.col_names).astype(str), cells)
            and np.array_equal(np.asarray(unspliced.row_names).astype(str), genes)):
        raise ValueError("pancreas: spliced and unspliced matrices have different dimnames")
    s = _cells_by_genes(spliced)
    u = _cells_by_genes(unspliced)
    for label, m in (("spliced", s), ("unspliced", u)):
        if not np.array_equal(m.data, np.round(m.data)):
            raise ValueError(f"pancreas: the {label} matrix is not integer counts")
    clusters = pd.Categorical(np.asarray(obj["clusters"]).astype(str), categories=PANCREAS_ORDER)
    if pd.isna(clusters).any():
        raise ValueError("pancreas: unexpected cluster labels outside PANCREAS_ORDER")
    obs = pd.DataFrame({"clusters": clusters}, index=pd.Index(cells))
    adata = ad.AnnData(X=s.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(genes)),
                       layers={"spliced": s, "unspliced": u})
    pcs = obj.get("pcs")
    if pcs is not None:
        order = pd.Index(np.asarray(pcs.row_names).astype(str)).get_indexer(cells)
        adata.obsm["X_pca_veloviz"] = np.asarray(pcs.matrix, dtype=np.float32)[order]
    adata.uns["counts"] = {"X": "spliced counts (integer-valued float32)",
                           "layers": ["spliced", "unspliced"]}
    return adata


def _read_seurat(path: Path):
    """A Seurat v4 object with only the log-normalised ``data`` slot (the Kang PBMC subset).

    Raw counts are rebuilt as ``round(expm1(data) * nCount_RNA / 1e4)``: Seurat's
    LogNormalize is ``log1p(counts / nCount * 1e4)``, so this inverts it exactly; the
    residual before rounding and the check ``sum(counts) == nCount_RNA`` go to ``uns``.
    """
    import anndata as ad

    from tflib.datasets._rdata import RS4, RMatrix, read_rda

    objects = read_rda(path)
    seurat = next(v for v in objects.values() if isinstance(v, RS4) and "Seurat" in v.r_class)
    assay = seurat["assays"][str(np.atleast_1d(seurat["active.assay"])[0])]
    data = assay["data"]
    lognorm = data.matrix.T.tocsr().astype(np.float64)  # dgCMatrix genes x cells -> cells x genes
    meta = seurat["meta.data"].copy()
    cells = np.asarray(data.col_names).astype(str)
    meta = meta.loc[cells]
    n_count = meta["nCount_RNA"].to_numpy(dtype=np.float64)
    scale = 1e4
    for cmd in (seurat["commands"] or {}).values():
        if isinstance(cmd, RS4) and str(np.atleast_1d(cmd["name"])[0]).startswith("NormalizeData"):
            scale = float(np.atleast_1d(cmd["params"]["scale.factor"])[0])
    counts = lognorm.copy()
    counts.data = np.expm1(counts.data) * np.repeat(n_count, np.diff(counts.indptr)) / scale
    residual = float(np.abs(counts.data - np.round(counts.data)).max()) if counts.nnz else 0.0
    counts.data = np.round(counts.data)
    counts.eliminate_zeros()
    sums = np.asarray(counts.sum(axis=1)).ravel()
    max_sum_error = float(np.abs(sums - n_count).max())
    if residual > 0.01 or max_sum_error > 0.5:
        raise ValueError(
            f"{path.name}: raw counts could not be rebuilt exactly (rounding residual {residual:.3g}, "
            f"max |sum - nCount_RNA| {max_sum_error:.3g}); the file is not a plain LogNormalize output."
        )
    obs = meta
    obs.insert(0, "cell_type", obs["seurat_annotations"].astype("category"))
    obs["stim"] = pd.Categorical(obs["stim"].astype(str), categories=["CTRL", "STIM"])
    adata = ad.AnnData(X=counts.astype(np.float32), obs=obs,
                       var=pd.DataFrame(index=pd.Index(np.asarray(data.row_names).astype(str))),
                       layers={"lognorm": lognorm.astype(np.float32)})
    for key, red in (seurat["reductions"] or {}).items():
        emb = red["cell.embeddings"] if isinstance(red, RS4) else None
        if isinstance(emb, RMatrix) and emb.matrix.shape[0] == adata.n_obs:
            order = pd.Index(np.asarray(emb.row_names).astype(str)).get_indexer(adata.obs_names)
            adata.obsm[f"X_{key}_seurat"] = np.asarray(emb.matrix, dtype=np.float32)[order]
    adata.uns["counts_reconstruction"] = {
        "formula": f"X = round(expm1(lognorm) * nCount_RNA / {scale:g})",
        "source_slot": "assays$RNA@data (Seurat LogNormalize)",
        "scale_factor": scale,
        "max_rounding_residual": residual,
        "max_abs_sum_minus_nCount_RNA": max_sum_error,
    }
    return adata


_READERS = {"h5ad": _read_h5ad, "rda_pancreas": _read_pancreas, "rda_seurat": _read_seurat}


def _converted_path(entry: DatasetEntry) -> Path:
    return cache_dir() / "converted" / f"{entry.name}-{entry.sha256[:16]}-r{READER_VERSION}.h5ad"


def _write_atomic(adata, target: Path) -> None:
    """Write to a temporary file in the same folder, then rename: no half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", dir=target.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(name: str, *, mirror: str | os.PathLike | None = None, use_cache: bool = True):
    """Load a registered dataset as AnnData (cells x genes, gene symbols as ``var_names``).

    Parameters
    ----------
    name
        One of ``tflib.datasets.available("anndata")``: ``pancreas``, ``dentategyrus``,
        ``kang_pbmc``, ``kang_scgen_valid``, ``perturbench_devel``.
    mirror
        Folder with the mirror's files (see :func:`tflib.datasets.fetch` for the lookup order).
    use_cache
        Reuse (and write) the converted h5ad of ``.rda`` sources in the user cache. A cached
        conversion that cannot be read is renamed aside (``.corrupt``), never deleted.

    Used in chapters 01, 02, 04, 06--11.
    """
    entry = get_entry(name)
    if entry.kind != "anndata":
        raise TypeError(
            f"{name!r} is a {entry.kind} ({entry.file_name}), not an AnnData dataset. "
            f"Use tflib.datasets.fetch({name!r}) to get its verified file path and read it yourself "
            "(e.g. with pandas.read_csv)."
        )
    path = fetch(name, mirror=mirror)
    if entry.reader == "h5ad":
        return _finish(_read_h5ad(path), entry, path)
    converted = _converted_path(entry)
    if use_cache and converted.is_file():
        try:
            return _finish(_read_h5ad(converted), entry, path)
        except Exception as err:  # noqa: BLE001 - an unreadable cache entry is set aside (kept) and rebuilt
            aside = _set_aside(converted)
            warnings.warn(f"The cached conversion {converted} could not be read ({type(err).__name__}); it was "
                          f"renamed to {aside.name} (kept, not deleted) and is rebuilt from the source.",
                          stacklevel=2)
    adata = _finish(_READERS[entry.reader](path), entry, path)
    if use_cache:
        try:
            _write_atomic(adata, converted)
        except OSError as err:  # read-only cache: still return the data
            warnings.warn(f"Could not cache the converted {name!r} at {converted}: {err}", stacklevel=2)
    return adata
