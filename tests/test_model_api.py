"""timm 1.x's model API on every generated model: forward_features / forward_head,
forward_intermediates, prune_intermediate_layers, reset_classifier, set_grad_checkpointing and
the features_only model."""

from __future__ import annotations

import pytest
import torch

from hvtnas import build_model
from hvtnas.costs.memory import saved_activation_bytes
from hvtnas.errors import HvtnasError
from hvtnas.models import FeaturePyramid, zoo
from hvtnas.models.tokens import carrying_stages
from tests.conftest import tiny_config


# a branched model's pyramid is one level per branch: tests/test_branches.py checks those idioms
@pytest.mark.parametrize("name", [n for n in zoo.names() if zoo.get_config(n).branches is None])
def test_timm_idioms_on_every_zoo_model(name: str) -> None:
    model = build_model(name, num_classes=10, init_weights=False).eval()
    cfg = model.arch_config
    x = torch.randn(1, 3, 64, 64)
    strides = [f["reduction"] for f in model.feature_info]  # 4, 8, 16, 32; 16 for an isotropic model
    assert strides == cfg.stage_strides()
    with torch.inference_mode():
        logits = model(x)
        features = model.forward_features(x)
        assert features.shape == (1, model.num_features, 64 // strides[-1], 64 // strides[-1])
        # a model classifying from its class (or regional) tokens needs them beside the map (None for
        # a model whose last stage carries none)
        same, tokens = model.forward_features(x, return_tokens=True)
        torch.testing.assert_close(same, features)
        last = len(cfg.stages) - 1
        assert (tokens is not None) == (
            cfg.tokens is not None and carrying_stages(cfg.tokens, last + 1)[-1] == last
        )
        scales = model.head.scales
        if scales > 1:  # CoaT's head weighs the last levels: their maps and tokens, as lists
            levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
            features, tokens = [m for m, _ in levels[-scales:]], [t for _, t in levels[-scales:]]
            with pytest.raises(HvtnasError, match="weighs the last 3 pyramid levels"):
                model.forward_head(same, tokens=tokens[-1])
        torch.testing.assert_close(model.forward_head(features, tokens=tokens), logits)
        pooled = model.forward_head(features, pre_logits=True, tokens=tokens)
        assert pooled.shape == (1, model.head_hidden_size)  # num_features but for a head with a hidden layer
        features = same
        final, pyramid = model.forward_intermediates(x)
        torch.testing.assert_close(final, features)
        assert [f.shape[1] for f in pyramid] == [s.width for s in cfg.stages]
        assert [f.shape[2] for f in pyramid] == [64 // s for s in strides]
        assert [f["num_chs"] for f in model.feature_info] == [s.width for s in cfg.stages]
        if scales > 1:
            features, tokens = [m for m, _ in levels[-scales:]], [t for _, t in levels[-scales:]]
        model.reset_classifier(3)  # the trunk is unchanged: its features suffice
        head = model.forward_head(features, tokens=tokens)
        assert head.shape == (1, 3) and model.get_classifier().out_features == 3
        model.reset_classifier(0)
        assert model.forward_head(features, tokens=tokens).shape == (1, model.head_hidden_size)
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def _tiny(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_config(["window", "shifted_window"], **overrides)).eval()


def test_forward_intermediates_options() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        full = model.forward_intermediates(x, intermediates_only=True)
        assert [f.shape[1:] for f in full] == [(16, 8, 8), (32, 4, 4), (48, 2, 2), (64, 1, 1)]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        for ours, expected in zip(last_two, full[2:], strict=True):
            torch.testing.assert_close(ours, expected)
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        torch.testing.assert_close(picked[1], full[3])
        nhwc = model.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)
        torch.testing.assert_close(nhwc[0], full[1].permute(0, 2, 3, 1))
        final, early = model.forward_intermediates(x, indices=[1], stop_early=True)
        torch.testing.assert_close(final, full[1])  # stopped after stage 2
        torch.testing.assert_close(early[0], full[1])
        normed = model.forward_intermediates(x, indices=[3], norm=True, intermediates_only=True)[0]
        expected = model.head.norm(full[3].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(normed, expected)
    with pytest.raises(HvtnasError, match="out of range"):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(HvtnasError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


def test_prune_intermediate_layers_keeps_the_pyramid() -> None:
    model = _tiny()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        expected = model.forward_intermediates(x, intermediates_only=True)[:2]
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        got = model.forward_intermediates(x, intermediates_only=True)
    assert len(model.stages) == 2 and model.num_classes == 0 and len(model.arch_config.stages) == 2
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_reset_classifier_builds_a_fresh_head_and_updates_the_config() -> None:
    model = _tiny(head={"norm": "layernorm", "mlp_ratio": 2.0})
    model.reset_classifier(7)
    assert model.arch_config.input.num_classes == 7 and model.num_classes == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    model.reset_classifier(0)
    assert model.head.mlp is None and model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    with pytest.raises(HvtnasError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")


def test_features_only_returns_the_pyramid_without_a_head() -> None:
    backbone = build_model(tiny_config(["pooling"]), features_only=True, out_indices=(1, 3))
    assert isinstance(backbone, FeaturePyramid)
    assert backbone.feature_info.channels() == [32, 64] and backbone.feature_info.reduction() == [8, 32]
    assert not any(k.startswith("model.head.fc") for k in backbone.state_dict())
    maps = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 8, 8), (2, 64, 2, 2)]
    pruned = build_model(tiny_config(["pooling"]), features_only=True, out_indices=[0, 1])
    assert len(pruned.model.stages) == 2  # the stages after the last one asked for are gone
    with pytest.raises(HvtnasError, match="features_only"):
        build_model(tiny_config(["pooling"]), out_indices=[0])


def test_grad_checkpointing_gives_the_same_gradients_and_saves_activations() -> None:
    cfg = tiny_config(["attention"], drop_path_rate=0.2, stage={"depth": 2, "mixers": ["attention"]})
    x = torch.randn(4, 3, 32, 32)
    grads, saved = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        model.set_grad_checkpointing(checkpointing)
        saved.append(saved_activation_bytes(model, x))
        torch.manual_seed(1)  # the same drop-path masks in both runs (and in the recomputation)
        model(x).logsumexp(dim=1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)
    assert saved[1] < saved[0] / 3, saved  # only each block's input is kept
