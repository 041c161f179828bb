"""The course checkpoint (chapter 06): it loads, it is consistent, its recipe reproduces it,
its metrics are recomputed from the weights, and writing one never loses a user's files.

The full recipe takes minutes, so the reproduction test re-runs only its first ``K`` steps
from scratch and compares them with the committed loss log. The held-out metrics are not read
from a cache: :func:`recomputed` evaluates the shipped weights on the whole held-out split with
the recipe's fixed mask (a few seconds), and the tests compare that with ``metrics.json``.
The writer's tests use a tiny model, so they run in a second.
"""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tflib.models import Transcriptformer, TranscriptformerConfig, course_checkpoint
from tflib.models.course import MARKER, SHIPPED, verify_checkpoint
from tflib.train.corpus import (COURSE_RECIPE, corpus_from_recipe, learning_curve, load_recipe, main,
                                train_course_checkpoint, train_course_model)
from tflib.train.evaluation import evaluate_mlm, evaluate_unseen, frequency_baselines, vocabulary_coverage
from tflib.train.course import write_checkpoint

K = 6  # training steps re-run from scratch
TARGET_HELDOUT, TARGET_UNSEEN = 5.0, 2.0  # issue 11: model / position-baseline accuracy at <mask> positions


@pytest.fixture(scope="module")
def shipped():
    model, tokenizer = course_checkpoint(device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(COURSE_RECIPE)


@pytest.fixture(scope="module")
def corpus(recipe):
    return corpus_from_recipe(recipe)


@pytest.fixture(scope="module")
def metrics():
    return json.loads((SHIPPED / "metrics.json").read_text())


@pytest.fixture(scope="module")
def recomputed(shipped, corpus, recipe):
    """The held-out metrics, measured now from the shipped weights (not read from metrics.json)."""
    model, tokenizer = shipped
    return evaluate_mlm(model, tokenizer, corpus.heldout_cells, corpus.train_cells, **recipe["eval"])


@pytest.fixture(scope="module")
def recomputed_unseen(shipped, recipe):
    """The scores on real PBMCs from outside the corpus, measured now from the shipped weights."""
    model, tokenizer = shipped
    return evaluate_unseen(model, tokenizer, **recipe["eval"])


def test_shipped_checkpoint_is_complete_and_small():
    ok, why = verify_checkpoint(SHIPPED)
    assert ok, why
    total = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert total <= 10 * 2**20, f"course checkpoint is {total / 2**20:.1f} MiB; the limit is 10 MiB"


def test_loads_the_shipped_copy(shipped, metrics):
    model, tokenizer = shipped
    assert model.course_dir == SHIPPED
    assert not model.training
    assert model.course_metrics["heldout"] == metrics["heldout"]


def test_config_vocab_and_preset_agree_with_the_recipe(shipped, recipe):
    model, tokenizer = shipped
    assert model.config.vocab_size == len(tokenizer.vocab)
    assert tokenizer.preset == "V2" and tokenizer.max_len == recipe["corpus"]["max_len"]
    assert tokenizer.vocab.n_genes == recipe["corpus"].get("n_genes", tokenizer.vocab.n_genes)
    for key, value in recipe["pretrain"]["model"].items():
        assert getattr(model.config, key) == value, key
    assert model.config.max_len >= tokenizer.max_len


def test_tampered_copy_is_rejected(tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, copy)
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    ok, why = verify_checkpoint(copy)
    assert not ok and "SHA-256" in why


def test_corpus_rebuilds_the_shipped_tokenizer(shipped, corpus, metrics):
    _, tokenizer = shipped
    assert corpus.tokenizer.vocab == tokenizer.vocab
    assert corpus.tokenizer.config() == tokenizer.config()
    assert corpus.report["n_cells"] == metrics["corpus"]["n_cells"]
    assert corpus.report["n_heldout"] == metrics["corpus"]["n_heldout"]
    assert len(np.intersect1d(corpus.train, corpus.heldout)) == 0
    assert tokenizer.vocab.n_genes == metrics["corpus"]["n_genes"] > 10_000      # a vocabulary for any tissue


def test_recipe_reproduces_the_first_losses(corpus, recipe, tmp_path):
    result, _, _ = train_course_model(tmp_path / "run", recipe, corpus=corpus, max_steps=K, progress=False)
    with open(SHIPPED / "loss_log.csv") as fh:
        logged = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert len(logged) == recipe["pretrain"]["max_steps"]
    np.testing.assert_allclose(result.losses, logged[:K], rtol=0, atol=1e-5)


def test_an_interrupted_recipe_resumes_with_the_same_losses(corpus, recipe, tmp_path):
    """What ``python -m tflib.train.corpus --work-dir RUN`` relies on: stop after 3 steps, run again
    in the same folder with resume, and steps 3.. continue the committed loss log exactly."""
    run = tmp_path / "run"
    first, _, _ = train_course_model(run, recipe, corpus=corpus, max_steps=3, progress=False)
    more, _, _ = train_course_model(run, recipe, corpus=corpus, max_steps=3, progress=False, resume=True)
    with open(SHIPPED / "loss_log.csv") as fh:
        logged = [float(row["loss"]) for row in csv.DictReader(fh)]
    assert [r["step"] for r in more.log] == list(range(6))
    np.testing.assert_allclose(more.losses, logged[:6], rtol=0, atol=1e-5)
    # the learning curve scores every checkpoint the run kept (the stops at steps 3 and 6)
    base = frequency_baselines(corpus.train_cells, len(corpus.tokenizer.vocab), 128)
    few = type(corpus.heldout_cells)(corpus.cells, corpus.heldout[:30])
    curve = learning_curve(run, corpus.tokenizer, few, base, more.log)
    assert [r["step"] for r in curve] == [3, 6]
    assert curve[-1]["tokens"] == sum(r["n_tokens"] for r in more.log) > curve[0]["tokens"]
    direct = evaluate_mlm(more.model, corpus.tokenizer, few, baselines=base)["mask_token"]
    assert curve[-1]["accuracy"] == direct["accuracy"]["model"]
    assert curve[-1]["loss"] == pytest.approx(direct["loss"])


def test_vocabulary_coverage_recomputed_matches_metrics_json(shipped, metrics):
    _, tokenizer = shipped
    got = vocabulary_coverage(tokenizer)
    assert got == pytest.approx(metrics["coverage_outside_corpus"], abs=1e-9)
    assert set(got) == {"A172", "T98G", "U87MG", "k562"} and all(0 < v < 1 for v in got.values())


def test_scaled_counts_are_turned_back_into_counts_or_refused():
    import scipy.sparse as sp

    from tflib.train.corpus import _counts_from_scaled

    counts = np.array([[1, 0, 3, 2], [0, 5, 1, 0], [0, 0, 0, 0]], float)
    scaled = sp.csr_matrix(counts * np.array([[0.68], [2.5], [1.0]]))   # scVelo-style per-cell scaling
    np.testing.assert_array_equal(_counts_from_scaled(scaled, "toy").toarray(), counts)
    with pytest.raises(ValueError, match="not a multiple of one count"):
        _counts_from_scaled(sp.csr_matrix(np.array([[1.0, 1.5, 2.2]])), "toy")


def test_heldout_metrics_recomputed_from_the_weights_match_metrics_json(recomputed, metrics):
    want = metrics["heldout"]
    assert recomputed["seed"] == want["seed"]
    for part in ("mask_token", "all_chosen"):
        got, exp = recomputed[part], want[part]
        assert got["n"] == exp["n"], part                              # the same fixed mask
        assert got["loss"] == pytest.approx(exp["loss"], abs=1e-4), part
        assert set(got["accuracy"]) == set(exp["accuracy"]) == {"model", "position", "unigram"}
        for who, value in got["accuracy"].items():                   # within one position's worth
            assert value == pytest.approx(exp["accuracy"][who], abs=1.5 / got["n"]), (part, who)
    assert recomputed["headline"]["model"] == pytest.approx(want["headline"]["model"], abs=1.5 / want["headline"]["n"])


def test_headline_is_mask_token_accuracy_beside_the_position_baseline(recomputed, metrics):
    for h, source in ((recomputed["headline"], recomputed), (metrics["heldout"]["headline"], metrics["heldout"])):
        assert h["metric"] == "accuracy at <mask> positions"
        assert h["n"] == source["mask_token"]["n"] < source["all_chosen"]["n"]
        assert h["model"] == source["mask_token"]["accuracy"]["model"]
        assert h["position_baseline"] == source["mask_token"]["accuracy"]["position"]
    assert recomputed["mask_token"]["accuracy"]["position"] > recomputed["mask_token"]["accuracy"]["unigram"]


def test_the_checkpoint_beats_the_position_baseline_by_issue_11s_factors(recomputed, recomputed_unseen):
    """Issue 11's targets, measured from the shipped weights: held-out <mask> accuracy >= 5x the
    rank-position baseline, a loss at least 1 nat below that baseline's cross-entropy, and on
    real PBMCs the corpus never saw >= 2x a position baseline fitted on that very dataset."""
    held = recomputed["mask_token"]
    assert held["accuracy"]["model"] >= TARGET_HELDOUT * held["accuracy"]["position"], held
    assert held["loss"] <= held["position_baseline_loss"] - 1.0, held
    unseen = recomputed_unseen["mask_token"]
    assert unseen["accuracy"]["model"] >= TARGET_UNSEEN * unseen["accuracy"]["position"], unseen


def test_unseen_metrics_recomputed_from_the_weights_match_metrics_json(recomputed_unseen, metrics):
    want, got = metrics["unseen"], recomputed_unseen
    assert got["data"] == want["data"] and got["data"]["n_dropped_shared_barcode"] > 0
    assert got["mask_token"]["n"] == want["mask_token"]["n"]
    assert got["mask_token"]["loss"] == pytest.approx(want["mask_token"]["loss"], abs=1e-4)
    for who, value in got["mask_token"]["accuracy"].items():
        assert value == pytest.approx(want["mask_token"]["accuracy"][who], abs=1.5 / got["mask_token"]["n"]), who


def test_learning_curve_rises_and_ends_at_the_shipped_model(metrics):
    curve = metrics["curve"]
    assert len(curve) >= 5 and [r["step"] for r in curve] == sorted(r["step"] for r in curve)
    assert curve[-1]["step"] == metrics["steps"]
    assert curve[-1]["accuracy"] == pytest.approx(metrics["heldout"]["mask_token"]["accuracy"]["model"], abs=1e-9)
    assert curve[-1]["loss"] < curve[0]["loss"] and curve[-1]["accuracy"] > curve[0]["accuracy"]


def test_position_baseline_probabilities_are_a_distribution(corpus):
    base = frequency_baselines(corpus.train_cells, len(corpus.tokenizer.vocab), 128)
    p = np.exp(base["position_logp"].astype(np.float64))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)
    assert (p[:, :4] == 0).all() and (p[:, 4:] > 0).all()


def test_evaluate_mlm_without_baselines_reports_the_model_only(shipped, corpus, recipe):
    model, tokenizer = shipped
    cells = corpus.heldout_cells
    few = type(cells)(cells.cells, cells.index[:20])
    ev = evaluate_mlm(model, tokenizer, few, **recipe["eval"])
    assert ev["headline"]["position_baseline"] is None
    assert set(ev["mask_token"]["accuracy"]) == {"model"}


# ---- writing a course checkpoint never loses a user's files ----------------------------------------
@pytest.fixture(scope="module")
def tiny():
    """A tiny model, its real tokenizer and a loss log: enough for write_checkpoint."""
    from tflib.tokenize import GeneVocab, RankValueTokenizer

    genes = [f"G{i}" for i in range(12)]
    tokenizer = RankValueTokenizer(GeneVocab.from_genes(genes), {g: 1.0 for g in genes}, preset="V2")
    torch.manual_seed(0)
    model = Transcriptformer(TranscriptformerConfig(vocab_size=len(tokenizer.vocab), max_len=16, n_layer=1,
                                                    n_head=2, n_embd=16, n_inner=32))
    return model, tokenizer


def _write(tiny, directory, tmp_path, metrics=None, **kw):
    log = tmp_path / "loss_log.csv"
    log.write_text("step,loss\n1,2.5\n")
    return write_checkpoint(directory, *tiny, log, metrics or {"run": 1}, **kw)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name and p.name.startswith("."))


def test_a_users_folder_is_refused_and_survives(tiny, tmp_path):
    user = tmp_path / "my_results"
    user.mkdir()
    (user / "analysis.csv").write_text("precious\n")
    for overwrite in (False, True):                                   # overwrite does not cover it
        with pytest.raises(FileExistsError, match=r"tflib did not write \(analysis.csv\).*new or empty folder"):
            _write(tiny, user, tmp_path, overwrite=overwrite)
    assert _snapshot(user) == {"analysis.csv": b"precious\n"}
    assert _siblings(user) == []                                       # no temporary folder left


def test_the_recipe_and_the_command_line_refuse_before_training(tmp_path, capsys):
    user = tmp_path / "my_results"
    user.mkdir()
    (user / "analysis.csv").write_text("precious\n")
    with pytest.raises(FileExistsError, match="tflib did not write"):
        train_course_checkpoint(user, overwrite=True)                 # checked before minutes of training
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(user), "--overwrite"])
    assert exit_info.value.code == 2 and "tflib did not write" in capsys.readouterr().err
    assert _snapshot(user) == {"analysis.csv": b"precious\n"}


def test_the_training_run_folder_of_the_recipe_keeps_a_users_files(corpus, recipe, tmp_path):
    user = tmp_path / "my_results"
    user.mkdir()
    (user / "analysis.csv").write_text("precious\n")
    with pytest.raises(FileExistsError, match="does not write"):
        train_course_model(user, recipe, corpus=corpus, max_steps=1, progress=False)
    assert _snapshot(user) == {"analysis.csv": b"precious\n"}


def test_a_course_checkpoint_is_replaced_only_when_asked(tiny, tmp_path):
    target = tmp_path / "course"
    _write(tiny, target, tmp_path, {"run": 1})
    marker = json.loads((target / MARKER).read_text())
    assert sorted(marker["files"]) == sorted(p.name for p in target.iterdir())
    assert verify_checkpoint(target)[0]
    first = _snapshot(target)
    with pytest.raises(FileExistsError, match=r"overwrite=True.*--overwrite.*another folder"):
        _write(tiny, target, tmp_path, {"run": 2})
    assert _snapshot(target) == first
    _write(tiny, target, tmp_path, {"run": 2}, overwrite=True)
    assert json.loads((target / "metrics.json").read_text())["run"] == 2 and verify_checkpoint(target)[0]
    assert _siblings(target) == []                                     # the old copy set aside is gone
    model, tokenizer = course_checkpoint(cache_dir=target, device="cpu")   # a cache_dir passed is looked at first
    assert model.course_dir == target and model.course_metrics["run"] == 2


def test_a_course_checkpoint_holding_a_users_file_is_not_replaced(tiny, tmp_path):
    target = tmp_path / "course"
    _write(tiny, target, tmp_path)
    (target / "my_notes.txt").write_text("mine\n")
    with pytest.raises(FileExistsError, match=r"also holds files that tflib did not write \(my_notes.txt\)"):
        _write(tiny, target, tmp_path, overwrite=True)
    assert (target / "my_notes.txt").read_text() == "mine\n" and verify_checkpoint(target)[0]


def test_an_empty_or_missing_folder_is_written(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    _write(tiny, tmp_path / "empty", tmp_path)
    _write(tiny, tmp_path / "deep" / "new", tmp_path)
    assert verify_checkpoint(tmp_path / "empty")[0] and verify_checkpoint(tmp_path / "deep" / "new")[0]


def test_a_failure_while_writing_leaves_the_old_checkpoint_intact(tiny, tmp_path):
    target = tmp_path / "course"
    _write(tiny, target, tmp_path, {"run": 1})
    before = _snapshot(target)
    with pytest.raises(FileNotFoundError, match="no_such_log"):     # the model is written, then the log is missing
        write_checkpoint(target, *tiny, tmp_path / "no_such_log.csv", {"run": 2}, overwrite=True)
    assert _snapshot(target) == before and _siblings(target) == []


def test_a_failure_at_the_final_rename_puts_the_old_checkpoint_back(tiny, tmp_path, monkeypatch):
    import tflib.train.course as writer

    target = tmp_path / "course"
    _write(tiny, target, tmp_path, {"run": 1})
    before = _snapshot(target)
    real_rename, calls = os.rename, []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:                                            # old set aside, then new -> target fails
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(writer.os, "rename", flaky)
    with pytest.raises(OSError, match="disk full"):
        _write(tiny, target, tmp_path, {"run": 2}, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3                                             # aside, failed swap, put back
    assert _snapshot(target) == before and _siblings(target) == []


def test_retrain_is_refused_with_the_replacement_call():
    with pytest.raises(ValueError, match=r"tflib.train.train_course_checkpoint\(.*overwrite=True\)"):
        course_checkpoint(retrain=True)


def test_no_verified_copy_names_the_fix(tmp_path, monkeypatch):
    import tflib.models.course as course

    monkeypatch.setattr(course, "SHIPPED", tmp_path / "gone")
    with pytest.raises(ValueError, match="train_course_checkpoint"):
        course_checkpoint(cache_dir=tmp_path / "empty_cache")


def test_the_short_student_recipe_is_the_course_recipe_cut_short(recipe):
    short = load_recipe(COURSE_RECIPE.with_name("course_short.toml"))
    assert short["corpus"] == recipe["corpus"] and short["pretrain"]["model"] == recipe["pretrain"]["model"]
    assert short["pretrain"]["max_steps"] < recipe["pretrain"]["max_steps"] / 5
    assert {k: v for k, v in short["pretrain"].items() if k not in ("max_steps", "warmup_steps", "checkpoint_every",
                                                                    "keep_checkpoints")} == \
        {k: v for k, v in recipe["pretrain"].items() if k not in ("max_steps", "warmup_steps", "checkpoint_every",
                                                                  "keep_checkpoints")}
