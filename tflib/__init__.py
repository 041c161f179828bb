"""tflib: the library behind the *Transcriptformers* course.

Sub-packages are imported lazily so that ``import tflib`` stays fast (scvi-tools alone
takes seconds to import):

- :mod:`tflib.datasets` -- registry of real datasets, readers and the ground-truth simulator
- :mod:`tflib.tokenize` -- gene vocabularies, gene medians, rank-value and binning tokenizers
- :mod:`tflib.models`   -- the Transcriptformer encoder and its heads
- :mod:`tflib.train`    -- pretraining and fine-tuning loops
- :mod:`tflib.pp`, :mod:`tflib.tl`, :mod:`tflib.pl` -- scanpy-style verbs on AnnData
- :mod:`tflib.stats`    -- hypothesis tests, FDR, bootstrap
- :mod:`tflib.utils`    -- seeds, device choice, the reproducibility footer
- :mod:`tflib.validation` -- the one count validator (every value checked) and zero-count cells
- :mod:`tflib.widgets`  -- interactive explorers (ipywidgets) with static fallbacks
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"datasets", "tokenize", "models", "train", "pp", "tl", "pl", "stats", "utils", "validation", "widgets"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"tflib.{name}")
    raise AttributeError(f"module 'tflib' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
