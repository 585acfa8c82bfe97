"""``build_model``: the one place that reads an ``ArchConfig`` and turns it into modules.

Everything below it (mixers, blocks, stems) takes plain constructor arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hvtnas.config import (
    ArchConfig,
    DownsampleConfig,
    NormConfig,
    StageConfig,
    StemConfig,
    cross_scale_widths,
)
from hvtnas.errors import HvtnasError
from hvtnas.models.blocks import AttentionDownsample, MetaFormerBlock, Stage
from hvtnas.models.embed import (
    PEG,
    AbsolutePosEmbed,
    AxialPosEmbed,
    ConvDownsample,
    ConvStem,
    CrossScaleConv,
    OverlapStem,
    PatchMerging,
    PatchStem,
    PixelAttention,
    PoolDownsample,
    SinusoidalPosEmbed,
)
from hvtnas.models.ffn import FFNS
from hvtnas.models.layers import make_act, make_norm
from hvtnas.models.metaformer import ClassifierHead, FeaturePyramid, MetaFormer
from hvtnas.models.mixers import MIXERS, MixerParams
from hvtnas.models.mixers.pooling_attention import PoolingAttention
from hvtnas.models.tokens import TOKEN_STREAMS, build_token_streams

ModelSpec = str | Path | ArchConfig | dict[str, Any]


def resolve_config(spec: ModelSpec) -> ArchConfig:
    """A config from a zoo name, a YAML path, a dict or an ``ArchConfig``."""
    from hvtnas.models import zoo

    if isinstance(spec, ArchConfig):
        return spec
    if isinstance(spec, dict):
        return ArchConfig.from_dict(spec)
    text = str(spec)
    if isinstance(spec, Path) or Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        return ArchConfig.from_yaml(text)
    if text in zoo.names():
        return zoo.get_config(text)
    raise HvtnasError(
        f"{text!r} is neither a zoo model nor an existing config file; zoo models: {', '.join(zoo.names())}"
    )


def _norm_factory(cfg: NormConfig) -> Callable[[int], nn.Module]:
    return lambda dim: make_norm(cfg.kind, dim, cfg.eps, cfg.bias)


def _optional_norm(cfg: NormConfig | None, dim: int) -> nn.Module | None:
    return make_norm(cfg.kind, dim, cfg.eps, cfg.bias) if cfg is not None else None


def build_stem(cfg: StemConfig, in_channels: int, dim: int) -> nn.Module:
    if cfg.kind == "patch":
        cross_scale = None
        if cfg.kernel_sizes is not None:
            ks = cfg.kernel_sizes
            widths = cross_scale_widths(dim, len(ks))
            cross_scale = CrossScaleConv(in_channels, widths, ks, 4, [(k - 4) // 2 for k in ks])
        return PatchStem(in_channels, dim, _optional_norm(cfg.norm, dim), cross_scale, cfg.patch_size)
    if cfg.kind == "overlap":
        k = cfg.kernel_size or 7
        padding = cfg.padding if cfg.padding is not None else k // 2
        return OverlapStem(in_channels, dim, k, padding, _optional_norm(cfg.norm, dim))
    assert cfg.norm is not None  # the config requires it for conv stems
    hidden = max(1, int(cfg.hidden_ratio * dim))
    norms = [make_norm(cfg.norm.kind, hidden, cfg.norm.eps, cfg.norm.bias) for _ in range(cfg.depth - 1)]
    if cfg.last_norm is not False:
        last = cfg.norm if cfg.last_norm is True else cfg.last_norm
        norms.append(make_norm(last.kind, dim, last.eps, last.bias))
    acts = [make_act(cfg.act) for _ in range(cfg.depth - 1)]
    return ConvStem(
        in_channels, dim, hidden, cfg.conv_strides(), cfg.conv_kernel_sizes(), norms, acts, cfg.last_bias
    )


def build_downsample(cfg: DownsampleConfig, in_dim: int, out_dim: int) -> nn.Module | None:
    if cfg.kind == "pooling_attention":
        return None  # built with the stage it opens (build_model)
    post = _optional_norm(cfg.norm, out_dim) if cfg.norm_position == "post" else None
    if cfg.kind == "patch_merging":
        pre = _optional_norm(cfg.norm, 4 * in_dim) if cfg.norm_position == "pre" else None
        return PatchMerging(in_dim, out_dim, pre, post)
    pre = _optional_norm(cfg.norm, in_dim) if cfg.norm_position == "pre" else None
    if cfg.kind == "pool":
        return PoolDownsample(in_dim, out_dim, pre, post)
    cross_scale = None
    if cfg.kernel_sizes is not None:
        ks = cfg.kernel_sizes
        widths = cross_scale_widths(out_dim, len(ks))
        cross_scale = CrossScaleConv(in_dim, widths, ks, 2, [(k - 1) // 2 for k in ks], cfg.bias)
    return ConvDownsample(in_dim, out_dim, cfg.kernel_size, cfg.bias, pre, post, cross_scale)


def _init_weights(module: nn.Module) -> None:
    # timm's convention for these families: truncated normal(0.02) weights, zero biases
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _mixer_kwargs(params: MixerParams, scfg: StageConfig, map_size: int) -> dict[str, Any]:
    """Constructor arguments of a mixer: its parameters, plus what it declares it needs."""
    mixer_cls = MIXERS.get(params.kind)
    kwargs = params.model_dump(exclude={"kind"})
    if mixer_cls.uses_heads:
        kwargs["num_heads"] = scfg.num_heads
    if mixer_cls.uses_map_size:
        kwargs["map_size"] = map_size
    return kwargs


def _ffn(scfg: StageConfig) -> nn.Module | None:
    if scfg.ffn.kind == "none":
        return None
    hidden = int(scfg.width * scfg.mlp_ratio)
    extra = {"dw_residual": True} if scfg.ffn.dw_residual else {}
    return FFNS[scfg.ffn.kind](scfg.width, hidden, act=scfg.ffn.act, bias=scfg.ffn.bias, **extra)


def build_model(
    spec: ModelSpec,
    *,
    num_classes: int | None = None,
    init_weights: bool = True,
    checkpoint: str | Path | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
) -> MetaFormer | FeaturePyramid:
    """Build the backbone + classifier that a config (or zoo name / YAML path) describes.

    ``num_classes`` overrides the config's (0 gives a headless backbone, timm's convention).
    ``init_weights=False`` keeps PyTorch's default initialisation instead of the truncated normal
    (most of the build time of a large model): enough for counting parameters and FLOPs.
    ``checkpoint``: a weights file to load (safetensors or a weights-only torch file) in hvtnas's
    layout or in timm's / the official one of a zoo family (see ``hvtnas.models.weights``); with a
    ``num_classes`` other than the file's, the classifier stays freshly initialised (fine-tuning).
    ``features_only``: the backbone alone, a ``FeaturePyramid`` whose forward returns the maps of
    the stages in ``out_indices`` (default: all), as timm's ``features_only=True``.
    """
    if out_indices is not None and not features_only:
        raise HvtnasError("out_indices is an option of features_only=True")
    cfg = resolve_config(spec)
    if num_classes is not None:
        cfg = cfg.model_copy(update={"input": cfg.input.model_copy(update={"num_classes": num_classes})})
    widths = [s.width for s in cfg.stages]
    depths = [s.depth for s in cfg.stages]
    drop_rates = torch.linspace(0, cfg.drop_path_rate, sum(depths), device="cpu").tolist()
    stem_size = -(-cfg.input.resolution // cfg.stem.stride)  # ceil: the patch stem pads

    token_streams = build_token_streams(cfg.tokens, widths)
    stages = []
    for i, scfg in enumerate(cfg.stages):
        dim = scfg.width
        map_size = -(-stem_size // 2**i)  # the stage's map side at the configured resolution
        norm_factory = _norm_factory(scfg.norm)
        downsample = build_downsample(cfg.downsample, widths[i - 1], dim) if i > 0 else None
        first_block = 0
        if i > 0 and cfg.downsample.kind == "pooling_attention":
            # MViTv2: the stage's first block is the downsampling (Q stride 2 in its attention); it
            # reads the previous stage's map. Pre-norm, no layer/residual scale, as MViTv2's.
            params = scfg.mixer_for_block(0)
            previous_map = -(-stem_size // 2 ** (i - 1))
            attention = PoolingAttention(
                widths[i - 1], dim_out=dim, q_stride=2, **_mixer_kwargs(params, scfg, previous_map)
            )
            downsample = AttentionDownsample(
                widths[i - 1],
                dim,
                attention,
                _ffn(scfg),
                norm1=norm_factory(widths[i - 1]),
                norm2=norm_factory(dim),
                drop_path=drop_rates[sum(depths[:i])],
            )
            first_block = 1
        blocks = []
        for j in range(first_block, scfg.depth):
            params = scfg.mixer_for_block(j)
            mixer_cls = MIXERS.get(params.kind)
            blocks.append(
                MetaFormerBlock(
                    dim,
                    mixer_cls(dim, **_mixer_kwargs(params, scfg, map_size)),
                    _ffn(scfg),
                    norm=functools.partial(norm_factory, dim),
                    drop_path=drop_rates[sum(depths[:i]) + j],
                    layer_scale=scfg.layer_scale,
                    res_scale=scfg.res_scale,
                    post_norm=scfg.norm_position == "post",
                )
            )
        pos_embed = None
        pe = cfg.pos_embed
        if pe.kind in ("absolute", "axial", "sinusoidal", "pixel_attention") and (i == 0 or pe.per_stage):
            if pe.kind in ("absolute", "axial"):
                size = max(1, stem_size // 2**i)
                embed_cls = AbsolutePosEmbed if pe.kind == "absolute" else AxialPosEmbed
                pos_embed = embed_cls(dim, (size, size))
            elif pe.kind == "pixel_attention":
                pos_embed = PixelAttention(dim, pe.kernel_size)
            else:
                pos_embed = SinusoidalPosEmbed(dim)
        stages.append(
            Stage(
                blocks,
                downsample=downsample,
                pos_embed=pos_embed,
                peg=PEG(dim, cfg.pos_embed.kernel_size) if cfg.pos_embed.kind == "peg" else None,
                out_norm=make_norm(scfg.norm.kind, dim, scfg.norm.eps, scfg.norm.bias)
                if scfg.out_norm
                else None,
                tokens=token_streams[i],
            )
        )
    head_cfg = cfg.head
    head = ClassifierHead(
        widths[-1],
        cfg.input.num_classes,
        norm=_optional_norm(head_cfg.norm, widths[-1]),
        norm_position=head_cfg.norm_position,
        mlp_ratio=head_cfg.mlp_ratio,
        act=head_cfg.act,
        dropout=head_cfg.dropout,
        # a class token is what the classifier reads; otherwise it pools the map
        pool="token" if cfg.tokens is not None and TOKEN_STREAMS.get(cfg.tokens.kind).read_by_head else "avg",
    )
    stem = build_stem(cfg.stem, cfg.input.channels, widths[0])
    model = MetaFormer(stem, stages, head, widths, cfg.stage_strides())
    if init_weights:
        for module in model.modules():
            _init_weights(module)
    model.arch_config = cfg  # the config it was built from (for summaries and export)
    if checkpoint is not None:
        from hvtnas.models.weights import load_weights

        load_weights(model, checkpoint, name=cfg.name)
    if features_only:
        return FeaturePyramid(model, out_indices)
    return model
