"""The gene-ID and ortholog tables are registered datasets like any other (issue 10 §2b, "a silent download").

They come from the mirror, the cache or one pinned CSV download through ``tflib.datasets.fetch``,
never from a wheel of a third-party package, and every use says which file it read and from where.
No test touches the network: the pooch downloader is replaced.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import tflib.datasets as tds
from tflib.datasets import retrieval
from tflib.tokenize import GeneVocab, load_gencode_table, load_ortholog_table, mouse_to_human

ROOT = Path(__file__).resolve().parents[1]
MIRROR = next((Path(c) for c in (os.environ.get("TFLIB_DATA_MIRROR"), ROOT.parent / "shared" / "data")
               if c and (Path(c) / "Ensembl105_Human2Mouse_Genes.csv").is_file()), None)
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="offline mirror (../shared/data) not found")
TABLES = ("gencode_v44_id2name", "human2mouse_orthologs")


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """An empty cache and a downloader that records every attempt and fails like a machine offline."""
    calls = []

    def downloader(url, output_file, pooch=None):
        calls.append(url)
        raise ConnectionError(f"Failed to resolve host for {url}")

    monkeypatch.setenv("TFLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(retrieval, "DOWNLOADER", downloader)
    return calls


@pytest.mark.parametrize("name", TABLES)
def test_gene_tables_are_single_pinned_files_not_wheel_members(name):
    e = tds.get_entry(name)
    assert e.wheel_member is None and e.wheel_sha256 is None
    assert e.url.startswith("https://raw.githubusercontent.com/Teichlab/celltypist/")
    assert e.url.endswith(f"/celltypist/data/samples/{e.file_name}") and ".whl" not in e.url
    assert "pythonhosted" not in tds.info(name).split("\n\n")[0]
    card = e.card.read_text()
    assert e.url in card and e.sha256 in card and "files.pythonhosted.org" not in card


@needs_mirror
def test_with_the_mirror_the_ortholog_table_makes_no_network_call_and_logs_where_from(
        no_network, monkeypatch, caplog):
    monkeypatch.setenv("TFLIB_DATA_MIRROR", str(MIRROR))
    with caplog.at_level(logging.INFO, logger="tflib.datasets"):
        table = load_ortholog_table()
        human, report = mouse_to_human(["Actb", "Neurog3", "NotAGene"])
    assert no_network == []
    assert list(table.columns) == ["human", "mouse"] and len(table) == 24857
    assert human == ["ACTB", "NEUROG3", None] and report["n_mapped"] == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "tflib.datasets"]
    expected = str(MIRROR / "Ensembl105_Human2Mouse_Genes.csv")
    assert any("'human2mouse_orthologs'" in m and expected in m and "TFLIB_DATA_MIRROR" in m for m in lines), lines
    assert not any(r.levelno >= logging.WARNING for r in caplog.records if r.name == "tflib.datasets")


@pytest.mark.parametrize("load,name", [(load_ortholog_table, "human2mouse_orthologs"),
                                       (load_gencode_table, "gencode_v44_id2name")])
def test_without_mirror_and_network_the_error_says_what_to_set(no_network, monkeypatch, caplog, load, name):
    monkeypatch.delenv("TFLIB_DATA_MIRROR", raising=False)
    entry = tds.get_entry(name)
    with caplog.at_level(logging.INFO, logger="tflib.datasets"), pytest.raises(tds.DatasetUnavailableError) as exc:
        load()
    msg = str(exc.value)
    assert "TFLIB_DATA_MIRROR=/path/to/folder" in msg and f"mirror='/path/to/folder'" in msg
    assert repr(name) in msg and entry.url in msg
    assert no_network == [entry.url]                          # one CSV, from the registry's URL, no wheel
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "tflib.datasets"]
    assert len(warned) == 1 and "Downloading dataset" in warned[0] and entry.url in warned[0]
    assert entry.file_name in warned[0] and "TFLIB_DATA_MIRROR" in warned[0]


@needs_mirror
def test_mouse_tokenization_without_mirror_downloads_only_through_the_registry(tmp_path, monkeypatch, caplog):
    """The first mouse mapping on a fresh machine: one logged CSV download per table, then the cache."""
    calls = []

    def downloader(url, output_file, pooch=None):
        calls.append(url)
        data = (MIRROR / url.rsplit("/", 1)[-1]).read_bytes()
        if hasattr(output_file, "write"):
            output_file.write(data)
        else:
            Path(output_file).write_bytes(data)

    monkeypatch.delenv("TFLIB_DATA_MIRROR", raising=False)
    monkeypatch.setenv("TFLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(retrieval, "DOWNLOADER", downloader)
    v = GeneVocab.from_genes(["ACTB", "SOX2"])
    with caplog.at_level(logging.INFO, logger="tflib.datasets"):
        ids = v.map_genes(["Actb", "Sox2", "Xist"], species="mouse").ids
        again = v.map_genes(["Sox2"], species="mouse").ids
    assert ids.tolist() == [v.token_to_id("ACTB"), v.token_to_id("SOX2"), -1] and again.tolist() == [5]
    assert calls == [tds.get_entry("human2mouse_orthologs").url]  # once; the second call reads the cache
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["Ensembl105_Human2Mouse_Genes.csv"]
    msgs = [r.getMessage() for r in caplog.records if r.name == "tflib.datasets"]
    assert any("from the cache" in m for m in msgs) and sum("Downloading" in m for m in msgs) == 1
