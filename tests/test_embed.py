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
        a = tl.embed(adata, model, tok, batch_size=4)
    assert model.training                                            # mode restored
    assert a.shape == (13, 32) and adata.obsm["X_tf"] is a
    assert np.isnan(a[5]).all() and np.isfinite(np.delete(a, 5, axis=0)).all()  # no subsampling
    with pytest.warns(UserWarning):
        b = tl.embed(adata, model, tok, key="again", batch_size=1)
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
        m0 = tl.embed(adata, model, tok, key="m0", pooling="mean", layer=0, tokens=cells)
    ids = torch.as_tensor(cells[0], dtype=torch.long)[None]
    model.eval()
    with torch.no_grad():
        h0 = model(ids, output_hidden_states=True).hidden_states[0][0]  # (L, D) embedding output
    np.testing.assert_allclose(m0[cells.obs_index[0]], h0[1:-1].mean(0).numpy(), atol=1e-5)  # <cls>/<eos> excluded
    with pytest.warns(UserWarning):
        last = tl.embed(adata, model, tok, key="m1", pooling="mean", layer=-1, tokens=cells)
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
    static = tl.gene_embeddings(adata, model, tok, kind="static", key="tf_static")
    assert list(static.index) == GENES and adata.varm["tf_static"].shape == (30, 32)
    row = model.embeddings.word.weight[tok.vocab.token_to_id("G3")].detach().numpy()
    np.testing.assert_allclose(static.loc["G3"].to_numpy(), row)
    ctx = tl.gene_embeddings(adata, model, tok, kind="contextual", key="tf_ctx", batch_size=3)
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
