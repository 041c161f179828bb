"""The on-disk token store: ragged int32 token ids + offsets + lengths + obs metadata.

Layout of a store folder (all little-endian; read with memory maps, so opening is instant and
reading a cell touches only its bytes)::

    tokens.bin     int32, all cells' token ids back to back
    values.bin     int16, the bin of every token (binning tokenizer only)
    offsets.npy    int64, n_cells + 1: cell i is tokens[offsets[i]:offsets[i+1]]
    lengths.npy    int32, n_cells
    obs_index.npy  int64, each cell's row in the source (skipped empty cells leave gaps)
    obs.h5         the carried obs columns (an AnnData-encoded DataFrame): one row per
                   stored cell, or, when store.json says "obs_rows": "source", the source
                   file's whole obs group copied as stored (encode_to_store from a plain
                   .h5ad), of which TokenStore.obs returns the rows in obs_index
    store.json     format, counts, the tokenizer's config() and the tokenizing report

Chapters 04 (writing) and 06 (training reads it through :class:`TokenStore`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "tflib.TokenStore"


#: Every file a token store folder holds (its own or an unfinished ``.partial`` one).
_STORE_FILES = {"tokens.bin", "values.bin", "offsets.npy", "lengths.npy", "obs_index.npy", "obs.h5", "store.json"}


def _is_store_folder(path: Path, *, complete: bool) -> bool:
    """True for a folder of token-store files only (with a ``store.json`` of this format when complete)."""
    if not path.is_dir() or any(p.name not in _STORE_FILES for p in path.iterdir()):
        return False
    if not complete:
        return True
    try:
        return json.loads((path / "store.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


class TokenStoreWriter:
    """Append chunks to a new store; the folder appears under its name only when complete.

    Writes go to ``<path>.partial``; ``close()`` (or leaving the ``with`` block without an
    error) renames it. An existing ``path`` is replaced only with ``overwrite=True``.
    ``obs_source``, the obs table of all source rows, can replace ``append(obs=...)``: the rows
    of the kept cells (``obs_index``) are then taken from it once, at ``close()``. ``obs_h5``, an
    open :class:`~tflib.tokenize._h5csr.H5adCSR`, does the same without reading the table: its
    ``obs`` group is copied as stored.
    """

    def __init__(self, path, config: dict, with_values: bool = False, overwrite: bool = False,
                 obs_source: pd.DataFrame | None = None, obs_h5=None):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it, or choose another path.")
        if self.path.exists() and not _is_store_folder(self.path, complete=True):
            raise FileExistsError(f"{self.path} exists and is not a token store that tflib wrote, so it is never "
                                  "replaced, even with overwrite=True; choose another path.")
        self.tmp = self.path.with_name(self.path.name + ".partial")
        if self.tmp.exists():
            if not _is_store_folder(self.tmp, complete=False):
                raise FileExistsError(f"{self.tmp} exists and holds files tflib did not write; move it away or "
                                      "choose another path.")
            shutil.rmtree(self.tmp)                      # an unfinished write of ours
        self.tmp.mkdir(parents=True)
        self.config = dict(config)
        self.report: dict = {}
        self.overwrite = overwrite
        self._tok = open(self.tmp / "tokens.bin", "wb")
        self._val = open(self.tmp / "values.bin", "wb") if with_values else None
        self._lengths: list[np.ndarray] = []
        self._obs_index: list[np.ndarray] = []
        self._obs: list[pd.DataFrame] = []
        self._obs_source = obs_source
        self._obs_h5 = obs_h5
        self._n_tokens = 0

    def append(self, tokens, offsets, values=None, obs: pd.DataFrame | None = None, obs_index=None) -> None:
        tokens = np.ascontiguousarray(tokens, dtype="<i4")
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets[0] != 0 or offsets[-1] != tokens.size:
            raise ValueError("offsets must start at 0 and end at len(tokens).")
        self._tok.write(tokens)  # the array's buffer, without a bytes copy
        if self._val is not None:
            if values is None:
                raise ValueError("This store holds values; pass values= for every chunk.")
            self._val.write(np.ascontiguousarray(values, dtype="<i2"))
        self._lengths.append(np.diff(offsets).astype(np.int32))
        n = len(offsets) - 1
        self._obs_index.append(np.arange(n) if obs_index is None else np.asarray(obs_index, np.int64))
        if obs is not None:
            self._obs.append(obs)
        self._n_tokens += tokens.size

    def close(self) -> None:
        self._tok.close()
        if self._val is not None:
            self._val.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.tmp / "offsets.npy", offsets)
        np.save(self.tmp / "lengths.npy", lengths)
        obs_index = np.concatenate(self._obs_index) if self._obs_index else np.zeros(0, np.int64)
        np.save(self.tmp / "obs_index.npy", obs_index)
        obs_rows = "cells"
        if self._obs:
            import pandas as pd

            _write_obs(self.tmp / "obs.h5", pd.concat(self._obs))
        elif self._obs_h5 is not None:  # the source file's obs group, all rows, copied as stored
            import h5py

            with h5py.File(self.tmp / "obs.h5", "w") as f:
                self._obs_h5.copy_obs(f, "obs")
            obs_rows = "source"
        elif self._obs_source is not None:
            _write_obs(self.tmp / "obs.h5", self._obs_source.iloc[obs_index])
        else:
            import pandas as pd

            _write_obs(self.tmp / "obs.h5", pd.DataFrame(index=pd.RangeIndex(lengths.size).astype(str)))
        meta = {"format": FORMAT, "version": 1, "n_cells": int(lengths.size), "n_tokens": int(self._n_tokens),
                "has_values": self._val is not None, "obs_rows": obs_rows, "config": self.config,
                "report": _jsonable(self.report)}
        (self.tmp / "store.json").write_text(json.dumps(meta, indent=1))
        if self.path.exists():  # overwrite=True was checked in __init__; check the contents again now
            if not _is_store_folder(self.path, complete=True):
                raise FileExistsError(f"{self.path} no longer holds only a token store (a file was added while "
                                      "writing); it is left alone and the new store stays at "
                                      f"{self.tmp}. Move one of them and retry.")
            shutil.rmtree(self.path)
        self.tmp.rename(self.path)

    def abort(self) -> None:
        self._tok.close()
        if self._val is not None:
            self._val.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _write_obs(path, obs: pd.DataFrame) -> None:
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    obs = obs.copy()
    obs.index = obs.index.astype(str)
    for c in obs.columns:  # anndata refuses nullable strings: store them as categories
        if pd.api.types.is_string_dtype(obs[c]) and not isinstance(obs[c].dtype, pd.CategoricalDtype):
            obs[c] = obs[c].astype(str).astype("category")
    with h5py.File(path, "w") as f:
        write_elem(f, "obs", obs)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


class TokenStore:
    """Read-only view of a token store (for training: chapter 06).

    >>> store = TokenStore.open("corpus.tokens")           # doctest: +SKIP
    >>> len(store), store[0][:5], store.lengths[:3]        # doctest: +SKIP
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        self.config: dict = meta["config"]
        self.report: dict = meta.get("report", {})
        self.offsets = np.load(path / "offsets.npy")
        self.lengths = np.load(path / "lengths.npy")
        self.obs_index = np.load(path / "obs_index.npy")
        n_tok = int(meta["n_tokens"])
        self.tokens = (np.memmap(path / "tokens.bin", dtype="<i4", mode="r", shape=(n_tok,)) if n_tok
                       else np.zeros(0, np.int32))
        self.values = None
        if meta.get("has_values"):
            self.values = (np.memmap(path / "values.bin", dtype="<i2", mode="r", shape=(n_tok,)) if n_tok
                           else np.zeros(0, np.int16))
        self._obs = None

    @classmethod
    def open(cls, path) -> "TokenStore":
        path = Path(path)
        meta_file = path / "store.json"
        if not meta_file.exists():
            partial = path.with_name(path.name + ".partial")
            hint = f" An unfinished write left {partial}." if partial.exists() else ""
            raise FileNotFoundError(f"{path} is not a token store (no store.json).{hint} Write one with "
                                    "tokenizer.encode_to_store(...) or tflib.pp.tokenize(..., store=path).")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file} has format {meta.get('format')!r}, expected {FORMAT!r}.")
        return cls(path, meta)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"cell {i} out of range for a store of {len(self)} cells")
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]], dtype=np.int32)

    def values_of(self, i: int) -> np.ndarray:
        if self.values is None:
            raise AttributeError("This store has no values (only the binning tokenizer writes them).")
        return np.asarray(self.values[self.offsets[i]:self.offsets[i + 1]], dtype=np.int16)

    @property
    def obs(self) -> pd.DataFrame:
        if self._obs is None:
            import h5py
            from anndata.io import read_elem

            with h5py.File(self.path / "obs.h5", "r") as f:
                obs = read_elem(f["obs"])
            if self.meta.get("obs_rows") == "source":  # every source row was copied: keep the stored cells'
                obs = obs.iloc[self.obs_index]
                obs.index = obs.index.astype(str)
            self._obs = obs
        return self._obs

    def check_compatible(self, tokenizer) -> None:
        """Raise :class:`~tflib.tokenize.TokenizerMismatchError` if ``tokenizer`` differs from the one
        that wrote this store (preset, vocabulary, medians, length)."""
        tokenizer.check_compatible(self.config, what=f"The tokens in {self.path}")

    def __repr__(self) -> str:
        return (f"TokenStore({str(self.path)!r}: {len(self):,} cells, {int(self.meta['n_tokens']):,} tokens, "
                f"{self.config.get('kind')} {self.config.get('preset')})")
