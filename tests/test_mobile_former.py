"""Mobile-Former (hvtnas.models.mobile_former): its blocks' closed-form costs, a tiny model through
the timm API, the dynamic ReLU, and the config's checks of a Mobile-Former model."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hvtnas import ArchConfig, ConfigError, build_model
from hvtnas.costs import count_flops
from hvtnas.costs.counter import count_calls
from hvtnas.costs.flops import analyse
from hvtnas.models import zoo
from hvtnas.models.mobile_former import DynamicReLU, MobileFormerBlock
from hvtnas.models.scaling import scale_architecture
from hvtnas.models.tokens import CarriedTokens
from hvtnas.models.weights import _mobile_former_state
from hvtnas.summary import count_params, describe

T, D = 3, 16  # tokens and their width in the closed forms


def tiny_mobile_former(**overrides: Any) -> dict[str, Any]:
    """Mobile-Former-shaped, tiny: widths 8..32, 3 tokens of 16, a block or two per stage."""
    cfg: dict[str, Any] = {
        "name": "tiny_mobile_former",
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "mobilenet", "widths": [8, 8], "act": "relu6"},
        "downsample": "strided_block",
        "tokens": {"kind": "global", "count": T, "dim": D},
        "head": {"norm": None, "mobile_former": {"conv_width": 48, "hidden": 40}},
        "stages": [
            {"depth": 2, "width": 8, "mobile_former": {"expansions": [2, 3], "token_gate": True}},
            {"depth": 1, "width": 16, "mobile_former": {"expansions": [2]}},
            {"depth": 2, "width": 24, "mobile_former": {"expansions": [2, 2], "widths": [16, 24]}},
            {"depth": 1, "width": 32, "mobile_former": {"expansions": [2], "former_heads": 2}},
        ],
    }
    cfg.update(overrides)
    return cfg


def _block_macs(c_in: int, c: int, e: int, H: int, W: int, stride: int, gate: bool, e2: int = 4) -> int:
    """MACs of one Mobile-Former block on a (1, H, W, c_in) map beside (1, T, D) tokens, written
    from the block's definition (BatchNorm and LayerNorm as fvcore counts them: 2 and 5 a value)."""
    N = H * W
    Ho, Wo = -(-H // stride), -(-W // stride)
    No = Ho * Wo
    mobile_to_former = T * D * c_in + 2 * T * N * c_in + T * c_in * D + 5 * T * D + gate * T * D * c_in
    former = 2 * T * D * D + 2 * T * T * D + 5 * T * D + 2 * T * D * 2 * D + 5 * T * D

    def dyrelu(channels: int) -> int:  # the coefficient MLP on the first token
        return D * (D // 4) + (D // 4) * 2 * channels

    if stride == 1:
        E = c_in * e
        mobile = N * c_in * E + N * E * 9 + N * E * c + 2 * N * (2 * E + c) + 2 * dyrelu(E)
    else:
        E, E2 = c_in * e, c * e2
        mobile = No * E * 9 + No * E * c + No * E2 * 9 + No * E2 * c + 2 * No * (E + 2 * c + E2)
        mobile += dyrelu(E) + dyrelu(E2)
    former_to_mobile = 2 * T * D * c + 2 * No * T * c
    return mobile_to_former + former + mobile + former_to_mobile


@pytest.mark.parametrize(
    ("c_in", "c", "e", "stride", "gate", "size"),
    [(8, 8, 3, 1, False, (6, 6)), (8, 12, 2, 1, True, (5, 7)), (8, 12, 2, 2, True, (7, 6))],
)
def test_block_flops_match_closed_form(
    c_in: int, c: int, e: int, stride: int, gate: bool, size: tuple[int, int]
) -> None:
    block = MobileFormerBlock(c_in, c, D, e, stride=stride, token_gate=gate).eval()
    x, tokens = torch.randn(1, *size, c_in), torch.randn(1, T, D)

    class Call(torch.nn.Module):  # fvcore traces modules: the block's forward with tokens
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.block.forward_with_tokens(x, tokens)

    expected = _block_macs(c_in, c, e, *size, stride, gate)
    assert analyse(Call(), (x, tokens)).total() == expected
    assert count_calls(Call(), (x.to("meta"), tokens.to("meta"))).total == expected


def test_tiny_model_speaks_timm_and_counts_like_fvcore() -> None:
    model = build_model(tiny_mobile_former()).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model.arch_config.stage_strides() == [4, 8, 16, 32]
    with torch.inference_mode():
        logits = model(x)
        feats, tokens = model.forward_features(x, return_tokens=True)
        assert feats.shape == (2, 32, 1, 1) and tokens.shape == (2, T, D)
        torch.testing.assert_close(model.forward_head(feats, tokens=tokens), logits)
        assert model.forward_head(feats, pre_logits=True, tokens=tokens).shape == (2, 40)
        pyramid = build_model(tiny_mobile_former(), features_only=True).eval()(x)
    assert [tuple(f.shape[1:]) for f in pyramid] == [(8, 8, 8), (16, 4, 4), (24, 2, 2), (32, 1, 1)]
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    fast, ref = count_flops(model, (32, 32)), count_flops(model, (32, 32), method="fvcore")
    assert fast.total == ref.total and fast.by_module == ref.by_module


def test_every_parameter_gets_a_gradient() -> None:
    # at 64: BatchNorm in training sees more than two values per channel in the last stage (with
    # two, its output is +-1 whatever its input, and nothing before it gets a gradient)
    model = build_model(tiny_mobile_former(drop_path_rate=0.1)).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]


def test_tokens_of_their_own_width_are_carried_unchanged() -> None:
    model = build_model(tiny_mobile_former())
    carried = [stage.tokens for stage in model.stages[1:]]
    assert all(isinstance(c, CarriedTokens) and isinstance(c.proj, torch.nn.Identity) for c in carried)
    assert model.stages[0].tokens.tokens.shape == (1, T, D)


def test_dynamic_relu_at_neutral_coefficients_is_relu() -> None:
    act = DynamicReLU(6, D)
    torch.nn.init.zeros_(act.fc2.weight)
    torch.nn.init.zeros_(act.fc2.bias)  # hardsigmoid(0) = 1/2: slopes 1 and 0
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(act(x, torch.randn(2, D)), F.relu(x))


def test_head_without_tokens_says_how_to_give_them() -> None:
    model = build_model(tiny_mobile_former()).eval()
    with pytest.raises(Exception, match="return_tokens=True"):
        model.forward_head(model.forward_features(torch.randn(1, 3, 32, 32)))


def _error(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(cfg)
    return str(err.value)


def _with(path: tuple, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(tiny_mobile_former())
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            ("stages", 1, "mobile_former", "expansions"),
            [2, 2],
            r"stages\[1\].mobile_former.expansions: needs one",
        ),
        (("stages", 2, "mobile_former", "widths"), [16, 16], r"stages\[2\].mobile_former.widths: .*the last"),
        (("stages", 0, "mobile_former", "bridge_heads"), 3, r"bridge_heads: .*3 does not divide 8"),
        (
            ("stages", 3, "mobile_former", "former_heads"),
            3,
            r"former_heads: .*does not divide the tokens' width",
        ),
        (("stages", 0, "mixers"), ["pooling"], r"stages\[0\].mixers: does not apply to Mobile-Former"),
        (("stages", 0, "ffn"), "mlp", r"stages\[0\].ffn: does not apply to Mobile-Former"),
        (("stages", 1), {"depth": 1, "width": 16, "mixers": ["pooling"]}, r"come as a whole model"),
        (("stem",), {"kind": "conv", "norm": "batchnorm"}, r"stem.kind: .*stride-2 'mobilenet' stem"),
        (("stem", "widths"), [8], r"stem.widths: .*two widths"),
        (("downsample",), "conv", r"downsample.kind: .*strided_block"),
        (("tokens",), {"kind": "global", "count": 3}, r"tokens: .*of their own width"),
        (("tokens",), {"kind": "class", "count": 1}, r"tokens: .*global"),
        (("head",), {"norm": None}, r"head.mobile_former: .*Mobile-Former's head"),
        (("head", "norm"), "layernorm", r"head.norm: does not apply"),
    ],
)
def test_config_errors_name_the_field(path: tuple, value: Any, message: str) -> None:
    assert __import__("re").search(message, _error(_with(path, value)))


def test_mobile_former_parts_need_mobile_former_stages() -> None:
    plain = {
        "input": {"resolution": 32, "num_classes": 10},
        "stages": [{"depth": 1, "width": 16, "heads": 2, "mixers": ["attention"]}],
    }
    assert "stride-2 'mobilenet' stem feeds" in _error(
        {**plain, "stem": {"kind": "mobilenet", "widths": [8, 8]}}
    )
    tokens = {"kind": "global", "count": 2, "dim": 8}
    assert "tokens.dim: tokens of a width of their own" in _error({**plain, "tokens": tokens})
    head = {"mobile_former": {"conv_width": 8, "hidden": 8}}
    assert "head.mobile_former: Mobile-Former's head needs" in _error({**plain, "head": head})


def test_scaling_keeps_the_blocks_consistent() -> None:
    scaled = scale_architecture(zoo.get_config("mobile_former_294m"), width_mult=0.5, depth_mult=0.5)
    third = scaled.stages[2]
    assert (third.depth, third.width, third.mobile_former.expansions) == (2, 64, [6, 4])
    assert third.mobile_former.widths == [48, 64]
    assert scaled.head.mobile_former.conv_width == 576 and scaled.stem.widths == [8, 8]
    assert count_params(build_model(scaled, init_weights=False)) < 11_422_648 / 2


def test_describe_names_the_block_kind() -> None:
    assert describe(zoo.get_config("mobile_former_294m")) == (
        "mobilenet stem, none PE: 2x24 mobile_former, 6 global tokens | 2x48 mobile_former | "
        "4x128 mobile_former | 3x192 mobile_former"
    )


def test_config_round_trips_without_the_filled_in_mixers() -> None:
    cfg = ArchConfig.from_dict(tiny_mobile_former())
    assert [m.kind for m in cfg.stages[0].mixers] == ["identity"] and cfg.stages[0].ffn.kind == "none"
    assert ArchConfig.from_yaml_text(cfg.to_yaml()) == cfg


def test_released_checkpoint_names_map_onto_the_zoo_model() -> None:
    """AAboys/MobileFormer's names (its mobile_former.py and dna_blocks.py) for a few tensors of each
    kind; with that code's weights the zoo model gives its logits (9e-8, checked locally)."""
    released = {
        "tokens.weight": "stages.0.tokens.tokens",
        "stem.0.weight": "stem.conv.0.weight",
        "features.0.conv.4.weight": "stem.lite.project.0.weight",
        "features.1.conv1.1.running_var": "stages.0.blocks.0.mobile.depthwise_down.1.running_var",
        "features.1.hyper3.hyper.2.bias": "stages.0.blocks.0.mobile.act2.fc2.bias",
        "features.1.conv4.0.weight": "stages.0.blocks.0.mobile.project.0.weight",
        "features.2.conv2.0.weight": "stages.0.blocks.1.mobile.depthwise.0.weight",
        "features.2.hyper2.hyper.0.weight": "stages.0.blocks.1.mobile.act2.fc1.weight",
        "features.2.local_global.alpha.0.weight": "stages.0.blocks.1.mobile_to_former.gate.weight",
        "features.2.global_block.channel_mlp.bias": "stages.0.blocks.1.former.proj.bias",
        "features.2.global_local.proj.weight": "stages.0.blocks.1.former_to_mobile.v.weight",
        "features.3.conv4.0.weight": "stages.1.blocks.0.mobile.project.0.weight",
        "features.3.global_block.ffn_norm.weight": "stages.1.blocks.0.former.norm2.weight",
        "local_global.layer_norm.bias": "head.bridge.norm.bias",
        "classifier.fc.1.running_mean": "head.hidden.1.running_mean",
        "classifier.classifier.1.weight": "head.fc.weight",
    }
    renamed = _mobile_former_state({k: torch.zeros(1) for k in released})
    assert list(renamed) == list(released.values())
    with torch.device("meta"):
        names = build_model("mobile_former_294m", init_weights=False).state_dict()
    assert set(released.values()) <= set(names)
