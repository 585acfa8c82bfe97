from __future__ import annotations

import os
from typing import Any

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # each of pytest-xdist's workers has a core of its own: two intra-op threads per worker on a
    # 2-core machine would only contend
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_config(mixers: list[Any], **overrides: Any) -> dict[str, Any]:
    """A 4-stage model small enough for 2 CPU cores (widths 16..64, one block per stage
    unless the pattern has more mixers), as a plain dict the tests can tweak."""
    widths = [16, 32, 48, 64]
    stage_overrides = overrides.pop("stage", {})
    cfg: dict[str, Any] = {
        "name": "tiny",
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "patch", "norm": "layernorm"},
        "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
        "stages": [
            {"depth": len(mixers), "width": w, "heads": 2, "mixers": mixers, **stage_overrides}
            for w in widths
        ],
    }
    cfg.update(overrides)
    return cfg


def tiny_search_space(stage2_depth: Any = 1, **experiment: Any) -> dict[str, Any]:
    """A search space of 4-8 tiny architectures on digits that train for one epoch in about a
    second: what the search, dashboard and scale-out tests run. ``experiment`` keys override."""
    return {
        "input": {"channels": 1, "resolution": 16, "num_classes": 10},
        "stem": {"kind": "patch", "norm": "layernorm"},
        "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
        "stages": [
            {
                "depth": 1,
                "width": {"choice": [8, 16]},
                "heads": 2,
                "mixers": {"choice": [["pooling"], ["window"]]},
            },
            {"depth": stage2_depth, "width": 16, "heads": 2, "mixers": ["pooling"]},
        ],
        "experiment": {
            "objectives": ["accuracy", "params"],
            "data": {"name": "digits"},
            "train": {"epochs": 1, "batch_size": 64, "threads": 1, "augment": {"hflip": False}},
            "sampler": {"name": "random", "seed": 0},
            **experiment,
        },
    }
