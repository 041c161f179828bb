"""Gene identity: Ensembl IDs or symbols, human or mouse, and the two tables that translate them.

A dataset names its genes by human Ensembl ID (``ENSG...``, version suffix ignored), by human
symbol (``ACTB``), or by mouse symbol (``Actb``). A :class:`~tflib.tokenize.GeneVocab` names
its genes one way; this module is what lets the others meet it (chapter 04):

- :func:`load_gencode_table`: human Ensembl ID <-> symbol (GENCODE v44);
- :func:`load_ortholog_table` and :func:`mouse_to_human`: mouse symbol -> human symbol
  (Ensembl 105 orthologs).

Both tables are registered datasets (``"gencode_v44_id2name"``, ``"human2mouse_orthologs"``):
they come from the offline mirror, the cache, or a pinned, checksummed download, and only
through :func:`tflib.datasets.fetch`, which logs which file it used and from where.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

__all__ = ["strip_version", "detect_id_type", "detect_species", "load_gencode_table", "load_ortholog_table",
           "mouse_to_human"]

_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?$")


def strip_version(gene_id: str) -> str:
    """``"ENSG00000141510.17"`` -> ``"ENSG00000141510"``; other names are returned unchanged."""
    if gene_id.startswith("ENS") and "." in gene_id:
        return gene_id.split(".", 1)[0]
    return gene_id


def detect_id_type(names: Iterable[str]) -> str:
    """Return ``"ensembl"`` if most names look like Ensembl gene IDs, else ``"symbol"``."""
    names = [str(n) for n in names]
    if not names:
        return "symbol"
    n_ens = sum(bool(_ENSEMBL_RE.match(n)) for n in names)
    return "ensembl" if n_ens >= 0.5 * len(names) else "symbol"


def detect_species(names: Iterable[str]) -> str:
    """Guess ``"human"`` or ``"mouse"`` from identifiers.

    ``ENSMUSG`` IDs and mixed-case symbols (``Actb``, ``Neurog3``) mean mouse; upper-case symbols
    (``ACTB``) and ``ENSG`` IDs mean human. Pass ``species=`` explicitly when in doubt.
    """
    names = [str(n) for n in names]
    if not names:
        return "human"
    if sum(n.startswith("ENSMUSG") for n in names) >= 0.5 * len(names):
        return "mouse"
    mixed = sum(n[:1].isupper() and any(c.islower() for c in n[1:]) for n in names)
    return "mouse" if mixed >= 0.5 * len(names) else "human"


def _table_path(name: str, given) -> Path:
    """``given`` as a path, or the verified file of the registered dataset ``name``."""
    if given is not None:
        return Path(given)
    from tflib.datasets import fetch  # mirror, cache or pinned download; SHA-256 checked, logged

    return Path(fetch(name))


def _two_columns(dataset: str, path, names: list[str]) -> pd.DataFrame:
    """A header-less two-column CSV of strings (empty cells stay empty strings)."""
    return pd.read_csv(_table_path(dataset, path), header=None, names=names, dtype=str, keep_default_na=False)


def load_gencode_table(path: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Human Ensembl gene ID -> symbol (GENCODE v44, 62,754 rows), as columns ``gene_id, symbol``.

    ``path=None`` gets the registered dataset ``"gencode_v44_id2name"`` through
    :func:`tflib.datasets.fetch` (offline: set ``TFLIB_DATA_MIRROR``). A DataFrame is returned as is.
    """
    if isinstance(path, pd.DataFrame):
        return path
    df = _two_columns("gencode_v44_id2name", path, ["gene_id", "symbol"])
    df["gene_id"] = [strip_version(g) for g in df["gene_id"]]
    return df


def load_ortholog_table(path: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Human symbol -> mouse symbol pairs (Ensembl 105), columns ``human, mouse``; empty pairs dropped.

    ``path=None`` gets the registered dataset ``"human2mouse_orthologs"`` through
    :func:`tflib.datasets.fetch` (offline: set ``TFLIB_DATA_MIRROR``). A DataFrame is returned as is.
    """
    if isinstance(path, pd.DataFrame):
        return path
    df = _two_columns("human2mouse_orthologs", path, ["human", "mouse"])
    return df[(df["human"] != "") & (df["mouse"] != "")].reset_index(drop=True)


def mouse_to_human(mouse_symbols: Sequence[str], orthologs=None) -> tuple[list[str | None], dict]:
    """Map mouse symbols to human symbols with the ortholog table.

    Rule for one-to-many orthologs (documented and deterministic): prefer the human symbol equal to
    the upper-cased mouse symbol; otherwise take the first candidate in table order.
    Returns ``(human_or_None per input, report)``.
    """
    table = load_ortholog_table(orthologs)
    candidates: dict[str, list[str]] = {}
    for h, m in zip(table["human"], table["mouse"]):
        candidates.setdefault(m, []).append(h)
    out: list[str | None] = []
    n_multi = 0
    for m in mouse_symbols:
        cands = candidates.get(str(m))
        if not cands:
            out.append(None)
            continue
        if len(cands) > 1:
            n_multi += 1
        up = str(m).upper()
        out.append(up if up in cands else cands[0])
    report = {"n_input": len(out), "n_mapped": sum(o is not None for o in out), "n_one_to_many": n_multi}
    return out, report
