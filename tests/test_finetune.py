"""Fine-tuning (tflib.train.finetune) and annotation (tflib.tl.annotate): chapter 07's engine.

The key test is a learnable toy task that a frozen encoder cannot solve: every cell holds the
same bag of genes and only their *order* (which of two genes ranks higher) decides the class.
A head on a frozen, randomly initialised encoder stays near chance; unfreezing the encoder
must do clearly better.
"""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from tflib.models import Transcriptformer, TranscriptformerConfig
from tflib.train import FinetuneConfig, finetune


def _order_task(n, seed):
    rng = np.random.default_rng(seed)
    cells, labels = [], []
    for _ in range(n):
        others = rng.choice(np.arange(6, 30), size=6, replace=False)
        seq = rng.permutation(np.r_[others, 4, 5])
        cells.append(np.r_[2, seq, 3].astype(np.int32))                # <cls> genes <eos>
        labels.append("4 first" if list(seq).index(4) < list(seq).index(5) else "5 first")
    return cells, np.array(labels)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = TranscriptformerConfig(vocab_size=30, max_len=16, n_layer=2, n_head=2, n_embd=32, n_inner=64,
                                 dropout=0.0, attn_dropout=0.0)
    return Transcriptformer(cfg)


@pytest.fixture(scope="module")
def order_task():
    return _order_task(600, 0), _order_task(300, 1)


def test_finetuning_beats_a_frozen_head_on_a_learnable_task(tiny_model, order_task):
    (cells, y), (test_cells, test_y) = order_task
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    common = dict(epochs=30, patience=5, lr=3e-3, encoder_lr=3e-3, seed=0)
    frozen = finetune(tiny_model, cells, y, mode="frozen", **common)
    full = finetune(tiny_model, cells, y, mode="full", **common)
    top = finetune(tiny_model, cells, y, mode="top", n_unfrozen=1, **common)
    acc = {m: float(np.mean(f.predict(test_cells) == test_y)) for m, f in
           [("frozen", frozen), ("full", full), ("top", top)]}
    assert acc["frozen"] < 0.7, acc                                     # order is invisible to a frozen random encoder
    assert acc["full"] > 0.9 and acc["top"] > 0.9, acc
    assert acc["full"] - acc["frozen"] > 0.25, acc
    # the pretrained model passed in is never modified
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_finetune_is_reproducible_and_records_history(tiny_model, order_task):
    (cells, y), (test_cells, _) = order_task
    a = finetune(tiny_model, cells, y, mode="top", epochs=3, seed=7)
    b = finetune(tiny_model, cells, y, mode="top", epochs=3, seed=7)
    np.testing.assert_array_equal(a.predict_proba(test_cells), b.predict_proba(test_cells))
    assert list(a.history.columns) == ["train_loss", "val_loss", "val_accuracy"]
    assert 1 <= a.best_epoch <= 3 and len(a.history) <= 3
    p = a.predict_proba(test_cells)
    assert p.shape == (300, 2) and np.allclose(p.sum(1), 1.0)
    assert a.embed(test_cells).shape == (300, 32)


def test_temperature_scaling_changes_confidence_not_predictions(tiny_model, order_task):
    (cells, y), (test_cells, _) = order_task
    cal = finetune(tiny_model, cells, y, mode="top", epochs=4, seed=0, calibrate=True)
    raw = finetune(tiny_model, cells, y, mode="top", epochs=4, seed=0, calibrate=False)
    assert raw.temperature == 1.0 and cal.temperature != 1.0
    np.testing.assert_array_equal(cal.predict(test_cells), raw.predict(test_cells))
    assert not np.allclose(cal.predict_proba(test_cells), raw.predict_proba(test_cells))


def test_soft_targets_learn_probabilities(tiny_model, order_task):
    (cells, y), (test_cells, test_y) = order_task
    soft = np.where((y == "4 first")[:, None], [[0.9, 0.1]], [[0.2, 0.8]])  # (n, 2) rows sum to 1
    ft = finetune(tiny_model, cells, soft, classes=["A", "B"], mode="full", epochs=30, patience=5,
                  lr=3e-3, encoder_lr=3e-3, calibrate=False, class_weight=None)
    p = ft.predict_proba(test_cells)
    expected = np.where((test_y == "4 first")[:, None], [[0.9, 0.1]], [[0.2, 0.8]])
    assert np.mean(np.abs(p - expected)) < 0.1
    assert ft.classes == ["A", "B"]


def test_class_weighting_raises_recall_of_a_rare_class(tiny_model):
    rng = np.random.default_rng(3)
    cells, y = [], []
    for i in range(400):
        rare = i < 16                                                    # 4 % of cells
        genes = rng.choice(np.arange(8, 30), size=6, replace=False)
        marker = 6 if rare else 7
        cells.append(np.r_[2, rng.permutation(np.r_[genes, marker]), 3].astype(np.int32))
        y.append("rare" if rare else "common")
    y = np.array(y)
    test = [np.r_[2, rng.permutation(np.r_[rng.choice(np.arange(8, 30), 6, replace=False), 6]), 3]
            for _ in range(50)]
    kw = dict(mode="frozen", pooling="mean", epochs=40, patience=40, lr=3e-3, seed=0, calibrate=False)
    weighted = finetune(tiny_model, cells, y, class_weight="balanced", **kw)
    plain = finetune(tiny_model, cells, y, class_weight=None, **kw)
    recall = {n: float(np.mean(f.predict(test) == "rare")) for n, f in [("weighted", weighted), ("plain", plain)]}
    assert recall["weighted"] > recall["plain"] + 0.2, recall


def test_bad_finetune_input(tiny_model, order_task):
    (cells, y), _ = order_task
    with pytest.raises(ValueError, match="fewer than 2 training cells"):
        finetune(tiny_model, cells, np.append(y[:-1], "singleton"), epochs=1)
    with pytest.raises(ValueError, match="line up"):
        finetune(tiny_model, cells[:10], y, epochs=1)
    with pytest.raises(ValueError, match="rows that sum to 1"):
        finetune(tiny_model, cells, np.ones((len(cells), 2)), epochs=1)
    with pytest.raises(ValueError, match="no tokens"):
        finetune(tiny_model, [np.array([], np.int32)] + cells[1:], y, epochs=1)
    with pytest.raises(ValueError, match="mode="):
        FinetuneConfig(mode="half")
    with pytest.raises(ValueError, match="n_unfrozen=3"):
        finetune(tiny_model, cells, y, mode="top", n_unfrozen=3, epochs=1)


# ---- AnnData level: tl.finetune_annotator / tl.annotate and the metrics ---------------------

def test_annotate_writes_documented_keys_and_checks_the_split(tiny_model, order_task):
    import tflib.tl as tl

    (cells, y), _ = order_task
    n = 120
    adata = ad.AnnData(np.zeros((n, 1), np.float32),
                       obs=pd.DataFrame({"cell_type": y[:n], "donor": np.repeat(["a", "b", "c"], 40)},
                                        index=[f"c{i}" for i in range(n)]))
    split = tl.make_split(adata, by="donor", test="c")
    train_tokens = [cells[i] for i in np.flatnonzero(adata.obs_names.isin(split.train))]
    ft = tl.finetune_annotator(adata, "cell_type", split, tiny_model, None, tokens=train_tokens,
                               mode="top", epochs=2)
    test = adata[split.test].copy()
    test_tokens = [cells[i] for i in range(80, 120)]
    fresh = test.copy()
    out = tl.annotate(fresh, ft, tokens=test_tokens, key_added="tf", copy=True)    # copy: input untouched
    assert "tf" not in fresh.obs and "tf_proba" not in fresh.obsm and "tf" in out.obs
    assert tl.annotate(test, ft, tokens=test_tokens, key_added="tf") is None      # in place
    pred = test.obs["tf"]
    assert pred.index.equals(test.obs_names) and pred.equals(out.obs["tf"])
    assert set(test.obs["tf"].cat.categories) == {"4 first", "5 first"}
    assert test.obsm["tf_proba"].shape == (40, 2) and np.allclose(test.obsm["tf_proba"].sum(1), 1)
    assert np.allclose(test.obs["tf_confidence"], test.obsm["tf_proba"].max(1))
    assert test.uns["tf"]["classes"] == ft.classes and test.uns["tf"]["mode"] == "top"
    leaky = tl.Split(split.train, split.test.append(split.train[:3]), by="donor")
    with pytest.raises(tl.SplitLeakError):
        tl.finetune_annotator(adata, "cell_type", leaky, tiny_model, None, tokens=train_tokens)


def test_confusion_and_calibration_by_hand():
    import tflib.tl as tl

    y_true = ["a", "a", "b", "b"]
    y_pred = ["a", "b", "b", "b"]
    cm = tl.confusion_frame(y_true, y_pred)
    assert cm.loc["a", "a"] == 0.5 and cm.loc["a", "b"] == 0.5 and cm.loc["b", "b"] == 1.0
    assert tl.confusion_frame(y_true, y_pred, normalize=None).to_numpy().tolist() == [[1, 1], [0, 2]]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    # bins (10): cell 0 conf .9 correct; cell 1 conf .6 wrong; cell 2 conf .7 right; cell 3 conf .8 right
    # ECE = 1/4 * (|1 - .9| + |0 - .6| + |1 - .7| + |1 - .8|) = 0.3
    assert tl.expected_calibration_error(y_true, proba, ["a", "b"]) == pytest.approx(0.3)
    rep = tl.calibration_report(y_true, proba, ["a", "b"])
    assert rep["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.8])))
    assert rep["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.18, 0.08]))
    with pytest.raises(ValueError, match="expected"):
        tl.expected_calibration_error(y_true, proba[:3], ["a", "b"])


def test_bag_of_tokens_by_hand():
    import tflib.tl as tl

    X = tl.bag_of_tokens([np.array([2, 5, 7, 3]), np.array([2, 7, 3])], vocab_size=8)
    assert X.shape == (2, 8)
    assert X.toarray()[0].tolist() == [0, 0, 1, 1, 0, 1, 0, 1]
    R = tl.bag_of_tokens([np.array([2, 5, 7, 3])], vocab_size=8, weighting="rank").toarray()[0]
    assert R[2] == pytest.approx(1.0) and R[5] == pytest.approx(1 / np.log2(3)) and R[7] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="token ids must lie"):
        tl.bag_of_tokens([np.array([9])], vocab_size=8)

