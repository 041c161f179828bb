"""Checkpoint round trip and every refusal case of tflib.models.checkpoint."""
import json

import pytest
import torch

from tflib.models import CheckpointError, Transcriptformer, TranscriptformerConfig, load_pretrained

torch.set_num_threads(1)


class FakeTokenizer:
    """Test fixture only: writes the two files a tflib tokenizer writes (format checks)."""

    def __init__(self, n_tokens=50, preset="V2"):
        self.n, self.preset = n_tokens, preset

    def save_pretrained(self, directory):
        tokens = ["<pad>", "<mask>", "<cls>", "<eos>"] + [f"G{i}" for i in range(self.n - 4)]
        with open(f"{directory}/vocab.json", "w") as fh:
            json.dump({t: i for i, t in enumerate(tokens)}, fh)
        with open(f"{directory}/tokenizer_config.json", "w") as fh:
            json.dump({"kind": "rank_value", "preset": self.preset, "vocab_size": self.n}, fh)


def model(vocab=50):
    torch.manual_seed(0)
    cfg = TranscriptformerConfig(vocab_size=vocab, max_len=16, n_layer=2, n_head=2, n_embd=32, n_inner=64)
    return Transcriptformer(cfg)


def test_round_trip_without_tokenizer(tmp_path):
    m = model()
    m.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["tflib_format"] == "transcriptformer" and meta["tokenizer"] is None
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))  # nothing pickled
    back = Transcriptformer.from_pretrained(tmp_path)
    assert back.config == m.config and back.tokenizer is None
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert back.mlm_head.decoder.weight is back.embeddings.word.weight


def test_tokenizer_recorded_and_checked(tmp_path):
    m = model()
    m.save_pretrained(tmp_path, tokenizer=FakeTokenizer(50, "V2"))
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["tokenizer"] == {"kind": "rank_value", "preset": "V2", "vocab_size": 50}
    back, _ = load_pretrained(tmp_path, load_tokenizer=False)
    assert back.config == m.config


def test_refuses_to_save_mismatched_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match="vocab_size=50.*49 tokens"):
        model().save_pretrained(tmp_path, tokenizer=FakeTokenizer(49))
    assert not (tmp_path / "config.json").exists()                   # nothing left behind


def test_refuses_vocab_mismatch_tokenizer_vs_model(tmp_path):
    model().save_pretrained(tmp_path, tokenizer=FakeTokenizer(50))
    FakeTokenizer(60).save_pretrained(tmp_path)                       # someone swaps the tokenizer files
    with pytest.raises(CheckpointError, match="vocab_size=50 but the tokenizer has 60"):
        load_pretrained(tmp_path, load_tokenizer=False)


def test_refuses_vocab_mismatch_weights_vs_config(tmp_path):
    model().save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    model(vocab=60).save_pretrained(tmp_path / "other")
    other = json.loads((tmp_path / "other" / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    meta["weights"] = other["weights"]                                # checksum fine, shapes not
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="60 token embeddings but config.json says vocab_size=50"):
        Transcriptformer.from_pretrained(tmp_path)


def test_refuses_preset_mismatch(tmp_path):
    model().save_pretrained(tmp_path, tokenizer=FakeTokenizer(50, "V1"))
    FakeTokenizer(50, "V2").save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="preset 'V1'.*'V2'"):
        load_pretrained(tmp_path, load_tokenizer=False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_refuses_corrupt_weights(tmp_path, damage):
    model().save_pretrained(tmp_path)
    w = tmp_path / "model.safetensors"
    data = bytearray(w.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0xFF
    else:
        data = bytearray(b"not a safetensors file")
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Transcriptformer.from_pretrained(tmp_path)


def test_refuses_corrupt_file_even_without_checksum(tmp_path):
    model().save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["weights"] = {"file": "model.safetensors"}                   # an old/edited config without checksum
    (tmp_path / "config.json").write_text(json.dumps(meta))
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Transcriptformer.from_pretrained(tmp_path)


def test_refuses_truncated_hf_folder(tmp_path):
    hf = model().to_hf_bert()
    hf.save_pretrained(tmp_path)
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Transcriptformer.from_pretrained(tmp_path)


def test_never_overwrites_a_foreign_folder(tmp_path):
    model().to_hf_bert().save_pretrained(tmp_path)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(FileExistsError, match="different model"):
        model().save_pretrained(tmp_path)
    assert (tmp_path / "config.json").read_text() == before
    model().save_pretrained(tmp_path / "ours")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model().save_pretrained(tmp_path / "ours", overwrite=False)


def test_save_pretrained_keeps_a_checkpoint_by_default_and_names_the_flag(tmp_path):
    from tflib.models.checkpoint import save_pretrained

    first, second = model(), model(vocab=60)
    save_pretrained(first, tmp_path / "ckpt")                         # the function, not only the method
    weights = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pretrained(second, tmp_path / "ckpt")                    # default: keep it
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == weights
    save_pretrained(second, tmp_path / "ckpt", overwrite=True)
    assert Transcriptformer.from_pretrained(tmp_path / "ckpt").config.vocab_size == 60


@pytest.mark.parametrize("user_file", ["vocab.json", "tokenizer_config.json", "gene_medians.json",
                                       "model.safetensors"])
def test_never_writes_over_a_users_file_of_the_same_name(tmp_path, user_file):
    (tmp_path / user_file).write_text("the user's own file\n")
    (tmp_path / "notes.txt").write_text("keep me\n")
    for overwrite in (False, True):                                  # not even when asked: it is not ours
        with pytest.raises(FileExistsError, match=f"{user_file}.*new or empty folder"):
            model().save_pretrained(tmp_path, overwrite=overwrite)
    assert (tmp_path / user_file).read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([user_file, "notes.txt"])


def test_a_checkpoint_beside_unrelated_user_files_leaves_them_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me\n")
    model().save_pretrained(tmp_path)
    model().save_pretrained(tmp_path, overwrite=True)                 # no tokenizer: stale ones removed,
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"       # the user's file stays


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "ckpt").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        model().save_pretrained(tmp_path / "ckpt", overwrite=True)
    assert (tmp_path / "ckpt").read_text() == "x"


def test_missing_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Transcriptformer.from_pretrained(tmp_path / "nope")


def test_real_tokenizer_round_trip_and_preset_mismatch(tmp_path):
    from tflib.tokenize import GeneVocab, RankValueTokenizer

    genes = [f"G{i}" for i in range(46)]
    vocab = GeneVocab.from_genes(genes)                               # 4 special + 46 genes = 50
    medians = {g: 1.0 for g in genes}
    v2, v1 = RankValueTokenizer(vocab, medians, preset="V2"), RankValueTokenizer(vocab, medians, preset="V1")
    m = model()
    m.save_pretrained(tmp_path / "a", tokenizer=v2)
    back = Transcriptformer.from_pretrained(tmp_path / "a")
    assert back.tokenizer is not None and back.tokenizer.config() == v2.config()
    again, tok = load_pretrained(tmp_path / "a")
    assert tok.preset == "V2"
    m.save_pretrained(tmp_path / "b", tokenizer=v1)
    v2.save_pretrained(tmp_path / "b", overwrite=True)                # V2 files beside a V1-trained model
    with pytest.raises(CheckpointError, match="preset 'V1'.*'V2'"):
        Transcriptformer.from_pretrained(tmp_path / "b")
    with pytest.raises(CheckpointError, match="vocab_size=50 but the tokenizer has 51"):
        model().save_pretrained(tmp_path / "c", tokenizer=RankValueTokenizer(GeneVocab.from_genes(genes + ["X"]),
                                                                            dict(medians, X=1.0)))
