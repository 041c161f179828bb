"""tflib.tokenize.gene_medians: exact in memory, bounded-error sketch when streaming, JSON round trip."""
from __future__ import annotations

import numpy as np
import pytest

from _tokenize_helpers import synthetic_counts
from tflib.tokenize import GeneMedians, GeneVocab, TokenizerInputError, gene_medians


def _brute_force(a):
    X = a.X.toarray().astype(np.float64)
    with np.errstate(invalid="ignore"):
        norm = X / X.sum(1, keepdims=True) * 1e4
    out = {}
    for j, g in enumerate(a.var_names):
        nz = norm[:, j][X[:, j] > 0]
        if nz.size:
            out[g] = np.median(nz)
    return out


def test_exact_medians_equal_numpy_median():
    a = synthetic_counts(200, 150, empty=(3,))
    med = gene_medians(a, chunk_size=37)
    assert med.method == "exact" and med.relative_error_bound == 0
    ref = _brute_force(a)
    assert set(med.genes) == set(ref)
    np.testing.assert_allclose([med[g] for g in ref], list(ref.values()), rtol=1e-12)
    assert med.report["n_counts_computed"] is True


def test_sketch_error_within_documented_bound(tmp_path):
    a = synthetic_counts(400, 120, density=0.3)
    path = tmp_path / "c.h5ad"
    a.write_h5ad(path)
    exact = gene_medians(a)
    sketch = gene_medians(path, chunk_size=64)  # a path is opened backed -> sketch by default
    assert sketch.method == "sketch"
    bound = sketch.relative_error_bound
    assert bound == pytest.approx(10 ** (1 / 200) - 1)
    rel = np.abs(sketch.medians / np.array([exact[g] for g in sketch.genes]) - 1)
    assert rel.max() <= bound + 1e-12
    # the exact method also streams from a backed file and equals the in-memory result
    streamed = gene_medians(path, method="exact", chunk_size=50)
    np.testing.assert_array_equal(streamed.medians, exact.medians)


def test_keyed_by_vocab_with_obs_n_counts_and_json_roundtrip(tmp_path):
    a = synthetic_counts(100, 60, obs_n_counts=True)
    a.obs["n_counts"] *= 2  # a corpus-level total larger than the genes present here
    vocab = GeneVocab.from_genes(list(reversed(a.var_names)))
    med = gene_medians(a, vocab=vocab)
    assert med.report["n_counts_computed"] is False
    assert set(med.genes) <= set(vocab.genes)
    g = a.var_names[0]
    X = a.X.toarray()
    nz = X[:, 0] > 0
    assert med[g] == pytest.approx(np.median(X[nz, 0] / a.obs["n_counts"].values[nz] * 1e4))
    p = med.save(tmp_path / "m.json")
    back = GeneMedians.load(p)
    assert back.genes == med.genes and np.array_equal(back.medians, med.medians) and back.fingerprint == med.fingerprint
    with pytest.raises(FileExistsError, match="overwrite=True"):
        med.save(p)


def test_medians_reject_bad_input():
    a = synthetic_counts(20, 30)
    a.X.data[0] = 0.5
    with pytest.raises(TokenizerInputError, match="non-integer"):
        gene_medians(a)
    a.X.data[0] = -1
    with pytest.raises(TokenizerInputError, match="negative"):
        gene_medians(a)


def test_missing_n_counts_is_computed_and_zero_totals_raise():
    a = synthetic_counts(60, 70)
    computed = gene_medians(a)
    assert computed.report["n_counts_computed"] is True
    a.obs["n_counts"] = np.asarray(a.X.sum(1)).ravel()
    given = gene_medians(a)
    assert given.report["n_counts_computed"] is False
    np.testing.assert_array_equal(given.medians, computed.medians)
    a.obs["n_counts"] = 0.0
    with pytest.raises(TokenizerInputError, match="n_counts"):
        gene_medians(a)
