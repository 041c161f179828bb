"""Import and export of Geneformer's dictionaries (``token_dictionary*.pkl``, ``gene_median_dictionary*.pkl``).

Geneformer ships its vocabulary and gene medians as Python pickles: ``{ensembl_id: token_id}``
(V1: ``<pad>`` = 0, ``<mask>`` = 1, genes from 2; V2 adds ``<cls>`` = 2, ``<eos>`` = 3) and
``{ensembl_id: median}``. **Unpickling can run arbitrary code**, so reading one requires the
explicit opt-in ``allow_pickle=True`` -- only do it for files from a source you trust. Even then
the reader accepts nothing but plain dicts of strings and numbers (a restricted unpickler refuses
every other class), which blocks the usual code-execution payloads.

This module sits above :mod:`~tflib.tokenize.vocab` and :mod:`~tflib.tokenize.medians` and
imports them; they never import it (the pickle reading itself lives in ``_pickles``).
"""
from __future__ import annotations

from pathlib import Path

from ._pickles import PickleNotAllowedError, write_dict_pickle
from .medians import GeneMedians
from .vocab import GeneVocab

__all__ = ["PickleNotAllowedError", "read_token_dictionary", "write_token_dictionary", "read_median_dictionary",
           "write_median_dictionary"]


def read_token_dictionary(path, *, allow_pickle: bool = False) -> GeneVocab:
    """A :class:`GeneVocab` from a Geneformer ``token_dictionary*.pkl``; ids are kept exactly."""
    return GeneVocab.from_geneformer(path, allow_pickle=allow_pickle)


def write_token_dictionary(vocab: GeneVocab, path, overwrite: bool = False) -> Path:
    """Write ``{token: id}`` as Geneformer does."""
    return vocab.to_geneformer(path, overwrite=overwrite)


def read_median_dictionary(path, *, allow_pickle: bool = False) -> GeneMedians:
    """A :class:`GeneMedians` from a Geneformer ``gene_median_dictionary*.pkl``."""
    return GeneMedians.from_geneformer(path, allow_pickle=allow_pickle)


def write_median_dictionary(medians: GeneMedians, path, overwrite: bool = False) -> Path:
    """Write ``{gene: median}`` (plain floats) as Geneformer does."""
    return write_dict_pickle(medians.as_dict(), path, overwrite)
