from __future__ import annotations

from typing import Any

import pytest
import torch


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
