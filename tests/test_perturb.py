"""tflib.tl.perturb: batched in-silico deletion/overexpression (chapter 11; issue 12, first part)."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import tflib.tl as tl
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tokenize import GeneVocab, RankValueTokenizer, TokenizerMismatchError

from _tiny_world import GENES, tiny_world

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    return tiny_world(12, 1.2, max_len=24, n_head=2, n_embd=32, n_inner=64)


def _looped(adata, model, tok, genes, kind):
    """One forward per (cell, gene), the sequence edited with plain list operations."""
    cells = tok.encode(adata)
    vocab, ctx = tok.vocab, model.config.max_len
    out = {}
    def emb(seq):
        seq = list(seq)
        if len(seq) > ctx:
            seq = seq[:ctx - 1] + [vocab.eos_id]
        with torch.no_grad():
            return model.encode(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool))[0, 0]
    for i in range(len(cells)):
        seq = [int(t) for t in cells[i]]
        e0 = emb(seq)
        for unit in genes:
            new = list(seq)
            for g in (unit if isinstance(unit, tuple) else (unit,)):
                t = vocab.token_to_id(g)
                if t in new:
                    new.remove(t)
                if kind == "overexpress":
                    new.insert(1, t)
            name = "+".join(unit) if isinstance(unit, tuple) else unit
            out[(adata.obs_names[cells.obs_index[i]], name)] = float((emb(new) - e0).norm())
    return out


@pytest.mark.parametrize("kind", ["delete", "overexpress"])
def test_batched_equals_looped(setup, kind):
    adata, model, tok = setup
    genes = ["G0", "G3", "G7", "G20"]
    table = tl.perturb(adata, model, tok, genes, kind=kind, batch_size=5)
    ref = _looped(adata, model, tok, genes, kind)
    assert len(table) == len(ref) == 12 * 4
    got = {(c, g): v for c, g, v in zip(table["cell"], table["gene"], table["embedding_shift_l2"])}
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), atol=1e-5)


def test_deleting_an_unexpressed_gene_changes_nothing(setup):
    adata, model, tok = setup
    a = adata.copy()
    X = a.X.toarray()
    X[:, GENES.index("G5")] = 0
    a.X = sp.csr_matrix(X)
    table = tl.perturb(a, model, tok, ["G5", "G6"], kind="delete")
    g5 = table[table["gene"] == "G5"]
    assert not g5["expressed"].any() and (g5["rank"] == -1).all()
    assert (g5["embedding_shift_l2"] == 0).all() and (g5["embedding_shift_cosine"].abs() < 1e-6).all()
    g6 = table[table["gene"] == "G6"]
    assert (g6.loc[g6["expressed"], "embedding_shift_l2"] > 1e-4).all()


def test_all_genes_scores_expressed_pairs_and_is_deterministic(setup):
    adata, model, tok = setup
    t1 = tl.perturb(adata, model, tok, "all", goal_key="state", goal="B", batch_size=7)
    t2 = tl.perturb(adata, model, tok, "all", goal_key="state", goal="B", batch_size=64)
    cells = tok.encode(adata)
    assert len(t1) == sum(len(cells[i]) - 2 for i in range(len(cells)))   # every gene token, no specials
    assert t1["expressed"].all() and not set(t1["gene"]) & {"G36", "G37", "G38", "G39"}
    pd.testing.assert_frame_equal(t1.reset_index(drop=True), t2.reset_index(drop=True), atol=1e-5)
    summary = tl.perturb_summary(t1)
    assert set(summary.columns) >= {"n_cells", "n_expressed", "mean_embedding_shift_l2", "mean_goal_cosine_shift"}
    assert summary["n_expressed"].sum() == len(t1)


def test_flow_score_projects_on_velocity(setup):
    adata, model, tok = setup
    a = adata.copy()
    d = model.config.n_embd
    a.obsm["v"] = np.tile(np.eye(d, dtype=np.float32)[0] * 3.0, (a.n_obs, 1))   # flow along axis 0
    a.obsm["w"] = -a.obsm["v"]                                                   # the opposite flow
    t = tl.perturb(a, model, tok, ["G1"], kind="overexpress", velocity_key="v")
    u = tl.perturb(a, model, tok, ["G1"], kind="overexpress", velocity_key="w")
    assert np.isfinite(t["flow_score"]).all() and t["flow_score"].abs().max() > 1e-4
    np.testing.assert_allclose(t["flow_score"], -u["flow_score"], atol=1e-6)
    # |projection| never exceeds the displacement itself
    assert (t["flow_score"].abs() <= t["embedding_shift_l2"] + 1e-6).all()


def test_a_vocabulary_gene_the_assay_did_not_measure_can_be_overexpressed(setup):
    adata, model, tok = setup
    unmeasured = adata[:, [g for g in adata.var_names if g != "G1"]].copy()   # G1 is in the vocabulary only
    gone = tl.perturb(unmeasured, model, tok, "G1", kind="delete")
    assert not gone["expressed"].any() and (gone["embedding_shift_l2"] == 0).all()
    up = tl.perturb(unmeasured, model, tok, "G1", kind="overexpress")
    assert (up["rank"] == -1).all() and (up["embedding_shift_l2"] > 0).all()


def test_only_the_chosen_cells_are_perturbed_and_the_goal_uses_all(setup):
    adata, model, tok = setup
    full = tl.perturb(adata, model, tok, ["G1", "G2"], goal_key="state", goal=adata.obs["state"].iloc[0])
    some = adata.obs_names[::3]
    part = tl.perturb(adata, model, tok, ["G1", "G2"], goal_key="state", goal=adata.obs["state"].iloc[0], cells=some)
    assert set(part["cell"]) == set(some)
    pd.testing.assert_frame_equal(part.reset_index(drop=True),
                                  full[full["cell"].isin(some)].reset_index(drop=True))
    mask = np.isin(adata.obs_names, some)
    pd.testing.assert_frame_equal(tl.perturb(adata, model, tok, ["G1", "G2"], cells=mask).reset_index(drop=True),
                                  tl.perturb(adata, model, tok, ["G1", "G2"], cells=some).reset_index(drop=True))
    with pytest.raises(KeyError, match="not in adata.obs_names"):
        tl.perturb(adata, model, tok, "G1", cells=["nope"])
    with pytest.raises(ValueError, match="selects no cell"):
        tl.perturb(adata, model, tok, "G1", cells=np.zeros(adata.n_obs, bool))


def test_bad_inputs_name_the_fix(setup):
    adata, model, tok = setup
    with pytest.raises(ValueError, match="kind='delete' or kind='overexpress'"):
        tl.perturb(adata, model, tok, "G1", kind="knockdown")
    with pytest.raises(ValueError, match="none of the genes"):
        tl.perturb(adata, model, tok, ["G37", "G38"])
    with pytest.warns(UserWarning, match=r"1 gene\(s\) that the tokenizer cannot read were dropped"):
        tl.perturb(adata, model, tok, ["G1", "G37"])
    with pytest.raises(KeyError, match="neither in adata nor in the tokenizer's vocabulary"):
        tl.perturb(adata, model, tok, ["NOPE"])
    with pytest.raises(ValueError, match="genes is empty"):
        tl.perturb(adata, model, tok, [])
    with pytest.raises(ValueError, match="does not occur"):
        tl.perturb(adata, model, tok, "G1", goal_key="state", goal="C")
    other = RankValueTokenizer(GeneVocab.from_genes(GENES), {g: 1.0 for g in GENES}, preset="V2")
    with pytest.raises(ValueError, match="tokenizer saved with the model"):
        tl.perturb(adata, model, other, "G1")
    before = (set(adata.obsm), set(adata.obs.columns), set(adata.uns))
    tl.perturb(adata, model, tok, "G1")
    assert (set(adata.obsm), set(adata.obs.columns), set(adata.uns)) == before


def test_fate_shift_recovers_a_planted_dependency():
    """The fate depends on whether G2's token is present, by construction: deleting G2 must move
    the predicted fate; deleting G9 (no role) must not."""
    from tflib.train import FinetuneConfig

    genes = [f"G{i}" for i in range(20)]
    tok = RankValueTokenizer(GeneVocab.from_genes(genes), {g: 1.0 for g in genes}, preset="V2")
    rng = np.random.default_rng(3)
    X = rng.poisson(1.0, (400, 20)).astype(np.float32)
    X[:, 9] = rng.poisson(2.0, 400) + 1                             # G9 expressed everywhere
    X[:200, 2] = 0
    X[200:, 2] = rng.poisson(2.0, 200) + 1                          # G2 present in half of the cells
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = genes
    p_a = np.where(X[:, 2] > 0, 0.95, 0.05)
    truth = pd.DataFrame({"A": p_a, "B": 1 - p_a}, index=a.obs_names)
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(tok.vocab), max_len=24, n_layer=1, n_head=2,
                                                    n_embd=32, n_inner=64))
    ta = tl.TrajectoryAwareTranscriptformer(model, tok, config=FinetuneConfig(
        mode="full", pooling="mean", epochs=25, lr=3e-3, encoder_lr=3e-3, patience=25, class_weight=None,
        calibrate=False, seed=0))
    ta.fit(a, truth)
    test = a[np.r_[150:200, 350:400]].copy()                        # 50 cells without G2, 50 with it
    table = tl.perturb(test, model, tok, ["G2", "G9"], kind="delete", fate_model=ta, pooling="mean")
    g2 = table[(table["gene"] == "G2") & table["expressed"]]
    g9 = table[table["gene"] == "G9"]
    assert len(g2) == 50 and g2["fate_shift_A"].mean() < -0.5       # the planted shift: about 0.95 -> 0.05
    assert g9["fate_shift_A"].abs().mean() < 0.1 * abs(g2["fate_shift_A"].mean())
    unexpressed = table[(table["gene"] == "G2") & ~table["expressed"]]
    assert (unexpressed["fate_shift_A"].abs() < 1e-9).all()          # nothing to delete: no shift
    # the table's fate columns agree with predict_fates on the unperturbed cells
    with pytest.raises(ValueError, match="fate_model was trained with a tokenizer"):
        other = RankValueTokenizer(GeneVocab.from_genes(genes[::-1]), {g: 1.0 for g in genes}, preset="V2")
        tl.perturb(test, model, other, ["G2"], fate_model=ta)


@pytest.mark.parametrize("kind", ["delete", "overexpress"])
def test_combinations_equal_the_looped_edits(setup, kind):
    """genes=[("A", "B")] perturbs both genes of the tuple in the same cell (issue 12)."""
    adata, model, tok = setup
    genes = [("G0", "G3"), ("G7", "G20", "G1"), "G2"]
    table = tl.perturb(adata, model, tok, genes, kind=kind, batch_size=4)
    ref = _looped(adata, model, tok, genes, kind)
    assert set(table["gene"]) == {"G0+G3", "G7+G20+G1", "G2"} and len(table) == 12 * 3
    got = {(c, g): v for c, g, v in zip(table["cell"], table["gene"], table["embedding_shift_l2"])}
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), atol=1e-5)
    with pytest.raises(ValueError, match="names a gene twice"):
        tl.perturb(adata, model, tok, [("G1", "G1")])


def test_counts_problems_name_the_fix(setup):
    adata, model, tok = setup
    with pytest.raises(KeyError, match="layer=None to read adata.X"):
        tl.perturb(adata, model, tok, "G1", encode_kwargs={"layer": "counts"})
    logged = adata.copy()
    logged.X = logged.X.astype(np.float64)
    logged.X.data = np.log1p(logged.X.data) + 0.01
    with pytest.raises(ValueError, match="not raw counts"):
        tl.perturb(logged, model, tok, "G1")


def test_summary_keeps_overexpressed_genes_that_no_cell_expresses(setup):
    adata, model, tok = setup
    unmeasured = adata[:, [g for g in adata.var_names if g != "G1"]].copy()   # G1 is in the vocabulary only
    up = tl.perturb(unmeasured, model, tok, ["G1", "G2"], kind="overexpress")
    summary = tl.perturb_summary(up)
    assert list(summary.index) == ["G1", "G2"]
    assert summary.loc["G1", "n_expressed"] == 0 and summary.loc["G1", "n_cells"] == unmeasured.n_obs
    assert summary.loc["G1", "mean_embedding_shift_l2"] == pytest.approx(up.loc[up["gene"] == "G1",
                                                                                "embedding_shift_l2"].mean())
    gone = tl.perturb(unmeasured, model, tok, ["G1", "G2"], kind="delete")
    assert list(tl.perturb_summary(gone).index) == ["G2"]          # a deletion of G1 changed no cell
    assert len(tl.perturb_summary(up, min_cells=unmeasured.n_obs + 1)) == 0


def test_tokens_from_other_cells_or_another_tokenizer_are_refused(setup):
    adata, model, tok = setup
    with pytest.raises(ValueError, match=r"tokens= were made from other cells.*'c6'.*'c0'"):
        tl.perturb(adata, model, tok, ["G1"], tokens=tok.encode(adata[6:]))
    with pytest.raises(ValueError, match="tokens= were made from other cells"):
        tl.embed(adata, model, tok, tokens=tok.encode(adata[6:]), copy=True)
    longer = RankValueTokenizer(tok.vocab, tok.gene_medians, preset="V2", max_len=10)
    with pytest.raises(TokenizerMismatchError, match="max_len"):
        tl.perturb(adata, model, tok, ["G1"], tokens=longer.encode(adata))
    sub = adata[6:].copy()
    ok = tl.perturb(sub, model, tok, ["G1"], tokens=tok.encode(sub))       # the fix: tokens of these cells
    pd.testing.assert_frame_equal(ok, tl.perturb(sub, model, tok, ["G1"]))


def test_a_tokenizer_other_than_the_models_saved_one_is_refused(setup):
    import copy

    adata, model, tok = setup
    saved = copy.deepcopy(model)
    saved.tokenizer = tok                                            # as course_checkpoint() loads it
    other = RankValueTokenizer(tok.vocab, tok.gene_medians, preset="V2", max_len=10)
    with pytest.raises(TokenizerMismatchError, match=r"max_len.*tokenizer=model.tokenizer"):
        tl.perturb(adata, saved, other, ["G1"])
    with pytest.raises(TokenizerMismatchError, match="tokenizer=model.tokenizer"):
        tl.embed(adata, saved, other, copy=True)
    fixed = tl.perturb(adata, saved, saved.tokenizer, ["G1"])        # the named fix runs
    pd.testing.assert_frame_equal(fixed, tl.perturb(adata, model, tok, ["G1"]))


def test_gene_list_slips_name_the_fix(setup):
    adata, model, tok = setup
    with pytest.raises(TypeError, match="genes='all'"):
        tl.perturb(adata, model, tok, None)
    with pytest.raises(TypeError, match="non-empty tuple"):
        tl.perturb(adata, model, tok, [()])
    with pytest.raises(ValueError, match=r"lists \['G1'\] more than once"):
        tl.perturb(adata, model, tok, ["G1", "G2", "G1"])
    with pytest.raises(KeyError, match=r"Did you mean \{'g1': 'G1'\}"):
        tl.perturb(adata, model, tok, ["g1"])
    with pytest.raises(ValueError, match=r"none of the genes \['G37\+G38'\]"):
        tl.perturb(adata, model, tok, [("G37", "G38")])


def test_unmeasured_genes_are_named_as_adata_names_its_genes():
    """Mouse data, human vocabulary: a gene named the mouse way maps through the orthologs even when
    the assay did not measure it (issue found by a new-user trial on the dentate gyrus)."""
    human = ["ACTB", "SOX2", "NEUROG3", "GAPDH", "PAX6", "PROX1"]
    mouse = ["Actb", "Sox2", "Neurog3", "Gapdh", "Pax6"]                  # Prox1 not measured
    tok = RankValueTokenizer(GeneVocab.from_genes(human), {g: 1.0 for g in human}, preset="V2")
    X = np.random.default_rng(0).poisson(2.0, (6, len(mouse))).astype(np.float32) + 1
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = mouse
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(tok.vocab), max_len=12, n_layer=1, n_head=2,
                                                    n_embd=16, n_inner=32)).eval()
    up = tl.perturb(a, model, tok, ["Prox1", "Sox2"], kind="overexpress")
    prox = up[up["gene"] == "Prox1"]
    assert len(prox) == 6 and not prox["expressed"].any() and (prox["embedding_shift_l2"] > 0).all()
    same = tl.perturb(a, model, tok, ["PROX1"], kind="overexpress")      # the human name gives the same shifts
    np.testing.assert_allclose(prox["embedding_shift_l2"], same["embedding_shift_l2"], atol=1e-6)
