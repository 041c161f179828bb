"""tflib.tl.embed and tflib.tl.gene_embeddings with the real rank-value tokenizer."""
import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import tflib.tl as tl
from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.tokenize import GeneVocab, RankValueTokenizer

torch.set_num_threads(1)
GENES = [f"G{i}" for i in range(30)]


@pytest.fixture(scope="module")
def setup():
    vocab = GeneVocab.from_genes(GENES)
    medians = {g: 1.0 + i % 3 for i, g in enumerate(GENES)}
    tok = RankValueTokenizer(vocab, medians, preset="V2")
    rng = np.random.default_rng(0)
    X = rng.poisson(0.9, (13, 30)).astype(np.float32)
    X[5] = 0                                                         # an empty cell: no tokens
    adata = ad.AnnData(sp.csr_matrix(X))
    adata.var_names = GENES
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(vocab), max_len=40, n_layer=2, n_head=2,
                                                    n_embd=32, n_inner=64))
    return adata, model, tok


def test_embed_all_cells_deterministic_and_exact(setup):
    adata, model, tok = setup
    model.train()                                                    # embed must switch dropout off itself
    with pytest.warns(UserWarning, match="1 cells have no tokenizable gene"):
        assert tl.embed(adata, model, tok, batch_size=4) is None        # in place
    assert model.training                                            # mode restored
    a = adata.obsm["X_tf"]
    assert a.shape == (13, 32) and a.dtype == np.float32
    assert np.isnan(a[5]).all() and np.isfinite(np.delete(a, 5, axis=0)).all()  # no subsampling
    with pytest.warns(UserWarning):
        tl.embed(adata, model, tok, key_added="again", batch_size=1)
    b = adata.obsm["again"]
    np.testing.assert_allclose(a[~np.isnan(a[:, 0])], b[~np.isnan(b[:, 0])], atol=1e-5)
    # one cell by hand, unpadded
    cells = tok.encode(adata)
    i = int(np.flatnonzero(cells.obs_index == 0)[0])
    ids = torch.as_tensor(cells[i], dtype=torch.long)[None]
    model.eval()
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True)
    model.train()
    np.testing.assert_allclose(a[0], ref.last_hidden_state[0, 0].numpy(), atol=1e-5)
    assert adata.uns["X_tf"]["pooling"] == "cls"


def test_mean_pooling_and_layers(setup):
    adata, model, tok = setup
    cells = tok.encode(adata)
    with pytest.warns(UserWarning):
        tl.embed(adata, model, tok, key_added="m0", pooling="mean", layer=0, tokens=cells)
    m0 = adata.obsm["m0"]
    ids = torch.as_tensor(cells[0], dtype=torch.long)[None]
    model.eval()
    with torch.no_grad():
        h0 = model(ids, output_hidden_states=True).hidden_states[0][0]  # (L, D) embedding output
    np.testing.assert_allclose(m0[cells.obs_index[0]], h0[1:-1].mean(0).numpy(), atol=1e-5)  # <cls>/<eos> excluded
    with pytest.warns(UserWarning):
        tl.embed(adata, model, tok, key_added="m1", pooling="mean", layer=-1, tokens=cells)
    last = adata.obsm["m1"]
    assert not np.allclose(np.nan_to_num(last), np.nan_to_num(m0))
    with pytest.raises(ValueError, match="layer"):
        tl.embed(adata, model, tok, layer=5, tokens=cells)


def test_refusals(setup):
    adata, model, tok = setup
    v1 = RankValueTokenizer(tok.vocab, tok.gene_medians, preset="V1")
    with pytest.raises(ValueError, match="pooling='mean'"):
        tl.embed(adata, model, v1, pooling="cls")
    other = Transcriptformer(TranscriptformerConfig(vocab_size=40, max_len=40, n_layer=1, n_head=2, n_embd=32, n_inner=64))
    with pytest.raises(ValueError, match="vocab_size=40"):
        tl.embed(adata, other, tok)
    with pytest.raises(ValueError, match="pooling"):
        tl.embed(adata, model, tok, pooling="max")


def test_gene_embeddings(setup):
    adata, model, tok = setup
    static = tl.gene_embeddings(adata, model, tok, kind="static", key_added="tf_static")
    assert list(static.index) == GENES and adata.varm["tf_static"].shape == (30, 32)
    row = model.embeddings.word.weight[tok.vocab.token_to_id("G3")].detach().numpy()
    np.testing.assert_allclose(static.loc["G3"].to_numpy(), row)
    ctx = tl.gene_embeddings(adata, model, tok, kind="contextual", key_added="tf_ctx", batch_size=3)
    # by hand for G3: mean over cells of the last hidden state where G3 occurs
    cells, gid = tok.encode(adata), tok.vocab.token_to_id("G3")
    model.eval()
    vecs = []
    with torch.no_grad():
        for i in range(len(cells)):
            seq = torch.as_tensor(cells[i], dtype=torch.long)
            if (seq == gid).any():
                h = model(seq[None]).last_hidden_state[0]
                vecs.append(h[seq == gid].mean(0))
    np.testing.assert_allclose(ctx.loc["G3"].to_numpy(), torch.stack(vecs).mean(0).numpy(), atol=1e-5)
    assert adata.var["tf_ctx_n_cells"]["G3"] == len(vecs)


def _snapshot(a):
    return (sorted(a.obs.columns), sorted(a.obsm.keys()), sorted(a.uns.keys()), sorted(a.varm.keys()),
            sorted(a.var.columns), a.X.copy())


def _same(a, snap):
    now = _snapshot(a)
    return now[:5] == snap[:5] and (now[5] != snap[5]).nnz == 0


def test_embed_copy_keyword_only_and_old_key_name(setup):
    adata, model, tok = setup
    a = adata.copy()
    before = _snapshot(a)
    with pytest.warns(UserWarning, match="no tokenizable gene"):
        out = tl.embed(a, model, tok, key_added="X_copy", copy=True)
    assert _same(a, before) and out is not a                          # the input is untouched
    assert out.obsm["X_copy"].shape == (13, 32) and out.uns["X_copy"]["n_cells_embedded"] == 12
    with pytest.raises(TypeError, match="positional"):
        tl.embed(a, model, tok, "X_pos")                              # options are keyword-only
    with pytest.raises(TypeError, match="positional"):
        tl.gene_embeddings(a, model, tok, "static")
    with pytest.warns(FutureWarning, match="key_added"), pytest.warns(UserWarning, match="no tokenizable"):
        tl.embed(a, model, tok, key="X_old")
    np.testing.assert_array_equal(a.obsm["X_old"], out.obsm["X_copy"])
    with pytest.warns(FutureWarning, match="key_added"):
        tl.gene_embeddings(a, model, tok, key="g_old")
    assert a.varm["g_old"].shape == (30, 32)


# ---- one coverage rule for every verb that tokenizes (issue 10 §2b) ---------------------------------


@pytest.fixture
def low_coverage(setup):
    """Cells whose counts lie mostly outside the tokenizer's 30 genes (20 extra genes, 30x the counts)."""
    adata, model, tok = setup
    rng = np.random.default_rng(1)
    X = np.hstack([rng.poisson(0.9, (13, 30)), rng.poisson(30.0, (13, 20))]).astype(np.float32)
    X[:, 0] += 1                                                     # every cell keeps some vocabulary counts
    a = ad.AnnData(sp.csr_matrix(X))
    a.var_names = GENES + [f"OTHER{i}" for i in range(20)]
    a.obs["cell_type"] = np.where(np.arange(13) % 2, "A", "B")
    return a, model, tok


class _SpyTokenizer:
    """The real tokenizer, recording the check_coverage each encode call received."""

    def __init__(self, tok):
        self._tok, self.seen = tok, []

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, adata, **kwargs):
        self.seen.append(kwargs.get("check_coverage", "missing"))
        return self._tok.encode(adata, **kwargs)


def _verbs(model, tmp_split):
    """Each tokenizing verb, called with and without an explicit check_coverage."""
    from types import SimpleNamespace

    dummy_classifier = SimpleNamespace(classes=["A", "B"])            # fails only after tokenizing
    return {
        "embed": lambda a, tok, **kw: tl.embed(a, model, tok, **kw),
        "gene_embeddings": lambda a, tok, **kw: tl.gene_embeddings(a, model, tok, kind="contextual", **kw),
        "annotate": lambda a, tok, **kw: tl.annotate(a, dummy_classifier, tokenizer=tok, **kw),
        "finetune_annotator": lambda a, tok, **kw: tl.finetune_annotator(a, "cell_type", tmp_split(a), model,
                                                                         tok, epochs=0, **kw),
        "perturb": lambda a, tok, **kw: tl.perturb(a, model, tok, "all", **kw),
    }


def _split_for(a):
    return tl.Split(train=a.obs_names[:9], test=a.obs_names[9:])


@pytest.mark.parametrize("verb", ["embed", "gene_embeddings", "annotate", "finetune_annotator", "perturb"])
def test_every_verb_applies_the_same_coverage_check(low_coverage, verb):
    from tflib.tokenize import VocabularyCoverageError

    a, model, tok = low_coverage
    call = _verbs(model, _split_for)[verb]
    spy = _SpyTokenizer(tok)
    before = _snapshot(a)
    with pytest.raises(VocabularyCoverageError, match="counts"):
        call(a, spy)
    assert spy.seen == [True]                                         # the check is on by default, for all
    assert _same(a, before)                                           # a failed call writes nothing
    spy.seen.clear()
    try:
        call(a, spy, check_coverage=False)
    except VocabularyCoverageError:  # pragma: no cover - the point of the test
        pytest.fail(f"{verb}(check_coverage=False) still applied the coverage check")
    except Exception:  # noqa: BLE001 - later steps (e.g. the dummy classifier, 0 epochs) may fail; not the subject
        pass
    assert spy.seen == [False]                                        # passed through, not overridden
    with pytest.raises(TypeError, match="check_coverage"):
        call(a, spy, encode_kwargs={"check_coverage": False})         # one switch, visible in the call


def test_a_layer_name_in_a_model_verb_points_to_encode_kwargs(setup):
    """In tl.embed/tl.perturb ``layer`` is a hidden state; the tokenizer's advice "layer='counts'"
    is rewritten for them, and the rewritten advice works."""
    a, model, tok = setup[:3]
    logn = a.copy()
    logn.layers["counts"] = logn.X.copy()
    logn.X = logn.X.copy()
    logn.X.data = np.log1p(logn.X.data).astype(np.float32)
    for verb in (lambda **kw: tl.embed(logn, model, tok, **kw),
                 lambda **kw: tl.perturb(logn, model, tok, "all", **kw)):
        with pytest.raises(TypeError, match=r"encode_kwargs=\{'layer': 'counts'\}"):
            verb(layer="counts")
        with pytest.raises(ValueError, match=r"not raw counts.*encode_kwargs=\{'layer': 'counts'\}"):
            verb()
        verb(encode_kwargs={"layer": "counts"})                      # the advice, followed, works
    assert "X_tf" in logn.obsm
