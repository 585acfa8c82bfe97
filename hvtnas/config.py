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
    - ``conv``: ``depth`` stacked convs (3x3 unless ``kernel_sizes`` says otherwise; padding k//2
      for odd k, 0 for even), the first two with stride 2 unless ``strides`` says otherwise, norm
      + act between (convolutional stem of CoAtNet / early-conv ViTs). ``last_norm`` is the norm
      after the last conv: ``true`` (the same as ``norm``), ``false`` (none: ResT) or a norm of
      its own (Shunted: BatchNorm between, LayerNorm at the end); ``last_bias`` gives the last
      conv a bias.
    """

    kind: Literal["patch", "overlap", "conv"] = "patch"
    patch_size: PositiveInt = Field(4, le=64)  # patch only: the stem's stride (16 for ViT's 16x16 patches)
    kernel_size: PositiveInt | None = None  # overlap only (default 7)
    padding: NonNegativeInt | None = None  # overlap only (default kernel_size // 2)
    depth: int = Field(2, ge=2)  # conv only
    hidden_ratio: float = Field(0.5, gt=0)  # conv only: hidden width = ratio * stage-1 width
    act: Activation = "gelu"  # conv only
    norm: NormConfig | None = None  # after the (last) conv; conv stems also between convs
    strides: list[Literal[1, 2]] | None = None  # conv only: one per conv, product 4 (default 2, 2, 1, ...)
    kernel_sizes: list[PositiveInt] | None = None  # conv: one per conv (default all 3); patch: cross-scale
    last_norm: bool | NormConfig = True  # conv only: see above
    last_bias: bool = False  # conv only

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> StemConfig:
        if self.kind != "overlap" and (self.kernel_size is not None or self.padding is not None):
            raise PydanticCustomError(
                "stem_kernel",
                "kernel_size/padding apply to the 'overlap' stem only (this one is '{kind}')",
                {"kind": self.kind},
            )
        if self.kind == "conv" and self.norm is None:
            raise PydanticCustomError("stem_norm", "the 'conv' stem needs a norm (e.g. batchnorm)")
        conv_only = {
            "strides": self.strides is not None,
            "kernel_sizes": self.kernel_sizes is not None and self.kind != "patch",
            "last_norm": self.last_norm is not True,
            "last_bias": self.last_bias,
        }
        if self.kind != "conv" and any(conv_only.values()):
            field = next(name for name, used in conv_only.items() if used)
            message = f"applies to the 'conv' stem only (this one is '{self.kind}')"
            _fail((field,), getattr(self, field), message)
        for field in ("strides", "kernel_sizes"):
            value = getattr(self, field)
            if self.kind == "conv" and value is not None and len(value) != self.depth:
                _fail((field,), value, f"needs one entry per conv (depth {self.depth})")
        if self.kind != "patch" and self.patch_size != 4:
            _fail(
                ("patch_size",),
                self.patch_size,
                f"applies to the 'patch' stem only (this one is '{self.kind}')",
            )
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
        return self.patch_size if self.kind == "patch" else 4

    def conv_strides(self) -> list[int]:
        return list(self.strides) if self.strides is not None else [2, 2] + [1] * (self.depth - 2)

    def conv_kernel_sizes(self) -> list[int]:
        return list(self.kernel_sizes) if self.kernel_sizes is not None else [3] * self.depth


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
    """

    kind: Literal["conv", "patch_merging", "pool", "pooling_attention"] = "conv"
    kernel_size: PositiveInt = 2
    kernel_sizes: list[PositiveInt] | None = None
    bias: bool = True
    norm: NormConfig | None = None
    norm_position: Literal["pre", "post"] = "post"

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
    of each stage (Twins); ``pixel_attention`` is ResT's gate ``x * sigmoid(dwconv(x))`` after the
    stem (and after every downsampling with ``per_stage``). Relative position bias is a
    parameter of the window mixers, LePE of the cross-shaped window mixer, and the Mix-FFN
    depthwise conv an FFN kind.
    """

    kind: Literal["none", "absolute", "axial", "sinusoidal", "peg", "pixel_attention"] = "none"
    per_stage: bool = False
    kernel_size: PositiveInt = 3  # peg and pixel_attention


class FFNConfig(_Kinded):
    """``mlp``: Linear -> act -> Linear; ``mixffn``: Linear -> depthwise 3x3 -> act -> Linear
    (PVTv2 / SegFormer, positional information from the zero padding; with ``dw_residual`` the
    conv is residual, act(h + dwconv(h)), as in Shunted); ``none``: no FFN sub-block (CoAtNet's
    MBConv stages)."""

    kind: Literal["mlp", "mixffn", "none"] = "mlp"
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
        # "head_dim" is absent from info.data when it failed its own check: report that error only
        if needs_heads and heads is None and "head_dim" in info.data and head_dim is None:
            raise PydanticCustomError(
                "heads_missing", "mixer '{kind}' needs 'heads' or 'head_dim'", {"kind": needs_heads[0]}
            )
        return heads

    @property
    def num_heads(self) -> int | None:
        if self.heads is not None:
            return self.heads
        return self.width // self.head_dim if self.head_dim is not None else None

    def mixer_for_block(self, index: int) -> MixerParams:
        return self.mixers[index % len(self.mixers)]


class HeadConfig(_Strict):
    """Classifier: norm (before or after global average pooling) -> [MLP] -> Linear.

    A model with a class token (``tokens: {kind: class}``: ViT/DeiT, CvT, PVT v1) classifies from
    that token, normalised, instead of the pooled map (timm's ``global_pool='token'``).
    """

    norm: NormConfig | None = NormConfig()
    norm_position: Literal["pre_pool", "post_pool"] = "pre_pool"
    mlp_ratio: float | None = Field(None, gt=0)  # MetaFormer baselines' MLP head (ratio 4)
    act: Activation = "squared_relu"  # MLP head only
    dropout: float = Field(0.0, ge=0, lt=1)


class ArchConfig(_Strict):
    """One concrete architecture: stem -> up to 4 stages (strides 4..32) -> head."""

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
        if TOKEN_STREAMS.get(tokens.kind).read_by_head and carrying[-1] != len(self.stages) - 1:
            _fail(
                ("tokens", "last_stage"),
                tokens.last_stage,
                f"the classifier reads the '{tokens.kind}' token, so the last stage "
                f"({len(self.stages) - 1}) must carry it",
            )
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

    def stage_strides(self) -> list[int]:
        """Each stage's stride: the stem's, doubled by every downsampling (4, 8, 16, 32 for a
        pyramid; 16 for an isotropic ViT's one stage)."""
        return [self.stem.stride * 2**i for i in range(len(self.stages))]

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
