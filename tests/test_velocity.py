"""Tests of tflib.tl.velocity / velocity_qc and the velocity plots (chapter 08).

The simulated pipeline (simulate -> velocity) runs once per test session through
:func:`simulated_velocity`, which ``test_fate.py`` and ``test_pl_fates.py`` reuse.
Thresholds are stated below what was measured (600 cells x 300 genes, seed 0, 239 velocity
genes): the median per-cell Pearson correlation with the true velocity is 0.62 among
differentiating cells (0.44 over all cells; progenitors, whose true velocity is ~0, give 0.01),
85 % of differentiating cells correlate positively, and the sign of the estimated velocity agrees
with the truth for 84 % of the entries whose true velocity is in the top quartile of magnitude.
"""
from __future__ import annotations

import functools
import warnings

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import tflib  # noqa: E402
from tflib.stats import row_pearson  # noqa: E402

# Small but deep enough: at library_size=1 (the course default) 600 cells leave too few
# velocity genes for a stable unit test; chapter 08 uses the course size instead.
SIM = dict(n_cells=600, n_genes=300, n_fates=3, n_batches=1, seed=0, library_size=3.0)
VELO = dict(min_shared_counts=10, umap=False, seed=0)


@functools.lru_cache(maxsize=1)
def _pipeline():
    import scvelo as scv

    scv.settings.verbosity = 0
    raw = tflib.datasets.simulate(**SIM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = tflib.tl.velocity(raw, copy=True, **VELO)
    return raw, processed


def simulated_velocity():
    """(raw simulated AnnData, its processed copy after tflib.tl.velocity); fresh copies each call."""
    raw, processed = _pipeline()
    return raw.copy(), processed.copy()




def _tiny_counts(n_cells=40, n_genes=12, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(X=sp.csr_matrix(rng.poisson(3.0, (n_cells, n_genes)).astype(np.float32)))
    a.layers["spliced"] = a.X.copy()
    a.layers["unspliced"] = sp.csr_matrix(rng.poisson(1.0, (n_cells, n_genes)).astype(np.float32))
    return a


def test_missing_layer_names_layer_and_fix():
    a = _tiny_counts()
    del a.layers["unspliced"]
    with pytest.raises(tflib.tl.VelocityInputError, match="'unspliced'") as err:
        tflib.tl.velocity(a)
    assert "velocyto" in str(err.value) and 'tflib.datasets.load("pancreas")' in str(err.value)
    assert "unspliced" not in a.layers and "velocity" not in a.layers  # nothing was touched


def test_normalised_counts_are_refused():
    # The CellRank test file ships scVelo-processed (size-normalised) layers: exactly the mistake.
    dg = _dentate()
    before = dg.layers["spliced"].copy()
    with pytest.raises(tflib.tl.VelocityInputError, match="raw integer counts") as err:
        tflib.tl.velocity(dg)
    assert "check_counts=False" in str(err.value)
    assert (dg.layers["spliced"] != before).nnz == 0
    a = _tiny_counts()
    a.layers["unspliced"] = a.layers["unspliced"] * 0.5  # not integers any more
    with pytest.raises(tflib.tl.VelocityInputError, match="unspliced"):
        tflib.tl.velocity(a)


def _dentate():
    return tflib.datasets.load("dentategyrus")  # 200 cells whose layers scVelo already normalised


def test_velocity_agrees_with_true_velocity():
    raw, b = simulated_velocity()
    # copy=True left the raw counts alone
    assert "velocity" not in raw.layers
    vals = raw.layers["spliced"][:50].data
    assert np.allclose(vals, np.round(vals))

    info = b.uns["tflib_velocity"]
    assert info["mode"] == "stochastic" and info["n_velocity_genes"] >= 30
    for key in ("Ms", "Mu", "velocity"):
        assert key in b.layers
    assert "velocity_graph" in b.uns and "X_pca" in b.obsm  # scVelo 0.3.4 keeps the graph in .uns

    genes = b.var_names[b.var["velocity_genes"].to_numpy()]
    est = np.asarray(b[:, genes].layers["velocity"], dtype=float)
    true = raw[:, genes].layers["velocity_true"]
    true = np.asarray(true.toarray() if sp.issparse(true) else true, dtype=float)
    r = np.nan_to_num(row_pearson(est, true))
    moving = raw.obs["differentiating"].to_numpy()
    # stated levels (measured: median 0.62, 85 % positive among differentiating cells)
    assert np.median(r[moving]) > 0.4
    assert np.mean(r[moving] > 0) > 0.7
    # sign agreement where the true velocity is clearly non-zero (measured 0.84)
    big = np.abs(true) > np.quantile(np.abs(true), 0.75)
    assert np.mean(np.sign(est[big]) == np.sign(true[big])) > 0.65


def test_velocity_qc_summary():
    _, b = simulated_velocity()
    table = tflib.tl.velocity_qc(b, groupby="fate")
    assert {"velocity_length", "velocity_confidence", "velocity_confidence_transition"} <= set(b.obs)
    assert list(table.index)[0] == "all" and set(b.obs["fate"].astype(str)) <= set(table.index)
    assert table.loc["all", "n_cells"] == b.n_obs
    assert 0.0 <= table.loc["all", "mean_coherence"] <= 1.0
    assert table.loc["all", "mean_coherence"] > 0.3  # a smooth flow on the simulator
    assert "all" in b.uns["tflib_velocity_qc"]


def test_dynamical_mode_on_a_gene_subset():
    raw, b = simulated_velocity()
    genes = list(b.var_names[b.var["velocity_genes"].to_numpy()][:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = tflib.tl.velocity(raw, "dynamical", genes=genes, copy=True, **VELO)
    assert d.uns["tflib_velocity"]["mode"] == "dynamical"
    assert 1 <= d.uns["tflib_velocity"]["n_dynamical_fits"] <= 3
    assert np.isfinite(d[:, genes].layers["velocity"]).all()


def test_velocity_plots_render():
    import matplotlib.pyplot as plt

    _, b = simulated_velocity()
    genes = list(b.var_names[b.var["velocity_genes"].to_numpy()][:4])
    fig = tflib.pl.phase_portraits(b, genes, color="fate")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    fig.canvas.draw()
    with pytest.raises(KeyError, match="not in adata.var_names"):
        tflib.pl.phase_portraits(b, ["no_such_gene"])
    fig2 = tflib.pl.velocity_stream(b, basis="pca", color="fate", density=0.8)
    fig2.canvas.draw()
    plt.close("all")


def test_public_names_resolve_to_functions_after_submodule_imports():
    import importlib
    import inspect

    for mod in ("tflib.tl.rna_velocity", "tflib.tl.fate", "tflib.tl.drivers", "tflib.pl.velocity", "tflib.pl.fates"):
        importlib.import_module(mod)  # a submodule named like a function would now shadow it
    for f in (tflib.tl.velocity, tflib.tl.velocity_qc, tflib.tl.fates, tflib.tl.fate_drivers,
              tflib.pl.fate_donuts, tflib.pl.phase_portraits, tflib.pl.velocity_stream):
        assert inspect.isfunction(f), f
