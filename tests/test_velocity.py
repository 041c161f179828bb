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
from tflib.validation import CountsError  # noqa: E402

from _anndata_state import assert_unchanged, snapshot  # noqa: E402

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
    conf = b.obs["velocity_confidence"]                  # the table summarises the per-cell values
    assert table.loc["all", "mean_coherence"] == pytest.approx(conf.mean())
    assert table.loc["all", "frac_coherence_gt_0.5"] == pytest.approx((conf > 0.5).mean())
    assert table.loc["all", "mean_coherence"] > 0.3  # a smooth flow on the simulator
    assert "all" in b.uns["tflib_velocity_qc"]


def test_dynamical_mode_on_a_gene_subset():
    raw, b = simulated_velocity()
    genes = list(b.var_names[b.var["velocity_genes"].to_numpy()][:3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = tflib.tl.velocity(raw, mode="dynamical", genes=genes, copy=True, **VELO)
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


# ------------------------------------------------------------------------------------------------
# Input checked in full, a failure leaves the input untouched, empty cells reported (issue 10 §2)
# ------------------------------------------------------------------------------------------------
SMALL = dict(n_cells=360, n_genes=120, n_fates=2, n_batches=1, seed=1, library_size=3.0)


@functools.lru_cache(maxsize=1)
def _small_raw():
    a = tflib.datasets.simulate(**SMALL)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    return a


def _small():
    return _small_raw().copy()


def _forbid_pipeline(monkeypatch):
    import scvelo as scv

    def never(*args, **kwargs):
        raise AssertionError("scVelo was reached: the input checks must come first")

    monkeypatch.setattr(scv.pp, "filter_and_normalize", never)


@pytest.mark.parametrize("layer,row,col,value,kind", [
    ("spliced", 300, 4, np.nan, "NaN or infinite"),          # beyond the old 300-row sample
    ("unspliced", -1, 7, np.nan, "NaN or infinite"),          # the last row
    ("spliced", 17, -1, -1.0, "negative"),                    # the last column
    ("unspliced", -1, -1, 0.5, "non-integer"),
])
def test_every_value_is_checked_before_scvelo_runs(monkeypatch, layer, row, col, value, kind):
    _forbid_pipeline(monkeypatch)
    a = _small()
    M = np.asarray(a.layers[layer].toarray() if sp.issparse(a.layers[layer]) else a.layers[layer], dtype=np.float32)
    M[row, col] = value
    a.layers[layer] = sp.csr_matrix(M)
    r, c = row % a.n_obs, col % a.n_vars
    before = snapshot(a)
    with pytest.raises(tflib.tl.VelocityInputError) as err:
        tflib.tl.velocity(a, **VELO)
    msg = str(err.value)
    assert isinstance(err.value, CountsError)
    assert msg.startswith(f"adata.layers[{layer!r}] does not hold raw integer counts")
    assert f"1 {kind} value (first at cell {r} ('c{r}'), gene {c} ({a.var_names[c]!r}))" in msg
    # velocity() has no layer argument: the advice names the layers it reads and its own option
    assert "layer='counts'" not in msg
    assert "raw spliced and unspliced counts" in msg and "check_counts=False" in msg
    assert_unchanged(a, before)


def test_check_counts_false_accepts_fractions_but_never_nan(monkeypatch):
    _forbid_pipeline(monkeypatch)
    a = _small()
    a.layers["spliced"] = a.layers["spliced"] * 0.5
    with pytest.raises(AssertionError, match="scVelo was reached"):     # fractions pass the check
        tflib.tl.velocity(a, check_counts=False, **VELO)
    M = a.layers["spliced"].toarray() if sp.issparse(a.layers["spliced"]) else a.layers["spliced"].copy()
    M[-1, 0] = np.nan
    a.layers["spliced"] = M
    with pytest.raises(tflib.tl.VelocityCountsError, match="1 NaN or infinite value"):
        tflib.tl.velocity(a, check_counts=False, **VELO)


def test_a_late_failure_leaves_the_input_as_it_was(monkeypatch):
    import scvelo as scv

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure in the velocity graph")

    monkeypatch.setattr(scv.tl, "velocity_graph", boom)   # after filtering, normalising, moments
    a = _small()
    before = snapshot(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="simulated failure"):
            tflib.tl.velocity(a, **VELO)
    assert_unchanged(a, before)                            # no gene dropped, no layer normalised


def test_in_place_writes_back_at_the_end_and_records_empty_cells():
    a = _small()
    n_genes = a.n_vars
    for key in ("spliced", "unspliced"):                   # two cells without any count
        M = a.layers[key].tolil() if sp.issparse(a.layers[key]) else a.layers[key]
        M[[5, 200]] = 0
        a.layers[key] = sp.csr_matrix(M)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        with pytest.warns(UserWarning, match=r"2 of 360 cells in adata.layers\['spliced'\] and \['unspliced'\] "
                                             r"have zero counts \(first: cell 5 \('c5'\)\).*"
                                             r"sc.pp.filter_cells\(adata, min_counts=1\)"):
            out = tflib.tl.velocity(a, n_top_genes=60, **VELO)   # genes are subset in place
    assert out is None
    assert a.n_obs == 360                                  # reported, not dropped
    assert a.n_vars == 60 < n_genes and {"Ms", "Mu", "velocity"} <= set(a.layers)
    assert a.uns["tflib_velocity"]["n_zero_count_cells"] == 2
    assert "velocity_graph" in a.uns and "X_pca" in a.obsm


def test_empty_cells_can_be_refused_and_empty_layers_always_are(monkeypatch):
    _forbid_pipeline(monkeypatch)
    a = _small()
    for key in ("spliced", "unspliced"):
        M = a.layers[key].toarray() if sp.issparse(a.layers[key]) else a.layers[key].copy()
        M[3] = 0
        a.layers[key] = M
    before = snapshot(a)
    with pytest.raises(tflib.tl.VelocityCountsError, match=r"1 of 360 cells .*min_counts=1"):
        tflib.tl.velocity(a, on_zero_cells="raise", **VELO)
    assert_unchanged(a, before)
    for key in ("spliced", "unspliced"):
        a.layers[key] = np.zeros(a.shape, dtype=np.float32)
    with pytest.raises(CountsError, match="no counts at all: all 360 cells sum to 0"):
        tflib.tl.velocity(a, **VELO)


def test_options_are_keyword_only():
    with pytest.raises(TypeError, match="positional"):
        tflib.tl.velocity(_tiny_counts(), "dynamical")
