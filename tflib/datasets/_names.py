"""Human gene symbols used as *labels* for the simulator's genes (chapter 03).

The simulated world borrows real human gene symbols so that the vocabulary, tokenizer and
model of chapters 04--07 serve simulated and real cells alike. The symbols are labels only:
a simulated ``SOX2`` has nothing to do with the biology of the real SOX2 gene.

* Regulators (and a few "decoy" transcription factors that regulate nothing) are drawn from
  the human transcription-factor list ``allTFs_hg38.txt`` (dataset ``tfs_human``).
* All other genes are drawn from GENCODE v44 symbols that look like protein-coding genes
  (dataset ``gencode_v44_id2name``), excluding every transcription factor.

Both files come through :func:`tflib.datasets.fetch` (mirror first, then the pinned
download). If the registry is not importable, the mirror folder named by the environment
variable ``TFLIB_DATA_MIRROR`` is read directly.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

_FILES = {"tfs_human": "allTFs_hg38.txt", "gencode_v44_id2name": "GENCODEv44_Gene_id2name.csv"}

# Symbols of non-coding or uninformative loci: micro-RNAs, long non-coding RNAs, snoRNAs,
# pseudogene-like families, ribosomal and mitochondrial genes (the latter two are QC
# markers in chapter 01 and should keep their real meaning there).
_EXCLUDE = re.compile(r"^(MIR|LINC|SNOR|SCAR|RNU|RNA|RNY|RN\d|Y_RNA|LOC|ENSG|TR[ABDG][VJDC]|IGH|IGK|"
                      r"IGL|RPL|RPS|MRPL|MRPS|MT|OR\d|HLA)|\dP\d*$")  # last: pseudogenes (MAPK6P4)
_PSEUDO = re.compile(r"^(.+?)P\d*$")
_CODING_LOOKING = re.compile(r"^[A-Z][A-Z0-9]{1,7}$")


def _locate(name: str) -> Path:
    """Verified path of a registry file through :func:`tflib.datasets.fetch`.

    Only if the registry itself is missing (a partial install) is the mirror folder read
    directly; errors of ``fetch`` (checksum, offline) are never hidden.
    """
    try:
        from tflib.datasets import fetch
    except (ImportError, AttributeError):
        fetch = None
    if fetch is not None:
        return Path(fetch(name))
    mirror = os.environ.get("TFLIB_DATA_MIRROR")
    if mirror and (Path(mirror) / _FILES[name]).is_file():
        return Path(mirror) / _FILES[name]
    raise FileNotFoundError(
        f"The simulator needs the gene-symbol list {name!r} ({_FILES[name]}) to name its genes. "
        f"Fix: set TFLIB_DATA_MIRROR to the folder holding it (e.g. ../shared/data)."
    )


@lru_cache(maxsize=None)
def tf_symbols() -> tuple[str, ...]:
    """Sorted, unique human transcription-factor symbols: the simulator's regulator labels, and chapter 13's TF list."""
    text = _locate("tfs_human").read_text().split()
    return tuple(sorted({s.strip() for s in text if _CODING_LOOKING.match(s.strip())}))


@lru_cache(maxsize=None)
def target_symbols() -> tuple[str, ...]:
    """Sorted protein-coding-looking GENCODE symbols that are not transcription factors."""
    tfs = set(tf_symbols())
    names = set()
    for line in _locate("gencode_v44_id2name").read_text().splitlines():
        parts = line.strip().split(",")
        if len(parts) >= 2 and _CODING_LOOKING.match(sym := parts[1].strip()):
            if not _EXCLUDE.search(sym) and sym not in tfs:
                names.add(sym)
    # Processed pseudogenes are named after their parent gene plus "P<n>" (PNKD -> PNKDP1).
    pseudo = {s for s in names if (m := _PSEUDO.match(s)) and m.group(1) in names}
    return tuple(sorted(names - pseudo))


def draw_names(n_tf: int, n_other: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Draw ``n_tf`` transcription-factor symbols and ``n_other`` other symbols, without
    replacement and deterministically for a given generator state."""
    tfs, others = tf_symbols(), target_symbols()
    if n_tf > len(tfs) or n_other > len(others):
        raise ValueError(
            f"Asked for {n_tf} regulator and {n_other} other gene names, but only {len(tfs)} and "
            f"{len(others)} symbols are available. Fix: lower n_genes."
        )
    tf_pick = rng.choice(len(tfs), size=n_tf, replace=False)
    other_pick = rng.choice(len(others), size=n_other, replace=False)
    return [tfs[i] for i in tf_pick], [others[i] for i in other_pick]
