"""tflib.tl.rank_regulators / score_regulators and tflib.datasets.true_regulators (chapter 13; issue 13, item 5)."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score

import tflib.datasets as tds
import tflib.tl as tl
from tflib.datasets._grn import Network
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tl.attention import attention_received
from tflib.tokenize import GeneVocab, RankValueTokenizer

from _anndata_state import assert_unchanged, snapshot

torch.set_num_threads(1)
N_OUT = 5                                   # the last genes are outside the vocabulary


@pytest.fixture(scope="module")
def world():
    sim = tds.simulate(n_cells=200, n_genes=120, n_fates=3, n_batches=1, seed=3)
    genes = list(map(str, sim.var_names))
    vocab = GeneVocab.from_genes(genes[:-N_OUT])
    tok = RankValueTokenizer(vocab, {g: 1.0 + i % 3 for i, g in enumerate(genes[:-N_OUT])}, preset="V2")
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(vocab), max_len=24, n_layer=2, n_head=2,
                                                    n_embd=16, n_inner=32)).eval()
    return sim, model, tok


def _fresh(sim):
    a = sim.copy()
    a.uns.pop("regulators", None)
    return a


def test_true_regulators_are_the_programmes(world):
    sim = world[0]
    truth = tds.true_regulators(sim)
    net = Network.from_anndata(sim)
    prog = net.programmes()
    assert list(truth) == list(sim.obsm["fate_probs_true"].columns)
    for f, fate in enumerate(net.fates):
        expected = set(net.genes[net.reg[prog[f] > 0]])
        assert set(truth[fate]) == expected and len(truth[fate]) == len(expected)
        roles = sim.var.loc[truth[fate], "role"].astype(str)
        assert (roles == "master_tf").sum() == 1 and set(roles) <= {"master_tf", "secondary_tf"}
        assert (sim.var.loc[truth[fate], "module"].astype(str) == fate).all()


def test_attention_matches_a_direct_forward_pass(world):
    sim, model, tok = world
    cell = sim[[7]]
    got = attention_received(cell, model, tok)                                  # (1, G)
    seq = list(tok.encode(cell)[0])[: model.config.max_len]
    with torch.no_grad():
        out = model(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool), output_attentions=True)
    expected = np.zeros(sim.n_vars)
    for k, t in enumerate(seq):
        gene = tok.vocab.id_to_token(int(t))
        if gene in sim.var_names:
            total = sum(float(a[0, h, q, k]) for a in out.attentions for h in range(a.shape[1])
                        for q in range(len(seq)))
            n_avg = len(out.attentions) * out.attentions[0].shape[1] * len(seq)   # layers x heads x queries
            expected[sim.var_names.get_loc(gene)] = total / n_avg
    expected[-N_OUT:] = np.nan
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    n_genes = sum(tok.vocab.id_to_token(int(t)) in sim.var_names for t in seq)   # no <cls>/<eos>
    assert len(seq) == model.config.max_len and (got[0, :-N_OUT] > 0).sum() == n_genes


def test_attention_score_is_fate_minus_rest(world):
    sim, model, tok = world
    a = _fresh(sim)
    cands = list(a.var_names[:30])
    table = tl.rank_regulators(a, model=model, tokenizer=tok, fate_key="fate_probs_true", candidates=cands,
                               methods="attention", fates="fate_B", max_cells=500)
    att = attention_received(a, model, tok, genes=cands)
    P = a.obsm["fate_probs_true"].to_numpy()
    sel = (P.argmax(1) == 1) & (P[:, 1] >= 0.5)
    assert sel.sum() >= 10
    got = table.set_index("gene").loc[cands, "score"].to_numpy()
    np.testing.assert_allclose(got, att[sel].mean(0) - att[~sel].mean(0), atol=1e-12)
    assert (table["n_fate_cells"] == sel.sum()).all()


def test_embedding_score_by_hand_and_outside_vocab_is_nan_and_last(world):
    sim, model, tok = world
    a = _fresh(sim)
    with pytest.warns(UserWarning, match=rf"{N_OUT} of the .* candidates are not in the tokenizer's vocabulary.*"
                                         r"score them NaN, ranked last; .*tl.vocab_labels"):
        table = tl.rank_regulators(a, model=model, tokenizer=tok, fate_key="fate_probs_true", methods="embedding",
                                   fates="fate_A", n_markers=8)
    E = model.embeddings.word.weight.detach().double().numpy()
    X = np.log1p(a.X.toarray() / a.X.toarray().sum(1, keepdims=True) * 1e4)
    P = a.obsm["fate_probs_true"]["fate_A"].to_numpy()
    sel = (a.obsm["fate_probs_true"].to_numpy().argmax(1) == 0) & (P >= 0.5)
    order = np.argsort(-(X[sel].mean(0) - X[~sel].mean(0)), kind="stable")
    g = str(a.var_names[10])
    prog = [str(a.var_names[j]) for j in order if j != 10 and j < a.n_vars - N_OUT][:8]
    if any(j >= a.n_vars - N_OUT for j in order[:9]):
        pytest.skip("a marker is outside the vocabulary; the hand check assumes none is")
    m = E[[tok.vocab.token_to_id(x) for x in prog]].mean(0)
    e = E[tok.vocab.token_to_id(g)]
    by_table = table.set_index("gene")
    assert by_table.loc[g, "score"] == pytest.approx(e @ m / np.linalg.norm(e) / np.linalg.norm(m), abs=1e-6)
    outside = list(a.var_names[-N_OUT:])
    assert by_table.loc[outside, "score"].isna().all()
    assert (by_table.loc[outside, "rank"] > by_table["score"].notna().sum()).all()


@pytest.fixture(scope="module")
def planted(world):
    """Log-normalised world with gene 'PLANT' = P(fate_C) and 'ECHO' = sum of fate_C's standardised markers."""
    sim = world[0]
    a = sim.copy()
    X = a.X.toarray().astype(np.float64)
    X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    P = a.obsm["fate_probs_true"].to_numpy()
    sel = (P.argmax(1) == 2) & (P[:, 2] >= 0.5)
    markers = np.argsort(-(X[sel].mean(0) - X[~sel].mean(0)), kind="stable")[:10]
    Z = (X[:, markers] - X[:, markers].mean(0)) / X[:, markers].std(0)
    X[:, 0] = P[:, 2]
    X[:, 1] = Z.sum(1) + 50.0
    a.X = sp.csr_matrix(X)
    names = list(map(str, a.var_names))
    names[0], names[1] = "PLANT", "ECHO"
    a.var_names = names
    return a


def test_planted_genes_top_drivers_and_coexpression(planted):
    a = planted.copy()
    table = tl.rank_regulators(a, fate_key="fate_probs_true", methods=("drivers", "coexpression"), n_markers=10)
    c = table[table["fate"] == "fate_C"]
    drv = c[c["method"] == "drivers"].set_index("gene")
    assert drv["rank"].idxmin() == "PLANT" and drv.loc["PLANT", "score"] == pytest.approx(1.0, abs=1e-12)
    assert "row_pearson" in drv.loc["PLANT", "source"]
    co = c[c["method"] == "coexpression"].set_index("gene")
    assert co.loc["ECHO", "rank"] == 1
    # the other fates' drivers see PLANT negatively (P(C) is high where A and B are low)
    assert (table[(table["method"] == "drivers") & (table["gene"] == "PLANT") & (table["fate"] != "fate_C")]["score"]
            < 0).all()


def test_drivers_read_fate_drivers_table_when_present(planted):
    a = planted.copy()
    wide = pd.DataFrame({f"{f}_corr": np.linspace(-1, 1, a.n_vars)[::(1 if f == "fate_A" else -1)]
                         for f in ("fate_A", "fate_B", "fate_C")}, index=a.var_names)
    a.varm["terminal_lineage_drivers"] = wide
    table = tl.rank_regulators(a, fate_key="fate_probs_true", methods="drivers", fates=["fate_A"])
    got = table.set_index("gene").loc[list(a.var_names), "score"].to_numpy()
    np.testing.assert_allclose(got, wide["fate_A_corr"].to_numpy())
    assert table["source"].str.contains("terminal_lineage_drivers").all()
    assert table.iloc[0]["gene"] == a.var_names[-1] and table.iloc[0]["rank"] == 1


def test_knockout_is_minus_mean_shift_and_maps_symbols(world):
    sim = world[0]
    a = _fresh(sim)
    a.var["sym"] = [f"S_{g}" for g in a.var_names]
    rng = np.random.default_rng(0)
    genes = list(a.var_names[:12])
    ptab = pd.DataFrame({"cell": np.tile(a.obs_names[:5], 12), "gene": np.repeat([f"S_{g}" for g in genes], 5)})
    for f in ("fate_A", "fate_B", "fate_C"):
        ptab[f"fate_shift_{f}"] = rng.normal(size=len(ptab))
    table = tl.rank_regulators(a, fate_key="fate_probs_true", methods="knockout", perturb_table=ptab,
                               gene_key="sym", candidates=list(a.var_names[:20]))
    expected = -ptab.groupby("gene")["fate_shift_fate_B"].mean()
    b = table[table["fate"] == "fate_B"].set_index("gene")
    np.testing.assert_allclose(b.loc[genes, "score"], expected.loc[[f"S_{g}" for g in genes]].to_numpy())
    assert b.loc[list(a.var_names[12:20]), "score"].isna().all()               # not in the table
    assert (b.loc[list(a.var_names[12:20]), "rank"] == 13).all()


def test_knockout_with_linear_perturbation_table(world):
    sim = world[0]
    a = _fresh(sim)
    lin = tl.LinearFateModel(C=0.1).fit(a, a.obsm["fate_probs_true"])
    tfs = list(a.var_names[a.var["role"].astype(str).str.endswith("_tf")])
    ptab = tl.perturb_linear(a, lin, tfs, kind="delete")
    table = tl.rank_regulators(a, fate_key="fate_probs_true", methods="knockout", perturb_table=ptab, candidates=tfs)
    ref = -ptab.groupby("gene")["fate_shift_fate_A"].mean()
    got = table[table["fate"] == "fate_A"].set_index("gene")["score"]
    np.testing.assert_allclose(got.loc[tfs].to_numpy(), ref.loc[tfs].to_numpy())


def test_score_regulators_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(2000)]
    true = set(rng.choice(genes, 200, replace=False))
    y = np.array([g in true for g in genes])
    perfect = pd.DataFrame({"fate": "F", "method": "perfect", "gene": genes, "score": y + rng.uniform(0, .5, 2000)})
    shuffled = pd.DataFrame({"fate": "F", "method": "shuffled", "gene": genes, "score": rng.permutation(y + 0.0)
                             + rng.uniform(0, .5, 2000)})
    res = tl.score_regulators(pd.concat([perfect, shuffled]), {"F": sorted(true)}, k=10, n_boot=50).set_index("method")
    assert res.loc["perfect", "auroc"] == 1.0 and res.loc["perfect", "precision_at_k"] == 1.0
    assert res.loc["perfect", "n_true"] == 200 and res.loc["perfect", "base_rate"] == pytest.approx(0.1)
    assert res.loc["shuffled", "auroc"] == pytest.approx(roc_auc_score(y, shuffled["score"]))
    assert abs(res.loc["shuffled", "auroc"] - 0.5) < 0.05
    assert res.loc["shuffled", "auroc_low"] < res.loc["shuffled", "auroc"] < res.loc["shuffled", "auroc_high"]
    tied = np.round(shuffled["score"].to_numpy(), 1)                            # the bootstrap's fast AUROC, ties too
    assert tl.regulators._auroc(y, tied) == pytest.approx(roc_auc_score(y, tied), abs=1e-12)


def test_score_regulators_counts_nan_as_lowest():
    t = pd.DataFrame({"fate": "F", "method": "m", "gene": list("abcd"), "score": [np.nan, 0.1, 0.2, 0.3]})
    res = tl.score_regulators(t, {"F": ["a"]}, k=1, n_boot=20).iloc[0]
    assert res["auroc"] == 0.0 and res["precision_at_k"] == 0.0 and res["n_scored"] == 3
    with pytest.raises(KeyError, match="fate unknown to truth"):
        tl.score_regulators(t, {"G": ["a"]})


def test_end_to_end_all_methods_deterministic(world):
    sim, model, tok = world
    a = _fresh(sim)
    lin = tl.LinearFateModel(C=0.1).fit(a, a.obsm["fate_probs_true"])
    tfs = list(a.var_names[a.var["role"].astype(str).str.endswith("_tf")])
    ptab = tl.perturb_linear(a, lin, tfs, kind="delete")
    kw = dict(fate_key="fate_probs_true", candidates=tfs, perturb_table=ptab, max_cells=120, seed=4)
    t1 = tl.rank_regulators(a, model=model, tokenizer=tok, **kw)
    t2 = tl.rank_regulators(_fresh(sim), model=model, tokenizer=tok, **kw)
    pd.testing.assert_frame_equal(t1, t2)
    pd.testing.assert_frame_equal(a.uns["regulators"], t1)
    assert len(t1) == 3 * len(tl.regulators.METHODS) * len(tfs)
    assert list(t1.columns) == ["fate", "method", "gene", "score", "rank", "n_fate_cells", "source"]
    for _, g in t1.groupby(["fate", "method"]):
        assert g["rank"].min() == 1 and g["rank"].is_monotonic_increasing
    scores = tl.score_regulators(t1, tds.true_regulators(a), n_boot=20)
    assert len(scores) == 3 * 5 and (scores["n_true"] == 3).all()


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(fates=["fate_Z"]), ValueError, r"fate unknown: \['fate_Z'\].*fate_A"),
    (dict(fate_key="nope"), KeyError, "fate_probs_true"),
    (dict(methods=("drivers", "pagerank")), ValueError, "unknown method.*pagerank.*coexpression"),
    (dict(candidates=["NOT_A_GENE"]), KeyError, "NOT_A_GENE.*var_names"),
    (dict(methods="knockout"), ValueError, "needs perturb_table"),
    (dict(methods="knockout", perturb_table=pd.DataFrame({"gene": ["x"], "fate_shift_fate_A": [0.1]})), KeyError,
     "fate_shift_fate_B"),
    (dict(methods="attention"), ValueError, "need a model and its tokenizer"),
    (dict(gene_key="tf_symbol"), KeyError, "vocab_labels"),
    (dict(n_markers=0), ValueError, "n_markers"),
])
def test_bad_input_is_refused_and_leaves_adata_unchanged(world, kwargs, err, match):
    sim = world[0]
    a = _fresh(sim)
    before = snapshot(a)
    kw = dict(fate_key="fate_probs_true", methods=("drivers",))
    kw.update(kwargs)
    with pytest.raises(err, match=match):
        tl.rank_regulators(a, **kw)
    assert_unchanged(a, before)
    assert "regulators" not in a.uns


def test_attention_on_normalised_values_names_the_counts_layer(world):
    sim, model, tok = world
    a = _fresh(sim)
    a.layers["counts"] = a.X.copy()
    a.X = a.X.astype(np.float32)
    a.X.data = np.log1p(a.X.data)                                     # what tl.velocity leaves in X
    before = a.copy()
    with pytest.raises(ValueError, match=r"non-integer values.*layer='counts'"):
        tl.rank_regulators(a, model=model, tokenizer=tok, fate_key="fate_probs_true", methods=("attention",))
    assert "regulators" not in a.uns and (a.X != before.X).nnz == 0
    out = tl.rank_regulators(a, model=model, tokenizer=tok, fate_key="fate_probs_true", methods=("attention",),
                             layer="counts")                          # the fix the message names
    assert out["score"].notna().any()
