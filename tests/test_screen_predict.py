"""Predicting held-out perturbations of a screen (tflib.tl.screen_predict; chapter 11, issue 12 item 5).

A small planted screen, no simulator: 20 genes, twelve single knockouts and one double, Poisson
counts in which knocking out gene i raises gene i+1 fourfold (a non-zero expression response),
and fate probabilities planted exactly linear in a two-number feature vector per gene, so that
a ridge regression on those features must recover every held-out fate shift.
"""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import tflib.tl as tl

G, N_PER, N_CTRL = 20, 12, 40
FATES = ["fate_A", "fate_B", "fate_C"]


def _screen(seed=0):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(G)]
    z = pd.DataFrame(rng.normal(size=(G, 2)), index=genes, columns=["z1", "z2"])    # planted features
    A = np.array([[0.05, -0.03, -0.02], [-0.01, 0.04, -0.03]])                    # rows sum to 0
    base = np.array([0.5, 0.3, 0.2])
    labels = ["control"] * N_CTRL
    X, P = [rng.poisson(5.0, size=(N_CTRL, G))], [np.tile(base, (N_CTRL, 1))]
    perts = [f"g{i}" for i in range(12)] + ["g0+g1"]
    for p in perts:
        idx = [int(g[1:]) for g in p.split("+")]
        rate = np.full(G, 5.0)
        for i in idx:
            rate[i], rate[i + 1] = 0.0, 20.0
        X.append(rng.poisson(rate, size=(N_PER, G)))
        P.append(np.tile(base + z.iloc[idx].to_numpy().sum(0) @ A, (N_PER, 1)))
        labels += [p] * N_PER
    a = ad.AnnData(X=np.vstack(X).astype(np.float32), obs=pd.DataFrame(
        {"perturbation": pd.Categorical(labels)}, index=[f"c{i}" for i in range(len(labels))]),
        var=pd.DataFrame(index=genes))
    a.obsm["fate_probs_true"] = pd.DataFrame(np.vstack(P), index=a.obs_names, columns=FATES)
    return a, z


@pytest.fixture()
def planted():
    a, z = _screen()
    tl.split_perturbations(a, frac_test=0.3, seed=1)
    return a, z


def _snapshot(a):
    return a.obs.copy(), sorted(a.uns.keys()), a.X.copy()


def _unchanged(a, snap):
    obs, uns, X = snap
    pd.testing.assert_frame_equal(a.obs, obs)
    assert sorted(a.uns.keys()) == uns
    np.testing.assert_array_equal(a.X, X)


def test_split_never_leaks_and_is_seeded():
    a, _ = _screen()
    tl.split_perturbations(a, frac_test=0.3, seed=1)
    part = a.obs.groupby("perturbation", observed=True)["split"].agg(lambda s: set(s.astype(str)))
    assert all(len(s) == 1 for s in part)                                    # one part per perturbation
    train, test = set(a.uns["split"]["train"]), set(a.uns["split"]["test"])
    assert not train & test and train | test == set(part.index) - {"control"}
    assert part["control"] == {"control"}
    assert len(test) == round(0.3 * 12)                                      # singles; the one double rounds to 0
    b, _ = _screen()
    tl.split_perturbations(b, frac_test=0.3, seed=1)
    assert list(b.uns["split"]["test"]) == list(a.uns["split"]["test"])
    c = tl.split_perturbations(b, frac_test=0.3, seed=2, copy=True)
    assert list(c.uns["split"]["test"]) != list(a.uns["split"]["test"])


def test_truth_scores_one_and_no_change_at_most_zero(planted):
    a, _ = planted
    test = list(a.uns["split"]["test"])
    r = tl.screen_responses(a)
    truth = pd.concat([r["fate"], r["expression"]], axis=1).loc[test]
    tab = tl.predict_unseen(a, predictions={"truth": truth}).set_index(["perturbation", "predictor"])
    t = tab.xs("truth", level="predictor")
    np.testing.assert_allclose(t[["r2_all", "r2_top_de", "delta_r2_all", "delta_pearson_all"]], 1.0, atol=1e-12)
    np.testing.assert_allclose(t["fate_mae"], 0.0, atol=1e-12)
    assert (t["fate_sign"] == 1.0).all()
    nc = tab.xs("no_change", level="predictor")
    assert (nc["delta_r2_all"] <= 0).all() and (nc["delta_r2_top_de"] <= 0).all()
    assert (nc["fate_sign"] == 0.0).all() and nc["delta_pearson_all"].isna().all()
    assert (r["expression"].abs().max(axis=1) > 0.5).all()                   # the planted response is real


def test_linear_recovers_planted_fate_response(planted):
    a, z = planted
    tab = tl.predict_unseen(a, features={"planted": z}, alpha=1e-9)
    lin = tab[tab["predictor"] == "planted"]
    assert len(lin) == len(a.uns["split"]["test"])
    np.testing.assert_allclose(lin["fate_mae"], 0.0, atol=1e-6)
    other = tab[tab["predictor"] == "no_change"]
    assert other["fate_mae"].min() > 1e-3                                    # so the zero above is not trivial


def test_additive_sums_the_singles_for_a_held_out_double():
    a, _ = _screen()
    a.obs["split"] = pd.Categorical(np.where(a.obs["perturbation"] == "control", "control",
                                             np.where(a.obs["perturbation"].isin(["g0+g1", "g5"]), "test", "train")))
    r = tl.screen_responses(a)
    full = pd.concat([r["fate"], r["expression"]], axis=1)
    mine = pd.DataFrame([full.loc["g0"] + full.loc["g1"], full.loc[[f"g{i}" for i in range(12) if i != 5]].mean()],
                        index=["g0+g1", "g5"])
    tab = tl.predict_unseen(a, predictions={"mine": mine}).set_index(["perturbation", "predictor"])
    cols = ["fate_mae", "r2_all", "delta_pearson_all", "delta_r2_top_de"]
    for p in ("g0+g1", "g5"):
        np.testing.assert_allclose(tab.loc[(p, "additive"), cols].to_numpy(float),
                                   tab.loc[(p, "mine"), cols].to_numpy(float), rtol=1e-10)


def test_deterministic(planted):
    a, z = planted
    pd.testing.assert_frame_equal(tl.predict_unseen(a, features={"z": z}, seed=3),
                                  tl.predict_unseen(a, features={"z": z}, seed=3))


def test_unknown_control_is_named_and_nothing_written():
    a, _ = _screen()
    snap = _snapshot(a)
    with pytest.raises(ValueError, match="control='ctrl' is not a value.*Fix: pass control="):
        tl.split_perturbations(a, control="ctrl")
    _unchanged(a, snap)


def test_too_few_training_perturbations():
    a, _ = _screen()
    a = a[a.obs["perturbation"].isin(["control", "g0", "g1", "g2"])].copy()
    snap = _snapshot(a)
    with pytest.raises(ValueError, match="at least 3 training.*Fix: screen more genes"):
        tl.split_perturbations(a, frac_test=0.5)
    _unchanged(a, snap)


def test_bad_frac_test():
    a, _ = _screen()
    with pytest.raises(ValueError, match="Fix: e.g. frac_test=0.3"):
        tl.split_perturbations(a, frac_test=1.5)


def test_leaked_perturbation_is_refused(planted):
    a, _ = planted
    held = a.uns["split"]["test"][0]
    first = a.obs_names[a.obs["perturbation"] == held][0]
    a.obs.loc[first, "split"] = "train"
    snap = _snapshot(a)
    with pytest.raises(ValueError, match=rf"\['{held}'\] have cells both in training and held out.*"
                                         "split_perturbations"):
        tl.predict_unseen(a)
    _unchanged(a, snap)


def test_missing_split_and_fate_model_without_model():
    a, _ = _screen()
    with pytest.raises(KeyError, match="run tflib.tl.split_perturbations"):
        tl.predict_unseen(a)
    tl.split_perturbations(a, seed=0)
    with pytest.raises(ValueError, match="fate_model needs model= and tokenizer="):
        tl.predict_unseen(a, fate_model=object())
    with pytest.raises(ValueError, match=r"predictions\['x'\] must be a DataFrame indexed by every held-out"):
        tl.predict_unseen(a, predictions={"x": pd.DataFrame(index=["g0"])})
