"""Sphinx extension: drop the notebook execution cache when ``tflib`` changes.

jupyter-cache (used by MyST-NB with ``execute_notebooks: cache``) keys a cached notebook on
its code cells only. The course notebooks import ``tflib``, so a fix in the library would
otherwise leave stale outputs in the book. This extension closes that gap (teaching
checklist item 4):

1. on ``config-inited`` it hashes every source file under ``tflib/`` (sorted relative paths
   and file contents, SHA-256; ``__pycache__`` and compiled files are ignored);
2. it compares the digest with the stamp file ``tflib.sha256`` kept inside the jupyter
   cache folder (``_build/.jupyter_cache`` by default);
3. when they differ, or no stamp exists yet, it deletes the cache folder and writes the
   new stamp; the notebooks are then executed afresh;
4. on ``env-get-outdated`` it asks Sphinx to re-read every document after a reset, because
   an incremental build would otherwise reuse pages whose source did not change.

Register it in ``_config.yml``::

    sphinx:
      local_extensions:
        tflib_cache: book/_ext

Config values: ``tflib_cache_package`` (folder to hash, default ``<confdir>/tflib``).
The logic lives in :func:`refresh_cache`, which ``tests/test_book_cache.py`` checks.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

STAMP_NAME = "tflib.sha256"
_IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
_IGNORED_SUFFIXES = {".pyc", ".pyo", ".swp"}


def package_digest(package_dir: str | Path) -> str:
    """SHA-256 over the sorted relative paths and contents of every file in ``package_dir``.

    Byte-compiled files and editor/cache folders are skipped, since importing the package
    rewrites them without any change to the code.
    """
    root = Path(package_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"tflib_cache: package folder {root} does not exist; set `tflib_cache_package` "
            "in _config.yml (sphinx: config:) to the folder whose changes should reset the cache."
        )
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file()
        and not _IGNORED_DIRS.intersection(p.relative_to(root).parts)
        and p.suffix not in _IGNORED_SUFFIXES
    )
    digest = hashlib.sha256()
    for path in files:
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        # length-prefix both parts so that moving bytes between a name and a body changes the hash
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def refresh_cache(package_dir: str | Path, cache_dir: str | Path) -> bool:
    """Clear ``cache_dir`` if ``package_dir`` changed since the stamp was written.

    Returns ``True`` when the cache was cleared (or started from nothing), ``False`` when the
    stamp matched and the cache was kept. Afterwards ``cache_dir`` exists and holds the
    current stamp.
    """
    cache = Path(cache_dir)
    stamp = cache / STAMP_NAME
    current = package_digest(package_dir)
    if stamp.is_file() and stamp.read_text().strip() == current:
        return False
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return True


def _cache_dir(app) -> Path:
    """The folder MyST-NB will use, resolved the same way MyST-NB resolves it."""
    configured = app.config["nb_execution_cache_path"] if "nb_execution_cache_path" in app.config else ""
    if configured:
        return Path(configured).resolve()
    return Path(app.outdir).parent.joinpath(".jupyter_cache").resolve()


def _on_config_inited(app, config) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    mode = config["nb_execution_mode"] if "nb_execution_mode" in config else None
    if mode != "cache":  # only the cached mode keeps outputs between builds
        app.tflib_cache_reset = False
        return
    package = Path(config.tflib_cache_package or Path(app.confdir) / "tflib")
    if not package.is_absolute():
        package = Path(app.confdir) / package
    cache = _cache_dir(app)
    app.tflib_cache_reset = refresh_cache(package, cache)
    if app.tflib_cache_reset:
        logger.info("tflib_cache: %s changed (or no stamp yet); cleared %s", package, cache)
    else:
        logger.info("tflib_cache: %s unchanged; keeping %s", package, cache)


def _on_env_get_outdated(app, env, added, changed, removed):
    """After a reset, re-read every document so that notebooks are executed again."""
    if getattr(app, "tflib_cache_reset", False) and not getattr(app, "_tflib_cache_reread", False):
        app._tflib_cache_reread = True
        return sorted(set(env.found_docs) - set(removed))
    return []


def setup(app):
    app.add_config_value("tflib_cache_package", "", "env", [str])
    # after MyST-NB has registered its config values, before it opens the cache
    app.connect("config-inited", _on_config_inited, priority=400)
    app.connect("env-get-outdated", _on_env_get_outdated)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
