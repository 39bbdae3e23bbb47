"""RemoteSAM's text path: WordPiece tokenisation and a BERT layer by hand, the Hugging Face key
layout, and the cross-scale module's layout and size contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from eoembed.errors import WeightsError
from eoembed.nn.bert import BertConfig, BertModel, bert_config
from eoembed.nn.bert_tokenizer import WordPieceTokenizer, basic_tokens
from eoembed.nn.remotesam import CrossScaleInteraction, RemoteSAMImageEncoder

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "red", "roof", "##s", "##top", "caf", "##e", ",", ".", "中"]


def test_basic_tokens_lower_case_strip_accents_and_split_punctuation() -> None:
    assert basic_tokens("Café,  RED\troof-tops!") == ["cafe", ",", "red", "roof", "-", "tops", "!"]
    assert basic_tokens("x中y\u200b z") == ["x", "中", "y", "z"]  # CJK spaced, zero-width dropped


def test_wordpieces_are_greedy_longest_first_with_unknowns() -> None:
    tok = WordPieceTokenizer(VOCAB)
    assert tok.tokenize("Rooftops, café.") == ["roof", "##top", "##s", ",", "caf", "##e", "."]
    assert tok.tokenize("roofz") == ["[UNK]"]  # no piece covers "z": the whole word is unknown
    assert tok.wordpieces("r" * 101) == ["[UNK]"]


def test_sentences_are_framed_truncated_after_framing_and_zero_padded() -> None:
    tok = WordPieceTokenizer(VOCAB)
    ids, mask = tok(["the red roofs", "roofs " * 30], length=6)
    assert ids[0].tolist() == [2, 4, 5, 6, 7, 3] and mask[0].tolist() == [1] * 6
    assert ids[1].tolist() == [2, 6, 7, 6, 7, 6] and mask[1].tolist() == [1] * 6  # [SEP] cut, as RemoteSAM
    ids, mask = tok(["red"], length=5)
    assert ids[0].tolist() == [2, 5, 3, 0, 0] and mask[0].tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(WeightsError, match=r"\[CLS\]"):
        WordPieceTokenizer(["a", "b"])


def test_one_bert_layer_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=10, hidden=8, layers=1, heads=2, intermediate=16, max_positions=6)
    bert = BertModel(cfg).eval()
    with torch.no_grad():
        for v in bert.state_dict().values():
            v.normal_(0, 0.3)
    ids = torch.tensor([[2, 5, 7, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    got = bert(ids, mask)[0]
    sd = bert.state_dict()

    def ln(x, p):
        return F.layer_norm(x, (8,), sd[p + ".weight"], sd[p + ".bias"], eps=1e-12)

    def lin(x, p):
        return x @ sd[p + ".weight"].T + sd[p + ".bias"]

    e = sd["embeddings.word_embeddings.weight"][ids[0]] + sd["embeddings.position_embeddings.weight"][:5] \
        + sd["embeddings.token_type_embeddings.weight"][0]
    x = ln(e, "embeddings.LayerNorm")
    p = "encoder.layer.0."
    q, k, v = (lin(x, p + f"attention.self.{n}") for n in ("query", "key", "value"))
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        logits = q[:, s] @ k[:, s].T / math.sqrt(4) + (1 - mask[0].float()) * -10000.0
        heads.append(torch.softmax(logits, -1) @ v[:, s])
    a = ln(lin(torch.cat(heads, -1), p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
    hid = lin(a, p + "intermediate.dense")
    hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))
    want = ln(lin(hid, p + "output.dense") + a, p + "output.LayerNorm")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bert_keys_follow_hugging_face_and_sizes_are_read_back() -> None:
    cfg = BertConfig(vocab_size=50, hidden=128, layers=3, heads=2, intermediate=256, max_positions=40)
    sd = {f"text_encoder.{k}": v for k, v in BertModel(cfg).state_dict().items()}
    for k in ("embeddings.word_embeddings.weight", "embeddings.LayerNorm.bias",
              "encoder.layer.2.attention.self.query.weight", "encoder.layer.0.attention.output.LayerNorm.weight",
              "encoder.layer.1.intermediate.dense.bias", "encoder.layer.1.output.dense.weight"):
        assert f"text_encoder.{k}" in sd, k
    assert not any("pooler" in k for k in sd)
    assert bert_config(sd, "text_encoder.") == cfg


def test_cross_scale_module_keeps_the_stage_shapes_and_needs_its_trained_size() -> None:
    cim = CrossScaleInteraction((128, 256, 512, 1024), side=3).eval()
    maps = [torch.randn(1, c, 3 * 2 ** (3 - i), 3 * 2 ** (3 - i)) for i, c in enumerate((128, 256, 512, 1024))]
    outs = cim(maps)
    assert [o.shape for o in outs] == [m.shape for m in maps]
    with pytest.raises(ValueError, match="3×3 stage-4 map"):
        cim([torch.randn(1, c, 2 * 2 ** (3 - i), 2 * 2 ** (3 - i)) for i, c in enumerate((128, 256, 512, 1024))])


def test_prompt_mode_adds_the_upstream_cim_and_text_encoder_keys() -> None:
    model = RemoteSAMImageEncoder(embed_dim=128, depths=(1, 1, 1, 1), heads=(4, 8, 16, 32), window=3, mode="prompt",
                                  text=BertConfig(vocab_size=8, layers=1), cim_side=2)
    keys = set(model.state_dict())
    for k in ("backbone.cim.down_channel.weight", "backbone.cim.block.0.csa1.m.attention.qkv.c.weight",
              "backbone.cim.block.0.csa1.m.attention.qkv.bn.running_mean",
              "backbone.cim.block.0.csa2.m.attention.parallel_conv.1.weight",
              "backbone.cim.block.0.csa1.m.DWConv2.1.weight", "backbone.cim.block.0.intra_ff.m.ff4.m.conv2.weight",
              "backbone.cim.block.0.ff.m.conv3.bias", "backbone.cim.bn.running_var", "backbone.cim.fusion.3.global_act.weight",
              "text_encoder.encoder.layer.0.output.LayerNorm.weight"):
        assert k in keys, k
    # (side² + ⌈side/2⌉² + ⌈side/3⌉²) tokens are projected back to side² (1080 → 784 at side 28)
    assert model.state_dict()["backbone.cim.block.0.csa1.m.attention.proj.weight"].shape == (4, 4 + 1 + 1)
    assert CrossScaleInteraction(side=28).state_dict()["block.0.csa1.m.attention.proj.weight"].shape == (784, 1080)
