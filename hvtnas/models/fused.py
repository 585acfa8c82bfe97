"""Fused CPU inference kernels: a linear or convolution and its activation as one oneDNN kernel.

On CPU, an activation after a linear layer is a separate pass over the largest tensor of the block
(the FFN's hidden layer, 4-8x the width): 15-30% of a MetaFormer's inference time. oneDNN applies
it inside the matrix product instead (a "post-op", what Inductor's CPU backend emits), and a
StarReLU becomes a fused ReLU plus one ``addcmul``.

The fused path is taken only where it computes the same function (tested against the plain ops and
against timm's models): in ``torch.inference_mode`` on CPU float32 tensors, outside tracing,
``torch.compile`` (which fuses by itself) and Python dispatch modes (fvcore's and torch's FLOP
counters must see the plain ops), and once a start-up check has found the private oneDNN ops and
seen them agree with the plain ones. Everywhere else, training included, the plain ops run.

Whether the fused kernel is also *faster* depends on the CPU and the shape: oneDNN's matrix product
is not MKL's. On an Intel Xeon, fusing a ViT's MLP at batch 64 (12,608 rows) won; on an AMD EPYC
(AVX2) the same fused linear + GELU made DeiT-S 13% slower, while ConvFormer still gained from it.
So each shape is timed both ways the first time it is met in a process (interleaved, best of
``TUNING_RUNS``; what ``torch.backends.cudnn.benchmark`` does for convolutions) and the faster
way is kept. ``HVTNAS_FUSED_KERNELS`` in the environment: ``auto`` (the default), ``1`` (always
fused where safe, no timing) or ``0`` (never: to compare, or to rule them out).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from hvtnas.models.layers import StarReLU

log = logging.getLogger(__name__)


def _post_op(act: nn.Module) -> tuple[str, str] | None:
    """The oneDNN post-op (attr, algorithm) of an activation; StarReLU is ReLU + one addcmul."""
    if isinstance(act, nn.GELU):
        return ("gelu", "tanh" if act.approximate == "tanh" else "none")
    if isinstance(act, nn.ReLU | StarReLU):
        return ("relu", "")
    if isinstance(act, nn.SiLU):
        return ("swish", "")
    return None


_PLAIN_ACTS = {
    ("gelu", "none"): lambda y: F.gelu(y),
    ("gelu", "tanh"): lambda y: F.gelu(y, approximate="tanh"),
    ("relu", ""): F.relu,
    ("swish", ""): F.silu,
}


def _fusion_mode() -> str:
    return os.environ.get("HVTNAS_FUSED_KERNELS", "auto")


@functools.cache
def _onednn_works(kind: str, attr: str, algorithm: str) -> bool:
    """This build has the fused ``kind`` kernel with this post-op, and it agrees with the plain
    ops (checked once per combination, on small random tensors)."""
    if _fusion_mode() == "0":
        return False
    act = _PLAIN_ACTS[attr, algorithm]
    rand = functools.partial(torch.randn, generator=torch.Generator().manual_seed(0))  # not the global RNG
    try:
        ops = torch.ops.mkldnn
        with torch.inference_mode():
            if kind == "linear":
                x, w, b = rand(6, 8), rand(16, 8), rand(16)
                fused = ops._linear_pointwise(x, w, b, attr, [None], algorithm)
                plain = act(F.linear(x, w, b))
            else:
                x = rand(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
                w, b = rand(16, 1, 3, 3), rand(16)
                fused = ops._convolution_pointwise(
                    x, w, b, [1, 1], [1, 1], [1, 1], 16, attr, [None], algorithm
                )
                plain = act(F.conv2d(x, w, b, padding=1, groups=16))
            agrees = fused.shape == plain.shape and torch.allclose(fused, plain, atol=1e-5)
    except Exception as err:  # missing op, other signature in this torch build, no oneDNN
        log.debug("fused oneDNN %s + %s unavailable: %s", kind, attr, err)
        return False
    if not agrees:
        log.warning(
            "fused oneDNN %s + %s disagrees with the plain ops in this torch build: not used", kind, attr
        )
    return agrees


def _fusable(x: Tensor) -> bool:
    return (
        torch.is_inference_mode_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None
    )


def _finish(act: nn.Module, y: Tensor) -> Tensor:
    """The rest of an activation whose ReLU part was fused: StarReLU's ``s * y**2 + b`` in one pass."""
    if isinstance(act, StarReLU):
        return torch.addcmul(act.bias, y, y, value=act.scale.item())
    return y


# Below this many rows (tokens times batch) oneDNN's fused linear is no faster than MKL's matrix
# product plus a separate activation, and often slower (measured on Intel Xeon, one thread: 0.95-1.9x
# the plain ops' time at 1-196 rows, 0.94-1.09x at 784, 0.66-0.88x from 3,136 on); a ViT's 197
# tokens at batch 1 ran 10-20% slower through it. Not even timed there.
FUSED_LINEAR_MIN_ROWS = 2048
TUNING_RUNS = 3  # timings of each way, the first time a shape is met
_fused_is_faster: dict[tuple[Any, ...], bool] = {}  # per shape, post-op and thread count


def _faster_of(key: tuple[Any, ...], fused: Callable[[], Tensor], plain: Callable[[], Tensor]) -> Tensor:
    """The output of ``fused`` or ``plain`` (the same function), whichever runs faster here."""
    if _fusion_mode() == "1":
        return fused()
    key = (*key, torch.get_num_threads())
    choice = _fused_is_faster.get(key)
    if choice is not None:
        return fused() if choice else plain()
    best = {True: math.inf, False: math.inf}
    for _ in range(TUNING_RUNS):  # interleaved: a slow spell of a shared machine hits both ways
        for use_fused, run in ((True, fused), (False, plain)):
            started = time.perf_counter()
            out = run()
            best[use_fused] = min(best[use_fused], time.perf_counter() - started)
    _fused_is_faster[key] = best[True] < best[False]
    log.debug("fused %s: %.3f ms, plain: %.3f ms", key, best[True] * 1e3, best[False] * 1e3)
    return out


def linear_act(x: Tensor, linear: nn.Linear, act: nn.Module) -> Tensor:
    """``act(linear(x))``, as one kernel where that is safe and faster (see the module docstring)."""
    post_op = _post_op(act)
    if (
        post_op is None
        or x.numel() < FUSED_LINEAR_MIN_ROWS * x.shape[-1]
        or not _fusable(x)
        or not _onednn_works("linear", *post_op)
    ):
        return act(linear(x))
    attr, algorithm = post_op

    def fused() -> Tensor:
        y = torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, attr, [None], algorithm)
        return _finish(act, y)

    rows = x.numel() // x.shape[-1]
    key = ("linear", rows, *linear.weight.shape, linear.bias is None, *post_op)
    return _faster_of(key, fused, lambda: act(linear(x)))


def conv_act(x: Tensor, conv: nn.Conv2d, act: nn.Module) -> Tensor:
    """``act(conv(x))`` for an NCHW (view) input, as one kernel where that is safe and faster."""
    post_op = _post_op(act)
    if (
        post_op is None
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or not _fusable(x)
        or not _onednn_works("conv", *post_op)
    ):
        return act(conv(x))
    attr, algorithm = post_op

    def fused() -> Tensor:
        y = torch.ops.mkldnn._convolution_pointwise(
            x,
            conv.weight,
            conv.bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            attr,
            [None],
            algorithm,
        )
        return _finish(act, y)

    layout = x.is_contiguous(memory_format=torch.channels_last)
    key = ("conv", *x.shape, layout, *conv.weight.shape, conv.stride, conv.padding, conv.groups, *post_op)
    return _faster_of(key, fused, lambda: act(conv(x)))
