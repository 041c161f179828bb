"""Tests of the trajectory-aware Transcriptformer (tflib.tl.trajectory, trajectory_metrics; chapter 10).

The embedding-velocity and kernel tests reuse the cached simulated velocity pipeline of
``test_velocity.py`` (600 cells x 300 genes, seed 0) with the course checkpoint; the fate-aware
model is trained on a world the checkpoint never saw (seed 1). Measured on an idle machine:
the embedding velocity agrees with the embedding velocity of the *true* velocity at a median
per-cell cosine of about 0.18 among differentiating cells (another cell's arrow gives about
-0.1); the fate-aware model, trained on the true fate probabilities of 180 cells, predicts 180
held-out cells with a mean absolute error about half that of the constant baseline and a mean
AUROC of the true lineage above 0.85. The assertions sit below these numbers.
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import tflib
from _anndata_state import assert_unchanged, snapshot
from test_velocity import simulated_velocity

torch.set_num_threads(2)


@functools.lru_cache(maxsize=1)
def _course():
    return tflib.models.course_checkpoint()


@functools.lru_cache(maxsize=1)
def _embedded():
    """(raw, processed copy with obsm X_tf / velocity_tf / velocity_tf_true) of the shared pipeline.

    Every second cell only (300), to keep the file fast; the moments and velocities are those of
    the full 600-cell fit."""
    model, tok = _course()
    raw, b = simulated_velocity()
    raw, b = raw[::2].copy(), b[::2].copy()
    tflib.tl.vocab_labels(raw, tok)
    b.var["tf_symbol"] = raw.var.loc[b.var_names, "tf_symbol"].to_numpy()
    b.layers["velocity_true"] = raw[:, b.var_names].layers["velocity_true"].toarray()
    tflib.tl.embedding_velocity(b, model, tok, gene_key="tf_symbol", seed=0)
    tflib.tl.embedding_velocity(b, model, tok, vkey="velocity_true", genes=None, gene_key="tf_symbol",
                                key_added="X_tf_true", velocity_key="velocity_tf_true", seed=0)
    return raw, b


def embedded():
    raw, b = _embedded()
    return raw, b.copy()


def test_vocab_labels_are_distinct_vocabulary_genes():
    _, tok = _course()
    raw, _ = simulated_velocity()
    assert tflib.tl.vocab_labels(raw, tok) is None                      # in place, like every verb
    labels = raw.var["tf_symbol"]
    assert labels.is_unique and len(labels) == raw.n_vars
    assert (np.asarray(tok.vocab.map_genes(list(labels)).ids) >= 0).all()
    cells = tok.encode(raw, gene_key="tf_symbol")                        # raises if coverage were too low
    assert len(cells) == raw.n_obs


def test_embedding_velocity_shape_reproducible_and_antisymmetric():
    model, tok = _course()
    raw, b = embedded()
    vel = b.obsm["velocity_tf"]
    assert vel.shape == (b.n_obs, model.config.n_embd) and b.obsm["X_tf"].shape == vel.shape
    assert np.isfinite(vel).all() and (np.linalg.norm(vel, axis=1) > 0).mean() > 0.95
    assert b.uns["velocity_tf"]["scheme"] == "central" and b.uns["velocity_tf"]["step"] == 0.1
    small = b[:40].copy()
    before = snapshot(small)
    again = tflib.tl.embedding_velocity(small, model, tok, gene_key="tf_symbol", seed=0, copy=True)
    assert_unchanged(small, before)                                      # copy=True leaves the input alone
    np.testing.assert_allclose(again.obsm["velocity_tf"], vel[:40], atol=1e-5)   # same seed, same arrows
    small.layers["reversed"] = -np.asarray(small.layers["velocity"])
    assert tflib.tl.embedding_velocity(small, model, tok, vkey="reversed", gene_key="tf_symbol",
                                       velocity_key="rev", seed=0) is None
    np.testing.assert_allclose(small.obsm["rev"], -vel[:40], atol=1e-5)  # central difference: exact reversal


def test_embedding_velocity_points_like_the_true_velocity():
    """The re-embedded arrow carries velocity information: it beats another cell's arrow."""
    raw, b = embedded()
    cos = tflib.tl.row_cosine(b.obsm["velocity_tf"], b.obsm["velocity_tf_true"])
    moving = raw.obs["differentiating"].to_numpy()
    assert np.nanmedian(cos[moving]) > 0.08                               # measured about 0.18
    rng = np.random.default_rng(0)
    shuffled = tflib.tl.row_cosine(b.obsm["velocity_tf"][rng.permutation(b.n_obs)], b.obsm["velocity_tf_true"])
    assert np.nanmedian(cos[moving]) > np.nanmedian(shuffled[moving]) + 0.15


def test_embedding_kernel_is_a_valid_transition_matrix_on_the_embedding_graph():
    raw, b = embedded()
    gene_graph = b.obsp["connectivities"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = tflib.tl.embedding_kernel(b, seed=0)
    T = kernel.transition_matrix
    T = T.toarray() if hasattr(T, "toarray") else np.asarray(T)
    assert T.shape == (b.n_obs, b.n_obs)
    assert (T >= 0).all() and np.allclose(T.sum(1), 1.0, atol=1e-8)
    assert "tf_connectivities" in b.obsp and (b.obsp["connectivities"] != gene_graph).nnz == 0
    # the walk stays on the embedding's kNN graph (plus self-loops), not on the gene-space graph
    allowed = (b.obsp["tf_connectivities"] != 0).toarray() | np.eye(b.n_obs, dtype=bool)
    assert not (T[~allowed] > 0).any()
    gene_pattern = (gene_graph != 0).toarray() | np.eye(b.n_obs, dtype=bool)
    assert (T[~gene_pattern] > 0).any()


def test_fates_accept_a_precomputed_kernel():
    raw, b = embedded()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = tflib.tl.embedding_kernel(b, seed=0)
        tflib.tl.fates(b, kernel=kernel, cluster_key="fate", n_states=4, n_initial=1, n_terminal=3, n_cells=20,
                       seed=0)
    P = b.obsm["fate_probs"]
    assert P.shape == (b.n_obs, 3) and np.allclose(P.sum(1), 1.0) and (P >= 0).all()
    assert b.uns["tflib_fates"]["kernel"] == repr(kernel)           # the kernel passed in, recorded
    match = tflib.tl.match_terminal_states(b)
    found = set(match.loc[match["purity"] >= 0.8, "label"]) & set(raw.uns["fate_names"])
    assert len(found) >= 2, match
    other = b.copy()
    with pytest.raises(ValueError, match="different AnnData"):
        tflib.tl.fates(other, kernel=kernel)


def test_bad_input_errors_name_the_fix():
    model, tok = _course()
    raw, b = embedded()
    with pytest.raises(KeyError, match="tflib.tl.velocity"):
        tflib.tl.embedding_velocity(raw, model, tok)                      # raw counts: no Ms / velocity
    other = tflib.models.Transcriptformer(tflib.models.TranscriptformerConfig(
        vocab_size=50, max_len=16, n_layer=1, n_head=2, n_embd=16, n_inner=32))
    with pytest.raises(ValueError, match="course_checkpoint"):
        tflib.tl.embedding_velocity(b, other, tok, gene_key="tf_symbol")
    with pytest.raises(ValueError, match="course_checkpoint"):
        tflib.tl.TrajectoryAwareTranscriptformer(other, tok)
    del b.obsm["velocity_tf"]
    with pytest.raises(KeyError, match="embedding_velocity"):
        tflib.tl.embedding_kernel(b)
    ta = tflib.tl.TrajectoryAwareTranscriptformer(model, tok)
    with pytest.raises(RuntimeError, match="fit"):
        ta.predict_fates(raw)
    with pytest.raises(TypeError, match="DataFrame"):
        ta.fit(raw, raw.obsm["fate_probs_true"].to_numpy())


def test_fate_aware_model_predicts_held_out_cells():
    model, tok = _course()
    sim = tflib.datasets.simulate(n_cells=360, n_genes=300, n_fates=3, n_batches=1, seed=1, library_size=3.0)
    tflib.tl.vocab_labels(sim, tok)
    truth = sim.obsm["fate_probs_true"]
    rng = np.random.default_rng(0)
    order = rng.permutation(sim.n_obs)
    train, test = sim.obs_names[order[:180]], sim.obs_names[order[180:]]
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    quick = tflib.train.FinetuneConfig(mode="top", n_unfrozen=1, epochs=6, lr=3e-3, encoder_lr=2e-3, max_len=64,
                                       class_weight=None, calibrate=False, patience=3, seed=0)
    ta = tflib.tl.TrajectoryAwareTranscriptformer(model, tok, gene_key="tf_symbol", config=quick)
    ta.fit(sim, truth.loc[train])
    for k, v in model.state_dict().items():                               # the pretrained model is untouched
        assert torch.equal(v, snapshot[k]), k
    P = ta.predict_fates(sim[test])
    assert list(P.columns) == list(truth.columns) and (P.index == test).all()
    assert np.allclose(P.sum(1), 1.0) and (P.to_numpy() >= 0).all()
    est = P.to_numpy()
    tru = truth.loc[test].to_numpy(dtype=float)
    mae = np.abs(est - tru).mean()
    constant = np.abs(truth.loc[train].to_numpy(dtype=float).mean(0) - tru).mean()
    assert mae < 0.75 * constant, (mae, constant)
    acc = tflib.tl.fate_accuracy(P, truth, sim.obs["lineage"], cells=test, n_boot=50)
    assert acc["auroc"].estimate > 0.75 and acc["mae"].high < constant
    emb = ta.embed(sim[test].copy(), key_added="X_ta")
    assert emb.shape == (len(test), model.config.n_embd) and np.isfinite(emb).all()


def test_cross_boundary_correctness_sees_direction():
    rng = np.random.default_rng(0)
    X = np.c_[np.linspace(0, 10, 200), rng.normal(0, 0.05, 200)]       # cells along a line
    clusters = np.where(X[:, 0] < 5, "early", "late")
    forward = np.tile([1.0, 0.0], (200, 1))
    good = tflib.tl.cross_boundary_correctness(X, forward, clusters, [("early", "late")], n_neighbors=10, n_boot=50)
    bad = tflib.tl.cross_boundary_correctness(X, -forward, clusters, [("early", "late")], n_neighbors=10, n_boot=50)
    assert good.loc["all", "score"] > 0.9 and bad.loc["all", "score"] < -0.9
    assert good.loc["all", "low"] <= good.loc["all", "score"] <= good.loc["all", "high"]
    # only cells at the boundary: the early cells with a late cell among their 10 nearest
    # neighbours (brute force here), all within 10 grid steps of x = 5
    D = np.linalg.norm(X[:, None] - X[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    nearest = np.argsort(D, axis=1)[:, :10]
    boundary = [i for i in np.flatnonzero(clusters == "early") if (clusters[nearest[i]] == "late").any()]
    assert good.loc["all", "n_cells"] == len(boundary) == bad.loc["all", "n_cells"]
    assert len(boundary) > 0 and (X[boundary, 0] > 5 - 10 * (X[1, 0] - X[0, 0])).all()
    with pytest.raises(KeyError, match="not in the data"):
        tflib.tl.cross_boundary_correctness(X, forward, clusters, [("early", "Beta")])


def test_fates_in_truth_space_and_accuracy():
    idx = pd.Index([f"c{i}" for i in range(6)])
    P = pd.DataFrame({"s1": [1, 0, 0.5, 1, 0, 0.5], "s2": [0, 1, 0.5, 0, 1, 0.5]}, index=idx, dtype=float)
    est = tflib.tl.fates_in_truth_space(P, {"s1": "A", "s2": "A"}, ["A", "B"])   # two states of one fate
    assert np.allclose(est["A"], 1.0) and np.allclose(est["B"], 0.0)           # the missed fate gets 0
    truth = pd.DataFrame({"A": [1, 0, 1, 1, 0, 0], "B": [0, 1, 0, 0, 1, 1]}, index=idx, dtype=float)
    lineage = np.where(truth["A"] > 0, "A", "B")
    perfect = tflib.tl.fate_accuracy(truth, truth, lineage, n_boot=20)
    assert perfect["mae"].estimate == 0 and perfect["auroc"].estimate == 1.0
    missed = tflib.tl.fate_accuracy(est, truth, lineage, n_boot=20)
    assert missed["mae"].estimate == pytest.approx(0.5)


def test_split_modules_keep_the_public_names():
    import inspect

    from tflib.tl import embedding_flow, trajectory

    for name in ("embedding_velocity", "embedding_kernel"):             # moved, still importable from trajectory
        assert getattr(trajectory, name) is getattr(embedding_flow, name) is getattr(tflib.tl, name)
    for name in ("vocab_labels", "TrajectoryAwareTranscriptformer"):
        assert getattr(trajectory, name) is getattr(tflib.tl, name)
    for mod in (trajectory, embedding_flow):
        assert len(inspect.getsource(mod).splitlines()) <= 400
        assert not hasattr(mod, "_dense")                                # one home: tflib._compat.dense


def test_old_keyword_names_warn_and_still_work():
    model, tok = _course()
    raw, b = embedded()
    small = b[:20].copy()
    with pytest.warns(FutureWarning, match="key_added"):
        tflib.tl.embedding_velocity(small, model, tok, gene_key="tf_symbol", key="X_old", velocity_key="v_old")
    assert small.obsm["X_old"].shape == small.obsm["v_old"].shape == (20, model.config.n_embd)
    assert small.uns["v_old"]["key_added"] == "X_old"
    sim = raw[:60].copy()
    with pytest.warns(FutureWarning, match="key_added"):
        tflib.tl.vocab_labels(sim, tok, key="sym_old")
    assert sim.var["sym_old"].is_unique
    labelled = tflib.tl.vocab_labels(sim, tok, key_added="sym_new", copy=True)
    assert "sym_new" in labelled.var and "sym_new" not in sim.var
    with pytest.raises(TypeError, match="positional"):                 # options are keyword-only
        tflib.tl.match_terminal_states(b, "fate")


def test_vocab_labels_check_every_count_first():
    _, tok = _course()
    raw, _ = simulated_velocity()
    X = raw.X.toarray() if hasattr(raw.X, "toarray") else np.array(raw.X)
    X[-1, -1] = np.nan
    raw.X = X
    before = snapshot(raw)
    from tflib.validation import CountsError

    with pytest.raises(CountsError, match=r"1 NaN or infinite value \(first at cell 599"):
        tflib.tl.vocab_labels(raw, tok)
    assert_unchanged(raw, before)


def test_a_failed_kernel_leaves_the_graphs_as_they_were(monkeypatch):
    import cellrank as cr

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated CellRank failure")

    raw, b = embedded()
    monkeypatch.setattr(cr.kernels.VelocityKernel, "compute_transition_matrix", boom)
    before = snapshot(b)
    with pytest.raises(RuntimeError, match="simulated CellRank failure"):
        tflib.tl.embedding_kernel(b, seed=0)
    assert_unchanged(b, before)                                          # no tf_connectivities left behind


def test_embedding_kernel_keeps_a_users_graph_under_its_key():
    """Issue 10 section 1: a graph the user made under neighbors_key is not replaced silently."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    a = ad.AnnData(np.zeros((40, 3), dtype=np.float32))
    a.obsm["X_tf"] = rng.normal(size=(40, 4))
    a.obsm["velocity_tf"] = rng.normal(size=(40, 4))
    a.uns["neighbors"] = {}
    users = sp.identity(40, format="csr")
    a.obsp["tf_connectivities"] = users
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tflib.tl.embedding_kernel(a)
    assert a.obsp["tf_connectivities"] is users and "tflib_embedding_kernel" not in a.uns
