"""Masked-gene pretraining: one loop for a laptop CPU, a GPU, or many GPUs under torchrun (chapter 06).

Run it from Python with :func:`run_pretraining` or from a shell::

    python -m tflib.train.pretrain --config recipe.json
    torchrun --nproc_per_node 2 -m tflib.train.pretrain --config recipe.json   # same run, 2 processes

What the loop does, step by step:

1. Batches are length-grouped (:func:`~tflib.train.data.length_grouped_batches`) and masked
   by :class:`~tflib.train.data.MaskingCollator`; the padding fraction is reported.
2. AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA only;
   the device comes from :func:`tflib.utils.get_device` (CUDA, MPS or CPU).
3. A tqdm bar, a loss log (``loss_log.csv``) and periodic checkpoints
   (``checkpoints/step-NNNNNN``: model + tokenizer via ``save_pretrained``, optimizer state in
   safetensors, the step in JSON; nothing pickled).
4. **Exact resume.** The batch of step ``k`` and its mask and dropout noise are functions of
   ``(seed, k)`` alone, and the checkpoint stores the exact weights and optimizer state, so a
   resumed run produces the same losses as an uninterrupted one.
5. **DDP.** Under ``torchrun`` every process builds the same *global* batch and mask, keeps its
   share of the cells, and scales its loss by the global number of masked tokens; after DDP
   averages the gradients the update equals the single-process update on the global batch
   (up to float rounding). Backend: NCCL on CUDA, gloo on CPU.

Scaling out (for instructors). On one machine with N GPUs::

    torchrun --standalone --nproc_per_node N -m tflib.train.pretrain --config recipe.json

``batch_size`` stays the *global* batch, so the same recipe gives the same run on 1 or N
processes (raise it, and ``lr`` with it, to use the extra memory). On several machines, run
on each ``torchrun --nnodes M --node_rank R --nproc_per_node N --rdzv_backend c10d
--rdzv_endpoint HOST:PORT -m tflib.train.pretrain --config recipe.json`` with the same recipe and a
shared ``out_dir``. Each process picks its GPU from ``LOCAL_RANK``; only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.utils import get_device

from .data import MaskingCollator, SyntheticCorpus, length_grouped_batches, padding_fraction, sequence_lengths
from .checkpoints import (RESUME_KEYS, latest_checkpoint, load_checkpoint,  # noqa: F401 (re-exported)
                          prepare_out_dir, save_checkpoint)

LOG_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "n_masked", "n_tokens", "padding", "seconds")


@dataclass
class PretrainConfig:
    """A pretraining recipe (the ``--config`` JSON/TOML file holds these keys).

    ``model`` holds :class:`~tflib.models.TranscriptformerConfig` fields (``vocab_size`` defaults
    to the tokenizer's). Data: ``data`` (a saved :class:`tflib.tokenize.TokenStore` folder) or
    ``synthetic`` (keyword arguments of :class:`~tflib.train.data.SyntheticCorpus`).
    ``batch_size`` is the *global* batch (split over processes under torchrun).
    ``stop_after`` ends this invocation after that many steps (the schedule still runs to
    ``max_steps``), e.g. to fit a time budget and resume later.

    ``out_dir`` holds only what the run writes (see :mod:`tflib.train.checkpoints`): a folder
    with other files is refused. A previous run there is continued when ``resume`` is true and
    it has a checkpoint; it is replaced only with ``overwrite=True``.
    """

    model: dict = field(default_factory=dict)
    data: str | None = None
    synthetic: dict | None = None
    tokenizer: str | None = None
    out_dir: str = "runs/pretrain"
    seed: int = 0
    batch_size: int = 16
    max_steps: int = 200
    stop_after: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 20
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 1.0
    mask_prob: float = 0.15
    megabatch_mult: int = 50
    max_len: int | None = None
    logits: str = "masked"
    unpad: bool = False
    bf16: bool = True
    device: str | None = None
    num_threads: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    resume: bool = True
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        def need(name, ok, what):
            value = getattr(self, name)
            if isinstance(value, bool) or not ok(value):
                raise ValueError(f"{name}={value!r}: {what}.")

        def whole(lo):
            return lambda v: isinstance(v, int) and v >= lo

        def real(lo, hi=math.inf):
            return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and lo < v <= hi

        for name in ("batch_size", "max_steps", "checkpoint_every", "keep_checkpoints", "megabatch_mult"):
            need(name, whole(1), "give a whole number >= 1")
        need("warmup_steps", whole(0), "give a whole number >= 0")
        need("stop_after", lambda v: v is None or whole(1)(v), "give None or a whole number >= 1")
        need("lr", real(0), "give a positive number, e.g. 1e-3 (not a string)")
        need("min_lr", lambda v: isinstance(v, (int, float)) and 0 <= v <= self.lr, "give a number in [0, lr]")
        need("mask_prob", real(0, 1), "give a fraction in (0, 1], e.g. 0.15")

    @classmethod
    def from_file(cls, path) -> "PretrainConfig":
        path = Path(path)
        if path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(path.read_text())
        else:
            raw = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        if set(raw) - known:
            raise ValueError(f"{path}: unknown keys {sorted(set(raw) - known)}; known keys: {sorted(known)}.")
        return cls(**raw)


@dataclass
class PretrainResult:
    """What :func:`run_pretraining` returns: the trained model, the loss log and where files went."""

    model: Transcriptformer
    log: list
    out_dir: Path
    padding_fraction: float
    tokens_per_second: float

    @property
    def losses(self) -> list[float]:
        return [row["loss"] for row in self.log]


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def step_seed(seed: int, step: int) -> int:
    """The seed of everything random in step ``step`` (mask and dropout)."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63)


# ---- setup helpers -------------------------------------------------------------------------
def _distributed():
    """``(rank, world_size, local_rank)``; initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        device = get_device()
        if device.type != "cpu" and hasattr(torch, "accelerator"):
            torch.accelerator.set_device_index(local_rank)          # one GPU per process
        dist.init_process_group(backend=dist.get_default_backend_for_device(device))
    return dist.get_rank(), dist.get_world_size(), local_rank


def _open_dataset(cfg: PretrainConfig):
    if cfg.synthetic is not None and cfg.data is not None:
        raise ValueError(f"the recipe sets both data={cfg.data!r} and synthetic=...; it would train on only "
                         "one of them. Fix: drop 'synthetic' to train on the token store, or 'data' to "
                         "train on the synthetic corpus.")
    if cfg.synthetic is not None:
        return SyntheticCorpus(**cfg.synthetic)
    if cfg.data is None:
        raise ValueError("the recipe names no data: set 'data' (a TokenStore folder) or 'synthetic'.")
    from tflib.tokenize import TokenStore

    for opener in ("load", "open"):
        if hasattr(TokenStore, opener):
            return getattr(TokenStore, opener)(cfg.data)
    return TokenStore(cfg.data)


def _vocab_size(tokenizer, dataset) -> int | None:
    if tokenizer is not None:
        conf = tokenizer.config() if hasattr(tokenizer, "config") else {}
        if conf.get("vocab_size"):
            return int(conf["vocab_size"])
        if hasattr(tokenizer, "vocab"):
            return len(tokenizer.vocab)
    recorded = getattr(dataset, "config", None)                     # a TokenStore records its tokenizer
    if isinstance(recorded, dict) and recorded.get("vocab_size"):
        return int(recorded["vocab_size"])
    return getattr(dataset, "vocab_size", None)


def _token_ids(tokenizer) -> dict:
    """``<mask>``/``<pad>``/special ids from the tokenizer's vocabulary (V1 has no <cls>/<eos>)."""
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None or not hasattr(vocab, "special_tokens"):
        return {}
    return {"mask_token_id": vocab.mask_id, "pad_token_id": vocab.pad_id,
            "special_ids": [vocab.token_to_id(t) for t in vocab.special_tokens]}


def _optimizer(model, cfg):
    decay = [p for p in model.parameters() if p.dim() >= 2]          # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]        # biases and LayerNorms
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


# ---- the loop ----------------------------------------------------------------------------------
def run_pretraining(config: PretrainConfig | dict, dataset=None, tokenizer=None) -> PretrainResult:
    """Pretrain a :class:`~tflib.models.Transcriptformer` by masked-gene modelling (chapter 06).

    ``dataset`` (``len``, ``[i]`` -> token array, optional ``.lengths``) and ``tokenizer``
    override the recipe's ``data``/``tokenizer`` entries. Returns a :class:`PretrainResult`;
    files go to ``out_dir`` (``loss_log.csv``, ``checkpoints/``, the final ``model/``).
    """
    cfg = PretrainConfig(**config) if isinstance(config, dict) else config
    if cfg.logits not in ("masked", "all"):
        raise ValueError(f"logits={cfg.logits!r}; use 'masked' (fast) or 'all' (like HF BERT).")
    rank, world, local_rank = _distributed()
    last = prepare_out_dir(cfg.out_dir, resume=cfg.resume, overwrite=cfg.overwrite, clean=rank == 0)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()                                              # rank 0 has cleaned up before anyone reads
    device = get_device(cfg.device)
    if world > 1 and device.type != "cpu":
        device = torch.device(device.type, local_rank)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if tokenizer is None and cfg.tokenizer is not None:
        from tflib.tokenize import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    dataset = dataset if dataset is not None else _open_dataset(cfg)
    if len(dataset) == 0:
        raise ValueError("the dataset has no cells, so there is nothing to pretrain on. Fix: pass "
                         "tokenizer.encode(adata) of a non-empty AnnData, or a recipe whose data= names "
                         "a token store with cells.")
    if tokenizer is not None and hasattr(dataset, "check_compatible"):
        dataset.check_compatible(tokenizer)                         # tokens made by another tokenizer?
    model_cfg = dict(cfg.model)
    known = _vocab_size(tokenizer, dataset)
    model_cfg.setdefault("vocab_size", known)
    if model_cfg["vocab_size"] is None:
        raise ValueError("set model.vocab_size in the recipe or pass a tokenizer.")
    if known is not None and model_cfg["vocab_size"] != known:
        raise ValueError(f"model.vocab_size={model_cfg['vocab_size']} but the tokenizer/data have {known} tokens; "
                         "drop vocab_size from the recipe to use the tokenizer's.")
    torch.manual_seed(cfg.seed)
    model = Transcriptformer(TranscriptformerConfig(**model_cfg)).to(device)
    max_len = min(cfg.max_len or model.config.max_len, model.config.max_len)  # longer cells are truncated
    collator = MaskingCollator(model.config.vocab_size, cfg.mask_prob, max_len=max_len, **_token_ids(tokenizer))
    optimizer = _optimizer(model, cfg)

    out_dir = Path(cfg.out_dir)
    ckpt_dir, log_path = out_dir / "checkpoints", out_dir / "loss_log.csv"
    start, log = 0, []
    if last is not None:
        start = load_checkpoint(last, model, optimizer, cfg)
        if log_path.is_file():
            with open(log_path) as fh:
                log = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
            log = [row for row in log if row["step"] < start]

    lengths = np.minimum(sequence_lengths(dataset), max_len)
    epoch_batches: dict[int, list] = {}

    def batches_of(epoch):
        if epoch not in epoch_batches:
            epoch_batches.clear()
            epoch_batches[epoch] = length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch, cfg.megabatch_mult)
        return epoch_batches[epoch]

    n_batches = len(batches_of(0))
    pad_frac = padding_fraction(lengths, batches_of(0))
    ddp = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [device.index])
    use_bf16 = cfg.bf16 and device.type == "cuda"                     # autocast on CUDA only
    end = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, start + cfg.stop_after)

    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"pretrain: {model.num_parameters():,} parameters on {device} x{world}; "
              f"{len(dataset):,} cells, {n_batches} batches/epoch, padding {pad_frac:.1%}; steps {start}->{end}")
    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=end - start, desc="pretrain", unit="step")
    model.train()
    t0, n_tokens = time.perf_counter(), 0
    for step in range(start, end):
        epoch, i = divmod(step, n_batches)
        idx = batches_of(epoch)[i]
        g = torch.Generator().manual_seed(step_seed(cfg.seed, step))
        batch = collator([dataset[j] for j in idx], generator=g)    # the global batch, same on every rank
        n_masked = int((batch["labels"] != -100).sum())
        rows = slice(rank, None, world)                             # this process's share of the cells
        mask = batch["attention_mask"][rows]
        width = int(mask.sum(1).max())                              # trim padding to the local maximum
        ids, mask, labels = (batch[k][rows, :width].to(device) for k in ("input_ids", "attention_mask", "labels"))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        torch.manual_seed(step_seed(cfg.seed, step) + 1)            # dropout noise of this step
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = ddp(ids, mask, labels, logits=cfg.logits, unpad=cfg.unpad)
            if cfg.logits == "masked":
                loss_sum = F.cross_entropy(out.logits.float(), labels[labels != -100], reduction="sum")
            else:
                loss_sum = F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(), reduction="sum")
        loss = loss_sum * world / max(1, n_masked)                  # DDP averages gradients over ranks
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        total = loss_sum.detach().float()
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
        n_tokens += int(lengths[idx].sum())
        row = {"step": step, "epoch": epoch, "loss": float(total) / max(1, n_masked), "lr": lr_at(step, cfg),
               "grad_norm": float(grad_norm), "n_masked": n_masked, "n_tokens": int(lengths[idx].sum()),
               "padding": padding_fraction(lengths, [idx]), "seconds": time.perf_counter() - t0}
        log.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            if rank == 0:
                save_checkpoint(ckpt_dir, model, optimizer, done, cfg, tokenizer)
                _write_log(log_path, log)
            if world > 1:
                torch.distributed.barrier()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        _write_log(log_path, log)
        if end == cfg.max_steps:
            model.save_pretrained(out_dir / "model", tokenizer=tokenizer, overwrite=True)  # checked above
    model.eval()
    model.tokenizer = tokenizer
    return PretrainResult(model, log, out_dir, pad_frac, n_tokens / elapsed if elapsed > 0 else float("nan"))


def _write_log(path: Path, log: list):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in log:
            writer.writerow({k: row[k] for k in LOG_FIELDS})


def main(argv=None):
    """Command line: ``python -m tflib.train.pretrain --config FILE [overrides]``."""
    p = argparse.ArgumentParser(prog="python -m tflib.train.pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="recipe file (.json or .toml) with PretrainConfig keys")
    p.add_argument("--out-dir", help="override out_dir")
    p.add_argument("--max-steps", type=int, help="override max_steps")
    p.add_argument("--stop-after", type=int, help="stop this invocation after N steps (resume later)")
    p.add_argument("--device", help="override the automatic device choice (e.g. 'cpu')")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in out_dir")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in out_dir (with --no-resume)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = p.parse_args(argv)
    cfg = PretrainConfig.from_file(args.config)
    for name in ("out_dir", "max_steps", "stop_after", "device"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.resume = cfg.resume and not args.no_resume
    cfg.overwrite = cfg.overwrite or args.overwrite
    cfg.progress = cfg.progress and not args.no_progress
    result = run_pretraining(cfg)
    if int(os.environ.get("RANK", "0")) == 0 and result.log:
        print(json.dumps({"final_loss": result.losses[-1], "steps": len(result.log),
                          "padding_fraction": round(result.padding_fraction, 4),
                          "tokens_per_second": round(result.tokens_per_second, 1)}))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
