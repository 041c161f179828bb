"""Unit tests for tflib.models: the encoder, its two attention paths, heads and HF parity."""
import pytest
import torch

from tflib.models import ClassificationHead, Transcriptformer, TranscriptformerConfig

torch.set_num_threads(1)


def tiny(**kw) -> TranscriptformerConfig:
    base = dict(vocab_size=50, max_len=24, n_layer=2, n_head=4, n_embd=32, n_inner=64, dropout=0.0, attn_dropout=0.0)
    base.update(kw)
    return TranscriptformerConfig(**base)


def batch(B=3, L=16, V=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, V, (B, L), generator=g)
    lengths = torch.tensor([L, L - 5, L - 9])[:B]
    mask = torch.arange(L)[None, :] < lengths[:, None]               # (B, L) right padding
    ids = ids.masked_fill(~mask, 0)
    ids[:, 0] = 2                                                     # <cls>
    return ids, mask


def test_config_validates():
    with pytest.raises(ValueError, match="divisible"):
        TranscriptformerConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation"):
        TranscriptformerConfig(activation="swish2")
    with pytest.raises(ValueError, match="unknown config keys"):
        TranscriptformerConfig.from_dict({"n_layers": 3})
    c = tiny()
    assert TranscriptformerConfig.from_dict(c.to_dict()) == c


def test_shapes_and_tied_decoder():
    torch.manual_seed(0)
    m = Transcriptformer(tiny()).eval()
    ids, mask = batch()
    out = m(ids, mask, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (3, 16, 50)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (3, 16, 32)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 4, 16, 16)
    w = out.attentions[0]
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 16))
    assert float(w[1, :, :, 11:].detach().abs().max()) == 0.0                 # padding keys get no weight
    assert m.mlm_head.decoder.weight is m.embeddings.word.weight
    with pytest.raises(ValueError, match="max_len"):
        m(torch.ones(1, 30, dtype=torch.long))


def test_fused_and_step_by_step_attention_agree():
    torch.manual_seed(0)
    m = Transcriptformer(tiny()).eval()
    ids, mask = batch()
    fused = m(ids, mask).logits
    for blk in m.encoder.blocks:
        blk.attn.fused = False
    readable = m(ids, mask).logits
    keep = mask[..., None].expand_as(fused)
    torch.testing.assert_close(fused[keep], readable[keep], atol=1e-5, rtol=1e-5)


def test_masked_logits_unpad_and_encode_fast_paths():
    torch.manual_seed(0)
    m = Transcriptformer(tiny()).eval()
    ids, mask = batch()
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 5], labels[2, 1] = 7, 8, 9
    full = m(ids, mask, labels, logits="all")
    fast = m(ids, mask, labels)                                       # masked-only logits by default
    assert fast.logits.shape == (3, 50)
    torch.testing.assert_close(fast.logits, full.logits[labels != -100], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.loss, full.loss, atol=1e-5, rtol=1e-5)
    unpadded = m(ids, mask, labels, unpad=True, output_hidden_states=True)
    torch.testing.assert_close(unpadded.loss, full.loss, atol=1e-5, rtol=1e-5)
    for layer in (1, 2, 0):
        first = m.encode(ids, mask, layer=layer, unpad=True, first_only=True)
        ref_l = m(ids, mask, output_hidden_states=True).hidden_states[layer]
        torch.testing.assert_close(first[:, 0], ref_l[:, 0], atol=1e-5, rtol=1e-5)
    h = m.encode(ids, mask, layer=1, unpad=True)
    ref = m(ids, mask, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(h[mask], ref[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unpadded.hidden_states[2][mask], full.last_hidden_state.detach()[mask],
                               atol=1e-5, rtol=1e-5)
    # gradients flow through the unpadded path too
    unpadded.loss.backward()
    assert m.embeddings.word.weight.grad is not None


def test_attention_mask_defaults_to_non_pad_tokens():
    torch.manual_seed(0)
    m = Transcriptformer(tiny()).eval()
    ids, mask = batch()
    torch.testing.assert_close(m(ids).logits, m(ids, mask).logits)


def test_classification_head():
    h = ClassificationHead(tiny(), n_classes=5)
    assert h(torch.randn(4, 32)).shape == (4, 5)


# ---- HF parity -------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_parity_hf_to_tflib(act):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=24, hidden_act=act,
                     attn_implementation="eager")
    hf = BertForMaskedLM(cfg).eval()
    with torch.no_grad():                                             # make biases and LN non-trivial
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = Transcriptformer.from_hf_bert(hf).eval()
    ids, mask = batch()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
        for fused in (True, False):
            for blk in ours.encoder.blocks:
                blk.attn.fused = fused
            b = ours(ids, mask, output_hidden_states=True)
            for ha, hb in zip(a.hidden_states, b.hidden_states):
                torch.testing.assert_close(hb[mask], ha[mask], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(b.logits[mask], a.logits[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_parity_tflib_to_hf(act):
    torch.manual_seed(2)
    ours = Transcriptformer(tiny(activation=act)).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf = ours.to_hf_bert(attn_implementation="eager").eval()
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()
    ids, mask = batch()
    with torch.no_grad():
        a = ours(ids, mask, output_hidden_states=True)
        b = hf(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(hb[mask], ha[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.logits[mask], a.logits[mask], atol=1e-5, rtol=1e-5)
    # and back again: the round trip is exact
    again = Transcriptformer.from_hf_bert(hf)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_hf_folder_loads(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=24, hidden_act="relu",
                     attn_implementation="eager")
    hf = BertForMaskedLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    ours = Transcriptformer.from_pretrained(tmp_path / "hf")
    assert ours.tokenizer is None and not ours.training
    ids, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, mask).logits[mask], hf(input_ids=ids, attention_mask=mask.long()).logits[mask],
                                   atol=1e-5, rtol=1e-5)


def test_from_hf_bert_refuses_other_models():
    with pytest.raises(TypeError, match="BertForMaskedLM"):
        Transcriptformer.from_hf_bert(torch.nn.Linear(2, 2))


def test_from_hf_bert_refuses_untied_decoder():
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=24, tie_word_embeddings=False)
    hf = BertForMaskedLM(cfg)
    with torch.no_grad():
        hf.cls.predictions.decoder.weight.add_(1.0)
    with pytest.raises(ValueError, match="not tied"):
        Transcriptformer.from_hf_bert(hf)


def test_save_pretrained_keeps_an_existing_checkpoint_unless_asked(tmp_path):
    first, second = Transcriptformer(tiny()), Transcriptformer(tiny())
    first.save_pretrained(tmp_path / "ckpt")
    weights = (tmp_path / "ckpt" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        second.save_pretrained(tmp_path / "ckpt")                     # the default is overwrite=False
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == weights
    second.save_pretrained(tmp_path / "ckpt", overwrite=True)
    loaded = Transcriptformer.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.embeddings.word.weight, second.embeddings.word.weight)


def test_a_loaded_model_saved_again_keeps_its_tokenizer(tmp_path):
    """from_pretrained -> save_pretrained -> from_pretrained must not lose model.tokenizer."""
    from tflib.models import course_checkpoint

    model, tok = course_checkpoint()
    model.save_pretrained(tmp_path / "a", tokenizer=tok)
    loaded = Transcriptformer.from_pretrained(tmp_path / "a")
    assert loaded.tokenizer is not None
    loaded.save_pretrained(tmp_path / "b")                            # no tokenizer= given
    again = Transcriptformer.from_pretrained(tmp_path / "b")
    assert again.tokenizer is not None and again.tokenizer.config() == tok.config()


def test_bad_token_ids_get_errors_with_the_fix():
    import numpy as np

    model = Transcriptformer(tiny()).eval()
    ids, _ = batch()
    with pytest.raises(TypeError, match=r"torch.as_tensor\(ids, dtype=torch.long\)"):
        model(ids.numpy())
    model(torch.as_tensor(ids.numpy(), dtype=torch.long))             # the fix works
    with pytest.raises(TypeError, match=r"integer token ids.*input_ids.long\(\)"):
        model(ids.float())
    model(ids.float().long())
    with pytest.raises(ValueError, match=r"token ids must lie in 0..49 .* got 0..50"):
        model(torch.where(ids == ids.max(), torch.tensor(50), ids))
    assert np.isfinite(model(ids).logits.detach().numpy()).all()


def test_dedupe_and_one_query_paths_give_the_same_states():
    """encode(dedupe=True) and the key-free <cls> attention match the plain forward pass."""
    torch.manual_seed(0)
    for n_layer in (1, 2):
        m = Transcriptformer(tiny(n_layer=n_layer)).eval()
        ids, mask = batch()
        ids = torch.cat([ids, ids, ids.roll(1, dims=1)])                # repeated (token, position) pairs
        mask = torch.cat([mask, mask, mask.roll(1, dims=1)])
        ids[:, 0] = ids[0, 0]
        mask[:, 0] = True
        ids = torch.where(mask, ids, torch.zeros_like(ids))
        ref = m(ids, mask, output_hidden_states=True).hidden_states
        for layer in range(n_layer + 1):
            for unpad in (False, True):
                got = m.encode(ids, mask, layer=layer, unpad=unpad, dedupe=True)
                torch.testing.assert_close(got[mask], ref[layer][mask], atol=1e-5, rtol=1e-5)
                first = m.encode(ids, mask, layer=layer, unpad=unpad, first_only=True, dedupe=True)
                torch.testing.assert_close(first[:, 0], ref[layer][:, 0], atol=1e-5, rtol=1e-5)
        # the one-query attention returns the same weights as the step-by-step path
        x = m.embeddings(ids)
        attn = m.encoder.blocks[0].attn
        _, w_one = attn(x, mask, first_only=True)
        _, w_all = attn(x, mask, need_weights=True)
        torch.testing.assert_close(w_one[:, :, 0], w_all[:, :, 0], atol=1e-6, rtol=1e-5)
