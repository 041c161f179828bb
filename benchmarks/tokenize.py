"""Benchmark: rank-value tokenization from an .h5ad on disk to tokens on disk (issue 3).

Two pipelines, each run in its own subprocess so that its peak RSS is its own:

``reference``  the per-cell algorithm in :mod:`tflib.tokenize.reference`, shaped like Geneformer's
               tokenizer (backed reads of 512 cells, per-cell normalisation and argsort, Python
               lists, ``<cls>``/``<eos>`` added per cell), then written to a token store.
``tflib``      ``RankValueTokenizer.encode_to_store``: vectorised CSR chunks, streamed.

Both use the V2 preset and the same vocabulary and medians; the script checks that the two
stores hold identical tokens, then prints cells/s, the speed ratio and peak RSS of each.

``--streaming N`` instead tokenizes N cells from a backed file with the tflib pipeline only and
prints its peak RSS (the issue's bound: <= 2 GB for 200,000 cells).

Usage (from the project root)::

    .venv/bin/python benchmarks/tokenize.py                       # 20,000 x 20,000, both pipelines
    .venv/bin/python benchmarks/tokenize.py --cells 2000          # quick check while developing
    .venv/bin/python benchmarks/tokenize.py --streaming 200000    # the bounded-memory check

Inputs are synthesised into ``benchmarks/_out/`` (git-ignored) and reused between runs.
"""
from __future__ import annotations

import os
import sys

# This file is called tokenize.py, like a standard-library module that Python imports lazily
# (inspect, linecache...): take its folder off the import path so the real one is found.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "_out"


def _ensembl(i: int) -> str:
    return f"ENSG{i:011d}"


def synthesise(path: Path, n_cells: int, n_genes: int, lo: int, hi: int, seed: int = 0, chunk: int = 5000) -> Path:
    """Write a raw-count CSR .h5ad with lo..hi expressed genes per cell, chunk by chunk (bounded memory)."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    gene_mean = rng.lognormal(0.0, 1.0, n_genes)  # genes differ in typical level -> distinct medians
    tmp = path.with_suffix(".partial")
    totals = np.zeros(n_cells)
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        X = f.create_group("X")
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "csr_matrix", "0.1.0"
        X.attrs["shape"] = (n_cells, n_genes)
        data = X.create_dataset("data", shape=(0,), maxshape=(None,), dtype="float32", chunks=(1 << 20,))
        indices = X.create_dataset("indices", shape=(0,), maxshape=(None,), dtype="int32", chunks=(1 << 20,))
        indptr = [np.zeros(1, np.int64)]
        nnz = 0
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            k = rng.integers(lo, hi + 1, stop - start)
            cols = [np.sort(rng.choice(n_genes, kk, replace=False)) for kk in k]
            idx = np.concatenate(cols).astype(np.int32)
            mu = gene_mean[idx] * rng.lognormal(0, 0.3, stop - start).repeat(k)
            vals = (1 + rng.poisson(mu)).astype(np.float32)
            row = np.repeat(np.arange(stop - start), k)
            totals[start:stop] = np.bincount(row, weights=vals, minlength=stop - start)
            data.resize((nnz + idx.size,))
            indices.resize((nnz + idx.size,))
            data[nnz:], indices[nnz:] = vals, idx
            nnz += idx.size
            indptr.append(nnz - idx.size + np.cumsum(k))
        X.create_dataset("indptr", data=np.concatenate(indptr))
        obs = pd.DataFrame({"n_counts": totals,
                            "cell_type": pd.Categorical(np.array(["A", "B", "C"])[np.arange(n_cells) % 3])},
                           index=[f"c{i}" for i in range(n_cells)])
        write_elem(f, "obs", obs)
        write_elem(f, "var", pd.DataFrame(index=[_ensembl(i) for i in range(n_genes)]))
    tmp.rename(path)
    return path


def prepare(h5ad: Path, n_genes: int) -> Path:
    """Vocabulary (genes in a shuffled order) and exact medians from the first 2,000 cells."""
    import anndata as ad

    from tflib.tokenize import GeneVocab, gene_medians

    d = h5ad.with_suffix(".tokenizer")
    if d.exists():
        return d
    a = ad.read_h5ad(h5ad, backed="r")
    vocab = GeneVocab.from_genes(np.random.default_rng(1).permutation(np.asarray(a.var_names)))
    sub = a[: min(2000, a.n_obs)].to_memory()
    med = gene_medians(sub, vocab=vocab)
    from tflib.tokenize import RankValueTokenizer

    RankValueTokenizer(vocab, med, preset="V2").save_pretrained(d)
    return d


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Unlike ``getrusage``'s ``ru_maxrss``, which a
    child inherits from its parent across fork and exec, VmHWM starts fresh in every new program."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def run_pipeline(kind: str, h5ad: Path, tokdir: Path, out: Path, chunk: int) -> dict:
    """Run one pipeline in this process; return timing and peak RSS."""
    import anndata as ad

    from tflib.tokenize import TokenStoreWriter, load_tokenizer

    tok = load_tokenizer(tokdir)
    base_rss = peak_rss_mb()
    if out.exists():
        shutil.rmtree(out)
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "tflib":
        store = tok.encode_to_store(h5ad, out, chunk_size=chunk)
        n = len(store)
    else:
        from tflib.tokenize.reference import rank_value_reference

        adata = ad.read_h5ad(h5ad, backed="r")
        lists, kept = rank_value_reference(tok, adata, chunk_size=512)
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for cell in lists for t in cell), dtype=np.int32, count=int(offsets[-1]))
        with TokenStoreWriter(out, config=tok.config()) as w:
            w.append(flat, offsets, obs=adata.obs.iloc[kept], obs_index=kept)
        n = len(lists)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mb()
    return {"pipeline": kind, "cells": n, "seconds": dt, "cells_per_s": n / dt, "cpu_seconds": cpu,
            "cells_per_cpu_s": n / cpu, "peak_rss_mb": peak,
            "rss_after_imports_mb": base_rss}


def _subprocess(kind, h5ad, tokdir, out, chunk) -> dict:
    cmd = [sys.executable, __file__, "--_child", kind, "--_h5ad", str(h5ad), "--_tok", str(tokdir),
           "--_out", str(out), "--chunk", str(chunk)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} pipeline failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, nargs=2, default=(2000, 4000), metavar=("LO", "HI"))
    p.add_argument("--chunk", type=int, default=256, help="cells per tflib chunk")
    p.add_argument("--streaming", type=int, default=0, help="only the tflib pipeline on this many cells")
    p.add_argument("--keep", action="store_true", help="keep the token stores in benchmarks/_out")
    p.add_argument("--_child"), p.add_argument("--_h5ad"), p.add_argument("--_tok"), p.add_argument("--_out")
    a = p.parse_args(argv)
    if a._child:
        print(json.dumps(run_pipeline(a._child, Path(a._h5ad), Path(a._tok), Path(a._out), a.chunk)))
        return
    OUT.mkdir(exist_ok=True)
    n_cells = a.streaming or a.cells
    lo, hi = a.expressed
    h5ad = OUT / f"counts_{n_cells}x{a.genes}_{lo}-{hi}.h5ad"
    t = time.perf_counter()
    synthesise(h5ad, n_cells, a.genes, lo, hi)
    tokdir = prepare(h5ad, a.genes)
    print(f"input: {h5ad.name} ({h5ad.stat().st_size / 1e9:.2f} GB), prepared in {time.perf_counter() - t:.0f} s")
    if a.streaming:
        r = _subprocess("tflib", h5ad, tokdir, OUT / "stream.tokens", a.chunk)
        print(f"streaming {r['cells']:,} cells: {r['cells_per_s']:,.0f} cells/s, {r['seconds']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (after imports {r['rss_after_imports_mb']:,.0f} MB); "
              f"bound 2,048 MB: {'OK' if r['peak_rss_mb'] <= 2048 else 'EXCEEDED'}")
        if not a.keep:
            shutil.rmtree(OUT / "stream.tokens", ignore_errors=True)
        return
    res = {k: _subprocess(k, h5ad, tokdir, OUT / f"{k}.tokens", a.chunk) for k in ("reference", "tflib")}
    from tflib.tokenize import TokenStore

    s_ref, s_new = TokenStore.open(OUT / "reference.tokens"), TokenStore.open(OUT / "tflib.tokens")
    same = (np.array_equal(s_ref.offsets, s_new.offsets) and np.array_equal(s_ref.tokens, s_new.tokens)
            and np.array_equal(s_ref.obs_index, s_new.obs_index))
    for k, r in res.items():
        print(f"{k:>9}: {r['cells']:,} cells in {r['seconds']:.1f} s = {r['cells_per_s']:,.0f} cells/s "
              f"({r['cpu_seconds']:.1f} CPU s = {r['cells_per_cpu_s']:,.0f} cells per CPU s), "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (after imports {r['rss_after_imports_mb']:,.0f} MB)")
    speed = res["tflib"]["cells_per_s"] / res["reference"]["cells_per_s"]
    speed_cpu = res["tflib"]["cells_per_cpu_s"] / res["reference"]["cells_per_cpu_s"]
    rss = res["tflib"]["peak_rss_mb"] / res["reference"]["peak_rss_mb"]
    print(f"identical token stores: {same}")
    print(f"speed ratio tflib/reference: {speed:.1f}x wall clock, {speed_cpu:.1f}x CPU time (target >= 10x); "
          f"peak RSS ratio: {rss:.2f} (target <= 0.25)")
    print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; the CPU-time "
          "ratio is the one that does not depend on other processes)")
    if not a.keep:
        for k in res:
            shutil.rmtree(OUT / f"{k}.tokens", ignore_errors=True)
    if not same:
        sys.exit("the two pipelines disagree")


if __name__ == "__main__":
    main()
