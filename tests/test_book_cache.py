"""The book's execution cache is dropped when tflib changes (book/_ext/tflib_cache.py)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_extension():
    spec = importlib.util.spec_from_file_location("tflib_cache", ROOT / "book" / "_ext" / "tflib_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ext = _load_extension()


@pytest.fixture
def package(tmp_path):
    pkg = tmp_path / "tflib"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "mod.py").write_text("def f():\n    return 2\n")
    return pkg


def _fill(cache: Path) -> Path:
    """Put a stand-in for a cached notebook into the cache folder."""
    marker = cache / "executed" / "nb.ipynb"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("{}")
    return marker


def test_first_run_creates_cache_folder_and_stamp(package, tmp_path):
    cache = tmp_path / "_build" / ".jupyter_cache"
    assert ext.refresh_cache(package, cache) is True
    stamp = cache / ext.STAMP_NAME
    assert stamp.read_text().strip() == ext.package_digest(package)


def test_unchanged_package_keeps_cache(package, tmp_path):
    cache = tmp_path / "cache"
    ext.refresh_cache(package, cache)
    marker = _fill(cache)
    assert ext.refresh_cache(package, cache) is False
    assert marker.exists()


def test_changed_file_clears_cache(package, tmp_path):
    cache = tmp_path / "cache"
    ext.refresh_cache(package, cache)
    marker = _fill(cache)
    (package / "sub" / "mod.py").write_text("def f():\n    return 3\n")
    assert ext.refresh_cache(package, cache) is True
    assert not marker.exists()
    assert (cache / ext.STAMP_NAME).read_text().strip() == ext.package_digest(package)
    # and it is stable again afterwards
    marker = _fill(cache)
    assert ext.refresh_cache(package, cache) is False
    assert marker.exists()


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_added_removed_or_renamed_file_clears_cache(package, tmp_path, change):
    cache = tmp_path / "cache"
    ext.refresh_cache(package, cache)
    marker = _fill(cache)
    if change == "add":
        (package / "new.py").write_text("")
    elif change == "remove":
        (package / "sub" / "mod.py").unlink()
    else:
        (package / "sub" / "mod.py").rename(package / "sub" / "other.py")
    assert ext.refresh_cache(package, cache) is True
    assert not marker.exists()


def test_bytecode_and_pycache_are_ignored(package, tmp_path):
    cache = tmp_path / "cache"
    ext.refresh_cache(package, cache)
    marker = _fill(cache)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00\x01")
    (package / "stray.pyc").write_bytes(b"\x02")
    assert ext.refresh_cache(package, cache) is False
    assert marker.exists()


def test_existing_cache_without_stamp_is_cleared(package, tmp_path):
    """A cache made before this extension existed cannot be trusted."""
    cache = tmp_path / "cache"
    marker = _fill(cache)
    assert ext.refresh_cache(package, cache) is True
    assert not marker.exists()


def test_digest_depends_on_paths_and_contents(package):
    before = ext.package_digest(package)
    assert before == ext.package_digest(package)
    (package / "__init__.py").write_text("x = 1\n\n")
    assert ext.package_digest(package) != before


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tflib_cache_package"):
        ext.package_digest(tmp_path / "nope")


def test_real_tflib_digest_is_computable():
    assert len(ext.package_digest(ROOT / "tflib")) == 64
