"""The zoo reproduces the official implementations: exact parameter counts, working pyramids."""

from __future__ import annotations

import pytest
import torch

from hvtnas import build_model
from hvtnas.models import zoo
from hvtnas.summary import count_params

# Exact parameter counts of the official PyTorch implementations (1000 classes). Swin-T, PVTv2-b0
# and PoolFormer-S12 are given in ../shared/reference/published.md; the others were counted on
# the official code (timm's ports of the same models give the same numbers; ShiftViT from
# microsoft/SPACH shiftvit_r2_tiny, IdentityFormer from sail-sg/metaformer identityformer_s12).
OFFICIAL_PARAMS = {
    "swin_t": 28_288_354,
    "swin_s": 49_606_258,
    "pvt_v2_b0": 3_666_760,
    "pvt_v2_b1": 14_009_000,
    "pvt_v2_b2": 25_362_856,
    "poolformer_s12": 11_915_176,
    "poolformer_s24": 21_388_968,
    "convformer_s18": 26_774_448,
    "caformer_s18": 26_341_656,
    "identityformer_s12": 11_891_712,
    "twins_svt_s": 24_060_776,
    "twins_pcpvt_s": 24_106_216,
    "shiftvit_t": 28_566_664,
}


def test_the_zoo_has_the_required_models() -> None:
    assert set(OFFICIAL_PARAMS) <= set(zoo.names())
    assert set(zoo.PUBLISHED) == set(zoo.names())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_zoo_parameter_count_is_exact(name: str) -> None:
    model = build_model(name)
    assert count_params(model) == OFFICIAL_PARAMS[name]
    # and agrees with the figure the paper reports (rounded to 2-3 significant digits there)
    assert count_params(model) / 1e6 == pytest.approx(zoo.PUBLISHED[name].params_m, rel=0.02)


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_zoo_models_run_and_give_a_pyramid(name: str) -> None:
    model = build_model(name, num_classes=10).eval()
    cfg = model.arch_config
    with torch.inference_mode():
        pyramid = model.forward_features(torch.randn(1, 3, 64, 64))
        logits = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in pyramid] == [s.width for s in cfg.stages]
    assert [f.shape[2] for f in pyramid] == [16, 8, 4, 2]
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_swin_last_stage_fits_one_window_so_it_does_not_shift() -> None:
    model = build_model("swin_t")
    last = model.stages[3].blocks[1].mixer
    assert type(last).__name__ == "ShiftedWindowAttention"
    assert last.geometry(7, 7) == (7, 7, 0, 0)
    assert last.relative_position_bias_table.shape == (13 * 13, 24)


def test_get_config_returns_independent_copies() -> None:
    a = zoo.get_config("swin_t")
    a.stages[0].depth = 99
    assert zoo.get_config("swin_t").stages[0].depth == 2
