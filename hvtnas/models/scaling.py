"""Scale a published architecture to another budget and input by width and depth only.

A hand-designed family is compared with what a search finds at the same budget by keeping what
makes it that family (mixers, stem, positional encoding, FFN, norms) and changing only how wide and
how deep its stages are, the way the papers themselves derive their -T/-S/-B variants. Two things
depend on the input size and follow it:

- ``sr_ratio`` (PVT/Twins spatial reduction) is scaled with the resolution, so the reduced key map
  stays the size the design chose (PVTv2 at 224 reduces every stage's keys to 7x7; at 28 the maps
  are already that small and the ratio becomes 1);
- window sizes need nothing: a window larger than its map shrinks to the map (Swin's rule,
  applied by the window mixers themselves).
"""

from __future__ import annotations

import math
from typing import Any

from hvtnas.config import ArchConfig, InputConfig, MobileFormerConfig
from hvtnas.errors import HvtnasError

MIN_HEAD_DIM = 8  # narrower heads than this are not worth their softmax


def _round_width(width: float, multiple: int) -> int:
    return max(multiple, round(width / multiple) * multiple)


def _heads_for(width: int, original_heads: int) -> int:
    """Keep the design's head count where heads stay at least MIN_HEAD_DIM wide, else fewer heads."""
    heads = max(1, min(original_heads, width // MIN_HEAD_DIM))
    while width % heads:
        heads -= 1
    return heads


def scale_architecture(
    cfg: ArchConfig,
    *,
    width_mult: float = 1.0,
    depth_mult: float = 1.0,
    input: InputConfig | dict[str, Any] | None = None,
    width_multiple: int = 8,
    head_dim: int | None = None,
    name: str | None = None,
) -> ArchConfig:
    """``cfg`` with every stage ``width_mult`` times as wide (rounded to ``width_multiple``) and
    ``depth_mult`` times as deep (at least one block), for ``input`` (default: ``cfg``'s).

    Everything else is kept. Attention heads keep their count while they stay at least 8 channels
    wide, or, with ``head_dim``, are ``head_dim`` channels wide (a search space's fixed head
    width: a design scaled to a few MMACs cannot keep its 32-channel heads anyway);
    spatial-reduction ratios follow the resolution (see the module docstring).
    """
    if head_dim is not None and width_multiple % head_dim:
        raise HvtnasError(f"head_dim {head_dim} must divide width_multiple {width_multiple}")
    if width_mult <= 0 or depth_mult <= 0:
        raise HvtnasError(f"width_mult and depth_mult must be positive (got {width_mult}, {depth_mult})")
    data = cfg.model_dump(mode="json")
    if input is not None:
        new_input = InputConfig.model_validate(input) if isinstance(input, dict) else input
        data["input"] = new_input.model_dump(mode="json")
    resolution_ratio = data["input"]["resolution"] / cfg.input.resolution
    for stage, original in zip(data["stages"], cfg.stages, strict=True):
        stage["width"] = _round_width(original.width * width_mult, width_multiple)
        stage["depth"] = max(1, round(original.depth * depth_mult))
        if original.heads is not None or original.head_dim is not None:
            heads = original.heads or original.width // original.head_dim
            if head_dim is not None:
                stage["heads"], stage["head_dim"] = None, head_dim
            else:
                stage["heads"], stage["head_dim"] = _heads_for(stage["width"], heads), None
        for mixer in stage["mixers"]:
            if isinstance(mixer, dict) and "sr_ratio" in mixer:
                mixer["sr_ratio"] = max(1, round(mixer["sr_ratio"] * resolution_ratio))
    for i, (stage, original) in enumerate(zip(data["stages"], cfg.stages, strict=True)):
        if original.inner is not None:  # a nested stage's pixels: as wide as the map they come from
            inner = stage["inner"]
            if i > 0:
                inner["width"] = data["stages"][i - 1]["width"]
            else:
                inner["width"] = _round_width(original.inner.width * width_mult, min(width_multiple, 4))
            if original.inner.heads is not None:
                inner["heads"] = _heads_for(inner["width"], original.inner.heads)
    for stage, original in zip(data["stages"], cfg.stages, strict=True):
        if (
            original.mobile_former is not None
        ):  # per-block widths and expansions, the last block's the stage's
            _scale_mobile_former(stage, original.mobile_former, original.width, width_mult, width_multiple)
    if data["head"]["mobile_former"] is not None:  # Mobile-Former's head widens with the stages
        head = data["head"]["mobile_former"]
        head["conv_width"] = _round_width(head["conv_width"] * width_mult, width_multiple)
        head["hidden"] = _round_width(head["hidden"] * width_mult, width_multiple)
    if cfg.stem.widths is not None:  # a conv stem's own widths (Shuffle Transformer) scale with the stages
        data["stem"]["widths"] = [_round_width(w * width_mult, width_multiple) for w in cfg.stem.widths]
    data["name"] = name or f"{cfg.name}_w{width_mult:.3g}_d{depth_mult:.3g}"
    return ArchConfig.model_validate(data)


def _scale_mobile_former(
    stage: dict[str, Any], original: MobileFormerConfig, width: int, width_mult: float, multiple: int
) -> None:
    """A Mobile-Former stage's blocks at the stage's new depth and width: the first blocks kept
    (the downsampling one first), the last repeated where it deepens; the last block as wide as
    the stage."""
    depth, mf = stage["depth"], stage["mobile_former"]
    widths = [_round_width(w * width_mult, multiple) for w in original.block_widths(width)]
    expansions = list(original.expansions)
    mf["expansions"] = (expansions + expansions[-1:] * depth)[:depth]
    mf["widths"] = [*(widths + widths[-1:] * depth)[: depth - 1], stage["width"]]


def scale_to_flops(
    cfg: ArchConfig,
    target_macs: float,
    *,
    depth_mult: float = 1.0,
    input: InputConfig | dict[str, Any] | None = None,
    width_multiple: int = 8,
    head_dim: int | None = None,
    name: str | None = None,
) -> ArchConfig:
    """``cfg`` scaled by ``depth_mult`` and by the width multiplier whose MAC count (at the input
    resolution, fvcore convention) comes closest to ``target_macs`` (in ratio)."""
    from hvtnas.costs.flops import count_flops
    from hvtnas.models.build import build_model

    if target_macs <= 0:
        raise HvtnasError(f"target_macs must be positive (got {target_macs})")

    def macs(mult: float) -> tuple[float, ArchConfig]:
        scaled = scale_architecture(
            cfg,
            width_mult=mult,
            depth_mult=depth_mult,
            input=input,
            width_multiple=width_multiple,
            head_dim=head_dim,
            name=name,
        )
        res = scaled.input.resolution
        model = build_model(scaled, init_weights=False)  # MACs do not depend on the values
        return count_flops(model, (res, res), scaled.input.channels).total, scaled

    # MACs grow with width (in steps, since widths are rounded): bisect the multiplier in log
    # space, remembering every distinct model met, and keep the closest in log ratio
    counted: dict[tuple[int, ...], tuple[float, ArchConfig]] = {}

    def closeness(mult: float) -> float:
        widths = tuple(_round_width(s.width * mult, width_multiple) for s in cfg.stages)
        if widths not in counted:
            counted[widths] = macs(mult)
        return counted[widths][0] - target_macs

    lo, hi = width_multiple / max(s.width for s in cfg.stages) / 2, 1.0
    while closeness(hi) < 0 and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(10):
        mid = math.sqrt(lo * hi)
        if closeness(mid) < 0:
            lo = mid
        else:
            hi = mid
    return min(counted.values(), key=lambda c: abs(math.log(c[0] / target_macs)))[1]
