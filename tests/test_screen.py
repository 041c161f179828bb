"""The simulated Perturb-seq screen (tflib.datasets.screen; chapters 11 and 12).

One tiny world (300 cells x 120 genes, seed 1) and one screen of its three master TFs, a
housekeeping gene, a target gene and a pair of masters. Fate compositions are compared with
binomial standard errors: the screen's cells are independent of the controls', as in a real
screen, so a gene that regulates nothing differs from the controls by sampling noise only.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import tflib.datasets as ds

N, N_CONTROL = 200, 400


@pytest.fixture(scope="module")
def world():
    return ds.simulate(n_cells=300, n_genes=120, seed=1)


@pytest.fixture(scope="module")
def genes(world):
    v = world.var
    masters = {m: str(v.loc[m, "module"]) for m in v.index[v["role"] == "master_tf"]}
    return {"masters": masters, "housekeeping": v.index[v["role"] == "housekeeping"][0],
            "target": v.index[v["role"] == "target"][0]}


@pytest.fixture(scope="module")
def scr(world, genes):
    m = list(genes["masters"])
    return ds.screen(world, m + [genes["housekeeping"], genes["target"], (m[0], m[1])], N,
                     n_control=N_CONTROL, seed=3)


def _fractions(obs: pd.DataFrame, label: str, column: str = "lineage") -> tuple[pd.Series, int]:
    cells = obs.loc[obs["perturbation"] == label, column]
    return cells.value_counts(normalize=True).sort_index(), len(cells)


def _se(p: pd.Series, n1: int, n2: int) -> pd.Series:
    """Standard error of a difference of two independent proportions (p pooled)."""
    return np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


# ---- structure and determinism ----------------------------------------------------------
def test_structure_and_records(world, scr, genes):
    m = list(genes["masters"])
    labels = ["control", *m, genes["housekeeping"], genes["target"], f"{m[0]}+{m[1]}"]
    assert list(scr.obs["perturbation"].cat.categories) == labels
    counts = scr.obs["perturbation"].value_counts()
    assert counts["control"] == N_CONTROL and (counts.drop("control") == N).all()
    assert scr.obs_names.is_unique and scr.n_vars == world.n_vars
    pd.testing.assert_frame_equal(scr.var, world.var)
    for layer in ("spliced", "unspliced", "velocity_true", "spliced_true", "unspliced_true"):
        assert layer in scr.layers
    x = scr.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0
    assert np.array_equal(x, scr.layers["spliced"].toarray())
    for col in ("fate", "lineage", "pseudotime", "differentiating", "committed", "batch", "library_size"):
        assert col in scr.obs
    assert list(scr.obs["batch"].cat.categories) == list(world.obs["batch"].cat.categories)
    fp = scr.obsm["fate_probs_true"]
    assert list(fp.columns) == list(world.uns["fate_names"])
    np.testing.assert_allclose(fp.sum(axis=1), 1.0)
    rec = scr.uns["screen"]
    assert rec["kind"] == "knockout" and rec["level"] == 0.0 and rec["seed"] == 3
    assert list(rec["perturbations"]) == labels[1:]
    assert rec["n_cells_per_gene"] == N and rec["n_control"] == N_CONTROL and rec["world_seed"] == 1


def test_deterministic_and_each_group_independent_of_the_others(world, scr, genes):
    hk = genes["housekeeping"]
    again = ds.screen(world, [hk], N, n_control=N_CONTROL, seed=3)
    for label in ("control", hk):          # same cells whichever other genes are screened
        a, b = scr[scr.obs["perturbation"] == label], again[again.obs["perturbation"] == label]
        assert (a.X != b.X).nnz == 0 and (a.layers["unspliced"] != b.layers["unspliced"]).nnz == 0
        pd.testing.assert_frame_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.obsm["fate_probs_true"], b.obsm["fate_probs_true"])
    other = ds.screen(world, [hk], N, n_control=N_CONTROL, seed=4)
    assert (other.X != again.X).nnz > 0


def test_world_read_back_from_h5ad_gives_the_same_screen(world, genes, tmp_path):
    world.write_h5ad(tmp_path / "world.h5ad")
    back = ad.read_h5ad(tmp_path / "world.h5ad")
    m = list(genes["masters"])[0]
    a, b = ds.screen(world, [m], 30, seed=9), ds.screen(back, [m], 30, seed=9)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    a.write_h5ad(tmp_path / "screen.h5ad")                # the records serialise
    assert ad.read_h5ad(tmp_path / "screen.h5ad").uns["screen"]["kind"] == "knockout"


# ---- biology ------------------------------------------------------------------------------
def test_controls_look_like_the_unperturbed_world(world, scr):
    ctrl, n = _fractions(scr.obs, "control", "fate")
    ref = world.obs["fate"].value_counts(normalize=True).sort_index()
    se = _se((ctrl * n + ref * world.n_obs) / (n + world.n_obs), n, world.n_obs)
    # measured: largest |difference| / se = 0.48 (progenitor fraction 0.17 vs 0.19)
    assert ((ctrl - ref).abs() < 3 * se).all(), pd.DataFrame({"control": ctrl, "world": ref, "se": se})


def test_knocked_out_genes_are_silent_in_their_cells(scr, genes):
    obs = scr.obs["perturbation"].astype(str).to_numpy()
    m = list(genes["masters"])
    for label, targeted in [(g, [g]) for g in [*m, genes["housekeeping"], genes["target"]]] + \
                           [(f"{m[0]}+{m[1]}", m[:2])]:
        for g in targeted:
            for layer in ("spliced", "unspliced"):
                assert scr[obs == label, g].layers[layer].sum() == 0, (label, g, layer)
            assert scr[obs == "control", g].layers["spliced"].sum() > 0, g


def test_master_knockout_shifts_fates_like_the_true_knockout_and_a_non_regulator_does_not(world, scr, genes):
    ctrl, n_ctrl = _fractions(scr.obs, "control")
    for master, fate in genes["masters"].items():
        true = ds.knockout(world, master, n_futures=10).mean()
        frac, n = _fractions(scr.obs, master)
        shift, se = frac - ctrl, _se((frac * n + ctrl * n_ctrl) / (n + n_ctrl), n, n_ctrl)
        # measured (seed 1): true own-fate shifts -0.17/-0.19/-0.10, screen -0.40/-0.39/-0.21
        assert true[fate] < -0.05 and shift[fate] < -3 * se[fate], (master, true, shift)
        strong = true.abs() > 0.03
        assert (np.sign(shift[strong]) == np.sign(true[strong])).all(), (master, true, shift)
    for role in ("housekeeping", "target"):
        gene = genes[role]
        assert np.abs(ds.knockout(world, gene, n_futures=10).to_numpy()).max() == 0.0
        frac, n = _fractions(scr.obs, gene)
        se = _se((frac * n + ctrl * n_ctrl) / (n + n_ctrl), n, n_ctrl)
        assert ((frac - ctrl).abs() < 3 * se).all(), (role, frac, ctrl)


def test_double_knockout_of_two_masters_leaves_the_third_fate(scr, genes):
    m = list(genes["masters"])
    frac, _ = _fractions(scr.obs, f"{m[0]}+{m[1]}")
    third = genes["masters"][m[2]]
    single = _fractions(scr.obs, m[0])[0][third]
    assert frac[third] > max(0.9, single)                # measured: 1.0 (single knockout 0.37)


def test_overexpressing_a_master_raises_its_fate_and_its_counts(world, genes):
    master, fate = next(iter(genes["masters"].items()))
    oe = ds.screen(world, [master], 150, kind="overexpress", factor=2.0, seed=2)
    obs = oe.obs["perturbation"].astype(str).to_numpy()
    frac, ctrl = _fractions(oe.obs, master)[0], _fractions(oe.obs, "control")[0]
    assert frac[fate] - ctrl[fate] > 0.3                 # measured: 1.0 vs 0.47
    x = oe[:, master].X.toarray().ravel()
    assert x[obs == master].mean() > 2 * x[obs == "control"].mean()
    assert oe.uns["screen"]["level"] == 2.0


# ---- bad input ------------------------------------------------------------------------------
def test_bad_input_raises_errors_that_name_the_fix(world, genes):
    hk = genes["housekeeping"]
    obs_before, uns_before = world.obs.copy(), set(world.uns)
    with pytest.raises(KeyError, match=r"\['NOT_A_GENE', 'ALSO_NOT'\] are not in the simulated world.*sim.var_names"):
        ds.screen(world, [hk, "NOT_A_GENE", ("ALSO_NOT", hk)], 10)
    with pytest.raises(ValueError, match="genes is empty.*sim.var_names"):
        ds.screen(world, [], 10)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n_cells_per_gene must be an integer >= 1"):
            ds.screen(world, [hk], bad)
    with pytest.raises(ValueError, match="n_control must be an integer >= 0"):
        ds.screen(world, [hk], 10, n_control=-1)
    with pytest.raises(ValueError, match=r"kind must be one of \('knockout', 'overexpress'\).*kind='knockout'"):
        ds.screen(world, [hk], 10, kind="delete")
    with pytest.raises(ValueError, match="factor must be positive"):
        ds.screen(world, [hk], 10, kind="overexpress", factor=0)
    with pytest.raises(ValueError, match="appear more than once"):
        ds.screen(world, [hk, hk], 10)
    with pytest.raises(ValueError, match="names a gene twice"):
        ds.screen(world, [(hk, hk)], 10)
    with pytest.raises(ValueError, match="lacks the simulator's records.*tflib.datasets.simulate"):
        ds.screen(ad.AnnData(np.zeros((2, 2))), ["x"], 10)
    stripped = world.copy()
    del stripped.uns["grn"]
    with pytest.raises(ValueError, match=r"lacks the simulator's records \['grn'\]"):
        ds.screen(stripped, [hk], 10)
    stripped = world.copy()
    stripped.uns["simulation"] = {k: v for k, v in world.uns["simulation"].items()
                                  if k != "batch_gene_log_effect"}
    with pytest.raises(ValueError, match="batch_gene_log_effect"):
        ds.screen(stripped, [hk], 10)
    with pytest.raises(ValueError, match="not a gene subset"):
        ds.screen(world[:, :60].copy(), [hk], 10)
    pd.testing.assert_frame_equal(world.obs, obs_before)
    assert set(world.uns) == uns_before
