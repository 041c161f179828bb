"""DDP through torchrun on CPU (gloo, 2 processes) matches one process with the same global batch.

Tolerance: every logged loss within 1e-4 (absolute) for k = 4 steps, and the final weights
within 1e-4. The two runs see the same cells, masks and learning rates; they differ only in
the order of float additions (per-process sums, gloo's all-reduce), which is far below 1e-4.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tflib.models import Transcriptformer
from tflib.train import PretrainConfig, run_pretraining

STEPS = 4
TOL = 1e-4


TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")
def test_ddp_two_processes_match_single_process(tmp_path):
    cfg = dict(model=dict(max_len=40, n_layer=2, n_head=2, n_embd=32, n_inner=64, dropout=0.0, attn_dropout=0.0),
               synthetic=dict(n_cells=40, vocab_size=80, min_len=8, max_len=40, seed=1),
               batch_size=8, max_steps=STEPS, warmup_steps=1, lr=3e-3, checkpoint_every=STEPS,
               progress=False, device="cpu", out_dir=str(tmp_path / "ddp"))
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "tflib.train.pretrain",
                          "--config", str(path)], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "ddp" / "loss_log.csv") as fh:
        ddp_losses = [float(r["loss"]) for r in csv.DictReader(fh)]

    torch.set_num_threads(1)
    single = run_pretraining(PretrainConfig(**dict(cfg, out_dir=str(tmp_path / "single"))))
    assert len(ddp_losses) == STEPS
    for a, b in zip(ddp_losses, single.losses):
        assert abs(a - b) < TOL, (ddp_losses, single.losses)
    ddp_model = Transcriptformer.from_pretrained(tmp_path / "ddp" / "model")
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp_model.state_dict()[k], v, atol=TOL, rtol=0)
