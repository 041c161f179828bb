"""tflib.utils: the notebook setup helper and the JSON writer that never replaces a file by accident."""
import numpy as np
import pytest


def test_notebook_setup_seeds_and_quiets():
    import logging

    import matplotlib.pyplot as plt
    import scanpy as sc

    import tflib

    rng = tflib.utils.notebook_setup(5, dpi=77)
    assert rng.integers(1000) == np.random.default_rng(5).integers(1000)
    assert sc.settings.verbosity == 0 and plt.rcParams["figure.dpi"] == 77
    assert logging.getLogger("scvi").level == logging.ERROR


def test_loss_curve_draws_steps_mean_and_chance():
    import matplotlib

    matplotlib.use("Agg")
    import pytest

    import tflib

    ax = tflib.pl.loss_curve([4.0, 2.0, 3.0, 1.0], steps=[10, 20, 30, 40], window=2, chance=5.0, title="t")
    raw, mean = ax.lines[0], ax.lines[1]
    assert list(raw.get_xdata()) == [10, 20, 30, 40]
    assert list(mean.get_ydata()) == [4.0, 3.0, 2.5, 2.0]                # rolling mean, min_periods=1
    assert ax.lines[2].get_ydata()[0] == 5.0 and ax.get_title() == "t"
    with pytest.raises(ValueError, match="line up"):
        tflib.pl.loss_curve([1.0, 2.0], steps=[1])
    with pytest.raises(ValueError, match="empty"):
        tflib.pl.loss_curve([])


def test_write_json_replaces_a_file_only_when_asked(tmp_path):
    from tflib.utils import write_json

    path = tmp_path / "sub" / "vocab.json"
    write_json(path, {"a": 1})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_json(path, {"a": 2})
    assert path.read_text() == '{"a": 1}'                              # untouched by the refused call
    write_json(path, {"a": 2}, overwrite=True)
    assert path.read_text() == '{"a": 2}'


def test_display_rounding_keeps_non_floats_and_formats_large_numbers():
    import pandas as pd

    from tflib.utils import format_sig, round_sig

    table = pd.DataFrame({"r": [0.123456, 12345.678], "n": [3, 4], "name": ["a", "b"]})
    shown = round_sig(table)
    assert shown["r"].tolist() == [0.123, 12300.0]
    assert shown["n"].tolist() == [3, 4] and shown["name"].tolist() == ["a", "b"]
    assert table["r"].iloc[0] == 0.123456                    # a copy: the input is unchanged
    assert round_sig(2.71828, digits=2) == 2.7
    assert format_sig(12345.6) == "12,346" and format_sig(0.0012345) == "0.00123"


def test_dense_accepts_sparse_and_dense():
    import numpy as np
    import scipy.sparse as sp

    from tflib.utils import dense

    M = sp.csr_matrix(np.array([[0, 1.5], [2, 0]]))
    assert np.array_equal(dense(M), M.toarray()) and dense(M).dtype == np.float64
    assert np.array_equal(dense([[1, 2]]), np.array([[1.0, 2.0]]))


def test_footer_is_written_in_one_piece(monkeypatch):
    """A Jupyter kernel flushes stdout on a timer; a footer printed line by line was once split
    into two outputs (one with a blank line after the title) and the book's footer check failed.
    One write keeps the table whole whatever the timing."""
    import sys

    import tflib.utils

    class Recorder:
        def __init__(self):
            self.writes = []

        def write(self, s):
            self.writes.append(s)

        def flush(self):
            pass

    rec = Recorder()
    monkeypatch.setattr(sys, "stdout", rec)
    tflib.utils.footer(seed=5)
    text = [w for w in rec.writes if w]
    assert len(text) == 1
    lines = text[0].splitlines()
    assert lines[0] == tflib.utils.FOOTER_TITLE and lines[1].startswith("  ") and "" not in lines
