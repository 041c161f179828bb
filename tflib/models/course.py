"""The course checkpoint, read side: one call gives every chapter the same small pretrained model (chapters 05--07, 10).

:func:`course_checkpoint` looks in two places:

1. the copy shipped with ``tflib`` (``tflib/resources/course_checkpoint/``), used only when the
   SHA-256 of every file matches the manifest in its ``metrics.json``;
2. the user cache (``<tflib cache>/course_checkpoint``, or ``cache_dir``), checked the same way.

A ``cache_dir`` you pass is looked at *first* (you asked for it); without one, the shipped copy
comes first. Nothing here trains: this package sits below :mod:`tflib.train`. The recipe that
makes the checkpoint, and the writer that puts it on disk without ever deleting a folder it did
not write, live in :mod:`tflib.train.course` (``tflib.train.train_course_checkpoint`` or
``python -m tflib.train.corpus --out DIR``).

What a checkpoint folder holds: ``model.safetensors``, ``config.json``, the tokenizer files
(``vocab.json``, ``tokenizer_config.json``, ``gene_medians.json``), ``loss_log.csv`` (the
recipe's loss per step) and ``metrics.json`` (held-out accuracy at ``<mask>`` positions beside
the baselines, the corpus report and the file manifest). A folder written by tflib also holds
the marker file :data:`MARKER`, which lists what was written; only such a folder may be replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import CheckpointError, sha256

SHIPPED = Path(__file__).resolve().parent.parent / "resources" / "course_checkpoint"
MANIFEST_FILES = ("model.safetensors", "config.json", "vocab.json", "tokenizer_config.json", "gene_medians.json",
                  "loss_log.csv")
#: Written last into every course-checkpoint folder tflib writes: ``{"written_by", "files"}``.
MARKER = "tflib_course_checkpoint.json"


def default_cache_dir() -> Path:
    """``<tflib cache>/course_checkpoint`` (``TFLIB_CACHE`` moves the tflib cache)."""
    from tflib.datasets.retrieval import cache_dir

    return cache_dir() / "course_checkpoint"


def verify_checkpoint(directory) -> tuple[bool, str]:
    """``(ok, why)``: every file in the ``metrics.json`` manifest exists with its recorded SHA-256."""
    directory = Path(directory)
    metrics = directory / "metrics.json"
    if not metrics.is_file():
        return False, f"{metrics} is missing"
    try:
        manifest = json.loads(metrics.read_text())["sha256"]
    except (json.JSONDecodeError, KeyError) as err:
        return False, f"{metrics} has no readable sha256 manifest ({err})"
    for name, digest in manifest.items():
        path = directory / name
        if not path.is_file():
            return False, f"{path} is missing"
        if sha256(path) != digest:
            return False, f"{path} does not match its SHA-256 in metrics.json (corrupt or edited)"
    return True, "ok"


def course_checkpoint(*, retrain: bool = False, cache_dir=None, device=None):
    """The course's pretrained Transcriptformer and its tokenizer: ``(model, tokenizer)``.

    Parameters
    ----------
    retrain
        No longer supported here (``tflib.models`` does not import training code): passing
        ``True`` raises an error that names the two-line replacement with
        :func:`tflib.train.train_course_checkpoint`.
    cache_dir
        A course-checkpoint folder to load first (e.g. one written by
        ``tflib.train.train_course_checkpoint``); default :func:`default_cache_dir`, looked at
        after the shipped copy.
    device
        Where to put the model; default :func:`tflib.utils.get_device`.

    Returns
    -------
    (Transcriptformer, RankValueTokenizer)
        The model is in eval mode; ``model.course_metrics`` holds its ``metrics.json`` and
        ``model.course_dir`` the folder it came from.

    Used in chapters 05, 06 (pretraining), 07 (embeddings) and 10.
    """
    from tflib.utils import get_device

    from .transformer import load_pretrained

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if retrain:
        raise ValueError(
            "course_checkpoint(retrain=True) moved to the training package (tflib.models imports no "
            "training code). Run:\n"
            f"    path = tflib.train.train_course_checkpoint({str(cache)!r}, overwrite=True)\n"
            "    model, tokenizer = tflib.models.course_checkpoint(cache_dir=path)\n"
            "or, from a shell: python -m tflib.train.corpus --out DIR --overwrite"
        )
    order = (cache, SHIPPED) if cache_dir is not None else (SHIPPED, cache)
    reasons = []
    for candidate in order:
        ok, why = verify_checkpoint(candidate)
        if ok:
            model, tokenizer = load_pretrained(candidate, device=device if device is not None else get_device())
            model.course_metrics = json.loads((candidate / "metrics.json").read_text())
            model.course_dir = candidate
            return model, tokenizer
        reasons.append(why)
    raise CheckpointError(
        "No verified course checkpoint was found (" + "; ".join(reasons) + "). Reinstall tflib to restore "
        f"the shipped copy, or train one: tflib.train.train_course_checkpoint({str(cache)!r}) "
        "(about an hour on 2 CPU cores), then course_checkpoint(cache_dir=that folder)."
    )
