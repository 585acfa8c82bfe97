"""FLOPs as the papers count them: multiply-accumulates (one fused multiply-add = one FLOP), fvcore's count.

Convention (the one behind the published figures of Swin, PVT, PoolFormer, MetaFormer, Twins):
- convolutions, linear layers and matrix products: their MACs (fvcore's handles);
- attention through ``F.scaled_dot_product_attention``, which fvcore does not count by itself:
  the MACs of ``Q K^T`` plus those of ``A V`` (registered here); softmax, scaling and masking
  are not counted;
- norms: fvcore's estimate (5 per element with affine, 4 without; 2 per element for BatchNorm in
  eval, which deployment folds away);
- interpolation: one MAC per tap and output element, as fvcore counts bilinear (4); linear
  interpolation (MViTv2 resizing its position tables) is 2 (fvcore counted it as 0);
- ``einsum`` of two operands: exactly the product of the sizes of all its indices (fvcore's
  generic handle reads numpy's printed estimate, rounded to 4 digits, and returns a float);
- element-wise ops (add, mul, activations), shifts, rolls, pads, average pooling: 0. They do no
  multiply-accumulate; the papers' counts ignore them (PoolFormer's 1.8 G counts its pooling as 0,
  ShiftViT calls its shift "zero FLOPs").
``skipped_ops`` in the result lists every operator that was seen and counted as 0, so nothing
with MACs can be dropped silently (the tests check that no matrix-product or convolution op is
among them, for every mixer).

How: ``count_flops`` runs the forward pass on the meta device (shapes only, no arithmetic) and
counts the torch functions it calls with handles equal to fvcore's (``hvtnas/costs/counter.py``):
swin_s at 1280x800 in ~0.1 s. ``count_flops(..., method="fvcore")`` (and ``analyse``) trace a real
forward pass with fvcore, as before (~10-20 s for a Swin at 1280x800 on 2 cores): the reference the
tests hold the fast count to, for every mixer and zoo model.

Papers differ on one point: Swin, PVTv2 and MetaFormer count the attention products; Twins'
published figures (3.7 / 2.8 G for PCPVT-S / SVT-S) leave them out. ``by_operator`` separates
``scaled_dot_product_attention`` so either convention can be read off.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from hvtnas.costs.counter import count_calls

if TYPE_CHECKING:
    from fvcore.nn import FlopCountAnalysis


def _fvcore() -> Any:
    """fvcore's modules, imported on first use (the fast counter does not need them)."""
    with warnings.catch_warnings():
        # fvcore imports torch.jit.script, deprecated in recent torch; only that message is hidden
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning
        )
        import fvcore.nn
        import fvcore.nn.jit_handles
    return fvcore.nn


def get_shape(value: Any) -> list[int] | None:
    return _fvcore().jit_handles.get_shape(value)


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``scaled_dot_product_attention``: Q K^T (L x S x E) plus A V (L x S x Ev), per
    batch element and head; any number of leading batch dimensions (window attention uses 5-D)."""
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    *batch, length, embed = q
    source = k[-2]
    return prod(batch) * length * source * (embed + v[-1])


def matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``matmul`` for any operand ranks (fvcore's handle rejects a 1-D operand):
    every output element is one dot product over the first operand's last dimension."""
    return prod(get_shape(outputs[0])) * get_shape(inputs[0])[-1]


def exact_einsum_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of a two-operand ``einsum``: one multiply-accumulate for every combination of its
    indices (fvcore's generic handle rounds numpy's estimate to 4 significant digits). Other
    forms (one or three operands, ellipses) go to fvcore's handle."""
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2 or "." in equation:
        return _fvcore().jit_handles.einsum_flop_jit(inputs, outputs)
    sizes = {}
    for letters, shape in zip(operands, shapes, strict=True):
        sizes.update(zip(letters, shape, strict=True))
    return prod(sizes.values())


@dataclass
class FlopCount:
    """MACs of one forward pass at ``input_size`` (height, width), batch 1."""

    total: int
    input_size: tuple[int, int]
    # stem, stage1 ..., [co_scale,] [branch1 ..., fusion,] head
    by_module: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    skipped_ops: dict[str, int] = field(default_factory=dict)  # operator -> times seen, counted as 0


def _outputs(model: nn.Module, x: torch.Tensor, logits: bool) -> tuple[torch.Tensor, ...]:
    """What fvcore traces: the pyramid's maps and every stage's tokens (and the logits). The tokens
    are returned too because the trace fvcore reads drops unused results as dead code, though the
    model computes them: the last block's FFN on the tokens of a stage whose successor makes fresh
    ones, or on the map of a classifier that reads its class token (the sequence models the papers
    count compute all of it)."""
    levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)
    maps = [level for level, _ in levels]
    tokens = [t for _, t in levels if t is not None]
    if not logits:
        return (*maps, *tokens)
    scales = getattr(model.head, "scales", 1)  # CoaT's head weighs the last pyramid levels
    if scales > 1:
        head_tokens = [t for _, t in levels[-scales:]]
        return (model.forward_head(maps[-scales:], tokens=head_tokens), *maps, *tokens)
    return (model.forward_head(maps[-1], tokens=levels[-1][1]), *maps, *tokens)


class _Pyramid(nn.Module):
    """The backbone alone: dense-prediction cost is the cost of the pyramid, not of the classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _outputs(self.model, x, logits=False)


class _Classifier(nn.Module):
    """The whole model, with every map and token returned beside the logits (see ``_outputs``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not hasattr(self.model, "forward_intermediates"):  # any module: its own forward
            return (self.model(x),)
        return _outputs(self.model, x, logits=True)


def analyse(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> FlopCountAnalysis:
    """An fvcore analysis of ``module(*inputs)`` with hvtnas's handles and fvcore's noise silenced."""
    fvcore = _fvcore()
    analysis = fvcore.FlopCountAnalysis(module, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.set_op_handle("aten::matmul", matmul_flop_jit)
    analysis.set_op_handle("aten::einsum", exact_einsum_flop_jit)
    analysis.set_op_handle("aten::upsample_linear1d", fvcore.jit_handles.elementwise_flop_counter(0, 2))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+.* is deprecated", DeprecationWarning)
        with torch.no_grad():  # no autograd graph: the same count, 35-45% faster at 1280x800
            analysis.total()  # trace now, inside the filters; results are cached by fvcore
    return analysis


def count_flops(
    model: nn.Module,
    input_size: tuple[int, int],
    in_channels: int = 3,
    backbone_only: bool = False,
    method: Literal["meta", "fvcore"] = "meta",
) -> FlopCount:
    """Count a model's MACs at ``input_size`` = (height, width), batch 1.

    ``backbone_only`` counts stem and stages (the feature pyramid), without the classifier.
    ``method="meta"`` (the default) counts without computing anything (``hvtnas/costs/counter.py``);
    ``"fvcore"`` traces a real forward pass with fvcore (the reference; the same numbers, 10-100x
    slower).
    """
    if method == "meta":
        return _count_on_meta(model, input_size, in_channels, backbone_only)
    if method != "fvcore":
        raise ValueError(f"method is 'meta' or 'fvcore', got {method!r}")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, *input_size, device=next(model.parameters()).device)
        analysis = analyse(_Pyramid(model) if backbone_only else _Classifier(model), (x,))
        counts = analysis.by_module()
        prefix = "model."
        return FlopCount(
            total=int(analysis.total()),
            input_size=tuple(input_size),
            by_module={part: int(counts.get(prefix + module, 0)) for part, module in _parts(model).items()},
            by_operator={op: int(c) for op, c in analysis.by_operator().items()},
            skipped_ops=dict(analysis.unsupported_ops()),
        )
    finally:
        model.train(was_training)


def _count_on_meta(
    model: nn.Module, input_size: tuple[int, int], in_channels: int, backbone_only: bool
) -> FlopCount:
    parts = {part: model.get_submodule(name) for part, name in _parts(model).items()}
    was_training = model.training
    model.eval()
    try:
        x = torch.empty(1, in_channels, *input_size, device="meta")
        counter = count_calls(model, (x,), scopes=parts, method="pyramid" if backbone_only else None)
    finally:
        model.train(was_training)
    return FlopCount(
        total=counter.total,
        input_size=tuple(input_size),
        by_module={part: counter.by_scope.get(part, 0) for part in parts},
        by_operator=dict(counter.by_operator),
        skipped_ops=dict(counter.skipped),
    )


def _parts(model: nn.Module) -> dict[str, str]:
    """Report names (stem, stage1.., co_scale (CoaT), head) of the model's top-level modules, in
    forward order."""
    stages = {f"stage{i + 1}": f"stages.{i}" for i in range(len(getattr(model, "stages", [])))}
    co_scale = {"co_scale": "co_scale"} if getattr(model, "co_scale", None) is not None else {}
    # CrossViT: the other branches (each its stem and stage) and the fusion points
    branches = {f"branch{i + 1}": f"branches.{i}" for i in range(len(getattr(model, "branches", [])))}
    fusion = {"fusion": "fusions"} if branches else {}
    return {"stem": "stem", **stages, **co_scale, **branches, **fusion, "head": "head"}
