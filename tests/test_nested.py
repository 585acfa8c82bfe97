"""TNT's nested stages and CeiT's parts: the pixel stem, the patch projection, nested blocks, the
image-to-tokens stem, the locally-enhanced FFN and the layer-wise class-token attention."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from einops import rearrange

from hvtnas import build_model
from hvtnas.config import ArchConfig
from hvtnas.costs import count_flops
from hvtnas.errors import ConfigError
from hvtnas.models.blocks import NestedStage
from hvtnas.models.embed import ImageToTokensStem, PatchProjection, PixelStem
from hvtnas.models.ffn import LeFF
from hvtnas.models.layers import BatchNormLast
from hvtnas.models.metaformer import LayerClassAttention

INNER = {"width": 8, "heads": 2}


def tiny_tnt(**overrides: Any) -> dict[str, Any]:
    """A TNT of one nested stage at stride 16 (pixels at stride 4), with a class token."""
    stage = {"depth": 2, "width": 32, "heads": 2, "mixers": [{"kind": "attention", "qkv_bias": False}]}
    stage.update(overrides.pop("stage", {}))
    cfg: dict[str, Any] = {
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "pixel"},
        "pos_embed": {"kind": "absolute"},
        "tokens": {"kind": "class", "pos_embed": True},
        "stages": [{**stage, "inner": {**INNER, **overrides.pop("inner", {})}}],
    }
    cfg.update(overrides)
    return cfg


def tiny_ceit(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "image_to_tokens", "widths": [8], "patch_size": 16, "norm": "batchnorm"},
        "pos_embed": {"kind": "absolute"},
        "tokens": {"kind": "class", "pos_embed": True},
        "head": {"layer_attention": True},
        "stages": [{"depth": 3, "width": 32, "heads": 2, "mixers": ["attention"], "ffn": "leff"}],
    }
    cfg.update(overrides)
    return cfg


# ----------------------------------------------------------------------------- config
def test_nested_config_round_trips_and_sets_the_strides() -> None:
    cfg = ArchConfig.from_dict(tiny_tnt())
    assert ArchConfig.from_yaml_text(cfg.to_yaml()) == cfg
    assert cfg.stages[0].inner.mixers[0].kind == "window"  # TNT's attention within a patch
    assert cfg.stage_strides() == [16]
    two = tiny_tnt(stages=[{"depth": 1, "width": 8, "mixers": ["pooling"]}, {**tiny_tnt()["stages"][0]}])
    two["stem"] = {"kind": "patch"}
    assert ArchConfig.from_dict(two).stage_strides() == [4, 16]  # a later nested stage: x its patch


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {**tiny_tnt(), "stages": [{"depth": 1, "width": 32, "heads": 2, "mixers": ["attention"]}]},
            "stem.kind: the pixel stem feeds a nested first stage",
        ),
        (tiny_tnt(inner={"heads": 3}), "stages[0].inner.heads: 3 does not divide width 8"),
        (tiny_tnt(inner={"heads": None}), "stages[0].inner.heads: mixer 'window' needs 'heads'"),
        (tiny_tnt(inner={"ffn": "none"}), "stages[0].inner.ffn.kind: the inner block needs an FFN"),
        ({**tiny_tnt(), "stem": {"kind": "pixel", "kernel_size": 6}}, "needs an odd kernel"),
    ],
)
def test_nested_config_errors_name_the_field(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(cfg)
    assert message in str(err.value)


def test_inner_mixers_sized_by_their_map_get_the_pixel_map() -> None:
    model = build_model(tiny_tnt(inner={"mixers": ["relative_attention"]}))
    assert model.stages[0].blocks[0].inner.mixer.map_size == 8  # 32 / 4: the pixels, not the tokens


def test_a_later_nested_stage_takes_the_previous_width() -> None:
    cfg = tiny_tnt()
    cfg["stem"] = {"kind": "patch"}
    cfg["stages"] = [{"depth": 1, "width": 16, "mixers": ["pooling"]}, cfg["stages"][0]]
    with pytest.raises(
        ConfigError, match=r"stages\[1\]\.inner\.width: a nested stage's pixels are the previous"
    ):
        ArchConfig.from_dict(cfg)


@pytest.mark.parametrize(
    ("stem", "message"),
    [
        (
            {"kind": "image_to_tokens", "patch_size": 16, "norm": "batchnorm"},
            "stem.widths: the 'image_to_tokens'",
        ),
        (
            {"kind": "image_to_tokens", "widths": [8], "patch_size": 16},
            "stem.norm: the 'image_to_tokens' stem",
        ),
        (
            {"kind": "image_to_tokens", "widths": [8], "patch_size": 10, "norm": "batchnorm"},
            "a multiple of 4",
        ),
        ({"kind": "overlap", "widths": [8]}, "stem.widths: applies to the 'conv' and 'image_to_tokens'"),
    ],
)
def test_image_to_tokens_stem_errors(stem: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(tiny_ceit(stem=stem))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokens": None}, "head.layer_attention: attends over the class token after every block"),
        ({"tokens": {"kind": "global"}}, "head.layer_attention: attends over the class token"),
        (
            {"head": {"layer_attention": True, "mlp_ratio": 4}},
            "head.mlp_ratio: the layer attention has no MLP",
        ),
    ],
)
def test_layer_attention_needs_class_tokens(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(tiny_ceit(**overrides))
    assert message in str(err.value)


# ----------------------------------------------------------------------------- parts
def test_pixel_stem_convolves_each_patch_alone() -> None:
    stem = PixelStem(3, 4, patch_size=8, kernel_size=7).eval()
    x = torch.randn(1, 3, 16, 16)
    y = torch.randn_like(x)
    y[..., :8, :8] = x[..., :8, :8]  # same top-left patch, everything else different
    with torch.no_grad():
        a, b = stem(x), stem(y)  # (1, 4, 4, 4): 2 x 2 pixels per patch
    assert a.shape == (1, 4, 4, 4)
    torch.testing.assert_close(a[:, :2, :2], b[:, :2, :2])  # the patch's pixels see nothing outside it
    assert not torch.allclose(a[:, 2:, 2:], b[:, 2:, 2:])


def test_pixel_stem_pads_inputs_not_divisible_by_the_patch() -> None:
    assert PixelStem(3, 4, patch_size=16)(torch.randn(1, 3, 40, 24)).shape == (1, 12, 8, 4)


def test_patch_projection_flattens_rows_columns_channels_as_tnt() -> None:
    proj = PatchProjection(2, 3, patch_size=2, bias=False, norm_in=None, norm_out=None)
    pixels = torch.randn(1, 4, 6, 2)  # (B, h*2, w*2, c)
    flat = rearrange(pixels, "b (h ph) (w pw) c -> b h w (ph pw c)", ph=2, pw=2)
    torch.testing.assert_close(proj(pixels), flat @ proj.proj.weight.T)


def test_nested_stage_carries_the_pixels_and_returns_the_patch_map() -> None:
    model = build_model(tiny_tnt())
    stage = model.stages[0]
    assert isinstance(stage, NestedStage)
    x = torch.randn(2, 3, 32, 32)
    (level,) = model.forward_intermediates(x, intermediates_only=True)
    assert level.shape == (2, 32, 2, 2)
    assert model.feature_info[0]["reduction"] == 16
    assert model(x).shape == (2, 10)
    # the inner blocks run at stride 4: a 8 x 8 pixel map, 4 x 4 pixels per token
    pixels = model.stem(x)
    assert pixels.shape == (2, 8, 8, 8)


def test_nested_model_trains_every_parameter() -> None:
    model = build_model(tiny_tnt(), num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    model(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_nested_stage_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = build_model(tiny_tnt())
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_leff_passes_tokens_through_and_mixes_neighbours() -> None:
    ffn = LeFF(4, 8).eval()
    assert LeFF.passes_tokens
    x = torch.zeros(1, 5, 5, 4)
    with torch.no_grad():
        base = ffn(x)
        x[0, 2, 2] = 1.0
        moved = ffn(x)
    changed = (moved - base).abs().sum(-1)[0] > 1e-6
    assert changed[1:4, 1:4].all() and not changed[0].any()  # the 3x3 neighbourhood only


def test_layer_attention_asks_with_the_last_layer_only() -> None:
    lca = LayerClassAttention(8, layers=3, num_heads=2, mlp_ratio=2.0, qkv_bias=True, eps=1e-6).eval()
    history = torch.randn(2, 3, 8)
    out = lca(history)
    assert out.shape == (2, 8)
    # a plain reading: attention of the last token over all, written out with matrices
    x = history + lca.pos_embed
    normed = lca.norm1(x)
    q, k, v = lca.qkv(normed).chunk(3, dim=-1)
    q, k, v = (rearrange(t, "b l (n d) -> b n l d", n=2) for t in (q, k, v))
    attn = (q[:, :, -1:] @ k.transpose(-1, -2) / 2.0).softmax(-1)  # head_dim 4: scale 1/2
    expected = x[:, -1] + lca.proj(rearrange(attn @ v, "b n 1 d -> b (n d)"))
    expected = expected + lca.mlp(lca.norm2(expected))
    torch.testing.assert_close(out, expected)


def test_ceit_head_reads_the_class_token_of_every_block() -> None:
    model = build_model(tiny_ceit())
    x = torch.randn(2, 3, 32, 32)
    _, tokens = model.forward_features(x, return_tokens=True)
    assert tokens.shape == (2, 3, 32)  # one class token per block of the stage
    assert model.stages[0].token_history and model(x).shape == (2, 10)
    assert isinstance(model.stem, ImageToTokensStem)


def test_image_to_tokens_stem_is_conv_bn_pool_then_patches() -> None:
    stem = ImageToTokensStem(3, 16, hidden=8, kernel_size=7, patch=4, norm=BatchNormLast(8)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        low = torch.nn.functional.max_pool2d(
            torch.nn.functional.batch_norm(
                stem.conv(x), stem.norm.running_mean, stem.norm.running_var, stem.norm.weight, stem.norm.bias
            ),
            3,
            2,
            1,
        )
        torch.testing.assert_close(stem(x), stem.proj(low).permute(0, 2, 3, 1))
    assert stem(torch.randn(1, 3, 72, 72)).shape == (1, 5, 5, 16)  # 18 x 18 features padded to 20


# ----------------------------------------------------------------------------- costs
def test_nested_block_flops_closed_form() -> None:
    """A nested stage's extra cost: the inner block on the pixels and the projection of each patch."""
    cfg = tiny_tnt(tokens=None)
    plain = {**copy.deepcopy(cfg), "stem": {"kind": "patch", "patch_size": 16}}
    del plain["stages"][0]["inner"]
    H = W = 64
    nested, flat = (count_flops(build_model(c), (H, W), backbone_only=True) for c in (cfg, plain))
    c, C, p, depth = 8, 32, 4, 2
    pixels = (H // 4) * (W // 4)
    tokens = (H // 16) * (W // 16)
    window = p * p
    inner = (
        pixels * c * 3 * c  # qkv
        + pixels * window * c * 2  # Q K^T and A V inside each 4 x 4 window
        + pixels * c * c  # proj
        + 2 * pixels * c * 4 * c  # MLP, ratio 4
        + 2 * 5 * pixels * c  # two LayerNorms
    )
    projection = tokens * (window * c) * C + 5 * tokens * window * c + 5 * tokens * C  # linear, norm in/out
    stem_difference = (
        nested.by_module["stem"] - flat.by_module["stem"]
    )  # 7x7/4 conv per patch vs 16x16/16 conv
    assert stem_difference == pixels * 3 * 49 * c - tokens * 3 * 256 * C
    assert nested.total - flat.total == stem_difference + projection + depth * (inner + projection)


# ----------------------------------------------------------------------------- MViT v1
def tiny_mvit_v1(**overrides: Any) -> dict[str, Any]:
    """MViT v1 in small: a class token through every stage, channels widened in the FFN."""
    pool = {
        "kind": "pooling_attention",
        "residual_pooling": False,
        "relative_position": False,
        "query_pooling": False,
    }
    cfg: dict[str, Any] = {
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "overlap", "kernel_size": 7, "padding": 3},
        "pos_embed": {"kind": "absolute"},
        "tokens": {"kind": "class", "pos_embed": True},
        "downsample": {"kind": "pooling_attention", "widen": "ffn"},
        "stages": [
            {"depth": 1, "width": 16, "heads": 1, "mixers": [{**pool, "kv_stride": 2}]},
            {"depth": 2, "width": 32, "heads": 2, "mixers": [{**pool, "kv_stride": 1}]},
        ],
    }
    cfg.update(overrides)
    return cfg


def test_widen_applies_to_attention_transitions_only() -> None:
    with pytest.raises(
        ConfigError, match=r"downsample\.widen: applies to the 'pooling_attention' downsampling"
    ):
        ArchConfig.from_dict(tiny_mvit_v1(downsample={"kind": "conv", "widen": "ffn"}))


def test_mvit_v1_widens_in_the_previous_block_and_carries_the_class_token() -> None:
    model = build_model(tiny_mvit_v1())
    first, second = model.stages
    assert first.blocks[-1].ffn is None  # its FFN opens the next stage's transition
    transition = second.downsample
    assert transition.widen.mlp.fc2.out_features == 32 and transition.widen.proj.in_features == 16
    assert transition.shortcut_proj is None  # v1: the transition keeps the width; max-pooled input
    assert second.downsample_takes_tokens and isinstance(second.tokens.proj, torch.nn.Identity)
    mixer = first.blocks[0].mixer
    assert mixer.pool_q is None and mixer.pool_k is not None  # v1 pools Q only where it is strided
    assert transition.attention.pool_q is not None
    x = torch.randn(2, 3, 32, 32)
    levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
    assert [(tuple(m.shape), tuple(t.shape)) for m, t in levels] == [
        ((2, 16, 8, 8), (2, 1, 16)),
        ((2, 32, 4, 4), (2, 1, 32)),
    ]
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ffn_transition_is_linear_shortcut_plus_mlp_of_one_norm() -> None:
    model = build_model(tiny_mvit_v1()).eval()
    widen = model.stages[1].downsample.widen
    x, tokens = torch.randn(1, 4, 4, 16), torch.randn(1, 1, 16)
    normed = widen.norm(x)
    torch.testing.assert_close(widen(x), widen.proj(normed) + widen.mlp(normed))
    out, out_tokens = widen.forward_with_tokens(x, tokens)
    torch.testing.assert_close(out, widen(x))
    torch.testing.assert_close(out_tokens, widen(tokens[:, :, None])[:, :, 0])  # the same per token


def test_pooling_attention_keeps_the_class_token_unpooled() -> None:
    from hvtnas.models.mixers.pooling_attention import PoolingAttention

    mixer = PoolingAttention(8, num_heads=2, map_size=6, kv_stride=2, relative_position=False).eval()
    x, tokens = torch.randn(1, 6, 6, 8), torch.randn(1, 1, 8)
    out, out_tokens = mixer.forward_with_tokens(x, tokens)
    assert out.shape == x.shape and out_tokens.shape == tokens.shape
    # by hand: the token's q, k, v are normalised with the pooled map's but never convolved
    q, k, v = rearrange(mixer.qkv(x), "b h w (three n d) -> three b n h w d", three=3, n=2)
    tq, tk, tv = rearrange(mixer.qkv(tokens), "b t (three n d) -> three b n t d", three=3, n=2)
    q, tq = mixer.pool_q(q, tq)
    k, tk = mixer.pool_k(k, tk)
    v, tv = mixer.pool_v(v, tv)
    flat = "b n h w d -> b n (h w) d"
    keys = torch.cat([tk, rearrange(k, flat)], dim=2)  # 1 + 3 x 3 keys
    values = torch.cat([tv, rearrange(v, flat)], dim=2)
    queries = torch.cat([tq, rearrange(q, flat)], dim=2)
    attn = (queries @ keys.transpose(-1, -2) / 2.0).softmax(-1) @ values + queries  # residual pooling
    expected = mixer.proj(rearrange(attn, "b n l d -> b l (n d)"))
    torch.testing.assert_close(out_tokens, expected[:, :1])
    torch.testing.assert_close(out, rearrange(expected[:, 1:], "b (h w) c -> b h w c", h=6))


def test_reset_classifier_keeps_the_layer_attention() -> None:
    model = build_model(tiny_ceit())
    lca = model.head.layer_attention.qkv.weight.clone()
    model.reset_classifier(5)
    torch.testing.assert_close(model.head.layer_attention.qkv.weight, lca)  # not re-initialised
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
