"""Pseudobulk (chapter 12): the sums are right, bad designs are refused, and on null data the
per-cell test is fooled by sample effects while pseudobulk DESeq2 keeps its nominal rate."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import binomtest

from tflib import datasets, stats


def _toy():
    X = sp.csr_matrix(np.array([[1, 0, 2], [3, 1, 0], [0, 2, 2], [5, 0, 1], [1, 1, 1], [0, 0, 4]], float))
    obs = pd.DataFrame({"sample": ["s1", "s1", "s2", "s3", "s4", "s4"], "cond": ["a", "a", "a", "b", "b", "b"]})
    return ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["g1", "g2", "g3"]))


def test_pseudobulk_sums_each_samples_counts():
    adata = _toy()
    before = adata.X.copy()
    bulk = stats.pseudobulk(adata, "sample", "cond")
    np.testing.assert_array_equal(bulk.X, [[4, 1, 2], [0, 2, 2], [5, 0, 1], [1, 1, 5]])
    assert bulk.obs["cond"].tolist() == ["a", "a", "b", "b"] and bulk.obs["n_cells"].tolist() == [2, 1, 1, 2]
    assert (adata.X != before).nnz == 0                                   # the input is untouched


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.obs.__setitem__("sample", ["s1", "s1", "s1", "s2", "s2", "s2"]), ValueError, "at least 2 in each"),
    (lambda a: a.obs.__setitem__("sample", ["s1", "s1", "s2", "s2", "s3", "s3"]), ValueError, "several 'cond' groups"),
    (lambda a: setattr(a, "X", a.X * 0.5), ValueError, "does not hold raw counts"),
    (lambda a: a.obs.drop(columns="sample", inplace=True), KeyError, "no column 'sample'"),
])
def test_bad_designs_are_refused_with_the_fix(change, error, match):
    adata = _toy()
    change(adata)
    with pytest.raises(error, match=match):
        stats.pseudobulk_test(adata, "sample", "cond", reference="a")


def test_the_fixes_named_for_a_wrong_reference_or_layer_work():
    adata = _toy()
    adata.obs["cond"] = adata.obs["cond"].astype(str).str.upper()
    with pytest.raises(ValueError, match=r"reference='a' is not one of the groups .*did you mean reference='A'\?"):
        stats.pseudobulk_test(adata, "sample", "cond", reference="a")
    adata.layers["lognorm"] = adata.X.copy()
    adata.layers["lognorm"].data = np.log1p(adata.layers["lognorm"].data)
    with pytest.raises(ValueError, match=r"adata.X looks like raw counts: pass layer=None"):
        stats.pseudobulk_test(adata, "sample", "cond", reference="A", layer="lognorm")
    assert len(stats.pseudobulk_test(adata, "sample", "cond", reference="A", layer=None)) > 0


def test_pseudoreplication_on_null_data():
    """Eight simulated samples ("animals", each with its own per-gene offsets) split 4 / 4 into
    two conditions that do nothing. Every gene is a null test."""
    sim = datasets.simulate(n_cells=800, n_genes=250, n_fates=3, n_batches=8, seed=5, batch_log_sd=0.3)
    samples = sorted(sim.obs["batch"].astype(str).unique())
    treated = set(np.random.default_rng(0).permutation(samples)[:4])
    sim.obs["sample"] = sim.obs["batch"].astype(str).to_numpy()
    sim.obs["condition"] = np.where(sim.obs["sample"].isin(treated), "treated", "control")
    per_cell = stats.cell_level_test(sim, "condition", reference="control")
    bulk = stats.pseudobulk_test(sim, "sample", "condition", reference="control")
    n_cell, n_bulk = int((per_cell["pvalue"] < 0.05).sum()), int((bulk["pvalue"] < 0.05).sum())
    assert len(per_cell) >= 200 and len(bulk) >= 200
    assert n_cell / len(per_cell) > 0.2                                  # far above 5 %: samples mistaken for replicates
    # pseudobulk: consistent with 5 % (two-sided binomial test at 1 %)
    assert binomtest(n_bulk, len(bulk), 0.05).pvalue > 0.01, n_bulk / len(bulk)
