"""tflib.tokenize vocabularies: special tokens, JSON, identifier mapping, coverage, Geneformer pickles."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import anndata as ad
import scipy.sparse as sp
from _tokenize_helpers import ensembl, synthetic_counts
from tflib.tokenize import (GeneMedians, GeneVocab, PickleNotAllowedError, RankValueTokenizer, SPECIAL_TOKENS,
                            VocabularyCoverageError, load_gencode_table)


def test_special_tokens_and_basic_access():
    v = GeneVocab.from_genes(["ENSG00000075624.17", "ENSG00000111640", "ENSG00000075624"])
    assert SPECIAL_TOKENS == ("<pad>", "<mask>", "<cls>", "<eos>")
    assert (v.pad_id, v.mask_id, v.cls_id, v.eos_id) == (0, 1, 2, 3)
    assert len(v) == 6 and v.n_genes == 2 and v.id_type == "ensembl"
    assert v.token_to_id("ENSG00000075624.3") == 4  # version suffix ignored, duplicates removed
    assert v.id_to_token(5) == "ENSG00000111640"
    assert v.decode([2, 4, 3]) == ["<cls>", "ENSG00000075624", "<eos>"]
    with pytest.raises(KeyError, match="not in the vocabulary"):
        v.token_to_id("ENSG99999999999")
    with pytest.raises(ValueError, match="unique"):
        GeneVocab(["<pad>", "<mask>", "<cls>", "<eos>", "A", "A"])


def test_save_load_roundtrip_and_no_overwrite(tmp_path):
    v = GeneVocab.from_genes(["ACTB", "GAPDH", "SOX2"])
    p = v.save(tmp_path / "vocab.json")
    w = GeneVocab.load(p)
    assert w == v and w.fingerprint == v.fingerprint and w.id_type == "symbol"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        v.save(p)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a tflib GeneVocab"):
        GeneVocab.load(tmp_path / "bad.json")


def test_symbol_to_ensembl_and_back_with_gencode():
    table = load_gencode_table()  # through tflib.datasets.fetch (verified mirror file)
    v = GeneVocab.from_genes(table["gene_id"])
    names = ["ACTB", "GAPDH", "NOT_A_GENE"]
    m = v.map_genes(names)
    actb = table.loc[table.symbol == "ACTB", "gene_id"].iloc[0]
    assert m.ids[0] == v.token_to_id(actb) and m.report["steps"] == ["symbol->Ensembl (GENCODE v44)"]
    assert m.ids[2] == -1 and m.report["id_type"] == "symbol" and m.report["species"] == "human"
    vs = GeneVocab.from_genes(["ACTB", "GAPDH"])
    ids = vs.map_genes([actb, "ENSG00000111640.15"]).ids  # GAPDH's ID, with a version suffix
    assert ids.tolist() == [vs.token_to_id("ACTB"), vs.token_to_id("GAPDH")]


def test_mouse_symbols_map_to_human_orthologs():
    v = GeneVocab.from_genes(["ACTB", "SOX2", "NEUROG3", "GAPDH"])
    m = v.map_genes(["Actb", "Sox2", "Neurog3", "Xist"])
    assert m.report["species"] == "mouse"
    assert m.ids[:3].tolist() == [v.token_to_id("ACTB"), v.token_to_id("SOX2"), v.token_to_id("NEUROG3")]
    assert m.ids[3] == -1
    with pytest.raises(ValueError, match="Mouse Ensembl"):
        v.map_genes(["ENSMUSG00000029580"])


def test_coverage_report_threshold_and_override():
    a = synthetic_counts(50, 100)
    v = GeneVocab.from_genes(a.var_names[:80])
    rep = v.coverage(a)
    assert rep.n_genes == 100 and rep.n_genes_covered == 80
    assert rep.gene_fraction == pytest.approx(0.8)
    X = a.X.toarray()
    assert rep.count_fraction == pytest.approx(X[:, :80].sum() / X.sum())
    small = GeneVocab.from_genes(a.var_names[:10])
    with pytest.raises(VocabularyCoverageError, match="check=False"):
        small.coverage(a)
    assert small.coverage(a, check=False).n_genes_covered == 10
    assert small.coverage(a, min_gene_fraction=0.05, min_count_fraction=0.05).gene_fraction == pytest.approx(0.1)

    # The rule is on counts, as in encode: few genes holding most counts pass by default.
    b = a.copy()
    X = b.X.toarray()
    X[:, :10] *= 50
    b.X = sp.csr_matrix(X)
    rep = small.coverage(b)
    assert rep.gene_fraction == pytest.approx(0.1) and rep.count_fraction > 0.5
    with pytest.raises(VocabularyCoverageError, match="min_gene_fraction=20%"):
        small.coverage(b, min_gene_fraction=0.2)                     # the gene rule only when asked for


def test_geneformer_pickles_roundtrip_and_opt_in(tmp_path):
    v = GeneVocab.from_genes([ensembl(i) for i in range(10)])
    med = GeneMedians([ensembl(i) for i in range(10)], np.linspace(0.5, 5, 10))
    tp, mp = v.to_geneformer(tmp_path / "token_dictionary.pkl"), med.to_geneformer(tmp_path / "gene_median.pkl")
    with open(tp, "rb") as f:
        raw = pickle.load(f)
    assert raw["<pad>"] == 0 and raw["<cls>"] == 2 and raw[ensembl(0)] == 4
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        GeneVocab.from_geneformer(tp)
    with pytest.raises(PickleNotAllowedError, match="execute arbitrary code"):
        GeneMedians.from_geneformer(mp)
    assert GeneVocab.from_geneformer(tp, allow_pickle=True) == v
    back = GeneMedians.from_geneformer(mp, allow_pickle=True)
    assert back.genes == med.genes and np.array_equal(back.medians, med.medians)
    # Geneformer writes numpy float64 medians: accepted
    with open(tmp_path / "np.pkl", "wb") as f:
        pickle.dump({ensembl(0): np.float64(1.5)}, f)
    assert GeneMedians.from_geneformer(tmp_path / "np.pkl", allow_pickle=True)[ensembl(0)] == 1.5


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_reader_refuses_code_even_with_opt_in(tmp_path):
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"<pad>": 0, "x": _Evil()}, f)
    with pytest.raises(pickle.UnpicklingError, match="Refusing"):
        GeneVocab.from_geneformer(p, allow_pickle=True)


def test_v1_dictionary_with_v2_preset_is_an_error(tmp_path):
    # Geneformer V1: <pad>=0, <mask>=1, genes from 2 (no <cls>/<eos>)
    d = {"<pad>": 0, "<mask>": 1, **{ensembl(i): i + 2 for i in range(5)}}
    with open(tmp_path / "token_dictionary_v1.pkl", "wb") as f:
        pickle.dump(d, f)
    v1 = GeneVocab.from_geneformer(tmp_path / "token_dictionary_v1.pkl", allow_pickle=True)
    assert v1.cls_id is None and v1.token_to_id(ensembl(0)) == 2
    med = {ensembl(i): 1.0 for i in range(5)}
    with pytest.raises(ValueError, match="V1"):
        RankValueTokenizer(v1, med, preset="V2")
    tok = RankValueTokenizer(v1, med, preset="V1")
    a = ad.AnnData(sp.csr_matrix(np.array([[1, 2, 3, 0, 5]], dtype=np.float32)))
    a.var_names = [ensembl(i) for i in range(5)]
    assert tok.encode(a)[0].tolist() == [6, 4, 3, 2]


def test_geneformer_module_is_a_thin_layer_above_vocab_and_medians(tmp_path):
    """Issue 10 §5: vocab.py and medians.py never import geneformer.py (one direction only)."""
    import ast
    from pathlib import Path

    from tflib.tokenize import geneformer

    pkg = Path(geneformer.__file__).parent

    def imported(name):
        tree = ast.parse((pkg / f"{name}.py").read_text())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    for low in ("vocab", "medians", "genes", "_pickles"):
        assert not {m for m in imported(low) if m.endswith("geneformer")}, f"{low}.py imports geneformer"
    assert {"vocab", "medians"} <= imported("geneformer")
    assert "vocab" not in imported("genes") and "medians" not in imported("vocab")
    v = GeneVocab.from_genes([ensembl(i) for i in range(4)])
    path = geneformer.write_token_dictionary(v, tmp_path / "t.pkl")
    assert geneformer.read_token_dictionary(path, allow_pickle=True) == v
    assert geneformer.PickleNotAllowedError is PickleNotAllowedError


def test_special_token_ids_one_rule_for_tokenizer_or_model():
    from types import SimpleNamespace

    from tflib.tokenize import special_token_ids

    v2 = GeneVocab.from_genes(["ACTB", "GAPDH"])
    v1 = GeneVocab(["<pad>", "<mask>", "ACTB"], special_tokens=("<pad>", "<mask>"))
    tok2, tok1 = SimpleNamespace(vocab=v2), SimpleNamespace(vocab=v1)
    model = SimpleNamespace(config=SimpleNamespace(pad_token_id=7), tokenizer=tok1)
    assert special_token_ids(tok2) == [0, 1, 2, 3]
    assert special_token_ids(tok2, model) == [0, 1, 2, 3]        # the tokenizer passed wins
    assert special_token_ids(None, model) == [0, 1]               # else the model's own tokenizer
    assert special_token_ids(None, SimpleNamespace(config=SimpleNamespace(pad_token_id=7))) == [7]
    with pytest.raises(ValueError, match="tokenizer="):
        special_token_ids(None)


def test_old_import_paths_of_the_gene_tables_still_work():
    from tflib.tokenize import genes, vocab

    assert vocab.load_ortholog_table is genes.load_ortholog_table
    assert vocab.mouse_to_human is genes.mouse_to_human and vocab.strip_version is genes.strip_version
