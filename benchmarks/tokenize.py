"""Benchmark: rank-value tokenization from an .h5ad on disk to tokens on disk (issues 3 and 10).

Two pipelines, each run in its own subprocess so that its peak RSS is its own:

``reference``  the per-cell algorithm in :mod:`tflib.tokenize.reference`, shaped like Geneformer's
               tokenizer (backed reads of 512 cells, per-cell normalisation and argsort, Python
               lists, ``<cls>``/``<eos>`` added per cell), then written to a token store.
``tflib``      ``RankValueTokenizer.encode_to_store``: vectorised CSR chunks, streamed, encoded
               on the cores the process may use (``n_jobs=None``, what a user gets; ``--jobs 1``
               for one thread). The CPU-time ratio compares work per core-second.

The input is real-shaped (issue 10): about 2 % of the file's genes are outside the vocabulary
(``--oov``), a few cells express more genes than the V2 limit of 4,094 so that truncation runs
(``--long``), and the medians sit on a coarse grid (2 significant digits) so that exact ties
between genes are common. ``--oov 0 --long 0 --no-ties`` gives the old, all-in-vocabulary input.

Both use the V2 preset and the same vocabulary and medians; the script checks that the two
stores hold identical tokens, then prints for each pipeline the in-process time (tokenizer
loaded -> tokens on disk), the whole-process time (interpreter start, imports and all), cells/s
and peak RSS, the ratios, and what ``import tflib.tokenize`` costs and pulls in.

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


def synthesise(path: Path, n_cells: int, n_genes: int, lo: int, hi: int, seed: int = 0, chunk: int = 5000,
               n_long: int = 0, long_range: tuple[int, int] = (4500, 6000)) -> Path:
    """Write a raw-count CSR .h5ad with lo..hi expressed genes per cell, chunk by chunk (bounded memory).

    ``n_long`` cells, spread evenly over the file, express ``long_range`` genes instead (more than
    the V2 limit of 4,094, so that the tokenizers truncate them)."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    gene_mean = rng.lognormal(0.0, 1.0, n_genes)  # genes differ in typical level -> distinct medians
    tmp = path.with_suffix(".partial")
    totals = np.zeros(n_cells)
    long_cells = np.zeros(n_cells, dtype=bool)
    long_cells[np.linspace(0, n_cells - 1, n_long).astype(int) if n_long else []] = True
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
            is_long = long_cells[start:stop]
            k[is_long] = rng.integers(long_range[0], min(long_range[1], n_genes) + 1, int(is_long.sum()))
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


def prepare(h5ad: Path, oov: float = 0.02, ties: bool = True) -> Path:
    """The V2 tokenizer: a vocabulary of the file's genes but a fraction ``oov`` of them (shuffled
    order), and exact medians from the first 2,000 cells, rounded to 2 significant digits when
    ``ties`` (so that ``count / median`` is often exactly equal between genes of a cell)."""
    import anndata as ad

    from tflib.tokenize import GeneMedians, GeneVocab, RankValueTokenizer, gene_medians

    d = h5ad.with_name(h5ad.stem + f"_oov{oov:g}{'_ties' if ties else ''}.tokenizer")
    if d.exists():
        return d
    a = ad.read_h5ad(h5ad, backed="r")
    rng = np.random.default_rng(1)
    genes = np.asarray(a.var_names)
    inside = genes[rng.random(genes.size) >= oov]
    vocab = GeneVocab.from_genes(rng.permutation(inside))
    sub = a[: min(2000, a.n_obs)].to_memory()
    med = gene_medians(sub, vocab=vocab)
    if ties:
        values = {g: float(f"{m:.2g}") for g, m in med.as_dict().items()}
        med = GeneMedians.from_dict(values)
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
    """Run one pipeline in this process; return timing and peak RSS. Each imports only what it
    uses (tflib reads a plain .h5ad without anndata), so whole-process times are comparable."""
    from tflib.tokenize import TokenStoreWriter, load_tokenizer

    tok = load_tokenizer(tokdir)
    if kind != "tflib":  # the reference reads through AnnData: imported before the clock starts
        import anndata as ad

        from tflib.tokenize.reference import rank_value_reference
    base_rss = peak_rss_mb()
    if out.exists():
        shutil.rmtree(out)
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "tflib":
        jobs = os.environ.get("TFLIB_BENCH_JOBS")
        store = tok.encode_to_store(h5ad, out, chunk_size=chunk, n_jobs=int(jobs) if jobs else None)
        n = len(store)
    else:
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
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    whole = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{kind} pipeline failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["whole_process_seconds"] = whole
    return out


_IMPORT_PROBE = """
import sys, time, json
t0 = time.perf_counter()
import tflib.tokenize
t1 = time.perf_counter()
from tflib.tokenize import RankValueTokenizer, load_tokenizer, TokenStore
t2 = time.perf_counter()
heavy = [m for m in ("scanpy", "torch", "scvi", "sklearn", "anndata", "pandas", "scipy") if m in sys.modules]
print(json.dumps({"import_package_s": t1 - t0, "import_tokenizer_s": t2 - t0, "loaded": heavy}))
"""


def import_cost() -> dict:
    """What ``import tflib.tokenize`` and its tokenizer names cost in a fresh interpreter, and which
    heavy packages they pull in (scanpy, torch and scvi-tools must not be among them)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["whole_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    out["bare_interpreter_s"] = time.perf_counter() - t0
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--expressed", type=int, nargs=2, default=(2000, 4000), metavar=("LO", "HI"))
    p.add_argument("--chunk", type=int, default=256, help="cells per tflib chunk")
    p.add_argument("--jobs", type=int, default=None, help="tflib threads (default: available cores, <= 4)")
    p.add_argument("--oov", type=float, default=0.02, help="fraction of the file's genes outside the vocabulary")
    p.add_argument("--long", type=int, default=None,
                   help="cells with 4,500-6,000 expressed genes (> the V2 limit); default 0.5%% of the cells")
    p.add_argument("--no-ties", action="store_true", help="exact medians (ties only by chance)")
    p.add_argument("--streaming", type=int, default=0, help="only the tflib pipeline on this many cells")
    p.add_argument("--keep", action="store_true", help="keep the token stores in benchmarks/_out")
    p.add_argument("--_child"), p.add_argument("--_h5ad"), p.add_argument("--_tok"), p.add_argument("--_out")
    a = p.parse_args(argv)
    if a.jobs is not None:
        os.environ["TFLIB_BENCH_JOBS"] = str(a.jobs)     # read by the tflib child process
    if a._child:
        print(json.dumps(run_pipeline(a._child, Path(a._h5ad), Path(a._tok), Path(a._out), a.chunk)))
        return
    OUT.mkdir(exist_ok=True)
    n_cells = a.streaming or a.cells
    lo, hi = a.expressed
    n_long = max(1, n_cells // 200) if a.long is None else a.long
    h5ad = OUT / f"counts_{n_cells}x{a.genes}_{lo}-{hi}{f'_long{n_long}' if n_long else ''}.h5ad"
    t = time.perf_counter()
    synthesise(h5ad, n_cells, a.genes, lo, hi, n_long=n_long)
    tokdir = prepare(h5ad, oov=a.oov, ties=not a.no_ties)
    print(f"input: {h5ad.name} ({h5ad.stat().st_size / 1e9:.2f} GB), tokenizer {tokdir.name}, prepared in "
          f"{time.perf_counter() - t:.0f} s")
    if a.streaming:
        r = _subprocess("tflib", h5ad, tokdir, OUT / "stream.tokens", a.chunk)
        print(f"streaming {r['cells']:,} cells: {r['cells_per_s']:,.0f} cells/s, {r['seconds']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (after imports {r['rss_after_imports_mb']:,.0f} MB); "
              f"bound 2,048 MB: {'OK' if r['peak_rss_mb'] <= 2048 else 'EXCEEDED'}")
        if not a.keep:
            shutil.rmtree(OUT / "stream.tokens", ignore_errors=True)
        return
    res = {k: _subprocess(k, h5ad, tokdir, OUT / f"{k}.tokens", a.chunk) for k in ("reference", "tflib")}
    from tflib.tokenize.base import resolve_jobs

    print(f"tflib threads: {resolve_jobs(a.jobs)} (n_jobs={a.jobs}); the reference is single-threaded")
    imp = import_cost()
    from tflib.tokenize import TokenStore

    s_ref, s_new = TokenStore.open(OUT / "reference.tokens"), TokenStore.open(OUT / "tflib.tokens")
    same = (np.array_equal(s_ref.offsets, s_new.offsets) and np.array_equal(s_ref.tokens, s_new.tokens)
            and np.array_equal(s_ref.obs_index, s_new.obs_index))
    rep = s_new.report
    m = rep.get("mapping", {})
    print(f"data: {m.get('n_tokenizable', 0):,} of {m.get('n_input', 0):,} genes in the vocabulary "
          f"({1 - m.get('n_tokenizable', 0) / max(m.get('n_input', 1), 1):.1%} outside), "
          f"{rep.get('n_cells_truncated', 0):,} cells truncated to the V2 limit, "
          f"{rep.get('count_fraction_covered', 0):.1%} of the counts covered")
    for k, r in res.items():
        print(f"{k:>9}: {r['cells']:,} cells in {r['seconds']:.2f} s in-process = {r['cells_per_s']:,.0f} cells/s "
              f"({r['cpu_seconds']:.1f} CPU s); whole process {r['whole_process_seconds']:.2f} s; "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (after imports {r['rss_after_imports_mb']:,.0f} MB)")
    speed = res["tflib"]["cells_per_s"] / res["reference"]["cells_per_s"]
    speed_cpu = res["tflib"]["cells_per_cpu_s"] / res["reference"]["cells_per_cpu_s"]
    whole = res["reference"]["whole_process_seconds"] / res["tflib"]["whole_process_seconds"]
    rss = res["tflib"]["peak_rss_mb"] / res["reference"]["peak_rss_mb"]
    print(f"identical token stores: {same}")
    print(f"speed ratio tflib/reference: {speed:.1f}x in-process wall clock (target >= 10x), {speed_cpu:.1f}x CPU "
          f"time; whole process, imports included: {whole:.1f}x "
          f"({res['reference']['whole_process_seconds']:.2f} s vs {res['tflib']['whole_process_seconds']:.2f} s); "
          f"peak RSS ratio: {rss:.2f} (target <= 0.25)")
    bad = {"scanpy", "torch", "scvi"} & set(imp["loaded"])
    print(f"import tflib.tokenize: {imp['import_package_s'] * 1e3:.0f} ms; with RankValueTokenizer, load_tokenizer "
          f"and TokenStore resolved: {imp['import_tokenizer_s']:.2f} s (a bare interpreter starts in "
          f"{imp['bare_interpreter_s']:.2f} s); heavy modules loaded: {imp['loaded']} "
          f"(scanpy/torch/scvi must not appear: {'FAIL ' + str(sorted(bad)) if bad else 'OK'})")
    print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; the CPU-time "
          "ratio is the one that does not depend on other processes)")
    if not a.keep:
        for k in res:
            shutil.rmtree(OUT / f"{k}.tokens", ignore_errors=True)
    if not same:
        sys.exit("the two pipelines disagree")


if __name__ == "__main__":
    main()
