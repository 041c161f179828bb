"""RankValueTokenizer: equivalence with the per-cell oracle (V1, V2; synthetic and real), tie rule,
truncation, streaming, persistence and every bad-input case of issue 3."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import anndata as ad
from _tokenize_helpers import ensembl, synthetic_counts
from tflib.tokenize import (GeneVocab, RankValueTokenizer, TokenizerInputError, TokenizerMismatchError,
                            TokenStore, gene_medians, load_tokenizer, validate_token_sequences)
from tflib.tokenize.reference import rank_value_reference


def _tokenizer(a, preset="V2", max_len=None, seed=0):
    rng = np.random.default_rng(seed)
    vocab = GeneVocab.from_genes(rng.permutation(np.asarray(a.var_names)))  # vocab order != column order
    return RankValueTokenizer(vocab, gene_medians(a, vocab=vocab), preset=preset, max_len=max_len)


def _assert_equal_to_oracle(tok, a, cells, **kw):
    ref, kept = rank_value_reference(tok, a, **kw)
    assert len(cells) == len(ref)
    np.testing.assert_array_equal(cells.obs_index, kept)
    for i, r in enumerate(ref):
        np.testing.assert_array_equal(cells[i], r, err_msg=f"cell {i}")


@pytest.mark.parametrize("preset,max_len", [("V1", None), ("V2", None), ("V1", 40), ("V2", 40)])
def test_equals_oracle_synthetic(preset, max_len):
    a = synthetic_counts(300, 400, empty=(7,))
    tok = _tokenizer(a, preset, max_len)
    cells = tok.encode(a, chunk_size=64)
    _assert_equal_to_oracle(tok, a, cells)
    lengths = cells.lengths
    if preset == "V2":
        assert (cells.tokens[cells.offsets[:-1]] == tok.vocab.cls_id).all()
        assert (cells.tokens[cells.offsets[1:] - 1] == tok.vocab.eos_id).all()
    assert lengths.max() <= tok.max_len
    if max_len:
        assert cells.report["n_cells_truncated"] > 0 and lengths.max() == max_len


@pytest.fixture(scope="module")
def pancreas():
    """The real mouse pancreas (spliced counts) and a human-symbol vocabulary with its medians."""
    from tflib.datasets import load
    from tflib.tokenize import load_ortholog_table

    p = load("pancreas")
    a = ad.AnnData(sp.csr_matrix(p.layers["spliced"]), obs=p.obs[["clusters"]].copy(), var=p.var[[]].copy())
    human = GeneVocab.from_genes(sorted(set(load_ortholog_table()["human"])))
    return a, human, gene_medians(a, vocab=human)


@pytest.mark.parametrize("preset", ["V1", "V2"])
def test_equals_oracle_real_pancreas_mouse_to_human(pancreas, preset):
    a, human, med = pancreas
    tok = RankValueTokenizer(human, med, preset=preset)
    cells = tok.encode(a)
    assert cells.report["mapping"]["species"] == "mouse"
    assert cells.report["mapping"]["n_duplicate_targets"] > 0  # several mouse genes -> one human gene
    assert cells.report["count_fraction_covered"] > 0.5
    _assert_equal_to_oracle(tok, a, cells)


def test_tie_rule_is_token_order_and_column_order_does_not_matter():
    # every gene has the same median and count 1 in cell 0 -> all tied -> ascending token id
    genes = [ensembl(i) for i in range(6)]
    X = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 1], [3, 1, 2, 1, 1, 0]], dtype=np.float32))
    a = ad.AnnData(X)
    a.var_names = genes
    vocab = GeneVocab.from_genes([genes[i] for i in (4, 2, 0, 5, 1, 3)])
    tok = RankValueTokenizer(vocab, {g: 1.0 for g in genes}, preset="V1")
    c = tok.encode(a)
    assert c[0].tolist() == [4, 5, 6, 7, 8, 9]
    assert vocab.decode(c[1]) == [genes[0], genes[2], genes[4], genes[1], genes[3]]
    perm = [3, 5, 0, 2, 1, 4]
    b = a[:, perm].copy()
    assert tok.encode(b)[1].tolist() == c[1].tolist()


def test_chunk_size_and_backed_streaming_store_equal_in_memory(tmp_path):
    a = synthetic_counts(250, 300, empty=(0, 100))
    tok = _tokenizer(a)
    ref = tok.encode(a, chunk_size=1000)
    for cs in (1, 17, 250):
        c = tok.encode(a, chunk_size=cs)
        np.testing.assert_array_equal(c.tokens, ref.tokens)
        np.testing.assert_array_equal(c.offsets, ref.offsets)
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path)
    store = tok.encode_to_store(path, tmp_path / "store", chunk_size=32)
    assert isinstance(store, TokenStore) and len(store) == len(ref) == 248
    np.testing.assert_array_equal(store.lengths, ref.lengths)
    for i in (0, 1, 123, len(store) - 1):
        np.testing.assert_array_equal(store[i], ref[i])
        assert store[i].dtype == np.int32
    assert store.obs.index[0] == "cell1" and list(store.obs["group"][:2]) == ["a", "b"]
    assert store.report["n_cells_skipped_empty"] == 2
    store.check_compatible(tok)


def test_save_pretrained_and_load_tokenizer(tmp_path):
    a = synthetic_counts(80, 100)
    tok = _tokenizer(a, "V1")
    d = tok.save_pretrained(tmp_path / "tok")
    assert {p.name for p in d.iterdir()} == {"vocab.json", "tokenizer_config.json", "gene_medians.json"}
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg["kind"] == "rank_value" and cfg["preset"] == "V1" and cfg["max_len"] == 2048
    assert cfg["vocab_size"] == len(tok.vocab) and cfg["special_tokens"]["<pad>"] == 0
    back = load_tokenizer(d)
    assert back.config() == tok.config()
    np.testing.assert_array_equal(back.encode(a).tokens, tok.encode(a).tokens)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tok.save_pretrained(d)


# ---------------------------------------------------------------- bad input (issue 3, item 6)
def test_log_normalised_values_raise_unless_declared_normalised():
    a = synthetic_counts(50, 80)
    tok = _tokenizer(a)
    logn = a.copy()
    logn.X = logn.X.copy()
    logn.X.data = np.log1p(logn.X.data / 3.3).astype(np.float32)
    with pytest.raises(TokenizerInputError, match="log-normalised"):
        tok.encode(logn)
    # counts / n_counts * 1e4 given as input="normalized" tokenizes like the counts
    norm = a.copy()
    X = norm.X.astype(np.float64).tocsr()
    X = sp.csr_matrix(X.multiply(1e4 / np.asarray(X.sum(1))))
    norm.X = X
    with pytest.raises(TokenizerInputError, match="input='normalized'"):
        tok.encode(norm)
    c = tok.encode(norm, input="normalized")
    assert len(c) == 50 and c[0][0] == tok.vocab.cls_id


@pytest.mark.parametrize("bad,match", [(-1.0, "negative"), (np.nan, "NaN"), (np.inf, "NaN or infinite")])
def test_negative_nan_inf_raise(bad, match):
    a = synthetic_counts(30, 50)
    tok = _tokenizer(a)
    a.X.data[5] = bad
    with pytest.raises(TokenizerInputError, match=match):
        tok.encode(a)
    with pytest.raises(TokenizerInputError, match=match):
        tok.encode(a, input="normalized")


def test_empty_cells_are_skipped_and_counted():
    a = synthetic_counts(40, 50, empty=(0, 5, 39))
    c = _tokenizer(a).encode(a)
    assert c.report["n_cells_skipped_empty"] == 3 and c.report["n_cells_out"] == 37 == len(c)
    assert 0 not in c.obs_index and 5 not in c.obs_index and list(c.obs.index[:2]) == ["cell1", "cell2"]


def test_n_counts_is_not_needed_and_does_not_change_tokens():
    # the per-cell factor 1e4 / n_counts scales all genes of a cell alike: same tokens with or without it
    a = synthetic_counts(60, 70)
    tok = _tokenizer(a)
    without = tok.encode(a)
    a.obs["n_counts"] = np.asarray(a.X.sum(1)).ravel() * 3
    np.testing.assert_array_equal(tok.encode(a).tokens, without.tokens)


def test_v1_tokens_with_v2_vocabulary_raise(tmp_path):
    a = synthetic_counts(30, 40)
    v1 = _tokenizer(a, "V1")
    v2 = RankValueTokenizer(v1.vocab, v1.gene_medians, preset="V2")
    cells_v1 = v1.encode(a)
    with pytest.raises(TokenizerMismatchError, match="V1"):
        validate_token_sequences(cells_v1, v2)
    with pytest.raises(TokenizerMismatchError, match="preset"):
        v2.check_compatible(cells_v1.config)
    store = cells_v1.save(tmp_path / "v1store")
    with pytest.raises(TokenizerMismatchError, match="V1 and V2 ids are not interchangeable"):
        store.check_compatible(v2)
    validate_token_sequences(v2.encode(a), v2)  # the matching case passes
    with pytest.raises(TokenizerMismatchError, match="V1"):
        validate_token_sequences(v2.encode(a), v1)


def test_coverage_error_for_wrong_identifiers():
    a = synthetic_counts(30, 40)
    tok = _tokenizer(a)
    b = a.copy()
    b.var_names = [f"GENE{i}" for i in range(40)]
    with pytest.raises(Exception, match="check_coverage=False"):
        tok.encode(b)


@pytest.fixture(scope="module")
def kang():
    """The real Kang PBMC cells (raw counts, human symbols) and a GENCODE Ensembl vocabulary."""
    from tflib.datasets import load
    from tflib.tokenize import load_gencode_table

    k = load("kang_pbmc")
    a = ad.AnnData(k.X, obs=k.obs[["cell_type"]].copy(), var=k.var[[]].copy())
    vocab = GeneVocab.from_genes(load_gencode_table()["gene_id"])
    return a, vocab, gene_medians(a, vocab=vocab)


@pytest.mark.parametrize("preset,max_len", [("V1", None), ("V2", None), ("V2", 300)])
def test_equals_oracle_real_kang_symbols_to_ensembl(kang, preset, max_len):
    a, vocab, med = kang
    tok = RankValueTokenizer(vocab, med, preset=preset, max_len=max_len)
    cells = tok.encode(a, chunk_size=700)
    assert cells.report["mapping"]["steps"] == ["symbol->Ensembl (GENCODE v44)"]
    _assert_equal_to_oracle(tok, a, cells)


def test_large_vocabulary_fallback_path_follows_the_same_rule():
    a = synthetic_counts(80, 120, empty=(3,))
    extra = [f"ENSG9{i:010d}" for i in range(70_000)]  # > 65,536 ids: the lexsort path
    vocab = GeneVocab.from_genes(extra[:40_000] + list(a.var_names)[::-1] + extra[40_000:])
    tok = RankValueTokenizer(vocab, gene_medians(a, vocab=vocab), preset="V2", max_len=50)
    assert len(vocab) > 1 << 16
    _assert_equal_to_oracle(tok, a, tok.encode(a, chunk_size=30))


def test_tokenizer_layers_point_one_way():
    """base.py and _core.py import no tokenizer subclass (issue 10 §5): the load_tokenizer factory
    lives in registry.py and assemble in _core.py."""
    import ast
    from pathlib import Path

    import tflib.tokenize as tt

    root = Path(tt.__file__).parent
    for name, banned in {"base.py": {"rank", "binning", "registry"},
                         "_core.py": {"rank", "binning", "base", "registry"}}.items():
        tree = ast.parse((root / name).read_text())
        imported = {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & banned, (name, imported & banned)
    from tflib.tokenize import _core, registry

    assert tt.load_tokenizer is registry.load_tokenizer
    assert callable(_core.assemble)
