"""Scaling a published family to a small task by width and depth only (the search-quality baselines)."""

from __future__ import annotations

import pytest
import torch

from hvtnas import build_model
from hvtnas.costs.flops import count_flops
from hvtnas.errors import HvtnasError
from hvtnas.models import scale_architecture, scale_to_flops, zoo

SMALL_INPUT = {"channels": 1, "resolution": 28, "num_classes": 10}


def _kinds(cfg):
    return [[m.kind for m in s.mixers] for s in cfg.stages]


def test_scaling_changes_only_width_depth_and_input():
    swin = zoo.get_config("swin_t")
    small = scale_architecture(swin, width_mult=0.25, depth_mult=1 / 3, input=SMALL_INPUT)
    assert [s.width for s in small.stages] == [24, 48, 96, 192]
    assert [s.depth for s in small.stages] == [1, 1, 2, 1]
    assert _kinds(small) == _kinds(swin)
    assert small.stem == swin.stem and small.pos_embed == swin.pos_embed and small.head == swin.head
    assert small.input.resolution == 28 and small.input.channels == 1
    # heads keep their count while they stay >= 8 channels wide
    assert [s.heads for s in small.stages] == [3, 6, 12, 24]
    assert [s.width // s.heads for s in small.stages] == [8, 8, 8, 8]
    tiny = scale_architecture(swin, width_mult=1 / 12, input=SMALL_INPUT)
    assert all(s.width % s.heads == 0 and s.width // s.heads >= 8 for s in tiny.stages)
    out = build_model(small)(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_spatial_reduction_follows_the_resolution():
    pvt = zoo.get_config("pvt_v2_b0")
    at_112 = scale_architecture(pvt, input={"channels": 3, "resolution": 112, "num_classes": 10})
    assert [s.mixers[0].sr_ratio for s in at_112.stages] == [4, 2, 1, 1]
    at_28 = scale_architecture(pvt, input=SMALL_INPUT)
    assert [s.mixers[0].sr_ratio for s in at_28.stages] == [1, 1, 1, 1]
    same = scale_architecture(pvt)  # nothing asked, nothing changed but the name
    assert same.model_dump(exclude={"name"}) == pvt.model_dump(exclude={"name"})


@pytest.mark.parametrize("family", ["poolformer_s12", "caformer_s18"])
def test_scale_to_flops_meets_the_budget(family):
    target = 1.5e6
    scaled = scale_to_flops(zoo.get_config(family), target, depth_mult=1 / 3, input=SMALL_INPUT)
    macs = count_flops(build_model(scaled), (28, 28), 1).total
    assert abs(macs / target - 1) < 0.15
    assert _kinds(scaled) == _kinds(zoo.get_config(family))


def test_bad_multipliers_are_refused():
    with pytest.raises(HvtnasError, match="must be positive"):
        scale_architecture(zoo.get_config("swin_t"), width_mult=0)
    with pytest.raises(HvtnasError, match="must be positive"):
        scale_to_flops(zoo.get_config("swin_t"), -1)


def test_a_conv_stems_own_widths_scale_with_the_stages() -> None:
    scaled = scale_architecture(zoo.get_config("shuffle_t"), width_mult=0.5)
    assert scaled.stem.widths == [16, 48] and [s.width for s in scaled.stages] == [48, 96, 192, 384]
