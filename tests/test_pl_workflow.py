"""The welcome page's four-panel workflow figure (tflib.pl.workflow)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

import tflib.pl
from tflib.pl.workflow import OKABE_ITO, TITLES, workflow_figure


def _pixels(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_exported_lazily_from_tflib_pl():
    assert "workflow_figure" in tflib.pl.__all__
    assert tflib.pl.workflow_figure is workflow_figure


def test_returns_figure_with_four_titled_panels():
    fig = workflow_figure()
    try:
        assert isinstance(fig, Figure)
        assert len(fig.axes) == 4
        assert [ax.get_title(loc="left") for ax in fig.axes] == list(TITLES)
        # every panel actually draws something
        for ax in fig.axes:
            assert ax.patches or ax.collections
    finally:
        plt.close(fig)


def test_deterministic_for_a_seed_and_seed_matters():
    figs = [workflow_figure(seed=0), workflow_figure(seed=0), workflow_figure(seed=1)]
    try:
        a, b, c = (_pixels(f) for f in figs)
        assert a.shape == b.shape
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    finally:
        for f in figs:
            plt.close(f)


def test_draws_into_given_axes():
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    try:
        out = workflow_figure(ax=axes)
        assert out is fig
        assert all(ax.get_title(loc="left") for ax in axes)
    finally:
        plt.close(fig)


def test_wrong_number_of_axes_is_a_clear_error():
    fig, axes = plt.subplots(1, 3)
    try:
        with pytest.raises(ValueError, match="4 axes"):
            workflow_figure(ax=axes)
    finally:
        plt.close(fig)


def test_uses_only_okabe_ito_colours_for_fates():
    fig = workflow_figure()
    try:
        palette = {matplotlib.colors.to_hex(c) for c in OKABE_ITO.values()}
        ax_c = fig.axes[2]
        fate_labels = [t for t in ax_c.texts if t.get_text().startswith("fate ")]
        assert len(fate_labels) == 3
        assert {matplotlib.colors.to_hex(t.get_color()) for t in fate_labels} <= palette
    finally:
        plt.close(fig)
