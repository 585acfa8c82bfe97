"""FLOPs without arithmetic: fvcore's count, read from the calls a forward pass makes on the meta device.

fvcore traces a real forward pass (every convolution and matrix product computed) and reads the
operators of the traced graph. FLOPs depend only on the shapes, so this counter runs the forward
pass on ``meta`` tensors (shapes, no data, no arithmetic) and intercepts the calls at the level
fvcore sees them, the torch functions called from Python (``F.linear``, ``torch.matmul``,
``F.layer_norm``, ...) through a ``TorchFunctionMode``: one handle per operator, written from
fvcore's (``fvcore/nn/jit_handles.py``) and hvtnas's (``hvtnas/costs/flops.py``) jit handles, so the
two counts agree exactly (tests: every registered mixer, every zoo model, at 224 and 1280x800).

Works on any ``nn.Module``: its parameters and buffers are replaced, for the pass, by meta tensors
of the same shapes (``torch.func.functional_call``); the module's own tensors are not touched.
Counting swin_s at 1280x800 takes ~0.1 s here against ~10 s through fvcore.

Every call is counted once: torch switches a ``TorchFunctionMode`` off while its
``__torch_function__`` runs, so what a handled function (``F.layer_norm``, ``F.interpolate``) calls
inside is not seen, as fvcore sees one traced operator. The other side of that: a torch function
written in Python that fvcore's trace would see through (say ``F.multi_head_attention_forward``)
would be one uncounted call here. Every function counted as 0 is recorded in ``skipped``, and the
tests check that no matrix-product or convolution function is among them, for every mixer, and that
the counts equal fvcore's.

Speed: on meta tensors torch still runs a meta kernel per call, and many are Python decompositions
(0.5-4 ms each; the first one in a process imports ``torch._dynamo``, 1-3 s). For the functions a
MetaFormer calls most (element-wise ops, norms, linear, convolution, matmul, attention, reductions,
``cat``/``stack``, ``interpolate``) the counter makes the result itself from the arguments' shapes
(``_SHAPE_ONLY``; tested against torch's own results). Only public torch APIs are used
(``torch.overrides.TorchFunctionMode``, ``torch.func.functional_call``).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from math import prod
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

Handle = Callable[[tuple, dict, Any], int]


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _shape(t: Any) -> list[int]:
    return list(t.shape)


def _linear(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: linear_flop_jit
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    return x.numel() * w.shape[0]


def _conv(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: conv_flop_jit (not transposed)
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    batch = x.shape[0] if x.dim() == w.dim() else 1  # unbatched input: (C, H, W)
    return batch * w.numel() * prod(out.shape[-(w.dim() - 2) :])


def _conv_transpose(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: transposed, input's spatial size
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    batch = x.shape[0] if x.dim() == w.dim() else 1
    return batch * w.numel() * prod(x.shape[-(w.dim() - 2) :])


def _matmul(args: tuple, kwargs: dict, out: Any) -> int:  # hvtnas's matmul_flop_jit
    a = _arg(args, kwargs, 0, "input")
    return out.numel() * a.shape[-1]


def _mm(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: matmul_flop_jit on aten::mm
    a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "mat2")
    return a.numel() * b.shape[-1]


def _addmm(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: addmm_flop_jit
    a, b = _arg(args, kwargs, 1, "mat1"), _arg(args, kwargs, 2, "mat2")
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: bmm_flop_jit
    a, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "mat2")
    n, c, t = a.shape
    return n * c * t * b.shape[-1]


def _einsum(args: tuple, kwargs: dict, out: Any) -> int:  # hvtnas's exact_einsum_flop_jit
    equation, *operands = args
    if len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = list(operands[0])
    equation = equation.replace(" ", "")
    shapes = [_shape(t) for t in operands]
    inputs = equation.split("->")[0].split(",")
    if len(inputs) == 2 and "." not in equation:
        sizes: dict[str, int] = {}
        for letters, shape in zip(inputs, shapes, strict=True):
            sizes.update(zip(letters, shape, strict=True))
        return prod(sizes.values())
    # fvcore's generic einsum handle: numpy's optimal-path estimate, halved (a float in fvcore)
    path = np.einsum_path(equation, *(np.zeros(s) for s in shapes), optimize="optimal")[1]
    for line in path.split("\n"):
        if "optimized flop" in line.lower():
            return int(np.floor(float(line.split(":")[-1]) / 2))
    raise NotImplementedError(f"einsum {equation!r}")


def _sdpa(args: tuple, kwargs: dict, out: Any) -> int:  # hvtnas's sdpa_flop_jit
    q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    *batch, length, embed = q.shape
    return prod(batch) * length * k.shape[-2] * (embed + v.shape[-1])


def _norm(weight_index: int, weight_name: str) -> Handle:  # fvcore: norm_flop_counter
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        x = _arg(args, kwargs, 0, "input")
        return x.numel() * (5 if _arg(args, kwargs, weight_index, weight_name) is not None else 4)

    return count


def _batch_norm(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: batchnorm_flop_jit
    x = _arg(args, kwargs, 0, "input")
    affine = _arg(args, kwargs, 3, "weight") is not None
    if _arg(args, kwargs, 5, "training", False):
        return x.numel() * (5 if affine else 4)
    return x.numel() * (2 if affine else 1)


def _instance_norm(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: norm_flop_counter(1)
    # aten::instance_norm's input 1 is the weight; F.instance_norm's argument 1 the running mean
    x = _arg(args, kwargs, 0, "input")
    return x.numel() * (5 if _arg(args, kwargs, 3, "weight") is not None else 4)


# taps per output element of the upsample operators fvcore (and hvtnas, for linear) counts
_INTERPOLATION_TAPS = {"nearest": 1, "bilinear": 4, "linear": 2}


def _interpolate(args: tuple, kwargs: dict, out: Any) -> int:
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    x = _arg(args, kwargs, 0, "input")
    if mode == "nearest" and x.dim() != 4:  # fvcore counts upsample_nearest2d only
        return 0
    return out.numel() * _INTERPOLATION_TAPS.get(mode, 0)


def _adaptive_avg_pool2d(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: input numel
    return _arg(args, kwargs, 0, "input").numel()


def _grid_sample(args: tuple, kwargs: dict, out: Any) -> int:  # fvcore: 4 per output element
    return out.numel() * 4


# name in the report (fvcore's operator name without "aten::") -> functions
_HANDLES: dict[str, tuple[list[Callable], Handle]] = {
    "linear": ([F.linear], _linear),
    "conv": (
        [F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d, torch.convolution],
        _conv,
    ),
    "conv_transpose": ([F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d], _conv_transpose),
    "matmul": ([torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__], _matmul),
    "mm": ([torch.mm, torch.Tensor.mm], _mm),
    "addmm": ([torch.addmm, torch.Tensor.addmm], _addmm),
    "bmm": ([torch.bmm, torch.Tensor.bmm], _bmm),
    "einsum": ([torch.einsum], _einsum),
    "scaled_dot_product_attention": ([F.scaled_dot_product_attention], _sdpa),
    "layer_norm": ([F.layer_norm], _norm(2, "weight")),
    "group_norm": ([F.group_norm], _norm(2, "weight")),
    "batch_norm": ([F.batch_norm], _batch_norm),
    "instance_norm": ([F.instance_norm], _instance_norm),
    "upsample": ([F.interpolate], _interpolate),
    "adaptive_avg_pool2d": ([F.adaptive_avg_pool2d], _adaptive_avg_pool2d),
    "grid_sampler": ([F.grid_sample], _grid_sample),
}
HANDLES: dict[Callable, tuple[str, Handle]] = {
    fn: (name, handle) for name, (fns, handle) in _HANDLES.items() for fn in fns
}
_OPERATOR_NAMES = {"upsample": None, "conv_transpose": "conv"}  # fvcore's names: upsample_*, conv


def _operator_name(name: str, args: tuple, kwargs: dict) -> str:
    if name == "upsample":
        mode = _arg(args, kwargs, 3, "mode", "nearest")
        x = _arg(args, kwargs, 0, "input")
        suffix = {"nearest": f"nearest{x.dim() - 2}d", "bilinear": "bilinear2d", "linear": "linear1d"}
        return "upsample_" + suffix.get(mode, mode)
    return _OPERATOR_NAMES.get(name) or name


# tensors made inside a forward pass without a device (masks, position indices, ...) are made on the
# meta device too: they have the shapes of real ones, and nothing downstream computes on them. A
# shape that depends on their values (a boolean-mask index) cannot be computed on meta tensors and
# raises: ``count_calls`` then counts again with those tensors made where the module makes them
_FACTORIES = frozenset(
    {torch.arange, torch.zeros, torch.ones, torch.empty, torch.full, torch.linspace, torch.eye}
)


def _broadcast(*shapes: Any) -> list[int]:
    """Broadcast shapes (``torch.broadcast_shapes`` imports torch's symbolic-shape machinery)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for i, n in enumerate(shape, start=rank - len(shape)):
            if n != 1:
                if out[i] not in (1, n):
                    raise _NotShapeOnlyError  # let torch raise its own error
                out[i] = n
    return out


def _empty(shape: Any, like: Tensor) -> Tensor:
    """A contiguous meta tensor (``empty_like`` of a strided meta tensor runs a Python meta kernel)."""
    return torch.empty(shape, dtype=like.dtype, device="meta")


def _like_input(args: tuple, kwargs: dict) -> Tensor:
    return _empty(_arg(args, kwargs, 0, "input").shape, _arg(args, kwargs, 0, "input"))


def _like_float_input(args: tuple, kwargs: dict) -> Tensor:  # unary element-wise functions
    x = _arg(args, kwargs, 0, "input")
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point or kwargs.get("dtype") is not None:
        raise _NotShapeOnlyError
    return _empty(x.shape, x)


_UNARY = ("rsqrt", "sqrt", "exp", "log", "tanh", "sigmoid", "relu", "erf", "reciprocal", "clamp", "clamp_min",
          "clamp_max", "sin", "cos", "sign", "log1p", "log2", "expm1", "floor", "ceil", "round")  # fmt: skip
_UNARY_F = (F.normalize, F.softplus, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.mish, F.softmax)


def _conv_out(args: tuple, kwargs: dict) -> Tensor:  # F.conv1d/2d/3d: batched input, numeric padding
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    n = w.dim() - 2
    if x.dim() != w.dim():
        raise _NotShapeOnlyError
    stride, padding, dilation = (
        _arg(args, kwargs, i, name, default)
        for i, name, default in ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1))
    )
    if isinstance(padding, str):
        raise _NotShapeOnlyError
    stride, padding, dilation = (
        [v] * n if isinstance(v, int) else list(v) for v in (stride, padding, dilation)
    )
    spatial = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation, strict=True)
    ]
    return torch.empty((x.shape[0], w.shape[0], *spatial), dtype=x.dtype, device="meta")


def _linear_out(args: tuple, kwargs: dict) -> Tensor:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    return _empty((*x.shape[:-1], w.shape[0]), x)


def _sdpa_out(args: tuple, kwargs: dict) -> Tensor:
    q, v = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 2, "value")
    return _empty((*q.shape[:-1], v.shape[-1]), q)


def _elementwise(result_dtype: Callable[[list[Any]], torch.dtype]) -> Callable[[tuple, dict], Tensor]:
    def out(args: tuple, kwargs: dict) -> Tensor:
        operands = list(args[:2])
        if not all(isinstance(a, Tensor | int | float | bool) for a in operands):
            raise _NotShapeOnlyError
        tensors = [a for a in operands if isinstance(a, Tensor)]
        if not tensors:
            raise _NotShapeOnlyError
        shape = _broadcast(*(t.shape for t in tensors))
        return torch.empty(shape, dtype=result_dtype(operands), device="meta")

    return out


def _promoted(operands: list[Any]) -> torch.dtype:
    return operands[0].dtype if len(operands) == 1 else torch.result_type(*operands)


def _divided(operands: list[Any]) -> torch.dtype:
    dtype = _promoted(operands)
    return dtype if dtype.is_floating_point or dtype.is_complex else torch.get_default_dtype()


def _compared(operands: list[Any]) -> torch.dtype:
    return torch.bool


def _joined(args: tuple, kwargs: dict, new_dim: bool) -> Tensor:
    tensors = list(_arg(args, kwargs, 0, "tensors"))
    dim = _arg(args, kwargs, 1, "dim", 0)
    first = tensors[0]
    if any(t.dtype != first.dtype or t.dim() != first.dim() for t in tensors):
        raise _NotShapeOnlyError
    rank = first.dim() + new_dim
    dim = dim % rank
    shape = list(first.shape)
    if new_dim:
        shape.insert(dim, len(tensors))
    else:
        shape[dim] = sum(t.shape[dim] for t in tensors)
    return torch.empty(shape, dtype=first.dtype, device="meta")


class _NotShapeOnlyError(Exception):
    """The arguments are outside what a shape-only handler covers: run the real function."""


def _interpolated(args: tuple, kwargs: dict) -> Tensor:
    x = _arg(args, kwargs, 0, "input")
    size, scale = _arg(args, kwargs, 1, "size"), _arg(args, kwargs, 2, "scale_factor")
    spatial = x.dim() - 2
    if size is not None:
        out = [size] * spatial if isinstance(size, int) else list(size)
    elif scale is not None and not _arg(args, kwargs, 5, "recompute_scale_factor"):
        scales = [scale] * spatial if isinstance(scale, int | float) else list(scale)
        out = [int(n * float(f)) for n, f in zip(x.shape[2:], scales, strict=True)]  # floor, as torch
    else:
        raise _NotShapeOnlyError
    return torch.empty((*x.shape[:2], *out), dtype=x.dtype, device="meta")


def _arange(args: tuple, kwargs: dict) -> Tensor:
    if kwargs.get("device") not in ("meta", torch.device("meta")) or not all(
        isinstance(a, int | float) for a in args
    ):
        raise _NotShapeOnlyError
    start, end, step = (0, args[0], 1) if len(args) == 1 else (*args, 1)[:3]
    integral = all(isinstance(a, int) for a in (start, end, step))
    dtype = kwargs.get("dtype") or (torch.int64 if integral else torch.get_default_dtype())
    return torch.empty(max(0, math.ceil((end - start) / step)), dtype=dtype, device="meta")


def _matmul_out(args: tuple, kwargs: dict) -> Tensor:  # matmul's shape rules (bmm: both 3-D)
    a, b = args[0], args[1] if len(args) > 1 else next(iter(kwargs.values()))
    if a.dtype != b.dtype or a.dim() < 1 or b.dim() < 1 or a.dim() + b.dim() < 3:
        raise _NotShapeOnlyError
    if b.dim() == 1:  # matrix-vector
        if a.shape[-1] != b.shape[0]:
            raise _NotShapeOnlyError
        return torch.empty(a.shape[:-1], dtype=a.dtype, device="meta")
    if a.dim() == 1:  # vector-matrix
        if a.shape[0] != b.shape[-2]:
            raise _NotShapeOnlyError
        return torch.empty((*b.shape[:-2], b.shape[-1]), dtype=a.dtype, device="meta")
    if a.shape[-1] != b.shape[-2]:
        raise _NotShapeOnlyError
    batch = _broadcast(a.shape[:-2], b.shape[:-2])
    return torch.empty((*batch, a.shape[-2], b.shape[-1]), dtype=a.dtype, device="meta")


def _reduced(args: tuple, kwargs: dict) -> Tensor:  # mean / sum / amax over dims, float inputs
    x = args[0]
    dim = _arg(args, kwargs, 1, "dim")
    keepdim = _arg(args, kwargs, 2, "keepdim", False)
    if not x.dtype.is_floating_point or kwargs.get("dtype") is not None or not isinstance(keepdim, bool):
        raise _NotShapeOnlyError
    if isinstance(dim, list | tuple) and not dim:  # sum(dim=[]) reduces every dimension
        raise _NotShapeOnlyError
    if dim is None:
        dims = set(range(x.dim()))
    else:
        dims = {d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim)}
    shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keepdim or i not in dims]
    return torch.empty(shape, dtype=x.dtype, device="meta")


_BINARY = {
    _promoted: ("add", "sub", "mul", "remainder", "__add__", "__radd__", "__sub__", "__rsub__",
                "__mul__", "__rmul__", "__mod__", "__and__", "__or__", "__xor__", "__invert__",
                "neg", "__neg__", "square", "abs"),
    _divided: ("div", "__truediv__", "__rtruediv__"),
    _compared: ("ge", "gt", "le", "lt", "eq", "ne",
                "__ge__", "__gt__", "__le__", "__lt__", "__eq__", "__ne__"),
}  # fmt: skip
_ELEMENTWISE = {
    fn: _elementwise(dtype)
    for dtype, names in _BINARY.items()
    for name in names
    for fn in (getattr(torch.Tensor, name, None), getattr(torch, name, None))
    if fn is not None
}


# on meta tensors, the result of these is known from the arguments' shapes: made directly, without
# torch's meta kernels (many are Python decompositions: 0.5-4 ms a call, and the first one imports
# torch._dynamo, 1-3 s)
_SHAPE_ONLY: dict[Callable, Callable[[tuple, dict], Tensor]] = {
    **_ELEMENTWISE,
    **{fn: _reduced for fn in (torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum, torch.amax)},
    torch.cat: lambda args, kwargs: _joined(args, kwargs, new_dim=False),
    torch.stack: lambda args, kwargs: _joined(args, kwargs, new_dim=True),
    F.linear: _linear_out,
    F.interpolate: _interpolated,
    **{fn: _conv_out for fn in (F.conv1d, F.conv2d, F.conv3d)},
    **{fn: _like_float_input for fn in _UNARY_F},
    **{
        fn: _like_float_input
        for name in _UNARY
        for fn in (getattr(torch.Tensor, name, None), getattr(torch, name, None))
        if fn is not None
    },
    **{
        fn: _matmul_out
        for fn in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm)
    },
    torch.arange: _arange,
    F.scaled_dot_product_attention: _sdpa_out,
    **{
        fn: _like_input
        for fn in (
            F.layer_norm,
            F.group_norm,
            F.batch_norm,
            F.instance_norm,
            F.gelu,
            F.relu,
            F.silu,
            F.dropout,
            torch.roll,
            torch.Tensor.roll,
            torch.Tensor.softmax,
            torch.Tensor.sigmoid,
            torch.sigmoid,
            torch.Tensor.masked_fill,
        )
    },
}


class MacCounter(TorchFunctionMode):
    """Counts MACs of the torch functions called while it is active (on any device)."""

    def __init__(self, meta_factories: bool = False) -> None:
        super().__init__()
        self.meta_factories = meta_factories
        self.by_operator: Counter[str] = Counter()
        self.by_scope: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.scope: list[str | None] = []  # the part of each module being run, innermost last

    @property
    def total(self) -> int:
        return sum(self.by_operator.values())

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.meta_factories and func in _FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        entry = HANDLES.get(func)
        shape_only = _SHAPE_ONLY.get(func)
        out = None
        if shape_only is not None and all(
            t.device.type == "meta" for t in (*args, *kwargs.values()) if isinstance(t, Tensor)
        ):
            with contextlib.suppress(_NotShapeOnlyError):
                out = shape_only(args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if entry is None:
            self.skipped[getattr(func, "__name__", str(func))] += 1
        else:
            name, handle = entry
            macs = int(handle(args, kwargs, out))
            if macs:
                self.by_operator[_operator_name(name, args, kwargs)] += macs
                if self.scope and self.scope[-1] is not None:
                    self.by_scope[self.scope[-1]] += macs
        return out

    @contextlib.contextmanager
    def scopes(self, parts: dict[str, nn.Module], root: nn.Module) -> Iterator[None]:
        """Attribute what each module of ``parts`` (report name -> a submodule of ``root``) computes
        to its name, as fvcore does: an operation belongs to the part whose module's name begins the
        name of the innermost module running it. A module registered in several places (CoaT's
        per-stage position encodings, which its parallel blocks share) has its first name, so it
        counts for that part wherever it is called from."""
        part_of = {id(module): name for name, module in parts.items()}
        modules = dict(root.named_modules())  # first names only, as fvcore's scopes

        def part(name: str) -> str | None:
            path = name.split(".") if name else []
            for k in range(len(path) + 1):
                found = part_of.get(id(modules[".".join(path[:k])]))
                if found is not None:
                    return found
            return None

        def enter(name: str | None) -> Callable:
            return lambda module, args: self.scope.append(name)

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            self.scope.pop()

        handles = []
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(enter(part(name))))
            handles.append(module.register_forward_hook(leave))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def pyramid(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The model's feature pyramid (stem and stages, no classifier): the one place costs call it."""
    return model.forward_intermediates(x, intermediates_only=True, output_fmt="NHWC")


class _Call(nn.Module):
    """``fn(module, *inputs)`` as a module, so ``functional_call`` can run it with other tensors."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *inputs: Any) -> Any:
        return self.fn(self.module, *inputs)


@contextlib.contextmanager
def _kept_tensors(module: nn.Module) -> Iterator[None]:
    """Put every parameter and buffer of ``module`` back as it was on leaving. ``functional_call``
    restores a module reachable under several names (CoaT's position encodings, shared by a stage's
    blocks) once per name, the later ones with the meta tensor the earlier swap left there."""
    kept = [(m, "_parameters", dict(m._parameters)) for m in module.modules()]
    kept += [(m, "_buffers", dict(m._buffers)) for m in module.modules()]
    try:
        yield
    finally:
        for m, where, tensors in kept:
            getattr(m, where).update(tensors)


def _meta_like(t: Tensor) -> Tensor:
    return t if t.device.type == "meta" else torch.empty_like(t, device="meta")


def count_calls(
    module: nn.Module,
    inputs: tuple[Tensor, ...],
    scopes: dict[str, nn.Module] | None = None,
    method: str | None = None,
) -> MacCounter:
    """MACs of ``module(*inputs)`` (or of ``pyramid(module, *inputs)`` with ``method="pyramid"``)
    in fvcore's convention, run on the meta device: ``inputs`` and the module's parameters and
    buffers are replaced by meta tensors of their shapes (the module itself is left as it is).
    ``scopes`` (report name -> submodule) attributes the MACs computed inside each submodule."""
    fn = pyramid if method == "pyramid" else (lambda m, *xs: m(*xs))
    wrapper = _Call(module, fn)
    tensors = {name: _meta_like(t) for name, t in wrapper.named_parameters(remove_duplicate=False)}
    tensors.update({name: _meta_like(t) for name, t in wrapper.named_buffers(remove_duplicate=False)})
    meta_inputs = tuple(_meta_like(x) for x in inputs)

    def run(meta_factories: bool) -> MacCounter:
        counter = MacCounter(meta_factories)
        with torch.no_grad(), counter.scopes(scopes or {}, module), counter, _kept_tensors(wrapper):
            # every name of a shared tensor gets its own meta tensor: no untying needed
            torch.func.functional_call(wrapper, tensors, meta_inputs, strict=False, tie_weights=False)
        return counter

    try:
        return run(meta_factories=True)
    except (NotImplementedError, RuntimeError):
        # geometry whose shape depends on values (a boolean-mask index, ``.item()``): made on the
        # CPU, as the module makes it, and only the model's own tensors are meta
        return run(meta_factories=False)
