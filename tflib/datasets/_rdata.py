"""A small converter from parsed R data files (``.rda``) to Python objects.

The ``rdata`` package parses R's serialisation format into a tree of ``RObject`` nodes.
Its own high-level conversion stops at S4 classes it does not know (a Seurat object holds
dozens of them), so the course walks the parsed tree itself. Only the R types that
single-cell data files actually use are handled:

* atomic vectors (logical, integer, double, character) become NumPy arrays, reshaped in
  column-major order when they carry a ``dim`` attribute;
* factors become :class:`pandas.Categorical` with the R level order kept;
* data frames become :class:`pandas.DataFrame` (row names as the index);
* lists become ``dict`` when named and ``list`` otherwise;
* S4 objects become :class:`RS4` (class name + slot dictionary);
* a ``dgCMatrix`` (the Matrix package's compressed sparse column matrix, slots ``i``,
  ``p``, ``x``, ``Dim``, ``Dimnames``) becomes :class:`scipy.sparse.csc_matrix`, and a dense
  matrix with ``dimnames`` a NumPy array; both are wrapped in :class:`RMatrix` so that
  their row and column names survive.

Everything else (closures, environments, byte code, ...) becomes ``None``: the readers
never need it. Used by :mod:`tflib.datasets.readers` (chapters 01, 08, 09).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["RS4", "RMatrix", "read_rda", "to_python", "dgc_to_csc"]

# R's integer NA is the smallest 32-bit integer.
_R_INT_NA = np.iinfo(np.int32).min


@dataclass
class RS4:
    """An R S4 object: its class name(s) and its slots, already converted."""

    r_class: list[str]
    slots: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.slots[key]

    def __contains__(self, key: str) -> bool:
        return key in self.slots


@dataclass
class RMatrix:
    """An R matrix (dense array or ``dgCMatrix`` as CSC) with its row and column names."""

    matrix: np.ndarray | sp.csc_matrix
    row_names: np.ndarray | None
    col_names: np.ndarray | None


def _kind(obj) -> str:
    return obj.info.type.name


def _deref(obj):
    while obj is not None and _kind(obj) == "REF":
        obj = obj.referenced_object
    return obj


def _symbol_name(tag) -> str | None:
    tag = _deref(tag)
    if tag is None or _kind(tag) != "SYM":
        return None
    return tag.value.value.decode("utf-8")


def _pairlist(obj) -> list[tuple[str | None, Any]]:
    """Flatten an R pairlist (attributes, S4 slots) into ``(name, RObject)`` pairs."""
    out = []
    obj = _deref(obj)
    while obj is not None and _kind(obj) in {"LIST", "ATTRLIST"}:
        out.append((_symbol_name(obj.tag), obj.value[0]))
        obj = _deref(obj.value[1])
        if obj is None or _kind(obj) == "NILVALUE":
            break
    return out


def _strings(obj) -> np.ndarray:
    """A character vector as an object array of ``str`` (``None`` for NA)."""
    values = [None if c.value is None else c.value.decode("utf-8") for c in obj.value]
    return np.array(values, dtype=object)


def _attrs(obj) -> dict[str, Any]:
    if obj.attributes is None:
        return {}
    return {name: to_python(value) for name, value in _pairlist(obj.attributes)}


def _as_str_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in np.atleast_1d(value)]


def _atomic(obj, attrs: dict[str, Any]):
    kind = _kind(obj)
    if kind == "STR":
        arr = _strings(obj)
    elif kind == "LGL":
        raw = np.asarray(obj.value)
        arr = np.where(raw == _R_INT_NA, False, raw != 0)
    else:
        arr = np.asarray(obj.value)
    klass = _as_str_list(attrs.get("class"))
    if "factor" in klass:
        codes = arr.astype(np.int64) - 1  # R codes are 1-based; NA becomes negative
        codes[codes < 0] = -1
        levels = _as_str_list(attrs.get("levels"))
        return pd.Categorical.from_codes(codes, categories=levels, ordered="ordered" in klass)
    dim = attrs.get("dim")
    if dim is not None and len(np.atleast_1d(dim)) >= 2:
        arr = arr.reshape(tuple(int(d) for d in dim), order="F")
        dimnames = attrs.get("dimnames")
        if arr.ndim == 2 and isinstance(dimnames, list) and len(dimnames) == 2:
            rows, cols = (None if d is None else np.asarray(d, dtype=object) for d in dimnames)
            return RMatrix(arr, rows, cols)
    elif "names" in attrs and kind != "STR" and arr.ndim == 1:
        return pd.Series(arr, index=attrs["names"])
    return arr


def _list(obj, attrs: dict[str, Any]):
    items = [to_python(v) for v in obj.value]
    klass = _as_str_list(attrs.get("class"))
    names = attrs.get("names")
    if "data.frame" in klass:
        frame = pd.DataFrame(
            {str(n): (v if not isinstance(v, pd.Series) else v.to_numpy()) for n, v in zip(names, items)}
        )
        row_names = attrs.get("row.names")
        # Compact row names are stored as c(NA, -n): keep the default RangeIndex then.
        if row_names is not None and np.asarray(row_names).dtype == object:
            frame.index = pd.Index([str(r) for r in row_names])
        return frame
    if names is not None:
        return {str(n): v for n, v in zip(names, items)}
    return items


def dgc_to_csc(slots: dict[str, Any]) -> RMatrix:
    """Build a SciPy CSC matrix from the slots of an R ``dgCMatrix``.

    The slots map one to one onto SciPy's CSC triplet: ``x`` (values), ``i`` (0-based row
    indices) and ``p`` (column pointers), with the shape in ``Dim``.
    """
    n_rows, n_cols = (int(d) for d in slots["Dim"])
    matrix = sp.csc_matrix(
        (
            np.asarray(slots["x"], dtype=np.float64),
            np.asarray(slots["i"], dtype=np.int64),
            np.asarray(slots["p"], dtype=np.int64),
        ),
        shape=(n_rows, n_cols),
    )
    dimnames = slots.get("Dimnames") or [None, None]
    rows, cols = (None if d is None else np.asarray(d, dtype=object) for d in dimnames)
    return RMatrix(matrix, rows, cols)


def to_python(obj) -> Any:
    """Convert one parsed ``RObject`` (and everything below it) to Python."""
    obj = _deref(obj)
    if obj is None:
        return None
    kind = _kind(obj)
    if kind in {"NILVALUE", "NIL"}:
        return None
    if kind == "S4":
        slots = {name: to_python(value) for name, value in _pairlist(obj.attributes)}
        r_class = _as_str_list(slots.pop("class", None))
        if "dgCMatrix" in r_class:
            return dgc_to_csc(slots)
        return RS4(r_class, slots)
    attrs = _attrs(obj)
    if kind in {"STR", "LGL", "INT", "REAL", "CPLX"}:
        return _atomic(obj, attrs)
    if kind == "VEC":
        return _list(obj, attrs)
    if kind in {"LIST", "ATTRLIST"}:
        return {name: to_python(value) for name, value in _pairlist(obj)}
    if kind == "CHAR":
        return None if obj.value is None else obj.value.decode("utf-8")
    return None  # closures, environments, language objects: not needed


def read_rda(path: str | Path) -> dict[str, Any]:
    """Parse an ``.rda`` file and convert every object it stores (``name -> object``)."""
    import rdata

    parsed = rdata.parser.parse_file(Path(path))
    return {name: to_python(value) for name, value in _pairlist(parsed.object)}
