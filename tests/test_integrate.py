"""scVI integration, scArches-style query mapping, label transfer and annotation baselines.

Everything runs on a tiny synthetic count matrix (360 cells x 80 genes, three cell types,
three batches with a multiplicative batch effect) with a few epochs, so the whole module
stays within a few seconds of training.
"""
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import tflib.tl as tl

from _anndata_state import assert_unchanged, snapshot

N_PER, N_GENES, TYPES, BATCHES = 40, 80, ("T", "B", "NK"), ("b1", "b2", "b3")
# Small minibatches and a large learning rate: enough gradient steps in a few epochs.
FAST = dict(batch_size=32, train_kwargs=dict(enable_progress_bar=False, plan_kwargs=dict(lr=1e-2)))


def _synthetic_counts(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.lognormal(1.0, 0.5, N_GENES)
    programs = {t: base * np.where(rng.random(N_GENES) < 0.3, rng.lognormal(2.0, 0.3, N_GENES), 1.0)
                for t in TYPES}
    batch_fx = {b: rng.lognormal(0.0, 0.5, N_GENES) for b in BATCHES}
    rows, obs = [], []
    for b in BATCHES:
        for t in TYPES:
            mu = programs[t] * batch_fx[b] * rng.lognormal(0, 0.2, (N_PER, 1))
            rows.append(rng.negative_binomial(5, 5 / (5 + mu)))
            obs += [(b, t)] * N_PER
    obs = pd.DataFrame(obs, columns=["batch", "cell_type"])
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = ad.AnnData(np.vstack(rows).astype(np.float32), obs=obs.astype("category"))
    adata.var_names = [f"g{i}" for i in range(N_GENES)]
    lognorm = adata.X / adata.X.sum(1, keepdims=True) * 1e4
    adata.layers["lognorm"] = np.log1p(lognorm).astype(np.float32)
    return adata


@pytest.fixture(scope="module")
def data():
    return _synthetic_counts()


@pytest.fixture(scope="module")
def mapped(data):
    """A reference on batches b1+b2 and the query b3 mapped onto it (trained once)."""
    import copy

    ref = data[data.obs["batch"] != "b3"].copy()
    query = data[data.obs["batch"] == "b3"].copy()
    ref_model = tl.scvi_integrate(ref, batch_key="batch", n_latent=5, n_hidden=32, max_epochs=25, seed=0, **FAST)
    before = copy.deepcopy(ref_model.module.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_model = tl.map_query(ref_model, query, max_epochs=20, seed=0, **FAST)
    return ref, query, ref_model, q_model, before


def test_scvi_latent_is_written_and_separates_cell_types(mapped):
    ref, _, _, _, _ = mapped
    assert ref.obsm["X_scvi"].shape == (ref.n_obs, 5)
    info = ref.uns["scvi_integrate"]
    assert info["batch_key"] == "batch" and info["seed"] == 0 and np.isfinite(info["elbo_train"])
    # cell types are recoverable from the latent space: kNN within the reference (b1 -> b2)
    pred = tl.transfer_labels(ref[ref.obs["batch"] == "b1"], ref[ref.obs["batch"] == "b2"].copy())
    truth = ref.obs.loc[pred.index, "cell_type"].astype(str)
    assert (pred == truth).mean() > 0.95


def test_scvi_mixes_batches_better_than_pca(mapped):
    import scanpy as sc

    ref = mapped[0].copy()
    tmp = ad.AnnData(ref.layers["lognorm"].copy())
    sc.pp.pca(tmp, n_comps=5, random_state=0)
    ref.obsm["X_pca"] = tmp.obsm["X_pca"]
    table = tl.integration_metrics(ref, ["X_pca", "X_scvi"], "batch", "cell_type", k=15)
    # measured: batch ASW 0.73 (scVI) vs 0.51 (PCA); NMI 1.0 for both
    assert table.loc["X_scvi", "batch_asw"] > table.loc["X_pca", "batch_asw"] + 0.1
    assert table.loc["X_scvi", "nmi"] > 0.9


def test_same_seed_same_latent(data):
    small = data[data.obs["batch"] == "b1"].copy()
    a, b = small.copy(), small.copy()
    with pytest.warns(UserWarning, match="single value"):
        tl.scvi_integrate(a, batch_key="batch", n_latent=3, n_hidden=16, max_epochs=2, seed=7, **FAST)
        tl.scvi_integrate(b, batch_key="batch", n_latent=3, n_hidden=16, max_epochs=2, seed=7, **FAST)
    np.testing.assert_allclose(a.obsm["X_scvi"], b.obsm["X_scvi"], rtol=1e-5, atol=1e-6)


def test_map_query_leaves_the_reference_frozen(mapped):
    import torch

    ref, query, ref_model, q_model, before = mapped
    after = ref_model.module.state_dict()
    for name, w in before.items():
        assert torch.equal(w, after[name]), f"reference weight {name} changed"
    # The query network shares every reference weight; only new batch columns may differ.
    q_state = q_model.module.state_dict()
    n_changed_shape = 0
    for name, w in before.items():
        qw = q_state[name]
        if qw.shape != w.shape:
            n_changed_shape += 1
            qw = qw[tuple(slice(0, s) for s in w.shape)]
        assert torch.allclose(qw, w), f"frozen weight {name} was trained"
    assert n_changed_shape > 0  # the new batch b3 got its own parameters
    assert query.obsm["X_scvi"].shape == (query.n_obs, 5)
    assert query.uns["map_query"]["gene_overlap"] == 1.0


def test_label_transfer_to_the_mapped_query(mapped):
    ref, query, _, _, _ = mapped
    pred = tl.transfer_labels(ref, query, embed_key="X_scvi", label_key="cell_type", k=15)
    acc = (pred.to_numpy() == query.obs["cell_type"].astype(str).to_numpy()).mean()
    assert acc > 0.85
    assert query.obs["cell_type_pred_confidence"].between(0, 1).all()


def test_query_with_other_gene_identifiers_raises(mapped):
    _, query, ref_model, _, _ = mapped
    bad = query.copy()
    bad.var_names = [f"ENSG{i:011d}" for i in range(bad.n_vars)]
    with pytest.raises(ValueError, match=r"only 0 of the reference's 80 genes.*same gene identifiers"):
        tl.map_query(ref_model, bad, max_epochs=1)
    nobatch = query.copy()
    del nobatch.obs["batch"]
    with pytest.raises(KeyError, match="batch column"):
        tl.map_query(ref_model, nobatch, max_epochs=1)
    # A shuffled gene order is fine: it is realigned, and the query object is not modified.
    shuffled = query[:, query.var_names[::-1]].copy()
    n_vars = shuffled.n_vars
    assert tl.check_query_genes(ref_model.adata.var_names, shuffled.var_names) == 1.0
    assert shuffled.n_vars == n_vars


def _never_reached(*args, **kwargs):
    raise AssertionError("scvi-tools was reached: the counts check must come first")


def test_log_normalised_input_is_refused(data, monkeypatch):
    import scvi

    from tflib.validation import CountsError

    monkeypatch.setattr(scvi.model.SCVI, "setup_anndata", _never_reached)
    bad = data.copy()
    bad.X = bad.layers["lognorm"].copy()
    before = snapshot(bad)
    with pytest.raises(CountsError, match=r"adata.X does not hold raw counts.*log-normalised.*pass layer="):
        tl.scvi_integrate(bad, batch_key="batch", max_epochs=1)
    assert_unchanged(bad, before)


@pytest.mark.parametrize("case", ["nan_last_row", "nan_row_300", "negative_last_column", "fraction"])
def test_every_value_is_checked_before_training(data, monkeypatch, case):
    """The old check read the first 20,000 values; a bad value later crashed inside torch."""
    import scipy.sparse as sp
    import scvi

    from tflib.validation import CountsError

    monkeypatch.setattr(scvi.model.SCVI, "setup_anndata", _never_reached)
    bad = data.copy()
    X = np.asarray(bad.X).copy()
    where = {"nan_last_row": (-1, 3, np.nan), "nan_row_300": (300, 0, np.nan),
             "negative_last_column": (-1, -1, -1.0), "fraction": (359, 40, 2.5)}[case]
    X[where[0], where[1]] = where[2]
    bad.X = sp.csr_matrix(X)
    row, col = where[0] % bad.n_obs, where[1] % bad.n_vars
    kind = {"nan_last_row": "NaN or infinite", "nan_row_300": "NaN or infinite",
            "negative_last_column": "negative", "fraction": "non-integer"}[case]
    before = snapshot(bad)
    with pytest.raises(CountsError) as err:
        tl.scvi_integrate(bad, batch_key="batch", max_epochs=1)
    msg = str(err.value)
    assert f"1 {kind} value (first at cell {row} ('cell{row}'), gene {col} ('g{col}'))" in msg
    assert "layer=" in msg
    assert_unchanged(bad, before)
    with pytest.raises(CountsError, match=kind):       # map_query's check is the same function
        tl.check_counts(bad)


def test_zero_count_cells_are_reported_and_all_zero_refused(data, monkeypatch):
    import scvi

    from tflib.validation import CountsError

    monkeypatch.setattr(scvi.model.SCVI, "setup_anndata", _never_reached)
    a = data.copy()
    X = np.asarray(a.X).copy()
    X[[0, 5, 359]] = 0
    a.X = X
    with pytest.warns(UserWarning, match=r"3 of 360 cells in adata.X have zero counts.*"
                                         r"sc.pp.filter_cells\(adata, min_counts=1\)"):
        with pytest.raises(AssertionError, match="scvi-tools was reached"):  # a warning, then training
            tl.scvi_integrate(a, batch_key="batch", max_epochs=1)
    assert a.n_obs == 360                               # never dropped from the user's object
    before = snapshot(a)
    with pytest.raises(CountsError, match="3 of 360 cells"):
        tl.scvi_integrate(a, batch_key="batch", max_epochs=1, on_zero_cells="raise")
    a.X = np.zeros_like(X)
    with pytest.raises(CountsError, match="no counts at all: all 360 cells sum to 0"):
        tl.scvi_integrate(a, batch_key="batch", max_epochs=1)
    a.X = X
    assert_unchanged(a, before)


def test_zero_count_cells_train_and_are_recorded(data):
    a = data[data.obs["batch"] != "b3"].copy()
    X = np.asarray(a.X).copy()
    X[:2] = 0
    a.X = X
    with pytest.warns(UserWarning, match="2 of 240 cells"):
        tl.scvi_integrate(a, batch_key="batch", n_latent=3, n_hidden=16, max_epochs=1, seed=0, **FAST)
    assert a.uns["scvi_integrate"]["n_zero_count_cells"] == 2
    assert np.isfinite(a.obsm["X_scvi"]).all() and a.n_obs == 240


def test_failed_training_leaves_adata_as_it_was(data, monkeypatch):
    import scvi

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated failure inside training")

    monkeypatch.setattr(scvi.model.SCVI, "train", boom)
    a = data.copy()
    a.obs["batch"] = a.obs["batch"].cat.add_categories(["unused"])
    before = snapshot(a)
    with pytest.raises(RuntimeError, match="simulated failure"):
        tl.scvi_integrate(a, batch_key="batch", max_epochs=1)
    assert_unchanged(a, before)                        # no _scvi_* columns or uuids left behind
    assert "unused" in a.obs["batch"].cat.categories


def test_old_keyword_names_still_work_for_one_release(data, monkeypatch):
    import scvi

    monkeypatch.setattr(scvi.model.SCVI, "setup_anndata", _never_reached)
    with pytest.warns(FutureWarning, match=r"key_added=\.\.\. instead"):
        with pytest.raises(AssertionError, match="scvi-tools was reached"):
            tl.scvi_integrate(data.copy(), batch_key="batch", key="X_old")
    with pytest.raises(TypeError, match="positional"):  # options are keyword-only
        tl.scvi_integrate(data.copy(), "batch")
    with pytest.warns(FutureWarning, match="n_check"):
        tl.check_counts(data, n_check=10)


def test_transfer_labels_bad_input(mapped):
    ref, query, _, _, _ = mapped
    q = query.copy()
    q.obsm["X_scvi"] = q.obsm["X_scvi"][:, :2]
    with pytest.raises(ValueError, match="not the same space"):
        tl.transfer_labels(ref, q)
    lonely = ref.copy()
    lonely.obs["cell_type"] = lonely.obs["cell_type"].astype(str)
    lonely.obs.iloc[0, lonely.obs.columns.get_loc("cell_type")] = "Eryth"
    with pytest.raises(ValueError, match=r"'Eryth' \(1\)"):
        tl.transfer_labels(lonely, query.copy())


def test_baseline_classifiers_on_a_batch_split(data):
    adata = data.copy()
    split = tl.make_split(adata, by="batch", test="b3")
    adata.obsm["X_fake"] = np.asarray(adata.layers["lognorm"])[:, :10]
    table = tl.baseline_classifiers(adata, "cell_type", split, embed_key="X_fake", n_top_genes=40,
                                    n_pcs=10, n_boot=100, seed=0)
    assert list(table["method"].unique()) == ["PCA + logistic regression", "kNN on X_fake"]
    acc = table.set_index(["method", "metric"])
    lr = acc.loc[("PCA + logistic regression", "accuracy")]
    assert lr["low"] <= lr["estimate"] <= lr["high"] and lr["estimate"] > 0.9
    assert lr["n_cells"] == 120
    assert adata.obs.loc[split.test, "baseline_pca_logreg"].notna().all()
    assert adata.obs.loc[split.train, "baseline_pca_logreg"].isna().all()


def test_project_pca_places_the_query_in_the_reference_space(data):
    ref = data[data.obs["batch"] != "b3"].copy()
    query = data[data.obs["batch"] == "b3"].copy()
    tl.project_pca(ref, query, n_top_genes=40, n_pcs=5)
    assert ref.obsm["X_pca_ref"].shape == (240, 5) and query.obsm["X_pca_ref"].shape == (120, 5)
    # the reference's own coordinates are centred; the query's carry its batch shift
    np.testing.assert_allclose(ref.obsm["X_pca_ref"].mean(0), 0, atol=1e-6)
    with pytest.raises(ValueError, match="genes the PCA model was fitted on are missing"):
        tl.project_pca(ref, query[:, :30].copy(), n_top_genes=40, n_pcs=5)


def test_baselines_refuse_leaks_and_tiny_classes(data):
    adata = data.copy()
    leaky = tl.Split(adata.obs_names[:200], adata.obs_names[150:])
    with pytest.raises(tl.SplitLeakError):
        tl.baseline_classifiers(adata, "cell_type", leaky, n_boot=10)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    adata.obs.loc["cell0", "cell_type"] = "Eryth"  # one training cell of a new class
    split = tl.make_split(adata, by="batch", test="b3")
    with pytest.raises(ValueError, match=r"fewer than 2 training cells: 'Eryth' \(1\)"):
        tl.baseline_classifiers(adata, "cell_type", split, n_boot=10)


def test_evaluate_predictions_and_per_class_recall():
    y = np.array(["a"] * 8 + ["b"] * 2)
    p = np.array(["a"] * 8 + ["b", "a"])
    table = tl.evaluate_predictions(y, p, method="toy", n_boot=200, seed=0).set_index("metric")
    assert table.loc["accuracy", "estimate"] == pytest.approx(0.9)
    # macro-F1 by hand: F1(a) = 2*8/(2*8+1) = 16/17, F1(b) = 2*1/(2*1+1) = 2/3
    assert table.loc["macro_f1", "estimate"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    rec = tl.per_class_recall(y, p, n_boot=200, seed=0)
    assert rec.loc["a", "recall"] == 1.0 and rec.loc["b", "recall"] == 0.5
    assert rec.loc["b", "n_cells"] == 2 and rec.loc["b", "low"] == 0.0 and rec.loc["b", "high"] == 1.0
