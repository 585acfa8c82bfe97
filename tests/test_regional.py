"""RegionViT's parts: the ``regional`` token stream, the ``regional_local`` mixer and the block's
regional self-attention, held to a reference written from the paper, their closed-form FLOPs and
the config's refusals. The official code (IBM/RegionViT) is no test dependency: the zoo model's
agreement with it was checked locally (tests/test_zoo.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hvtnas import build_model
from hvtnas.config import ArchConfig
from hvtnas.costs import count_flops
from hvtnas.costs.flops import analyse
from hvtnas.errors import ConfigError
from hvtnas.models.blocks import MetaFormerBlock
from hvtnas.models.embed import ConvDownsample
from hvtnas.models.mixers.regional import RegionalLocalAttention
from hvtnas.models.tokens import CarriedTokens, RegionalTokens
from hvtnas.summary import count_params
from tests.conftest import tiny_config

WINDOW = 2
REGIONAL = {"tokens": {"kind": "regional", "window_size": WINDOW}}
R2L = [{"kind": "regional_local", "window_size": WINDOW}]


def _regional_config(**overrides: object) -> dict:
    """The tiny 4-stage model with regional tokens (windows of 2) and RegionViT's downsampling."""
    downsample = {
        "kind": "conv",
        "kernel_size": 3,
        "norm": "layernorm",
        "norm_position": "pre",
        "act": "gelu",
        "depthwise": True,
    }
    cfg = tiny_config(R2L, **{**REGIONAL, "downsample": downsample, **overrides})
    for stage, width in zip(cfg["stages"], [16, 32, 64, 128], strict=True):  # doubling: depthwise
        stage["width"] = width
    return cfg


# ----------------------------------------------------------------------------- a reference from the paper
def _attend(x: torch.Tensor, mixer: RegionalLocalAttention, bias: torch.Tensor | None) -> torch.Tensor:
    """Multi-head attention of the tokens ``(L, C)`` among themselves, ``bias`` (heads, L, L) added."""
    L, C = x.shape
    heads = mixer.num_heads
    q, k, v = mixer.qkv(x).reshape(L, 3, heads, C // heads).permute(1, 2, 0, 3)
    logits = q @ k.transpose(-1, -2) / math.sqrt(C // heads)
    if bias is not None:
        logits = logits + bias
    return mixer.proj((logits.softmax(-1) @ v).transpose(0, 1).reshape(L, C))


def _reference_block(block: MetaFormerBlock, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
    """One R2L transformer block as the paper describes it, window by window: the regional tokens
    attend to each other (RSA), then each regional token with the local tokens of its window (only
    the real ones: a window at the bottom/right edge holds fewer), a learned bias per head and
    relative offset between local tokens; then an MLP on every token. ``x`` (1, H, W, C), ``tokens``
    (1, T, C) in the windows' row-major order."""
    mixer = block.mixer
    w = mixer.window_size
    table = mixer.relative_position_bias_table  # ((2w-1)^2, heads), row (dy + w - 1) * (2w-1) + dx + w - 1
    H, W = x.shape[1:3]
    tokens = tokens[0] + _attend(block.norm_tokens(tokens[0]), mixer, None)  # RSA
    out_map, out_tokens = x[0].clone(), tokens.clone()
    grid = (-(-H // w), -(-W // w))
    for t, (i, j) in enumerate(itertools.product(range(grid[0]), range(grid[1]))):
        cells = [(r, c) for r in range(i * w, min(H, i * w + w)) for c in range(j * w, min(W, j * w + w))]
        seq = torch.stack([tokens[t]] + [x[0, r, c] for r, c in cells])  # (1 + n, C)
        bias = torch.zeros(mixer.num_heads, len(seq), len(seq))
        for (a, (ra, ca)), (b, (rb, cb)) in itertools.product(enumerate(cells, 1), repeat=2):
            bias[:, a, b] = table[(ra - rb + w - 1) * (2 * w - 1) + (ca - cb + w - 1)]
        seq = seq + _attend(block.norm1(seq), mixer, bias)  # LSA
        seq = seq + block.ffn(block.norm2(seq))
        out_tokens[t] = seq[0]
        for (r, c), value in zip(cells, seq[1:], strict=True):
            out_map[r, c] = value
    return out_map[None], out_tokens[None]


@pytest.mark.parametrize("size", [(4, 6), (5, 7), (1, 3)])
def test_a_block_equals_the_papers_regional_to_local_attention(size: tuple[int, int]) -> None:
    """Whole windows, windows cut by the map's edge (padded and masked) and a map smaller than a
    window; the joined [tokens; pixels] form and the split form alike."""
    model = build_model(_regional_config()).eval()
    block = model.stages[0].blocks[0]
    with torch.no_grad():
        block.mixer.relative_position_bias_table.normal_()  # a bias that matters
    H, W = size
    T = -(-H // WINDOW) * -(-W // WINDOW)
    x, tokens = torch.randn(1, H, W, 16), torch.randn(1, T, 16)
    with torch.no_grad():
        expected_map, expected_tokens = _reference_block(block, x, tokens)
        got_map, got_tokens = block.forward_with_tokens(x, tokens)
        joined = block.forward_sequence(torch.cat([tokens, x.flatten(1, 2)], 1), T, (H, W))
    torch.testing.assert_close(got_map, expected_map)
    torch.testing.assert_close(got_tokens, expected_tokens)
    torch.testing.assert_close(joined, torch.cat([expected_tokens, expected_map.flatten(1, 2)], 1))


# ----------------------------------------------------------------------------- the model
def test_the_regional_stream_is_made_from_the_image_and_carried_by_the_downsampling() -> None:
    model = build_model(_regional_config())
    first = model.stages[0].tokens
    assert isinstance(first, RegionalTokens) and first.proj.weight.shape == (16, 3, 8, 8)  # 4 x 2 pixels
    carried = [s.tokens for s in model.stages[1:]]
    assert all(isinstance(t, CarriedTokens) and isinstance(t.proj, torch.nn.Identity) for t in carried)
    assert all(s.downsample_takes_tokens and s.downsample.token_window == WINDOW for s in model.stages[1:])
    assert model.stages[1].downsample.conv.weight.shape == (32, 1, 3, 3)  # depthwise, doubling
    assert model.head.pool == "avg_tokens"
    without = build_model({**_regional_config(), "tokens": None})  # window attention alone
    norms = 2 * sum(s.depth * s.width for s in model.arch_config.stages)  # each block's norm_tokens
    assert count_params(model) == count_params(without) + 16 * 3 * 64 + 16 + norms


@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_every_stage_has_one_regional_token_per_window(size: tuple[int, int]) -> None:
    """At 40 x 56 the image is no whole number of 8-pixel patches (padded evenly) and the maps of
    the later stages no whole number of windows."""
    model = build_model(_regional_config())
    x = torch.randn(2, 3, *size)
    levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
    for level, tokens in levels:
        H, W = level.shape[-2:]
        assert tokens.shape == (2, -(-H // WINDOW) * -(-W // WINDOW), level.shape[1])
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    # the pyramid too: the last block's local tokens reach no logit (the head reads the regional ones)
    (logits.square().mean() + sum(level.mean() for level, _ in levels)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    feats, tokens = model.forward_features(x, return_tokens=True)
    torch.testing.assert_close(model.forward_head(feats, tokens=tokens), model(x))


def test_the_head_averages_the_normalised_regional_tokens() -> None:
    model = build_model(_regional_config()).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _, tokens = model.forward_features(x, return_tokens=True)
        expected = model.head.fc(model.head.norm(tokens).mean(dim=1))
        torch.testing.assert_close(model(x), expected)


def test_regional_tokens_made_from_the_map() -> None:
    tokens = {"kind": "regional", "window_size": WINDOW, "source": "map", "from_stage": 1}
    model = build_model(_regional_config(tokens=tokens))
    assert model.stages[0].tokens is None and model.stages[1].tokens.proj.weight.shape == (32, 32, 2, 2)
    assert not model.stages[0].blocks[0].norm_tokens  # no tokens there: window attention alone
    levels = model.forward_intermediates(torch.randn(1, 3, 48, 40), return_prefix_tokens=True)[1]
    assert [None if t is None else t.shape[1] for _, t in levels] == [None, 9, 4, 1]


def test_fresh_regional_tokens_at_every_stage_are_made_from_the_image() -> None:
    model = build_model(
        _regional_config(tokens={"kind": "regional", "window_size": WINDOW, "each_stage": "new"})
    )
    patches = [s.tokens.proj.weight.shape[-1] for s in model.stages]
    assert patches == [8, 16, 32, 64] and not any(s.downsample_takes_tokens for s in model.stages)
    levels = model.forward_intermediates(torch.randn(1, 3, 40, 56), return_prefix_tokens=True)[1]
    assert [t.shape[1] for _, t in levels] == [35, 12, 4, 1]  # 10x14, 5x7, 3x4, 2x2 maps in windows of 2


# ----------------------------------------------------------------------------- FLOPs
def test_the_fast_count_equals_fvcore_with_regional_tokens() -> None:
    model = build_model(_regional_config())
    for size, backbone_only in (((64, 64), False), ((72, 104), True)):
        fast = count_flops(model, size, backbone_only=backbone_only)
        ref = count_flops(model, size, backbone_only=backbone_only, method="fvcore")
        assert fast.total == ref.total and fast.by_module == ref.by_module


def test_regional_to_local_attention_costs_its_closed_form() -> None:
    """RSA among T tokens, then LSA in every window of 1 + M² tokens (the map padded to whole
    windows), the output projection on the real tokens."""
    C, H, W, M = 16, 9, 12, 7
    mixer = RegionalLocalAttention(C, num_heads=2, window_size=M).eval()
    T, Np = 2 * 2, 14 * 14

    class Both(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = mixer

        def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
            return self.mixer.forward_with_tokens(x, self.mixer.forward_tokens(tokens))

    analysis = analyse(Both(), (torch.randn(1, H, W, C), torch.randn(1, T, C)))
    rsa = 4 * T * C * C + 2 * T * T * C  # qkv + proj, Q K^T + A V
    lsa = 3 * (T + Np) * C * C + 2 * T * (1 + M * M) ** 2 * C + (T + H * W) * C * C
    assert analysis.total() == rsa + lsa


def test_the_regional_stream_and_its_downsampling_cost_their_closed_form() -> None:
    """The image's P x P patches (P = 4 x 7 = 28: 2 x 3 of them at 40 x 60, padded), then a
    pre-norm (5 per element) and a depthwise 3x3 conv making 2 channels per input channel, on the
    map and on the tokens' own grid."""
    C = 8
    stream = RegionalTokens(C, window_size=7, in_channels=3, stride=4).eval()
    image, x = torch.randn(1, 3, 40, 60), torch.randn(1, 10, 15, C)
    assert analyse(stream, (x, None, image)).total() == 2 * 3 * C * 3 * 28 * 28
    down = ConvDownsample(C, 2 * C, 3, True, torch.nn.LayerNorm(C), None, groups=C, token_window=7).eval()

    class Carry(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = down

        def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple:
            return self.down.forward_with_tokens(x, tokens)

    tokens = torch.randn(1, 2 * 3, C)
    per_map = lambda h, w: 5 * h * w * C + (-(-h // 2)) * (-(-w // 2)) * 2 * C * 9  # noqa: E731
    assert analyse(Carry(), (x, tokens)).total() == per_map(10, 15) + per_map(2, 3)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"tokens": {"kind": "class"}},
            "stages[0].mixers[0]: mixer 'regional_local' needs one regional token per window: tokens of "
            "kind 'regional', not 'class'",
        ),
        (
            {"tokens": {"kind": "regional", "window_size": 3}},
            "stages[0].mixers[0]: mixer 'regional_local' its windows (2) must be the regional tokens' "
            "(window_size 3)",
        ),
        (
            {"downsample": {"kind": "patch_merging", "norm": "layernorm"}},
            "downsample.kind: the 'regional' tokens are carried to the next stage by its downsampling",
        ),
        (
            {"downsample": {"kind": "pool", "act": "gelu"}},
            "downsample.act: applies to the 'conv' downsampling only (this one is 'pool')",
        ),
        (
            {"tokens": {"kind": "regional", "window_size": 2, "last_stage": 2}},
            "tokens.last_stage: the classifier reads the 'regional' token, so the last stage (3)",
        ),
    ],
)
def test_config_refusals_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(_regional_config(**change))
    assert message in str(err.value)


def test_a_depthwise_downsampling_needs_whole_multiples_of_the_width() -> None:
    cfg = _regional_config()
    cfg["stages"][2]["width"] = 48
    with pytest.raises(ConfigError, match=r"stages\[2\]\.width: the depthwise downsampling makes 48"):
        ArchConfig.from_dict(cfg)


def test_the_zoo_model_round_trips_and_describes_itself() -> None:
    from hvtnas.models import zoo
    from hvtnas.summary import describe

    cfg = zoo.get_config("regionvit_s")
    assert ArchConfig.from_yaml_text(cfg.to_yaml()) == cfg
    assert describe(cfg).startswith("conv stem, none PE: 2x96 regional_local, regional tokens |")


def test_regional_stream_without_the_image_says_so() -> None:
    stream = RegionalTokens(8, window_size=2, in_channels=3, stride=4)
    with pytest.raises(ValueError, match="need the image"):
        stream(torch.randn(1, 4, 4, 8), None)
    with pytest.raises(ValueError, match="one token per 2-window"):
        stream(torch.randn(1, 5, 4, 8), None, torch.randn(1, 3, 16, 16))


def test_an_onnx_export_reproduces_the_model_where_windows_pad(tmp_path) -> None:
    """The window grid is computed from traced shapes: by divisions ONNX performs the same way."""
    pytest.importorskip("onnxruntime", reason="the ONNX export needs the 'export' extra")
    from hvtnas.models.onnx import export_onnx

    model = build_model(_regional_config())
    assert export_onnx(model, tmp_path / "regional.onnx", resolution=(40, 56)).max_abs_diff < 1e-4
