"""CLIP in plain torch: upstream key layout, config from shapes, numerics against hand-written maths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from eoembed.errors import WeightsError
from eoembed.nn.clip import (
    CLIP,
    CLIP_CONFIGS,
    build_clip,
    clip_state_dict,
    infer_clip_config,
    load_clip,
)
from eoembed.nn.vit import ResidualAttentionBlock

# --------------------------------------------------------------------------------------------
# The upstream (open_clip / OpenAI) state-dict layout, written out by hand from open_clip's
# model.py / transformer.py / modified_resnet.py parameter names and shapes.


def _block_shapes(prefix: str, w: int, layers: int) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"{prefix}resblocks.{i}."
        out.update({
            p + "ln_1.weight": (w,), p + "ln_1.bias": (w,),
            p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
            p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
            p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
            p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
            p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,),
        })
    return out


def vit_shapes(width, layers, patch, grid, in_chans, embed_dim):
    return {
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (grid * grid + 1, width),
        "visual.proj": (width, embed_dim),
        "visual.conv1.weight": (width, in_chans, patch, patch),
        "visual.ln_pre.weight": (width,), "visual.ln_pre.bias": (width,),
        **_block_shapes("visual.transformer.", width, layers),
        "visual.ln_post.weight": (width,), "visual.ln_post.bias": (width,),
    }


def _bn(p, c):
    return {p + "weight": (c,), p + "bias": (c,), p + "running_mean": (c,), p + "running_var": (c,),
            p + "num_batches_tracked": ()}


def rn_shapes(width, layers, grid, in_chans, embed_dim):
    out = {"visual.conv1.weight": (width // 2, in_chans, 3, 3), **_bn("visual.bn1.", width // 2),
           "visual.conv2.weight": (width // 2, width // 2, 3, 3), **_bn("visual.bn2.", width // 2),
           "visual.conv3.weight": (width, width // 2, 3, 3), **_bn("visual.bn3.", width)}
    inplanes = width
    for s, depth in enumerate(layers):
        planes = width * 2**s
        for b in range(depth):
            p = f"visual.layer{s + 1}.{b}."
            out.update({p + "conv1.weight": (planes, inplanes, 1, 1), **_bn(p + "bn1.", planes),
                        p + "conv2.weight": (planes, planes, 3, 3), **_bn(p + "bn2.", planes),
                        p + "conv3.weight": (4 * planes, planes, 1, 1), **_bn(p + "bn3.", 4 * planes)})
            if b == 0:
                out.update({p + "downsample.0.weight": (4 * planes, inplanes, 1, 1),
                            **_bn(p + "downsample.1.", 4 * planes)})
            inplanes = 4 * planes
    c = width * 32
    out.update({"visual.attnpool.positional_embedding": (grid * grid + 1, c),
                "visual.attnpool.k_proj.weight": (c, c), "visual.attnpool.k_proj.bias": (c,),
                "visual.attnpool.q_proj.weight": (c, c), "visual.attnpool.q_proj.bias": (c,),
                "visual.attnpool.v_proj.weight": (c, c), "visual.attnpool.v_proj.bias": (c,),
                "visual.attnpool.c_proj.weight": (embed_dim, c), "visual.attnpool.c_proj.bias": (embed_dim,)})
    return out


def text_shapes(width, layers, context, vocab, embed_dim):
    return {
        "positional_embedding": (context, width), "text_projection": (width, embed_dim),
        "logit_scale": (), "token_embedding.weight": (vocab, width),
        **_block_shapes("transformer.", width, layers),
        "ln_final.weight": (width,), "ln_final.bias": (width,),
    }


def random_state_dict(shapes, seed=0, device="cpu"):
    """Random tensors of the given shapes, scaled so activations stay of order one."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if device == "meta":
            sd[k] = torch.empty(shape, device="meta")
        elif k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k == "logit_scale":
            sd[k] = torch.tensor(math.log(100.0))
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(shape, generator=gen)
        elif k.endswith(".weight") and (".ln_" in "." + k or k.startswith("ln_") or ".bn" in k or "downsample.1" in k):
            sd[k] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif "embedding" in k:
            sd[k] = 0.1 * torch.randn(shape, generator=gen)
        elif k.endswith(("proj", "projection")):  # used as x @ P: fan-in is the first dim
            sd[k] = torch.randn(shape, generator=gen) / math.sqrt(shape[0])
        elif len(shape) >= 2:  # Linear [out, in] and Conv [out, in, k, k]
            sd[k] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        else:
            sd[k] = 0.1 * torch.randn(shape, generator=gen)
    return sd


# --------------------------------------------------------------------------------------------
# Hand-written reference maths (explicit einsum / softmax, no eoembed code).


def _ln(x, sd, name):
    return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], 1e-5)


def _act(x, act):
    return x * torch.sigmoid(1.702 * x) if act == "quick_gelu" else 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def ref_block(x, sd, p, heads, act, causal=False):
    h = _ln(x, sd, p + "ln_1")
    qkv = h @ sd[p + "attn.in_proj_weight"].T + sd[p + "attn.in_proj_bias"]
    q, k, v = qkv.chunk(3, dim=-1)
    b, n, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(b, n, heads, d) for t in (q, k, v))
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    attn = scores.softmax(dim=-1)
    o = torch.einsum("bhnm,bmhd->bnhd", attn, v).reshape(b, n, c)
    x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
    h = _ln(x, sd, p + "ln_2")
    h = _act(h @ sd[p + "mlp.c_fc.weight"].T + sd[p + "mlp.c_fc.bias"], act)
    return x + h @ sd[p + "mlp.c_proj.weight"].T + sd[p + "mlp.c_proj.bias"]


def ref_vit(img, sd, layers, heads, act):
    w = sd["visual.conv1.weight"]
    p = w.shape[-1]
    b, c, hh, ww = img.shape
    gh, gw = hh // p, ww // p
    patches = img.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
    x = patches @ w.reshape(w.shape[0], -1).T
    x = torch.cat([sd["visual.class_embedding"].expand(b, 1, -1), x], 1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(layers):
        x = ref_block(x, sd, f"visual.transformer.resblocks.{i}.", heads, act)
    x = _ln(x, sd, "visual.ln_post")
    proj = sd["visual.proj"]
    return x[:, 0] @ proj, x[:, 1:].transpose(1, 2).reshape(b, -1, gh, gw), \
        (x[:, 1:] @ proj).transpose(1, 2).reshape(b, -1, gh, gw)


def ref_text(tokens, sd, layers, heads, act):
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][: tokens.shape[1]]
    for i in range(layers):
        x = ref_block(x, sd, f"transformer.resblocks.{i}.", heads, act, causal=True)
    x = _ln(x, sd, "ln_final")
    eot = tokens.argmax(dim=1)
    return x[torch.arange(len(tokens)), eot] @ sd["text_projection"]


def _bn_ref(x, sd, p):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        training=False, eps=1e-5)


def ref_resnet(img, sd, layers, heads):
    x = F.relu(_bn_ref(F.conv2d(img, sd["visual.conv1.weight"], stride=2, padding=1), sd, "visual.bn1."))
    x = F.relu(_bn_ref(F.conv2d(x, sd["visual.conv2.weight"], padding=1), sd, "visual.bn2."))
    x = F.relu(_bn_ref(F.conv2d(x, sd["visual.conv3.weight"], padding=1), sd, "visual.bn3."))
    x = F.avg_pool2d(x, 2)
    for s, depth in enumerate(layers):
        for b in range(depth):
            p = f"visual.layer{s + 1}.{b}."
            stride = 2 if (s > 0 and b == 0) else 1
            y = F.relu(_bn_ref(F.conv2d(x, sd[p + "conv1.weight"]), sd, p + "bn1."))
            y = F.relu(_bn_ref(F.conv2d(y, sd[p + "conv2.weight"], padding=1), sd, p + "bn2."))
            if stride > 1:
                y = F.avg_pool2d(y, stride)
            y = _bn_ref(F.conv2d(y, sd[p + "conv3.weight"]), sd, p + "bn3.")
            if b == 0:
                short = F.avg_pool2d(x, stride) if stride > 1 else x
                short = _bn_ref(F.conv2d(short, sd[p + "downsample.0.weight"]), sd, p + "downsample.1.")
            else:
                short = x
            x = F.relu(y + short)
    fmap = x
    bsz, c, h, w = x.shape
    seq = x.flatten(2).transpose(1, 2)
    seq = torch.cat([seq.mean(1, keepdim=True), seq], 1) + sd["visual.attnpool.positional_embedding"]

    def lin(t, name):
        return t @ sd[f"visual.attnpool.{name}.weight"].T + sd[f"visual.attnpool.{name}.bias"]

    q, k, v = lin(seq, "q_proj"), lin(seq, "k_proj"), lin(seq, "v_proj")
    d = c // heads
    q, k, v = (t.reshape(bsz, -1, heads, d) for t in (q, k, v))
    attn = (torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d)).softmax(-1)
    out = lin(torch.einsum("bhnm,bmhd->bnhd", attn, v).reshape(bsz, -1, c), "c_proj")
    cells = lin(lin(seq[:, 1:], "v_proj"), "c_proj").transpose(1, 2).reshape(bsz, -1, h, w)
    return out[:, 0], fmap, cells


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape
    scale = max(1.0, float(b.abs().max()))
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max())


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("causal", [False, True])
def test_residual_block_matches_hand_written_attention(act, causal):
    torch.manual_seed(0)
    block = ResidualAttentionBlock(96, 3, act=act).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == 96 else 0.0))
    sd = {k: v.detach() for k, v in block.state_dict().items()}
    x = torch.randn(2, 9, 96)
    with torch.no_grad():
        got = block(x, is_causal=causal)
    _close(got, ref_block(x, sd, "", 3, act, causal))


def test_quick_gelu_and_gelu_differ_so_the_choice_matters():
    x = torch.linspace(-3, 3, 13)
    assert float((_act(x, "quick_gelu") - _act(x, "gelu")).abs().max()) > 1e-2


@pytest.fixture(scope="module")
def vit_b32():
    """ViT-B-32 at real widths, 2 vision and 2 text layers, a 1000-token vocabulary."""
    shapes = {**vit_shapes(768, 2, 32, 7, 3, 512), **text_shapes(512, 2, 77, 1000, 512)}
    return random_state_dict(shapes, seed=1)


def test_vit_b32_checkpoint_loads_strictly_and_matches_reference(vit_b32, tmp_path):
    path = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    torch.save(vit_b32, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = load_clip(ckpt, act="quick_gelu")
    cfg = model.config
    assert (cfg.embed_dim, cfg.vision.width, cfg.vision.layers, cfg.vision.heads) == (512, 768, 2, 12)
    assert (cfg.vision.patch_size, cfg.vision.image_size, cfg.text.layers, cfg.text.vocab_size) == (32, 224, 2, 1000)

    img = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pooled, tokens, projected = model.encode_image(img)
        want = ref_vit(img, vit_b32, 2, 12, "quick_gelu")
    assert pooled.shape == (2, 512) and tokens.shape == (2, 768, 7, 7) and projected.shape == (2, 512, 7, 7)
    for got, ref in zip((pooled, tokens, projected), want):
        _close(got, ref)

    tokens_in = torch.zeros(2, 77, dtype=torch.long)
    tokens_in[0, :5] = torch.tensor([998, 5, 17, 300, 999])
    tokens_in[1, :3] = torch.tensor([998, 42, 999])
    with torch.no_grad():
        _close(model.encode_text(tokens_in), ref_text(tokens_in, vit_b32, 2, 8, "quick_gelu"))


def test_activation_is_taken_from_the_caller(vit_b32):
    img = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a = build_clip(vit_b32, act="gelu").encode_image(img).pooled
        b = build_clip(vit_b32, act="quick_gelu").encode_image(img).pooled
    _close(a, ref_vit(img, vit_b32, 2, 12, "gelu")[0])
    assert float((a - b).abs().max()) > 1e-3


def test_causal_mask_keeps_earlier_tokens_blind_to_later_ones(vit_b32):
    model = build_clip(vit_b32)
    tokens = torch.randint(1, 990, (1, 12), generator=torch.Generator().manual_seed(5))
    changed = tokens.clone()
    changed[0, 6] = (tokens[0, 6] + 1) % 990
    with torch.no_grad():
        a, b = model.text_tokens(tokens), model.text_tokens(changed)
    assert torch.equal(a[:, :6], b[:, :6])
    assert float((a[:, 6:] - b[:, 6:]).abs().amax(dim=-1).min()) > 1e-4


def test_other_input_sizes_resample_positions(vit_b32):
    model = build_clip(vit_b32)
    with torch.no_grad():
        out = model.encode_image(torch.randn(1, 3, 256, 256))
    assert out.tokens.shape == (1, 768, 8, 8) and out.projected_tokens.shape == (1, 512, 8, 8)


FULL = {
    "ViT-B-32": lambda dev: {**vit_shapes(768, 12, 32, 7, 3, 512), **text_shapes(512, 12, 77, 49408, 512)},
    "ViT-B-16": lambda dev: {**vit_shapes(768, 12, 16, 14, 3, 512), **text_shapes(512, 12, 77, 49408, 512)},
    "ViT-L-14": lambda dev: {**vit_shapes(1024, 24, 14, 16, 3, 768), **text_shapes(768, 12, 77, 49408, 768)},
    "RN50": lambda dev: {**rn_shapes(64, (3, 4, 6, 3), 7, 3, 1024), **text_shapes(512, 12, 77, 49408, 1024)},
}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_config_is_inferred_and_layout_matches_upstream(name):
    shapes = FULL[name](None)
    sd = random_state_dict(shapes, device="meta")
    cfg = infer_clip_config(sd, act="gelu")
    assert cfg == CLIP_CONFIGS[name].with_act("gelu")
    with torch.device("meta"):
        model = CLIP(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}
    assert ours == theirs


def test_msclip_ten_band_b16_config_is_inferred():
    shapes = {**vit_shapes(768, 12, 16, 14, 10, 512), **text_shapes(512, 12, 77, 49408, 512)}
    cfg = infer_clip_config(random_state_dict(shapes, device="meta"), act="gelu")
    assert cfg.vision.in_chans == 10 and cfg.vision.patch_size == 16 and cfg.vision.image_size == 224
    assert cfg == _config_with_chans("ViT-B-16", 10)


def _config_with_chans(name, chans):
    from dataclasses import replace

    base = CLIP_CONFIGS[name].with_act("gelu")
    return replace(base, vision=replace(base.vision, in_chans=chans))


def test_msclip_wrapper_loads_the_clip_base_model_copy():
    shapes = {**vit_shapes(768, 1, 16, 14, 10, 512), **text_shapes(512, 1, 77, 300, 512)}
    base = random_state_dict(shapes, seed=11)
    other = random_state_dict(shapes, seed=12)
    wrapper = {"temperature": torch.tensor(0.07)}
    wrapper.update({"clip_base_model.model." + k: v for k, v in base.items()})
    wrapper.update({"text_encoder.model." + k: v for k, v in other.items()})
    wrapper.update({"image_encoder.model." + k: v for k, v in other.items()})
    sd, prefix = clip_state_dict(wrapper)
    assert prefix == "clip_base_model.model." and "temperature" not in sd and set(sd) == set(base)
    model = load_clip(wrapper, act="gelu")
    assert model.config.vision.in_chans == 10
    loaded = model.state_dict()
    for k in ("visual.conv1.weight", "visual.transformer.resblocks.0.attn.in_proj_weight", "text_projection"):
        assert torch.equal(loaded[k], base[k])
    img = torch.randn(1, 10, 224, 224)
    with torch.no_grad():
        _close(model.encode_image(img).pooled, ref_vit(img, base, 1, 12, "gelu")[0])


def test_hub_mixin_prefix_and_openai_metadata_are_handled(vit_b32):
    wrapped = {"model." + k: v for k, v in vit_b32.items()}
    sd, prefix = clip_state_dict(wrapped)
    assert prefix == "model." and set(sd) == set(vit_b32)
    jit_like = {**vit_b32, "input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
                "vocab_size": torch.tensor(1000)}
    build_clip(clip_state_dict({"state_dict": jit_like})[0])


@pytest.fixture(scope="module")
def rn_small():
    """RN50 at real widths with one block per stage, 64 px input (2×2 pool grid), 1 text layer."""
    shapes = {**rn_shapes(64, (1, 1, 1, 1), 2, 3, 1024), **text_shapes(512, 1, 77, 300, 1024)}
    return random_state_dict(shapes, seed=21)


def test_rn50_tower_matches_reference(rn_small):
    model = load_clip(rn_small, act="quick_gelu")
    cfg = model.config.vision
    assert (cfg.kind, cfg.width, cfg.layers, cfg.heads, cfg.image_size) == ("resnet", 64, (1, 1, 1, 1), 32, 64)
    img = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = model.encode_image(img)
    want = ref_resnet(img, rn_small, (1, 1, 1, 1), 32)
    assert got.pooled.shape == (2, 1024) and got.tokens.shape == (2, 2048, 2, 2)
    assert got.projected_tokens.shape == (2, 1024, 2, 2)
    for a, b in zip(got, want):
        _close(a, b, tol=2e-4)


def test_missing_key_is_named(vit_b32):
    broken = dict(vit_b32)
    del broken["visual.transformer.resblocks.1.ln_2.bias"]
    with pytest.raises(WeightsError, match=r"visual\.transformer\.resblocks\.1\.ln_2\.bias"):
        build_clip(broken)
    del broken["visual.positional_embedding"]
    with pytest.raises(WeightsError, match="visual.positional_embedding"):
        build_clip(broken)


def test_wrong_shape_is_named(vit_b32):
    broken = dict(vit_b32)
    broken["transformer.resblocks.0.mlp.c_fc.weight"] = torch.zeros(100, 512)
    with pytest.raises(WeightsError, match=r"transformer\.resblocks\.0\.mlp\.c_fc\.weight"):
        build_clip(broken)
    broken = dict(vit_b32)
    broken["visual.conv1.weight"] = torch.zeros(768, 3, 32)
    with pytest.raises(WeightsError, match="visual.conv1.weight"):
        build_clip(broken)


def test_not_a_clip_checkpoint_is_refused():
    with pytest.raises(WeightsError, match="no CLIP image tower"):
        clip_state_dict({"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(WeightsError, match="extra.visual.conv1.weight"):
        clip_state_dict({"extra.visual.conv1.weight": torch.zeros(2, 2, 1, 1)})
