"""CPU inference kernels: oneDNN's matrix product, alone or fused with the activation after it.

Two gains, both what Inductor's CPU backend emits:

- **The matrix product itself.** ``F.linear`` on CPU calls MKL's ``sgemm``, which on an AMD EPYC
  with AVX-512 runs at the speed of AVX2 kernels (89 GFLOP/s on one thread for DeiT-S's MLP at
  batch 64), while oneDNN's JIT kernels use AVX-512 whatever the CPU's vendor (160 GFLOP/s): one
  thread multiplies a ViT's matrices in 0.44-0.57x of MKL's time there. Every linear layer of the
  generated models is a ``Linear`` (an ``nn.Linear``: same parameters, state dict, init), which
  takes the faster of the two for its shape.
- **The activation after it.** On CPU, an activation after a linear layer is a separate pass over
  the largest tensor of the block (the FFN's hidden layer, 4-8x the width): 15-30% of a
  MetaFormer's inference time. oneDNN applies it inside the matrix product instead (a "post-op"),
  and a StarReLU becomes a fused ReLU plus one ``addcmul``.

The fused path is taken only where it computes the same function (tested against the plain ops and
against timm's models): in ``torch.inference_mode`` on CPU float32 tensors, outside tracing,
``torch.compile`` (which fuses by itself) and Python dispatch modes (fvcore's and torch's FLOP
counters must see the plain ops), and once a start-up check has found the private oneDNN ops and
seen them agree with the plain ones. Everywhere else, training included, the plain ops run.

Whether oneDNN is also *faster* depends on the CPU and the shape: on an Intel Xeon, fusing a ViT's
MLP at batch 64 (12,608 rows) won and at batch 1 (197 rows) lost; on an AMD EPYC with AVX2 only,
the fused linear + GELU made DeiT-S 13% slower while ConvFormer still gained from it. So each shape
is timed both ways the first time it is met in a process (interleaved, best of at least
``TUNING_RUNS``; what ``torch.backends.cudnn.benchmark`` does for convolutions) and the faster
way is kept, oneDNN only if it is faster by ``ONEDNN_MARGIN``. ``HVTNAS_FUSED_KERNELS`` in the
environment: ``auto`` (the default), ``1`` (always oneDNN where safe, no timing) or ``0`` (never:
to compare, or to rule them out).
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
    ("none", ""): lambda y: y,
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


TUNING_RUNS = 3  # timings of each way at least, the first time a shape is met ...
TUNING_SECONDS = 2e-3  # ... and more, up to TUNING_MAX_RUNS, until each way has run this long in all:
TUNING_MAX_RUNS = 20  # a small product (0.05-0.5 ms) is timed often enough to see a 5% difference
# oneDNN must beat the plain ops by this much to be taken: on a tie the plain ops (what PyTorch
# runs anyway) win, so that timing noise cannot trade them for a kernel no faster on this CPU
ONEDNN_MARGIN = 0.03
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
    spent = {True: 0.0, False: 0.0}
    for runs in range(1, TUNING_MAX_RUNS + 1):  # interleaved: a slow spell hits both ways alike
        for use_fused, run in ((True, fused), (False, plain)):
            started = time.perf_counter()
            out = run()
            elapsed = time.perf_counter() - started
            best[use_fused], spent[use_fused] = min(best[use_fused], elapsed), spent[use_fused] + elapsed
        if runs >= TUNING_RUNS and min(spent.values()) >= TUNING_SECONDS:
            break
    _fused_is_faster[key] = best[True] < best[False] * (1 - ONEDNN_MARGIN)
    log.debug("fused %s: %.3f ms, plain: %.3f ms", key, best[True] * 1e3, best[False] * 1e3)
    return out


def _linear_by_faster(
    x: Tensor,
    layer: nn.Linear,
    post_op: tuple[str, str],
    finish: Callable[[Tensor], Tensor],
    plain: Callable[[], Tensor],
) -> Tensor:
    """``plain()``, or oneDNN's linear with ``post_op`` followed by ``finish`` (the same function),
    whichever is faster for this shape here; ``plain()`` wherever oneDNN may not run."""
    if x.dim() < 2 or x.numel() == 0 or not _fusable(x) or not _onednn_works("linear", *post_op):
        return plain()
    attr, algorithm = post_op

    def onednn() -> Tensor:
        return finish(
            torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [None], algorithm)
        )

    rows = x.numel() // x.shape[-1]
    key = ("linear", rows, *layer.weight.shape, layer.bias is None, *post_op)
    return _faster_of(key, onednn, plain)


def linear_act(x: Tensor, layer: nn.Linear, act: nn.Module) -> Tensor:
    """``act(layer(x))``, as one kernel where that is safe and faster (see the module docstring)."""
    post_op = _post_op(act)
    if post_op is None:
        return act(layer(x))
    return _linear_by_faster(x, layer, post_op, functools.partial(_finish, act), lambda: act(layer(x)))


def linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)`` by MKL's or oneDNN's matrix product, whichever is faster for this shape here."""
    return _linear_by_faster(
        x, layer, ("none", ""), lambda y: y, lambda: F.linear(x, layer.weight, layer.bias)
    )


class Linear(nn.Linear):
    """``nn.Linear`` (the same parameters, state dict and initialisation) whose CPU inference runs
    the faster of MKL's and oneDNN's matrix product for each shape (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self)


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
