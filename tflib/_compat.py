"""Small shared conversions and the deprecation shim for renamed keyword arguments.

One home for helpers that several layers need (the course's rule: one home per helper).
Nothing here imports anything heavier than NumPy and SciPy, so every sub-package may use it.
"""
from __future__ import annotations

import functools
import inspect
import warnings

import numpy as np
import scipy.sparse as sp

__all__ = ["dense", "layer_matrix", "renamed_kwargs"]


def dense(M, dtype=np.float64) -> np.ndarray:
    """``M`` as a dense NumPy array of ``dtype`` (sparse matrices are densified).

    Used wherever a helper needs a plain array from an AnnData layer or an ``obsm`` entry
    (chapters 03, 08--10).
    """
    return np.asarray(M.toarray() if sp.issparse(M) else M, dtype=dtype)


def layer_matrix(adata, layer: str | None):
    """``adata.X`` (``layer=None``) or ``adata.layers[layer]``, with an error that lists the layers.

    The one place where the tokenizers (chapter 04) and the response baselines (chapter 11) read
    a matrix from an AnnData by layer name.
    """
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(f"Layer {layer!r} not found; available layers: {list(adata.layers.keys())}. Fix: name "
                       "one of them (layer='...'), or layer=None to read adata.X.")
    return adata.layers[layer]


def renamed_kwargs(**renames: str):
    """Decorator: accept old keyword names for one release, with a ``FutureWarning``.

    ``@renamed_kwargs(key="key_added")`` lets ``f(adata, key="X")`` keep working while
    telling the caller to write ``key_added="X"``. Passing both names is an error.
    The course's AnnData verbs use ``key_added`` for every output key (scanpy's convention).
    """

    def decorate(func):
        params = inspect.signature(func).parameters
        for old, new in renames.items():
            if new not in params:
                raise TypeError(f"{func.__qualname__} has no parameter {new!r} to rename {old!r} to")

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(
                            f"{func.__name__}() got both {old!r} and {new!r}; pass only {new}=...")
                    warnings.warn(
                        f"{func.__name__}({old}=...) is deprecated and will be removed in the next "
                        f"release; write {new}=... instead.", FutureWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        wrapper.__renamed_kwargs__ = dict(renames)
        return wrapper

    return decorate
