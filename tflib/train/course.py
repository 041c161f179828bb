"""Writing a course-checkpoint folder without ever losing a user's files (chapter 06).

The recipe that trains the course model is :func:`tflib.train.corpus.train_course_checkpoint`
(also ``python -m tflib.train.corpus --out DIR``); this module puts its result on disk, and
:func:`tflib.models.course_checkpoint` reads it back.

The rules, in order:

1. a missing or empty target folder is written;
2. a target that holds anything tflib did not write is refused, whatever ``overwrite`` says:
   tflib recognises its own folders by the marker file
   :data:`tflib.models.course.MARKER`, which lists every file it wrote, and refuses a folder
   without it or with anything not on its list;
3. a course checkpoint tflib wrote is replaced only with ``overwrite=True``;
4. the new checkpoint is written into a temporary sibling folder and renamed into place at the
   end; the old one is renamed aside first and deleted only once the new one is in place. A
   failure at any step leaves the old checkpoint where it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from tflib.models.checkpoint import sha256
from tflib.models.course import MANIFEST_FILES, MARKER

__all__ = ["check_target", "write_checkpoint"]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_target(directory, *, overwrite: bool = False) -> bool:
    """Raise ``FileExistsError`` unless ``directory`` may receive a course checkpoint.

    Returns ``True`` when an existing course checkpoint will be replaced (``overwrite=True``),
    ``False`` when the folder is missing or empty. Nothing is changed on disk.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a folder; choose a folder for the course checkpoint.")
    if not directory.is_dir():
        return False
    entries = sorted(p.name for p in directory.iterdir())
    if not entries:
        return False
    written = None
    try:
        marker = json.loads((directory / MARKER).read_text())
        written = set(marker["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if written is None:
        raise FileExistsError(
            f"{directory} already holds files that tflib did not write ({_shown(entries)}); they are left "
            f"alone and nothing was written. Choose a new or empty folder, e.g. {directory / 'course_checkpoint'}."
        )
    foreign = [name for name in entries if name not in written]
    if foreign:
        raise FileExistsError(
            f"{directory} is a course checkpoint but also holds files that tflib did not write "
            f"({_shown(foreign)}); nothing was changed. Move those files elsewhere, or choose another folder."
        )
    if not overwrite:
        raise FileExistsError(
            f"{directory} already holds a course checkpoint written by tflib. Pass overwrite=True "
            "(command line: --overwrite) to replace it, or choose another folder to keep it."
        )
    return True


def _swap(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` to ``target``; an existing ``target`` is set aside first."""
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        if aside is not None:
            os.rename(aside, target)                                    # put the old one back
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)                        # holds only files tflib wrote


def write_checkpoint(directory, model, tokenizer, loss_log, metrics: dict, *, overwrite: bool = False) -> Path:
    """Write model, tokenizer, loss log, ``metrics.json`` (with the SHA-256 manifest) and the marker.

    Parameters
    ----------
    directory
        The checkpoint folder. It may be missing or empty; an existing course checkpoint that
        tflib wrote is replaced only with ``overwrite=True``; any other folder is refused
        (see :func:`check_target`).
    model, tokenizer
        The trained :class:`~tflib.models.Transcriptformer` and its tokenizer.
    loss_log
        The run's ``loss_log.csv``.
    metrics
        What :func:`tflib.train.corpus.train_course_model` measured; the manifest is added.
    overwrite
        Replace a course checkpoint that tflib wrote earlier in ``directory``.

    Returns
    -------
    Path
        ``directory``.

    Used by chapter 06's recipe (:func:`tflib.train.corpus.train_course_checkpoint`).
    """
    directory = Path(directory)
    check_target(directory, overwrite=overwrite)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        shutil.copyfile(loss_log, tmp / "loss_log.csv")
        metrics = dict(metrics)
        metrics["sha256"] = {f: sha256(tmp / f) for f in MANIFEST_FILES if (tmp / f).is_file()}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        files = sorted(p.name for p in tmp.iterdir()) + [MARKER]
        (tmp / MARKER).write_text(json.dumps({"written_by": "tflib.train.course.write_checkpoint",
                                              "files": files}, indent=2) + "\n")
        tmp.chmod(0o755)                                                # mkdtemp makes it private
        for f in tmp.iterdir():
            f.chmod(0o644)
        check_target(directory, overwrite=overwrite)                    # nothing appeared meanwhile
        _swap(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)                          # only when something failed
    return directory
