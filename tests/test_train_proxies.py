"""Zero-cost proxies: defined, deterministic, side-effect free, and the baselines exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hvtnas.costs.flops import count_flops as count_model_flops
from hvtnas.errors import HvtnasError
from hvtnas.models import build_model
from hvtnas.train.data import DataConfig, load_dataset
from hvtnas.train.proxies import (
    ZERO_COST_PROXIES,
    count_flops,
    naswot,
    score_model,
    synflow,
    zero_cost_scores,
)
from tests.train_helpers import one_thread, small_arch

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))


@pytest.mark.parametrize("mixers", [["attention"], ["pooling"], ["window", "shifted_window"]])
def test_every_proxy_scores_a_model_without_changing_it(mixers: list[str], batch: tuple) -> None:
    model = build_model(small_arch(mixers))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = score_model(model, *batch)
    assert set(scores) == set(ZERO_COST_PROXIES)
    assert all(math.isfinite(v) for v in scores.values()), scores
    assert scores["params"] == sum(p.numel() for p in model.parameters())
    assert scores["grad_norm"] > 0 and scores["snip"] > 0 and scores["synflow"] > 0 and scores["flops"] > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # worked on copies
    assert all(p.grad is None for p in model.parameters())
    assert score_model(model, *batch) == scores  # deterministic


def test_zero_cost_scores_of_an_architecture_on_a_dataset() -> None:
    data = load_dataset(DataConfig(name="synthetic", num_samples=80, image_size=16, channels=1))
    scores = zero_cost_scores(small_arch(["pooling"]), data, names=["params", "naswot"], batch_size=8)
    assert set(scores) == {"params", "naswot"} and math.isfinite(scores["naswot"])
    assert scores == zero_cost_scores(small_arch(["pooling"]), data, names=["params", "naswot"], batch_size=8)
    # the classifier is built for the data's 10 classes and 1 channel
    assert scores["params"] == sum(p.numel() for p in build_model(small_arch(["pooling"])).parameters())


def test_flop_baseline_counts_multiply_adds_of_a_known_network() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    # conv: 8*8 outputs x 4 channels x 9 taps; linear: 256 x 10
    assert count_flops(net, torch.randn(3, 1, 8, 8)) == 8 * 8 * 4 * 9 + 256 * 10


def test_flop_baseline_equals_the_cost_count_of_a_built_model() -> None:
    model = build_model(small_arch(["attention", "pooling"]))
    expected = count_model_flops(model, (16, 16), in_channels=1, method="fvcore").total
    assert count_flops(model, torch.randn(2, 1, 16, 16)) == expected
    assert model.training  # left in the mode it came in


def test_naswot_rewards_networks_that_separate_the_inputs() -> None:
    x = torch.randn(8, 4)
    wide = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    dead = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.no_grad():
        dead[0].weight.zero_()
        dead[0].bias.fill_(-1.0)  # every unit off for every input: all codes equal, kernel singular
    assert naswot(wide, x, None) > naswot(dead, x, None)
    assert math.isnan(naswot(nn.Linear(4, 2), x, None))  # no activation layer: undefined


def test_synflow_of_one_linear_layer_is_the_sum_of_absolute_parameters() -> None:
    # R = sum(|W| 1 + |b|): dR/dW_ij = 1 on the all-ones input, so sum |theta * grad| = sum |theta|
    layer = nn.Linear(4, 3)
    expected = layer.weight.abs().sum().item() + layer.bias.abs().sum().item()
    assert synflow(layer, torch.randn(5, 4), None) == pytest.approx(expected, rel=1e-9)
    assert layer.weight.grad is None and (layer.weight < 0).any()  # the original is untouched


def test_unknown_proxy_names_the_known_ones(batch: tuple) -> None:
    with pytest.raises(HvtnasError, match="unknown zero-cost proxy bogus; known: synflow, naswot"):
        score_model(build_model(small_arch()), *batch, names=["bogus"])
