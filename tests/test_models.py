"""The generator: pyramid shapes, other input sizes, stems, downsampling, positional encodings."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from hvtnas import build_model, summarize
from hvtnas.config import ArchConfig
from hvtnas.errors import ConfigError
from hvtnas.models.blocks import CoScaleBlock
from hvtnas.models.embed import (
    AbsolutePosEmbed,
    AxialPosEmbed,
    PatchMerging,
    PixelAttention,
    SinusoidalPosEmbed,
)
from hvtnas.models.mixers.pooling import Identity
from tests.conftest import tiny_config

PATTERNS = {
    "swin": ["window", "shifted_window"],
    "pvt": [{"kind": "spatial_reduction", "sr_ratio": 2}],
    "twins": [
        {"kind": "window", "relative_position_bias": False},
        {"kind": "spatial_reduction", "sr_ratio": 2},
    ],
    "poolformer": ["pooling"],
    "shift": ["shift"],
}


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("size", [(64, 64), (50, 38), (28, 28), (17, 45)])
def test_pyramid_at_any_input_size(pattern: str, size: tuple[int, int]) -> None:
    model = build_model(tiny_config(PATTERNS[pattern])).eval()
    H, W = size
    pyramid = model.forward_intermediates(torch.randn(1, 3, H, W), intermediates_only=True)
    assert len(pyramid) == 4
    h, w = -(-H // 4), -(-W // 4)  # the patch stem pads to a multiple of 4
    for level, (feature, info) in enumerate(zip(pyramid, model.feature_info, strict=True)):
        assert feature.shape == (1, info["num_chs"], h, w), level
        assert info["reduction"] == 4 * 2**level
        h, w = -(-h // 2), -(-w // 2)  # 2x2 downsampling pads odd maps
        assert torch.isfinite(feature).all()


def test_forward_equals_head_on_last_pyramid_level() -> None:
    model = build_model(tiny_config(PATTERNS["swin"])).eval()
    x = torch.randn(2, 3, 32, 32)
    last = model.forward_intermediates(x, intermediates_only=True)[-1]
    torch.testing.assert_close(model(x), model.forward_head(last))
    assert model.forward_head(last, pre_logits=True).shape == (2, 64)


def test_num_classes_zero_returns_pooled_features() -> None:
    model = build_model(tiny_config(["pooling"]), num_classes=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, model.num_features)


def test_absolute_position_embedding_is_interpolated_for_other_sizes() -> None:
    cfg = tiny_config(
        ["attention"], pos_embed={"kind": "absolute"}, input={"resolution": 64, "num_classes": 10}
    )
    model = build_model(cfg)
    pos = model.stages[0].pos_embed
    assert isinstance(pos, AbsolutePosEmbed) and pos.pos_embed.shape == (1, 16, 16, 16)
    assert not isinstance(model.stages[1].pos_embed, AbsolutePosEmbed)
    assert model(torch.randn(1, 3, 96, 80)).shape == (1, 10)
    # at the configured size the table is added as is
    x = torch.randn(1, 16, 16, 16)
    torch.testing.assert_close(pos(x), x + pos.pos_embed)


def test_axial_position_embedding_is_a_row_half_and_a_column_half() -> None:
    """Vision Longformer's: channel c < C/2 depends on the row only, the rest on the column only;
    resized linearly along each axis for other sizes."""
    cfg = tiny_config(
        ["attention"],
        pos_embed={"kind": "axial", "per_stage": True},
        input={"resolution": 64, "num_classes": 10},
    )
    model = build_model(cfg)
    pos = model.stages[1].pos_embed
    assert isinstance(pos, AxialPosEmbed) and pos.row_embed.shape == pos.col_embed.shape == (8, 16)
    added = pos(torch.zeros(1, 8, 8, 32))[0]  # (H, W, C)
    torch.testing.assert_close(added[:, :, :16], pos.row_embed[:, None, :].expand(8, 8, 16))
    torch.testing.assert_close(added[:, :, 16:], pos.col_embed[None, :, :].expand(8, 8, 16))
    assert pos(torch.zeros(1, 5, 12, 32)).shape == (1, 5, 12, 32)
    assert model(torch.randn(1, 3, 96, 80)).shape == (1, 10)
    with pytest.raises(ConfigError, match=r"stages\[0\].width: 15 is not divisible by 2, as the axial"):
        ArchConfig.from_dict(tiny_config(["pooling"], pos_embed="axial", stage={"width": 15, "heads": 1}))


def test_per_stage_absolute_embeddings_like_pvt_v1() -> None:
    cfg = tiny_config(["spatial_reduction"], pos_embed={"kind": "absolute", "per_stage": True})
    model = build_model(cfg)
    sizes = [tuple(s.pos_embed.pos_embed.shape) for s in model.stages]
    assert sizes == [(1, 8, 8, 16), (1, 4, 4, 32), (1, 2, 2, 48), (1, 1, 1, 64)]


def test_sinusoidal_embedding_is_fixed_and_distinct_per_position() -> None:
    emb = SinusoidalPosEmbed(16).embedding(5, 7, torch.device("cpu"), torch.float32)
    assert emb.shape == (5, 7, 16)
    assert torch.unique(emb.reshape(35, 16), dim=0).shape[0] == 35
    model = build_model(tiny_config(["pooling"], pos_embed="sinusoidal"))
    assert sum(p.numel() for p in model.stages[0].pos_embed.parameters()) == 0


def test_peg_follows_the_first_block_of_every_stage() -> None:
    model = build_model(tiny_config(["attention", "attention"], pos_embed="peg"))
    for stage in model.stages:
        assert stage.peg is not None
        assert stage.peg.proj.groups == stage.peg.proj.in_channels  # depthwise


@pytest.mark.parametrize(("peg_at", "calls"), [("after_first_block", [1]), ("before_each_block", [0, 1, 2])])
def test_peg_placement(peg_at: str, calls: list[int]) -> None:
    """Twins: after the first block; CoaT: before every block, one conv for the stage. Recorded as
    the number of blocks that ran before each call of the stage's PEG."""
    model = build_model(tiny_config(["pooling"] * 3, pos_embed={"kind": "peg", "peg_at": peg_at}))
    stage, seen, ran = model.stages[1], [], [0]
    stage.peg.register_forward_hook(lambda *_: seen.append(ran[0]))
    for block in stage.blocks:
        block.register_forward_hook(lambda *_: ran.__setitem__(0, ran[0] + 1))
    model(torch.randn(1, 3, 32, 32))
    assert seen == calls


@pytest.mark.parametrize(
    "stem",
    [
        {"kind": "patch"},
        {"kind": "patch", "norm": "groupnorm"},
        {"kind": "overlap", "kernel_size": 7, "padding": 3, "norm": "layernorm"},
        {"kind": "overlap"},
        {"kind": "conv", "norm": "batchnorm"},
        {"kind": "conv", "depth": 3, "norm": "layernorm"},
        {"kind": "resnet", "norm": "batchnorm", "act": "relu"},
        {"kind": "resnet", "kernel_size": 3, "norm": "layernorm"},
    ],
)
def test_stems_reach_stride_four(stem: dict) -> None:
    model = build_model(tiny_config(["pooling"], stem=stem))
    pyramid = model.forward_intermediates(torch.randn(2, 3, 64, 64), intermediates_only=True)
    assert pyramid[0].shape == (2, 16, 16, 16)


@pytest.mark.parametrize(
    "downsample",
    [
        {"kind": "conv", "kernel_size": 2},
        {"kind": "conv", "kernel_size": 3, "norm": "layernorm", "norm_position": "pre"},
        {"kind": "conv", "kernel_size": 3, "norm": "batchnorm"},
        {"kind": "conv", "kernel_size": 2, "bias": False, "norm": "groupnorm", "norm_position": "pre"},
        {"kind": "patch_merging", "norm": "layernorm", "norm_position": "pre"},
        {"kind": "pool", "norm": "batchnorm"},
        {"kind": "conv", "kernel_sizes": [2, 4], "norm": "layernorm", "norm_position": "pre"},
    ],
)
def test_downsampling_halves_the_map(downsample: dict) -> None:
    model = build_model(tiny_config(["pooling"], downsample=downsample))
    shapes = [
        tuple(f.shape[2:])
        for f in model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    ]
    assert shapes == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_patch_merging_with_post_norm_normalises_the_output_like_swin_v2() -> None:
    downsample = {"kind": "patch_merging", "norm": "layernorm", "norm_position": "post"}
    merge = build_model(tiny_config(["pooling"], downsample=downsample)).stages[1].downsample
    assert isinstance(merge.norm, torch.nn.Identity) and merge.post_norm.normalized_shape == (32,)
    x = torch.randn(1, 4, 4, 16)
    merged = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)  # Swin's 2x2 concat
    torch.testing.assert_close(merge(x), merge.post_norm(merge.reduction(merged)))


def test_post_norm_blocks_normalise_each_branch_output() -> None:
    """Swin V2's residual post-norm: x + norm(f(x)) instead of x + f(norm(x))."""
    block = build_model(tiny_config(["pooling"], stage={"norm_position": "post"})).stages[0].blocks[0].eval()
    x = torch.randn(1, 8, 8, 16)
    y = x + block.norm1(block.mixer(x))
    torch.testing.assert_close(block(x), y + block.norm2(block.ffn(y)))


def test_pixel_attention_gates_after_every_embedding() -> None:
    model = build_model(tiny_config(["pooling"], pos_embed={"kind": "pixel_attention", "per_stage": True}))
    assert all(isinstance(s.pos_embed, PixelAttention) for s in model.stages)
    pa = model.stages[0].pos_embed
    x = torch.randn(1, 5, 6, 16)
    gate = torch.sigmoid(pa.proj(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    torch.testing.assert_close(pa(x), x * gate)


def test_patch_merging_concatenates_in_swin_order() -> None:
    merge = PatchMerging(2, 4, norm=None)
    x = torch.arange(2 * 2 * 2, dtype=torch.float32).view(1, 2, 2, 2)  # (B, H, W, C)
    with torch.no_grad():
        merge.reduction.weight.copy_(torch.eye(8)[:4].repeat(1, 1))
    merged = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    torch.testing.assert_close(merge(x), merged[..., :4])


def test_layer_scale_and_residual_scale_are_built_when_asked() -> None:
    model = build_model(tiny_config(["pooling"], stage={"layer_scale": 1e-5, "res_scale": True}))
    block = model.stages[0].blocks[0]
    assert torch.all(block.layer_scale1.scale == 1e-5) and torch.all(block.res_scale2.scale == 1.0)


def test_mbconv_stage_without_ffn() -> None:
    cfg = tiny_config(["mbconv"], stage={"ffn": "none", "norm": "batchnorm"})
    block = build_model(cfg).stages[0].blocks[0]
    assert block.ffn is None and not hasattr(block, "norm2")


def test_drop_path_is_random_in_training_and_off_in_eval() -> None:
    model = build_model(tiny_config(["pooling"], drop_path_rate=0.5))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_summary_reports_params_and_shapes() -> None:
    summary = summarize(tiny_config(PATTERNS["pvt"]), resolution=64)
    assert summary.params == sum(summary.params_per_part.values())
    assert summary.stages[0] == {"channels": 16, "height": 16, "width": 16}
    assert summary.stages[-1] == {"channels": 64, "height": 2, "width": 2}


@pytest.mark.parametrize("pattern", ["swin", "twins"])
def test_training_after_inference_mode(pattern: str) -> None:
    """Masks and indices cached during an inference_mode pass must still serve training."""
    cfg = tiny_config(PATTERNS[pattern], pos_embed="sinusoidal")
    model = build_model(cfg)
    x = torch.randn(2, 3, 40, 40)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cross_scale_embeddings_concatenate_kernels_like_crossformer() -> None:
    cfg = tiny_config(
        ["pooling"],
        stem={"kind": "patch", "kernel_sizes": [4, 8, 16, 32], "norm": "layernorm"},
        downsample={"kind": "conv", "kernel_sizes": [2, 4], "norm": "layernorm", "norm_position": "pre"},
    )
    model = build_model(cfg)
    stem = model.stem.proj
    assert [c.out_channels for c in stem.convs] == [8, 4, 2, 2]  # width 16: 1/2, 1/4, 1/8, 1/8
    assert [c.padding[0] for c in stem.convs] == [0, 2, 6, 14]
    assert [c.out_channels for c in model.stages[1].downsample.conv.convs] == [16, 16]
    for size in [(64, 64), (36, 44)]:  # odd maps on the way down are padded, kernels agree on sizes
        shapes = [
            tuple(f.shape[2:])
            for f in model.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
        ]
        assert shapes[0] == (size[0] // 4, size[1] // 4)


def test_attention_downsampling_makes_the_first_block_the_transition() -> None:
    cfg = tiny_config([{"kind": "pooling_attention"}], downsample="pooling_attention", stage={"depth": 2})
    model = build_model(cfg)
    assert [len(s.blocks) for s in model.stages] == [2, 1, 1, 1]  # depth 2 = transition + 1 block
    transition = model.stages[1].downsample
    assert transition.attention.pool_q.conv.stride == (2, 2) and transition.shortcut_proj.out_features == 32
    shapes = [
        tuple(f.shape[1:])
        for f in model.forward_intermediates(torch.randn(1, 3, 50, 38), intermediates_only=True)
    ]
    assert shapes == [(16, 13, 10), (32, 7, 5), (48, 4, 3), (64, 2, 2)]


def _bottleneck_config(**stage: object) -> dict:
    halo = {"kind": "halo", "block_size": 4, "halo_size": 1, "relative_position_bias": False}
    halo |= {"factorized_position": True, "mask_outside": False, "output_proj": False}
    bottleneck = {"ffn": "none", "norm": "batchnorm", "bottleneck": {"ratio": 0.5}, "depth": 2, **stage}
    return tiny_config(
        [halo], downsample="strided_block", stage=bottleneck, stem={"kind": "resnet", "norm": "batchnorm"}
    )


def test_strided_blocks_make_the_first_bottleneck_block_the_downsampling() -> None:
    model = build_model(_bottleneck_config())
    assert all(isinstance(s.downsample, torch.nn.Identity) for s in model.stages)
    first, second = model.stages[1].blocks
    assert first.stride == 2 and first.mixer.stride == 2 and second.stride == 1
    assert first.shortcut[0].in_features == 16 and first.shortcut[0].out_features == 32
    assert first.conv1.out_features == first.mixer.q.in_features == 16  # ratio 0.5 of width 32
    assert model.stages[0].blocks[0].shortcut is None  # same width, no stride: identity
    x = torch.randn(2, 3, 50, 38)
    shapes = [tuple(f.shape[1:]) for f in model.forward_intermediates(x, intermediates_only=True)]
    assert shapes == [(16, 13, 10), (32, 7, 5), (48, 4, 3), (64, 2, 2)]
    model.train()
    model(x).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_bottleneck_block_is_resnets() -> None:
    """act(x + norm3(conv3(act(norm2(mixer(act(norm1(conv1(x))))))))), channels-last 1x1 convs."""
    block = build_model(_bottleneck_config()).stages[0].blocks[1].eval()
    x = torch.randn(2, 8, 8, 16)
    with torch.no_grad():
        branch = block.act(block.norm1(x @ block.conv1.weight.T))
        branch = block.norm3(block.act(block.norm2(block.mixer(branch))) @ block.conv3.weight.T)
        torch.testing.assert_close(block(x), torch.relu(x + branch))


def test_build_without_weight_init_has_the_same_parameters_and_flops() -> None:
    from hvtnas.costs.flops import count_flops

    initialised, default = build_model("pvt_v2_b0"), build_model("pvt_v2_b0", init_weights=False)
    assert [p.shape for p in initialised.parameters()] == [p.shape for p in default.parameters()]
    assert count_flops(initialised, (64, 64)).total == count_flops(default, (64, 64)).total
    # the truncated normal (std 0.02) is what a trained-from-scratch model starts from
    assert initialised.stages[0].blocks[0].ffn.fc1.weight.std() < 0.025
    assert default.stages[0].blocks[0].ffn.fc1.weight.std() > 0.05


@pytest.mark.parametrize("name", ["pvt_v2_b0", "convformer_s18"])
def test_fused_inference_kernels_compute_what_the_plain_ops_compute(name: str, monkeypatch) -> None:
    """CPU inference takes the fused oneDNN kernels (MixFFN conv + GELU, SepConv linear + StarReLU,
    MLP linear + GELU); no_grad and training take the plain ops. Both give the same outputs."""
    from hvtnas.models import fused

    monkeypatch.setenv("HVTNAS_FUSED_KERNELS", "1")  # fused wherever safe, not only where faster
    model = build_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # not inference mode: plain ops
        plain = model(x)
    with torch.inference_mode():
        fast = model(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    kernels = fused._onednn_works("linear", "gelu", "none") and fused._onednn_works("conv", "gelu", "none")
    if kernels:  # this torch build has them (else the plain ops ran both times): were they used?
        calls: list[str] = []
        with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
            for op in ("_linear_pointwise", "_convolution_pointwise"):
                original = getattr(torch.ops.mkldnn, op)
                mp.setattr(torch.ops.mkldnn, op, lambda *a, op=op, f=original: calls.append(op) or f(*a))
            model(x)
        assert calls  # MixFFN: conv + GELU; ConvFormer: linear + StarReLU's ReLU, linear + GELU


def test_every_linear_layer_takes_onednns_product_in_cpu_inference_and_computes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The models' linear layers are ``fused.Linear``: an ``nn.Linear`` in parameters and state
    dict whose CPU inference may run oneDNN's matrix product (MKL's is slow on AMD CPUs); no_grad
    and training run ``F.linear``. Both compute the same."""
    from hvtnas.models import fused

    model = build_model("deit_s")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, fused.Linear) for m in linears)
    layer = linears[0]
    plain = torch.nn.Linear(layer.in_features, layer.out_features)
    plain.load_state_dict(layer.state_dict())  # the same keys and shapes as torch's
    monkeypatch.setenv("HVTNAS_FUSED_KERNELS", "1")  # oneDNN wherever safe, not only where faster
    if not fused._onednn_works("linear", "none", ""):
        pytest.skip("this torch build has no oneDNN linear")
    original = torch.ops.mkldnn._linear_pointwise
    calls: list[int] = []

    def counted(x: torch.Tensor, *rest: object) -> torch.Tensor:
        calls.append(x.shape[0])
        return original(x, *rest)

    x = torch.randn(3, 5, layer.in_features)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)
        with torch.no_grad():
            expected = plain(x)
            torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)  # F.linear
        assert calls == []
        with torch.inference_mode():
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
            assert layer(torch.randn(0, layer.in_features)).shape == (0, layer.out_features)
        assert calls == [3]  # oneDNN, for the non-empty input


class _SlowGELU(torch.nn.GELU):  # the plain way made 30x slower: the fused kernel must win
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(30):
            y = super().forward(x)
        return y


def test_fused_or_plain_is_chosen_by_timing_both_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """By default each shape is timed both ways the first time it is met, and the faster way is
    kept: a oneDNN kernel slower here than the plain ops is not used again."""
    from hvtnas.models import fused

    if not fused._onednn_works("linear", "gelu", "none"):
        pytest.skip("this torch build has no fused oneDNN linear")
    monkeypatch.setenv("HVTNAS_FUSED_KERNELS", "auto")
    monkeypatch.setattr(fused, "_fused_is_faster", {})
    original = torch.ops.mkldnn._linear_pointwise
    calls: list[int] = []

    def slow(*args: object) -> torch.Tensor:  # 30x the work of the oneDNN kernel
        calls.append(1)
        return [original(*args) for _ in range(30)][-1]

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)

    layer, x = torch.nn.Linear(8, 16), torch.randn(1, 100, 8)
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.ops.mkldnn, "_linear_pointwise", slow)
        out = fused.linear_act(x, layer, torch.nn.GELU())
        timed = len(calls)
        assert fused.TUNING_RUNS <= timed <= fused.TUNING_MAX_RUNS
        for _ in range(2):
            out = fused.linear_act(x, layer, torch.nn.GELU())
        assert len(calls) == timed  # the plain ops only, once timed
        torch.testing.assert_close(out, torch.nn.functional.gelu(layer(x)), rtol=1e-5, atol=1e-5)
        fused.linear(x, layer)  # the plain product alone: timed for itself, and slower too
        timed = len(calls)
        fused.linear(x, layer)
        assert len(calls) == timed
        calls.clear()
        mp.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)
        y = torch.randn(1, 101, 8)  # another shape: timed again
        fused.linear_act(y, layer, _SlowGELU())
        timed = len(calls)
        for _ in range(2):
            fused.linear_act(y, layer, _SlowGELU())
        assert len(calls) == timed + 2  # the fused kernel kept


def test_training_step_through_fused_residual_and_drop_path_matches_the_unfused_formula() -> None:
    """``addcmul`` with folded layer scale and drop-path factors is the textbook
    ``x + drop_path(layer_scale * branch)``: same values and gradients for the same RNG draw."""
    from hvtnas.models.blocks import MetaFormerBlock
    from hvtnas.models.ffn import Mlp
    from hvtnas.models.layers import LayerNormLast
    from hvtnas.models.mixers.pooling import Pooling

    block = MetaFormerBlock(
        8, Pooling(8), Mlp(8, 16), lambda: LayerNormLast(8), drop_path=0.5, layer_scale=0.1
    )
    block.train()
    x = torch.randn(16, 4, 4, 8, requires_grad=True)
    torch.manual_seed(1)
    fused_out = block(x)
    torch.manual_seed(1)  # the same mask draws, by hand: h + mask / keep * layer_scale * branch
    plain = x
    for norm, f, ls in (
        (block.norm1, block.mixer, block.layer_scale1),
        (block.norm2, block.ffn, block.layer_scale2),
    ):
        branch = f(norm(plain))
        mask = branch.new_empty(16, 1, 1, 1).bernoulli_(0.5) / 0.5
        plain = plain + mask * ls(branch)
    torch.testing.assert_close(fused_out, plain)
    (g_fused,) = torch.autograd.grad(fused_out.sum(), x)
    (g_plain,) = torch.autograd.grad(plain.sum(), x)
    torch.testing.assert_close(g_fused, g_plain)


def test_describe_is_one_line_of_stem_pe_and_stages() -> None:
    from hvtnas.summary import describe

    assert describe(build_model("pvt_v2_b0").arch_config) == (
        "overlap stem, none PE: 2x32 spatial_reduction | 2x64 spatial_reduction | "
        "2x160 spatial_reduction | 2x256 spatial_reduction"
    )
    assert describe(build_model("coat_s", init_weights=False).arch_config).endswith(
        "| 2x320 factorized, 1 class token | 6x co-scale over stages 2-4"
    )


def test_a_patch_stem_of_16_makes_an_isotropic_stage_at_stride_16() -> None:
    cfg = tiny_config(["attention"], stem={"kind": "patch", "patch_size": 16}, pos_embed="absolute")
    cfg["stages"] = cfg["stages"][:1]
    model = build_model(cfg)
    assert model.feature_info == [{"num_chs": 16, "reduction": 16, "module": "stages.0"}]
    assert model.stem.proj.weight.shape == (16, 3, 16, 16)
    assert model.stages[0].pos_embed.pos_embed.shape == (1, 2, 2, 16)  # 32 / 16 at the configured size
    pyramid = model.forward_intermediates(torch.randn(1, 3, 40, 56), intermediates_only=True)
    assert pyramid[0].shape == (1, 16, 3, 4)  # padded to whole patches: ceil(40 / 16), ceil(56 / 16)
    with pytest.raises(
        ConfigError, match=r"stem\.patch_size: applies to the 'patch' and 'image_to_tokens' stems only"
    ):
        ArchConfig.from_dict(tiny_config(["pooling"], stem={"kind": "overlap", "patch_size": 16}))


# ----------------------------------------------------------------------------- co-scale group (CoaT)
def _co_scale_config(**overrides) -> dict:
    """Stages 2-4 of one width, fused by a co-scale group of two blocks; class tokens per stage."""
    cfg = tiny_config(["factorized"], co_scale={"depth": 2, "scales": 3}, **overrides)
    for stage in cfg["stages"][1:]:
        stage["width"] = 32
    return cfg


def test_co_scale_block_adds_the_other_scales_resized() -> None:
    """With identity mixers and a zero FFN, each scale's output is its input, plus its own mixer
    output, plus the others' bilinearly resized to its map."""
    ffn = torch.nn.Linear(4, 4)
    torch.nn.init.zeros_(ffn.weight)
    torch.nn.init.zeros_(ffn.bias)
    block = CoScaleBlock([Identity(4) for _ in range(3)], [ffn] * 3, [torch.nn.Identity] * 3)
    maps = [torch.randn(1, s, s, 4) for s in (8, 4, 2)]
    out, tokens = block(maps, [None] * 3)
    assert tokens == [None] * 3

    def resized(x: torch.Tensor, size: int) -> torch.Tensor:
        nchw = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="bilinear")
        return nchw.permute(0, 2, 3, 1)

    for i, (x, s) in enumerate(zip(maps, (8, 4, 2), strict=True)):
        others = sum(resized(maps[j], s) for j in range(3) if j != i)
        torch.testing.assert_close(out[i], 2 * x + others)


def test_co_scale_model_fuses_the_last_stages() -> None:
    model = build_model(_co_scale_config(tokens={"kind": "class", "each_stage": "new"}))
    assert len(model.co_scale.blocks) == 2 and model.head.scales == 3
    # one relative position encoding per stage, shared by its blocks and its co-scale mixers
    assert model.co_scale.blocks[1].mixers[2].crpe is model.stages[3].blocks[0].mixer.crpe
    x = torch.randn(2, 3, 32, 32)
    pyramid = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape[1:]) for f in pyramid] == [(16, 8, 8), (32, 4, 4), (32, 2, 2), (32, 1, 1)]
    serial = model._forward_levels(x, model.stages[:2])  # stops before the group
    torch.testing.assert_close(pyramid[0], serial[0][0].permute(0, 3, 1, 2))
    assert not torch.allclose(pyramid[1], serial[1][0].permute(0, 3, 1, 2))  # level 2 is fused
    model(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    features = build_model(_co_scale_config(), features_only=True, out_indices=(0, 1))
    assert features.model.co_scale is None  # cut stages: the levels are the serial stages'
    assert [f.shape[1] for f in features(torch.randn(1, 3, 32, 32))] == [16, 32]


@pytest.mark.parametrize("size", [4, 1])
def test_group_norm_learns_behind_frozen_layers(size: int) -> None:
    """Fine-tuning with the layers before a GroupNorm frozen (its input needs no gradient, its
    affine does) trains it: PyTorch's channels-last GroupNorm backward crashes the process there
    (torch 2.13, CPU), so that case takes another layout. Same outputs and affine gradients as
    the textbook formula; on a 1x1 map too, which is channels-last and contiguous at once."""
    from hvtnas.models.layers import GroupNorm1

    torch.manual_seed(0)
    x = torch.randn(2, size, size, 8)  # (B, H, W, C), what the stages hold
    norm = GroupNorm1(8)
    weight, bias = (torch.rand(8) + 0.5).requires_grad_(), torch.randn(8).requires_grad_()
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # one group: statistics over (H, W, C) per image
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + norm.eps) * weight + bias
    out = norm(x)
    assert torch.allclose(out, expected, atol=1e-5)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.allclose(norm.weight.grad, weight.grad, atol=1e-4)
    assert torch.allclose(norm.bias.grad, bias.grad, atol=1e-4)


def test_a_model_with_group_norms_fine_tunes_its_head_alone() -> None:
    cfg = tiny_config(["pooling"], downsample={"kind": "conv", "kernel_size": 2, "norm": "groupnorm"})
    cfg["head"] = {"norm": "groupnorm", "norm_position": "pre_pool"}
    model = build_model(ArchConfig.model_validate(cfg)).train()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("head"))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("head"))
