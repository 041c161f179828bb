"""Conversion between :class:`~tflib.models.Transcriptformer` and ``transformers.BertForMaskedLM``.

Geneformer checkpoints are ``BertForMaskedLM`` models, so this module is how the course reads
them (chapter 05 checks the parity numerically). The mapping is one-to-one: every tensor of
one model has exactly one partner in the other; nothing is re-initialised.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path


from typing import TYPE_CHECKING

from .blocks import TranscriptformerConfig

if TYPE_CHECKING:  # the model module builds on this one, not the other way round
    from .transformer import Transcriptformer


def hf_config(config: TranscriptformerConfig, attn_implementation: str | None = None):
    """The ``transformers.BertConfig`` describing the same architecture as ``config``."""
    from transformers import BertConfig

    kwargs = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return BertConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        intermediate_size=config.n_inner,
        hidden_act=config.activation,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attn_dropout,
        max_position_embeddings=config.max_len,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        tie_word_embeddings=True,
        **kwargs,
    )


def config_from_hf(bert_config) -> TranscriptformerConfig:
    """The :class:`TranscriptformerConfig` for an HF ``BertConfig`` (refuses what we do not model)."""
    pos = getattr(bert_config, "position_embedding_type", "absolute")
    if pos not in (None, "absolute"):
        raise ValueError(f"position_embedding_type={pos!r} is not supported; only absolute positions are.")
    if getattr(bert_config, "is_decoder", False):
        raise ValueError("decoder BERT models (is_decoder=True) are not supported; Transcriptformer is an encoder.")
    act = bert_config.hidden_act
    if not isinstance(act, str):
        raise ValueError(f"hidden_act={act!r} must be a name such as 'relu' or 'gelu'.")
    pad = bert_config.pad_token_id if bert_config.pad_token_id is not None else 0
    return TranscriptformerConfig(
        vocab_size=bert_config.vocab_size,
        max_len=bert_config.max_position_embeddings,
        n_layer=bert_config.num_hidden_layers,
        n_head=bert_config.num_attention_heads,
        n_embd=bert_config.hidden_size,
        n_inner=bert_config.intermediate_size,
        activation=act,
        dropout=bert_config.hidden_dropout_prob,
        attn_dropout=bert_config.attention_probs_dropout_prob,
        layer_norm_eps=bert_config.layer_norm_eps,
        initializer_range=bert_config.initializer_range,
        pad_token_id=pad,
        type_vocab_size=bert_config.type_vocab_size,
    )


def key_map(n_layer: int) -> dict[str, str]:
    """``{tflib state-dict key: HF BertForMaskedLM key}`` for every tensor (the tied decoder weight excluded)."""
    m = {
        "embeddings.word.weight": "bert.embeddings.word_embeddings.weight",
        "embeddings.position.weight": "bert.embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": "bert.embeddings.token_type_embeddings.weight",
        "embeddings.ln.weight": "bert.embeddings.LayerNorm.weight",
        "embeddings.ln.bias": "bert.embeddings.LayerNorm.bias",
        "mlm_head.dense.weight": "cls.predictions.transform.dense.weight",
        "mlm_head.dense.bias": "cls.predictions.transform.dense.bias",
        "mlm_head.ln.weight": "cls.predictions.transform.LayerNorm.weight",
        "mlm_head.ln.bias": "cls.predictions.transform.LayerNorm.bias",
        "mlm_head.decoder.bias": "cls.predictions.bias",
    }
    per_layer = {
        "attn.query": "attention.self.query",
        "attn.key": "attention.self.key",
        "attn.value": "attention.self.value",
        "attn.proj": "attention.output.dense",
        "attn.ln": "attention.output.LayerNorm",
        "mlp.fc": "intermediate.dense",
        "mlp.proj": "output.dense",
        "mlp.ln": "output.LayerNorm",
    }
    for i in range(n_layer):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                m[f"encoder.blocks.{i}.{ours}.{p}"] = f"bert.encoder.layer.{i}.{theirs}.{p}"
    return m


def from_hf_bert(hf_model, cls) -> Transcriptformer:
    """A ``cls`` (a :class:`Transcriptformer`) with the weights of ``hf_model`` (a ``BertForMaskedLM``).

    Called as ``Transcriptformer.from_hf_bert(hf_model)`` (chapter 05).
    """
    if type(hf_model).__name__ != "BertForMaskedLM":
        raise TypeError(
            f"expected transformers.BertForMaskedLM, got {type(hf_model).__name__}; "
            "load the checkpoint with BertForMaskedLM.from_pretrained(...) first."
        )
    config = config_from_hf(hf_model.config)
    model = cls(config)
    theirs = hf_model.state_dict()
    state = {}
    for ours, key in key_map(config.n_layer).items():
        if key not in theirs:
            raise KeyError(f"HF model has no tensor {key!r}; is it a standard BertForMaskedLM?")
        state[ours] = theirs[key].detach().clone().float()
    decoder = theirs.get("cls.predictions.decoder.weight")
    if decoder is not None and not decoder.float().equal(state["embeddings.word.weight"]):
        raise ValueError(
            "this BertForMaskedLM has an MLM decoder that is not tied to its input embeddings "
            "(tie_word_embeddings=False); Transcriptformer ties them, so the conversion would change the model."
        )
    state["mlm_head.decoder.weight"] = state["embeddings.word.weight"]  # tied
    model.load_state_dict(state, strict=True)
    return model.to(next(hf_model.parameters()).device)


def to_hf_bert(model: Transcriptformer, attn_implementation: str | None = None):
    """A ``transformers.BertForMaskedLM`` computing the same function as ``model``.

    ``attn_implementation="eager"`` selects HF's step-by-step attention (used by the parity tests).
    """
    from transformers import BertForMaskedLM

    hf = BertForMaskedLM(hf_config(model.config, attn_implementation))
    ours = model.state_dict()
    state = {key: ours[k].detach().clone() for k, key in key_map(model.config.n_layer).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    allowed = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}  # tied to the above
    if unexpected or set(missing) - allowed:
        raise RuntimeError(f"HF conversion incomplete: missing {missing}, unexpected {unexpected}.")
    hf.tie_weights()
    return hf.to(next(model.parameters()).device).train(model.training)


def is_hf_dir(directory) -> bool:
    """True when ``directory/config.json`` describes an HF BERT model."""
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        return False
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False
    return meta.get("model_type") == "bert"


def from_hf_dir(directory, cls) -> Transcriptformer:
    """Load a folder written by ``BertForMaskedLM.save_pretrained`` (config.json + weights).

    Only local files are read (no hub access). Weights that the folder lacks (e.g. a
    fine-tuned Geneformer saved without its MLM head) are reported as a warning.
    """
    from transformers import BertForMaskedLM

    directory = Path(directory)
    try:
        hf, info = BertForMaskedLM.from_pretrained(directory, local_files_only=True, output_loading_info=True)
    except Exception as err:  # transformers/safetensors raise many types for broken files
        raise ValueError(
            f"could not read the HF checkpoint in {directory}: {err}. The weights file may be truncated "
            "or corrupt; copy or download it again."
        ) from err
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("cls.predictions.decoder")]
    if missing:
        warnings.warn(f"{directory}: {len(missing)} tensors were missing and are randomly initialised: {missing[:5]}")
    return from_hf_bert(hf, cls)
