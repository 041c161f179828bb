"""The course checkpoint: one call gives every chapter the same small pretrained model (chapters 06--07, 10--13).

:func:`course_checkpoint` looks in three places, in order:

1. the copy shipped with ``tflib`` (``tflib/resources/course_checkpoint/``), used only when the
   SHA-256 of every file matches the manifest in its ``metrics.json``;
2. the user cache (``<tflib cache>/course_checkpoint``, or ``cache_dir``), checked the same way;
3. otherwise it *trains* the model with the course recipe
   (``tflib/resources/recipes/course.toml``, at most 10 minutes on 2 CPU cores) and writes
   it to the cache, so the next call loads it in a second.

``retrain=True`` skips 1 and 2. What a checkpoint folder holds: ``model.safetensors``,
``config.json``, the tokenizer files (``vocab.json``, ``tokenizer_config.json``,
``gene_medians.json``), ``loss_log.csv`` (the recipe's loss per step) and ``metrics.json``
(held-out masked-gene accuracy, the baselines, the corpus report and the file manifest).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .checkpoint import sha256

SHIPPED = Path(__file__).resolve().parent.parent / "resources" / "course_checkpoint"
MANIFEST_FILES = ("model.safetensors", "config.json", "vocab.json", "tokenizer_config.json", "gene_medians.json",
                  "loss_log.csv")


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


def write_checkpoint(directory, model, tokenizer, loss_log, metrics: dict) -> Path:
    """Write model, tokenizer, loss log and ``metrics.json`` (with the SHA-256 manifest) atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".course-", dir=directory.parent))
    try:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        shutil.copyfile(loss_log, tmp / "loss_log.csv")
        metrics = dict(metrics)
        metrics["sha256"] = {f: sha256(tmp / f) for f in MANIFEST_FILES if (tmp / f).is_file()}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)                                                # mkdtemp makes it private
        for f in tmp.iterdir():
            f.chmod(0o644)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def train_course_checkpoint(directory, recipe=None, progress: bool = True) -> Path:
    """Run the course recipe and write the checkpoint folder ``directory`` (what ``retrain=True`` does)."""
    from tflib.train.corpus import train_course_model

    with tempfile.TemporaryDirectory(prefix="tflib-course-run-") as run:
        result, corpus, metrics = train_course_model(run, recipe, progress=progress)
        return write_checkpoint(directory, result.model, corpus.tokenizer, Path(run) / "loss_log.csv", metrics)


def course_checkpoint(*, retrain: bool = False, cache_dir=None, device=None):
    """The course's pretrained Transcriptformer and its tokenizer: ``(model, tokenizer)``.

    Parameters
    ----------
    retrain
        Ignore the shipped and cached copies and train again with the course recipe
        (about 5--10 minutes on 2 CPU cores); the result replaces the cached copy.
    cache_dir
        Where a trained copy is kept (default :func:`default_cache_dir`).
    device
        Where to put the model; default :func:`tflib.utils.get_device`.

    Returns
    -------
    (Transcriptformer, RankValueTokenizer)
        The model is in eval mode; ``model.course_metrics`` holds its ``metrics.json``.

    Used in chapters 06 (pretraining) and 07 (embeddings), and by later chapters that need a
    pretrained model.
    """
    from tflib.utils import get_device

    from .checkpoint import load_pretrained

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    chosen = None
    if not retrain:
        for candidate in (SHIPPED, cache):
            if verify_checkpoint(candidate)[0]:
                chosen = candidate
                break
    if chosen is None:
        chosen = train_course_checkpoint(cache)
    model, tokenizer = load_pretrained(chosen, device=device if device is not None else get_device())
    model.course_metrics = json.loads((chosen / "metrics.json").read_text())
    model.course_dir = chosen
    return model, tokenizer
