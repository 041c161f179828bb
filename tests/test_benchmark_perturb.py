"""Smoke test of ``benchmarks/perturb.py`` (issue 12): it runs, and its equality check holds.

The timings themselves are never asserted (they belong to the script's printout); this only
keeps the script working and its batched-vs-looped comparison exact on a small case.
"""
import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "perturb.py"


def test_perturb_benchmark_runs_and_batched_equals_looped(capsys):
    spec = importlib.util.spec_from_file_location("bench_perturb", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        bench.main(["--cells", "6", "--loop-cells", "3", "--genes", "600", "--repeat", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)                                  # the script sets it for the process
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("perturbations:"))
    diff = float(line.split("L2 shift:")[1].split()[0])
    assert diff <= 1e-5
    assert "ratio" in out and "peak RSS" in out
