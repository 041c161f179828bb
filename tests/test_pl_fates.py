"""Tests of tflib.pl.fate_donuts (the article's Figure 1C; chapter 09).

Most tests draw synthetic probabilities (fast); one draws the fates of the shared simulated
pipeline from ``test_fate.py``.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Wedge  # noqa: E402

import tflib  # noqa: E402


def _toy(n=300, k=3, seed=1):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(X=np.zeros((n, 2), dtype=np.float32))
    a.obsm["X_umap"] = rng.normal(size=(n, 2))
    a.obsm["fate_probs"] = rng.dirichlet(np.ones(k), size=n)
    a.uns["fate_probs_names"] = [f"fate_{c}" for c in "ABC"[:k]]
    return a


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_donuts_render_with_legend_and_safe_colours():
    a = _toy()
    fig = tflib.pl.fate_donuts(a, n_donuts=40)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    assert (a.obsm["fate_probs"] > 0).all()  # Dirichlet draws: every fate is non-zero, so
    assert len(wedges) == 40 * 3             # one slice per fate of each of the 40 drawn cells
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["fate_A", "fate_B", "fate_C"]
    colours = {matplotlib.colors.to_hex(w.get_facecolor()) for w in wedges}
    assert colours <= {c.lower() for c in tflib.pl.fate_colors(legend).values()}
    assert _pixels(fig).std() > 0
    plt.close(fig)


def test_donuts_are_deterministic_for_a_seed():
    a = _toy()
    first = _pixels(tflib.pl.fate_donuts(a, n_donuts=30, seed=3))
    second = _pixels(tflib.pl.fate_donuts(a, n_donuts=30, seed=3))
    other = _pixels(tflib.pl.fate_donuts(a, n_donuts=30, seed=4))
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)
    plt.close("all")


def test_donut_slices_match_probabilities_and_draw_into_given_axes():
    a = _toy(n=5)
    fig, ax = plt.subplots()
    out = tflib.pl.fate_donuts(a, cells=[a.obs_names[0]], ax=ax, show_cells=False, legend=False)
    assert out is fig
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    spans = np.array([(w.theta2 - w.theta1) / 360.0 for w in wedges])
    p = a.obsm["fate_probs"][0]
    np.testing.assert_allclose(spans, p[p > 0], atol=1e-6)
    plt.close(fig)


def test_donut_errors_are_clear():
    a = _toy()
    with pytest.raises(KeyError, match="X_tsne"):
        tflib.pl.fate_donuts(a, basis="tsne")
    n_fates = a.obsm["fate_probs"].shape[1]
    with pytest.raises(ValueError, match=f"1 colors for {n_fates} fates"):
        tflib.pl.fate_donuts(a, colors=["#000000"])
    with pytest.raises(ValueError, match="colors has no entry for the fates"):
        tflib.pl.fate_donuts(a, colors={"nope": "#000000"})
    a.obsm["fate_probs_true"] = a.obsm.pop("fate_probs")
    with pytest.raises(KeyError, match=r"tflib.tl.fates.*key= one of the fate tables present: \['fate_probs_true'\]"):
        tflib.pl.fate_donuts(a)
    tflib.pl.fate_donuts(a, key="fate_probs_true")                    # the named fix works
    plt.close("all")


def test_donuts_on_simulated_fates():
    from test_fate import simulated_fates

    raw, b, _ = simulated_fates()
    fig = tflib.pl.fate_donuts(b, basis="pca", n_donuts=50, seed=0)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == list(b.uns["fate_probs_names"])
    _pixels(fig)
    # the simulator's true probabilities (a DataFrame in obsm) draw too: columns become the names
    b.obsm["fate_probs_true"] = raw.obsm["fate_probs_true"].loc[b.obs_names]
    fig2 = tflib.pl.fate_donuts(b, basis="pca", key="fate_probs_true", n_donuts=50, seed=0)
    legend2 = [t.get_text() for t in fig2.axes[0].get_legend().get_texts()]
    assert legend2 == list(raw.obsm["fate_probs_true"].columns)
    _pixels(fig2)
    plt.close("all")
