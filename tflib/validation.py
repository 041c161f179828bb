"""One validator for count matrices, used everywhere raw counts enter the library.

Counts enter tflib in three places: the tokenizers (chapters 03--05), RNA velocity
(:func:`tflib.tl.velocity`, chapter 08) and scVI (:func:`tflib.tl.scvi_integrate` and
:func:`tflib.tl.map_query`, chapter 02). All of them check their input with
:func:`check_counts`, which looks at *every* stored value, in chunks so that memory stays
bounded: on a CSR/CSC matrix only the ``.data`` array is read (implicit zeros are valid counts),
on a dense array a block of rows at a time. The first bad value is reported with its cell and
gene (index and name), together with the fix that applies.

:func:`zero_count_cells` and :func:`check_zero_counts` deal with empty cells: an all-zero
matrix is refused (there is nothing to learn from it), cells without counts are reported with a
warning that says how many there are and how to drop them.

This module imports NumPy and SciPy only, so the tokenizers may use it without pulling in
scanpy or torch.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

__all__ = ["CountsError", "check_counts", "count_layers_hint", "zero_count_cells", "check_zero_counts",
           "ZERO_CELLS_FIX"]

#: The one-line fix for cells without counts (scanpy's cell filter).
ZERO_CELLS_FIX = "sc.pp.filter_cells(adata, min_counts=1)"

_DEFAULT_CHUNK = 1 << 22  # values per chunk: a few tens of MB of temporaries at most


class CountsError(ValueError):
    """A matrix that should hold raw counts does not (the message names the problem and the fix)."""


def _resolve(X, layer, name):
    """``(matrix, name, obs_names, var_names)`` from a matrix or an AnnData (+ ``layer``)."""
    if hasattr(X, "obs_names") and hasattr(X, "layers"):
        adata = X
        if layer is None:
            M, default = adata.X, "adata.X"
        else:
            if layer not in adata.layers:
                have = ", ".join(map(repr, adata.layers.keys())) or "none"
                raise KeyError(f"adata.layers has no {layer!r} (layers present: {have}).")
            M, default = adata.layers[layer], f"adata.layers[{layer!r}]"
        if M is None:
            raise CountsError(f"{name or default} is empty (None). Fix: put the raw counts in adata.X, or pass "
                              "layer= naming the layer that holds them (e.g. layer='counts').")
        return M, name or default, np.asarray(adata.obs_names), np.asarray(adata.var_names)
    if layer is not None:
        raise TypeError("layer= needs an AnnData; pass the matrix itself otherwise.")
    return X, name or "adata.X", None, None


def _label(kind, i, names):
    if names is not None and 0 <= i < len(names):
        return f"{kind} {i} ({names[i]!r})"
    return f"{kind} {i}"


class _Tally:
    """Counts of each kind of bad value and the first position (row, column) of each."""

    def __init__(self):
        self.n = {"nonfinite": 0, "negative": 0, "fraction": 0}
        self.first: dict[str, tuple[int, int]] = {}
        self.max_value = -np.inf

    def add(self, kind, mask, locate):
        k = int(np.count_nonzero(mask))
        if k:
            self.n[kind] += k
            if kind not in self.first:
                self.first[kind] = locate(int(np.flatnonzero(mask)[0]))


def _scan(values, tally, locate, require_integer):
    """Update ``tally`` with the bad entries of one 1-D block of stored values."""
    if values.dtype.kind in "biu":  # integer storage: only negatives are possible
        if values.dtype.kind == "i" and values.size:
            tally.add("negative", values < 0, locate)
            tally.max_value = max(tally.max_value, float(values.max()))
        elif values.size:
            tally.max_value = max(tally.max_value, float(values.max()))
        return
    finite = np.isfinite(values)
    tally.add("nonfinite", ~finite, locate)
    tally.add("negative", finite & (values < 0), locate)
    if require_integer:
        tally.add("fraction", finite & (values != np.floor(values)), locate)
    if finite.any():
        tally.max_value = max(tally.max_value, float(values[finite].max()))


def _scan_matrix(M, require_integer, chunk_size) -> _Tally:
    tally = _Tally()
    if sp.issparse(M):
        if M.format not in ("csr", "csc"):
            M = M.tocsr()
        data, indices, indptr = M.data, M.indices, M.indptr
        major_is_row = M.format == "csr"
        for lo in range(0, data.size, chunk_size):
            hi = min(lo + chunk_size, data.size)

            def locate(k, lo=lo):
                pos = lo + k
                major = int(np.searchsorted(indptr, pos, side="right") - 1)
                minor = int(indices[pos])
                return (major, minor) if major_is_row else (minor, major)

            _scan(np.asarray(data[lo:hi]), tally, locate, require_integer)
        return tally
    if not hasattr(M, "shape") or len(M.shape) != 2:
        M = np.asarray(M)
        if M.ndim != 2:
            raise CountsError(f"Expected a 2-D cells x genes matrix, got an array of shape {M.shape}.")
    n_rows, n_cols = M.shape
    rows = max(1, chunk_size // max(n_cols, 1))
    for start in range(0, n_rows, rows):
        block = np.asarray(M[start:start + rows])

        def locate(k, start=start):
            return start + k // n_cols, k % n_cols

        _scan(block.ravel(), tally, locate, require_integer)
    return tally


def count_layers_hint(adata, layer: str | None = None) -> str:
    """Where the raw counts of ``adata`` are, for an error about non-count input (one sentence).

    Names the layers that look like raw counts (or ``adata.X`` when a layer was passed,
    or ``adata.raw``), and says so when there are none, so the advice never names a layer
    that does not exist. Used by :func:`check_counts`, the tokenizers and
    :func:`tflib.stats.pseudobulk_test`.

    Looks at up to 100,000 stored values of each layer (a hint, not a check: the tokenizer
    still checks every value of the layer the user then passes).
    """
    layers = getattr(adata, "layers", None)
    if layers is None:
        return ""

    def looks_like_counts(M) -> bool:
        vals = np.asarray(M.data if hasattr(M, "data") and not isinstance(M, np.ndarray) else M).ravel()[:100_000]
        return bool(vals.size and np.issubdtype(vals.dtype, np.number) and np.isfinite(vals).all()
                    and (vals >= 0).all() and np.array_equal(vals, np.round(vals)) and vals.max() > 0)

    if layer is not None and getattr(adata, "X", None) is not None and looks_like_counts(adata.X):
        return "adata.X looks like raw counts: pass layer=None to use it."
    found = [name for name in layers.keys()
             if name != layer and not any(w in name.lower() for w in ("unspliced", "ambiguous"))
             and looks_like_counts(layers[name])]  # unspliced/ambiguous: counts, but not of mRNA
    if found:
        return f"This AnnData has layers that look like raw counts: {found}; e.g. pass layer={found[0]!r}."
    raw = getattr(adata, "raw", None)
    if raw is not None and looks_like_counts(raw.X):
        return "adata.raw.X looks like raw counts: pass adata.raw.to_adata() instead."
    names = list(layers.keys())
    return (f"None of this AnnData's layers ({names if names else 'it has none'}) nor adata.raw looks like "
            "raw counts, so there is no layer to pass here: load the raw counts, or, for log-normalised "
            "values with known per-cell totals, rebuild them with tflib.pp.counts_from_lognorm(adata, "
            "total_key=...).")


def check_counts(X, *, layer: str | None = None, name: str | None = None, require_integer: bool = True,
                 chunk_size: int = _DEFAULT_CHUNK, fix: str | None = None, advice: str | None = None) -> None:
    """Raise :class:`CountsError` unless every value of ``X`` is a finite, non-negative count.

    Used by the tokenizers, :func:`tflib.tl.velocity` and :func:`tflib.tl.scvi_integrate`
    (chapters 02--05 and 08). Every stored value is inspected, ``chunk_size`` values at a time
    (sparse: ``.data`` only; dense: blocks of rows), so a NaN in the last row is found as surely
    as one in the first.

    Parameters
    ----------
    X
        A cells x genes matrix (NumPy array, SciPy sparse matrix) or an AnnData (then ``layer``
        selects the matrix and the message names cells and genes by ``obs_names``/``var_names``).
    layer
        With an AnnData: the layer to check (``None``: ``.X``).
    name
        How the matrix is called in the message (default ``"adata.X"`` or
        ``"adata.layers['<layer>']"``).
    require_integer
        Also refuse non-integer values (raw counts are integers; per-cell normalised input is not).
    chunk_size
        Values per chunk; bounds the temporary memory.
    fix
        An extra, caller-specific sentence appended to the message (e.g. the name of an option).
    advice
        Replaces the default advice (``"Fix: pass the raw counts layer, e.g. layer='counts'
        ..."``) for a caller whose own arguments differ (e.g. :func:`tflib.tl.velocity`, which
        reads fixed layers).

    Raises
    ------
    CountsError
        With the number of NaN/infinite, negative and (when required) non-integer values, the cell
        and gene of the first of each kind, what the matrix looks like, and how to fix it.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    M, name, obs_names, var_names = _resolve(X, layer, name)
    tally = _scan_matrix(M, require_integer, int(chunk_size))
    if not any(tally.n.values()):
        return
    what = {"nonfinite": "NaN or infinite", "negative": "negative", "fraction": "non-integer"}
    parts = []
    for kind, count in tally.n.items():
        if count:
            i, j = tally.first[kind]
            parts.append(f"{count:,} {what[kind]} value{'s' if count > 1 else ''} (first at "
                         f"{_label('cell', i, obs_names)}, {_label('gene', j, var_names)})")
    if tally.n["negative"]:
        looks = "It looks scaled or centred (e.g. by sc.pp.scale or regress_out)."
    elif tally.n["fraction"]:
        looks = ("It looks log-normalised (all values below 20)." if tally.max_value < 20
                 else "It looks size-normalised (per-cell scaled), not raw.")
    else:
        looks = "NaN or infinite values are never counts (a division by a zero total, or a failed merge?)."
    if advice is None:
        where = count_layers_hint(X, layer) if obs_names is not None else ""
        advice = (f"Fix: {where} Counts are never normalised or log-transformed beforehand." if where else
                  "Fix: pass the raw counts layer, e.g. layer='counts' (or reload the raw data / adata.raw); "
                  "counts are never normalised or log-transformed beforehand.")
    if tally.n["nonfinite"] and not (tally.n["negative"] or tally.n["fraction"]):
        advice += (" If the NaN mark genuinely missing measurements, replace them by 0 "
                   "(X.data = np.nan_to_num(X.data)) or drop the affected cells.")
    message = f"{name} does not hold raw counts: " + "; ".join(parts) + f". {looks} {advice}"
    if fix:
        message += " " + fix
    raise CountsError(message)


def zero_count_cells(X, *, layer: str | None = None, chunk_size: int = _DEFAULT_CHUNK) -> np.ndarray:
    """Boolean mask of the cells (rows) whose counts sum to 0.

    ``X`` is a matrix or an AnnData (``layer`` then selects the matrix). Dense input is summed a
    block of rows at a time. Used by the tokenizers, :func:`tflib.tl.velocity` and
    :func:`tflib.tl.scvi_integrate` (chapters 02--05, 08).
    """
    M, _, _, _ = _resolve(X, layer, None)
    if sp.issparse(M):
        totals = np.asarray(M.sum(axis=1), dtype=np.float64).ravel()
        return totals == 0
    n_rows, n_cols = M.shape
    rows = max(1, int(chunk_size) // max(n_cols, 1))
    mask = np.empty(n_rows, dtype=bool)
    for start in range(0, n_rows, rows):
        mask[start:start + rows] = np.asarray(M[start:start + rows], dtype=np.float64).sum(axis=1) == 0
    return mask


def check_zero_counts(X, *, layer: str | None = None, name: str | None = None, on_zero_cells: str = "warn",
                      consequence: str = "", stacklevel: int = 2, mask: np.ndarray | None = None) -> np.ndarray:
    """Refuse an all-zero matrix; warn about (or refuse) cells without counts. Returns their mask.

    Parameters
    ----------
    X, layer, name
        As in :func:`check_counts`.
    on_zero_cells
        ``"warn"`` (a ``UserWarning`` with the number of empty cells), ``"raise"``
        (:class:`CountsError`) or ``"ignore"``. The cells are never removed here: the caller
        decides, and the message names the fix (:data:`ZERO_CELLS_FIX`).
    consequence
        What the caller does with such cells, appended to the message.
    mask
        A precomputed :func:`zero_count_cells` mask (e.g. over several layers).

    Raises
    ------
    CountsError
        When every cell has zero counts, or when ``on_zero_cells="raise"`` and any cell has.
    """
    if on_zero_cells not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_zero_cells must be 'warn', 'raise' or 'ignore', not {on_zero_cells!r}.")
    M, name, obs_names, _ = _resolve(X, layer, name)
    zero = zero_count_cells(M) if mask is None else np.asarray(mask, dtype=bool)
    n, n_zero = zero.size, int(zero.sum())
    if n and n_zero == n:
        raise CountsError(f"{name} has no counts at all: all {n:,} cells sum to 0. Fix: pass the layer that "
                          "holds the raw counts, e.g. layer='counts' (check adata.layers), or reload the data.")
    if n_zero == 0 or on_zero_cells == "ignore":
        return zero
    first = _label("cell", int(np.flatnonzero(zero)[0]), obs_names)
    message = (f"{n_zero:,} of {n:,} cells in {name} have zero counts (first: {first}).")
    if consequence:
        message += " " + consequence
    message += f" Fix: drop them first with {ZERO_CELLS_FIX}."
    if on_zero_cells == "raise":
        raise CountsError(message)
    warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
    return zero
