"""Swin and RemoteSAM's encoder: window attention, shifted-window masks and merging by hand;
the RemoteSAM checkpoint layout (pickle with an argparse.Namespace) and the text-free mode."""

from __future__ import annotations

import argparse
import itertools
import math

import pytest
import torch
from eoembed.errors import WeightsError
from eoembed.nn.remotesam import (
    RemoteSAMImageEncoder,
    load_remotesam,
    remotesam_config,
    remotesam_state_dict,
)
from eoembed.nn.swin import (
    MASK_VALUE,
    PatchMerging,
    SwinBlock,
    WindowAttention,
    relative_position_index,
    shifted_window_mask,
    window_partition,
)
from eoembed.weights import load_checkpoint

TINY = {"embed_dim": 16, "depths": (2, 2, 2, 2), "heads": (1, 2, 2, 4), "window": 3}


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill every float entry of the state dict (parameters, BatchNorm statistics) at random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)


def test_relative_position_index_counts_offsets_like_a_double_loop() -> None:
    w = 3
    idx = relative_position_index(w)
    cells = [(r, c) for r in range(w) for c in range(w)]
    for i, (ri, ci) in enumerate(cells):
        for j, (rj, cj) in enumerate(cells):
            assert idx[i, j] == (ri - rj + w - 1) * (2 * w - 1) + (ci - cj + w - 1)


def test_window_attention_matches_a_hand_written_computation() -> None:
    torch.manual_seed(1)
    dim, heads, w = 4, 2, 2
    attn = WindowAttention(dim, w, heads)
    _randomise(attn)
    x = torch.randn(3, w * w, dim)
    mask = torch.tensor([[0.0, MASK_VALUE, 0.0, 0.0]] * 4)[None]  # token 1 hidden from all
    got = attn(x, mask)  # 3 images of one window each
    # by hand: per window, per head, explicit bias lookup by (dy, dx) and a softmax
    wq, bq = attn.qkv.weight, attn.qkv.bias
    cells = [(r, c) for r in range(w) for c in range(w)]
    hd = dim // heads
    want = torch.zeros_like(x)
    for b in range(3):
        q_all = x[b] @ wq.T + bq
        q, k, v = q_all[:, :dim], q_all[:, dim : 2 * dim], q_all[:, 2 * dim :]
        heads_out = []
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            logits = torch.zeros(w * w, w * w)
            for i, (ri, ci) in enumerate(cells):
                for j, (rj, cj) in enumerate(cells):
                    table_row = (ri - rj + w - 1) * (2 * w - 1) + (ci - cj + w - 1)
                    logits[i, j] = (q[i, sl] @ k[j, sl]) / math.sqrt(hd)
                    logits[i, j] += attn.relative_position_bias_table[table_row, h] + mask[0, i, j]
            heads_out.append(torch.softmax(logits, dim=-1) @ v[:, sl])
        want[b] = torch.cat(heads_out, dim=-1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("hp", "window", "shift"), [(4, 2, 1), (6, 3, 1), (6, 3, 2), (3, 3, 1)])
def test_shifted_window_mask_allows_exactly_the_pairs_not_split_by_the_roll(hp: int, window: int, shift: int) -> None:
    mask = shifted_window_mask(hp, hp, window, shift)
    # original (unrolled) position of each rolled token, windows in row-major order
    rolled = torch.stack(torch.meshgrid(torch.arange(hp), torch.arange(hp), indexing="ij"), -1)
    orig = (rolled + shift) % hp
    rolled_w = window_partition(rolled[None].float(), window)
    orig_w = window_partition(orig[None].float(), window)
    for wi in range(mask.shape[0]):
        for i in range(window * window):
            for j in range(window * window):
                same_side = torch.equal(orig_w[wi, i] - orig_w[wi, j], rolled_w[wi, i] - rolled_w[wi, j])
                assert mask[wi, i, j] == (0.0 if same_side else MASK_VALUE), (wi, i, j)


def test_shifted_block_keeps_wrapped_tokens_apart() -> None:
    torch.manual_seed(2)
    block = SwinBlock(dim=8, heads=2, window=2, shift=1)
    _randomise(block, seed=3)
    stage_mask = shifted_window_mask(4, 4, 2, 1)
    x = torch.randn(1, 4, 4, 8)

    def changed_by(r: int, c: int) -> set[tuple[int, int]]:
        y = x.clone()
        y[0, r, c] += torch.linspace(-1.0, 1.0, 8)  # not a constant: LayerNorm would remove it
        diff = (block(y, stage_mask) - block(x, stage_mask)).abs().amax(-1)[0]
        return {(int(a), int(b)) for a, b in (diff > 1e-6).nonzero()}

    # (0, 0) is rolled into the bottom-right window next to (3, 3), (3, 0), (0, 3): masked off
    assert changed_by(0, 0) == {(0, 0)}
    # (1, 1) lands in the top-left rolled window together with (1, 2), (2, 1), (2, 2)
    assert changed_by(1, 1) == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_unshifted_block_with_padding_mixes_only_inside_its_window() -> None:
    block = SwinBlock(dim=8, heads=2, window=2, shift=0)
    _randomise(block, seed=4)
    x = torch.randn(1, 3, 3, 8)  # padded to 4×4 inside the block
    y = x.clone()
    y[0, 2, 2] += torch.linspace(-1.0, 1.0, 8)
    diff = (block(y) - block(x)).abs().amax(-1)[0]
    assert block(x).shape == (1, 3, 3, 8)
    assert {(int(a), int(b)) for a, b in (diff > 1e-6).nonzero()} == {(2, 2)}


def test_patch_merging_concatenates_neighbours_in_reference_order_and_pads_odd_sizes() -> None:
    merge = PatchMerging(2)
    _randomise(merge, seed=5)
    x = torch.randn(1, 3, 3, 2)
    got = merge(x)
    assert got.shape == (1, 2, 2, 4)
    padded = torch.zeros(1, 4, 4, 2)
    padded[:, :3, :3] = x
    for i in range(2):
        for j in range(2):
            r, c = 2 * i, 2 * j
            vec = torch.cat([padded[0, r, c], padded[0, r + 1, c], padded[0, r, c + 1], padded[0, r + 1, c + 1]])
            vec = torch.nn.functional.layer_norm(vec, (8,), merge.norm.weight, merge.norm.bias)
            torch.testing.assert_close(got[0, i, j], (merge.reduction.weight @ vec).detach())


def _upstream_checkpoint(model: RemoteSAMImageEncoder) -> dict:
    """A checkpoint shaped like RemoteSAM's train.py output: model/optimizer/epoch/args."""
    sd = {f"backbone.{k}": v.clone() for k, v in model.backbone.state_dict().items()}
    sd["backbone.cim.down_channel.weight"] = torch.zeros(2, 2, 1, 1)
    sd["classifier.conv1_4.weight"] = torch.zeros(2, 2, 3, 3)
    sd["text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(4, 768)
    args = argparse.Namespace(model="lavt_one", swin_type="base", window12=True, img_size=896, mha="")
    return {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 39, "args": args,
            "lr_scheduler": {"last_epoch": 1}}


def test_remotesam_checkpoint_with_namespace_loads_through_the_allow_list(tmp_path) -> None:
    src = RemoteSAMImageEncoder(**TINY).eval()
    _randomise(src, seed=6)
    path = tmp_path / "RemoteSAMv1.pth"
    torch.save(_upstream_checkpoint(src), path)
    with pytest.raises(WeightsError, match="argparse.Namespace"):
        load_checkpoint(path)
    ckpt = load_checkpoint(path, allow=["argparse.Namespace"])
    assert ckpt["args"].swin_type == "base"
    dst = RemoteSAMImageEncoder(**TINY).eval()
    ignored = load_remotesam(dst, ckpt)
    assert ignored == ["backbone.cim.", "classifier.", "text_encoder."]
    x = torch.rand(2, 3, 70, 50)
    a, b = src(x), dst(x)
    torch.testing.assert_close(a["grid"], b["grid"])
    assert b["grid"].shape == (2, 128, 3, 2)  # ⌈70/32⌉ × ⌈50/32⌉, 16·2³ channels
    torch.testing.assert_close(b["pooled"], b["grid"].mean(dim=(2, 3)))


def test_remotesam_key_layout_names_the_lavt_modules() -> None:
    keys = set(RemoteSAMImageEncoder(**TINY).state_dict())
    for k in ("backbone.patch_embed.proj.weight", "backbone.patch_embed.norm.weight",
              "backbone.layers.0.blocks.1.attn.qkv.weight", "backbone.layers.0.blocks.0.attn.relative_position_index",
              "backbone.layers.2.blocks.0.attn.relative_position_bias_table", "backbone.layers.0.downsample.reduction.weight",
              "backbone.layers.1.fusion.image_lang_att.f_query.0.weight", "backbone.layers.1.fusion.vis_project.0.bias",
              "backbone.layers.3.res_gate.2.weight", "backbone.layers.3.visual_gate.0.weight",
              "backbone.layers.0.visual_residual.repblock.brb_3x3.conv2.weight",
              "backbone.layers.0.visual_residual.repblock.brb_identity_2.running_var", "backbone.norm3.weight"):
        assert k in keys, k
    assert not any(k.startswith("backbone.layers.3.downsample") for k in keys)


def test_remotesam_checkpoint_missing_backbone_keys_is_a_weights_error() -> None:
    src = RemoteSAMImageEncoder(**TINY)
    ckpt = _upstream_checkpoint(src)
    del ckpt["model"]["backbone.norm2.weight"]
    with pytest.raises(WeightsError, match="norm2.weight"):
        load_remotesam(RemoteSAMImageEncoder(**TINY), ckpt)
    with pytest.raises(WeightsError, match="backbone"):
        remotesam_state_dict({"model": {"classifier.w": torch.zeros(1)}})


def test_text_free_mode_bypasses_the_fusion_but_keeps_the_visual_residual() -> None:
    model = RemoteSAMImageEncoder(**TINY).eval()
    _randomise(model, seed=7)
    x = torch.rand(1, 3, 64, 64)
    base = model(x)["grid"]
    with torch.no_grad():
        for layer in model.backbone.layers:
            for p in itertools.chain(layer.fusion.parameters(), layer.res_gate.parameters()):
                p.add_(1.0)
    torch.testing.assert_close(model(x)["grid"], base)  # language modules play no part
    with torch.no_grad():
        model.backbone.layers[3].visual_gate[0].weight.add_(1.0)
    assert not torch.allclose(model(x)["grid"], base)  # the text-free visual gate does


def test_fused_path_depends_on_the_words() -> None:
    model = RemoteSAMImageEncoder(**TINY).eval()
    _randomise(model, seed=8)
    x = torch.rand(1, 3, 64, 64)
    words = torch.randn(2, 768, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    a, b = model.backbone(x.repeat(2, 1, 1, 1), words, mask)[-1]
    assert not torch.allclose(a, b)
    # padded words are invisible: changing them changes nothing
    words2 = words.clone()
    words2[:, :, 3:] += 5.0
    torch.testing.assert_close(model.backbone(x.repeat(2, 1, 1, 1), words2, mask)[-1][0], a)


def test_configuration_is_read_back_from_the_checkpoint_shapes() -> None:
    ckpt = _upstream_checkpoint(RemoteSAMImageEncoder(**TINY, fusion_heads=(1, 2, 2, 1)))
    cfg = remotesam_config(remotesam_state_dict(ckpt)[0], argparse.Namespace(mha="1-2-2-1"))
    assert cfg == {**TINY, "fusion_heads": (1, 2, 2, 1)}
    assert remotesam_config(remotesam_state_dict(ckpt)[0])["fusion_heads"] == (1, 1, 1, 1)
