"""Tests of tflib.stats.fdr (Benjamini--Hochberg / Benjamini--Yekutieli q-values; chapter 09)."""
from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

import tflib
from tflib.stats import fdr


def test_bh_by_hand():
    # sorted p: 0.01, 0.03, 0.04, 0.2 (n=4); raw BH p*n/rank: 0.04, 0.06, 0.0533, 0.2;
    # running minimum from the top: 0.04, 0.0533, 0.0533, 0.2 -- then back to the input order.
    q = fdr([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.2], rtol=1e-12)


def test_by_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    c = 1 + 1 / 2 + 1 / 3 + 1 / 4  # sum_{i<=n} 1/i
    np.testing.assert_allclose(fdr(p, method="by"), np.minimum(1, c * np.array([0.04, 0.16 / 3, 0.16 / 3, 0.2])))


@pytest.mark.parametrize("method,sm", [("bh", "fdr_bh"), ("by", "fdr_by")])
def test_matches_statsmodels_and_keeps_shape(method, sm):
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-3, size=50), [0.0, 1.0, 1.0]])
    q = fdr(p, method=method)
    np.testing.assert_allclose(q, multipletests(p, method=sm)[1], rtol=0, atol=0)
    assert q.dtype == np.float64 and (q >= p).all() and (q <= 1).all()
    grid = p[:350].reshape(70, 5)  # genes x fates: adjusted over all 350 values together
    np.testing.assert_array_equal(fdr(grid, method=method), fdr(p[:350], method=method).reshape(70, 5))


def test_exported_from_tflib_stats():
    assert tflib.stats.fdr is fdr and "fdr" in tflib.stats.__all__


def test_nan_pvalues_are_refused_with_count_and_positions():
    p = np.array([0.1, np.nan, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"2 of 4 p-values are NaN \(flat positions 1, 3\)") as err:
        fdr(p)
    assert "np.isnan" in str(err.value)


def test_out_of_range_pvalues_are_refused():
    with pytest.raises(ValueError, match=r"1 of 3 p-values lie outside \[0, 1\] \(flat positions 2;") as err:
        fdr([0.5, 0.1, 3.2])
    assert "10 ** -x" in str(err.value)
    with pytest.raises(ValueError, match="outside"):
        fdr([-0.01, 0.5])


def test_unknown_method_and_empty_input():
    with pytest.raises(ValueError, match=r"method must be one of \['bh', 'by'\]"):
        fdr([0.1], method="holm")
    assert fdr([]).shape == (0,)
