import numpy as np
import pytest
import scipy.sparse as sp

from tflib.stats import row_pearson


def test_row_pearson_matches_numpy_and_accepts_sparse():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y)]
    np.testing.assert_allclose(row_pearson(x, y), expected, atol=1e-12)
    np.testing.assert_allclose(row_pearson(sp.csr_matrix(x), y), expected, atol=1e-12)


def test_row_pearson_constant_row_is_nan_and_shape_mismatch_raises():
    x = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    r = row_pearson(x, np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    assert np.isnan(r[0]) and r[1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        row_pearson(x, x[:, :2])
