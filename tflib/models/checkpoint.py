"""Checkpoints: safetensors weights + JSON config + the tokenizer, checked on load (chapters 06--07).

A tflib checkpoint folder holds

- ``config.json``: ``{"tflib_format": "transcriptformer", "format_version": 1, "model": {...},
  "tokenizer": {"kind", "preset", "vocab_size"} or null, "weights": {"file", "sha256", "bytes"}}``;
- ``model.safetensors``: the weights (the decoder weight is tied to the input embeddings and
  stored once);
- the tokenizer's own files when one was saved with the model: ``vocab.json``,
  ``tokenizer_config.json`` (and ``gene_medians.json``), written by ``tokenizer.save_pretrained``.

Nothing is pickled. Loading refuses, with an error that names the fix, a vocabulary-size
mismatch (weights vs config vs tokenizer), a tokenizer-preset mismatch (V1 vs V2) and a
truncated or corrupt weights file (its SHA-256 is recorded at save time).
A folder written by ``transformers.BertForMaskedLM.save_pretrained`` loads too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


from typing import TYPE_CHECKING

from .blocks import TranscriptformerConfig
from .hf import from_hf_dir, is_hf_dir

if TYPE_CHECKING:  # the model module builds on this one, not the other way round
    from .transformer import Transcriptformer

FORMAT = "transcriptformer"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
TIED = "mlm_head.decoder.weight"


class CheckpointError(ValueError):
    """A checkpoint folder is inconsistent, incomplete or corrupt."""


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_info(directory) -> dict | None:
    """``{"kind", "preset", "vocab_size"}`` read from the tokenizer files in ``directory`` (or ``None``).

    The vocabulary size comes from ``tokenizer_config.json`` when it records one, else from
    the number of entries in ``vocab.json``.
    """
    directory = Path(directory)
    cfg_path = directory / "tokenizer_config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({err}); save the tokenizer again.") from err
    if "kind" not in cfg and "preset" not in cfg:  # e.g. an HF text tokenizer beside a BERT checkpoint
        return None
    size = cfg.get("vocab_size")
    vocab_path = directory / "vocab.json"
    if vocab_path.is_file():
        vocab = json.loads(vocab_path.read_text())
        if isinstance(vocab, dict):
            for k in ("tokens", "itos", "id_to_token", "token_to_id", "stoi", "vocab"):
                if k in vocab and isinstance(vocab[k], (list, dict)):
                    vocab = vocab[k]
                    break
        n = len(vocab)
        if size is not None and int(size) != n:
            raise CheckpointError(
                f"{directory}: tokenizer_config.json says vocab_size={size} but vocab.json has {n} "
                "entries; the tokenizer files are inconsistent, save the tokenizer again."
            )
        size = n
    return {"kind": cfg.get("kind"), "preset": cfg.get("preset"), "vocab_size": None if size is None else int(size)}


def _check_vocab(model_vocab: int, tok: dict | None, where: str):
    if tok is not None and tok.get("vocab_size") is not None and tok["vocab_size"] != model_vocab:
        raise CheckpointError(
            f"{where}: the model has vocab_size={model_vocab} but the tokenizer has {tok['vocab_size']} tokens. "
            "Use the tokenizer the model was trained with, or build a model with "
            f"TranscriptformerConfig(vocab_size={tok['vocab_size']})."
        )


#: The files :func:`save_pretrained` may write (or remove as stale) in a checkpoint folder.
CHECKPOINT_FILES = ("config.json", WEIGHTS, "vocab.json", "tokenizer_config.json", "gene_medians.json")


def save_pretrained(model: Transcriptformer, directory, tokenizer=None, overwrite: bool = False) -> Path:
    """Save ``model`` (and ``tokenizer``) to ``directory``; returns the folder.

    Files are written to a temporary folder first and moved into place only after the
    tokenizer has been checked against the model, so a failed save leaves ``directory`` as it
    was. An existing tflib checkpoint in ``directory`` is replaced only with ``overwrite=True``
    (its other files are left alone). A folder that is not a tflib checkpoint is never written
    over: if it holds any file a checkpoint consists of (``config.json``, ``model.safetensors``,
    ``vocab.json``, ``tokenizer_config.json``, ``gene_medians.json``) the save is refused,
    whatever ``overwrite`` says. Used in chapters 05--07.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file, not a folder; choose a folder for the checkpoint.")
    existing = directory / "config.json"
    if existing.is_file():
        try:
            meta = json.loads(existing.read_text())
        except json.JSONDecodeError:
            meta = {}
        if not isinstance(meta, dict) or meta.get("tflib_format") != FORMAT:
            raise FileExistsError(
                f"{directory} already holds a different model (its config.json is not a tflib checkpoint); "
                "nothing was written. Choose another folder.")
        if not overwrite:
            raise FileExistsError(
                f"{directory} already holds a tflib checkpoint; pass overwrite=True to replace it, or choose "
                "another folder to keep it.")
    else:
        clash = [name for name in CHECKPOINT_FILES if (directory / name).exists()]
        if clash:
            raise FileExistsError(
                f"{directory} holds {', '.join(clash)} but no tflib checkpoint; these files are not tflib's and "
                "are left alone (overwrite=True does not replace them). Choose a new or empty folder.")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".saving-") as tmp:
        tmp = Path(tmp)
        tok = None
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
            tok = tokenizer_info(tmp)
            if tok is None:
                raise CheckpointError("tokenizer.save_pretrained wrote no tokenizer_config.json; cannot record it.")
            _check_vocab(model.config.vocab_size, tok, "save_pretrained")
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k != TIED}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt", "tflib_format": FORMAT})
        meta = {
            "tflib_format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model.config.to_dict(),
            "tokenizer": tok,
            "weights": {"file": WEIGHTS, "sha256": sha256(tmp / WEIGHTS), "bytes": (tmp / WEIGHTS).stat().st_size},
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer is None:  # a stale tokenizer from an earlier save must not pair with these weights
            for stale in ("tokenizer_config.json", "vocab.json", "gene_medians.json"):
                (directory / stale).unlink(missing_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):  # config.json last
            os.replace(f, directory / f.name) if f.is_file() else shutil.move(str(f), directory / f.name)
    return directory


def _read_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # SafetensorsError, OSError ...
        raise CheckpointError(
            f"{path} cannot be read ({err}); the file is truncated or corrupt. Copy it again or re-run "
            "the training recipe that wrote it."
        ) from err


def read_checkpoint(directory, cls, device=None, load_tokenizer: bool = True):
    """Load a checkpoint folder into a ``cls`` model; returns ``(model, tokenizer)``.

    The implementation behind :func:`tflib.models.load_pretrained` and
    ``Transcriptformer.from_pretrained`` (chapters 05--07), which pass the model class.
    Accepts tflib checkpoints and HF ``BertForMaskedLM`` folders (detected from
    ``config.json``). The model is in eval mode, on ``device`` (default: CPU); ``tokenizer`` is
    ``None`` when the folder holds none.
    """
    directory = Path(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}; is this a checkpoint folder?")
    tok = tokenizer_info(directory)
    if is_hf_dir(directory):
        model = from_hf_dir(directory, cls)
    else:
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({err}); the checkpoint is corrupt.") from err
        if meta.get("tflib_format") != FORMAT:
            raise CheckpointError(f"{cfg_path} is neither a tflib checkpoint nor an HF BERT config.")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{directory} was written by a newer tflib (format {meta['format_version']}); upgrade tflib.")
        config = TranscriptformerConfig.from_dict(meta["model"])
        weights = directory / meta["weights"]["file"]
        if not weights.is_file():
            raise CheckpointError(f"{weights} is missing; the checkpoint is incomplete.")
        size, digest = weights.stat().st_size, meta["weights"].get("sha256")
        if size != meta["weights"].get("bytes", size) or (digest and sha256(weights) != digest):
            raise CheckpointError(
                f"{weights} does not match the checksum recorded in config.json ({size} bytes on disk, "
                f"{meta['weights'].get('bytes')} expected): it is truncated or corrupt. Copy it again or "
                "re-run the recipe that wrote it."
            )
        state = _read_weights(weights)
        emb = state.get("embeddings.word.weight")
        if emb is None:
            raise CheckpointError(f"{weights} has no embeddings.word.weight; not a Transcriptformer checkpoint.")
        if emb.shape[0] != config.vocab_size:
            raise CheckpointError(
                f"{directory}: the weights have {emb.shape[0]} token embeddings but config.json says "
                f"vocab_size={config.vocab_size}; the files come from different models. Re-save the model."
            )
        recorded = meta.get("tokenizer")
        if tok is not None and recorded is not None and recorded.get("preset") != tok.get("preset"):
            raise CheckpointError(
                f"{directory}: the model was trained with tokenizer preset {recorded.get('preset')!r} but "
                f"tokenizer_config.json says {tok.get('preset')!r} (V1 and V2 differ in special tokens and "
                "length). Save the model again with the tokenizer it was trained with."
            )
        model = cls(config)
        state[TIED] = state["embeddings.word.weight"]
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{weights} does not fit the config in config.json: {err}") from err
    _check_vocab(model.config.vocab_size, tok, str(directory))
    tokenizer = None
    if tok is not None and load_tokenizer:
        from tflib.tokenize import load_tokenizer as _load_tok

        tokenizer = _load_tok(directory)
    model.tokenizer = tokenizer
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer
