"""Shared pieces of the training tests: a small architecture and single-threaded torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch


def small_arch(mixers: list[Any] | None = None) -> dict[str, Any]:
    """Two stages (strides 4, 8): a few thousand parameters, milliseconds per step at 16x16."""
    mixers = mixers or ["attention"]
    return {
        "name": "small",
        "input": {"channels": 1, "resolution": 16, "num_classes": 10},
        "stem": {"kind": "patch", "norm": "layernorm"},
        "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
        "stages": [
            {"depth": 1, "width": 16, "heads": 2, "mixers": mixers},
            {"depth": 1, "width": 32, "heads": 2, "mixers": mixers},
        ],
    }


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: a second OpenMP thread mostly waits for its peer
    (steps measured 10-100x slower under load), so these tests run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
