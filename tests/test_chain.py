"""Chained chapters (tflib.tl.chain, chapter 03's table): save, load, rebuild, never clobber."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import tflib.datasets as tds
import tflib.tl as tl
from tflib.tl.chain import ARTIFACT_KEY

SMALL = dict(n_cells=80, n_genes=60, n_fates=2, seed=3)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_is_built_then_loaded(tmp_path, capsys):
    path = tmp_path / "world.h5ad"
    built = tl.load_or_build(path, tds.simulate, **SMALL)
    assert "not found: rebuilding with tflib.datasets" in capsys.readouterr().out
    assert path.exists() and ARTIFACT_KEY not in built.uns
    loaded = tl.load_or_build(path, tds.simulate, **SMALL)
    out = capsys.readouterr().out
    assert out.startswith(f"loaded {path}") and "seed=3" in out
    assert (loaded.X != built.X).nnz == 0
    assert loaded.obs_names.equals(built.obs_names)
    assert loaded.uns[ARTIFACT_KEY]["recipe"].endswith("simulate")


def test_a_file_from_another_call_is_left_alone(tmp_path, capsys):
    path = tmp_path / "world.h5ad"
    tl.save_artifact(tds.simulate(**{**SMALL, "seed": 4}), path, tds.simulate,
                     **{**SMALL, "seed": 4})
    before = _sha(path)
    got = tl.load_or_build(path, tds.simulate, **SMALL)
    out = capsys.readouterr().out
    assert "left as it is" in out and "holds tflib.datasets" in out and "seed=4" in out
    assert _sha(path) == before                                   # not overwritten
    fresh = tds.simulate(**SMALL)
    assert (got.X != fresh.X).nnz == 0                           # rebuilt with the asked call


def test_a_file_written_by_other_library_code_is_not_read(tmp_path, capsys):
    import anndata as ad

    path = tmp_path / "world.h5ad"
    tl.save_artifact(tds.simulate(**SMALL), path, tds.simulate, **SMALL)
    old = ad.read_h5ad(path)
    old.uns[ARTIFACT_KEY]["source_sha256"] = "0" * 64         # as if tflib had been edited since
    old.write_h5ad(path)
    before = _sha(path)
    tl.load_or_build(path, tds.simulate, **SMALL)
    out = capsys.readouterr().out
    assert "left as it is" in out and "with other tflib code" in out
    assert _sha(path) == before


def test_a_foreign_h5ad_is_left_alone(tmp_path, capsys):
    path = tmp_path / "mine.h5ad"
    mine = tds.simulate(**SMALL)
    mine.write_h5ad(path)                                         # the user's own file, no record
    before = _sha(path)
    tl.load_or_build(path, tds.simulate, **SMALL)
    assert "holds no tflib record" in capsys.readouterr().out
    assert _sha(path) == before


def test_save_refuses_to_overwrite_and_keeps_the_input(tmp_path):
    path = tmp_path / "a.h5ad"
    adata = tds.simulate(**SMALL)
    uns_before = set(adata.uns)
    tl.save_artifact(adata, path, tds.simulate, **SMALL)
    assert set(adata.uns) == uns_before                           # the record goes to the file only
    before = _sha(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tl.save_artifact(adata, path, tds.simulate, **SMALL)
    assert _sha(path) == before
    adata.obs["extra"] = 1
    tl.save_artifact(adata, path, tds.simulate, overwrite=True, **SMALL)
    assert _sha(path) != before
    assert not list(tmp_path.glob(".*partial"))                  # no temporary file left behind


def test_bad_input_names_the_fix(tmp_path):
    adata = tds.simulate(**SMALL)
    with pytest.raises(ValueError, match=r"\.h5ad"):
        tl.save_artifact(adata, tmp_path / "a.zarr", tds.simulate, **SMALL)
    with pytest.raises(TypeError, match="plain values only"):
        tl.load_or_build(tmp_path / "b.h5ad", tds.simulate, adata=adata)
    assert not (tmp_path / "b.h5ad").exists()
    assert ARTIFACT_KEY not in adata.uns
    with pytest.raises(TypeError, match="module level"):
        tl.load_or_build(tmp_path / "c.h5ad", lambda **kw: tds.simulate(**kw), **SMALL)
    assert not (tmp_path / "c.h5ad").exists()


def test_course_world_is_the_documented_simulate_call():
    a = tl.course_world(world_seed=3, n_cells=80, n_genes=60, n_fates=2)
    b = tds.simulate(n_cells=80, n_genes=60, n_fates=2, n_batches=1, seed=3, library_size=3.0)
    assert (a.X != b.X).nnz == 0 and a.var_names.equals(b.var_names)


def test_student_overrides_replace_only_what_was_asked():
    model, tokenizer = pytest.importorskip("tflib.models").course_checkpoint()
    student = tl.TrajectoryAwareTranscriptformer(model, tokenizer, max_len=128, epochs=4, seed=7)
    default = tl.TrajectoryAwareTranscriptformer(model, tokenizer)
    assert (student.config.max_len, student.config.epochs, student.config.seed) == (128, 4, 7)
    assert default.config.max_len == 64 and default.config.seed == 0
    assert student.config.lr == default.config.lr


def test_cellrank_world_names_states_after_true_fates(tmp_path):
    """The recipe of chapters 12 and 13: fates and drivers by true fate name, h5ad-safe."""
    world = tl.cellrank_world(world_seed=11)
    fates = list(world.obsm["fate_probs_true"].columns)
    P = world.obsm["fate_probs_cellrank"]
    assert sorted(P.columns) == sorted(fates)
    assert np.allclose(P.sum(1), 1.0)
    drivers = world.varm["fate_drivers_cellrank"]
    assert {f"{f}_corr" for f in fates} <= set(drivers.columns)
    path = tl.save_artifact(world, tmp_path / "w.h5ad", tl.cellrank_world, world_seed=11)
    again = tl.load_or_build(path, tl.cellrank_world, world_seed=11)
    assert np.allclose(again.obsm["fate_probs_cellrank"][fates], P[fates])


def test_a_file_that_is_not_hdf5_is_left_alone(tmp_path, capsys):
    path = tmp_path / "world.h5ad"
    path.write_text("my notes, not an AnnData")
    got = tl.load_or_build(path, tds.simulate, **SMALL)
    out = capsys.readouterr().out
    assert "holds no tflib record" in out and "left as it is" in out
    assert path.read_text() == "my notes, not an AnnData"
    assert got.n_obs == SMALL["n_cells"]
