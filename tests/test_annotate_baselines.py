"""The model-free annotation baselines need no layer nobody asked for (issue 10 §2b) and follow
the shared verb interface (issue 10 §3)."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import tflib.tl as tl
from tflib.tl.annotate_baselines import lognorm_from_counts


@pytest.fixture
def counts():
    """240 cells x 60 genes of raw counts, two cell types that differ in genes 0-9, three batches."""
    rng = np.random.default_rng(0)
    n, g = 240, 60
    kind = np.repeat(["T", "B"], n // 2)
    rate = np.full((n, g), 2.0)
    rate[kind == "T", :10] = 12.0
    X = rng.poisson(rate * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"cell_type": kind, "batch": np.tile(["b1", "b2", "b3"], n // 3)},
                                                      index=[f"c{i}" for i in range(n)]))
    a.var_names = [f"g{j}" for j in range(g)]
    return a


def _state(a):
    return (list(a.layers.keys()), list(a.obs.columns), list(a.obsm.keys()), a.X.copy())


def _unchanged(a, state):
    layers, obs, obsm, X = state
    return list(a.layers.keys()) == layers and list(a.obs.columns) == obs and list(a.obsm.keys()) == obsm \
        and (a.X != X).nnz == 0


def test_lognorm_is_normalize_total_then_log1p(counts):
    import scanpy as sc

    ref = counts.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    ours = lognorm_from_counts(counts.X)
    np.testing.assert_allclose(ours.toarray(), ref.X.toarray(), rtol=1e-5)
    np.testing.assert_allclose(lognorm_from_counts(counts.X.toarray()), ref.X.toarray(), rtol=1e-5)
    zero = lognorm_from_counts(np.zeros((2, 3)))
    assert np.array_equal(zero, np.zeros((2, 3)))                    # empty cells stay zero, no NaN


def test_pca_logreg_computes_lognorm_from_counts_without_touching_the_input(counts):
    state = _state(counts)
    model = tl.pca_logreg(counts, "cell_type", n_top_genes=30, n_pcs=5)
    assert _unchanged(counts, state) and "lognorm" not in counts.layers
    given = counts.copy()
    given.layers["lognorm"] = lognorm_from_counts(given.X)
    explicit = tl.pca_logreg(given, "cell_type", n_top_genes=30, n_pcs=5)
    np.testing.assert_allclose(model.predict_proba(counts), explicit.predict_proba(given), atol=1e-8)
    assert (model.predict(counts) == counts.obs["cell_type"].to_numpy()).mean() > 0.95


def test_counts_layer_is_preferred_when_x_is_not_counts(counts):
    a = counts.copy()
    a.layers["counts"] = a.X.copy()
    a.X = lognorm_from_counts(a.X) * 3.0                              # something else entirely in X
    b = counts.copy()
    pa = tl.pca_logreg(a, "cell_type", n_top_genes=30, n_pcs=5).predict_proba(a)
    pb = tl.pca_logreg(b, "cell_type", n_top_genes=30, n_pcs=5).predict_proba(b)
    np.testing.assert_allclose(pa, pb, atol=1e-8)


def test_input_that_is_not_counts_gets_the_one_line_fix_and_the_fix_works(counts):
    a = counts.copy()
    a.X = lognorm_from_counts(a.X)                                   # log-normalised X, no layers
    state = _state(a)
    with pytest.raises(KeyError) as exc:
        tl.pca_logreg(a, "cell_type", n_top_genes=30, n_pcs=5)
    msg = str(exc.value)
    assert "adata.layers['lognorm'] = adata.X.copy()" in msg and "does not hold raw counts" in msg
    assert _unchanged(a, state)
    a.layers["lognorm"] = a.X.copy()                                  # the fix, verbatim
    assert tl.pca_logreg(a, "cell_type", n_top_genes=30, n_pcs=5).predict(a).shape == (a.n_obs,)
    with pytest.raises(KeyError, match="layer=None"):
        tl.pca_logreg(a, "cell_type", layer="normalised")            # another missing layer: named, with the fix


def test_baseline_classifiers_without_lognorm_writes_only_documented_columns_at_the_end(counts):
    a = counts.copy()
    a.obsm["X_emb"] = lognorm_from_counts(a.X)[:, :10].toarray()
    split = tl.make_split(a, by="batch", test="b3")
    before = list(a.obs.columns)
    table = tl.baseline_classifiers(a, "cell_type", split, embed_key="X_emb", n_top_genes=30, n_pcs=5, n_boot=50)
    assert set(table["method"]) == {"PCA + logistic regression", "kNN on X_emb"}
    assert list(a.obs.columns) == before + ["baseline_pca_logreg", "baseline_knn_X_emb"]
    assert "lognorm" not in a.layers
    assert a.obs.loc[split.test, "baseline_pca_logreg"].notna().all()
    # a failure in the second baseline leaves adata as it was (no half-written columns)
    b = counts.copy()
    b.obsm["X_emb"] = np.zeros((b.n_obs, 3))
    b.obsm["X_bad"] = b.obsm["X_emb"]
    split_b = tl.make_split(b, by="batch", test="b3")
    state = _state(b)
    with pytest.raises(KeyError, match="X_missing"):
        tl.baseline_classifiers(b, "cell_type", split_b, embed_key="X_missing", n_top_genes=30, n_pcs=5, n_boot=10)
    assert _unchanged(b, state)


def test_transfer_labels_and_project_pca_take_key_added(counts):
    ref, query = counts[:160].copy(), counts[160:].copy()
    with pytest.warns(FutureWarning, match="key_added"):
        tl.project_pca(ref, query, n_top_genes=30, n_pcs=5, key="X_old")
    assert ref.obsm["X_old"].shape == (160, 5) and query.obsm["X_old"].shape == (80, 5)
    tl.project_pca(ref, query, n_top_genes=30, n_pcs=5, key_added="X_ref")
    pred = tl.transfer_labels(ref, query, embed_key="X_ref", label_key="cell_type", key_added="pred")
    assert pred.name == "pred" and query.obs["pred"].astype(str).tolist() == pred.tolist()
    assert "pred_confidence" in query.obs and "pred" not in ref.obs
    with pytest.warns(FutureWarning, match="embed_key"), pytest.warns(FutureWarning, match="key_added"):
        old = tl.transfer_labels(ref, query, key="X_ref", label_key="cell_type", result_key="pred_old")
    assert old.tolist() == pred.tolist()
    with pytest.raises(TypeError, match="positional"):
        tl.transfer_labels(ref, query, "X_ref")                       # options are keyword-only
