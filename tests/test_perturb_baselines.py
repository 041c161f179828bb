"""The linear fate baseline and matched random genes of chapter 11 (issue 12, item 2)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import tflib.tl as tl
from tflib.validation import CountsError


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    n, G = 300, 12
    X = rng.poisson(2.0, (n, G)).astype(np.float32)
    X[:, 0] = rng.poisson(np.where(np.arange(n) < 150, 0.2, 6.0))    # gene 0 marks fate A
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = [f"g{j}" for j in range(G)]
    pa = np.where(X[:, 0] > 2, 0.9, 0.1)
    probs = pd.DataFrame({"A": pa, "B": 1 - pa}, index=a.obs_names)
    return a, probs


def test_linear_model_learns_soft_targets(world):
    a, probs = world
    m = tl.LinearFateModel(C=1.0).fit(a, probs)
    pred = m.predict_fates(a)
    assert list(pred.columns) == ["A", "B"] and np.allclose(pred.sum(1), 1)
    assert np.corrcoef(pred["A"], probs["A"])[0, 1] > 0.8


def test_closed_form_shift_equals_refitting_the_input(world):
    a, probs = world
    m = tl.LinearFateModel(C=1.0).fit(a, probs)
    for kind in ("delete", "overexpress"):
        t = tl.perturb_linear(a, m, ["g0", "g5"], kind=kind)
        for g in ("g0", "g5"):
            X = a.X.toarray()
            j = list(a.var_names).index(g)
            # brute force: edit the input in log-normalised space and predict again
            from tflib.tl.perturb_baselines import _lognorm, _softmax

            L = _lognorm(a, None).toarray()
            L[:, j] = 0.0 if kind == "delete" else L.max(1)
            W, b = m.weights()
            expect = _softmax(L @ W.T + b)[:, 0] - m.predict_fates(a)["A"].to_numpy()
            got = t.loc[t["gene"] == g, "fate_shift_A"].to_numpy()
            np.testing.assert_allclose(got, expect, atol=1e-10)
            if kind == "delete":
                assert (got[X[:, j] == 0] == 0).all()               # nothing to knock out: no shift
    ko = tl.perturb_linear(a, m, "g0", kind="delete")
    assert ko.loc[ko["expressed"], "fate_shift_A"].mean() < -0.2    # losing the marker lowers fate A


def test_all_genes_rows_are_expressed_pairs(world):
    a, probs = world
    m = tl.LinearFateModel().fit(a, probs)
    t = tl.perturb_linear(a, m, "all")
    assert len(t) == int((a.X > 0).sum()) and t["expressed"].all()


def test_matched_random_genes_share_the_bin_and_are_deterministic(world):
    a, _ = world
    r1 = tl.matched_random_genes(a, ["g1", "g2"], n_per_gene=2, n_bins=3, seed=4)
    r2 = tl.matched_random_genes(a, ["g1", "g2"], n_per_gene=2, n_bins=3, seed=4)
    pd.testing.assert_frame_equal(r1, r2)
    assert not set(r1["random_gene"]) & {"g1", "g2"} and len(r1) == 4


def test_bad_inputs(world):
    a, probs = world
    m = tl.LinearFateModel().fit(a, probs)
    with pytest.raises(ValueError, match="kind='delete' or kind='overexpress'"):
        tl.perturb_linear(a, m, "g0", kind="up")
    with pytest.raises(KeyError, match="not in adata"):
        tl.perturb_linear(a, m, ["nope"])
    with pytest.raises(ValueError, match=r"adata\[:, model.genes\]"):
        tl.perturb_linear(a[:, :5], m, "g0")
    with pytest.raises(RuntimeError, match="fit"):
        tl.LinearFateModel().predict_fates(a)
    b = a.copy()
    b.X = b.X.toarray()
    b.X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tl.LinearFateModel().fit(b, probs)


def test_linear_model_slips_name_a_fix_that_works(world):
    a, probs = world
    with pytest.raises(ValueError, match="rows must sum to 1.*left out"):
        tl.LinearFateModel().fit(a, probs[["A"]])
    logged = a.copy()
    logged.layers["counts"] = logged.X.copy()
    logged.X = logged.X.astype(np.float64)
    logged.X.data = np.log1p(logged.X.data) + 0.01
    with pytest.raises(CountsError, match=r"tl.LinearFateModel\(layer='counts'\)"):
        tl.LinearFateModel().fit(logged, probs)
    m = tl.LinearFateModel(layer="counts").fit(logged, probs)          # the named fix
    ref = tl.LinearFateModel().fit(a, probs)
    np.testing.assert_allclose(m.predict_fates(logged).to_numpy(), ref.predict_fates(a).to_numpy(), atol=1e-8)
