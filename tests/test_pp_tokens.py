"""tflib.pp.tokenize follows the course's verb conventions (issue 10, section 3)."""
import numpy as np
import pytest

from tflib import pp
from tflib.tokenize import GeneVocab, RankValueTokenizer, gene_medians

from _tokenize_helpers import synthetic_counts


def _tokenizer(a):
    return RankValueTokenizer(GeneVocab.from_genes(a.var_names), gene_medians(a), preset="V2")


def test_copy_false_writes_in_place_and_returns_none():
    a = synthetic_counts(30, 50)
    assert pp.tokenize(a, _tokenizer(a)) is None
    assert {"tokens"} <= set(a.obsm) and "tokens_length" in a.obs and "tokens" in a.uns


def test_copy_true_returns_new_object_and_leaves_input_alone():
    a = synthetic_counts(30, 50)
    before = (set(a.obsm), set(a.obs.columns), set(a.uns))
    b = pp.tokenize(a, _tokenizer(a), copy=True)
    assert b is not a and "tokens" in b.obsm
    assert (set(a.obsm), set(a.obs.columns), set(a.uns)) == before


def test_old_key_name_still_works_with_a_warning():
    a = synthetic_counts(30, 50)
    with pytest.warns(FutureWarning, match="key_added"):
        pp.tokenize(a, _tokenizer(a), key="toks")
    assert "toks" in a.obsm


def test_existing_tokens_are_kept_unless_overwrite():
    a = synthetic_counts(30, 50)
    tok = _tokenizer(a)
    pp.tokenize(a, tok)
    saved = a.obsm["tokens"].copy()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pp.tokenize(a, tok)
    np.testing.assert_array_equal(a.obsm["tokens"], saved)
    pp.tokenize(a, tok, overwrite=True)


def test_failed_call_leaves_adata_unchanged():
    a = synthetic_counts(30, 50)
    a.X = a.X.astype(np.float64)
    a.X[3, 4] = -1.0  # a negative count: the tokenizer must refuse
    before = (set(a.obsm), set(a.obs.columns), set(a.uns))
    with pytest.raises(ValueError, match="negative"):
        pp.tokenize(a, _tokenizer(synthetic_counts(30, 50)))
    assert (set(a.obsm), set(a.obs.columns), set(a.uns)) == before


def test_non_count_x_error_names_a_counts_layer_that_works():
    a = synthetic_counts(30, 50)
    counts = a.X.copy()
    a.layers["counts"] = counts
    a.layers["unspliced"] = counts.copy()
    a.X = a.X.astype(np.float64)
    a.X.data = np.log1p(a.X.data)                      # what a user often has in X
    tok = _tokenizer(synthetic_counts(30, 50))
    with pytest.raises(ValueError, match=r"look like raw counts: \['counts'\]; e.g. pass layer='counts'"):
        pp.tokenize(a, tok)
    pp.tokenize(a, tok, layer="counts")                 # the suggested fix works
    assert "tokens" in a.obsm


def test_non_count_x_without_a_counts_layer_says_so_or_points_to_raw():
    a = synthetic_counts(30, 50)
    tok = _tokenizer(synthetic_counts(30, 50))
    counts = a.X.copy()
    a.X = a.X.astype(np.float64)
    a.X.data = np.log1p(a.X.data)
    with pytest.raises(ValueError, match=r"None of this AnnData's layers \(it has none\) nor adata.raw"):
        pp.tokenize(a, tok)
    b = a.copy()
    b.X = counts
    a.raw = b                                           # counts kept in .raw, as scanpy tutorials do
    with pytest.raises(ValueError, match=r"adata.raw.X looks like raw counts: pass adata.raw.to_adata\(\) instead"):
        pp.tokenize(a, tok)
    raw = a.raw.to_adata()
    pp.tokenize(raw, tok)                               # the suggested fix works
    assert "tokens" in raw.obsm
