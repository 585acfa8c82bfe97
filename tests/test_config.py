"""Architecture configs: validation with errors that name the field (and line), YAML round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hvtnas import ArchConfig, ConfigError, build_model
from hvtnas.models import zoo
from hvtnas.summary import count_params
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_configs_round_trip_through_yaml(name: str, tmp_path: Path) -> None:
    cfg = zoo.get_config(name)
    path = tmp_path / f"{name}.yaml"
    cfg.to_yaml(path)
    again = ArchConfig.from_yaml(path)
    assert again == cfg
    assert again.to_yaml() == cfg.to_yaml()


def test_round_tripped_config_builds_the_same_model(tmp_path: Path) -> None:
    cfg = zoo.get_config("twins_svt_s")
    path = tmp_path / "twins.yaml"
    cfg.to_yaml(path)
    assert count_params(build_model(path)) == count_params(build_model("twins_svt_s"))
    assert list(build_model(path).state_dict()) == list(build_model(cfg).state_dict())


def test_shorthand_and_mapping_forms_are_equal() -> None:
    short = ArchConfig.from_dict(tiny_config(["window", "shifted_window"]))
    full = tiny_config([{"kind": "window", "window_size": 7}, {"kind": "shifted_window"}])
    full["stem"] = {"kind": "patch", "norm": {"kind": "layernorm", "eps": 1e-5}}
    assert ArchConfig.from_dict(full) == short


def test_mixer_pattern_cycles_over_blocks() -> None:
    cfg = ArchConfig.from_dict(tiny_config(["window", "shifted_window"], stage={"depth": 5}))
    kinds = [cfg.stages[0].mixer_for_block(i).kind for i in range(5)]
    assert kinds == ["window", "shifted_window", "window", "shifted_window", "window"]
    model = build_model(cfg)
    assert [type(b.mixer).__name__ for b in model.stages[0].blocks] == [
        "WindowAttention",
        "ShiftedWindowAttention",
        "WindowAttention",
        "ShiftedWindowAttention",
        "WindowAttention",
    ]


def test_head_dim_gives_the_number_of_heads() -> None:
    cfg = tiny_config(["attention"], stage={"heads": None, "head_dim": 8})
    stage = ArchConfig.from_dict(cfg).stages[1]
    assert stage.num_heads == 4
    assert build_model(cfg).stages[1].blocks[0].mixer.num_heads == 4


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(data)
    return err.value.problems


def test_heads_must_divide_width() -> None:
    cfg = tiny_config(["attention"])
    cfg["stages"][2]["heads"] = 5
    assert _problems(cfg) == ["stages[2].heads: 5 does not divide width 48"]


def test_attention_needs_heads() -> None:
    cfg = tiny_config(["attention"])
    del cfg["stages"][1]["heads"]
    assert _problems(cfg) == ["stages[1].heads: mixer 'attention' needs 'heads' or 'head_dim'"]


def test_unknown_mixer_lists_known_ones() -> None:
    [problem] = _problems(tiny_config(["windw"]))[:1]
    assert problem.startswith("stages[0].mixers[0]: unknown token mixer 'windw'; known: attention,")
    assert "shifted_window" in problem


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["stages"][0].update(depth=0), "stages[0].depth: Input should be greater than 0"),
        (lambda c: c["stages"][0].update(depth=-2), "stages[0].depth: Input should be greater than 0"),
        (lambda c: c["stages"][3].update(width="wide"), "stages[3].width: Input should be a valid integer"),
        (lambda c: c["stages"][1].update(colour=3), "stages[1].colour: unknown key"),
        (lambda c: c.update(extra_thing=1), "extra_thing: unknown key"),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(0, {"kind": "window", "window": 7}),
            "stages[0].mixers[0].window: unknown key",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(0, {"kind": "window", "window_size": 0}),
            "stages[0].mixers[0].window_size: Input should be greater than 0",
        ),
        (lambda c: c.update(stages=[]), "stages: List should have at least 1 item"),
        (lambda c: c.update(stages=c["stages"] * 2), "stages: List should have at most 4 items"),
        (lambda c: c.update(stem={"kind": "conv"}), "stem: the 'conv' stem needs a norm"),
        (
            lambda c: c["stages"][0].update(norm={"kind": "batchnorm", "bias": False}),
            "stages[0].norm: batchnorm always has a bias",
        ),
        (
            lambda c: c["stages"][0].update(ffn={"kind": "mlp", "act": "swish2"}),
            "stages[0].ffn.act: unknown activation 'swish2'",
        ),
        (lambda c: c.update(drop_path_rate=1.5), "drop_path_rate: Input should be less than 1"),
        (lambda c: c["stages"][0].pop("width"), "stages[0].width: required field is missing"),
        (lambda c: c["stages"][1].update(norm_position="middle"), "stages[1].norm_position: Input should be"),
        (
            lambda c: c.update(stem={"kind": "patch", "strides": [2, 2]}),
            "stem.strides: applies to the 'conv' stem",
        ),
        (
            lambda c: c.update(stem={"kind": "conv", "norm": "batchnorm", "strides": [2, 1]}),
            "stem.strides: the strides must multiply to 4",
        ),
        (
            lambda c: c.update(stem={"kind": "conv", "norm": "batchnorm", "kernel_sizes": [7]}),
            "stem.kernel_sizes: needs one entry per conv (depth 2)",
        ),
        (
            lambda c: c["stages"][2].update(ffn={"kind": "mlp", "dw_residual": True}),
            "stages[2].ffn.dw_residual: applies to the 'mixffn' FFN only",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(0, {"kind": "token_mlp", "act": "swish9"}),
            "stages[0].mixers[0].act: unknown activation 'swish9'",
        ),
        (
            lambda c: c.update(pos_embed={"kind": "rotary"}),
            "pos_embed.kind: Input should be",
        ),
        (
            lambda c: c.update(stem={"kind": "patch", "kernel_sizes": [4, 7]}),
            "stem.kernel_sizes: cross-scale kernels must be >= the stride 4",
        ),
        (
            lambda c: c.update(downsample="pooling_attention"),
            "stages[1].mixers[0]: downsample 'pooling_attention' makes this stage's first block",
        ),
        (
            lambda c: c.update(downsample={"kind": "patch_merging", "kernel_sizes": [2, 4]}),
            "downsample.kernel_sizes: applies to the 'conv' downsampling only",
        ),
        (
            lambda c: c.update(downsample={"kind": "conv", "kernel_sizes": [2, 4, 6, 8, 10, 12]}),
            "stages[2].width: 48 does not split over the 6 cross-scale kernels of the downsample",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(
                0, {"kind": "window", "relative_position_bias": False, "dynamic_position_bias": True}
            ),
            "stages[0].mixers[0]: dynamic_position_bias needs relative_position_bias: true",
        ),
        (
            lambda c: c.update(co_scale={"depth": 1, "scales": 3}),
            "stages[2].width: the co-scale group adds the maps of stages 1-3 together: they need one width",
        ),
        (
            lambda c: c.update(co_scale={"depth": 1, "scales": 5}),
            "co_scale.scales: Input should be less than or equal to 4",
        ),
        (
            lambda c: c.update(pos_embed={"kind": "absolute", "peg_at": "before_each_block"}),
            "pos_embed.peg_at: applies to the 'peg' encoding only (this one is 'absolute')",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(
                0, {"kind": "factorized", "crpe_kernel_sizes": [3, 4]}
            ),
            "stages[0].mixers[0].crpe_kernel_sizes: the kernels must be odd",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(0, {"kind": "factorized", "crpe_heads": [1, 1]}),
            "stages[0].mixers[0]: crpe_heads needs one head count per kernel of crpe_kernel_sizes [3, 5, 7]",
        ),
        (
            lambda c: c["stages"][1]["mixers"].__setitem__(
                0, {"kind": "factorized", "crpe_heads": [1, 1, 1]}
            ),
            "stages[1].heads: mixer 'factorized': crpe_heads [1, 1, 1] must add up to the stage's 2 heads",
        ),
        (
            lambda c: c.update(downsample="strided_block"),
            "stages[1].bottleneck: downsample 'strided_block' makes this stage's first block",
        ),
        (
            lambda c: c["stages"][2].update(bottleneck={"ratio": 1.0}),
            "stages[2].ffn: does not apply to bottleneck blocks",
        ),
        (
            lambda c: c.update(stem={"kind": "resnet", "kernel_size": 6, "norm": "batchnorm"}),
            "stem.kernel_size: the 'resnet' stem needs an odd kernel",
        ),
        (
            lambda c: c["stages"][0]["mixers"].__setitem__(0, {"kind": "halo", "factorized_position": True}),
            "stages[0].mixers[0]: factorized_position and relative_position_bias are two position encodings",
        ),
        (
            lambda c: c["stages"][1].update(neighbour_conv=6),
            "stages[1].neighbour_conv: 6 is even",
        ),
        (
            lambda c: c.update(stem={"kind": "conv", "norm": "batchnorm", "widths": [8, 16]}),
            "stem.widths: needs one width per conv before the last (depth 2)",
        ),
        (
            lambda c: c.update(stem={"kind": "overlap", "bias": True}),
            "stem.bias: applies to the 'conv' stem only",
        ),
    ],
)
def test_bad_configs_name_the_field(edit, expected: str) -> None:
    cfg = tiny_config(["window"])
    edit(cfg)
    problems = _problems(cfg)
    assert any(p.startswith(expected) for p in problems), problems


def test_yaml_errors_carry_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "arch.yaml"
    path.write_text(
        "name: demo\nstages:\n  - depth: 2\n    width: 64\n    heads: 3\n    mixers: [attention]\n"
    )
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_yaml(path)
    assert err.value.problems == [f"{path}:5: stages[0].heads: 3 does not divide width 64"]
    assert str(path) in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nstages:\n  - depth: 2\n    width: [64\n")
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_yaml(path)
    [problem] = err.value.problems
    assert problem.startswith(f"{path}:") and "YAML syntax error" in problem


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        ArchConfig.from_yaml(tmp_path / "nope.yaml")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        ArchConfig.from_yaml_text("- 1\n- 2\n")


def test_sinusoidal_embedding_needs_widths_divisible_by_four() -> None:
    cfg = tiny_config(["pooling"], pos_embed="sinusoidal")
    cfg["stages"][0]["width"] = 18
    cfg["stages"][0]["heads"] = 2
    assert _problems(cfg) == [
        "stages[0].width: 18 is not divisible by 4, as the sinusoidal position embedding needs"
    ]


def test_mixers_that_split_heads_need_a_multiple() -> None:
    cfg = tiny_config([{"kind": "cross_window", "stripe_width": 2}])
    cfg["stages"][3]["heads"] = 1
    assert _problems(cfg) == [
        "stages[3].heads: mixer 'cross_window' splits the heads into 2 groups: 1 heads is not a multiple"
    ]
    cfg = tiny_config(["shunted"], stage={"heads": None, "head_dim": 16})  # widths 16..64: 1..4 heads
    assert _problems(cfg)[0].startswith("stages[0].heads: mixer 'shunted' splits the heads into 2 groups")


def test_conv_stem_last_norm_takes_a_norm_of_its_own() -> None:
    cfg = ArchConfig.from_dict(
        tiny_config(["pooling"], stem={"kind": "conv", "norm": "batchnorm", "last_norm": "layernorm"})
    )
    assert cfg.stem.last_norm.kind == "layernorm"
    norms = [type(n).__name__ for n in build_model(cfg).stem.norms]
    assert norms == ["BatchNormLast", "LayerNormLast"]


def test_conv_stem_widths_and_biases() -> None:
    """Shuffle Transformer's stem: 3 -> 32 -> 96 -> 96 channels, every conv with a bias."""
    stem = {"kind": "conv", "depth": 3, "strides": [2, 2, 1], "kernel_sizes": [3, 3, 1], "widths": [8, 24]}
    cfg = tiny_config(["pooling"], stem={**stem, "norm": "batchnorm", "bias": True, "last_norm": False})
    convs = build_model(cfg).stem.convs
    assert [c.out_channels for c in convs] == [8, 24, 16]
    assert all(c.bias is not None for c in convs)


def test_neighbour_conv_is_a_residual_sub_block_between_mixer_and_ffn() -> None:
    block = build_model(tiny_config(["pooling"], stage={"neighbour_conv": 3})).stages[0].blocks[0].eval()
    conv = block.neighbour_conv.conv
    assert conv.kernel_size == (3, 3) and conv.groups == conv.in_channels and conv.bias is None
    x = torch.randn(2, 8, 8, conv.in_channels)
    with torch.no_grad():
        y = x + block.mixer(block.norm1(x))
        z = block.norm_neighbour(y).permute(0, 3, 1, 2)  # NCHW for the reference conv
        y = y + torch.nn.functional.conv2d(z, conv.weight, padding=1, groups=conv.groups).permute(0, 2, 3, 1)
        expected = y + block.ffn(block.norm2(y))
        torch.testing.assert_close(block(x), expected)
