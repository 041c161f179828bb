"""What both tokenizers share: gene mapping, the chunked encode loop, the token store, configs.

A tokenizer turns an AnnData (in memory, backed, or an ``.h5ad`` path) into token ids per cell.
``encode`` returns an in-memory :class:`~tflib.tokenize._core.TokenizedCells`;
``encode_to_store`` streams the same result chunk by chunk into an on-disk
:class:`~tflib.tokenize.TokenStore`, so memory stays bounded by ``chunk_size``.
"""
from __future__ import annotations

import json
import os
import threading
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ._core import (EmptyCellsWarning, TokenizedCells, TokenizerInputError, concat, iter_csr_chunks,
                    merge_report, new_report, open_source, validate_values, zero_count_rows)
from tflib.validation import ZERO_CELLS_FIX, count_layers_hint

from .vocab import GeneVocab, VocabularyCoverageError

CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.json"
MEDIANS_FILE = "gene_medians.json"


class TokenizerMismatchError(ValueError):
    """Tokens made with one tokenizer are used with another (different preset or vocabulary)."""


class _Tokenizer:
    """Base class; subclasses define ``kind``, ``config()`` and ``_encode_chunk``."""

    kind = "base"
    #: Whether chunks may be encoded on several threads: true when ``_start_state`` holds
    #: scratch buffers only (rank-value), false when it carries a random stream from one chunk
    #: to the next (binning), whose result would then depend on the thread timing.
    parallel_chunks = False

    def __init__(self, vocab: GeneVocab, max_len: int):
        if not isinstance(vocab, GeneVocab):
            raise TypeError(f"vocab must be a tflib.tokenize.GeneVocab, got {type(vocab).__name__}.")
        if max_len is None or int(max_len) < 1:
            raise ValueError(f"max_len must be a positive integer, got {max_len!r}.")
        self.vocab = vocab
        self.max_len = int(max_len)

    # -- config ---------------------------------------------------------------------------------
    def _base_config(self) -> dict:
        import tflib

        v = self.vocab
        return {"kind": self.kind, "max_len": self.max_len, "vocab_size": len(v),
                "vocab_fingerprint": v.fingerprint, "gene_id_type": v.id_type,
                "special_tokens": {t: v.token_to_id(t) for t in v.special_tokens},
                "tflib_version": tflib.__version__}

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        c = self.config()
        keep = {k: c[k] for k in ("preset", "max_len", "n_bins", "seed", "vocab_size") if k in c}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in keep.items())})"

    @property
    def max_genes(self) -> int:
        """Gene tokens per cell at most (``max_len`` minus the special tokens added)."""
        return self.max_len - int(self.add_cls) - int(self.add_eos)

    # -- mapping --------------------------------------------------------------------------------
    def gene_columns(self, adata, *, gene_key=None, id_type="auto", species="auto", min_gene_fraction=0.0,
                     check_coverage=True, gene_table=None, ortholog_table=None):
        """Token id of every column of ``adata`` (``-1`` = not tokenized) and the mapping report.

        The report adds ``n_tokenizable`` (input columns that give a token), ``n_vocab_genes``
        (genes this tokenizer can emit), ``n_vocab_present`` and ``vocab_fraction`` (how many of
        those occur among the input's columns). With ``check_coverage``, raises
        :class:`~tflib.tokenize.VocabularyCoverageError` when no column maps onto the vocabulary,
        or (only if ``min_gene_fraction > 0`` is asked for) when fewer than that fraction of the
        *input's* columns do; the count fraction is checked by ``encode`` on every cell.
        """
        names = list(adata.var_names if gene_key is None else adata.var[gene_key].astype(str))
        m = self.vocab.map_genes(names, id_type=id_type, species=species, gene_table=gene_table,
                                 ortholog_table=ortholog_table)
        colmap = m.ids.astype(np.int32)
        colmap[~self._tokenizable[np.maximum(colmap, 0)]] = -1
        ok = colmap >= 0
        frac = float(ok.mean()) if colmap.size else 0.0
        n_vocab = int(self._tokenizable.sum())
        n_present = int(np.unique(colmap[ok]).size)
        m.report.update({"n_tokenizable": int(ok.sum()), "n_vocab_genes": n_vocab, "n_vocab_present": n_present,
                         "vocab_fraction": n_present / n_vocab if n_vocab else 0.0})
        if check_coverage and (n_present == 0 or frac < min_gene_fraction):
            what = ("None of the" if n_present == 0 else
                    f"Only {frac:.1%} (threshold min_gene_fraction={min_gene_fraction:.0%}) of the")
            raise VocabularyCoverageError(
                f"{what} {len(names):,} genes of the input map onto this tokenizer's {n_vocab:,} genes. "
                + self._coverage_diagnosis(adata, names, m.report, gene_key=gene_key, id_type=id_type,
                                           species=species, gene_table=gene_table, ortholog_table=ortholog_table,
                                           can_override=n_present > 0))
        return colmap, m.report

    def _n_present(self, names, **kw) -> int:
        """How many of the tokenizer's genes ``names`` map onto (0 if they cannot be mapped that way)."""
        try:
            ids = self.vocab.map_genes(names, **kw).ids
        except (ValueError, KeyError, FileNotFoundError):
            return 0
        ids = ids[ids >= 0]
        return int(np.unique(ids[self._tokenizable[ids]]).size)

    def _coverage_diagnosis(self, adata, names, report, *, gene_key, id_type, species, gene_table,
                            ortholog_table, can_override: bool = True) -> str:
        """What was detected, and a fix that changes the outcome: another ``var`` column or species
        only when it is tried here and maps clearly more genes, else a tokenizer for these genes."""
        n_now = int(report.get("n_vocab_present", 0))
        tables = {"gene_table": gene_table, "ortholog_table": ortholog_table}
        unmapped = [n for n, i in zip(names, self.vocab.map_genes(names, id_type=id_type, species=species,
                                                                   **tables).ids) if i < 0][:5]
        text = (f"Detected {report['id_type']} identifiers from {report['species']} in "
                f"{'var_names' if gene_key is None else f'var[{gene_key!r}]'}; not in the vocabulary, e.g. "
                f"{unmapped}; the vocabulary's genes look like {self.vocab.genes[:3]}. ")
        tries = []
        var = getattr(adata, "var", None)
        if var is not None:
            if gene_key is not None:
                tries.append(("gene_key=None (var_names)", list(map(str, adata.var_names)), {}))
            for c in list(var.columns)[:20]:
                if c != gene_key and (var[c].dtype == object or str(var[c].dtype) in ("category", "string")):
                    tries.append((f"gene_key={c!r}", list(var[c].astype(str)), {}))
        other = {"human": "mouse", "mouse": "human"}.get(report["species"])
        if other and report["id_type"] == "symbol":
            tries.append((f"species={other!r}", names, {"species": other}))
        best, best_n = None, n_now
        for label, cand, kw in tries:
            n = self._n_present(cand, id_type=kw.get("id_type", "auto"), species=kw.get("species", "auto"),
                                **tables)
            if n > best_n:
                best, best_n = label, n
        if best is not None and best_n >= max(2 * n_now, 10):
            return (text + f"Fix: pass {best}: it maps {best_n:,} of the tokenizer's genes (against {n_now:,} "
                    "now).")
        return (text + "No other var column or species maps clearly more of them, so these genes are not "
                "what this tokenizer was built for. Fix: use a tokenizer whose vocabulary and medians come "
                "from these genes (tflib.tokenize.GeneVocab.from_genes(adata.var_names) and "
                "tflib.tokenize.gene_medians(adata, vocab=vocab), chapter 04)"
                + (", or pass check_coverage=False to tokenize the few covered genes anyway." if can_override
                   else "."))

    # -- encoding -------------------------------------------------------------------------------
    def _iter_encoded(self, adata, *, layer, gene_key, id_type, species, input, chunk_size,
                      check_coverage, min_gene_fraction, min_count_fraction, gene_table, ortholog_table,
                      n_jobs=None):
        colmap, mapping = self.gene_columns(adata, gene_key=gene_key, id_type=id_type, species=species,
                                            min_gene_fraction=min_gene_fraction, check_coverage=check_coverage,
                                            gene_table=gene_table, ortholog_table=ortholog_table)
        total = new_report()
        total["mapping"] = mapping
        total["counts_total"], total["counts_covered"], total["n_cells_zero_counts"] = 0.0, 0.0, 0
        dup = bool(np.unique(colmap[colmap >= 0]).size < (colmap >= 0).sum())
        local = threading.local()                     # one scratch state per thread

        def encode_one(item):
            start, stop, chunk = item
            state = getattr(local, "state", None)
            if state is None:
                state = local.state = self._start_state()
            data_min, data_max = validate_values(chunk.data, input, where=f" (cells {start}-{stop})")
            part, rep = self._encode_chunk(chunk, data_min, colmap, dup, state, input)
            top = -np.inf if data_max is None else float(data_max)
            return start, stop, part, rep, zero_count_rows(chunk, data_min), top

        jobs = resolve_jobs(n_jobs) if self.parallel_chunks else 1
        chunks = iter_csr_chunks(adata, layer, chunk_size)
        results = map(encode_one, chunks) if jobs == 1 else ordered_map(encode_one, chunks, jobs)
        largest = -np.inf
        for start, stop, part, rep, n_zero, top in results:
            largest = max(largest, top)
            part.obs_index = part.obs_index + start
            total["counts_total"] += rep.pop("counts_total")
            total["counts_covered"] += rep.pop("counts_covered")
            total["n_cells_zero_counts"] += n_zero
            merge_report(total, rep)
            yield start, stop, part, total
        total["count_fraction_covered"] = (total["counts_covered"] / total["counts_total"]
                                           if total["counts_total"] else 0.0)
        if input == "normalized" and 1 < largest < LOG_LIKE_MAX:
            where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
            warnings.warn(
                f"input='normalized', but the largest value of {where} is {largest:.3g}: it looks "
                "log-transformed (log1p of values normalised to 10,000 stay below 10). Tokens are ranked "
                "by value / gene median, so log values give other tokens than the normalised ones. Fix: "
                "pass the normalised values before log1p (np.expm1 of the data), or rebuild raw counts with "
                "tflib.pp.counts_from_lognorm(adata, total_key=...) and tokenize those. Ignore this if the "
                "values really are normalised to a small total.", UserWarning, stacklevel=4)
        self._check_result(adata, total, layer=layer, gene_key=gene_key, id_type=id_type, species=species,
                           check_coverage=check_coverage, min_count_fraction=min_count_fraction,
                           gene_table=gene_table, ortholog_table=ortholog_table)

    def _check_result(self, adata, total, *, layer, gene_key, id_type, species, check_coverage,
                      min_count_fraction, gene_table, ortholog_table) -> None:
        """After the last chunk, i.e. on every cell: refuse an input that gave no tokens at all or
        whose vocabulary genes hold too few of the counts; warn about cells left out as empty."""
        n_in, n_out, n_zero = total["n_cells_in"], total["n_cells_out"], total["n_cells_zero_counts"]
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        if n_in and n_zero == n_in:
            raise TokenizerInputError(
                f"{where} has no counts at all: all {n_in:,} cells sum to 0, so there is nothing to tokenize. "
                "Fix: pass the layer that holds the raw counts (e.g. layer='counts'; see adata.layers) or reload "
                "the data.")
        m = total["mapping"]
        frac = total["count_fraction_covered"]
        if n_in and (n_out == 0 or (check_coverage and frac < min_count_fraction)):
            rule = "" if n_out == 0 else f" (threshold min_count_fraction={min_count_fraction:.0%})"
            head = ("No cell has counts in this tokenizer's genes" if n_out == 0 else
                    f"This tokenizer's genes hold only {frac:.1%} of the counts{rule}")
            raise VocabularyCoverageError(
                f"{head}: coverage is measured on counts, over all {n_in:,} cells; "
                f"{m['n_vocab_present']:,} of its {m['n_vocab_genes']:,} genes occur in the input. "
                + self._coverage_diagnosis(adata, list(adata.var_names if gene_key is None else
                                                       adata.var[gene_key].astype(str)), m,
                                           gene_key=gene_key, id_type=id_type, species=species,
                                           gene_table=gene_table, ortholog_table=ortholog_table,
                                           can_override=n_out > 0))
        n_empty = n_in - n_out
        if n_empty:
            rest = n_empty - n_zero
            has = {n: f"{n:,} {'has' if n == 1 else 'have'}" for n in (n_zero, rest)}
            detail = (f"{'it has' if n_empty == 1 else 'all have'} no counts at all" if not rest else
                      f"{has[n_zero]} no counts at all, {has[rest]} counts only in genes outside the vocabulary")
            warnings.warn(
                f"{n_empty:,} of {n_in:,} cells {'has' if n_empty == 1 else 'have'} no counts in vocabulary genes "
                "and give empty sequences "
                f"({detail}); they are left out of the result, whose obs_index lists the input row of each "
                f"kept cell (report['n_cells_skipped_empty']). Fix: drop them first "
                f"({ZERO_CELLS_FIX} for cells without counts), or ignore this if leaving them out is intended.",
                EmptyCellsWarning, stacklevel=4)

    def encode(self, adata, *, layer: str | None = None, gene_key: str | None = None, id_type: str = "auto",
               species: str = "auto", input: str = "counts", chunk_size: int = 1024,
               check_coverage: bool = True, min_gene_fraction: float = 0.0, min_count_fraction: float = 0.5,
               obs_keys=None, gene_table=None, ortholog_table=None, n_jobs: int | None = None) -> TokenizedCells:
        """Token ids of every cell (a ragged :class:`TokenizedCells`, indexable by cell).

        Parameters
        ----------
        adata
            AnnData (in memory or backed) or an ``.h5ad`` path, cells x genes.
        layer
            Where the counts are (default ``X``).
        gene_key, id_type, species
            How to read gene names (``var_names`` or a ``var`` column; Ensembl or symbol; human or
            mouse: mouse symbols are mapped to human through orthologs).
        input
            ``"counts"`` (default; must be non-negative integers) or ``"normalized"``
            (``counts / n_counts * 1e4`` already; not log-transformed).
            No ``n_counts`` is needed: the per-cell total scales every gene of a cell alike,
            so it cannot change a cell's tokens (rank) or bins (per-cell quantiles).
        chunk_size
            Cells per vectorised chunk; bounds peak memory.
        check_coverage, min_count_fraction, min_gene_fraction
            Coverage is measured on **counts**: the fraction of all counts (every cell, checked
            after the last chunk) that fall in genes this tokenizer can emit, since those are the
            words a cell's sequence is made of. Below ``min_count_fraction`` (default 50 %), or
            when no input gene maps onto the vocabulary at all, a
            :class:`~tflib.tokenize.VocabularyCoverageError` names what was detected and a fix
            that was checked to help. The fraction of the *input's* genes is not a good measure
            (a full transcriptome against a 2,000-gene vocabulary covers ~13 % of its genes but
            most of its counts), so ``min_gene_fraction`` is off (0) unless you ask for it.
            ``check_coverage=False`` skips both checks. ``report["count_fraction_covered"]`` and
            ``report["mapping"]["vocab_fraction"]`` (share of the vocabulary present) record them.
        obs_keys
            obs columns to carry along into ``result.obs`` (default: all).
        n_jobs
            Threads that encode chunks side by side (rank-value tokenizers; the binning
            tokenizer always uses one). ``None``: the cores this process may use, at most 4.
            The tokens do not depend on it: each chunk is encoded on its own and the chunks
            are returned in order.

        Cells with no counts in the tokenizable genes are left out, with an
        :class:`~tflib.tokenize.EmptyCellsWarning` that counts them (``report["n_cells_skipped_empty"]``,
        of which ``report["n_cells_zero_counts"]`` have no counts at all); ``result.obs_index`` maps
        results to input rows. An input in which every cell sums to 0 raises
        :class:`~tflib.tokenize.TokenizerInputError` with the fix.
        """
        adata = open_source(adata)
        parts, total = [], new_report()
        try:
            for _, _, part, total in self._iter_encoded(
                    adata, layer=layer, gene_key=gene_key, id_type=id_type, species=species, input=input,
                    chunk_size=chunk_size, check_coverage=check_coverage,
                    min_gene_fraction=min_gene_fraction, min_count_fraction=min_count_fraction,
                    gene_table=gene_table, ortholog_table=ortholog_table, n_jobs=n_jobs):
                parts.append(part)
        except TokenizerInputError as err:
            hint = count_layers_hint(adata, layer) if input == "counts" else ""
            if not hint:
                raise
            raise TokenizerInputError(f"{err} {hint}") from None
        out = concat(parts, self.config(), total)
        obs = adata.obs if obs_keys is None else adata.obs[list(obs_keys)]
        out.obs = obs.iloc[out.obs_index].copy()
        return out

    def encode_to_store(self, source, path, *, overwrite: bool = False, layer: str | None = None,
                        gene_key: str | None = None, id_type: str = "auto", species: str = "auto",
                        input: str = "counts", chunk_size: int = 256,
                        check_coverage: bool = True, min_gene_fraction: float = 0.0,
                        min_count_fraction: float = 0.5, obs_keys=None, gene_table=None, ortholog_table=None,
                        n_jobs: int | None = None):
        """Stream ``source`` (an ``.h5ad`` path is opened backed) into an on-disk token store.

        Same parameters as :meth:`encode`; with ``n_jobs > 1`` at most ``n_jobs + 1`` chunks are
        in memory at once. Peak memory is set by ``chunk_size``, not by the
        number of cells. The store is written to a temporary folder and renamed at the end, so
        an error leaves nothing half-written; an existing ``path`` is kept unless ``overwrite=True``.
        A plain ``.h5ad`` path (CSR ``X``; no ``layer``, ``gene_key`` or ``obs_keys``) is read with
        h5py alone, without importing anndata, and its ``obs`` is copied into the store as stored.
        Returns the opened :class:`~tflib.tokenize.TokenStore`.
        """
        from ._h5csr import open_h5ad_csr
        from .store import TokenStore, TokenStoreWriter

        # a plain .h5ad with everything default is read without importing anndata (see H5adCSR)
        light = (open_h5ad_csr(source) if isinstance(source, (str, os.PathLike)) and Path(source).is_file()
                 and layer is None and gene_key is None and obs_keys is None else None)
        try:
            adata = light if light is not None else open_source(source)
            obs = None if light is not None else adata.obs if obs_keys is None else adata.obs[list(obs_keys)]
            with TokenStoreWriter(path, config=self.config(), with_values=self.kind == "binning",
                                  overwrite=overwrite, obs_source=obs, obs_h5=light) as w:
                total = {}
                for start, stop, part, total in self._iter_encoded(
                        adata, layer=layer, gene_key=gene_key, id_type=id_type, species=species, input=input,
                        chunk_size=chunk_size, check_coverage=check_coverage,
                        min_gene_fraction=min_gene_fraction, min_count_fraction=min_count_fraction,
                        gene_table=gene_table, ortholog_table=ortholog_table, n_jobs=n_jobs):
                    w.append(part.tokens, part.offsets, values=part.values, obs_index=part.obs_index)
                w.report.update(total)
        finally:
            if light is not None:
                light.close()
        return TokenStore.open(path)

    # -- checks ---------------------------------------------------------------------------------
    def check_compatible(self, recorded: dict, what: str = "these tokens") -> None:
        """Raise :class:`TokenizerMismatchError` if ``recorded`` (a config from a token store, from
        ``adata.uns`` or from a model checkpoint) does not match this tokenizer."""
        check_configs(recorded, self.config(), what=what)

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory, overwrite: bool = False) -> Path:
        """Write ``vocab.json``, ``tokenizer_config.json`` (and ``gene_medians.json``) into ``directory``."""
        d = Path(directory)
        files = self._files()
        clash = [f for f in files if (d / f).exists()]
        if clash and not overwrite:
            raise FileExistsError(f"{d} already holds {clash}; pass overwrite=True to replace them.")
        d.mkdir(parents=True, exist_ok=True)
        self.vocab.save(d / VOCAB_FILE, overwrite=True)
        (d / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2))
        self._save_extra(d)
        return d

    def _files(self) -> list[str]:
        return [VOCAB_FILE, CONFIG_FILE]

    def _save_extra(self, d: Path) -> None:
        pass


_MUST_MATCH = ("kind", "preset", "vocab_fingerprint", "vocab_size", "max_len", "n_bins", "medians_fingerprint",
               "add_cls", "add_eos")


def check_configs(recorded: dict, current: dict, what: str = "these tokens") -> None:
    """Compare two tokenizer configs on the keys that change token meaning; raise on a mismatch."""
    diffs = {k: (recorded.get(k), current.get(k)) for k in _MUST_MATCH
             if k in recorded and k in current and recorded.get(k) != current.get(k)}
    if diffs:
        detail = "; ".join(f"{k}: recorded {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
        hint = ""
        if "preset" in diffs or "vocab_fingerprint" in diffs:
            hint = (" Geneformer V1 and V2 ids are not interchangeable (in V2, id 2 is <cls>; in V1 it is a gene).")
        raise TokenizerMismatchError(f"{what} were made with a different tokenizer ({detail}).{hint} Fix: "
                                     "re-tokenize with the current tokenizer or load the one that made them "
                                     "(tflib.tokenize.load_tokenizer).")


def validate_token_sequences(cells, tokenizer) -> None:
    """Check that ragged token ids fit ``tokenizer``: ids inside the vocabulary and, for presets with
    ``<cls>``/``<eos>``, every sequence framed by them. Raises :class:`TokenizerMismatchError`
    (e.g. V1 tokens, which have no ``<cls>``, given to a V2 vocabulary)."""
    tokens = np.asarray(cells.tokens)
    offsets = np.asarray(cells.offsets)
    n = len(offsets) - 1
    if tokens.size and (tokens.min() < 0 or tokens.max() >= len(tokenizer.vocab)):
        raise TokenizerMismatchError(f"Token ids range {tokens.min()}..{tokens.max()} exceeds the vocabulary "
                                     f"({len(tokenizer.vocab)} ids). Fix: use the vocabulary that made them.")
    nonempty = np.diff(offsets) > 0
    if n and getattr(tokenizer, "add_cls", False):
        bad = int((tokens[offsets[:-1][nonempty]] != tokenizer.vocab.cls_id).sum())
        if bad:
            raise TokenizerMismatchError(
                f"{bad} of {n} sequences do not start with <cls> (id {tokenizer.vocab.cls_id}); they look like V1 "
                "tokens (no special tokens) given to a V2 tokenizer/vocabulary. Fix: re-tokenize with preset='V2'.")
    if n and getattr(tokenizer, "add_eos", False):
        bad = int((tokens[offsets[1:][nonempty] - 1] != tokenizer.vocab.eos_id).sum())
        if bad:
            raise TokenizerMismatchError(f"{bad} of {n} sequences do not end with <eos>; re-tokenize with preset='V2'.")
    if n and not getattr(tokenizer, "add_cls", True):
        specials = [i for i in (tokenizer.vocab.cls_id, tokenizer.vocab.eos_id) if i is not None]
        if specials and np.isin(tokens, specials).any():
            raise TokenizerMismatchError("These sequences contain <cls>/<eos> ids, but the tokenizer is V1 (no "
                                         "special tokens). Fix: use preset='V2' or re-tokenize with V1.")


#: ``input="normalized"`` with every value below this (and some above 1) looks log-transformed:
#: log1p of counts normalised to 1e4 (scanpy's usual target) or even 1e6 stays below 14.
LOG_LIKE_MAX = 15.0


def resolve_jobs(n_jobs: int | None) -> int:
    """Threads for the chunk loop: ``n_jobs``, or the cores this process may use (at most 4)."""
    if n_jobs is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:                      # macOS, Windows
            cores = os.cpu_count() or 1
        return max(1, min(cores, 4))
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1 (or None for the available cores), got {n_jobs}.")
    return int(n_jobs)


def ordered_map(fn, items, n_jobs: int):
    """``map(fn, items)`` on ``n_jobs`` threads, results in input order, ``n_jobs + 1`` in flight.

    ``items`` is consumed in the calling thread (for the tokenizer: HDF5 reads, which h5py
    serialises anyway), so reading the next chunk overlaps with encoding the previous ones.
    NumPy releases the GIL in the sorts, gathers and arithmetic that dominate a chunk. An
    exception of ``fn`` is raised when its result is reached, as ``map`` would; the chunks
    still queued are cancelled.
    """
    pool = ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="tflib-tokenize")
    pending = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > n_jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
