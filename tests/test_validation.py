"""The one count validator (tflib.validation): every value checked, in chunks, with a message that
names the first bad cell and gene and the fix."""
from __future__ import annotations

import subprocess
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tflib.validation import CountsError, check_counts, check_zero_counts, zero_count_cells


def _counts(n=500, g=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(1.5, (n, g)).astype(np.float32)


def _adata(X):
    a = ad.AnnData(X)
    a.obs_names = [f"cell{i}" for i in range(a.n_obs)]
    a.var_names = [f"gene{j}" for j in range(a.n_vars)]
    return a


FORMATS = {"dense": np.asarray, "csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_raw_counts_pass_in_every_format(fmt):
    check_counts(FORMATS[fmt](_counts()), chunk_size=97)
    check_counts(FORMATS[fmt](_counts().astype(np.int64)), chunk_size=97)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("chunk", [7, 1 << 22])
def test_a_nan_in_the_last_row_is_found_with_its_cell_and_gene(fmt, chunk):
    X = _counts()
    X[-1, 5] = np.nan                                  # far beyond any sample of the first rows
    X[-1, 6] = 3.0                                     # keep it stored in the sparse formats
    with pytest.raises(CountsError) as err:
        check_counts(FORMATS[fmt](X), chunk_size=chunk)
    msg = str(err.value)
    assert "1 NaN or infinite value (first at cell 499, gene 5)" in msg
    assert "layer='counts'" in msg


def test_anndata_messages_name_cells_genes_and_counts():
    X = _counts()
    X[301, 2] = np.nan
    X[400, 3] = np.inf
    X[:, -1] = 1.0
    X[123, -1] = -2.0                                  # a negative value in the last column
    a = _adata(sp.csr_matrix(X))
    with pytest.raises(CountsError) as err:
        check_counts(a, chunk_size=50)
    msg = str(err.value)
    assert msg.startswith("adata.X does not hold raw counts")
    assert "2 NaN or infinite values (first at cell 301 ('cell301'), gene 2 ('gene2'))" in msg
    assert "1 negative value (first at cell 123 ('cell123'), gene 39 ('gene39'))" in msg
    assert "scaled or centred" in msg


def test_non_integers_log_normalised_and_size_normalised():
    X = _counts()
    lognorm = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4)
    a = _adata(sp.csr_matrix(X))
    a.layers["lognorm"] = sp.csr_matrix(lognorm)
    with pytest.raises(CountsError, match=r"adata.layers\['lognorm'\] does not hold raw counts.*log-normalised"):
        check_counts(a, layer="lognorm")
    with pytest.raises(CountsError, match="size-normalised"):
        check_counts(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4)
    # the same matrix is accepted when integers are not required, with the caller's fix appended
    check_counts(a, layer="lognorm", require_integer=False)
    with pytest.raises(CountsError, match=r"Or pass input='normalized'\.$"):
        check_counts(a, layer="lognorm", fix="Or pass input='normalized'.")
    with pytest.raises(KeyError, match="no 'counts'"):
        check_counts(a, layer="counts")


def test_one_fraction_anywhere_is_found():
    X = _counts(n=1000)
    X[999, 39] = 2.5
    with pytest.raises(CountsError, match=r"1 non-integer value \(first at cell 999, gene 39\)"):
        check_counts(sp.csr_matrix(X), chunk_size=64)
    check_counts(sp.csr_matrix(X), require_integer=False)


def test_integer_storage_negative():
    X = _counts().astype(np.int32)
    X[10, 0] = -1
    with pytest.raises(CountsError, match=r"1 negative value \(first at cell 10, gene 0\)"):
        check_counts(X)


def test_zero_count_cells_and_all_zero_matrix():
    X = _counts()
    X[[3, 7, 499]] = 0
    for fmt in FORMATS.values():
        np.testing.assert_array_equal(np.flatnonzero(zero_count_cells(fmt(X))), [3, 7, 499])
    a = _adata(sp.csr_matrix(X))
    with pytest.warns(UserWarning, match=r"3 of 500 cells in adata.X have zero counts \(first: cell 3 \('cell3'\)\)"
                      r".*sc.pp.filter_cells\(adata, min_counts=1\)"):
        mask = check_zero_counts(a, consequence="They are kept.")
    assert mask.sum() == 3 and a.n_obs == 500          # reported, never dropped
    with pytest.raises(CountsError, match="min_counts=1"):
        check_zero_counts(a, on_zero_cells="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_zero_counts(a, on_zero_cells="ignore")
        check_zero_counts(_adata(_counts() + 1))        # no empty cell: silent
    with pytest.raises(CountsError, match=r"no counts at all: all 500 cells sum to 0.*layer='counts'"):
        check_zero_counts(sp.csr_matrix((500, 40), dtype=np.float32))


def test_validation_imports_no_heavy_library():
    code = ("import sys, tflib.validation; bad = [m for m in ('scanpy', 'torch', 'scvi', 'anndata', 'pandas') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_tl_check_counts_delegates_to_the_full_validator():
    import tflib.tl as tl

    X = _counts()
    X[450, 1] = 0.5
    a = _adata(X)
    a.obs["batch"] = pd.Categorical(["a", "b"] * 250)
    with pytest.raises(CountsError, match=r"cell 450 \('cell450'\)"):
        tl.check_counts(a)
    assert issubclass(CountsError, ValueError)
