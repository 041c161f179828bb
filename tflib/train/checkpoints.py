"""Training checkpoints and the output folder of a pretraining run (chapter 06).

A run writes into its ``out_dir`` only these entries:

- ``checkpoints/step-NNNNNN``: model (+ tokenizer) via ``save_pretrained``, the optimizer
  tensors in ``optimizer.safetensors`` and ``trainer_state.json`` (the step, the optimizer's
  settings and the whole recipe); nothing is pickled;
- ``loss_log.csv``: one row per step;
- ``model/``: the final model once the schedule is complete.

The rules that keep a user's files safe:

1. :func:`prepare_out_dir` refuses an ``out_dir`` that holds anything else (the user's own
   files), before anything is written, and says how to fix it.
2. A previous run in ``out_dir`` is continued (``resume=True``, from its newest complete
   checkpoint) or replaced only when asked (``overwrite=True``); otherwise the run is refused.
3. :func:`save_checkpoint` writes to a fresh temporary folder and renames it into place, so a
   crash never leaves a half-written ``step-*``; it deletes only older ``step-*`` folders that
   it recognises as checkpoints (``trainer_state.json`` inside and nothing but the files a
   checkpoint consists of), beyond ``keep_checkpoints``. A ``model/`` or ``step-*`` folder that
   holds any other file counts as the user's: it is never removed, and the run is refused.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from tflib.models.checkpoint import CHECKPOINT_FILES

#: Settings that must not change between a checkpoint and its resumption.
RESUME_KEYS = ("model", "seed", "batch_size", "max_steps", "lr", "min_lr", "warmup_steps", "weight_decay",
               "betas", "grad_clip", "mask_prob", "megabatch_mult", "max_len", "logits", "data", "synthetic")
#: The entries a pretraining run writes at the top of its ``out_dir``.
RUN_ENTRIES = ("checkpoints", "loss_log.csv", "model")
STATE = "trainer_state.json"
_STEP = re.compile(r"step-(\d+)")
_TMP = re.compile(r"\.tmp-step-\d+(-.*)?")
#: What save_pretrained writes (weights, config, tokenizer files), and a step folder adds to it.
_MODEL_FILES = frozenset(CHECKPOINT_FILES)
_STEP_FILES = _MODEL_FILES | {"optimizer.safetensors", STATE}


def _holds_only(path: Path, names: frozenset) -> bool:
    """Every entry of ``path`` is a file named in ``names``: nothing in it is a user's."""
    return all(p.is_file() and p.name in names for p in path.iterdir())


def _step_of(path: Path) -> int | None:
    m = _STEP.fullmatch(path.name)
    return int(m.group(1)) if m and path.is_dir() else None


def _is_checkpoint(path: Path) -> bool:
    """A ``step-*`` folder written by :func:`save_checkpoint`: ``trainer_state.json`` and only checkpoint files."""
    return _step_of(path) is not None and (path / STATE).is_file() and _holds_only(path, _STEP_FILES)


def _is_model_folder(path: Path) -> bool:
    """A folder written by ``Transcriptformer.save_pretrained``: a tflib ``config.json`` and only its files."""
    try:
        ours = json.loads((path / "config.json").read_text()).get("tflib_format") == "transcriptformer"
    except (OSError, ValueError, AttributeError):
        return False
    return ours and _holds_only(path, _MODEL_FILES)


def _foreign_entries(out_dir: Path) -> list[str]:
    """Everything in ``out_dir`` that a pretraining run does not write (the user's files)."""
    foreign = []
    for p in sorted(out_dir.iterdir()):
        if p.name not in RUN_ENTRIES:
            foreign.append(p.name)
        elif p.name == "loss_log.csv" and not p.is_file():
            foreign.append(p.name)
        elif p.name == "model" and not (p.is_dir() and _is_model_folder(p)):
            foreign.append(p.name)
        elif p.name == "checkpoints":
            if not p.is_dir():
                foreign.append(p.name)
                continue
            for c in sorted(p.iterdir()):
                ours = _is_checkpoint(c) or (c.is_dir() and _TMP.fullmatch(c.name))
                if not ours:
                    foreign.append(f"checkpoints/{c.name}")
    return foreign


def prepare_out_dir(out_dir, *, resume: bool, overwrite: bool, clean: bool = True) -> Path | None:
    """Check ``out_dir`` before a run writes to it; returns the checkpoint to resume from (or ``None``).

    Raises ``FileExistsError`` (and changes nothing) when ``out_dir`` holds files a run does not
    write, or holds a previous run that would be replaced although neither ``resume`` nor
    ``overwrite`` asked for that. With ``overwrite=True`` and nothing to resume, the previous
    run's own files (its ``step-*`` checkpoints, ``loss_log.csv`` and ``model/``) are removed
    when ``clean`` is true (rank 0 only under torchrun); nothing else is touched.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir {out_dir} is a file; choose a folder (it is created if missing).")
    if not out_dir.is_dir():
        return None
    foreign = _foreign_entries(out_dir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"out_dir {out_dir} holds files that a pretraining run does not write ({shown}); they are "
            f"left alone and nothing was written. Choose a new or empty folder, e.g. out_dir='{out_dir / 'run'}'."
        )
    ckpt_dir = out_dir / "checkpoints"
    last = latest_checkpoint(ckpt_dir) if resume else None
    if last is not None:
        return last
    previous = [p.name for p in (out_dir / "loss_log.csv", out_dir / "model") if p.exists()]
    if ckpt_dir.is_dir():
        previous += [f"checkpoints/{c.name}" for c in sorted(ckpt_dir.iterdir()) if _is_checkpoint(c)]
    if previous and not overwrite:
        why = "has no complete checkpoint to resume from" if resume else "would be replaced (resume=False)"
        raise FileExistsError(
            f"out_dir {out_dir} holds a previous pretraining run ({', '.join(previous[:4])}) that {why}. "
            "Pass overwrite=True (command line: --overwrite) to start over in this folder, "
            "or choose a new out_dir to keep it."
        )
    if previous and clean:
        for name in ("loss_log.csv",):
            (out_dir / name).unlink(missing_ok=True)
        if _is_model_folder(out_dir / "model"):                       # checked again at the moment of deleting
            shutil.rmtree(out_dir / "model")
        for c in (sorted(ckpt_dir.iterdir()) if ckpt_dir.is_dir() else []):
            if _is_checkpoint(c):
                shutil.rmtree(c)
    return None


def save_checkpoint(directory, model, optimizer, step: int, cfg, tokenizer=None) -> Path:
    """Write ``directory/step-NNNNNN`` atomically: model (+ tokenizer), optimizer tensors, state JSON.

    ``cfg`` is the run's :class:`~tflib.train.PretrainConfig` (recorded whole, and its
    ``keep_checkpoints`` decides how many older checkpoints stay). Only folders that are
    checkpoints (``step-*`` with ``trainer_state.json``) of an earlier step are ever removed.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:06d}"
    if final.exists() and not _is_checkpoint(final):
        raise FileExistsError(f"{final} exists and is not a checkpoint; move it away, it is not replaced.")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-", dir=directory))  # fresh: never someone's folder
    try:
        model.save_pretrained(tmp, tokenizer=tokenizer)
        sd = optimizer.state_dict()
        tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items() for k, v in st.items()}
        save_file(tensors, tmp / "optimizer.safetensors")
        state = {"step": step, "param_groups": sd["param_groups"], "config": asdict(cfg)}
        (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
        tmp.chmod(0o755)                                                # mkdtemp makes it private
        old = None
        if final.exists():                                              # our own checkpoint of this step
            old = final.rename(directory / f".tmp-step-{step:06d}-old-{tmp.name.rsplit('-', 1)[-1]}")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)                          # only the folder made above
        raise
    if old is not None:
        shutil.rmtree(old)
    older = sorted((p for p in directory.iterdir() if _is_checkpoint(p) and _step_of(p) < step), key=_step_of)
    for p in older[: max(0, len(older) + 1 - cfg.keep_checkpoints)]:
        shutil.rmtree(p)
    return final


def latest_checkpoint(directory) -> Path | None:
    """The newest complete ``step-*`` folder under ``directory`` (or ``None``)."""
    directory = Path(directory)
    done = [p for p in directory.iterdir() if _is_checkpoint(p)] if directory.is_dir() else []
    return max(done, default=None, key=_step_of)


def load_checkpoint(path, model, optimizer, cfg) -> int:
    """Restore weights and optimizer state from ``path``; returns the step to continue from."""
    from safetensors.torch import load_file

    from tflib.models import load_pretrained

    state = json.loads((Path(path) / STATE).read_text())
    changed = [k for k in RESUME_KEYS if json.dumps(state["config"].get(k)) != json.dumps(asdict(cfg).get(k))]
    if changed:
        raise ValueError(
            f"cannot resume from {path}: the recipe changed ({', '.join(changed)}). Use a new out_dir, "
            "or set resume=False and overwrite=True to start over in this one."
        )
    saved, _ = load_pretrained(path, load_tokenizer=False)
    model.load_state_dict(saved.state_dict())
    tensors = load_file(Path(path) / "optimizer.safetensors")
    per_param: dict[int, dict] = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        per_param.setdefault(int(i), {})[name] = v
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    return int(state["step"])
