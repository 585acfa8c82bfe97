"""fvcore's trace without its arithmetic: the reference FLOP count of a zoo model at 1280x800 in
seconds instead of up to a minute on a 2-core machine.

fvcore counts from the operators of a traced graph and their input and output shapes; the
values never matter. Inside ``shapes_only()`` the operators that dominate a dense forward pass
(products, convolutions, attention, and the element-wise, copy and gather operators that build
relative-position biases and masks on maps of 64,000 tokens) return uninitialised tensors of the
shapes and strides their meta kernels give. The tracer records each operator at its own
dispatch key, above the kernels replaced here, so fvcore reads the graph a real pass gives: the
counts equal those of the real pass (checked by ``test_shapes_only_fvcore_equals_real_fvcore``,
and by the pinned real counts of every zoo model). Results of at most ``SMALL`` elements are
computed for real: under tracing, sizes are 0-dim tensors, and the shapes computed from them
must be right.

Private torch APIs, as there is no public way to do this: kernels registered over aten's own
(``torch.library.Library("aten", "IMPL")``; public, but it warns that it overrides) and
``torch._C._AutoDispatchBelowAutograd`` to reach the real kernel under an autograd-key override.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._pytree import tree_leaves, tree_map

aten = torch.ops.aten
SMALL = 4096

# products, convolutions and attention: replaced at the CPU key, where they run inside the
# operators the tracer records (aten::linear, aten::_convolution, ...); never used for sizes
LEAF_KERNELS = (
    "mm", "addmm", "bmm", "baddbmm", "mkldnn_convolution", "_scaled_dot_product_flash_attention_for_cpu",
)  # fmt: skip
# operators called from Python: replaced at the autograd key, so that a small result can still
# be computed by the real kernel below it
TOP_LEVEL = (
    "add.Tensor", "add.Scalar", "sub.Tensor", "rsub.Scalar", "mul.Tensor", "mul.Scalar", "div.Tensor",
    "floor_divide", "neg", "exp", "sqrt", "pow.Tensor_Scalar", "addcmul",
    "gelu", "silu", "sigmoid", "tanh", "relu", "hardswish", "_softmax",
    "native_batch_norm", "native_layer_norm", "native_group_norm", "mean.dim", "sum.dim_IntList",
    "add_.Tensor", "mul_.Tensor",
    "max_pool2d_with_indices", "avg_pool2d", "constant_pad_nd", "roll",
    "index.Tensor", "index_select", "gather", "where.self", "masked_fill.Scalar", "masked_fill_.Scalar",
    "fill_.Scalar", "ne.Scalar", "eq.Scalar", "bitwise_and.Tensor", "bitwise_or.Tensor",
    "clone", "copy_", "cat", "_unsafe_view",
)  # fmt: skip


def _overload(name: str) -> Any:
    packet, _, overload = name.partition(".")
    return getattr(getattr(aten, packet), overload or "default")


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _uninitialised(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype)
    return value


def _small(*values: Any) -> bool:
    return all(t.numel() <= SMALL for t in tree_leaves(values) if isinstance(t, torch.Tensor))


def _meta_result(op: Any, args: tuple, kwargs: dict) -> Any:
    if op is aten.mkldnn_convolution.default:  # no meta kernel: the same convolution's shape
        x, weight, bias, padding, stride, dilation, groups = args
        x, weight, bias = tree_map(_to_meta, (x, weight, bias))
        transposed, output_padding = False, [0] * len(stride)
        return aten.convolution.default(
            x, weight, bias, stride, padding, dilation, transposed, output_padding, groups
        )
    return op(*tree_map(_to_meta, args), **tree_map(_to_meta, kwargs))


def _leaf_kernel(op: Any) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        return tree_map(_uninitialised, _meta_result(op, args, kwargs))

    return kernel


def _top_level_kernel(op: Any) -> Callable[..., Any]:
    def real(*args: Any, **kwargs: Any) -> Any:
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args, **kwargs)

    def kernel(*args: Any, **kwargs: Any) -> Any:
        if _small(args, kwargs):  # sizes and the like: computed (and cheap, without a meta pass)
            return real(*args, **kwargs)
        try:
            result = _meta_result(op, args, kwargs)
        except NotImplementedError:  # a shape that depends on values (a boolean mask's index)
            return real(*args, **kwargs)
        if _small(result):
            return real(*args, **kwargs)
        if op._schema.is_mutable:  # in place: its first argument, left as it was
            return args[0]
        return tree_map(_uninitialised, result)

    return kernel


@contextmanager
def shapes_only() -> Iterator[None]:
    """Within it, the CPU operators above return uninitialised results of the right shapes."""
    library = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            for name in LEAF_KERNELS:
                library.impl(name, _leaf_kernel(_overload(name)), "CPU")
            for name in TOP_LEVEL:
                library.impl(name, _top_level_kernel(_overload(name)), "AutogradCPU")
        yield
    finally:
        library._destroy()  # aten's own kernels back (private: Library has no public close)
