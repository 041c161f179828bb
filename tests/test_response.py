"""Expression-response baselines of chapter 11 (tflib.tl.response): planted answers, hand-computed
metrics, bad input, and a small real-data smoke test."""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tflib.tl import response as R

GROUPS = ["g0", "g1", "g2", "g3"]


def _planted(n_genes=30, n_per=5, seed=0):
    """Log-normalised cells: group base + the same shift in every group when stimulated (no noise)."""
    rng = np.random.default_rng(seed)
    base = {g: rng.uniform(2, 5, n_genes) for g in GROUPS}
    shift = rng.uniform(-1.5, 1.5, n_genes)
    rows, obs = [], []
    for g in GROUPS:
        for c in ("ctrl", "stim"):
            rows += [base[g] + (shift if c == "stim" else 0)] * n_per
            obs += [(g, c)] * n_per
    obs = pd.DataFrame(obs, columns=["cell_type", "condition"], index=[f"c{i}" for i in range(len(obs))])
    a = ad.AnnData(X=np.vstack(rows), obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    return a, base, shift


def _snapshot(a):
    return (a.X.copy(), a.obs.copy(), dict(a.uns), list(a.layers.keys()), list(a.obsm.keys()))


def _same(a, snap):
    X, obs, uns, layers, obsm = snap
    np.testing.assert_array_equal(a.X.toarray() if sp.issparse(a.X) else a.X,
                                  X.toarray() if sp.issparse(X) else X)
    pd.testing.assert_frame_equal(a.obs, obs)
    assert dict(a.uns).keys() == uns.keys() and list(a.layers.keys()) == layers and list(a.obsm.keys()) == obsm


KW = dict(condition_key="condition", control="ctrl", stimulated="stim", group_key="cell_type", held_out="g2")


# ---------------------------------------------------------------- baselines on a planted shift
def test_additive_recovers_a_shared_shift_and_no_change_does_not():
    a, base, shift = _planted()
    snap = _snapshot(a)
    means = R.response_baselines(a, **KW)
    _same(a, snap)
    np.testing.assert_allclose(means["truth"], base["g2"] + shift)
    np.testing.assert_allclose(means["additive"], base["g2"] + shift)
    np.testing.assert_allclose(means["no_change"], base["g2"])
    scores = R.response_scores(means)
    assert scores.loc["additive", "r2_all"] == pytest.approx(1.0)
    assert scores.loc["additive", "delta_pearson_all"] == pytest.approx(1.0)
    truth = base["g2"] + shift
    expected = 1 - np.sum(shift ** 2) / np.sum((truth - truth.mean()) ** 2)
    assert scores.loc["no_change", "r2_all"] == pytest.approx(expected)
    assert expected < 0.9
    assert np.isnan(scores.loc["no_change", "delta_pearson_all"])


def test_additive_weighs_each_group_equally():
    """A large group must not dominate the shift: the mean of per-group differences is used."""
    a, base, shift = _planted()
    extra = a[(a.obs.cell_type == "g0") & (a.obs.condition == "stim")].copy()
    extra.X = extra.X + 1.0                      # g0's response differs by +1 ...
    big = ad.concat([a[~((a.obs.cell_type == "g0") & (a.obs.condition == "stim"))]] + [extra] * 1)
    big = ad.concat([big] + [extra] * 9)          # ... and g0 has 10x more stimulated cells
    big.obs_names_make_unique()
    means = R.response_baselines(big, **KW)
    # Groups g0, g1, g3 train; g0's own mean response is shift + 1, so the average is shift + 1/3.
    np.testing.assert_allclose(means["additive"], base["g2"] + shift + 1 / 3)


# ---------------------------------------------------------------- metrics by hand
def test_response_r2_matches_hand_computed_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 5.0])
    c = np.array([1.0, 1.0, 1.0, 1.0])
    s = R.response_r2(t, p, control_mean=c)
    assert s["r2"] == pytest.approx(1 - 1 / 5)                 # SSres = 1, SStot = 5
    dt, dp = t - c, p - c
    et, ep = dt - dt.mean(), dp - dp.mean()
    r = np.sum(et * ep) / np.sqrt(np.sum(et ** 2) * np.sum(ep ** 2))
    assert s["delta_pearson"] == pytest.approx(r)
    assert s["pearson_r2"] == pytest.approx(r ** 2)            # same correlation: c is a constant here
    assert s["delta_r2"] == pytest.approx(0.8)
    assert s["n_genes"] == 4


def test_response_r2_gene_subset_and_constant_prediction():
    t = pd.Series([1.0, 2.0, 3.0, 10.0], index=list("abcd"))
    p = pd.Series([1.0, 2.0, 3.0, 0.0], index=list("abcd"))
    assert R.response_r2(t, p, genes=["a", "b", "c"])["r2"] == pytest.approx(1.0)
    assert R.response_r2(t, p)["r2"] < 0
    s = R.response_r2(t, t * 0 + 1.0, control_mean=t * 0 + 1.0)
    assert np.isnan(s["pearson_r2"]) and np.isnan(s["delta_pearson"])
    with pytest.raises(KeyError, match="not in the means"):
        R.response_r2(t, p, genes=["a", "zz"])
    with pytest.raises(ValueError, match="equally long"):
        R.response_r2(np.ones(3), np.ones(4))


def test_top_de_genes_finds_planted_genes_in_both_directions():
    rng = np.random.default_rng(1)
    X = rng.normal(2.0, 0.3, size=(80, 20)).clip(0)
    X[40:, 3] += 2.0
    X[40:, 7] = 0.0                                            # repressed gene
    a = ad.AnnData(X=X, obs=pd.DataFrame({"condition": ["ctrl"] * 40 + ["stim"] * 40},
                                         index=[f"c{i}" for i in range(80)]),
                   var=pd.DataFrame(index=[f"gene{j}" for j in range(20)]))
    top = R.top_de_genes(a, condition_key="condition", control="ctrl", stimulated="stim", n_genes=2)
    assert set(top) == {"gene3", "gene7"}


# ---------------------------------------------------------------- doubles
def _doubles(missing_single=False):
    rng = np.random.default_rng(2)
    G = 40
    ctrl = rng.uniform(1, 3, G)
    eff = {"A": np.zeros(G), "B": np.zeros(G), "C": np.zeros(G)}
    eff["A"][:5] = 1.5
    eff["B"][5:10] = -0.8
    eff["C"][10:15] = 1.0
    profiles = {"control": ctrl, "A": ctrl + eff["A"], "B": ctrl + eff["B"], "C": ctrl + eff["C"],
                "A+B": ctrl + eff["A"] + eff["B"], "B+C": ctrl + eff["B"] + eff["C"],
                "A+D": ctrl + eff["A"]}
    labels = [k for k in profiles if not (missing_single and k == "C")]
    X = np.vstack([profiles[k] for k in labels for _ in range(4)])
    obs = pd.DataFrame({"perturbation": [k for k in labels for _ in range(4)]},
                       index=[f"c{i}" for i in range(len(X))])
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(G)]))


def test_additive_doubles_recovers_a_planted_additive_double_and_warns_on_missing_singles():
    a = _doubles()
    snap = _snapshot(a)
    with pytest.warns(R.ResponseWarning, match=r"Skipped 1 of 3 .*A\+D \(missing single D\)"):
        df = R.additive_doubles(a, perturbation_key="perturbation", control="control")
    _same(a, snap)
    assert list(df["double"]) == ["A+B", "B+C"]
    assert np.allclose(df["r2_additive"], 1.0) and np.allclose(df["delta_pearson_additive"], 1.0)
    assert (df["r2_no_change"] < 0.95).all()
    assert df["delta_pearson_no_change"].isna().all()


def test_additive_doubles_bad_input():
    a = _doubles()
    with pytest.raises(KeyError, match="Fix"):
        R.additive_doubles(a, perturbation_key="guide", control="control")
    with pytest.raises(ValueError, match="control='ctrl' is not a value"):
        R.additive_doubles(a, perturbation_key="perturbation", control="ctrl")
    with pytest.raises(ValueError, match="separator"):
        R.additive_doubles(a, perturbation_key="perturbation", control="control", separator="_")
    only = a[a.obs.perturbation.isin(["control", "A", "A+D"])].copy()
    with pytest.raises(ValueError, match="include the single-perturbation cells"), \
            pytest.warns(R.ResponseWarning, match="A\\+D"):
        R.additive_doubles(only, perturbation_key="perturbation", control="control")
    counts = a.copy()
    counts.X = np.round(counts.X * 3)
    with pytest.raises(ValueError, match="integer counts"):
        R.additive_doubles(counts, perturbation_key="perturbation", control="control")


def test_additive_doubles_keeps_contexts_apart():
    a = _doubles()
    b = a.copy()
    b.X = b.X + 0.5                               # another cell line with another baseline
    a.obs["line"], b.obs["line"] = "x", "y"
    both = ad.concat([a, b[b.obs.perturbation != "C"]], index_unique="-")
    with pytest.warns(R.ResponseWarning, match=r"B\+C \(missing single C in line=y\)"):
        df = R.additive_doubles(both, perturbation_key="perturbation", control="control", context_key="line")
    assert sorted(zip(df.context, df.double)) == [("x", "A+B"), ("x", "B+C"), ("y", "A+B")]
    assert np.allclose(df["r2_additive"], 1.0)


# ---------------------------------------------------------------- design errors
def test_held_out_design_errors_name_the_fix():
    a, _, _ = _planted()
    snap = _snapshot(a)
    with pytest.raises(KeyError, match="'cond'.*Fix"):
        R.response_baselines(a, **{**KW, "condition_key": "cond"})
    with pytest.raises(ValueError, match="stimulated='IFN' is not a value"):
        R.response_baselines(a, **{**KW, "stimulated": "IFN"})
    with pytest.raises(ValueError, match="held_out='T' is not a value"):
        R.response_baselines(a, **{**KW, "held_out": "T"})
    no_ctrl = a[~((a.obs.cell_type == "g2") & (a.obs.condition == "ctrl"))].copy()
    with pytest.raises(ValueError, match=r"'g2' has no 'ctrl' cells.*\['g0', 'g1', 'g3'\]"):
        R.response_baselines(no_ctrl, **KW)
    alone = a[a.obs.cell_type.isin(["g2"]) | (a.obs.condition == "ctrl")].copy()
    with pytest.raises(ValueError, match="No group other than 'g2'"):
        R.response_baselines(alone, **KW)
    counts = a.copy()
    counts.X = np.round(counts.X * 10)
    with pytest.raises(ValueError, match="integer counts.*normalize_total"):
        R.response_baselines(counts, **KW)
    _same(a, snap)


def test_latent_arithmetic_refuses_log_normalised_input_before_training():
    a, _, _ = _planted()
    snap = _snapshot(a)
    with pytest.raises(ValueError, match="counts_from_lognorm"):
        R.latent_arithmetic(a, **KW)
    _same(a, snap)


# ---------------------------------------------------------------- counts from log-normalised values
def _counts(n=60, g=25, seed=3):
    rng = np.random.default_rng(seed)
    C = rng.poisson(rng.gamma(1.0, 2.0, size=(n, g))).astype(float)
    C[:, 0] = np.maximum(C[:, 0], 1)             # every cell has a gene and a count of one
    C[:, 1] = 1
    return C


def test_counts_from_lognorm_inverts_a_plain_normalisation_exactly():
    C = _counts()
    totals = C.sum(1) * 1.7                      # totals over more genes than the file keeps
    X = np.log1p(C / totals[:, None] * 1832.5).astype(np.float32)
    a = ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame({"n_counts": totals}, index=[f"c{i}" for i in range(len(C))]))
    out = R.counts_from_lognorm(a, total_key="n_counts", copy=True)
    assert "counts" not in a.layers
    np.testing.assert_array_equal(out.layers["counts"].toarray(), C)
    assert out.uns["counts_from_lognorm"]["target_sum"] == pytest.approx(1832.5, rel=1e-5)
    assert R.counts_from_lognorm(a, total_key="n_counts") is None and "counts" in a.layers


def test_counts_from_lognorm_refuses_values_that_are_not_normalised_counts():
    C = _counts()
    X = np.log1p(C / C.sum(1, keepdims=True) * 1e4) * 1.3     # e.g. scaled afterwards
    a = ad.AnnData(X=X, obs=pd.DataFrame({"n_counts": C.sum(1)}, index=[f"c{i}" for i in range(len(C))]))
    snap = _snapshot(a)
    with pytest.raises(ValueError, match="not integer-valued.*kang_pbmc"):
        R.counts_from_lognorm(a, total_key="n_counts")
    with pytest.raises(KeyError, match="total_key"):
        R.counts_from_lognorm(a, total_key="total")
    _same(a, snap)


# ---------------------------------------------------------------- latent arithmetic, tiny synthetic
def test_latent_arithmetic_runs_and_leaves_the_data_alone():
    pytest.importorskip("scvi")
    rng = np.random.default_rng(4)
    G, n = 60, 40
    base = {g: rng.gamma(2.0, 1.0, G) for g in GROUPS}
    up = np.zeros(G)
    up[:10] = np.log(8.0)                        # ten genes go up eightfold in every group
    rows, obs = [], []
    for g in GROUPS:
        for c in ("ctrl", "stim"):
            mu = base[g] * np.exp(up if c == "stim" else 0)
            rows.append(rng.poisson(mu * 3, size=(n, G)))
            obs += [(g, c)] * n
    a = ad.AnnData(X=sp.csr_matrix(np.vstack(rows).astype(np.float32)),
                   obs=pd.DataFrame(obs, columns=["cell_type", "condition"], index=[f"c{i}" for i in range(len(obs))]),
                   var=pd.DataFrame(index=[f"gene{j}" for j in range(G)]))
    snap = _snapshot(a)
    import torch
    threads = torch.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = R.latent_arithmetic(a, **KW, n_top_genes=None, max_epochs=60, lr=1e-2, n_hidden=32, n_latent=4,
                                  gene_likelihood="poisson", n_samples=5, n_de_genes=10)
    _same(a, snap)
    assert torch.get_num_threads() == threads                 # the thread setting is restored
    assert list(res.means.columns) == ["control", "truth", "latent_arithmetic", "latent_shift", "additive",
                                       "no_change", "decoded_control"]
    assert res.predicted.shape == (n, G) and res.settings["n_train_cells"] == 7 * n
    assert res.settings["training_groups"] == ["g0", "g1", "g3"]
    # Normalising by the total makes every other gene fall a little, so a few strong ones can enter.
    assert len(set(res.de_genes) & {f"gene{j}" for j in range(10)}) >= 7
    scores = res.scores()
    # The planted genes move up in the prediction, and it is closer to the truth than no change.
    d = res.means["latent_arithmetic"] - res.means["control"]
    assert (d.iloc[:10] > 0.5).all()
    assert scores.loc["latent_arithmetic", "r2_top_de"] > scores.loc["no_change", "r2_top_de"]
    assert scores.loc["latent_arithmetic", "delta_pearson_all"] > 0.5
    assert R.response_r2(res.means["control"], res.means["decoded_control"])["r2"] > 0.8   # decoder reproduces input


# ---------------------------------------------------------------- real data (fast parts)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_real_data_counts_baselines_and_norman_doubles():
    from tflib.datasets import load

    k = load("kang_scgen_valid")
    R.counts_from_lognorm(k, total_key="n_counts")
    assert k.uns["counts_from_lognorm"]["max_rounding_residual"] < 0.01
    assert k.uns["counts_from_lognorm"]["target_sum"] == pytest.approx(1832.5, abs=0.01)
    means = R.response_baselines(k, condition_key="condition", control="control", stimulated="stimulated",
                                 group_key="cell_type", held_out="CD4T")
    s = R.response_scores(means)
    assert s.loc["additive", "r2_all"] > s.loc["no_change", "r2_all"]

    p = load("perturbench_devel")
    with pytest.warns(R.ResponseWarning, match=r"Skipped 10 of 15 .*SGK1\+TBX3 \(missing single TBX3"):
        df = R.additive_doubles(p, perturbation_key="perturbation", control="control", context_key="cell_type")
    assert sorted(df["double"]) == ["KLF1+MAP2K6", "KLF1+TGFBR2", "MAP2K3+MAP2K6", "MAP2K3+SLC38A2",
                                    "MAPK1+TGFBR2"]
    # without context_key the K562 and glioma controls would be pooled: a warning names the column
    with pytest.warns(R.ResponseWarning, match=r"control cells span .*context_key='cell_type'"):
        R.additive_doubles(p, perturbation_key="perturbation", control="control")
    glioma = p[p.obs["dataset"] != p.obs.loc[p.obs["perturbation"].str.contains("+", regex=False), "dataset"].iloc[0]]
    with pytest.raises(ValueError, match="single perturbations only"):
        R.additive_doubles(glioma.copy(), perturbation_key="perturbation", control="control")
    assert (df["r2_additive"] > df["r2_no_change"]).all()


def test_counts_from_lognorm_names_the_other_total_columns_and_one_works():
    C = _counts()
    totals = C.sum(1)
    X = np.log1p(C / totals[:, None] * 1e4).astype(np.float32)
    obs = pd.DataFrame({"n_counts_before_qc": totals + 7.0, "initial_size": totals},
                       index=[f"c{i}" for i in range(len(C))])      # the first counted genes later dropped
    a = ad.AnnData(X=sp.csr_matrix(X), obs=obs)
    with pytest.raises(ValueError, match=r"Fix: total_key='initial_size' gives integer counts"):
        R.counts_from_lognorm(a, total_key="n_counts_before_qc")
    R.counts_from_lognorm(a, total_key="initial_size")                # the suggestion works
    np.testing.assert_array_equal(a.layers["counts"].toarray(), C)


def test_counts_from_lognorm_without_a_usable_total_points_to_tokens_from_expm1():
    """No obs column rebuilds the counts: the error offers the tokenizer route, and that route gives
    the tokens of the counts (rank-value tokens depend only on a cell's relative values; with equal
    gene medians, rounding cannot reorder genes, so the tokens are identical)."""
    from tflib.tokenize import GeneVocab, RankValueTokenizer

    C = _counts()
    totals = C.sum(1)
    genes = [f"G{i}" for i in range(C.shape[1])]
    X = np.log1p(C / totals[:, None] * 1e4).astype(np.float32)
    obs = pd.DataFrame({"ncounts": totals * 3.1 + 5.0}, index=[f"c{i}" for i in range(len(C))])  # HVGs kept later
    a = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))
    with pytest.raises(ValueError, match="No obs column gives integer counts") as err:
        R.counts_from_lognorm(a, total_key="ncounts")
    assert "adata.layers['normalized'] = adata.X.expm1()" in str(err.value)
    a.layers["normalized"] = a.X.expm1()                              # the suggested route
    tok = RankValueTokenizer(GeneVocab.from_genes(genes), {g: 1.0 for g in genes})   # ties only within a count
    counts = ad.AnnData(X=sp.csr_matrix(C.astype(np.float32)), obs=obs, var=pd.DataFrame(index=genes))
    got = tok.encode(a, layer="normalized", input="normalized")
    ref = tok.encode(counts)
    np.testing.assert_array_equal(got.tokens, ref.tokens)
    np.testing.assert_array_equal(got.offsets, ref.offsets)
