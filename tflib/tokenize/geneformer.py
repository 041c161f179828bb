"""Import and export of Geneformer's dictionaries (``token_dictionary*.pkl``, ``gene_median_dictionary*.pkl``).

Geneformer ships its vocabulary and gene medians as Python pickles: ``{ensembl_id: token_id}``
(V1: ``<pad>`` = 0, ``<mask>`` = 1, genes from 2; V2 adds ``<cls>`` = 2, ``<eos>`` = 3) and
``{ensembl_id: median}``. **Unpickling can run arbitrary code**, so reading one requires the
explicit opt-in ``allow_pickle=True`` -- only do it for files from a source you trust. Even then
the reader accepts nothing but plain dicts of strings and numbers (a restricted unpickler refuses
every other class), which blocks the usual code-execution payloads.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from .vocab import GeneVocab

_GENEFORMER_SPECIALS = ("<pad>", "<mask>", "<cls>", "<eos>")
_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class PickleNotAllowedError(PermissionError):
    """Raised when a pickle would be read without ``allow_pickle=True``."""


class _DictOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name}: a Geneformer dictionary holds only "
                                     "strings and numbers.")


def _read_pickle(path, allow_pickle: bool, what: str) -> dict:
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


def _write_pickle(obj: dict, path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def read_token_dictionary(path, *, allow_pickle: bool = False) -> GeneVocab:
    """A :class:`GeneVocab` from a Geneformer ``token_dictionary*.pkl``; ids are kept exactly."""
    d = _read_pickle(path, allow_pickle, "a Geneformer token dictionary")
    ids = np.array([int(v) for v in d.values()], dtype=np.int64)
    if ids.size == 0 or ids.min() != 0 or ids.max() != ids.size - 1 or np.unique(ids).size != ids.size:
        raise ValueError(f"{path}: token ids must be exactly 0..{len(d) - 1} without gaps or repeats.")
    tokens = [None] * len(d)
    for k, v in d.items():
        tokens[int(v)] = str(k)
    specials = [t for t in tokens if t in _GENEFORMER_SPECIALS]
    head = tokens[:len(specials)]
    if sorted(head) != sorted(specials):
        raise ValueError(f"{path}: special tokens {specials} are not the first ids ({head}); tflib expects them first.")
    return GeneVocab(tokens, special_tokens=head, id_type="ensembl")


def write_token_dictionary(vocab: GeneVocab, path, overwrite: bool = False) -> Path:
    """Write ``{token: id}`` as Geneformer does."""
    return _write_pickle({t: i for i, t in enumerate(vocab.tokens)}, path, overwrite)


def read_median_dictionary(path, *, allow_pickle: bool = False):
    """A :class:`GeneMedians` from a Geneformer ``gene_median_dictionary*.pkl``."""
    from .medians import GeneMedians

    d = _read_pickle(path, allow_pickle, "a Geneformer gene-median dictionary")
    genes = [str(k) for k in d]
    return GeneMedians(genes, [float(d[k]) for k in d], method="geneformer")


def write_median_dictionary(medians, path, overwrite: bool = False) -> Path:
    """Write ``{gene: median}`` (plain floats) as Geneformer does."""
    return _write_pickle(medians.as_dict(), path, overwrite)
