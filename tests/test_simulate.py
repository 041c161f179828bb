"""The ground-truth simulator (tflib.datasets.simulate / knockout / overexpress; chapter 03).

Fast tests use a tiny world. The ``slow`` ones run the real scVelo and CellRank 2 pipelines on
1,200 cells x 300 genes (seed 0) and check that they recover the simulated truth. Thresholds
sit below the values measured when they were written (stated next to each).
"""
from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np

from tflib.stats import row_pearson
import pandas as pd
import pytest

import tflib.datasets as ds
from tflib.datasets import _names


@pytest.fixture(scope="module")
def tiny():
    return ds.simulate(n_cells=300, n_genes=120, seed=1)


@pytest.fixture(scope="module")
def small():
    return ds.simulate(n_cells=800, n_genes=200, seed=0)


# ---- structure ------------------------------------------------------------------------
def test_shapes_layers_and_records(tiny):
    a = tiny
    assert a.shape == (300, 120)
    for layer in ("spliced", "unspliced", "velocity_true", "spliced_true", "unspliced_true"):
        assert a.layers[layer].shape == a.shape
    for layer in ("spliced", "unspliced"):
        x = a.layers[layer].toarray()
        assert np.all(x >= 0) and np.array_equal(x, np.round(x)), "counts must be non-negative integers"
    assert np.array_equal(a.X.toarray(), a.layers["spliced"].toarray())
    fates = list(a.uns["fate_names"])
    assert fates == ["fate_A", "fate_B", "fate_C"]
    assert list(a.obs["fate"].cat.categories) == ["progenitor"] + fates
    assert list(a.obs["batch"].cat.categories) == ["batch0", "batch1"]
    assert a.obs["pseudotime"].between(0, 1).all()
    assert (a.obs.loc[~a.obs["differentiating"], "pseudotime"] == 0).all()
    assert set(a.uns["grn"]) == {"regulator", "target", "sign", "weight"}
    sim = a.uns["simulation"]
    assert sim["seed"] == 1 and sim["n_cells"] == 300 and sim["batch_log_sd"] <= 0.1


def test_fate_probabilities_rows_sum_to_one_and_match_labels(tiny):
    fp = tiny.obsm["fate_probs_true"]
    assert isinstance(fp, pd.DataFrame) and list(fp.columns) == list(tiny.uns["fate_names"])
    assert fp.index.equals(tiny.obs_names)
    np.testing.assert_allclose(fp.sum(axis=1), 1.0)
    late = tiny.obs["pseudotime"] > 0.6           # mature cells: the label is (nearly) certain
    hit = fp[late].to_numpy()[np.arange(late.sum()), tiny.obs.loc[late, "lineage"].cat.codes]
    assert hit.mean() > 0.9


def test_true_velocity_is_the_splicing_ode(tiny):
    v = tiny.var
    u, s = tiny.layers["unspliced_true"], tiny.layers["spliced_true"]
    expected = v["beta"].to_numpy() * u - v["gamma"].to_numpy() * s
    np.testing.assert_allclose(tiny.layers["velocity_true"], expected, atol=1e-4, rtol=1e-3)


def test_gene_names_are_borrowed_human_symbols(tiny):
    names = tiny.var_names
    assert names.is_unique
    tfs = set(_names.tf_symbols())
    is_tf = tiny.var["role"].isin(["progenitor_tf", "master_tf", "secondary_tf", "decoy_tf"])
    assert all(g in tfs for g in names[is_tf])
    assert not any(g in tfs for g in names[~is_tf])
    # only the regulators have outgoing edges
    assert set(tiny.uns["grn"]["regulator"]) == set(names[tiny.var["role"].isin(
        ["progenitor_tf", "master_tf", "secondary_tf"])])


def test_same_seed_same_world_other_seed_other_world():
    a = ds.simulate(n_cells=150, n_genes=100, seed=3)
    b = ds.simulate(n_cells=150, n_genes=100, seed=3)
    c = ds.simulate(n_cells=150, n_genes=100, seed=4)
    for layer in ("spliced", "unspliced"):
        assert (a.layers[layer] != b.layers[layer]).nnz == 0
    np.testing.assert_array_equal(a.layers["velocity_true"], b.layers["velocity_true"])
    np.testing.assert_array_equal(a.obsm["fate_probs_true"], b.obsm["fate_probs_true"])
    assert list(a.var_names) == list(b.var_names)
    assert (a.layers["spliced"] != c.layers["spliced"]).nnz > 0
    assert list(a.var_names) != list(c.var_names)


def test_bad_arguments_raise_clear_errors(tiny):
    with pytest.raises(TypeError, match="unknown parameters"):
        ds.simulate(n_cells=10, n_genes=100, n_futurs=5)
    with pytest.raises(TypeError, match=r"their defaults: tflib.datasets.simulator.DEFAULTS"):
        ds.simulate(n_cells=10, n_genes=100, n_futurs=5)
    from tflib.datasets.simulator import DEFAULTS                     # the place the message names
    assert "n_futures" in DEFAULTS
    with pytest.raises(ValueError, match="too small") as err:
        ds.simulate(n_cells=10, n_genes=30)
    smallest = int(re.search(r"at least n_genes=(\d+)", str(err.value)).group(1))
    ds.simulate(n_cells=10, n_genes=smallest, n_futures=1)            # the floor it names works
    with pytest.raises(ValueError, match="too small"):
        ds.simulate(n_cells=10, n_genes=smallest - 1)                 # ... and is the floor
    with pytest.raises(ValueError, match=r"n_fates=1: .* Fix: n_fates=2 or more"):
        ds.simulate(n_cells=10, n_genes=200, n_fates=1)
    with pytest.raises(KeyError, match="not in the simulated world"):
        ds.knockout(tiny, "NOT_A_GENE")
    with pytest.raises(ValueError, match="gene list is empty"):
        ds.knockout(tiny, [])                                         # used to return zeros
    with pytest.raises(TypeError, match="give a gene symbol"):
        ds.knockout(tiny, 3)
    with pytest.raises(ValueError, match="n_futures=0"):
        ds.knockout(tiny, tiny.var_names[1], n_futures=0)             # used to return NaN
    with pytest.raises(ValueError, match="not a gene subset"):
        ds.knockout(tiny[:, :50].copy(), tiny.var_names[1])           # used to be a bare KeyError
    with pytest.raises(ValueError, match="lacks the simulator"):
        ds.knockout(ad.AnnData(np.zeros((2, 2))), "x")


# ---- perturbations -----------------------------------------------------------------------
def test_h5ad_round_trip_then_knockout(tiny, tmp_path):
    path = tmp_path / "world.h5ad"
    tiny.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(back.obsm["fate_probs_true"], tiny.obsm["fate_probs_true"])
    master = back.var_names[back.var["role"] == "master_tf"][0]
    kw = dict(n_futures=10, seed=5)
    pd.testing.assert_frame_equal(ds.knockout(back, master, **kw), ds.knockout(tiny, master, **kw))


def test_knockout_of_master_lowers_its_fate_and_non_regulator_changes_nothing(small):
    v = small.var
    master = v.index[(v["role"] == "master_tf") & (v["module"] == "fate_A")][0]
    shift, base, pert = ds.knockout(small, master, return_probs=True)
    assert shift.shape == (small.n_obs, 3)
    np.testing.assert_allclose(shift.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(pert.to_numpy(), base.to_numpy() + shift.to_numpy())
    # measured (seed 0): mean -0.21, progenitors and early cells about -0.4
    assert shift["fate_A"].mean() < -0.1
    early = ~small.obs["differentiating"] | (small.obs["pseudotime"] < 0.15)
    assert shift.loc[early, "fate_A"].mean() < -0.25
    # genes without outgoing edges: exactly zero thanks to common random numbers
    for role in ("housekeeping", "decoy_tf", "target"):
        gene = v.index[v["role"] == role][0]
        assert np.abs(ds.knockout(small, gene, n_futures=10).to_numpy()).max() == 0.0


def test_overexpressing_a_master_raises_its_fate(small):
    v = small.var
    master = v.index[(v["role"] == "master_tf") & (v["module"] == "fate_C")][0]
    shift = ds.overexpress(small, master, factor=2.0)
    assert shift["fate_C"].mean() > 0.2          # measured: about +0.7
    with pytest.raises(ValueError, match="factor must be positive"):
        ds.overexpress(small, master, factor=0)


# ---- the truth is recoverable by the real tools ------------------------------------------
@pytest.fixture(scope="module")
def velocity_world():
    """1,200 x 300 world through the standard scVelo stochastic pipeline."""
    import scanpy as sc
    import scvelo as scv

    scv.settings.verbosity = 0
    truth = ds.simulate(n_cells=1200, n_genes=300, seed=0)
    adata = truth.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scv.pp.filter_and_normalize(adata, min_shared_counts=20)
        sc.pp.log1p(adata)
        sc.pp.highly_variable_genes(adata, n_top_genes=150, subset=True)
        sc.pp.pca(adata, n_comps=30, random_state=0)
        sc.pp.neighbors(adata, n_neighbors=30, random_state=0)
        scv.pp.moments(adata, n_pcs=None, n_neighbors=None)
        scv.tl.velocity(adata, mode="stochastic")
    return truth, adata


@pytest.mark.slow
def test_scvelo_velocity_correlates_with_true_velocity(velocity_world):
    truth, adata = velocity_world
    genes = adata.var_names[adata.var["velocity_genes"].to_numpy(bool)]
    est = np.nan_to_num(np.asarray(adata[:, genes].layers["velocity"]))
    true = np.asarray(truth[adata.obs_names, genes].layers["velocity_true"])
    r = np.nan_to_num(row_pearson(est, true))
    moving = truth.obs.loc[adata.obs_names, "differentiating"].to_numpy(bool)
    # measured (seed 0): median 0.33 over all cells, 0.50 among differentiating cells,
    # 0.02 among progenitors (their true velocity is zero up to noise)
    assert np.median(r) > 0.25
    assert np.median(r[moving]) > 0.4
    assert (r[moving] > 0).mean() > 0.75


@pytest.mark.slow
def test_cellrank_finds_the_simulated_terminal_states(velocity_world):
    import cellrank as cr

    truth, adata = velocity_world
    n_fates = int(truth.uns["simulation"]["n_fates"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vk = cr.kernels.VelocityKernel(adata, model="deterministic").compute_transition_matrix(
            show_progress_bar=False, n_jobs=1)
        ck = cr.kernels.ConnectivityKernel(adata).compute_transition_matrix()
        g = cr.estimators.GPCCA(0.8 * vk + 0.2 * ck)
        g.compute_schur(n_components=10)
        g.compute_macrostates(n_states=n_fates + 1)
        g.predict_terminal_states(method="top_n", n_states=n_fates)
        g.compute_fate_probabilities(use_petsc=False, show_progress_bar=False)
    lineage = truth.obs.loc[adata.obs_names, "lineage"].astype(str).to_numpy()
    terminal = g.terminal_states
    matched = {}
    for state in terminal.cat.categories:
        labels = pd.Series(lineage[(terminal == state).to_numpy()])
        matched[state] = labels.value_counts().idxmax()
        assert (labels == matched[state]).mean() >= 0.8          # measured: purity 1.0
    assert sorted(matched.values()) == list(truth.uns["fate_names"])
    fp_true = truth.obsm["fate_probs_true"].loc[adata.obs_names]
    for state, fate in matched.items():
        est = np.asarray(g.fate_probabilities[state]).ravel()
        assert np.corrcoef(est, fp_true[fate])[0, 1] > 0.6      # measured: 0.82-0.84
