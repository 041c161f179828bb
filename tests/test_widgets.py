"""tflib.widgets: the explorers' pure draws and their widget callbacks, headless (issue 14, item 3)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tflib.widgets as tw  # noqa: E402

from _tiny_world import GENES, tiny_world  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    return tiny_world(10, 1.5, max_len=48, n_head=3, n_embd=24, n_inner=32)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bars(fig):
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_yticklabels()], [p.get_width() for p in ax.patches]


# ---- rank explorer ------------------------------------------------------------------------------
def test_rank_bars_are_the_tokenizers_first_genes_with_their_values(setup):
    adata, _, tok = setup
    ex = tw.rank_explorer(adata, tok, n_show=8, label_key="state")
    for cell in (0, 7):
        ids = tok.encode(adata[cell:cell + 1])[0][1:9]               # after <cls>
        names, widths = _bars(ex.draw(cell))
        assert names == [tok.vocab.id_to_token(int(t)) for t in ids]
        row = adata.X[cell].toarray().ravel().astype(np.float64)
        expect = [row[GENES.index(g)] / row.sum() * 1e4 / (1.0 + GENES.index(g) % 4) for g in names]
        np.testing.assert_allclose(widths, expect, rtol=1e-12)
        assert all(a >= b for a, b in zip(widths, widths[1:]))     # the sequence is sorted by value


def test_rank_slider_redraws_for_the_chosen_cell(setup):
    adata, _, tok = setup
    ex = tw.rank_explorer(adata, tok, n_show=5)
    ex.widget()
    assert ex.value == 0 and ex._image.value[:4] == b"\x89PNG"
    first_png = ex._image.value
    ex.controls["cell"].value = 6                                     # what a user's drag does
    assert ex.value == 6
    assert _bars(ex.figure)[0] == list(ex.data(6)["gene"])
    assert _bars(ex.figure)[0] != _bars(ex.draw(0))[0]
    assert ex._image.value != first_png


def test_rank_bad_cell_names_the_fix(setup):
    adata, _, tok = setup
    ex = tw.rank_explorer(adata, tok)
    with pytest.raises(IndexError, match=r"out of range: adata has 10 cells\. Fix: pick a position from 0 to 9"):
        ex.draw(10)
    with pytest.raises(KeyError, match="not in adata.obs_names"):
        ex.draw("nope")
    assert ex.draw("c3") is not None                                  # an obs name works too
    with pytest.raises(IndexError, match="out of range"):
        ex.static([1, 99])                                            # checked before drawing
    with pytest.raises(TypeError, match="rank-value tokenizer"):
        tw.rank_explorer(adata, object())


def test_rank_static_draws_one_panel_per_cell(setup):
    adata, _, tok = setup
    fig = tw.rank_explorer(adata, tok, n_show=4).static([0, 1, 2, 3], ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert [t.get_text() for t in visible[2].get_yticklabels()] == [
        tok.vocab.id_to_token(int(t)) for t in tok.encode(adata[2:3])[0][1:5]]


# ---- attention explorer -------------------------------------------------------------------------
def test_attention_image_is_the_models_attention(setup):
    adata, model, tok = setup
    ex = tw.attention_explorer(model, tok, adata, cell=3, n_tokens=10)
    ids = torch.as_tensor(tok.encode(adata[3:4])[0][None], dtype=torch.long)
    with torch.no_grad():
        att = model(ids, torch.ones_like(ids, dtype=torch.bool), output_attentions=True, logits=None).attentions
    ex.widget()
    for layer, head in [(1, 2), (0, 1)]:
        ex.controls["layer"].value, ex.controls["head"].value = layer, head
        assert ex.value == (layer, head)
        shown = ex.figure.axes[0].images[0].get_array()
        np.testing.assert_allclose(np.asarray(shown), att[layer][0, head, :10, :10].numpy(), rtol=0, atol=1e-7)
    assert ex.labels[0] == "<cls>" and len(ex.labels) == 10


def test_attention_bad_layer_or_head_names_the_fix(setup):
    adata, model, tok = setup
    ex = tw.attention_explorer(model, tok, adata)
    with pytest.raises(IndexError, match=r"layer=2 is out of range: the model has 2 layers\. Fix: pick a layer from 0 to 1"):
        ex.draw((2, 0))
    with pytest.raises(IndexError, match=r"head=3 is out of range: the model has 3 heads"):
        ex.draw((0, 3))
    with pytest.raises(TypeError, match=r"\(layer, head\) pair"):
        ex.draw(1)
    with pytest.raises(IndexError, match="adata has 10 cells"):
        tw.attention_explorer(model, tok, adata, cell=-1)


def test_attention_leaves_a_training_model_in_training_mode(setup):
    adata, model, tok = setup
    model.train()
    try:
        a = tw.attention_explorer(model, tok, adata, cell=1).weights
        b = tw.attention_explorer(model, tok, adata, cell=1).weights
        assert model.training
        np.testing.assert_array_equal(a, b)                          # computed in eval mode: no dropout
    finally:
        model.eval()


# ---- fate-shift explorer ------------------------------------------------------------------------
@pytest.fixture()
def fate_tables():
    fates = ["A", "B", "C"]
    cells = [f"c{i}" for i in range(4)]
    before = pd.DataFrame([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]],
                          index=cells, columns=fates)
    rows = []
    for gene, d in [("X", [-0.1, 0.05, 0.05]), ("Y", [0.02, -0.04, 0.02])]:
        for i, c in enumerate(cells):
            rows.append({"cell": c, "gene": gene, "kind": "delete", "expressed": gene == "X" or i < 2,
                         **{f"fate_shift_{f}": v * (1 + i) for f, v in zip(fates, d)}})
    table = pd.DataFrame(rows)
    truth = {"X": pd.DataFrame([[-0.2, 0.1, 0.1]] * 4, index=cells, columns=fates),
             "Y": pd.DataFrame([[0.0, 0.0, 0.0]] * 4, index=cells, columns=fates)}
    return table, before, truth, fates


def _donut_shares(fig, n_fates):
    from matplotlib.patches import Wedge

    spans = [w.theta2 - w.theta1 for w in fig.axes[0].patches if isinstance(w, Wedge)]
    return np.array(spans).reshape(-1, n_fates) / 360


def test_donuts_follow_the_tables_means_for_the_chosen_gene(fate_tables):
    table, before, truth, fates = fate_tables
    ex = tw.fate_shift_explorer(table, truth, before=before)
    ex.widget()
    ex.controls["gene"].value = "Y"
    assert ex.value == "Y"
    acted = table[(table.gene == "Y") & table.expressed]              # Y is expressed in c0, c1 only
    pred0 = before.loc[acted.cell].mean().to_numpy()
    pred1 = pred0 + acted[[f"fate_shift_{f}" for f in fates]].mean().to_numpy()
    d = ex.data("Y")
    np.testing.assert_allclose(d.loc["predicted before"], pred0)
    np.testing.assert_allclose(d.loc["predicted after"], pred1)
    np.testing.assert_allclose(d.loc["true after"], before.mean().to_numpy())  # Y's true shift is 0
    shares = _donut_shares(ex.figure, 3)
    np.testing.assert_allclose(shares[0], pred0 / pred0.sum())
    np.testing.assert_allclose(shares[1], pred1 / pred1.sum())
    assert shares.shape == (4, 3)


def test_a_summary_table_gives_the_same_predicted_after_with_vector_baseline(fate_tables):
    import tflib.tl as tl

    table, before, _, fates = fate_tables
    base = before.mean()
    ex = tw.fate_shift_explorer(tl.perturb_summary(table), before=base)
    d = ex.data("X")
    expect = base.to_numpy() + table[table.gene == "X"][[f"fate_shift_{f}" for f in fates]].mean().to_numpy()
    np.testing.assert_allclose(d.loc["predicted after"], expect)
    assert list(d.index) == ["predicted before", "predicted after"]


def test_fate_explorer_bad_input_names_the_fix(fate_tables):
    table, before, truth, _ = fate_tables
    ex = tw.fate_shift_explorer(table, truth, before=before)
    with pytest.raises(KeyError, match=r"gene 'Z' is not in the table \(2 genes: X, Y\)\. Fix: pick one"):
        ex.draw("Z")
    with pytest.raises(KeyError, match="no fate_shift_<fate>"):
        tw.fate_shift_explorer(table.drop(columns=[c for c in table if c.startswith("fate")]), before=before)
    with pytest.raises(KeyError, match="before lacks the fates"):
        tw.fate_shift_explorer(table, before=before.drop(columns="C")).data("X")
    with pytest.raises(KeyError, match="truth has no entry for 'Y'"):
        tw.fate_shift_explorer(table, {"X": truth["X"]}, before=before).data("Y")
