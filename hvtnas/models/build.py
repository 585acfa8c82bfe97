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
    InnerConfig,
    NormConfig,
    StageConfig,
    StemConfig,
    cross_scale_widths,
)
from hvtnas.errors import HvtnasError
from hvtnas.models.blocks import (
    AttentionDownsample,
    BottleneckBlock,
    CoScaleBlock,
    CoScaleGroup,
    FFNTransition,
    MetaFormerBlock,
    NeighbourConv,
    NestedBlock,
    NestedStage,
    Stage,
)
from hvtnas.models.branches import BranchedMetaFormer, ClassTokenExchange
from hvtnas.models.embed import (
    PEG,
    AbsolutePosEmbed,
    AxialPosEmbed,
    ConvDownsample,
    ConvStem,
    CrossScaleConv,
    ImageToTokensStem,
    OverlapStem,
    PatchMerging,
    PatchProjection,
    PatchStem,
    PixelAttention,
    PixelStem,
    PoolDownsample,
    ResNetStem,
    SinusoidalPosEmbed,
)
from hvtnas.models.ffn import FFNS, Mlp
from hvtnas.models.fused import Linear
from hvtnas.models.layers import make_act, make_norm
from hvtnas.models.metaformer import ClassifierHead, FeaturePyramid, LayerClassAttention, MetaFormer
from hvtnas.models.mixers import MIXERS, MixerParams, TokenMixer
from hvtnas.models.mixers.pooling_attention import PoolingAttention
from hvtnas.models.mobile_former import MobileFormerBlock, MobileFormerHead, MobileNetStem, MobileToFormer
from hvtnas.models.tokens import TOKEN_STREAMS, CarriedTokens, build_token_streams

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


def build_stem(cfg: StemConfig, in_channels: int, dim: int, patch_size: int = 16) -> nn.Module:
    """The stem; ``patch_size`` is the patch of the pixel stem (4 x the nested first stage's)."""
    if cfg.kind == "pixel":
        return PixelStem(in_channels, dim, patch_size, cfg.kernel_size or 7)
    if cfg.kind == "mobilenet":
        assert cfg.widths is not None  # the config requires them
        return MobileNetStem(in_channels, cfg.widths, cfg.lite_expansion or 2, make_act(cfg.act))
    if cfg.kind == "image_to_tokens":
        assert cfg.norm is not None and cfg.widths is not None  # the config requires them
        hidden = cfg.widths[0]
        norm = make_norm(cfg.norm.kind, hidden, cfg.norm.eps, cfg.norm.bias)
        return ImageToTokensStem(in_channels, dim, hidden, cfg.kernel_size or 7, cfg.patch_size // 4, norm)
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
    assert cfg.norm is not None  # the config requires it for conv and resnet stems
    if cfg.kind == "resnet":
        norm = make_norm(cfg.norm.kind, dim, cfg.norm.eps, cfg.norm.bias)
        return ResNetStem(in_channels, dim, cfg.kernel_size or 7, norm, make_act(cfg.act))
    widths = cfg.conv_widths(dim)
    norms = [make_norm(cfg.norm.kind, w, cfg.norm.eps, cfg.norm.bias) for w in widths[:-1]]
    if cfg.last_norm is not False:
        last = cfg.norm if cfg.last_norm is True else cfg.last_norm
        norms.append(make_norm(last.kind, dim, last.eps, last.bias))
    acts = [make_act(cfg.act) for _ in range(cfg.depth - 1)]
    biases = [cfg.bias] * (cfg.depth - 1) + [cfg.bias or cfg.last_bias]
    return ConvStem(in_channels, widths, cfg.conv_strides(), cfg.conv_kernel_sizes(), norms, acts, biases)


def build_downsample(
    cfg: DownsampleConfig, in_dim: int, out_dim: int, token_window: int | None = None
) -> nn.Module | None:
    """The downsampling into a stage of ``out_dim`` channels; ``token_window``: it also carries
    the regional tokens, one per such window of the map (RegionViT)."""
    if cfg.kind in ("pooling_attention", "strided_block"):
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
    return ConvDownsample(
        in_dim,
        out_dim,
        cfg.kernel_size,
        cfg.bias,
        pre,
        post,
        cross_scale,
        act=make_act(cfg.act) if cfg.act is not None else None,
        groups=in_dim if cfg.depthwise else 1,
        token_window=token_window,
    )


def _init_weights(module: nn.Module) -> None:
    # timm's convention for these families: truncated normal(0.02) weights, zero biases
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _mixer_kwargs(params: MixerParams, scfg: StageConfig | InnerConfig, map_size: int) -> dict[str, Any]:
    """Constructor arguments of a mixer: its parameters, plus what it declares it needs."""
    mixer_cls = MIXERS.get(params.kind)
    kwargs = params.model_dump(exclude={"kind"})
    if mixer_cls.uses_heads:
        kwargs["num_heads"] = scfg.num_heads
    if mixer_cls.uses_map_size:
        kwargs["map_size"] = map_size
    return kwargs


def _stage_mixer(
    params: MixerParams, scfg: StageConfig, map_size: int, shared: dict[str, nn.Module | None]
) -> TokenMixer:
    """A mixer of a stage; ``shared`` (per mixer parameters, one dict per stage) keeps what the
    stage's mixers of those parameters share (``TokenMixer.stage_shared``)."""
    mixer_cls = MIXERS.get(params.kind)
    kwargs = _mixer_kwargs(params, scfg, map_size)
    key = params.model_dump_json()
    if key not in shared:
        shared[key] = mixer_cls.stage_shared(scfg.width, **kwargs)
    if shared[key] is not None:
        kwargs["shared"] = shared[key]
    return mixer_cls(scfg.width, **kwargs)


def _co_scale_group(
    cfg: ArchConfig,
    fused: range,
    stem_size: int,
    stage_shared: list[dict[str, nn.Module | None]],
    drop_rates: list[float],
) -> CoScaleGroup:
    """CoaT's parallel blocks over the stages ``fused``: per block and scale the stage's norm and
    next mixer of its pattern (sharing what the stage's mixers share), one FFN for all scales
    with ``share_ffn``."""
    blocks = []
    for p in range(cfg.co_scale.depth):
        mixers, ffns = [], []
        shared_ffn = _ffn(cfg.stages[fused[0]]) if cfg.co_scale.share_ffn else None
        for i in fused:
            scfg = cfg.stages[i]
            map_size = -(-stem_size // 2**i)
            mixers.append(_stage_mixer(scfg.mixer_for_block(scfg.depth + p), scfg, map_size, stage_shared[i]))
            ffns.append(shared_ffn if shared_ffn is not None else _ffn(scfg))
        norms = [functools.partial(_norm_factory(cfg.stages[i].norm), cfg.stages[i].width) for i in fused]
        blocks.append(CoScaleBlock(mixers, ffns, norms, drop_path=drop_rates[p]))
    return CoScaleGroup(blocks)


def _ffn(scfg: StageConfig | InnerConfig) -> nn.Module | None:
    if scfg.ffn.kind == "none":
        return None
    hidden = int(scfg.width * scfg.mlp_ratio)
    extra = {"dw_residual": True} if scfg.ffn.dw_residual else {}
    return FFNS[scfg.ffn.kind](scfg.width, hidden, act=scfg.ffn.act, bias=scfg.ffn.bias, **extra)


def _patch_projection(scfg: StageConfig, bias: bool) -> PatchProjection:
    """TNT's projection of a nested stage's pixels onto its map: flatten a patch -> norm -> Linear -> norm."""
    inner = scfg.inner
    assert inner is not None
    p = inner.patch_size
    norm_in = make_norm(inner.norm.kind, p * p * inner.width, inner.norm.eps, inner.norm.bias)
    norm_out = make_norm(scfg.norm.kind, scfg.width, scfg.norm.eps, scfg.norm.bias)
    return PatchProjection(inner.width, scfg.width, p, bias, norm_in, norm_out)


def _inner_block(inner: InnerConfig, index: int, map_size: int, drop_path: float) -> MetaFormerBlock:
    """The inner (pixel) block of a nested stage's ``index``-th block, on a ``map_size`` pixel map."""
    params = inner.mixer_for_block(index)
    mixer = MIXERS.get(params.kind)(inner.width, **_mixer_kwargs(params, inner, map_size))
    norm = _norm_factory(inner.norm)
    return MetaFormerBlock(
        inner.width, mixer, _ffn(inner), norm=functools.partial(norm, inner.width), drop_path=drop_path
    )


def _attention_downsample(cfg: ArchConfig, i: int, drop_rates: list[float]) -> AttentionDownsample:
    """MViT: stage ``i``'s first block is its downsampling (Q stride 2 in its pooling attention),
    reading the previous stage's map. Pre-norm, no layer/residual scale, as MViT's. MViTv2 widens
    the channels in its attention; MViT v1 (``widen: ffn``) before it, in the previous stage's last
    block's MLP, which the transition therefore starts with."""
    scfg, previous = cfg.stages[i], cfg.stages[i - 1]
    dim, in_dim = scfg.width, previous.width
    first = sum(s.depth for s in cfg.stages[:i])  # the index of this block over the whole model
    norm_factory = _norm_factory(scfg.norm)
    widen = None
    if cfg.downsample.widen == "ffn":
        hidden = int(in_dim * previous.mlp_ratio)
        mlp = Mlp(in_dim, hidden, act=previous.ffn.act, bias=previous.ffn.bias, out_dim=dim)
        proj = Linear(in_dim, dim) if in_dim != dim else None
        widen = FFNTransition(_norm_factory(previous.norm)(in_dim), mlp, proj, drop_rates[first - 1])
        in_dim = dim
    strides = cfg.stage_strides()
    previous_map = -(-cfg.input.resolution // strides[i - 1])
    params = scfg.mixer_for_block(0)
    attention = PoolingAttention(in_dim, dim_out=dim, q_stride=2, **_mixer_kwargs(params, scfg, previous_map))
    return AttentionDownsample(
        in_dim,
        dim,
        attention,
        _ffn(scfg),
        norm1=norm_factory(in_dim),
        norm2=norm_factory(dim),
        drop_path=drop_rates[first],
        widen=widen,
    )


def _bottleneck_block(
    cfg: ArchConfig, i: int, j: int, params: MixerParams, drop_path: float, stem_size: int
) -> BottleneckBlock:
    """Block j of stage i as a ResNet bottleneck; with ``strided_block`` downsampling the first block
    of a later stage reads the previous stage's map and halves it."""
    scfg = cfg.stages[i]
    assert scfg.bottleneck is not None
    strided = i > 0 and j == 0 and cfg.downsample.kind == "strided_block"
    map_size = -(-stem_size // 2 ** (i - 1 if strided else i))  # the map the mixer sees
    kwargs = _mixer_kwargs(params, scfg, map_size)
    if strided:
        kwargs["stride"] = 2
    mixer = MIXERS.get(params.kind)(scfg.bottleneck_width, **kwargs)
    act = scfg.bottleneck.act
    return BottleneckBlock(
        cfg.stages[i - 1].width if strided else scfg.width,
        scfg.width,
        scfg.bottleneck_width,
        mixer,
        norm=_norm_factory(scfg.norm),
        act=lambda: make_act(act),
        stride=2 if strided else 1,
        drop_path=drop_path,
    )


def _mobile_former_blocks(cfg: ArchConfig, i: int, drop_rates: list[float]) -> list[MobileFormerBlock]:
    """Stage ``i``'s Mobile-Former blocks: the first downsamples, from the previous stage's width
    (the stem's for the first stage)."""
    scfg = cfg.stages[i]
    mf = scfg.mobile_former
    # the config requires them
    assert mf is not None and cfg.tokens is not None and cfg.stem.widths is not None
    in_dim = cfg.stages[i - 1].width if i > 0 else cfg.stem.widths[-1]
    first = sum(s.depth for s in cfg.stages[:i])
    blocks = []
    for j, (width, expansion) in enumerate(zip(mf.block_widths(scfg.width), mf.expansions, strict=True)):
        blocks.append(
            MobileFormerBlock(
                in_dim,
                width,
                cfg.tokens.dim,
                expansion,
                stride=2 if j == 0 else 1,
                down_expansion=mf.down_expansion,
                bridge_heads=mf.bridge_heads,
                former_heads=mf.former_heads,
                former_mlp_ratio=mf.former_mlp_ratio,
                reduction=mf.reduction,
                token_gate=mf.token_gate,
                drop_path=drop_rates[first + j],
            )
        )
        in_dim = width
    return blocks


def _mobile_former_head(cfg: ArchConfig) -> MobileFormerHead:
    """Mobile-Former's classifier, with the last stage's bridge settings for its Mobile -> Former."""
    head, mf, tokens = cfg.head.mobile_former, cfg.stages[-1].mobile_former, cfg.tokens
    assert head is not None and mf is not None and tokens is not None  # the config requires them
    dim = cfg.stages[-1].width
    bridge = MobileToFormer(dim, tokens.dim, mf.bridge_heads, mf.token_gate, cfg.drop_path_rate)
    return MobileFormerHead(
        dim, cfg.input.num_classes, tokens.dim, head.conv_width, head.hidden, bridge, cfg.head.dropout
    )


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
    model = _branched_model(cfg, init_weights) if cfg.branches is not None else _metaformer(cfg, init_weights)
    model.arch_config = cfg  # the config it was built from (for summaries and export)
    if checkpoint is not None:
        from hvtnas.models.weights import load_weights

        load_weights(model, checkpoint, name=cfg.name)
    if features_only:
        return FeaturePyramid(model, out_indices)
    return model


def _branched_model(cfg: ArchConfig, init_weights: bool) -> BranchedMetaFormer:
    """CrossViT's parallel branches: each built as a model of its own (``ArchConfig.branch_configs``),
    then fused at ``fusion.points`` points by class-token cross-attention (the attended branch's
    heads, each side's stage norm)."""
    branch_cfgs = cfg.branch_configs()
    parts = [_metaformer(c, init_weights) for c in branch_cfgs]
    stages = [c.stages[0] for c in branch_cfgs]
    fusion = cfg.fusion
    assert fusion is not None  # the config requires it beside branches
    fusions = [
        ClassTokenExchange(
            [s.width for s in stages],
            [s.num_heads for s in stages],
            [_norm_factory(s.norm) for s in stages],
            fusion.act,
            fusion.qkv_bias,
        )
        for _ in range(fusion.points)
    ]
    if init_weights:
        for module in (m for f in fusions for m in f.modules()):
            _init_weights(module)
    scales = [c.input.resolution / cfg.input.resolution for c in branch_cfgs]
    return BranchedMetaFormer(parts, scales, fusions)


def _metaformer(cfg: ArchConfig, init_weights: bool) -> MetaFormer:
    """The single-skeleton model: stem -> stages -> [co-scale group] -> head."""
    widths = [s.width for s in cfg.stages]
    depths = [s.depth for s in cfg.stages]
    co_scale_depth = cfg.co_scale.depth if cfg.co_scale is not None else 0
    drop_rates = torch.linspace(0, cfg.drop_path_rate, sum(depths) + co_scale_depth, device="cpu").tolist()
    stem_size = -(-cfg.input.resolution // cfg.stem.stride)  # ceil: the patch stem pads
    strides = cfg.stage_strides()

    attention_transitions = cfg.downsample.kind == "pooling_attention"
    # MViT v1: the last block of every stage but the last ends in the next stage's transition
    widen_in_ffn = attention_transitions and cfg.downsample.widen == "ffn"
    token_streams = build_token_streams(
        cfg.tokens,
        widths,
        carried_by_downsample=attention_transitions,
        strides=strides,
        in_channels=cfg.input.channels,
    )
    # RegionViT: where a stage carries the regional tokens on, its downsampling takes them there too
    # (as a map of their own, one token per window of the map)
    stream_cls = TOKEN_STREAMS.get(cfg.tokens.kind) if cfg.tokens is not None else None
    token_window = getattr(cfg.tokens, "window_size", None)
    downsampled_tokens = [
        isinstance(stream, CarriedTokens) and stream_cls.carried_by_downsample for stream in token_streams
    ]
    stages = []
    stage_shared: list[dict[str, nn.Module | None]] = []
    for i, scfg in enumerate(cfg.stages):
        dim = scfg.width
        map_size = -(-cfg.input.resolution // strides[i])  # the stage's map side at the configured resolution
        norm_factory = _norm_factory(scfg.norm)
        downsample = (
            build_downsample(
                cfg.downsample, widths[i - 1], dim, token_window if downsampled_tokens[i] else None
            )
            if i > 0
            else None
        )
        first_block = 0
        if i > 0 and attention_transitions:
            downsample = _attention_downsample(cfg, i, drop_rates)
            first_block = 1
        if scfg.inner is not None:  # TNT: the stage's map is projected from the pixels it keeps
            downsample = _patch_projection(scfg, bias=True)
        blocks = []
        shared: dict[str, nn.Module | None] = {}  # per mixer parameters: what the stage's mixers share
        stage_shared.append(shared)
        if scfg.mobile_former is not None:  # built whole: their widths change inside the stage
            blocks = _mobile_former_blocks(cfg, i, drop_rates)
        for j in range(first_block, scfg.depth if scfg.mobile_former is None else 0):  # the others
            params = scfg.mixer_for_block(j)
            if scfg.bottleneck is not None:
                blocks.append(
                    _bottleneck_block(cfg, i, j, params, drop_rates[sum(depths[:i]) + j], stem_size)
                )
                continue
            ends_in_transition = widen_in_ffn and i < len(cfg.stages) - 1 and j == scfg.depth - 1
            block = MetaFormerBlock(
                dim,
                _stage_mixer(params, scfg, map_size, shared),
                None if ends_in_transition else _ffn(scfg),  # MViT v1: its FFN widens, in the transition
                norm=functools.partial(norm_factory, dim),
                drop_path=drop_rates[sum(depths[:i]) + j],
                layer_scale=scfg.layer_scale,
                res_scale=scfg.res_scale,
                post_norm=scfg.norm_position == "post",
                neighbour_conv=NeighbourConv(dim, scfg.neighbour_conv) if scfg.neighbour_conv else None,
                carries_tokens=token_streams[i] is not None,
            )
            if scfg.inner is not None:
                pixel_map = map_size * scfg.inner.patch_size
                block = NestedBlock(
                    _inner_block(scfg.inner, j, pixel_map, drop_rates[sum(depths[:i]) + j]),
                    _patch_projection(scfg, bias=False),
                    block,
                )
            blocks.append(block)
        pos_embed = None
        pe = cfg.pos_embed
        if pe.kind in ("absolute", "axial", "sinusoidal", "pixel_attention") and (i == 0 or pe.per_stage):
            if pe.kind in ("absolute", "axial"):
                size = max(1, stem_size // (strides[i] // cfg.stem.stride))
                embed_cls = AbsolutePosEmbed if pe.kind == "absolute" else AxialPosEmbed
                pos_embed = embed_cls(dim, (size, size))
            elif pe.kind == "pixel_attention":
                pos_embed = PixelAttention(dim, pe.kernel_size)
            else:
                pos_embed = SinusoidalPosEmbed(dim)
        stage_cls = NestedStage if scfg.inner is not None else Stage
        stages.append(
            stage_cls(
                blocks,
                downsample=downsample,
                pos_embed=pos_embed,
                peg=PEG(dim, cfg.pos_embed.kernel_size) if cfg.pos_embed.kind == "peg" else None,
                peg_before_each_block=cfg.pos_embed.peg_at == "before_each_block",
                out_norm=make_norm(scfg.norm.kind, dim, scfg.norm.eps, scfg.norm.bias)
                if scfg.out_norm
                else None,
                tokens=token_streams[i],
                downsample_takes_tokens=i > 0 and (attention_transitions or downsampled_tokens[i]),
            )
        )
    co_scale = None
    scale_norms = None
    if cfg.co_scale is not None:
        fused = range(len(cfg.stages) - cfg.co_scale.scales, len(cfg.stages))
        co_scale = _co_scale_group(cfg, fused, stem_size, stage_shared, drop_rates[sum(depths) :])
        scale_norms = [_optional_norm(cfg.head.norm, widths[i]) or nn.Identity() for i in fused][:-1]
    head_cfg = cfg.head
    layer_attention = None
    if head_cfg.layer_attention:  # CeiT's LCA reads the class token after every last-stage block
        last = cfg.stages[-1]
        stages[-1].token_history = True
        qkv_bias = getattr(last.mixer_for_block(last.depth - 1), "qkv_bias", True)
        assert last.num_heads is not None  # the config requires it
        layer_attention = LayerClassAttention(
            last.width, last.depth, last.num_heads, last.mlp_ratio, qkv_bias, last.norm.eps
        )
    if head_cfg.mobile_former is not None:  # its own classifier: see hvtnas.models.mobile_former
        head = _mobile_former_head(cfg)
    else:
        head = ClassifierHead(
            widths[-1],
            cfg.input.num_classes,
            norm=_optional_norm(head_cfg.norm, widths[-1]),
            norm_position=head_cfg.norm_position,
            mlp_ratio=head_cfg.mlp_ratio,
            act=head_cfg.act,
            dropout=head_cfg.dropout,
            # a class token is what the classifier reads (CeiT: through its layer attention); otherwise it
            # pools the map
            pool="layer_attention"
            if head_cfg.layer_attention
            else "token"
            if stream_cls is not None and stream_cls.read_by_head
            else "avg_tokens"  # RegionViT: its regional tokens
            if stream_cls is not None and stream_cls.pooled_by_head
            else "avg",
            scale_norms=scale_norms,
            layer_attention=layer_attention,
        )
    first = cfg.stages[0].inner
    stem_width = first.width if first is not None else widths[0]  # a nested first stage's pixels
    stem = build_stem(cfg.stem, cfg.input.channels, stem_width, 4 * (first.patch_size if first else 4))
    model = MetaFormer(stem, stages, head, widths, strides, co_scale=co_scale)
    if init_weights:
        for module in model.modules():
            _init_weights(module)
    return model
