"""Small shared helpers: explicit seeds, automatic device choice, the reproducibility footer
and the display rounding of the chapters' tables.

Every notebook of the course calls :func:`notebook_setup` (which calls :func:`set_seed`) in its
first code cell and :func:`footer` in its last cell (checklist item 16). Tables are shown
through :func:`round_sig` or :func:`format_sig`; :func:`dense` turns a sparse layer into an
array.
"""
from __future__ import annotations

import os
import platform
import random
import time
from importlib import metadata

import numpy as np

from tflib._compat import dense  # noqa: F401  (public here: notebooks use tflib.utils.dense)

_T0 = time.perf_counter()
_SEED: int | None = None

#: Packages whose versions the footer reports.
FOOTER_PACKAGES = (
    "tflib", "numpy", "scipy", "pandas", "anndata", "scanpy", "scvelo", "cellrank",
    "scvi-tools", "torch", "transformers", "scikit-learn",
)


def set_seed(seed: int = 0) -> np.random.Generator:
    """Seed Python, NumPy and (if imported) torch, and return a NumPy ``Generator``.

    Used by every chapter. Returns ``np.random.default_rng(seed)`` so code can pass an
    explicit generator around instead of relying on global state.
    """
    global _SEED
    _SEED = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep import cheap
        pass
    return np.random.default_rng(seed)


def get_device(prefer: str | None = None):
    """Pick the best available torch device: CUDA, then Apple MPS, then CPU.

    Parameters
    ----------
    prefer
        Force a device string (e.g. ``"cpu"``). ``None`` (default) chooses automatically;
        the environment variable ``TFLIB_DEVICE`` overrides it too. The course never
        hard-codes an accelerator (chapters 05--07, 10).
    """
    import torch

    choice = prefer or os.environ.get("TFLIB_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device(torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def notebook_setup(seed: int = 0, *, dpi: int = 90) -> np.random.Generator:
    """The first code cell of a chapter in one call: seeds, quiet libraries, plot style.

    Seeds everything (:func:`set_seed`), silences scanpy's progress messages, FutureWarnings and
    the lightning/scvi-tools log lines that would otherwise fill the rendered pages, and sets
    the course's matplotlib style (no top/right spines, ``dpi``). Returns the NumPy generator.
    Used by every chapter.
    """
    import logging
    import warnings

    rng = set_seed(seed)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    for name in ("lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import scanpy as sc

        sc.settings.verbosity = 0
    except ImportError:  # pragma: no cover - scanpy is a dependency
        pass
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": dpi, "axes.spines.top": False, "axes.spines.right": False})
    return rng


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def footer_info(seed: int | None = None, extra: dict | None = None) -> dict:
    """The reproducibility record that :func:`footer` prints: versions, seed, hardware and runtime."""
    info = {pkg: _version(pkg) for pkg in FOOTER_PACKAGES}
    info["python"] = platform.python_version()
    info["platform"] = f"{platform.system()} {platform.machine()}"
    info["cpu cores"] = os.cpu_count()
    try:
        import torch

        info["device"] = str(get_device())
        info["torch threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    info["seed"] = seed if seed is not None else _SEED
    info["runtime (s)"] = round(time.perf_counter() - _T0, 1)
    if extra:
        info.update(extra)
    return info


#: The first line of the footer table (the book's tests look for it in every chapter page).
FOOTER_TITLE = "Reproducibility footer"


def footer(seed: int | None = None, extra: dict | None = None) -> None:
    """Print the reproducibility footer table: versions, seed, hardware and runtime.

    Called in the last cell of every notebook. It returns ``None`` so that the table is the
    cell's only output (a returned dict would be displayed a second time); the record itself
    is :func:`footer_info`. The runtime is measured from the first import of
    :mod:`tflib.utils` in the kernel.
    """
    import sys

    info = footer_info(seed, extra)
    width = max(len(k) for k in info)
    lines = [FOOTER_TITLE] + [f"  {k:<{width}}  {v}" for k, v in info.items()]
    # one write: a Jupyter kernel flushes stdout on a timer, and a flush between two prints
    # split the table into two outputs (with a blank line in the first) in one book build
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def write_json(path, obj, overwrite: bool = False):
    """Write ``obj`` as JSON to ``path``, refusing to replace an existing file unless ``overwrite``.

    Shared by the vocabulary and gene-median files of :mod:`tflib.tokenize` (chapter 04), so that
    nothing on disk is replaced by accident.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def round_sig(table, digits: int = 3):
    """A display copy with every float rounded to ``digits`` significant digits.

    Accepts a DataFrame, a Series or a single number; integers, strings and other cells are
    left as they are. Chapters 01, 02 and 06--10 pass their tables through it before showing
    them (the numbers in the prose come from ``glue``, unrounded).
    """
    import pandas as pd

    def one(x):
        return float(f"{x:.{digits}g}") if isinstance(x, (float, np.floating)) else x

    if isinstance(table, (pd.DataFrame, pd.Series)):
        return table.map(one)
    return one(table)


def format_sig(value) -> str:
    """``value`` as text with 3 significant digits; whole numbers from 1,000 up written out.

    The ``display.float_format`` of chapters 04 and 05:
    ``pd.set_option("display.float_format", tflib.utils.format_sig)``.
    """
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
