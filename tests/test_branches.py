"""Parallel branches (CrossViT): the config's checks, timm's model API on a branched model, the
fusion's closed-form FLOPs, and the branched zoo model through the API on every zoo model."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from hvtnas import build_model
from hvtnas.config import ArchConfig
from hvtnas.costs import count_flops
from hvtnas.costs.counter import count_calls
from hvtnas.costs.flops import analyse
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.models import FeaturePyramid, zoo
from hvtnas.models.branches import BranchedMetaFormer, ClassTokenExchange
from hvtnas.models.layers import make_norm


def tiny_branched(**overrides: Any) -> dict[str, Any]:
    """Two isotropic branches on a 48x48 image: patches of 8 (width 16, 2 blocks) and of 12 on the
    image resized to 36 (width 32, 4 blocks), fused twice."""
    cfg: dict[str, Any] = {
        "name": "tiny_branched",
        "input": {"channels": 3, "resolution": 48, "num_classes": 10},
        "stem": {"kind": "patch", "patch_size": 8},
        "pos_embed": {"kind": "absolute"},
        "tokens": {"kind": "class", "pos_embed": True},
        "head": {"norm": {"kind": "layernorm", "eps": 1e-6}},
        "stages": [{"depth": 2, "width": 16, "heads": 2, "mixers": ["attention"]}],
        "branches": [
            {
                "resolution": 36,
                "stem": {"kind": "patch", "patch_size": 12},
                "stages": [{"depth": 4, "width": 32, "heads": 4, "mixers": ["attention"]}],
            }
        ],
        "fusion": {"kind": "class_attention", "points": 2},
    }
    cfg.update(overrides)
    return cfg


def _problem(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(cfg)
    return str(err.value)


# ----------------------------------------------------------------------------- config
def test_a_branched_config_round_trips_through_yaml() -> None:
    cfg = ArchConfig.from_dict(tiny_branched())
    assert ArchConfig.from_yaml_text(cfg.to_yaml()) == cfg
    own, other = cfg.branch_configs()
    assert (own.input.resolution, own.stem.patch_size, own.stages[0].width) == (48, 8, 16)
    assert (other.input.resolution, other.stem.patch_size, other.stages[0].width) == (36, 12, 32)
    assert other.tokens == cfg.tokens and other.head == cfg.head and other.branches is None


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"fusion": None}, "fusion: parallel branches need a fusion"),
        ({"branches": None}, "fusion: fuses branches"),
        ({"tokens": None}, "tokens: the class_attention fusion exchanges the branches' class tokens"),
        (
            {"stages": [{"depth": 3, "width": 16, "heads": 2, "mixers": ["attention"]}]},
            "stages[0].depth: 3 blocks do not split into the 2 fusion points",
        ),
        ({"input": {"resolution": 44}}, "input.resolution: 44 pixels are not a whole number"),
        (
            {
                "branches": [
                    {
                        "resolution": 40,
                        "stem": {"kind": "patch", "patch_size": 12},
                        "stages": [{"depth": 2, "width": 32, "heads": 4, "mixers": ["attention"]}],
                    }
                ]
            },
            "branches[0].resolution: 40 pixels are not a whole number of the branch's 12-pixel patches",
        ),
        (
            {
                "branches": [
                    {
                        "resolution": 36,
                        "stem": {"kind": "patch", "patch_size": 12},
                        "stages": [{"depth": 6, "width": 30, "heads": 4, "mixers": ["attention"]}],
                    }
                ]
            },
            "branches[0].stages[0].heads: 4 does not divide width 30",
        ),
        (
            {
                "branches": [
                    {
                        "resolution": 36,
                        "stem": {"kind": "patch", "patch_size": 12},
                        "stages": [{"depth": 2, "width": 32, "mixers": ["pooling"]}],
                    }
                ]
            },
            "branches[0].stages[0].heads: the fusion's cross-attention runs with the attended branch's heads",
        ),
        (
            {
                "branches": [
                    {
                        "resolution": 36,
                        "stem": {"kind": "patch", "patch_size": 12},
                        "stages": [{"depth": 2, "width": 32, "heads": 4, "mixers": ["attention"]}] * 2,
                    }
                ]
            },
            "branches[0].stages: List should have at most 1 item",
        ),
    ],
)
def test_bad_branched_configs_name_the_field(edit: dict[str, Any], expected: str) -> None:
    cfg = tiny_branched()
    for key, value in edit.items():
        cfg[key] = {**cfg[key], **value} if key == "input" else value
    assert expected in _problem(cfg)


def test_a_branch_is_checked_as_a_model_of_its_own() -> None:
    """A branch's stage whose mixers never attend to the class token is refused as in any model."""
    cfg = tiny_branched()
    cfg["branches"][0]["stages"][0]["mixers"] = ["pooling"]
    assert "branches[0].tokens: no mixer of the stages that carry them" in _problem(cfg)


# ----------------------------------------------------------------------------- model API
@pytest.fixture
def model() -> BranchedMetaFormer:
    return build_model(tiny_branched()).eval()


def test_timm_idioms_on_a_branched_model(model: BranchedMetaFormer) -> None:
    x = torch.randn(2, 3, 48, 48)
    assert model.feature_info == [
        {"num_chs": 16, "reduction": 8, "module": "stages.0"},
        {"num_chs": 32, "reduction": 16, "module": "branches.0"},  # 12-pixel patches at 36/48
    ]
    assert model.num_features == 48  # the class tokens side by side
    with torch.inference_mode():
        logits = model(x)
        features, tokens = model.forward_features(x, return_tokens=True)
        assert features.shape == (2, 32, 3, 3) and tokens.shape == (2, 1, 32)  # the coarsest branch
        final, pyramid = model.forward_intermediates(x)
        torch.testing.assert_close(final, features)
        assert [tuple(m.shape) for m in pyramid] == [(2, 16, 6, 6), (2, 32, 3, 3)]
        levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
        maps, level_tokens = [m for m, _ in levels], [t for _, t in levels]
        torch.testing.assert_close(model.forward_head(maps, tokens=level_tokens), logits)
        with pytest.raises(HvtnasError, match="class tokens of the last 2 pyramid levels"):
            model.forward_head(features, tokens=tokens)
        pre = model.forward_head(maps, pre_logits=True, tokens=level_tokens)
        assert pre.shape == (2, 48)
        # the logits are the mean of each branch's classifier on its normalised class token
        heads = model.head.heads
        own = heads[0].fc(heads[0].norm(level_tokens[0][:, 0]))
        other = heads[1].fc(heads[1].norm(level_tokens[1][:, 0]))
        torch.testing.assert_close(logits, (own + other) / 2)
        model.reset_classifier(3)
        assert model.forward_head(maps, tokens=level_tokens).shape == (2, 3)
        assert [fc.out_features for fc in model.get_classifier()] == [3, 3]
        assert model.arch_config.input.num_classes == 3
        model.reset_classifier(0)
        assert model(x).shape == (2, 48)
    with pytest.raises(HvtnasError, match="global_pool"):
        model.reset_classifier(3, global_pool="avg")


def test_features_only_gives_every_branch_map() -> None:
    backbone = build_model(tiny_branched(), features_only=True)
    assert isinstance(backbone, FeaturePyramid)
    assert backbone.feature_info.channels() == [16, 32] and backbone.feature_info.reduction() == [8, 16]
    assert not any(".fc." in k for k in backbone.state_dict())
    maps = backbone(torch.randn(1, 3, 48, 48))
    assert [tuple(m.shape) for m in maps] == [(1, 16, 6, 6), (1, 32, 3, 3)]
    only_coarse = build_model(tiny_branched(), features_only=True, out_indices=[-1])
    assert [tuple(m.shape) for m in only_coarse(torch.randn(1, 3, 48, 48))] == [(1, 32, 3, 3)]


def test_the_branches_exchange_information(model: BranchedMetaFormer) -> None:
    """Each branch's class token reads the other branch's patches: a change to the part of the image
    only one branch sees at one point still reaches both outputs (and without fusion points the
    branches would be independent models)."""
    x = torch.randn(1, 3, 48, 48, requires_grad=True)
    levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
    own_tokens, other_tokens = (t for _, t in levels)
    (grad_own,) = torch.autograd.grad(
        own_tokens[:, 0].sum(), model.branches[0].stem.proj.weight, retain_graph=True
    )
    (grad_other,) = torch.autograd.grad(other_tokens[:, 0].sum(), model.stem.proj.weight)
    assert grad_own.abs().sum() > 0 and grad_other.abs().sum() > 0


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    cfg = tiny_branched(drop_path_rate=0.2)
    x = torch.randn(2, 3, 48, 48)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(1)
        model(x).logsumexp(dim=1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_other_input_sizes_resize_the_branches_by_their_factor(model: BranchedMetaFormer) -> None:
    with torch.inference_mode():
        pyramid = model.forward_intermediates(torch.randn(1, 3, 96, 96), intermediates_only=True)
    # 96 / 8 = 12; the image resized by 36/48 to 72, 72 / 12 = 6 (position embeddings interpolated)
    assert [tuple(m.shape[2:]) for m in pyramid] == [(12, 12), (6, 6)]


# ----------------------------------------------------------------------------- costs
def test_the_fusion_costs_its_closed_form() -> None:
    widths, heads, N = [16, 32], [2, 4], [36, 9]  # patches of each branch, each with a class token
    exchange = ClassTokenExchange(
        widths, heads, [lambda d: make_norm("layernorm", d, 1e-6, True)] * 2, "gelu", True
    ).eval()

    class Fusion(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.exchange = exchange

        def forward(self, *tensors: torch.Tensor) -> tuple:
            return tuple(self.exchange(list(tensors[:2]), list(tensors[2:])))

    # the branches' maps (6 x 6 and 3 x 3 patches), then their class tokens
    inputs = tuple(torch.randn(*shape) for shape in ((1, 6, 6, 16), (1, 3, 3, 32), (1, 1, 16), (1, 1, 32)))
    expected = 0
    for i, j in ((0, 1), (1, 0)):
        Ci, Cj, L = widths[i], widths[j], 1 + N[j]  # the token of i attends over [token; patches of j]
        expected += 5 * Ci + Ci * Cj  # to the other's width: norm, Linear
        expected += 5 * L * Cj + Cj * Cj + 2 * L * Cj * Cj  # norm over the sequence, q of the token, k v
        expected += L * 2 * Cj  # q k^T and a v: one query
        expected += Cj * Cj  # output projection
        expected += 5 * Cj + Cj * Ci  # back: norm, Linear
    assert analyse(Fusion(), inputs).total() == expected
    assert count_calls(Fusion(), tuple(t.to("meta") for t in inputs)).total == expected


def test_a_branched_model_counts_like_fvcore_at_other_sizes(model: BranchedMetaFormer) -> None:
    for size, backbone_only in (((48, 48), False), ((96, 72), True)):
        fast = count_flops(model, size, backbone_only=backbone_only)
        ref = count_flops(model, size, backbone_only=backbone_only, method="fvcore")
        assert fast.total == ref.total and fast.by_module == ref.by_module
        assert set(fast.by_module) == {"stem", "stage1", "branch1", "fusion", "head"}
        assert sum(fast.by_module.values()) == fast.total


# ----------------------------------------------------------------------------- the zoo's
BRANCHED = [n for n in zoo.names() if zoo.get_config(n).branches is not None]


def test_the_zoo_has_a_branched_model() -> None:
    assert BRANCHED == ["crossvit_s"]


@pytest.mark.parametrize("name", BRANCHED)
def test_timm_idioms_on_every_branched_zoo_model(name: str) -> None:
    """What tests/test_model_api.py checks on the single-skeleton zoo models, for one level per branch."""
    model = build_model(name, num_classes=10, init_weights=False).eval()
    cfg = model.arch_config
    x = torch.randn(1, 3, cfg.input.resolution, cfg.input.resolution)
    branches = cfg.branch_configs()
    assert [f["num_chs"] for f in model.feature_info] == [b.stages[0].width for b in branches]
    with torch.inference_mode():
        logits = model(x)
        levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
        for (level, tokens), branch in zip(levels, branches, strict=True):
            side = branch.input.resolution // branch.stem.stride
            assert level.shape == (1, branch.stages[0].width, side, side) and tokens.shape[1] == 1
        maps, tokens = [m for m, _ in levels], [t for _, t in levels]
        torch.testing.assert_close(model.forward_features(x), maps[-1])
        torch.testing.assert_close(model.forward_head(maps, tokens=tokens), logits)
        assert model.forward_head(maps, pre_logits=True, tokens=tokens).shape == (1, model.num_features)
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_branches_are_searchable() -> None:
    """A space may choose any value of the other branches and of the fusion; their dimensions are
    named by branch and stage, and a choice that leaves a branch's blocks unsplittable is refused
    when the space is loaded."""
    from hvtnas.space import SearchSpace

    cfg = tiny_branched()
    cfg["branches"][0]["resolution"] = {"choice": [36, 48]}
    cfg["branches"][0]["stages"][0]["width"] = {"choice": [32, 48]}
    cfg["fusion"]["points"] = {"choice": [1, 2]}
    space = SearchSpace.from_dict(cfg)
    assert [d.name for d in space.dimensions()] == [
        "branch1.resolution",
        "branch1.stage1.width",
        "fusion.points",
    ]
    assert space.params_for(ArchConfig.from_dict(tiny_branched())) == {
        "branch1.resolution": 36,
        "branch1.stage1.width": 32,
        "fusion.points": 2,
    }
    cfg["fusion"]["points"] = {"choice": [1, 3]}
    with pytest.raises(ConfigError, match=re.escape("with fusion.points = 3: stages[0].depth")):
        SearchSpace.from_dict(cfg)


def test_cli_build_lists_every_branch_and_the_fusion(tmp_path) -> None:
    from typer.testing import CliRunner

    from hvtnas.cli import app

    path = tmp_path / "branched.yaml"
    ArchConfig.from_dict(tiny_branched()).to_yaml(path)
    result = CliRunner().invoke(app, ["build", str(path)])
    assert result.exit_code == 0, result.output
    for row in ("stage1", "16 x 6 x 6", "branch1", "32 x 3 x 3", "fusion"):
        assert row in result.output
