"""Integration metrics against small cases worked out by hand (see the comments)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest

from tflib.tl import batch_asw, cluster_agreement, ilisi, integration_metrics, kbet_acceptance, label_asw


def col(*xs):
    return np.asarray(xs, dtype=float)[:, None]


def test_label_asw_by_hand():
    # A at {0, 1}, B at {4, 5}: s = 1 - a/b = 7/9 (outer points), 5/7 (inner points);
    # mean 47/63, rescaled (1 + 47/63) / 2 = 55/63.
    assert label_asw(col(0, 1, 4, 5), list("AABB")) == pytest.approx(55 / 63)


def test_batch_asw_interleaved_and_separated_by_hand():
    # Batches a,b,a,b at 0,1,2,3: s = 0, -1/2, -1/2, 0 -> 1-|s| = 1, .5, .5, 1 -> 0.75.
    assert batch_asw(col(0, 1, 2, 3), list("abab"), ["T"] * 4) == pytest.approx(0.75)
    # a at {0, 1}, b at {10, 11}: 1-|s| = 1/10.5 (outer), 1/9.5 (inner) -> 1/21 + 1/19.
    sep = batch_asw(col(0, 1, 10, 11), list("aabb"), ["T"] * 4)
    assert sep == pytest.approx(1 / 21 + 1 / 19)
    # Adding a cell type seen in one batch only changes nothing: it is skipped.
    X = col(0, 1, 2, 3, 100, 101)
    assert batch_asw(X, list("ababaa"), ["T"] * 4 + ["C"] * 2) == pytest.approx(0.75)
    # Averaging is per cell type first: type T scores 0.75, type B (far away) 1/21 + 1/19.
    X = col(0, 1, 2, 3, 50, 51, 60, 61)
    got = batch_asw(X, list("ababaabb"), ["T"] * 4 + ["B"] * 4)
    assert got == pytest.approx((0.75 + 1 / 21 + 1 / 19) / 2)


def _two_clusters(mixed: bool):
    # Two far-apart clusters of 8 cells each; inside a cluster cells are 0.1 apart, so each
    # cell's 7 nearest neighbours are exactly the rest of its cluster.
    X = col(*(np.r_[np.arange(8) * 0.1, 100 + np.arange(8) * 0.1]))
    batch = list("abababab" * 2) if mixed else list("a" * 8 + "b" * 8)
    return X, batch


def test_ilisi_by_hand():
    X, b = _two_clusters(mixed=True)
    # neighbours: 3 of own batch, 4 of the other -> Simpson 25/49 -> LISI 1.96 -> scaled 0.96
    assert ilisi(X, b, k=7) == pytest.approx(0.96)
    X, b = _two_clusters(mixed=False)
    assert ilisi(X, b, k=7) == pytest.approx(0.0)


def test_kbet_by_hand():
    # Global 50/50, k = 7, expected 3.5 each. Mixed: counts (3, 4), chi2 = 1/7, accepted.
    # Separated: counts (7, 0), chi2 = 7, p = 0.008 < 0.05, rejected everywhere.
    X, b = _two_clusters(mixed=True)
    assert kbet_acceptance(X, b, k=7) == 1.0
    X, b = _two_clusters(mixed=False)
    assert kbet_acceptance(X, b, k=7) == 0.0


def test_cluster_agreement_perfect_and_chance():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20]])
    X = np.repeat(centers, 30, axis=0) + rng.normal(size=(90, 2))
    labels = np.repeat(["x", "y", "z"], 30)
    assert cluster_agreement(X, labels) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    shuffled = rng.permutation(labels)
    assert cluster_agreement(X, shuffled)["ari"] < 0.1


def test_integration_metrics_ranks_a_mixed_embedding_above_a_batch_split_one():
    rng = np.random.default_rng(1)
    n = 120
    cell_type = np.repeat(["T", "B", "NK"], n // 3)
    batch = np.tile(["ctrl", "stim"], n // 2)
    centers = {"T": [0, 0], "B": [10, 0], "NK": [0, 10]}
    base = np.array([centers[c] for c in cell_type]) + rng.normal(scale=0.7, size=(n, 2))
    shifted = base + np.where(batch == "stim", 4.0, 0.0)[:, None] * np.array([[0.0, 1.0]])
    obs = pd.DataFrame({"stim": batch, "cell_type": cell_type}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(np.zeros((n, 2), dtype=np.float32), obs=obs)
    adata.obsm["X_good"], adata.obsm["X_bad"] = base, shifted
    table = integration_metrics(adata, ["X_good", "X_bad"], "stim", "cell_type", k=15)
    assert list(table.index) == ["X_good", "X_bad"]
    assert set(table.columns) >= {"batch_asw", "ilisi", "kbet", "label_asw", "nmi", "ari", "overall"}
    assert ((table >= 0) & (table <= 1)).all().all()
    for m in ("batch_asw", "ilisi", "kbet", "batch_score"):
        assert table.loc["X_good", m] > table.loc["X_bad", m], m
    assert table.loc["X_good", "nmi"] == pytest.approx(1.0)
    assert table.loc["X_good", "overall"] > table.loc["X_bad", "overall"]
    assert adata.uns["integration_metrics"].equals(table)
    with pytest.raises(KeyError, match="sc.pp.pca"):
        integration_metrics(adata, "X_pca", "stim", "cell_type")
