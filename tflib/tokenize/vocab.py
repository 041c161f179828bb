"""Gene vocabularies: which genes are words, and which integer each one gets (chapter 04).

A cell becomes a "document" whose "words" are genes (chapter 04). The vocabulary fixes which
genes exist as words and which integer each one gets. Conventions used throughout ``tflib``:

- Special tokens come first, with fixed ids: ``<pad>`` = 0, ``<mask>`` = 1, ``<cls>`` = 2,
  ``<eos>`` = 3 (the Geneformer V2 layout). Genes follow from id 4 on. A vocabulary imported
  from a Geneformer V1 dictionary has only ``<pad>`` and ``<mask>``; its genes start at id 2.
- A gene is identified by a human Ensembl ID (``ENSG...``, version suffix ignored) or by a human
  symbol. Other identifiers are translated by :mod:`tflib.tokenize.genes` (GENCODE v44 and the
  Ensembl 105 human <-> mouse orthologs, both registered datasets of :mod:`tflib.datasets`).

Imports point one way: this module uses :mod:`~tflib.tokenize.genes` and the pickle reader
:mod:`~tflib.tokenize._pickles`; :mod:`~tflib.tokenize.geneformer` builds on this module, never
the reverse.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tflib.utils import write_json

from ._pickles import read_dict_pickle, write_dict_pickle
# Re-exported: these lived here before the gene tables got their own module.
from .genes import (detect_id_type, detect_species, load_gencode_table, load_ortholog_table,  # noqa: F401
                    mouse_to_human, strip_version)

#: Default special tokens, in id order (``<pad>`` = 0, ``<mask>`` = 1, ``<cls>`` = 2, ``<eos>`` = 3).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<mask>", "<cls>", "<eos>")
#: The special tokens a Geneformer dictionary may hold (V1: the first two; V2: all four).
GENEFORMER_SPECIALS: tuple[str, ...] = SPECIAL_TOKENS

_VOCAB_FORMAT = "tflib.GeneVocab"


class VocabularyCoverageError(ValueError):
    """Raised when a vocabulary covers too little of a dataset (see :meth:`GeneVocab.coverage`)."""


def special_token_ids(tokenizer, model=None) -> list[int]:
    """Token ids of the special tokens (``<pad>``, ``<mask>``, ``<cls>``, ``<eos>``, as present).

    The one place that decides which ids are "not a gene": cell embeddings (chapter 07's
    :func:`tflib.tl.embed`, mean pooling) and fine-tuning (:func:`tflib.train.finetune`) both
    leave these positions out.

    Parameters
    ----------
    tokenizer
        A tokenizer with a :class:`GeneVocab` as ``.vocab`` (or ``None``: then ``model.tokenizer``).
    model
        Optional; a model with ``.tokenizer`` and/or ``.config.pad_token_id``, used when no
        vocabulary is at hand (only the padding id is known then).
    """
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    vocab = getattr(tok, "vocab", None)
    if vocab is not None and hasattr(vocab, "special_tokens"):
        return [vocab.token_to_id(t) for t in vocab.special_tokens]
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "pad_token_id", None) is not None:
        return [int(config.pad_token_id)]
    raise ValueError("special_token_ids needs a tokenizer with a .vocab, or a model whose config has "
                     "pad_token_id; pass tokenizer= (the one the model was trained with).")


@dataclass
class GeneMapping:
    """Result of :meth:`GeneVocab.map_genes`: one token id per input gene (-1 = not in vocabulary)."""

    ids: np.ndarray
    report: dict = field(default_factory=dict)


@dataclass
class CoverageReport:
    """How much of a dataset a vocabulary covers (:meth:`GeneVocab.coverage`)."""

    n_genes: int
    n_genes_covered: int
    gene_fraction: float
    count_fraction: float
    species: str
    id_type: str
    unmapped_examples: list[str]
    mapping: dict

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return (f"{self.n_genes_covered:,}/{self.n_genes:,} genes covered ({self.gene_fraction:.1%}), "
                f"{self.count_fraction:.1%} of counts ({self.species}, {self.id_type})")


# ----------------------------------------------------------------------------------------------
# The vocabulary
# ----------------------------------------------------------------------------------------------
class GeneVocab:
    """An ordered gene vocabulary with special tokens (chapter 04; used by chapters 05--07, 11).

    Parameters
    ----------
    tokens
        All tokens in id order: the special tokens first, then the genes.
    special_tokens
        Which of ``tokens`` are special. Default :data:`SPECIAL_TOKENS`
        (``<pad>`` = 0, ``<mask>`` = 1, ``<cls>`` = 2, ``<eos>`` = 3).
    id_type
        ``"ensembl"`` or ``"symbol"``: how the genes are named (human genes).

    Examples
    --------
    >>> v = GeneVocab.from_genes(["ENSG00000075624", "ENSG00000111640"])
    >>> len(v), v.token_to_id("ENSG00000111640"), v.id_to_token(0)
    (6, 5, '<pad>')
    """

    def __init__(self, tokens: Sequence[str], special_tokens: Sequence[str] = SPECIAL_TOKENS,
                 id_type: str | None = None):
        tokens = [str(t) for t in tokens]
        if len(set(tokens)) != len(tokens):
            dup = pd.Index(tokens)[pd.Index(tokens).duplicated()][:5].tolist()
            raise ValueError(f"Vocabulary tokens must be unique; duplicated: {dup}. Deduplicate the gene list "
                             "(GeneVocab.from_genes does it for you).")
        missing = [s for s in special_tokens if s not in tokens]
        if missing:
            raise ValueError(f"Special tokens {missing} are not in the token list; put them first or pass "
                             "special_tokens= with the ones the vocabulary really has.")
        self._tokens = tokens
        self._index = {t: i for i, t in enumerate(tokens)}
        self.special_tokens = tuple(special_tokens)
        genes = [t for t in tokens if t not in set(special_tokens)]
        self.id_type = id_type or detect_id_type(genes[:2000])
        if self.id_type not in ("ensembl", "symbol"):
            raise ValueError(f"id_type must be 'ensembl' or 'symbol', got {self.id_type!r}.")
        if len(tokens) > np.iinfo(np.int32).max:
            raise ValueError("Vocabulary too large for int32 token ids.")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_genes(cls, genes: Iterable[str], special_tokens: Sequence[str] = SPECIAL_TOKENS,
                   id_type: str | None = None) -> "GeneVocab":
        """Special tokens followed by ``genes`` (order kept, duplicates and Ensembl versions removed)."""
        seen: dict[str, None] = {}
        for g in genes:
            g = strip_version(str(g))
            if g and g not in seen and g not in special_tokens:
                seen[g] = None
        return cls(list(special_tokens) + list(seen), special_tokens=special_tokens, id_type=id_type)

    # -- basic access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def __eq__(self, other) -> bool:
        return isinstance(other, GeneVocab) and self._tokens == other._tokens and \
            self.special_tokens == other.special_tokens

    def __repr__(self) -> str:
        return (f"GeneVocab({len(self):,} tokens: {len(self.special_tokens)} special "
                f"{list(self.special_tokens)} + {self.n_genes:,} genes by {self.id_type})")

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order (a copy)."""
        return list(self._tokens)

    @property
    def genes(self) -> list[str]:
        """The gene tokens in id order (no special tokens)."""
        special = set(self.special_tokens)
        return [t for t in self._tokens if t not in special]

    @property
    def n_genes(self) -> int:
        return len(self._tokens) - len(self.special_tokens)

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; raises ``KeyError`` naming the token if it is not in the vocabulary."""
        try:
            return self._index[strip_version(str(token))]
        except KeyError:
            raise KeyError(f"{token!r} is not in the vocabulary ({len(self):,} tokens, genes by "
                           f"{self.id_type}). Map identifiers first with GeneVocab.map_genes.") from None

    def id_to_token(self, idx: int) -> str:
        return self._tokens[int(idx)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Token ids -> tokens."""
        return [self._tokens[int(i)] for i in ids]

    def special_id(self, token: str) -> int | None:
        """Id of a special token, or ``None`` if this vocabulary lacks it (e.g. ``<cls>`` in V1)."""
        return self._index.get(token) if token in self.special_tokens else None

    @property
    def pad_id(self) -> int | None:
        return self.special_id("<pad>")

    @property
    def mask_id(self) -> int | None:
        return self.special_id("<mask>")

    @property
    def cls_id(self) -> int | None:
        return self.special_id("<cls>")

    @property
    def eos_id(self) -> int | None:
        return self.special_id("<eos>")

    @property
    def fingerprint(self) -> str:
        """SHA-256 (first 16 hex digits) of the tokens in id order: two vocabularies with the same
        fingerprint give every token the same id. Recorded in tokenizer configs and token stores."""
        h = hashlib.sha256("\n".join(self._tokens).encode())
        h.update(("|" + ",".join(self.special_tokens)).encode())
        return h.hexdigest()[:16]

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": _VOCAB_FORMAT, "version": 1, "id_type": self.id_type,
                "special_tokens": list(self.special_tokens), "tokens": list(self._tokens),
                "fingerprint": self.fingerprint}

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the vocabulary as JSON (tokens in id order). Refuses to replace a file unless
        ``overwrite=True``."""
        return write_json(path, self.to_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GeneVocab":
        """Read a vocabulary written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        if d.get("format") != _VOCAB_FORMAT:
            raise ValueError(f"{path} is not a tflib GeneVocab JSON file (format={d.get('format')!r}). "
                             "For a Geneformer token_dictionary*.pkl use "
                             "tflib.tokenize.GeneVocab.from_geneformer(path, allow_pickle=True).")
        v = cls(d["tokens"], special_tokens=d["special_tokens"], id_type=d["id_type"])
        if d.get("fingerprint") not in (None, v.fingerprint):
            raise ValueError(f"{path}: stored fingerprint {d['fingerprint']} does not match its tokens "
                             f"({v.fingerprint}); the file was edited or is corrupt.")
        return v

    # -- Geneformer dictionaries (pickles; tflib.tokenize.geneformer is the public face) ---------
    @classmethod
    def from_geneformer(cls, path, *, allow_pickle: bool = False) -> "GeneVocab":
        """Import a Geneformer ``token_dictionary*.pkl`` (needs ``allow_pickle=True``); ids are kept exactly."""
        return cls.from_token_dict(read_dict_pickle(path, allow_pickle, "a Geneformer token dictionary"),
                                   where=str(path))

    @classmethod
    def from_token_dict(cls, d: dict, *, where: str = "the dictionary") -> "GeneVocab":
        """A vocabulary from a ``{token: id}`` dict whose ids are exactly ``0..n-1``, specials first."""
        ids = np.array([int(v) for v in d.values()], dtype=np.int64)
        if ids.size == 0 or ids.min() != 0 or ids.max() != ids.size - 1 or np.unique(ids).size != ids.size:
            raise ValueError(f"{where}: token ids must be exactly 0..{len(d) - 1} without gaps or repeats.")
        tokens = [None] * len(d)
        for k, v in d.items():
            tokens[int(v)] = str(k)
        specials = [t for t in tokens if t in GENEFORMER_SPECIALS]
        head = tokens[:len(specials)]
        if sorted(head) != sorted(specials):
            raise ValueError(f"{where}: special tokens {specials} are not the first ids ({head}); "
                             "tflib expects them first.")
        return cls(tokens, special_tokens=head, id_type="ensembl")

    def to_geneformer(self, path, overwrite: bool = False) -> Path:
        """Export as a Geneformer-format ``{token: id}`` pickle."""
        return write_dict_pickle({t: i for i, t in enumerate(self._tokens)}, path, overwrite)

    # -- mapping a dataset's genes onto the vocabulary ------------------------------------------
    def map_genes(self, names: Sequence[str], *, id_type: str = "auto", species: str = "auto",
                  gene_table=None, ortholog_table=None) -> GeneMapping:
        """Token id of each gene name (``-1`` if it has none).

        Parameters
        ----------
        names
            The dataset's gene identifiers (e.g. ``adata.var_names``).
        id_type
            ``"ensembl"``, ``"symbol"`` or ``"auto"`` (detected).
        species
            ``"human"``, ``"mouse"`` or ``"auto"`` (detected). Mouse symbols go through the
            ortholog table to human symbols (see :func:`mouse_to_human` for the one-to-many rule).
        gene_table, ortholog_table
            Paths or DataFrames; ``None`` fetches them through :mod:`tflib.datasets` when needed.
        """
        names = [str(n) for n in names]
        id_type = detect_id_type(names[:2000]) if id_type == "auto" else id_type
        species = detect_species(names[:2000]) if species == "auto" else species
        if id_type not in ("ensembl", "symbol") or species not in ("human", "mouse"):
            raise ValueError(f"id_type must be ensembl/symbol and species human/mouse; got {id_type!r}, {species!r}.")
        if species == "mouse" and id_type == "ensembl":
            raise ValueError("Mouse Ensembl IDs cannot be mapped (the ortholog table is by symbol). Put mouse "
                             "gene symbols in var (e.g. adata.var_names = adata.var['gene_symbols']).")
        steps = []
        keys: list[str | None] = [strip_version(n) for n in names]
        if species == "mouse":
            keys, orth = mouse_to_human(keys, ortholog_table)
            steps.append(f"mouse->human orthologs ({orth['n_mapped']:,}/{orth['n_input']:,} mapped, "
                         f"{orth['n_one_to_many']:,} one-to-many)")
        if id_type != self.id_type:
            table = load_gencode_table(gene_table)
            if self.id_type == "ensembl":  # symbol -> ID: first GENCODE ID of that symbol that is in the vocab
                sym2id: dict[str, str] = {}
                for gid, sym in zip(table["gene_id"], table["symbol"]):
                    if gid in self._index and sym not in sym2id:
                        sym2id[sym] = gid
                for gid, sym in zip(table["gene_id"], table["symbol"]):
                    sym2id.setdefault(sym, gid)
                keys = [sym2id.get(k) if k is not None else None for k in keys]
                steps.append("symbol->Ensembl (GENCODE v44)")
            else:
                id2sym = dict(zip(table["gene_id"], table["symbol"]))
                keys = [id2sym.get(k) if k is not None else None for k in keys]
                steps.append("Ensembl->symbol (GENCODE v44)")
        ids = np.fromiter((self._index.get(k, -1) if k is not None else -1 for k in keys),
                          dtype=np.int64, count=len(keys))
        special = {self._index[s] for s in self.special_tokens}
        if special:
            ids[np.isin(ids, list(special))] = -1  # a gene called "<pad>" is not a gene
        mapped = ids[ids >= 0]
        n_dup = int(mapped.size - np.unique(mapped).size)
        report = {"n_input": len(names), "n_mapped": int(mapped.size), "id_type": id_type, "species": species,
                  "steps": steps, "n_duplicate_targets": n_dup}
        return GeneMapping(ids=ids, report=report)

    def coverage(self, adata, *, gene_key: str | None = None, layer: str | None = None,
                 id_type: str = "auto", species: str = "auto", min_gene_fraction: float = 0.0,
                 min_count_fraction: float = 0.5, check: bool = True, gene_table=None,
                 ortholog_table=None) -> CoverageReport:
        """Fraction of ``adata``'s genes, and of its counts, that this vocabulary covers (chapter 04).

        The rule is the tokenizers' (``encode(check_coverage=True)``): what matters is the
        fraction of the **counts** that fall in vocabulary genes, since those are the words of a
        cell's "document". Below ``min_count_fraction`` (default 50 %) a
        :class:`VocabularyCoverageError` is raised. The fraction of the input's *genes* is
        reported but not checked by default (``min_gene_fraction=0``): a full transcriptome
        against a 2,000-gene vocabulary covers few of its genes yet most of its counts.
        ``check=False`` only reports.
        """
        names = adata.var_names if gene_key is None else adata.var[gene_key]
        mapping = self.map_genes(list(names), id_type=id_type, species=species, gene_table=gene_table,
                                 ortholog_table=ortholog_table)
        covered = mapping.ids >= 0
        col_sums = _column_sums(adata, layer)
        total = float(col_sums.sum())
        count_fraction = float(col_sums[covered].sum() / total) if total > 0 else 0.0
        gene_fraction = float(covered.mean()) if covered.size else 0.0
        rep = CoverageReport(
            n_genes=int(covered.size), n_genes_covered=int(covered.sum()), gene_fraction=gene_fraction,
            count_fraction=count_fraction, species=mapping.report["species"], id_type=mapping.report["id_type"],
            unmapped_examples=[str(n) for n in np.asarray(names)[~covered][:10]], mapping=mapping.report)
        if check and (gene_fraction < min_gene_fraction or count_fraction < min_count_fraction):
            raise VocabularyCoverageError(
                f"The vocabulary's genes hold only {count_fraction:.1%} of the counts (threshold "
                f"min_count_fraction={min_count_fraction:.0%}) and cover {gene_fraction:.1%} of the genes "
                f"(threshold min_gene_fraction={min_gene_fraction:.0%}); detected "
                f"{rep.id_type} identifiers from {rep.species}, unmapped e.g. {rep.unmapped_examples[:5]}. "
                "Fix: pass the right gene_key/id_type/species, or build a vocabulary from this dataset's genes; "
                "to proceed anyway lower min_gene_fraction/min_count_fraction or pass check=False.")
        return rep


def _column_sums(adata, layer: str | None, chunk_size: int = 4096) -> np.ndarray:
    """Per-gene totals of X (or a layer), streamed over row chunks for backed data."""
    X = adata.X if layer is None else adata.layers[layer]
    n = adata.n_obs
    out = np.zeros(adata.n_vars, dtype=np.float64)
    if not getattr(adata, "isbacked", False):
        return np.asarray(X.sum(axis=0), dtype=np.float64).ravel()
    for start in range(0, n, chunk_size):
        out += np.asarray(X[start:start + chunk_size].sum(axis=0), dtype=np.float64).ravel()
    return out
