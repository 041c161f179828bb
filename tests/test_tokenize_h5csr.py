"""The fast paths of the tokenizers: the direct HDF5 reader of backed CSR files (tflib.tokenize._h5csr),
the per-column keys of the rank-value tokenizer and the store's obs taken at close. Every test compares
with the in-memory path or the per-cell oracle, at chunk sizes that cut through the data anywhere."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import anndata as ad
from _tokenize_helpers import synthetic_counts
from tflib.tokenize import (BinningTokenizer, GeneVocab, RankValueTokenizer, TokenStore, TokenStoreWriter,
                            gene_medians)
from tflib.tokenize._core import assemble, iter_csr_chunks
from tflib.tokenize._h5csr import backed_csr_group, iter_h5_csr
from tflib.tokenize.rank import (_INVERT, _LOW, _SMALLEST_NORMAL, rank_order, sorted_framed, sorted_tokens,
                                 value_key)
from tflib.tokenize.reference import binning_reference, rank_value_reference


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory):
    """Counts with empty cells (first, middle, last) written as a CSR .h5ad; the in-memory AnnData too."""
    a = synthetic_counts(150, 300, density=0.2, seed=3, empty=(0, 41, 42, 149))
    path = tmp_path_factory.mktemp("h5csr") / "counts.h5ad"
    a.write_h5ad(path)
    return path, a


def _rank(a, preset="V2", max_len=None, all_columns=True):
    vocab = GeneVocab.from_genes(np.random.default_rng(0).permutation(np.asarray(a.var_names)))
    med = gene_medians(a, vocab=vocab)
    if not all_columns:  # drop some medians: those columns are not tokenized (the projection path)
        keep = np.arange(len(med.genes)) % 5 != 0
        med = type(med)(np.asarray(med.genes)[keep], med.medians[keep])
    return RankValueTokenizer(vocab, med, preset=preset, max_len=max_len)


def test_backed_csr_group_only_for_whole_backed_csr(h5ad):
    path, a = h5ad
    backed = ad.read_h5ad(path, backed="r")
    assert backed_csr_group(backed) is not None
    assert backed_csr_group(backed[10:20]) is None          # a view: its rows are a subset
    assert backed_csr_group(backed, layer="counts") is None  # layers are read by AnnData
    assert backed_csr_group(a) is None                      # in memory


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 150, 1000])
@pytest.mark.parametrize("prefetch", [True, False])
def test_h5_reader_gives_the_same_rows_as_anndata(h5ad, chunk_size, prefetch):
    path, a = h5ad
    backed = ad.read_h5ad(path, backed="r")
    chunks = list(iter_h5_csr(backed_csr_group(backed), backed.shape, chunk_size, prefetch=prefetch))
    assert [c[:2] for c in chunks] == [(s, min(s + chunk_size, a.n_obs)) for s in range(0, a.n_obs, chunk_size)]
    got = sp.vstack([c[2] for c in chunks]).tocsr()
    assert got.dtype == a.X.dtype and (got != a.X).nnz == 0
    np.testing.assert_array_equal(got.indptr, a.X.indptr)


def test_iter_csr_chunks_uses_the_reader_for_backed_files(h5ad):
    path, a = h5ad
    backed = ad.read_h5ad(path, backed="r")
    for (s1, e1, c1), (s2, e2, c2) in zip(iter_csr_chunks(backed, chunk_size=33), iter_csr_chunks(a, chunk_size=33)):
        assert (s1, e1) == (s2, e2) and (c1 != c2).nnz == 0


def test_h5_reader_rejects_a_damaged_indptr(tmp_path, h5ad):
    import h5py

    path, _ = h5ad
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(path.read_bytes())
    with h5py.File(bad, "r+") as f:
        ip = f["X/indptr"][:]
        ip[60] = ip[59] - 1  # rows must not end before they start
        f["X/indptr"][...] = ip
    backed = ad.read_h5ad(bad, backed="r")
    with pytest.raises(ValueError, match="damaged"):
        list(iter_h5_csr(backed_csr_group(backed), backed.shape, 50))


@pytest.mark.parametrize("preset,max_len", [("V1", None), ("V2", None), ("V2", 20)])
@pytest.mark.parametrize("all_columns", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 41, 256])
def test_rank_backed_equals_in_memory_and_oracle(h5ad, preset, max_len, all_columns, chunk_size):
    path, a = h5ad
    tok = _rank(a, preset, max_len, all_columns)
    mem = tok.encode(a, chunk_size=chunk_size)
    backed = tok.encode(path, chunk_size=chunk_size)
    np.testing.assert_array_equal(backed.tokens, mem.tokens)
    np.testing.assert_array_equal(backed.offsets, mem.offsets)
    np.testing.assert_array_equal(backed.obs_index, mem.obs_index)
    assert mem.report["n_cells_skipped_empty"] == 4 and backed.report == mem.report
    ref, kept = rank_value_reference(tok, a)
    np.testing.assert_array_equal(mem.obs_index, kept)
    assert all(np.array_equal(mem[i], r) for i, r in enumerate(ref))


def test_rank_store_from_backed_file_equals_encode(tmp_path, h5ad):
    path, a = h5ad
    tok = _rank(a)
    store = tok.encode_to_store(path, tmp_path / "s.tokens", chunk_size=17)
    mem = tok.encode(a, chunk_size=1000)
    np.testing.assert_array_equal(np.asarray(store.tokens), mem.tokens)
    np.testing.assert_array_equal(store.offsets, mem.offsets)
    np.testing.assert_array_equal(store.obs_index, mem.obs_index)
    assert list(store.obs.index) == list(a.obs_names[mem.obs_index])
    assert list(store.obs["group"]) == list(a.obs["group"].iloc[mem.obs_index])


@pytest.mark.parametrize("chunk_size", [1, 50, 256])
def test_binning_backed_equals_in_memory_and_oracle(h5ad, chunk_size):
    path, a = h5ad
    vocab = GeneVocab.from_genes(np.asarray(a.var_names)[::-1])
    tok = BinningTokenizer(vocab, n_bins=11, seed=4, max_len=30)
    mem, backed = tok.encode(a, chunk_size=chunk_size), tok.encode(path, chunk_size=chunk_size)
    np.testing.assert_array_equal(backed.tokens, mem.tokens)
    np.testing.assert_array_equal(backed.values, mem.values)
    toks, bins, kept = binning_reference(tok, a)
    np.testing.assert_array_equal(mem.obs_index, kept)
    assert all(np.array_equal(mem[i], t) and np.array_equal(mem.values_of(i), b)
               for i, (t, b) in enumerate(zip(toks, bins)))


def test_ties_by_ascending_token_id_on_the_direct_path():
    """Equal counts and equal medians: the genes tie and come in vocabulary order."""
    X = sp.csr_matrix(np.array([[3, 3, 3, 5, 0, 3], [1, 0, 1, 1, 1, 0]], dtype=np.float32))
    a = ad.AnnData(X)
    a.var_names = [f"ENSG{i:011d}" for i in range(6)]
    vocab = GeneVocab.from_genes(np.asarray(a.var_names)[[4, 2, 5, 0, 3, 1]])
    tok = RankValueTokenizer(vocab, {g: 1.0 for g in a.var_names}, preset="V1")
    cells = tok.encode(a)
    ids = [vocab.token_to_id(g) for g in a.var_names]
    assert cells[0].tolist() == [ids[3]] + sorted([ids[0], ids[1], ids[2], ids[5]])
    assert cells[1].tolist() == sorted([ids[0], ids[2], ids[3], ids[4]])
    ref, _ = rank_value_reference(tok, a)
    assert [c.tolist() for c in cells] == ref


@pytest.mark.parametrize("scale", [1.0, 1e-310])
def test_rank_order_follows_the_tie_rule_also_for_subnormal_values(scale):
    """Tiny (subnormal) values are sorted as integers, not floats; both orders follow the rule."""
    rng = np.random.default_rng(1)
    indptr = np.array([0, 50, 50, 130])
    value = rng.integers(1, 6, indptr[-1]).astype(np.float64) * scale
    tok = rng.permutation(1000)[:indptr[-1]]
    if scale < 1:
        assert value.min() < _SMALLEST_NORMAL
    got = rank_order(indptr, tok, value, 1000)
    rows = np.repeat(np.arange(3), np.diff(indptr))
    expected = tok[np.lexsort((tok, value_key(value), rows))]
    np.testing.assert_array_equal(got, expected)



@pytest.mark.parametrize("lengths", [[0, 3, 0, 5000, 2, 1, 0, 4, 7, 3, 0], [2000, 3000, 4000, 2500], [0, 0], []])
@pytest.mark.parametrize("reuse", [False, True])
def test_padded_table_sort_equals_a_sort_per_cell(lengths, reuse):
    """The loop-free segmented sort (padded table, blocks split around outlier rows) = one sort per cell."""
    rng = np.random.default_rng(2)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    value = rng.integers(1, 9, indptr[-1]) / 3.0
    tok = rng.permutation(1 << 20)[:indptr[-1]]
    scratch = {"table": np.empty(3, dtype=np.int64)} if reuse else None
    rows = np.repeat(np.arange(len(lengths)), lengths)
    expected = tok[np.lexsort((tok, value_key(value), rows))]
    for _ in range(2):  # twice: the second call reuses the grown scratch table
        np.testing.assert_array_equal(rank_order(indptr, tok, value, 1 << 20), expected)
        key = value.view(np.int64) & ~_LOW
        key ^= _INVERT | tok
        np.testing.assert_array_equal(sorted_tokens(key, indptr, as_float=True, scratch=scratch), expected)

@pytest.mark.parametrize("lengths", [[0, 3, 0, 5000, 2, 1, 0, 4, 7, 3, 0], [2000, 3000, 4000, 2500], [0, 0], []])
@pytest.mark.parametrize("max_genes", [1, 3, 2500, 4094])
@pytest.mark.parametrize("special", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("as_float", [True, False])
def test_fused_sort_and_framing_equals_sorted_tokens_then_assemble(lengths, max_genes, special, as_float):
    """sorted_framed (the rank tokenizer's fused path) = sorted_tokens followed by assemble."""
    rng = np.random.default_rng(4)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    value = rng.integers(1, 9, indptr[-1]) / 3.0
    tok = rng.permutation(1 << 20)[:indptr[-1]]
    key = value.view(np.int64) & ~_LOW
    key ^= _INVERT | tok
    add_cls, add_eos = special
    want, want_rep = assemble(sorted_tokens(key.copy(), indptr, as_float), indptr, max_genes, add_cls, add_eos, 2, 3)
    scratch = {"table": np.empty(3, dtype=np.int64)}
    for _ in range(2):  # twice: the second call reuses the grown scratch table
        got, rep = sorted_framed(key.copy(), indptr, max_genes, add_cls, add_eos, 2, 3 if add_eos else None,
                                 as_float, scratch)
        assert rep == want_rep and got.tokens.dtype == np.int32 and got.values is None
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.offsets, want.offsets)
        np.testing.assert_array_equal(got.obs_index, want.obs_index)


def test_writer_takes_obs_rows_at_close(tmp_path):
    import pandas as pd

    obs = pd.DataFrame({"x": np.arange(5) * 10}, index=[f"c{i}" for i in range(5)])
    with TokenStoreWriter(tmp_path / "w.tokens", config={}, obs_source=obs) as w:
        w.append(np.array([1, 2, 3], np.int32), np.array([0, 2, 3]), obs_index=np.array([0, 3]))
        w.append(np.array([4], np.int32), np.array([0, 1]), obs_index=np.array([4]))
    s = TokenStore.open(tmp_path / "w.tokens")
    assert list(s.obs.index) == ["c0", "c3", "c4"] and list(s.obs["x"]) == [0, 30, 40]
    np.testing.assert_array_equal(s.obs_index, [0, 3, 4])


@pytest.mark.parametrize("seed", range(6))
def test_row_blocks_partition_rows_and_isolate_long_cells(seed):
    """The padded-table blocks cover every row once, in order; a cell far above its neighbours
    (longer than the V2 limit, as real data has) gets a block of its own instead of widening all."""
    from tflib.tokenize.rank import _row_blocks

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2000, 4001, 256)
    long_rows = rng.choice(256, seed % 3, replace=False)
    lengths[long_rows] = 6000
    blocks = sorted(_row_blocks(lengths))
    assert blocks[0][0] == 0 and blocks[-1][1] == 256
    assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))
    for r in long_rows:
        assert (int(r), int(r) + 1) in blocks
    if not long_rows.size:
        assert blocks == [(0, 256)]


def test_store_from_a_plain_h5ad_needs_no_anndata_and_equals_the_anndata_path(tmp_path):
    """encode_to_store(path) reads a plain .h5ad with h5py alone (anndata's import is a large part of a
    short script's time, issue 10 §6) and gives the same tokens and obs as the AnnData route."""
    import subprocess
    import sys

    a = synthetic_counts(150, 90, empty=(3, 77))
    a.obs["label"] = pd.Categorical(np.where(np.arange(150) % 3, "x", "y"))
    a.obs["depth"] = np.arange(150, dtype=float)
    path = tmp_path / "plain.h5ad"
    a.write_h5ad(path)
    tok = RankValueTokenizer(GeneVocab.from_genes(a.var_names[::-1]), gene_medians(a), preset="V2")
    tok.save_pretrained(tmp_path / "tok")
    code = (f"import sys, warnings; warnings.simplefilter('ignore')\n"
            f"from tflib.tokenize import load_tokenizer\n"
            f"load_tokenizer({str(tmp_path / 'tok')!r}).encode_to_store({str(path)!r}, {str(tmp_path / 'light')!r},"
            f" chunk_size=40)\n"
            f"print('anndata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
    light = TokenStore.open(tmp_path / "light")
    assert light.meta["obs_rows"] == "source"
    with pytest.warns(UserWarning, match="2 of 150 cells"):
        heavy = tok.encode_to_store(a, tmp_path / "heavy", chunk_size=40)   # in memory: through AnnData
    np.testing.assert_array_equal(np.asarray(light.tokens), np.asarray(heavy.tokens))
    np.testing.assert_array_equal(light.offsets, heavy.offsets)
    np.testing.assert_array_equal(light.obs_index, heavy.obs_index)
    assert list(light.obs.index) == list(heavy.obs.index) == [f"cell{i}" for i in light.obs_index]
    for c in ("label", "depth", "group"):
        assert list(light.obs[c].astype(str)) == list(heavy.obs[c].astype(str))
    # layer=, gene_key= or obs_keys= take the AnnData route, same tokens
    with pytest.warns(UserWarning, match="2 of 150 cells"):
        keyed = tok.encode_to_store(path, tmp_path / "keyed", obs_keys=["label"], chunk_size=40)
    assert keyed.meta["obs_rows"] == "cells" and list(keyed.obs.columns) == ["label"]
    np.testing.assert_array_equal(np.asarray(keyed.tokens), np.asarray(light.tokens))


def test_light_h5ad_reader_refuses_what_it_cannot_read(tmp_path):
    from tflib.tokenize._h5csr import open_h5ad_csr

    a = synthetic_counts(20, 30)
    a.X = a.X.toarray()                                   # dense X: AnnData's route
    a.write_h5ad(tmp_path / "dense.h5ad")
    assert open_h5ad_csr(tmp_path / "dense.h5ad") is None
    (tmp_path / "junk.h5ad").write_bytes(b"not hdf5")
    assert open_h5ad_csr(tmp_path / "junk.h5ad") is None
    b = synthetic_counts(20, 30)
    b.write_h5ad(tmp_path / "csr.h5ad")
    src = open_h5ad_csr(tmp_path / "csr.h5ad")
    try:
        assert src.shape == (20, 30) and list(src.var_names) == list(b.var_names)
    finally:
        src.close()
