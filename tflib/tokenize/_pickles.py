"""Reading and writing the plain-dict pickles Geneformer ships, safely (the lowest layer of the
Geneformer import/export; :mod:`tflib.tokenize.geneformer` is the public face).

**Unpickling can run arbitrary code**, so reading requires the explicit opt-in
``allow_pickle=True``, and even then a restricted unpickler accepts nothing but plain dicts of
strings and numbers (it refuses every other class), which blocks the usual code-execution payloads.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class PickleNotAllowedError(PermissionError):
    """Raised when a pickle would be read without ``allow_pickle=True``."""


class _DictOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name}: a Geneformer dictionary holds only "
                                     "strings and numbers.")


def read_dict_pickle(path, allow_pickle: bool, what: str) -> dict:
    """The dict stored in the pickle ``path`` (``what`` names it in the messages)."""
    path = Path(path)
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"Refusing to read {path}: {what} is a Python pickle, and unpickling can execute arbitrary code. "
            "If you trust its source, pass allow_pickle=True (tflib then still accepts only a plain dict).")
    with open(path, "rb") as f:
        obj = _DictOnlyUnpickler(io.BytesIO(f.read())).load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not the dict Geneformer writes.")
    return obj


def write_dict_pickle(obj: dict, path, overwrite: bool) -> Path:
    """Write ``obj`` as a protocol-4 pickle; an existing file is kept unless ``overwrite=True``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path
