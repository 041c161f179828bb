"""Loading a saved tokenizer of either kind: the one place that knows every tokenizer class.

``base.py`` defines what the tokenizers share and must not import its subclasses (they import
it); the factory that picks a class from ``tokenizer_config.json`` therefore lives here, above
all of them. Chapters 04 and 06 load tokenizers through :func:`load_tokenizer`.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import CONFIG_FILE, MEDIANS_FILE, VOCAB_FILE, TokenizerMismatchError, check_configs


def _rank_value(d: Path, cfg: dict, vocab):
    from .medians import GeneMedians
    from .rank import RankValueTokenizer

    return RankValueTokenizer(vocab, GeneMedians.load(d / MEDIANS_FILE), preset=cfg["preset"],
                              max_len=cfg["max_len"], target_sum=cfg["target_sum"])


def _binning(d: Path, cfg: dict, vocab):
    from .binning import BinningTokenizer

    return BinningTokenizer(vocab, n_bins=cfg["n_bins"], seed=cfg["seed"], max_len=cfg["max_len"])


#: ``config()["kind"]`` -> builder ``(folder, config, vocab) -> tokenizer``. One line per kind.
BUILDERS = {"rank_value": _rank_value, "binning": _binning}


def load_tokenizer(directory):
    """Load a tokenizer written by ``save_pretrained`` (either kind; chapters 04 and 06).

    Raises
    ------
    FileNotFoundError
        If ``directory`` holds no ``tokenizer_config.json``.
    TokenizerMismatchError
        If its ``vocab.json`` is not the vocabulary the config was written with.
    ValueError
        For a tokenizer kind this version of tflib does not know.
    """
    from .vocab import GeneVocab

    d = Path(directory)
    if not (d / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{d / CONFIG_FILE} not found; save one with tokenizer.save_pretrained({str(d)!r}).")
    cfg = json.loads((d / CONFIG_FILE).read_text())
    vocab = GeneVocab.load(d / VOCAB_FILE)
    if vocab.fingerprint != cfg.get("vocab_fingerprint", vocab.fingerprint):
        raise TokenizerMismatchError(f"{d}: vocab.json does not match tokenizer_config.json (fingerprints "
                                     f"{vocab.fingerprint} vs {cfg['vocab_fingerprint']}).")
    build = BUILDERS.get(cfg.get("kind"))
    if build is None:
        raise ValueError(f"Unknown tokenizer kind {cfg.get('kind')!r} in {d / CONFIG_FILE} (known: "
                         f"{sorted(BUILDERS)}). Fix: load it with the tflib version that wrote it.")
    tok = build(d, cfg, vocab)
    check_configs(cfg, tok.config(), what=f"{d}")
    return tok
