"""Architecture configs: one concrete point of the MetaFormer design space.

``ArchConfig`` is what the zoo files hold, what a search exports and what ``build_model`` takes.
It holds names and numbers only, validates every field (unknown keys are rejected) and
round-trips through YAML. Errors name the field path, and the file and line when read from YAML.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from hvtnas.errors import ConfigError, RegistryError
from hvtnas.io import atomic_write_text, read_text
from hvtnas.models.mixers import MIXERS, MixerParams
from hvtnas.models.mixers.base import ActivationName as Activation
from hvtnas.models.tokens import TOKEN_STREAMS, TokenStreamParams, carrying_stages

MAX_STAGES = 4  # strides 4, 8, 16, 32
# Sizes beyond any real architecture: a mistyped size is refused up front, with why, instead of
# allocating gigabytes (or overflowing) when the model is built.
MAX_RESOLUTION = 8192  # input side in pixels (the stride-4 map alone is 4M tokens)
MAX_WIDTH = 16384  # channels of a stage (ViT-22B: 6144)
MAX_BLOCKS = 512  # blocks over all stages (the deepest published pyramids have < 100)
MAX_CLASSES = 100_000
MAX_INT = 100_000  # any other integer (kernel, window, pool sizes, ...)
MAX_PARAMS = 20e9  # estimated parameters: 80 GB in float32 before activations and optimizer state


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _kind_shorthand(value: Any) -> Any:
    """Let YAML say ``norm: layernorm`` for ``norm: {kind: layernorm}``."""
    return {"kind": value} if isinstance(value, str) else value


class _Kinded(_Strict):
    """A part chosen by ``kind``; YAML may give just the kind (``norm: layernorm``)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _kind_shorthand(value)


class NormConfig(_Kinded):
    kind: Literal["layernorm", "groupnorm", "batchnorm"] = "layernorm"
    eps: float = Field(1e-5, gt=0)
    bias: bool = True  # MetaFormer baselines use norms without bias

    @model_validator(mode="after")
    def _batchnorm_has_bias(self) -> NormConfig:
        if self.kind == "batchnorm" and not self.bias:
            raise PydanticCustomError("bn_bias", "batchnorm always has a bias; remove 'bias: false'")
        return self


class InputConfig(_Strict):
    channels: PositiveInt = Field(3, le=64)
    # square input the model is configured for (absolute PE size)
    resolution: PositiveInt = Field(224, le=MAX_RESOLUTION)
    num_classes: NonNegativeInt = Field(1000, le=MAX_CLASSES)  # 0: no classifier, forward() returns features


class StemConfig(_Kinded):
    """The entry into stage 1: stride 4 (a pyramid's), or ``patch_size`` for the ``patch`` stem.

    - ``patch``: non-overlapping 4x4 conv, stride 4 (Swin's patch embedding); ``patch_size`` 16
      (or 14, 7, ...) makes it ViT's patch embedding, the entry of an isotropic model whose one
      stage runs at that stride (ViT/DeiT, MLP-Mixer, S2-MLP); with
      ``kernel_sizes`` (e.g. [4, 8, 16, 32]) CrossFormer's cross-scale embedding: one stride-4
      conv per kernel (padding (k-4)/2), channels split 1/2, 1/4, ..., the last two equal, concatenated;
    - ``overlap``: one k x k conv, stride 4 (PVTv2 7x7 pad 3, PoolFormer 7x7 pad 2);
    - ``resnet``: one k x k conv with stride 2 (``kernel_size``, default 7; no bias) -> norm -> act ->
      3x3 max pool with stride 2 (ResNet's stem; HaloNet);
    - ``conv``: ``depth`` stacked convs (3x3 unless ``kernel_sizes`` says otherwise; padding k//2
      for odd k, 0 for even), the first two with stride 2 unless ``strides`` says otherwise, norm
      + act between (convolutional stem of CoAtNet / early-conv ViTs). ``last_norm`` is the norm
      after the last conv: ``true`` (the same as ``norm``), ``false`` (none: ResT) or a norm of
      its own (Shunted: BatchNorm between, LayerNorm at the end); ``last_bias`` gives the last
      conv a bias, ``bias`` every conv; ``widths`` are the output channels of the convs before
      the last (default: ``hidden_ratio`` x stage-1 width each; Shuffle Transformer: 32, 96);
    - ``pixel``: TNT's pixel embedding: the image cut into the first stage's patches (4 x its
      ``inner.patch_size`` pixels a side), each convolved alone (``kernel_size``, default 7,
      stride 4), plus a learned embedding per pixel position within a patch. It feeds a nested
      first stage (``stages[0].inner``) with its pixel map;
    - ``image_to_tokens``: CeiT's I2T: a ``kernel_size`` (default 7) conv with stride 2 and no bias
      to ``widths[0]`` channels, ``norm`` (BatchNorm in CeiT), a 3x3 max pool with stride 2, then
      a (patch_size / 4)-square conv with that stride: stage 1 runs at stride ``patch_size`` (16).
    - ``mobilenet``: Mobile-Former's: a 3x3 conv with stride 2 and no bias to ``widths[0]``
      channels, BatchNorm, ``act`` (ReLU6), then a lite bottleneck (depthwise 3x3 with
      ``lite_expansion`` outputs per channel, BN, ReLU6, pointwise to ``widths[1]``, BN, plus its
      input where the widths agree). Stride 2: it feeds Mobile-Former stages
      (``stages[i].mobile_former``), whose first blocks halve the map.
    """

    kind: Literal["patch", "overlap", "conv", "resnet", "pixel", "image_to_tokens", "mobilenet"] = "patch"
    patch_size: PositiveInt = Field(4, le=64)  # patch only: the stem's stride (16 for ViT's 16x16 patches)
    kernel_size: PositiveInt | None = None  # overlap, resnet, pixel and image_to_tokens only (default 7)
    padding: NonNegativeInt | None = None  # overlap only (default kernel_size // 2)
    depth: int = Field(2, ge=2)  # conv only
    hidden_ratio: float = Field(0.5, gt=0)  # conv only: hidden width = ratio * stage-1 width
    act: Activation = "gelu"  # conv and resnet only
    norm: NormConfig | None = None  # after the (last) conv; conv stems also between convs
    strides: list[Literal[1, 2]] | None = None  # conv only: one per conv, product 4 (default 2, 2, 1, ...)
    kernel_sizes: list[PositiveInt] | None = None  # conv: one per conv (default all 3); patch: cross-scale
    last_norm: bool | NormConfig = True  # conv only: see above
    last_bias: bool = False  # conv only
    bias: bool = False  # conv only: every conv has a bias
    # the output channels of the convs before the last: conv (depth - 1 widths, replaces
    # hidden_ratio) and image_to_tokens ([its first conv's], CeiT: 64)
    widths: list[PositiveInt] | None = None
    # mobilenet only: outputs per channel of the lite bottleneck's depthwise conv (default 2)
    lite_expansion: PositiveInt | None = Field(None, le=64)

    @model_validator(mode="after")
    def _mobilenet_fields(self) -> StemConfig:
        if self.kind != "mobilenet":
            if self.lite_expansion is not None:
                message = f"applies to the 'mobilenet' stem only (this one is '{self.kind}')"
                _fail(("lite_expansion",), self.lite_expansion, message)
            return self
        if self.widths is None or len(self.widths) != 2:
            _fail(
                ("widths",),
                self.widths,
                "the 'mobilenet' stem needs two widths: its 3x3 conv's and its lite bottleneck's",
            )
        if self.norm is not None:
            _fail(
                ("norm",), self.norm.kind, "the 'mobilenet' stem has BatchNorm after each conv: leave it out"
            )
        return self

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> StemConfig:
        if self.kind != "overlap" and self.padding is not None:
            _fail(
                ("padding",), self.padding, f"applies to the 'overlap' stem only (this one is '{self.kind}')"
            )
        kernel_stems = ("overlap", "resnet", "pixel", "image_to_tokens")
        if self.kind not in kernel_stems and self.kernel_size is not None:
            message = (
                "applies to the 'overlap', 'resnet', 'pixel' and 'image_to_tokens' stems only "
                f"(this one is '{self.kind}')"
            )
            _fail(("kernel_size",), self.kernel_size, message)
        odd = self.kernel_size is None or self.kernel_size % 2 == 1
        if self.kind in ("resnet", "pixel", "image_to_tokens") and not odd:
            message = f"the '{self.kind}' stem needs an odd kernel (padding k//2)"
            _fail(("kernel_size",), self.kernel_size, message)
        if self.kind == "image_to_tokens":
            if self.norm is None:
                _fail(
                    ("norm",),
                    None,
                    "the 'image_to_tokens' stem needs a norm after its conv (CeiT: batchnorm)",
                )
            if self.widths is None or len(self.widths) != 1:
                _fail(
                    ("widths",), self.widths, "the 'image_to_tokens' stem needs one width: its first conv's"
                )
            if self.patch_size % 4:
                _fail(
                    ("patch_size",),
                    self.patch_size,
                    "is the image_to_tokens stem's stride: 4 (conv and pool) times its last conv's, "
                    "a multiple of 4",
                )
        elif self.kind not in ("conv", "mobilenet") and self.widths is not None:
            message = f"applies to the 'conv' and 'image_to_tokens' stems only (this one is '{self.kind}')"
            _fail(("widths",), self.widths, message)
        if self.kind in ("conv", "resnet") and self.norm is None:
            raise PydanticCustomError(
                "stem_norm", "the '{kind}' stem needs a norm (e.g. batchnorm)", {"kind": self.kind}
            )
        conv_only = {
            "strides": self.strides is not None,
            "kernel_sizes": self.kernel_sizes is not None and self.kind != "patch",
            "last_norm": self.last_norm is not True,
            "last_bias": self.last_bias,
            "bias": self.bias,
        }
        if self.kind != "conv" and any(conv_only.values()):
            field = next(name for name, used in conv_only.items() if used)
            message = f"applies to the 'conv' stem only (this one is '{self.kind}')"
            _fail((field,), getattr(self, field), message)
        for field in ("strides", "kernel_sizes"):
            value = getattr(self, field)
            if self.kind == "conv" and value is not None and len(value) != self.depth:
                _fail((field,), value, f"needs one entry per conv (depth {self.depth})")
        if self.kind not in ("patch", "image_to_tokens") and self.patch_size != 4:
            _fail(
                ("patch_size",),
                self.patch_size,
                f"applies to the 'patch' and 'image_to_tokens' stems only (this one is '{self.kind}')",
            )
        if self.kind == "conv" and self.widths is not None and len(self.widths) != self.depth - 1:
            _fail(("widths",), self.widths, f"needs one width per conv before the last (depth {self.depth})")
        if self.kind == "patch" and self.kernel_sizes is not None:
            if self.patch_size != 4:
                _fail(
                    ("kernel_sizes",),
                    self.kernel_sizes,
                    "the cross-scale embedding has stride 4 (patch_size 4)",
                )
            _check_cross_scale(self.kernel_sizes, stride=4)
        if self.strides is not None and math.prod(self.strides) != 4:
            _fail(("strides",), self.strides, "the strides must multiply to 4 (the stem's stride)")
        return self

    @property
    def stride(self) -> int:
        """How much smaller stage 1's map is than the image."""
        if self.kind == "mobilenet":
            return 2
        return self.patch_size if self.kind in ("patch", "image_to_tokens") else 4

    def conv_strides(self) -> list[int]:
        return list(self.strides) if self.strides is not None else [2, 2] + [1] * (self.depth - 2)

    def conv_kernel_sizes(self) -> list[int]:
        return list(self.kernel_sizes) if self.kernel_sizes is not None else [3] * self.depth

    def conv_widths(self, dim: int) -> list[int]:
        """Output channels of every conv, the last one ``dim`` (stage 1's width)."""
        if self.widths is not None:
            return [*self.widths, dim]
        return [max(1, int(self.hidden_ratio * dim))] * (self.depth - 1) + [dim]


def _check_cross_scale(kernel_sizes: list[int], stride: int) -> None:
    if any(k < stride or (k - stride) % 2 for k in kernel_sizes):
        _fail(
            ("kernel_sizes",),
            kernel_sizes,
            f"cross-scale kernels must be >= the stride {stride} and differ from it by an even number",
        )


def cross_scale_widths(width: int, kernels: int) -> list[int]:
    """CrossFormer's channel split of ``width`` over ``kernels`` convs: 1/2, 1/4, ..., the last two equal."""
    return [width // 2 ** (i + 1) for i in range(kernels - 1)] + [width // 2 ** (kernels - 1)]


class DownsampleConfig(_Kinded):
    """Patch merging between stages (stride 2).

    - ``conv``: k x k conv with stride 2, padding (k-1)//2: k=2 is the strided 2x2 conv
      (Twins, ShiftViT), k=3 the overlapping conv (PVTv2, PoolFormer, MetaFormer);
    - ``patch_merging``: Swin's concat of 2x2 neighbours -> norm(4C) -> Linear(4C, C_out, no bias);
      with ``norm_position: post`` Linear -> norm(C_out) (Swin V2).
    ``norm_position`` says whether the norm acts on the input (pre) or output (post) channels.
    ``pool`` is CoAtNet's cheap shortcut downsampling: 2x2 average pool -> Linear(C, C_out).
    ``pooling_attention`` is MViTv2's: no separate layer; the first block of each later stage
    is a transition block whose pooling attention halves the map (Q stride 2, max-pooled
    shortcut) and widens the channels (that stage's first mixer must be ``pooling_attention``).
    ``kernel_sizes`` (conv only; replaces ``kernel_size``) is CrossFormer's cross-scale
    embedding: one stride-2 conv per kernel, channels split 1/2, 1/4, ..., concatenated.
    ``strided_block`` is ResNet's (HaloNet): no separate layer; the first block of each later
    stage, a bottleneck block, halves the map with a stride-2 mixer and a strided 1x1 conv + norm
    on its shortcut (those stages need ``bottleneck`` and a mixer that can stride).
    ``act`` (conv only) acts between the pre-norm and the conv, and ``depthwise`` (conv only) gives
    the conv one group per input channel (each makes C_out / C_in channels): RegionViT's LN -> GELU
    -> depthwise 3x3, which also downsamples its regional tokens.
    """

    kind: Literal["conv", "patch_merging", "pool", "pooling_attention", "strided_block"] = "conv"
    # pooling_attention only: where the channels widen: in the transition's attention (MViTv2) or
    # in the MLP of the block before it, the previous stage's last (MViT v1; that block's FFN then
    # opens the transition and the previous stage's output is taken before it)
    widen: Literal["attention", "ffn"] = "attention"
    kernel_size: PositiveInt = 2
    kernel_sizes: list[PositiveInt] | None = None
    bias: bool = True
    norm: NormConfig | None = None
    norm_position: Literal["pre", "post"] = "post"
    act: Activation | None = None  # conv only: after the pre-norm
    depthwise: bool = False  # conv only: one group per input channel

    @model_validator(mode="after")
    def _conv_only_fields(self) -> DownsampleConfig:
        for field, used in (("act", self.act is not None), ("depthwise", self.depthwise)):
            if used and self.kind != "conv":
                _fail(
                    (field,),
                    getattr(self, field),
                    f"applies to the 'conv' downsampling only (this one is '{self.kind}')",
                )
        if self.depthwise and self.kernel_sizes is not None:
            _fail(("depthwise",), True, "the cross-scale embedding (kernel_sizes) has no depthwise form")
        return self

    @model_validator(mode="after")
    def _widen_needs_attention(self) -> DownsampleConfig:
        if self.widen != "attention" and self.kind != "pooling_attention":
            _fail(
                ("widen",),
                self.widen,
                f"applies to the 'pooling_attention' downsampling only (this one is '{self.kind}')",
            )
        return self

    @model_validator(mode="after")
    def _kernel_sizes_fit(self) -> DownsampleConfig:
        if self.kernel_sizes is not None:
            if self.kind != "conv":
                _fail(("kernel_sizes",), self.kernel_sizes, "applies to the 'conv' downsampling only")
            _check_cross_scale(self.kernel_sizes, stride=2)
        return self


class PosEmbedConfig(_Kinded):
    """Model-level positional encoding.

    ``absolute`` (learnable, interpolated at other input sizes), ``axial`` (learnable, one vector
    per row for half the channels and one per column for the other half: Vision Longformer's) and
    ``sinusoidal`` (fixed 2-D) are added at the entrance of stage 1, or of every stage with
    ``per_stage`` (PVT v1, Vision Longformer);
    ``peg`` is CPVT's conditional encoding, a depthwise conv + residual after the first block
    of each stage (Twins), or, with ``peg_at: before_each_block``, before every block of the
    stage, one conv per stage shared by its blocks (CoaT's convolutional position encoding);
    ``pixel_attention`` is ResT's gate ``x * sigmoid(dwconv(x))`` after the
    stem (and after every downsampling with ``per_stage``). Relative position bias is a
    parameter of the window mixers, LePE of the cross-shaped window mixer, and the Mix-FFN
    depthwise conv an FFN kind.
    """

    kind: Literal["none", "absolute", "axial", "sinusoidal", "peg", "pixel_attention"] = "none"
    per_stage: bool = False
    kernel_size: PositiveInt = 3  # peg and pixel_attention
    peg_at: Literal["after_first_block", "before_each_block"] = "after_first_block"  # peg only

    @model_validator(mode="after")
    def _peg_at_needs_peg(self) -> PosEmbedConfig:
        if self.peg_at != "after_first_block" and self.kind != "peg":
            _fail(("peg_at",), self.peg_at, f"applies to the 'peg' encoding only (this one is '{self.kind}')")
        return self


class FFNConfig(_Kinded):
    """``mlp``: Linear -> act -> Linear; ``mixffn``: Linear -> depthwise 3x3 -> act -> Linear
    (PVTv2 / SegFormer, positional information from the zero padding; with ``dw_residual`` the
    conv is residual, act(h + dwconv(h)), as in Shunted); ``leff``: CeiT's locally-enhanced FFN,
    Linear -> BN -> act -> depthwise 3x3 -> BN -> act -> Linear -> BN (tokens beside the map pass it
    unchanged); ``none``: no FFN sub-block (CoAtNet's MBConv stages)."""

    kind: Literal["mlp", "mixffn", "leff", "none"] = "mlp"
    act: Activation = "gelu"
    bias: bool = True
    dw_residual: bool = False  # mixffn only

    @model_validator(mode="after")
    def _dw_residual_needs_mixffn(self) -> FFNConfig:
        if self.dw_residual and self.kind != "mixffn":
            _fail(("dw_residual",), True, f"applies to the 'mixffn' FFN only (this one is '{self.kind}')")
        return self


def _parse_mixer(value: Any) -> Any:
    if isinstance(value, MixerParams):
        value = value.model_dump()
    value = _kind_shorthand(value)
    if not isinstance(value, dict):
        raise PydanticCustomError("mixer_type", "a mixer is a name or a mapping with a 'kind' key")
    if "kind" not in value:
        raise PydanticCustomError(
            "mixer_kind", "a mixer needs a 'kind'; known: {known}", {"known": ", ".join(MIXERS.names())}
        )
    try:
        mixer_cls = MIXERS.get(value["kind"])
    except RegistryError as err:
        raise PydanticCustomError("unknown_mixer", str(err)) from None
    return mixer_cls.Params.model_validate(value)


MixerSpec = Annotated[SerializeAsAny[MixerParams], BeforeValidator(_parse_mixer)]


class BottleneckConfig(_Strict):
    """ResNet's bottleneck block around the token mixer (HaloNet): 1x1 conv to ``ratio`` x the
    stage's width -> norm -> act -> mixer -> norm -> act -> 1x1 conv back -> norm, added to the
    shortcut, then act. The norms are the stage's ``norm``; there is no FFN."""

    ratio: float = Field(1.0, gt=0, le=8)
    act: Activation = "relu"


class MobileFormerConfig(_Strict):
    """Mobile-Former blocks (``hvtnas.models.mobile_former``) instead of MetaFormer blocks: per
    block, Mobile -> Former cross-attention (the global tokens query the map), the tokens' Former,
    an inverted residual with dynamic ReLUs made from the first token, Former -> Mobile
    cross-attention (the map queries the tokens). The stage's first block downsamples: its
    inverted residual is depthwise 3x3 stride 2 (``expansions[0]`` outputs per input channel) ->
    pointwise -> depthwise 3x3 (``down_expansion`` per channel) -> pointwise. The others expand
    their input ``expansions[j]`` times (pointwise -> depthwise 3x3 -> pointwise). The tokens are
    the model's ``tokens: {kind: global, dim: ...}``; the stage has no mixers or FFN of its own."""

    expansions: list[PositiveInt] = Field(min_length=1)  # one per block
    # each block's output width (default: the stage's); the last is the stage's width
    widths: list[PositiveInt] | None = None
    down_expansion: PositiveInt = Field(4, le=64)
    bridge_heads: PositiveInt = 2  # of both cross-attentions
    former_heads: PositiveInt = 4
    former_mlp_ratio: float = Field(2.0, gt=0, le=64)
    # the dynamic ReLU's coefficient MLP: token width -> width / reduction -> 2 x channels
    reduction: PositiveInt = 4
    # the released models' extra gate on Mobile -> Former: the attended values scaled per channel
    # by 2 hardsigmoid(Linear(token)) before the projection (not in the paper's equations)
    token_gate: bool = False

    def block_widths(self, width: int) -> list[int]:
        return list(self.widths) if self.widths is not None else [width] * len(self.expansions)


class InnerConfig(_Strict):
    """TNT's inner transformer: makes a stage *nested*.

    A nested stage keeps its input map (the stem's for the first stage, else the previous
    stage's), ``patch_size`` x ``patch_size`` pixels under each token of its own map, which it makes
    from those pixels by a patch projection (flatten the patch -> norm -> Linear -> norm) instead of
    the usual downsampling: its stride is its input's times ``patch_size``. Each of its blocks first
    runs an inner MetaFormer block on the pixels (``width`` channels; ``mixers``, ``heads``,
    ``mlp_ratio``, ``ffn``, ``norm`` as a stage's), then adds their projection (no bias) to the
    map, then runs the stage's own block. TNT's attention among the pixels of one patch is the
    default: window attention with the patch as window, without relative position bias.
    """

    width: PositiveInt = Field(le=MAX_WIDTH)
    patch_size: int = Field(4, ge=2, le=16)
    mixers: list[MixerSpec] = Field(
        default_factory=lambda: [{"kind": "window", "window_size": 4, "relative_position_bias": False}],
        min_length=1,
        validate_default=True,
    )
    heads: PositiveInt | None = None
    mlp_ratio: float = Field(4.0, gt=0, le=64)
    ffn: FFNConfig = FFNConfig()
    norm: NormConfig = NormConfig()

    @model_validator(mode="after")
    def _heads_fit(self) -> InnerConfig:
        if self.heads is not None and self.width % self.heads:
            _fail(("heads",), self.heads, f"{self.heads} does not divide width {self.width}")
        for mixer in self.mixers:
            mixer_cls = MIXERS.get(mixer.kind)
            if mixer_cls.uses_heads and self.heads is None:
                _fail(("heads",), None, f"mixer '{mixer.kind}' needs 'heads'")
            if self.heads is not None and self.heads % mixer_cls.heads_multiple:
                _fail(
                    ("heads",),
                    self.heads,
                    f"mixer '{mixer.kind}' needs a multiple of {mixer_cls.heads_multiple}",
                )
        if self.ffn.kind == "none":
            _fail(("ffn", "kind"), "none", "the inner block needs an FFN (TNT's inner MLP)")
        return self

    @property
    def num_heads(self) -> int | None:
        return self.heads

    def mixer_for_block(self, index: int) -> MixerParams:
        return self.mixers[index % len(self.mixers)]


def _parse_tokens(value: Any) -> Any:
    if isinstance(value, TokenStreamParams):
        value = value.model_dump()
    value = _kind_shorthand(value)
    if value is None:
        return None
    if not isinstance(value, dict) or "kind" not in value:
        raise PydanticCustomError(
            "tokens_kind",
            "tokens are a kind name or a mapping with a 'kind' key; known: {known}",
            {"known": ", ".join(TOKEN_STREAMS.names())},
        )
    try:
        stream_cls = TOKEN_STREAMS.get(value["kind"])
    except RegistryError as err:
        raise PydanticCustomError("unknown_tokens", str(err)) from None
    return stream_cls.Params.model_validate(value)


# tokens beside the map (hvtnas.models.tokens): a registered kind and its parameters
TokensSpec = Annotated[SerializeAsAny[TokenStreamParams] | None, BeforeValidator(_parse_tokens)]


class StageConfig(_Strict):
    depth: PositiveInt = Field(le=MAX_BLOCKS)
    width: PositiveInt = Field(le=MAX_WIDTH)
    # cycled over the stage's blocks: Swin is [window, shifted_window]
    mixers: list[MixerSpec] = Field(min_length=1)
    head_dim: PositiveInt | None = Field(None, validate_default=True)  # alternative to heads
    heads: PositiveInt | None = Field(None, validate_default=True)
    mlp_ratio: float = Field(4.0, gt=0, le=64)
    ffn: FFNConfig = FFNConfig()
    norm: NormConfig = NormConfig()
    layer_scale: float | None = Field(None, gt=0)  # init value of per-channel branch scales
    res_scale: bool = False  # learnable per-channel scale on the shortcut (MetaFormer baselines)
    out_norm: bool = False  # a norm on the stage output (PVT): the pyramid level is normalised
    # pre: x + f(norm(x)) (most models); post: x + norm(f(x)), Swin V2's residual post-norm
    norm_position: Literal["pre", "post"] = "pre"
    inner: InnerConfig | None = None  # a nested stage (TNT): see InnerConfig
    # Shuffle Transformer's neighbour-window connection: a third sub-block between mixer and FFN,
    # x + dwconv(norm(x)), a depthwise k x k conv (no bias) with this kernel size; none: no such sub-block
    neighbour_conv: PositiveInt | None = Field(None, le=31)
    # ResNet bottleneck blocks (HaloNet) instead of MetaFormer blocks; none: MetaFormer blocks
    bottleneck: BottleneckConfig | None = None
    # Mobile-Former blocks instead of MetaFormer blocks (see MobileFormerConfig)
    mobile_former: MobileFormerConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _mobile_former_has_no_mixers(cls, data: Any) -> Any:
        # a Mobile-Former stage mixes its map in its own blocks: no mixer or FFN to give
        if isinstance(data, dict) and data.get("mobile_former") is not None:
            data = {"mixers": ["identity"], "ffn": "none", **data}
        return data

    @field_validator("head_dim")
    @classmethod
    def _head_dim_divides_width(cls, head_dim: int | None, info: ValidationInfo) -> int | None:
        width = info.data.get("width")
        if head_dim is not None and width is not None and width % head_dim:
            raise PydanticCustomError(
                "head_dim", "{head_dim} does not divide width {width}", {"head_dim": head_dim, "width": width}
            )
        return head_dim

    @field_validator("heads")
    @classmethod
    def _heads_fit(cls, heads: int | None, info: ValidationInfo) -> int | None:
        width, head_dim = info.data.get("width"), info.data.get("head_dim")
        if heads is not None and width is not None:
            if width % heads:
                raise PydanticCustomError(
                    "heads", "{heads} does not divide width {width}", {"heads": heads, "width": width}
                )
            if head_dim is not None and heads * head_dim != width:
                raise PydanticCustomError(
                    "heads",
                    "heads ({heads}) x head_dim ({head_dim}) must equal width ({width}); give one of them",
                    {"heads": heads, "head_dim": head_dim, "width": width},
                )
        mixers = info.data.get("mixers", [])
        needs_heads = [m.kind for m in mixers if MIXERS.get(m.kind).uses_heads]
        num_heads = heads if heads is not None else (width // head_dim if width and head_dim else None)
        for m in mixers:
            multiple = MIXERS.get(m.kind).heads_multiple
            if num_heads is not None and num_heads % multiple:
                raise PydanticCustomError(
                    "heads_multiple",
                    "mixer '{kind}' splits the heads into {multiple} groups: {heads} heads is not a multiple",
                    {"kind": m.kind, "multiple": multiple, "heads": num_heads},
                )
            problem = m.heads_problem(num_heads) if num_heads is not None else None
            if problem is not None:
                raise PydanticCustomError(
                    "mixer_heads", "mixer '{kind}': {problem}", {"kind": m.kind, "problem": problem}
                )
        # "head_dim" is absent from info.data when it failed its own check: report that error only
        if needs_heads and heads is None and "head_dim" in info.data and head_dim is None:
            raise PydanticCustomError(
                "heads_missing", "mixer '{kind}' needs 'heads' or 'head_dim'", {"kind": needs_heads[0]}
            )
        return heads

    @field_validator("neighbour_conv")
    @classmethod
    def _odd_kernel(cls, kernel: int | None) -> int | None:
        if kernel is not None and kernel % 2 == 0:
            raise PydanticCustomError(
                "odd_kernel",
                "{kernel} is even: the conv keeps the map's size only with an odd kernel",
                {"kernel": kernel},
            )
        return kernel

    @model_validator(mode="after")
    def _bottleneck_fits(self) -> StageConfig:
        if self.bottleneck is None:
            return self
        metaformer_only = {
            "ffn": self.ffn.kind != "none",
            "layer_scale": self.layer_scale is not None,
            "res_scale": self.res_scale,
            "norm_position": self.norm_position != "pre",
            "neighbour_conv": self.neighbour_conv is not None,
        }
        for field, used in metaformer_only.items():
            if used:
                value = self.ffn.kind if field == "ffn" else getattr(self, field)
                _fail(
                    (field,),
                    value,
                    "does not apply to bottleneck blocks (set ffn: none, leave it out otherwise)",
                )
        heads, mid = self.num_heads, self.bottleneck_width
        if heads is not None and mid % heads:
            _fail(
                ("bottleneck", "ratio"),
                self.bottleneck.ratio,
                f"the mixer's width {mid} is not a multiple of {heads} heads",
            )
        return self

    @model_validator(mode="after")
    def _mobile_former_fits(self) -> StageConfig:
        mf = self.mobile_former
        if mf is None:
            return self
        others = {
            "mixers": [m.kind for m in self.mixers] != ["identity"],
            "ffn": self.ffn.kind != "none",
            "layer_scale": self.layer_scale is not None,
            "res_scale": self.res_scale,
            "out_norm": self.out_norm,
            "norm_position": self.norm_position != "pre",
            "neighbour_conv": self.neighbour_conv is not None,
            "bottleneck": self.bottleneck is not None,
            "inner": self.inner is not None,
        }
        for field, used in others.items():
            if used:
                value = [m.kind for m in self.mixers] if field == "mixers" else getattr(self, field)
                value = value.kind if isinstance(value, FFNConfig) else value
                _fail(
                    (field,),
                    value,
                    "does not apply to Mobile-Former blocks (they mix the map themselves): leave it out",
                )
        if len(mf.expansions) != self.depth:
            _fail(
                ("mobile_former", "expansions"),
                mf.expansions,
                f"needs one expansion per block (depth {self.depth})",
            )
        if mf.widths is not None and (len(mf.widths) != self.depth or mf.widths[-1] != self.width):
            _fail(
                ("mobile_former", "widths"),
                mf.widths,
                f"needs one width per block (depth {self.depth}), the last the stage's ({self.width})",
            )
        for w in mf.block_widths(self.width):
            if w % mf.bridge_heads:
                _fail(
                    ("mobile_former", "bridge_heads"),
                    mf.bridge_heads,
                    f"the bridges split the map's channels into heads: {mf.bridge_heads} does not divide {w}",
                )
        return self

    @property
    def bottleneck_width(self) -> int:
        """The mixer's width: the stage's, or ``bottleneck.ratio`` times it in a bottleneck block."""
        return self.width if self.bottleneck is None else max(1, round(self.width * self.bottleneck.ratio))

    @property
    def num_heads(self) -> int | None:
        if self.heads is not None:
            return self.heads
        return self.width // self.head_dim if self.head_dim is not None else None

    def mixer_for_block(self, index: int) -> MixerParams:
        return self.mixers[index % len(self.mixers)]


class MobileFormerHeadConfig(_Strict):
    """Mobile-Former's classifier: the tokens read the last map once more (Mobile -> Former);
    the map through a 1x1 conv to ``conv_width`` (BN, ReLU6), averaged (h-swish), concatenated with
    the first token, then Linear to ``hidden`` (BN, h-swish), dropout and the classifier."""

    conv_width: PositiveInt = Field(le=MAX_WIDTH)
    hidden: PositiveInt = Field(le=MAX_WIDTH)


class HeadConfig(_Strict):
    """Classifier: norm (before or after global average pooling) -> [MLP] -> Linear.

    A model with a class token (``tokens: {kind: class}``: ViT/DeiT, CvT, PVT v1) classifies from
    that token, normalised, instead of the pooled map (timm's ``global_pool='token'``); with
    ``layer_attention`` (CeiT) through a layer-wise class-token attention: the class token after
    each of the last stage's blocks, plus a learned embedding per block, and one transformer block
    (the last stage's heads, ``mlp_ratio`` and norm eps) in which the last of them attends over all.
    """

    layer_attention: bool = False
    # Mobile-Former's head (needs Mobile-Former stages; then no norm or MLP head)
    mobile_former: MobileFormerHeadConfig | None = None

    norm: NormConfig | None = NormConfig()
    norm_position: Literal["pre_pool", "post_pool"] = "pre_pool"
    mlp_ratio: float | None = Field(None, gt=0)  # MetaFormer baselines' MLP head (ratio 4)
    act: Activation = "squared_relu"  # MLP head only
    dropout: float = Field(0.0, ge=0, lt=1)


class CoScaleConfig(_Strict):
    """CoaT's parallel group, after the stages: ``depth`` co-scale blocks run the maps of the last
    ``scales`` stages (of one width) side by side, each scale through its stage's norm, mixer (the
    stage's mixer pattern, continued) and FFN; the mixers' outputs are fused across the scales
    (each gets the others', bilinearly resized to its map). The pyramid's last ``scales`` levels
    are taken after the group, and the classifier aggregates them: each scale pooled (or its class
    token read) and normalised by a norm of its own, then a learned weighting of the scales (CoaT's
    1x1 convolution over them) before the classifier."""

    depth: PositiveInt = Field(le=MAX_BLOCKS)
    scales: int = Field(3, ge=2, le=MAX_STAGES)
    share_ffn: bool = True  # one FFN for all scales (CoaT), or one each


class BranchConfig(_Strict):
    """A branch beside the model's own (CrossViT's): its own stem and stages on the image, resized
    to ``resolution`` (bicubic; None: the input as it is). Everything else (position embedding,
    tokens, downsampling, classifier head, drop path) is the model's: a branch is the model with
    this stem and these stages, less the other branches (``ArchConfig.branch_configs``)."""

    resolution: PositiveInt | None = Field(None, le=MAX_RESOLUTION)
    stem: StemConfig = StemConfig()
    stages: list[StageConfig] = Field(min_length=1, max_length=1)


class FusionConfig(_Kinded):
    """How parallel branches exchange information (``ArchConfig.branches``).

    ``class_attention`` is CrossViT's cross-attention fusion: ``points`` times (after every
    depth / points blocks of each branch) every branch's class token is projected to the next
    branch's width (norm -> act -> Linear), attends as the only query over that branch's
    ``[class token; patches]`` (norm, q / k / v with the target stage's heads and ``qkv_bias``,
    output projection; residual on the projected token), is projected back (norm -> act ->
    Linear) and replaces the branch's class token. The branches exchange in a ring: branch i
    queries branch i + 1, the last the first."""

    kind: Literal["class_attention"] = "class_attention"
    points: PositiveInt = Field(le=MAX_BLOCKS)
    act: Activation = "gelu"
    qkv_bias: bool = True


class ArchConfig(_Strict):
    """One concrete architecture: stem -> up to 4 stages (strides 4..32) -> [co-scale group] -> head."""

    name: str | None = None
    # free-form notes that do not change the model (an export records its costs and metrics here)
    metadata: dict[str, Any] | None = None
    input: InputConfig = InputConfig()
    stem: StemConfig = StemConfig()
    pos_embed: PosEmbedConfig = PosEmbedConfig()
    stages: list[StageConfig] = Field(min_length=1, max_length=MAX_STAGES)
    # tokens beside the map from a stage on (class, global tokens: hvtnas.models.tokens)
    tokens: TokensSpec = None
    downsample: DownsampleConfig = DownsampleConfig()
    head: HeadConfig = HeadConfig()
    # CoaT's parallel blocks over the last stages' maps (None: none)
    co_scale: CoScaleConfig | None = None
    # CrossViT: branches beside the model's own stem and stages, fused by ``fusion`` (None: none)
    branches: list[BranchConfig] | None = Field(None, min_length=1, max_length=7)
    fusion: FusionConfig | None = None
    drop_path_rate: float = Field(0.0, ge=0, lt=1)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        # a name becomes a file or folder name (exports, `hvtnas train`'s default output folder)
        if name is not None and (name.startswith(".") or any(c in name for c in "/\\\0")):
            raise PydanticCustomError(
                "plain_name", "a name may not contain '/' nor start with '.' (it names files)"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _no_absurd_integers(cls, data: Any) -> Any:
        def check(value: Any, loc: tuple) -> None:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
                _fail(loc, value, f"{value} is larger than any size hvtnas builds (limit {MAX_INT:,})")
            elif isinstance(value, dict):
                for key, item in value.items():
                    if loc or key != "metadata":  # an export's metadata holds counts (FLOPs, params)
                        check(item, (*loc, key))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    check(item, (*loc, i))

        check(data, ())
        return data

    @model_validator(mode="after")
    def _within_limits(self) -> ArchConfig:
        blocks = sum(s.depth for s in self.stages)
        if self.co_scale is not None:
            blocks += self.co_scale.depth * self.co_scale.scales
        if blocks > MAX_BLOCKS:
            _fail(
                ("stages",),
                [s.depth for s in self.stages],
                f"{blocks} blocks in all is more than the limit of {MAX_BLOCKS}",
            )
        params = estimated_params(self)
        if params > MAX_PARAMS:
            _fail(
                ("stages",),
                [s.width for s in self.stages],
                f"about {params:.3g} parameters is more than the limit of {MAX_PARAMS:.3g} "
                f"({MAX_PARAMS * 4 / 1e9:.0f} GB of float32 weights)",
            )
        return self

    @model_validator(mode="after")
    def _attention_downsampling_has_its_mixer(self) -> ArchConfig:
        if self.downsample.kind == "pooling_attention":
            for i, stage in enumerate(self.stages[1:], start=1):
                if stage.mixers[0].kind != "pooling_attention":
                    _fail(
                        ("stages", i, "mixers", 0),
                        stage.mixers[0].kind,
                        "downsample 'pooling_attention' makes this stage's first block the transition: "
                        "its first mixer must be 'pooling_attention'",
                    )
        return self

    @model_validator(mode="after")
    def _nested_stages_fit(self) -> ArchConfig:
        first = self.stages[0].inner
        if self.stem.kind == "pixel" and first is None:
            _fail(
                ("stem", "kind"),
                "pixel",
                "the pixel stem feeds a nested first stage (TNT): give stages[0] an 'inner' transformer",
            )
        for i, stage in enumerate(self.stages[1:], start=1):
            if stage.inner is None:
                continue
            if stage.inner.width != self.stages[i - 1].width:
                _fail(
                    ("stages", i, "inner", "width"),
                    stage.inner.width,
                    f"a nested stage's pixels are the previous stage's map: width {self.stages[i - 1].width}",
                )
            if self.downsample.kind == "pooling_attention":
                _fail(
                    ("stages", i, "inner"),
                    "inner",
                    "a nested stage makes its map by patch projection; it cannot also open with "
                    "downsample 'pooling_attention'",
                )
        return self

    @model_validator(mode="after")
    def _mobile_former_model_fits(self) -> ArchConfig:
        """Mobile-Former stages come as a whole model: a stride-2 mobilenet stem, every stage of
        Mobile-Former blocks (each opening with its downsampling block), global tokens of their own
        width carried through all of them, and Mobile-Former's head."""
        mobile = [s.mobile_former is not None for s in self.stages]
        token_dim = getattr(self.tokens, "dim", None)
        if not any(mobile):
            if self.stem.kind == "mobilenet":
                _fail(
                    ("stem", "kind"),
                    "mobilenet",
                    "the stride-2 'mobilenet' stem feeds Mobile-Former stages "
                    "(stages[i].mobile_former), whose first blocks halve the map",
                )
            if self.head.mobile_former is not None:
                _fail(
                    ("head", "mobile_former"),
                    "mobile_former",
                    "Mobile-Former's head needs Mobile-Former stages",
                )
            if token_dim is not None:
                _fail(
                    ("tokens", "dim"),
                    token_dim,
                    "tokens of a width of their own are read by Mobile-Former "
                    "blocks only (stages[i].mobile_former)",
                )
            return self
        if not all(mobile):
            i = mobile.index(False)
            _fail(
                ("stages", i, "mobile_former"),
                None,
                "Mobile-Former stages come as a whole model: every stage "
                "needs mobile_former (the tokens' width and the strides follow from it)",
            )
        if self.stem.kind != "mobilenet":
            _fail(
                ("stem", "kind"),
                self.stem.kind,
                "Mobile-Former stages open with a stride-2 block: they need the stride-2 'mobilenet' stem",
            )
        if self.downsample.kind != "strided_block":
            _fail(
                ("downsample", "kind"),
                self.downsample.kind,
                "Mobile-Former stages downsample in their first block: use 'strided_block'",
            )
        tokens = self.tokens
        if (
            tokens is None
            or tokens.kind != "global"
            or token_dim is None
            or tokens.from_stage != 0
            or tokens.last_stage is not None
            or tokens.each_stage != "carry"
        ):
            _fail(
                ("tokens",),
                None if tokens is None else tokens.kind,
                "Mobile-Former stages need global "
                "tokens of their own width carried through every stage: {kind: global, count: 6, dim: 192}",
            )
        assert token_dim is not None
        if self.head.mobile_former is None:
            _fail(
                ("head", "mobile_former"),
                None,
                "Mobile-Former stages need Mobile-Former's head "
                "(head: {mobile_former: {conv_width: ..., hidden: ...}, norm: null})",
            )
        for field in ("norm", "mlp_ratio"):
            if getattr(self.head, field) is not None:
                _fail(
                    ("head", field),
                    getattr(self.head, field),
                    "does not apply to Mobile-Former's head: set it to null",
                )
        if self.head.layer_attention:
            _fail(("head", "layer_attention"), True, "does not apply to Mobile-Former's head")
        assert self.stem.widths is not None
        in_width = self.stem.widths[-1]
        for i, stage in enumerate(self.stages):
            mf = stage.mobile_former
            assert mf is not None
            if in_width % mf.bridge_heads:
                _fail(
                    ("stages", i, "mobile_former", "bridge_heads"),
                    mf.bridge_heads,
                    f"the first block's "
                    f"Mobile->Former bridge splits its input's {in_width} channels into heads",
                )
            if token_dim % mf.former_heads:
                _fail(
                    ("stages", i, "mobile_former", "former_heads"),
                    mf.former_heads,
                    f"does not divide the tokens' width {token_dim}",
                )
            if token_dim < mf.reduction:
                _fail(
                    ("stages", i, "mobile_former", "reduction"),
                    mf.reduction,
                    f"leaves no hidden unit of the tokens' width {token_dim}",
                )
            in_width = stage.width
        return self

    @model_validator(mode="after")
    def _strided_blocks_can_stride(self) -> ArchConfig:
        if self.downsample.kind == "strided_block":
            for i, stage in enumerate(self.stages[1:], start=1):
                if stage.mobile_former is not None:  # its first block strides (_mobile_former_fits)
                    continue
                if stage.bottleneck is None:
                    _fail(
                        ("stages", i, "bottleneck"),
                        None,
                        "downsample 'strided_block' makes this stage's first block the downsampling: "
                        "the stage needs bottleneck blocks",
                    )
                if not MIXERS.get(stage.mixers[0].kind).supports_stride:
                    striding = [k for k in MIXERS.names() if MIXERS.get(k).supports_stride]
                    _fail(
                        ("stages", i, "mixers", 0),
                        stage.mixers[0].kind,
                        "downsample 'strided_block' needs a first mixer that can stride: "
                        + ", ".join(striding),
                    )
        return self

    def stage_strides(self) -> list[int]:
        """Each stage's stride: the stem's, doubled by every downsampling (4, 8, 16, 32 for a
        pyramid; 16 for an isotropic ViT's one stage), or multiplied by a nested stage's
        ``inner.patch_size`` instead (TNT: 4 x 4)."""
        strides, stride = [], self.stem.stride
        for i, stage in enumerate(self.stages):
            # a Mobile-Former stage opens with its downsampling block, the first one too
            opens_strided = i > 0 or stage.mobile_former is not None
            stride *= stage.inner.patch_size if stage.inner is not None else (2 if opens_strided else 1)
            strides.append(stride)
        return strides

    @model_validator(mode="after")
    def _cross_scale_widths(self) -> ArchConfig:
        # every conv of a cross-scale embedding needs at least one channel, and they must add up
        embeds = [("stem", self.stem.kernel_sizes if self.stem.kind == "patch" else None, 0)]
        embeds += [("downsample", self.downsample.kernel_sizes, i) for i in range(1, len(self.stages))]
        for field, kernels, i in embeds:
            if kernels is None or len(kernels) == 1:
                continue
            width = self.stages[i].width
            if width % 2 ** (len(kernels) - 1):
                _fail(
                    ("stages", i, "width"),
                    width,
                    f"{width} does not split over the {len(kernels)} cross-scale kernels of the {field} "
                    f"(needs a multiple of {2 ** (len(kernels) - 1)})",
                )
        return self

    @model_validator(mode="after")
    def _depthwise_downsampling_widens_by_a_whole_factor(self) -> ArchConfig:
        if self.downsample.depthwise:
            for i in range(1, len(self.stages)):
                before, width = self.stages[i - 1].width, self.stages[i].width
                if width % before:
                    _fail(
                        ("stages", i, "width"),
                        width,
                        f"the depthwise downsampling makes {width} channels from {before}, one group per "
                        "input channel: it needs a multiple of the previous stage's width",
                    )
        return self

    @model_validator(mode="after")
    def _co_scale_fits(self) -> ArchConfig:
        group = self.co_scale
        if group is None:
            return self
        if group.scales > len(self.stages):
            _fail(("co_scale", "scales"), group.scales, f"the model has only {len(self.stages)} stages")
        first = len(self.stages) - group.scales
        fused = self.stages[first:]
        if self.tokens is not None and first < self.tokens.from_stage:
            _fail(
                ("tokens", "from_stage"),
                self.tokens.from_stage,
                f"the co-scale group fuses the tokens of stages {first}-{len(self.stages) - 1}: "
                f"they must all carry them (from_stage <= {first})",
            )
        for i, stage in enumerate(fused, start=first):
            if stage.ffn.kind == "none":
                _fail(("stages", i, "ffn", "kind"), "none", "the co-scale group's blocks need an FFN")
        for i, stage in enumerate(fused[1:], start=first + 1):
            if stage.width != fused[0].width:
                _fail(
                    ("stages", i, "width"),
                    stage.width,
                    f"the co-scale group adds the maps of stages {first}-{len(self.stages) - 1} together: "
                    f"they need one width (stage {first} has {fused[0].width})",
                )
            if group.share_ffn and (stage.ffn != fused[0].ffn or stage.mlp_ratio != fused[0].mlp_ratio):
                _fail(
                    ("stages", i, "ffn"),
                    stage.ffn.kind,
                    f"the co-scale group shares one FFN over stages {first}-{len(self.stages) - 1} "
                    "(share_ffn): they need the same ffn and mlp_ratio",
                )
        return self

    @model_validator(mode="after")
    def _tokens_fit(self) -> ArchConfig:
        tokens = self.tokens
        if tokens is None:
            return self
        if tokens.from_stage >= len(self.stages):
            _fail(
                ("tokens", "from_stage"),
                tokens.from_stage,
                f"is not a stage index (the model has stages 0 to {len(self.stages) - 1})",
            )
        if tokens.last_stage is not None and not tokens.from_stage <= tokens.last_stage < len(self.stages):
            _fail(
                ("tokens", "last_stage"),
                tokens.last_stage,
                f"must be a stage index from from_stage ({tokens.from_stage}) to {len(self.stages) - 1}",
            )
        carrying = carrying_stages(tokens, len(self.stages))
        stream = TOKEN_STREAMS.get(tokens.kind)
        if (stream.read_by_head or stream.pooled_by_head) and carrying[-1] != len(self.stages) - 1:
            _fail(
                ("tokens", "last_stage"),
                tokens.last_stage,
                f"the classifier reads the '{tokens.kind}' token, so the last stage "
                f"({len(self.stages) - 1}) must carry it",
            )
        carried = tokens.each_stage == "carry" and len(carrying) > 1
        if stream.carried_by_downsample and carried and self.downsample.kind != "conv":
            _fail(
                ("downsample", "kind"),
                self.downsample.kind,
                f"the '{tokens.kind}' tokens are carried to the next stage by its downsampling, as a "
                "map of their own: it must be 'conv'",
            )
        for i in carrying:
            for j, mixer in enumerate(self.stages[i].mixers):
                problem = mixer.tokens_problem(tokens)
                if problem is not None:
                    _fail(("stages", i, "mixers", j), mixer.kind, f"mixer '{mixer.kind}' {problem}")
        for i in carrying:
            if self.stages[i].norm.kind == "batchnorm":
                _fail(
                    ("stages", i, "norm", "kind"),
                    "batchnorm",
                    "a stage that carries tokens normalises each token as a 1x1 map, which batch "
                    "statistics cannot do: use 'layernorm' or 'groupnorm'",
                )
        attending = [
            m.kind for i in carrying for m in self.stages[i].mixers if MIXERS.get(m.kind).attends_tokens
        ]
        attending += [f"stages[{i}].mobile_former" for i in carrying if self.stages[i].mobile_former]
        if not attending:
            known = ", ".join(n for n in MIXERS.names() if MIXERS.get(n).attends_tokens)
            _fail(
                ("tokens",),
                tokens.kind,
                f"no mixer of the stages that carry them (from stage {tokens.from_stage}) attends to "
                f"tokens, so they would never see the image; mixers that do: {known}",
            )
        if getattr(tokens, "pos_embed", False):
            pe = self.pos_embed
            made_at = carrying if tokens.each_stage == "new" else [tokens.from_stage]
            for i in made_at:
                if pe.kind not in ("absolute", "axial") or (i > 0 and not pe.per_stage):
                    _fail(
                        ("tokens", "pos_embed"),
                        True,
                        f"the tokens' position-embedding entries need a learned (absolute or axial) "
                        f"position embedding at stage {i} "
                        f"(pos_embed: {{kind: absolute{', per_stage: true' if i else ''}}})",
                    )
        return self

    @model_validator(mode="after")
    def _layer_attention_reads_class_tokens(self) -> ArchConfig:
        if not self.head.layer_attention:
            return self
        tokens = self.tokens
        if tokens is None or not TOKEN_STREAMS.get(tokens.kind).read_by_head:
            _fail(
                ("head", "layer_attention"),
                True,
                "attends over the class token after every block: the model needs class tokens "
                "(tokens: {kind: class, ...})",
            )
        if self.head.mlp_ratio is not None:
            _fail(("head", "mlp_ratio"), self.head.mlp_ratio, "the layer attention has no MLP head after it")
        if self.stages[-1].num_heads is None:
            _fail(
                ("stages", len(self.stages) - 1, "heads"),
                None,
                "head.layer_attention attends with the last stage's heads: give it heads",
            )
        return self

    @model_validator(mode="after")
    def _pos_embed_widths(self) -> ArchConfig:
        # sinusoidal: a quarter of the channels per sin/cos of y/x; axial: half per row/column
        multiple = {"sinusoidal": 4, "axial": 2}.get(self.pos_embed.kind)
        if multiple is not None:
            used = self.stages if self.pos_embed.per_stage else self.stages[:1]
            for i, stage in enumerate(used):
                if stage.width % multiple:
                    _fail(
                        ("stages", i, "width"),
                        stage.width,
                        f"{stage.width} is not divisible by {multiple}, as the {self.pos_embed.kind} "
                        "position embedding needs",
                    )
        return self

    @model_validator(mode="after")
    def _branches_fit(self) -> ArchConfig:
        if self.branches is None and self.fusion is None:
            return self
        if self.branches is None:
            _fail(("fusion",), self.fusion.kind, "fuses branches: give the model 'branches' beside its own")
        if self.fusion is None:
            _fail(
                ("fusion",), None, "parallel branches need a fusion (e.g. {kind: class_attention, points: 3})"
            )
        if self.co_scale is not None:
            _fail(("co_scale",), "co_scale", "a model with branches has no co-scale group")
        if len(self.stages) != 1:
            _fail(
                ("stages",),
                len(self.stages),
                "the branches are isotropic: the model's own branch has one stage, as each of 'branches'",
            )
        tokens = self.tokens
        if tokens is None or not TOKEN_STREAMS.get(tokens.kind).read_by_head:
            _fail(
                ("tokens",),
                tokens.kind if tokens is not None else None,
                "the class_attention fusion exchanges the branches' class tokens: tokens: {kind: class}",
            )
        blocks = sum(s.depth for s in self.stages) + sum(b.stages[0].depth for b in self.branches)
        if blocks > MAX_BLOCKS:
            _fail(
                ("branches",), blocks, f"{blocks} blocks in all branches: more than the limit of {MAX_BLOCKS}"
            )
        points = self.fusion.points
        for i, branch in enumerate([self, *self.branches]):
            where = ("branches", i - 1) if i else ()
            stage = branch.stages[0]
            if stage.inner is not None or stage.bottleneck is not None:
                _fail(
                    (*where, "stages", 0, "inner" if stage.inner is not None else "bottleneck"),
                    "set",
                    "a branch's stage runs in pieces between the fusion points: MetaFormer blocks only",
                )
            if stage.depth % points:
                _fail(
                    (*where, "stages", 0, "depth"),
                    stage.depth,
                    f"{stage.depth} blocks do not split into the {points} fusion points (fusion.points): "
                    "every branch needs a multiple of them",
                )
            if stage.num_heads is None:
                _fail(
                    (*where, "stages", 0, "heads"),
                    None,
                    "the fusion's cross-attention runs with the attended branch's heads: give it heads",
                )
            resolution = getattr(branch, "resolution", None) or self.input.resolution
            stride = branch.stem.stride
            if resolution % stride:
                field = (*where, "resolution") if i and branch.resolution else ("input", "resolution")
                _fail(
                    field,
                    resolution,
                    f"{resolution} pixels are not a whole number of the branch's {stride}-pixel patches "
                    f"(stem of {'branches[' + str(i - 1) + ']' if i else 'the model'})",
                )
        for i in range(1, len(self.branches) + 1):
            try:
                ArchConfig.model_validate(self._branch_dict(i))
            except ValidationError as err:  # the branch as a model of its own: its errors, placed
                errors = [
                    InitErrorDetails(
                        type=PydanticCustomError("invalid", e["msg"]),
                        loc=("branches", i - 1, *e["loc"]),
                        input=e.get("input"),
                    )
                    for e in err.errors()
                ]
                raise ValidationError.from_exception_data("ArchConfig", errors) from None
        return self

    def _branch_dict(self, index: int) -> dict[str, Any]:
        """Branch ``index`` (0: the model's own stem and stages) as a model's config dict."""
        data = self.to_dict()
        data["branches"] = data["fusion"] = None
        if index:
            branch = self.branches[index - 1]
            data["stem"] = branch.stem.model_dump(mode="json")
            data["stages"] = [s.model_dump(mode="json") for s in branch.stages]
            data["input"]["resolution"] = branch.resolution or self.input.resolution
        if self.name:
            data["name"] = f"{self.name}.branch{index}"
        return data

    def branch_configs(self) -> list[ArchConfig]:
        """Every branch as a model of its own (the model's stem and stages first): what
        ``build_model`` builds each branch from. A model without branches is its only one."""
        count = 1 + len(self.branches or [])
        return [ArchConfig.model_validate(self._branch_dict(i)) for i in range(count)]

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_yaml(cls, path: str | Path) -> ArchConfig:
        path = Path(path)
        return cls.from_yaml_text(read_text(path, "config file"), source=str(path))

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<string>") -> ArchConfig:
        data, lines = load_yaml_with_lines(text, source)
        return cls.from_dict(data, source=source, lines=lines)

    @classmethod
    def from_dict(
        cls, data: Any, source: str | None = None, lines: dict[tuple, int] | None = None
    ) -> ArchConfig:
        if not isinstance(data, dict):
            where = f"{source}: " if source else ""
            raise ConfigError(
                [f"{where}expected a mapping at the top level, got {type(data).__name__}"], source
            )
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source, lines), source) from None

    def to_dict(self) -> dict[str, Any]:
        """Every field, defaults included, so an exported config builds the same model even if
        hvtnas's defaults change later."""
        return self.model_dump(mode="json")

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            atomic_write_text(path, text)  # a crash leaves the old file or the new one, never half
        return text


def estimated_params(cfg: ArchConfig) -> float:
    """A quick upper-bound-ish parameter estimate (attention-like mixer + FFN per block, the
    classifier): what the size limits check before anything is allocated."""
    total = 0.0
    for stage in cfg.stages:
        total += stage.depth * (4 + 2 * stage.mlp_ratio) * stage.width**2
        if stage.inner is not None:  # the inner block and the projection of its patch
            inner = stage.inner
            total += stage.depth * (
                (4 + 2 * inner.mlp_ratio) * inner.width**2 + inner.patch_size**2 * inner.width * stage.width
            )
    if cfg.co_scale is not None:
        last = cfg.stages[-1]
        total += cfg.co_scale.depth * cfg.co_scale.scales * (4 + 2 * last.mlp_ratio) * last.width**2
    return total + cfg.stages[-1].width * cfg.input.num_classes


# fields that are no part of what an architecture is: its name, notes and regularisation (drop path,
# head dropout), which change neither its costs nor its function at inference
NOT_IDENTITY: tuple[tuple[str, ...], ...] = (
    ("name",),
    ("metadata",),
    ("drop_path_rate",),
    ("head", "dropout"),
)


def canonical_config(cfg: ArchConfig) -> dict[str, Any]:
    """The architecture's fields but those in ``NOT_IDENTITY``, with attention heads given both
    ways (``heads: 3`` and ``head_dim: 8`` at width 24 are one model) and none in a stage whose
    mixers have no heads. Duplicate detection, the cost cache and space membership compare
    architectures by this."""
    data = cfg.to_dict()
    for stage, stage_cfg in zip(data["stages"], cfg.stages, strict=True):
        heads = stage_cfg.num_heads
        if heads is None or not any(MIXERS.get(m.kind).uses_heads for m in stage_cfg.mixers):
            stage["heads"] = stage["head_dim"] = None
        else:
            stage["heads"], stage["head_dim"] = heads, stage_cfg.width // heads
    for *parents, key in NOT_IDENTITY:
        node = data
        for parent in parents:
            node = node[parent]
        node.pop(key, None)
    return data


def _fail(loc: tuple, value: Any, message: str) -> None:
    """Raise a validation error at ``loc`` (relative to the model being validated) from a
    model-level check, so the message names the field rather than the whole model."""
    error = InitErrorDetails(type=PydanticCustomError("invalid", message), loc=loc, input=value)
    raise ValidationError.from_exception_data("ArchConfig", [error])


# ---------------------------------------------------------------------- error formatting
def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def format_validation_error(
    err: ValidationError,
    source: str | None = None,
    lines: dict[tuple, int] | None = None,
    loc_prefix: tuple = (),
) -> list[str]:
    """One line per problem: ``file:line: field.path: message``. ``loc_prefix`` places the
    validated object inside a larger file (e.g. ``("experiment",)``)."""
    problems = []
    for e in err.errors():
        # drop pydantic's names for validator wrappers (e.g. "function-after[...]"): not fields
        loc = loc_prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        where = ""
        if source:
            line = _line_for(loc, lines or {})
            where = f"{source}:{line}: " if line else f"{source}: "
        got = ""
        value = e.get("input")
        if (
            e["type"] not in ("missing", "extra_forbidden")
            and value is not None
            and not isinstance(value, dict)
        ):
            got = f" (got {e['input']!r})"
            if str(e["input"]) in msg:
                got = ""
        problems.append(f"{where}{_path(loc)}: {msg}{got}")
    return problems


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for cut in range(len(loc), -1, -1):  # the deepest prefix the YAML has a line for
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return None


# Limits of a YAML file: nesting (deeper recursion is a RecursionError in the parser and the
# validators) and values after aliases are expanded (a few hundred bytes of nested aliases expand
# to billions of values: the "billion laughs" alias bomb).
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and record the 1-based line of every mapping key and list item by its path.

    Refused with one line each, before anything is built: nesting deeper than ``MAX_YAML_DEPTH``,
    more than ``MAX_YAML_VALUES`` values once aliases are expanded (an alias bomb), recursive
    aliases, keys that are not plain values and a key given twice in one mapping."""
    try:
        _check_nesting(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_expanded_size(node, source)
            lines = _node_lines(node, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([f"{source}{line}: YAML syntax error: {problem}"], source) from None
    return data, (lines if node is not None else {})


def _node_lines(node: yaml.Node, source: str) -> dict[tuple, int]:
    """The line of every mapping key and list item by its path; refuses duplicate keys."""
    lines: dict[tuple, int] = {}

    def walk(n: yaml.Node, path: tuple) -> None:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in n.value:
                line = key.start_mark.line + 1
                if not isinstance(key, yaml.ScalarNode):
                    raise ConfigError(
                        [f"{source}:{line}: {_path(path)}: a key must be a plain value"], source
                    )
                if key.value in seen and key.value != "<<":
                    where = f"{_path((*path, key.value))}"
                    raise ConfigError(
                        [f"{source}:{line}: {where}: key given twice (first at line {seen[key.value]})"],
                        source,
                    )
                seen[key.value] = line
                lines[(*path, key.value)] = line
                walk(value, (*path, key.value))
                lines[(*path, key.value)] = line
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    walk(node, ())
    return lines


def _check_nesting(text: str, source: str) -> None:
    """Refuse nesting deeper than ``MAX_YAML_DEPTH`` from the event stream (which needs no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    [
                        f"{source}:{event.start_mark.line + 1}: lists and mappings nested more than "
                        f"{MAX_YAML_DEPTH} deep (no config needs that)"
                    ],
                    source,
                )
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            depth -= 1


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Count values with every alias expanded, each shared node once (memoised): an alias bomb
    is refused in time linear in the file, before anything walks its expansion."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError([f"{source}:{n.start_mark.line + 1}: an alias refers to itself"], source)
        active.add(key)
        total = 1
        if isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total += sum(size(item) for item in n.value)
        active.discard(key)
        sizes[key] = total
        if total > MAX_YAML_VALUES:
            raise ConfigError(
                [
                    f"{source}:{n.start_mark.line + 1}: its aliases expand to more than {MAX_YAML_VALUES:,} "
                    "values (an alias bomb?)"
                ],
                source,
            )
        return total

    size(root)
