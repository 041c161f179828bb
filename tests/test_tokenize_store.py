"""The on-disk token store and the tflib.pp tokenize verbs."""
from __future__ import annotations

import numpy as np
import pytest

import anndata as ad
from _tokenize_helpers import synthetic_counts
from tflib.tokenize import (BinningTokenizer, GeneVocab, RankValueTokenizer, TokenizerMismatchError, TokenStore,
                            TokenStoreWriter, gene_medians)
import tflib.pp as pp


def _rank(a, preset="V2"):
    vocab = GeneVocab.from_genes(a.var_names)
    return RankValueTokenizer(vocab, gene_medians(a, vocab=vocab), preset=preset)


def test_writer_reader_roundtrip_and_safety(tmp_path):
    path = tmp_path / "s"
    with TokenStoreWriter(path, config={"kind": "x"}, with_values=True) as w:
        w.append(np.array([5, 6, 7]), np.array([0, 2, 3]), values=np.array([1, 2, 3]))
        w.append(np.array([8]), np.array([0, 1]), values=np.array([4]))
    s = TokenStore.open(path)
    assert len(s) == 3 and s.lengths.tolist() == [2, 1, 1]
    assert s[0].tolist() == [5, 6] and s[-1].tolist() == [8] and s.values_of(2).tolist() == [4]
    with pytest.raises(IndexError):
        s[3]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        TokenStoreWriter(path, config={})
    # an error inside the block leaves the old store untouched and no partial folder behind
    with pytest.raises(RuntimeError):
        with TokenStoreWriter(path, config={"kind": "y"}, overwrite=True) as w:
            w.append(np.array([1]), np.array([0, 1]))
            raise RuntimeError("boom")
    assert TokenStore.open(path).config == {"kind": "x"}
    assert not (tmp_path / "s.partial").exists()
    with pytest.raises(FileNotFoundError, match="not a token store"):
        TokenStore.open(tmp_path / "nothing")


def test_pp_tokenize_writes_documented_keys_and_checks(tmp_path):
    a = synthetic_counts(60, 80, empty=(2,))
    tok = _rank(a)
    pp.tokenize(a, tok)
    assert a.obsm["tokens"].dtype == np.int32 and a.obsm["tokens"].shape[0] == 60
    assert a.obs["tokens_length"].iloc[2] == 0 and (a.obsm["tokens"][2] == tok.vocab.pad_id).all()
    cells = tok.encode(a)
    row = a.obsm["tokens"][0][: a.obs["tokens_length"].iloc[0]]
    np.testing.assert_array_equal(row, cells[0])
    cfg = a.uns["tokens"]["config"]
    assert cfg["preset"] == "V2" and cfg["vocab_size"] == len(tok.vocab) and cfg["kind"] == "rank_value"
    assert a.uns["tokens"]["report"]["n_cells_skipped_empty"] == 1
    pp.check_tokenizer(a, tok)
    with pytest.raises(TokenizerMismatchError, match="preset"):
        pp.check_tokenizer(a, RankValueTokenizer(tok.vocab, tok.gene_medians, preset="V1"))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        pp.tokenize(a, tok)
    a.write_h5ad(tmp_path / "t.h5ad")  # the recorded config survives h5ad
    b = ad.read_h5ad(tmp_path / "t.h5ad")
    pp.check_tokenizer(b, tok)


def test_pp_tokenize_binning_values_and_store(tmp_path):
    a = synthetic_counts(40, 60)
    tok = BinningTokenizer(GeneVocab.from_genes(a.var_names), seed=2)
    pp.tokenize(a, tok, key_added="bins")
    assert a.obsm["bins_values"].shape == a.obsm["bins"].shape
    assert a.uns["bins"]["config"]["n_bins"] == 51 and a.uns["bins"]["config"]["seed"] == 2
    b = synthetic_counts(40, 60)
    pp.tokenize(b, tok, key_added="bins", store=tmp_path / "store")
    assert "bins" not in b.obsm and b.uns["bins"]["store"].endswith("store")
    s = TokenStore.open(tmp_path / "store")
    np.testing.assert_array_equal(s.values_of(0), a.obsm["bins_values"][0][: s.lengths[0]])
    s.check_compatible(tok)
    with pytest.raises(TokenizerMismatchError, match="seed|n_bins"):
        s.check_compatible(BinningTokenizer(tok.vocab, n_bins=11))


def test_overwrite_never_replaces_a_folder_that_is_not_a_token_store(tmp_path):
    """Section 1 of issue 10: overwrite=True replaces a token store, never a user's folder."""
    a = synthetic_counts(20, 30)
    tok = RankValueTokenizer(GeneVocab.from_genes(a.var_names), gene_medians(a), preset="V2")
    users = tmp_path / "my_results"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a token store"):
        tok.encode_to_store(a, users, overwrite=True)
    assert (users / "notes.txt").read_text() == "keep me"
    partial = tmp_path / "store.partial"
    partial.mkdir()
    (partial / "mine.csv").write_text("x")
    with pytest.raises(FileExistsError, match="tflib did not write"):
        tok.encode_to_store(a, tmp_path / "store")
    assert (partial / "mine.csv").exists()
    tok.encode_to_store(a, tmp_path / "real")
    tok.encode_to_store(a, tmp_path / "real", overwrite=True)       # its own store: replaced


def test_a_file_added_to_the_old_store_while_writing_is_never_deleted(tmp_path):
    """overwrite=True is re-checked when the new store is moved in: a user's file stops the swap."""
    from tflib.tokenize.store import TokenStoreWriter

    a = synthetic_counts(20, 30)
    tok = RankValueTokenizer(GeneVocab.from_genes(a.var_names), gene_medians(a), preset="V2")
    path = tmp_path / "real"
    tok.encode_to_store(a, path)
    writer = TokenStoreWriter(path, {}, overwrite=True)                 # the old store passes the first check
    (path / "mine.txt").write_text("keep me")                          # ... then a user's file arrives
    with pytest.raises(FileExistsError, match="no longer holds only a token store"):
        writer.close()
    assert (path / "mine.txt").read_text() == "keep me"
    assert (path / "store.json").is_file()                             # the old store is intact too
