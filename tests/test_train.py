"""tflib.train: masking, length-grouped batching, schedule, the loop, exact resume and the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tflib.train import MaskingCollator, PretrainConfig, length_grouped_batches, padding_fraction, run_pretraining
from tflib.train.pretrain import lr_at

torch.set_num_threads(1)

TINY_MODEL = dict(max_len=40, n_layer=2, n_head=2, n_embd=32, n_inner=64, dropout=0.1, attn_dropout=0.1)
TINY_DATA = dict(n_cells=48, vocab_size=80, min_len=8, max_len=40, seed=0)


def recipe(tmp_path, **kw):
    base = dict(model=TINY_MODEL, synthetic=TINY_DATA, out_dir=str(tmp_path / "run"), batch_size=8,
                max_steps=6, warmup_steps=2, lr=3e-3, checkpoint_every=3, progress=False, device="cpu")
    base.update(kw)
    return PretrainConfig(**base)


def test_masking_rules():
    seqs = [np.r_[2, np.arange(4, 400), 3]] * 50 + [np.r_[2, np.arange(4, 100), 3]] * 50
    col = MaskingCollator(vocab_size=500)
    b = col(seqs, generator=torch.Generator().manual_seed(0))
    ids, labels, inp, mask = (torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in seqs], batch_first=True),
                              b["labels"], b["input_ids"], b["attention_mask"])
    chosen = labels != -100
    genes = mask & ~torch.isin(ids, torch.tensor([0, 1, 2, 3]))
    assert not chosen[~genes].any()                                  # special tokens and padding never chosen
    assert torch.equal(labels[chosen], ids[chosen])
    frac = chosen.sum() / genes.sum()
    assert 0.14 < frac < 0.16
    as_mask = (inp[chosen] == 1).float().mean()
    kept = (inp[chosen] == ids[chosen]).float().mean()
    assert 0.78 < as_mask < 0.82 and 0.08 < kept < 0.12              # 80 / 10 / 10
    assert not torch.isin(inp[chosen & (inp != 1) & (inp != ids)], torch.tensor([0, 1, 2, 3])).any()
    assert torch.equal(inp[~chosen], ids[~chosen])
    b2 = col(seqs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b2["input_ids"], inp)                          # seeded -> reproducible


def test_length_grouping_reduces_padding():
    lengths = np.random.default_rng(0).integers(10, 500, size=2000)
    grouped = length_grouped_batches(lengths, 16, seed=0, epoch=0)
    plain = length_grouped_batches(lengths, 16, seed=0, epoch=0, megabatch_mult=1)
    assert sorted(np.concatenate(grouped)) == list(range(2000))      # every cell once
    assert padding_fraction(lengths, grouped) < 0.1 < padding_fraction(lengths, plain)
    again = length_grouped_batches(lengths, 16, seed=0, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))
    other = length_grouped_batches(lengths, 16, seed=0, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(grouped, other))


def test_schedule_warmup_then_cosine():
    cfg = PretrainConfig(lr=1.0, min_lr=0.0, warmup_steps=4, max_steps=14)
    lrs = [lr_at(s, cfg) for s in range(15)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and abs(lrs[9] - 0.5) < 1e-12 and lrs[14] == 0.0
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_loss_falls_and_files_written(tmp_path):
    res = run_pretraining(recipe(tmp_path, max_steps=30, warmup_steps=3, lr=1e-2, checkpoint_every=10))
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5]) - 0.3
    run = tmp_path / "run"
    assert (run / "loss_log.csv").is_file() and (run / "model" / "model.safetensors").is_file()
    # length-grouped batches pad less than the same cells batched at random (what grouping is for)
    from tflib.train import SyntheticCorpus

    lengths = SyntheticCorpus(**TINY_DATA).lengths
    random_batches = np.array_split(np.random.default_rng(0).permutation(len(lengths)), len(lengths) // 8)
    assert 0.0 < res.padding_fraction < padding_fraction(lengths, random_batches)
    assert len(list((run / "checkpoints").glob("step-*"))) == 2     # keep_checkpoints


def test_exact_resume(tmp_path):
    full = run_pretraining(recipe(tmp_path / "a"))
    first = run_pretraining(recipe(tmp_path / "b", stop_after=3))         # "interrupted" after 3 steps
    assert first.losses == full.losses[:3]
    resumed = run_pretraining(recipe(tmp_path / "b"))                        # picks up checkpoints/step-000003
    assert resumed.losses == full.losses                              # bit-for-bit equal, incl. dropout
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    with pytest.raises(ValueError, match="recipe changed"):
        run_pretraining(recipe(tmp_path / "b", lr=1e-2, max_steps=6))


def test_cli(tmp_path):
    cfg = recipe(tmp_path, max_steps=2)
    path = tmp_path / "recipe.json"
    d = {k: v for k, v in cfg.__dict__.items()}
    path.write_text(json.dumps(d))
    out = subprocess.run([sys.executable, "-m", "tflib.train.pretrain", "--config", str(path), "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    with pytest.raises(ValueError, match="unknown keys"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"learning_rate": 1}))
        PretrainConfig.from_file(bad)


def test_token_store_and_tokenizer_from_recipe(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from tflib.models import load_pretrained
    from tflib.tokenize import GeneVocab, RankValueTokenizer

    genes = [f"G{i}" for i in range(40)]
    tok = RankValueTokenizer(GeneVocab.from_genes(genes), {g: 1.0 + i % 4 for i, g in enumerate(genes)},
                             preset="V2", max_len=32)
    adata = ad.AnnData(sp.csr_matrix(np.random.default_rng(0).poisson(1.0, (24, 40)).astype(np.float32)))
    adata.var_names = genes
    tok.encode_to_store(adata, tmp_path / "store")
    tok.save_pretrained(tmp_path / "tok")
    res = run_pretraining(recipe(tmp_path, synthetic=None, data=str(tmp_path / "store"), tokenizer=str(tmp_path / "tok"),
                                 max_steps=2, model=dict(TINY_MODEL, max_len=32)))
    assert res.model.config.vocab_size == 44 and np.isfinite(res.losses).all()
    model, saved_tok = load_pretrained(tmp_path / "run" / "model")
    assert saved_tok.config() == tok.config()


# ---- the output folder: a user's files survive, a previous run is replaced only when asked ----------
def _snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_out_dir_with_user_files_is_refused_and_left_alone(tmp_path):
    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)
    (run / "notes" / "results.txt").write_text("three weeks of work")
    (run / "loss_log.csv").write_text("my own csv\n")
    before = _snapshot(run)
    for kw in (dict(), dict(resume=False, overwrite=True)):
        with pytest.raises(FileExistsError, match=r"does not write \(notes\).*new or empty folder.*out_dir="):
            run_pretraining(recipe(tmp_path, **kw))
        assert _snapshot(run) == before and sorted(p.name for p in run.iterdir()) == ["loss_log.csv", "notes"]
    # a stranger inside checkpoints/ counts too
    (run / "notes" / "results.txt").unlink()
    (run / "notes").rmdir()
    (run / "loss_log.csv").unlink()
    (run / "checkpoints" / "step-000003").mkdir(parents=True)
    (run / "checkpoints" / "step-000003" / "mine.txt").write_text("not a checkpoint")
    with pytest.raises(FileExistsError, match="checkpoints/step-000003"):
        run_pretraining(recipe(tmp_path, resume=False, overwrite=True))
    assert (run / "checkpoints" / "step-000003" / "mine.txt").read_text() == "not a checkpoint"
    # the suggested fix works: a new folder inside it
    res = run_pretraining(recipe(tmp_path, out_dir=str(run / "run"), max_steps=2))
    assert len(res.log) == 2 and (run / "checkpoints" / "step-000003" / "mine.txt").is_file()


def test_previous_run_is_replaced_only_with_overwrite(tmp_path):
    old = run_pretraining(recipe(tmp_path, max_steps=9))                   # checkpoints step-6, step-9 + model/
    run = tmp_path / "run"
    before = _snapshot(run)
    with pytest.raises(FileExistsError, match="previous pretraining run.*overwrite=True"):
        run_pretraining(recipe(tmp_path, resume=False))
    assert _snapshot(run) == before                                   # nothing touched
    new = run_pretraining(recipe(tmp_path, resume=False, overwrite=True, max_steps=6, seed=1))
    assert new.losses != old.losses[:6]
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert steps == ["step-000003", "step-000006"]                    # the old run's step-9 is gone, the new ones kept
    from tflib.models import load_pretrained

    saved, _ = load_pretrained(run / "model")
    for k, v in new.model.state_dict().items():
        assert torch.equal(v, saved.state_dict()[k]), k               # model/ is the new run's


def test_finished_run_resumes_to_the_same_model(tmp_path):
    first = run_pretraining(recipe(tmp_path))
    again = run_pretraining(recipe(tmp_path))                          # resume=True: nothing left to do
    assert again.losses == first.losses
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k


def test_save_checkpoint_keeps_what_it_did_not_write(tmp_path):
    from tflib.models import Transcriptformer, TranscriptformerConfig
    from tflib.train.checkpoints import latest_checkpoint, save_checkpoint

    cfg = recipe(tmp_path, keep_checkpoints=1)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=20, **TINY_MODEL))
    opt = torch.optim.AdamW(model.parameters())
    ckpts = tmp_path / "ckpts"
    (ckpts / "step-000001").mkdir(parents=True)                      # looks like a checkpoint, is not one
    (ckpts / "step-000001" / "keep.txt").write_text("x")
    (ckpts / "step-000005").mkdir()
    (ckpts / "step-000005" / "keep.txt").write_text("y")
    save_checkpoint(ckpts, model, opt, 2, cfg)
    save_checkpoint(ckpts, model, opt, 3, cfg)                      # rotation removes step-2 only
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001", "step-000003", "step-000005"]
    assert latest_checkpoint(ckpts).name == "step-000003"
    with pytest.raises(FileExistsError, match="not a checkpoint"):
        save_checkpoint(ckpts, model, opt, 5, cfg)
    assert (ckpts / "step-000005" / "keep.txt").read_text() == "y"
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".tmp")]  # no temporary folder left behind


def test_cli_overwrite_flag(tmp_path):
    cfg = recipe(tmp_path, max_steps=2)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(dict(cfg.__dict__)))
    cmd = [sys.executable, "-m", "tflib.train.pretrain", "--config", str(path), "--no-progress", "--no-resume"]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode == 0
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
    assert subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, timeout=120).returncode == 0


@pytest.mark.parametrize("field, value, match", [
    ("checkpoint_every", 0, "checkpoint_every=0: give a whole number >= 1"),
    ("batch_size", "16", "batch_size='16'"),
    ("lr", "1e-3", r"lr='1e-3': give a positive number"),
    ("mask_prob", 1.5, "mask_prob=1.5"),
    ("stop_after", 0, "stop_after=0"),
])
def test_recipe_values_are_checked_when_the_recipe_is_made(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        recipe(tmp_path, **{field: value})
    assert not (tmp_path / "run").exists()                            # refused before touching disk


def test_an_empty_dataset_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="the dataset has no cells"):
        run_pretraining(recipe(tmp_path), dataset=[])


def test_a_recipe_with_both_data_and_synthetic_is_refused(tmp_path):
    with pytest.raises(ValueError, match="sets both data="):
        run_pretraining(recipe(tmp_path, data=str(tmp_path / "my_store")))  # used to train on synthetic


def test_a_users_file_inside_model_or_a_checkpoint_is_never_deleted(tmp_path):
    """model/ and step-* folders are removed only when they hold nothing but tflib's files."""
    run_pretraining(recipe(tmp_path, max_steps=6))                   # model/, step-3, step-6
    run = tmp_path / "run"
    (run / "model" / "my_notes.txt").write_text("mine")
    (run / "checkpoints" / "step-000003" / "plot.png").write_bytes(b"mine too")
    for kw in (dict(resume=False, overwrite=True), dict(resume=False)):
        with pytest.raises(FileExistsError, match=r"model.*checkpoints/step-000003"):
            run_pretraining(recipe(tmp_path, max_steps=6, **kw))
    assert (run / "model" / "my_notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "step-000003" / "plot.png").read_bytes() == b"mine too"
    assert (run / "model" / "model.safetensors").is_file()           # nothing of the old run removed
