"""What a built model is: parameter counts (total and per stage), the pyramid's shapes, a one-line
description of its architecture."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hvtnas.config import ArchConfig, InnerConfig, StageConfig
from hvtnas.models.build import ModelSpec, build_model
from hvtnas.models.metaformer import MetaFormer
from hvtnas.models.tokens import carrying_stages


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(cfg: ArchConfig) -> str:
    """One line: stem, positional encoding and, per stage, depth x width and its mixers (and the
    tokens beside the map where they are made), e.g.
    ``patch stem, none PE: 2x96 window+shifted_window | 2x192 window+shifted_window | ...``;
    ``patch16 stem, absolute PE: 12x384 attention, 1 class token`` (DeiT-S); a nested stage adds
    its inner blocks' width and mixers (``12x384 attention in 24 window``, TNT-S); CoaT's co-scale
    group last (``... | 6x co-scale over stages 2-4``)."""

    def mixers(stage: StageConfig | InnerConfig) -> str:
        return "+".join(dict.fromkeys(m.kind for m in stage.mixers))

    stages = []
    for i, s in enumerate(cfg.stages):
        text = (
            f"{s.depth}x{s.width} "
            + ("bottleneck " if s.bottleneck is not None else "")
            + ("mobile_former" if s.mobile_former is not None else mixers(s))  # its blocks mix the map
            + (f" in {s.inner.width} {mixers(s.inner)}" if s.inner else "")
        )
        tokens = cfg.tokens
        made_here = tokens is not None and (
            i == tokens.from_stage
            or (i in carrying_stages(tokens, len(cfg.stages)) and tokens.each_stage == "new")
        )
        if made_here:
            count = getattr(tokens, "count", None)  # a kind may size itself by the map instead
            if count is None:
                text += f", {tokens.kind} tokens"
            else:
                text += f", {count} {tokens.kind} token{'s' if count > 1 else ''}"
        stages.append(text)
    stem = (
        f"patch{cfg.stem.patch_size}"
        if cfg.stem.kind == "patch" and cfg.stem.patch_size != 4
        else cfg.stem.kind
    )
    if cfg.co_scale is not None:  # CoaT's parallel blocks over the last stages
        first = len(cfg.stages) - cfg.co_scale.scales
        stages.append(f"{cfg.co_scale.depth}x co-scale over stages {first + 1}-{len(cfg.stages)}")
    return f"{stem} stem, {cfg.pos_embed.kind} PE: {' | '.join(stages)}"


def params_per_part(model: MetaFormer) -> dict[str, int]:
    """Parameters of the stem, each stage (with the downsampling into it), CoaT's co-scale group
    (where the model has one) and the head. A parameter shared by several parts (CoaT's per-stage
    position encodings, used by the co-scale group too) counts for the first: the parts add up."""
    parts = {"stem": model.stem, **{f"stage{i + 1}": stage for i, stage in enumerate(model.stages)}}
    if getattr(model, "co_scale", None) is not None:
        parts["co_scale"] = model.co_scale
    for i, branch in enumerate(getattr(model, "branches", [])):  # CrossViT's other branches
        parts[f"branch{i + 1}"] = branch
    if getattr(model, "fusions", None) is not None:
        parts["fusion"] = model.fusions
    parts["head"] = model.head
    seen: set[int] = set()
    counts = {}
    for name, part in parts.items():
        new = [p for p in part.parameters() if id(p) not in seen]
        seen.update(id(p) for p in new)
        counts[name] = sum(p.numel() for p in new)
    return counts


@dataclass
class ModelSummary:
    name: str | None
    params: int
    params_per_part: dict[str, int]  # stem, stage1..stage4 (with the downsampling into it), head
    resolution: int
    stages: list[dict[str, int]] = field(default_factory=list)  # {"channels", "height", "width"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(spec: ModelSpec | MetaFormer, resolution: int | None = None) -> ModelSummary:
    """Build (unless given a model) and describe a model; stage shapes from one forward pass
    of a single image at ``resolution`` (default: the config's)."""
    model = spec if isinstance(spec, MetaFormer) else build_model(spec)
    cfg = getattr(model, "arch_config", None)
    if resolution is None:
        resolution = cfg.input.resolution if cfg is not None else 224
    channels = cfg.input.channels if cfg is not None else 3
    parts = params_per_part(model)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        x = torch.zeros(1, channels, resolution, resolution)
        pyramid = model.forward_intermediates(x, intermediates_only=True)
    model.train(was_training)
    stages = [{"channels": f.shape[1], "height": f.shape[2], "width": f.shape[3]} for f in pyramid]
    return ModelSummary(
        name=cfg.name if cfg is not None else None,
        params=count_params(model),
        params_per_part=parts,
        resolution=resolution,
        stages=stages,
    )
