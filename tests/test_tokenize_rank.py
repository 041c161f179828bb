"""RankValueTokenizer: equivalence with the per-cell oracle (V1, V2; synthetic and real), tie rule,
truncation, streaming, persistence and every bad-input case of issue 3."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import anndata as ad
from _tokenize_helpers import ensembl, synthetic_counts
from tflib.tokenize import (EmptyCellsWarning, GeneVocab, RankValueTokenizer, TokenizerInputError,
                            TokenizerMismatchError, TokenStore, VocabularyCoverageError, gene_medians, load_tokenizer,
                            validate_token_sequences)
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


def test_log_values_declared_normalised_warn_and_the_fixes_work():
    import warnings

    from tflib.pp import counts_from_lognorm

    a = synthetic_counts(50, 80)
    tok = _tokenizer(a)
    totals = np.asarray(a.X.sum(1)).ravel()
    norm = a.copy()
    norm.X = sp.csr_matrix(a.X.astype(np.float64).multiply(1e4 / totals[:, None]))
    logn = norm.copy()
    logn.X = norm.X.copy()
    logn.X.data = np.log1p(logn.X.data)
    logn.obs["total"] = totals
    with pytest.raises(TokenizerInputError, match=r"counts_from_lognorm\(adata, total_key=\.\.\.\)"):
        tok.encode(logn)                                             # the error names the rebuild
    with pytest.warns(UserWarning, match="looks log-transformed"):
        wrong = tok.encode(logn, input="normalized")                 # accepted, but not silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        right = tok.encode(norm, input="normalized")                 # normalised values: no warning
    assert any(list(wrong[i]) != list(right[i]) for i in range(len(right)))
    # fix 1 of the message: expm1 of the log values gives the normalised tokens back
    undone = logn.copy()
    undone.X = logn.X.copy()
    undone.X.data = np.expm1(undone.X.data)
    fixed = tok.encode(undone, input="normalized")
    assert all(list(fixed[i]) == list(right[i]) for i in range(len(right)))
    # fix 2: counts rebuilt from the log values tokenize like the raw counts
    counts_from_lognorm(logn, total_key="total")
    rebuilt, raw = tok.encode(logn, layer="counts"), tok.encode(a)
    assert all(list(rebuilt[i]) == list(raw[i]) for i in range(len(raw)))


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
    with pytest.warns(EmptyCellsWarning, match=r"3 of 40 cells have no counts in vocabulary genes and give empty"):
        c = _tokenizer(a).encode(a)
    assert c.report["n_cells_zero_counts"] == 3
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
    before = b.copy()
    with pytest.raises(VocabularyCoverageError, match="None of the 40 genes") as e:
        tok.encode(b)
    assert "GeneVocab.from_genes" in str(e.value) and "GENE0" in str(e.value)
    assert "check_coverage=False" not in str(e.value)   # it would not help: no gene maps
    with pytest.raises(VocabularyCoverageError, match="No cell has counts in this tokenizer's genes"):
        tok.encode(b, check_coverage=False)               # nor does it return 0 cells without a word
    _assert_same_anndata(b, before)
    # the fix it names works: a tokenizer built from these genes
    own = _tokenizer(b)
    assert len(own.encode(b)) == 30


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


def _assert_same_anndata(a, b):
    """A failed call leaves the AnnData exactly as it was."""
    assert a.shape == b.shape and list(a.var_names) == list(b.var_names) and list(a.obs_names) == list(b.obs_names)
    assert (a.X != b.X).nnz == 0 and a.X.nnz == b.X.nnz
    assert set(a.obs.columns) == set(b.obs.columns) and set(a.var.columns) == set(b.var.columns)
    assert set(a.obsm) == set(b.obsm) and set(a.uns) == set(b.uns) and set(a.layers) == set(b.layers)


# ---------------------------------------------------------------------------------------------
# issue 10 §6: real-shaped input (genes outside the vocabulary, shared tokens, explicit zeros,
# ties, truncation) goes through the one-pass path and equals the oracle
# ---------------------------------------------------------------------------------------------
def _real_shaped(seed=0, n_cells=120, n_genes=300):
    rng = np.random.default_rng(seed)
    a = synthetic_counts(n_cells, n_genes, density=0.3, seed=seed, empty=(4,))
    X = a.X.tolil()
    X[7, :] = 1.0                    # one long cell, all values equal: every gene ties
    X = X.tocsr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)
        X[9, 3] = 0.0                # an explicit zero stored in the matrix
    assert X[9].nnz and 0.0 in X[9].data
    X.data[X.indptr[11]:X.indptr[12]] = 0.0  # a cell holding explicit zeros only
    a.X = X
    names = np.asarray(a.var_names).copy()
    vocab_genes = [g for g in names if rng.random() > 0.05]       # ~5 % of the columns outside the vocabulary
    names[10], names[11], names[12] = names[20], names[20], names[21]  # duplicated IDs: summed, like Geneformer V2
    a.var_names = names
    vocab = GeneVocab.from_genes(rng.permutation(sorted(set(vocab_genes) | {names[20], names[21]})))
    # medians on a coarse grid, so that counts / median ties exactly between genes
    med = {g: float(rng.choice([0.5, 1.0, 2.0, 4.0])) for g in vocab.genes}
    return a, vocab, med


@pytest.mark.parametrize("preset,max_len,chunk", [("V2", None, 25), ("V2", 30, 7), ("V1", 20, 1000)])
def test_real_shaped_input_takes_the_one_pass_path_and_equals_oracle(monkeypatch, preset, max_len, chunk):
    import tflib.tokenize.rank as rank_mod

    a, vocab, med = _real_shaped()
    tok = RankValueTokenizer(vocab, med, preset=preset, max_len=max_len)

    def no_projection(*args, **kw):  # the general path must not be taken for such input
        raise AssertionError("project() called: the one-pass path was not used")

    monkeypatch.setattr(rank_mod, "project", no_projection)
    with pytest.warns(EmptyCellsWarning, match="2 of 120 cells"):
        cells = tok.encode(a, chunk_size=chunk)
    m = cells.report["mapping"]
    assert m["n_tokenizable"] < a.n_vars and m["n_duplicate_targets"] == 3
    assert (cells.report["n_cells_truncated"] > 0) == (max_len is not None)
    assert cells.report["n_cells_skipped_empty"] == 2
    monkeypatch.undo()
    _assert_equal_to_oracle(tok, a, cells)
    # the cell with all counts 1: value = summed count / median, many exact ties -> ascending token id
    from collections import Counter

    i = int(np.flatnonzero(cells.obs_index == 7)[0])
    genes = cells[i][1:-1] if preset == "V2" else cells[i]
    count = Counter(g for g in a.var_names if g in vocab)
    ids = {g: vocab.token_to_id(g) for g in count}
    want = sorted(count, key=lambda g: (-count[g] / med[g], ids[g]))
    np.testing.assert_array_equal(genes, [ids[g] for g in want][:len(genes)])
    assert len(set(count[g] / med[g] for g in want[:len(genes)])) < len(genes) / 4   # ties really happen


def test_one_pass_keys_find_oov_entries_by_their_padding_key():
    """Without explicit zeros, the entries of genes outside the vocabulary are found by their key
    (count / median 0 = +inf, which is the padding key) instead of a per-entry column lookup; the
    tokens, the counts covered and the cells kept are still the oracle's."""
    a, vocab, med = _real_shaped(seed=1)
    X = a.X.tocsr()
    X.eliminate_zeros()
    a.X = X
    assert X.data.min() > 0
    tok = RankValueTokenizer(vocab, med, preset="V2", max_len=30)
    with pytest.warns(EmptyCellsWarning):
        cells = tok.encode(a, chunk_size=7)
    outside = ~np.isin(np.asarray(a.var_names), vocab.genes)
    assert outside.any()
    want = float(X[:, np.flatnonzero(~outside)].sum())
    np.testing.assert_allclose(cells.report["counts_covered"], want, rtol=1e-12)
    _assert_equal_to_oracle(tok, a, cells)


def test_one_pass_keys_drop_subnormal_safely():
    """Tiny normalised values (subnormal counts / median) switch to the integer sort; same result."""
    a, vocab, med = _real_shaped(seed=3, n_cells=30)
    a.X = a.X.astype(np.float64)
    a.X.data = a.X.data * 1e-310
    tok = RankValueTokenizer(vocab, med, preset="V2")
    with pytest.warns(EmptyCellsWarning):
        cells = tok.encode(a, input="normalized")
    _assert_equal_to_oracle(tok, a, cells)


# ---------------------------------------------------------------------------------------------
# issue 10 §2b: coverage is measured on counts; the course tokenizer takes real data by default
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def course_tokenizer():
    from pathlib import Path

    import tflib

    return load_tokenizer(Path(tflib.__file__).parent / "resources" / "course_checkpoint")


def test_course_tokenizer_takes_real_data_with_defaults(course_tokenizer, kang, pancreas):
    """Kang (13,215 human genes) and the pancreas (7,192 mouse genes) against the course vocabulary
    (genes seen in >= 10 cells of a corpus source): the genes left out are the rare ones, so the
    share of counts covered is higher than the share of genes, and the defaults work."""
    from tflib.datasets import load

    k = load("kang_pbmc")
    cells = course_tokenizer.encode(k)
    assert len(cells) == k.n_obs
    gene_share = cells.report["mapping"]["n_tokenizable"] / k.n_vars
    assert cells.report["count_fraction_covered"] > max(0.5, gene_share)  # coverage on counts, not genes
    assert cells.report["mapping"]["vocab_fraction"] > 0.5
    p, _, _ = pancreas
    pc = course_tokenizer.encode(p)
    assert len(pc) == p.n_obs and pc.report["mapping"]["species"] == "mouse"
    assert pc.report["count_fraction_covered"] > 0.5
    _assert_equal_to_oracle(course_tokenizer, p, pc)


def test_wrong_species_names_the_fix_that_helps(course_tokenizer, pancreas):
    p, _, _ = pancreas
    before = p.copy()
    with pytest.raises(VocabularyCoverageError, match="species='mouse'") as e:
        course_tokenizer.encode(p, species="human")        # mouse symbols read as human ones
    assert "counts" in str(e.value) or "genes of the input" in str(e.value)
    _assert_same_anndata(p, before)
    assert len(course_tokenizer.encode(p, species="mouse")) == p.n_obs   # the named fix works


def test_wrong_var_column_names_the_column_that_helps(course_tokenizer):
    from tflib.datasets import load

    k = load("kang_pbmc")[:200].copy()
    k.var["symbol"] = k.var_names.astype(str)
    k.var_names = [f"feature_{i}" for i in range(k.n_vars)]             # e.g. a matrix with numbered features
    with pytest.raises(VocabularyCoverageError, match="gene_key='symbol'"):
        course_tokenizer.encode(k)
    assert len(course_tokenizer.encode(k, gene_key="symbol")) == 200


def test_low_count_coverage_is_checked_on_every_cell_and_says_counts():
    """Vocabulary genes that exist but hold few counts: the message is about counts, over all cells,
    and nothing is written to disk."""
    a = synthetic_counts(60, 100)
    vocab = GeneVocab.from_genes(list(a.var_names)[:10])
    tok = RankValueTokenizer(vocab, gene_medians(a, vocab=vocab), preset="V2")
    with pytest.raises(VocabularyCoverageError, match=r"hold only .*% of the counts \(threshold "
                       r"min_count_fraction=50%\): coverage is measured on counts, over all 60 cells"):
        tok.encode(a)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        with pytest.raises(VocabularyCoverageError):
            tok.encode_to_store(a, Path(d) / "s.tokens", chunk_size=16)
        assert list(Path(d).iterdir()) == []
    with pytest.warns(EmptyCellsWarning, match="counts only in genes outside the vocabulary"):
        c = tok.encode(a, check_coverage=False)
    assert len(c) == 60 - c.report["n_cells_skipped_empty"] > 0 and c.report["count_fraction_covered"] < 0.5
    with pytest.warns(EmptyCellsWarning):
        assert len(tok.encode(a, min_count_fraction=0.05)) == len(c)


# ---------------------------------------------------------------------------------------------
# issue 10 §2: an all-zero input is refused; zero-count cells are counted in a warning
# ---------------------------------------------------------------------------------------------
def test_all_zero_matrix_is_refused_with_the_fix(tmp_path):
    a = synthetic_counts(30, 40)
    tok = _tokenizer(a)
    z = a.copy()
    z.X = sp.csr_matrix(z.shape, dtype=np.float32)
    before = z.copy()
    with pytest.raises(TokenizerInputError, match=r"all 30 cells sum to 0.*layer='counts'"):
        tok.encode(z)
    _assert_same_anndata(z, before)
    with pytest.raises(TokenizerInputError, match="all 30 cells sum to 0"):
        tok.encode_to_store(z, tmp_path / "z.tokens")
    assert list(tmp_path.iterdir()) == []
    d = a.copy()
    d.X = np.zeros(d.shape, dtype=np.float32)                   # dense zeros too
    with pytest.raises(TokenizerInputError, match="all 30 cells sum to 0"):
        tok.encode(d)


def test_cells_without_vocabulary_counts_are_counted_apart_from_zero_cells():
    a = synthetic_counts(50, 60, empty=(1,))
    vocab = GeneVocab.from_genes(list(a.var_names)[:55])
    tok = RankValueTokenizer(vocab, gene_medians(a, vocab=vocab), preset="V2")
    X = a.X.tolil()
    X[2, :55] = 0                                                 # counts only outside the vocabulary
    X[2, 58] = 5
    a.X = X.tocsr()
    a.X.eliminate_zeros()
    with pytest.warns(EmptyCellsWarning, match=r"2 of 50 cells .*\(1 has no counts at all, 1 has counts only in genes "
                      "outside the vocabulary"):
        c = tok.encode(a)
    assert c.report["n_cells_skipped_empty"] == 2 and c.report["n_cells_zero_counts"] == 1
    assert 1 not in c.obs_index and 2 not in c.obs_index


def test_threads_give_the_same_tokens_and_the_same_errors(tmp_path):
    """n_jobs encodes chunks side by side; the result and the report cannot depend on it."""
    a = synthetic_counts(400, 300, empty=(3, 250))
    tok = _tokenizer(a, max_len=60)                                 # truncation runs
    with pytest.warns(EmptyCellsWarning):
        one = tok.encode(a, chunk_size=16, n_jobs=1)
    for jobs in (2, 3):
        with pytest.warns(EmptyCellsWarning):
            many = tok.encode(a, chunk_size=16, n_jobs=jobs)
        np.testing.assert_array_equal(many.tokens, one.tokens)
        np.testing.assert_array_equal(many.offsets, one.offsets)
        np.testing.assert_array_equal(many.obs_index, one.obs_index)
        assert many.report == one.report
    path = tmp_path / "cells.h5ad"
    a.write_h5ad(path)
    with pytest.warns(EmptyCellsWarning):
        store = tok.encode_to_store(path, tmp_path / "store", chunk_size=16, n_jobs=2)
    np.testing.assert_array_equal(store.lengths, one.lengths)
    np.testing.assert_array_equal(store[len(store) - 1], one[len(one) - 1])
    bad = a.copy()
    bad.X.data[bad.X.indptr[200] + 1] = -1.0                      # cell 200, a middle chunk
    for jobs in (1, 2):
        with pytest.raises(TokenizerInputError, match=r"cells 192-208\) contains negative"):
            tok.encode(bad, chunk_size=16, n_jobs=jobs)
    with pytest.raises(ValueError, match="n_jobs must be >= 1"):
        tok.encode(a, n_jobs=0)
