"""Token streams: tokens that travel beside the feature map through a stage's blocks.

Some designs carry a few tokens that are not pixels of the map: ViT/DeiT, CvT and PVT v1 a class
token that the classifier reads, Vision Longformer global tokens that attend to and from every
pixel, RegionViT one regional token per window, Mobile-Former a handful of global tokens beside a
MobileNet. In hvtnas they are one mechanism, whatever they are called:

- **The stream.** ``ArchConfig.tokens`` says which tokens exist (a kind registered in
  ``TOKEN_STREAMS``, with its parameters) and from which stage on (``from_stage``, an index
  into ``stages``); every later stage carries them too, either the same ones (``each_stage:
  carry``; a Linear maps them to the next stage's width where it changes) or a fresh set made
  at each stage (``each_stage: new``: Vision Longformer's per-stage global tokens). Inside a
  stage they are a ``(B, T, C)`` tensor beside the ``(B, H, W, C)`` map; a stage with no tokens
  returns ``None`` for them.
- **The kind says what the classifier reads.** A ``class`` token is read by the classifier (its
  first token, normalised; timm's ``global_pool='token'``); ``regional`` tokens are normalised and
  averaged (RegionViT); with any other kind the classifier pools the map.
- **Mixers decide how tokens meet the map.** A mixer with ``attends_tokens = True`` implements
  ``forward_sequence`` on ``[tokens; pixels]`` ``(B, T + H*W, C)`` and mixes the two together
  (global attention, PVT's
  spatial-reduction attention and CvT's convolutional projections attend over
  ``[tokens; map]``: tokens are queries and keys like pixels). Every other mixer sees the map
  only, and the tokens pass its sub-block unchanged. Norms, the FFN, layer scale and drop path act
  on the tokens as on the pixels, each token as a 1x1 map (a GroupNorm normalises it over its
  channels, a Mix-FFN's zero-padded depthwise conv sees its centre tap only; BatchNorm is refused),
  with one drop-path draw per sample for both: with a LayerNorm and an MLP, a block on
  ``[tokens; map]`` is exactly the sequence model's block. A stage whose blocks all attend to
  the tokens and have per-token norms and FFNs keeps ``[tokens; pixels]`` joined from its first
  block to its last (ViT's form, as fast as timm's ViT); other stages split them in each block.
- **Maps stay maps.** ``forward_features``, ``forward_intermediates`` and ``features_only`` return
  the maps alone; ``forward_features(x, return_tokens=True)`` and
  ``forward_intermediates(..., return_prefix_tokens=True)`` (timm's name) also give the tokens.

Tokens may have a width of their own (``global`` tokens' ``dim``): Mobile-Former's 192-wide
tokens beside maps of 16 to 192 channels, which its blocks (``hvtnas.models.mobile_former``)
bridge with cross-attention; they are carried unchanged from stage to stage.

Adding a kind: a ``TokenStream`` subclass with its ``Params`` below and one
``TOKEN_STREAMS.register`` line. Its ``forward`` gets the stage's map (after the downsampling), so
a stream may size itself by the map, and the image (RegionViT's regional tokens are a patch
embedding of it).

RegionViT's ``regional`` tokens are one per ``window_size`` x ``window_size`` window of the map (the
map's windows counted from its top left, a partial window at the bottom/right included: a grid of
ceil(H / w) x ceil(W / w)), in the grid's row-major order. They are made at ``from_stage`` from the
image (a patch embedding with the stage's stride times ``w``) or from the map (one w x w
convolution per window), and carried on as a coarser map of their own: the stage's downsampling
acts on them as on the map (RegionViT's one projection for both; ``downsample: {kind: conv}``).
The ``regional_local`` mixer (``hvtnas.models.mixers.regional``) attends within each window's
``[regional token; local pixels]``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import nchw_to_nhwc, nhwc_to_nchw, pad_to_multiple
from hvtnas.registry import Registry


class TokenStreamParams(BaseModel):
    """What every token stream is configured by; kinds add their own fields."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    from_stage: int = Field(0, ge=0)  # index into stages of the first stage that carries them
    # index of the last stage that carries them (None: the model's last); a later stage has none
    last_stage: int | None = Field(None, ge=0)
    # at each later stage: the same tokens carried on, or a fresh set (Vision Longformer)
    each_stage: Literal["carry", "new"] = "carry"


class TokenStream(nn.Module):
    """Base: ``forward(x, previous, image)`` gives the ``(B, T, C)`` tokens a stage starts with,
    from its map ``x`` ``(B, H, W, C)`` (after the downsampling), the previous stage's tokens (None
    at the first stage that has them) and the model's input image ``(B, C_in, H_in, W_in)`` (None
    where the caller has none: a stage run on its own)."""

    Params: ClassVar[type[TokenStreamParams]] = TokenStreamParams
    paper: ClassVar[str] = ""
    read_by_head: ClassVar[bool] = False  # the classifier reads its first token (a class token)
    pooled_by_head: ClassVar[bool] = False  # the classifier averages them instead of the map
    # the stage's downsampling carries them from the previous stage, as a map of their own
    carried_by_downsample: ClassVar[bool] = False
    # it may embed the image: its constructor also takes ``in_channels`` and its stage's ``stride``
    reads_image: ClassVar[bool] = False

    def forward(
        self, x: Tensor, previous: Tensor | None, image: Tensor | None = None
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LearnedTokensParams(TokenStreamParams):
    count: PositiveInt = Field(1, le=4096)
    # the tokens' own entries of the position embedding (PVT v1, DeiT; Vision Longformer's axial
    # one): a learned vector added to each token where it is made; needs an absolute or axial
    # position embedding at that stage
    pos_embed: bool = False


class LearnedTokens(TokenStream):
    """``count`` learned tokens, the same for every image, prepended to the map's tokens where the
    stream starts (with their position-embedding entries, if any)."""

    Params: ClassVar[type[TokenStreamParams]] = LearnedTokensParams

    def __init__(self, dim: int, count: int = 1, pos_embed: bool = False) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(1, count, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02)
        self.pos_embed = nn.Parameter(torch.zeros(1, count, dim)) if pos_embed else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor, previous: Tensor | None, image: Tensor | None = None) -> Tensor:
        tokens = self.tokens if self.pos_embed is None else self.tokens + self.pos_embed
        return tokens.to(x.dtype).expand(x.shape[0], -1, -1)  # (B, T, C)


class ClassTokens(LearnedTokens):
    """The class token(s) of ViT / DeiT, CvT (stage 3) and PVT v1 (stage 4): the classifier reads
    the first one instead of pooling the map."""

    paper = "ViT (Dosovitskiy et al., ICLR 2021); CvT (ICCV 2021); PVT (ICCV 2021)"
    read_by_head = True


class GlobalTokensParams(LearnedTokensParams):
    # tokens of their own width, the same at every stage whatever the map's (Mobile-Former: 192
    # beside maps of 16 to 192 channels; only its blocks read tokens that differ from the map's
    # width); None: the width of each stage that carries them
    dim: PositiveInt | None = Field(None, le=16384)


class GlobalTokens(LearnedTokens):
    """Global tokens that attend to and from every pixel through the mixers that take them
    (Vision Longformer's; Mobile-Former's token stream, at a width of its own: ``dim``)."""

    Params: ClassVar[type[TokenStreamParams]] = GlobalTokensParams
    paper = "Vision Longformer (Zhang et al., ICCV 2021); Mobile-Former (Chen et al., CVPR 2022)"


class CarriedTokens(nn.Module):
    """The previous stage's tokens carried into a stage: unchanged where the width stays, through a
    Linear where it changes (the tokens have no map to downsample)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = Linear(in_dim, out_dim) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, previous: Tensor | None, image: Tensor | None = None) -> Tensor:
        if previous is None:
            raise ValueError("a stage that carries tokens on needs the previous stage's tokens")
        return self.proj(previous)


class RegionalTokensParams(TokenStreamParams):
    # the side of the map's windows that one regional token stands for (RegionViT: 7)
    window_size: PositiveInt = Field(7, le=64)
    # what they are made from: a patch embedding of the image (RegionViT) or of the stage's map
    source: Literal["image", "map"] = "image"


def region_grid(height: int, width: int, window_size: int) -> tuple[int, int]:
    """The regional tokens' grid on an ``height`` x ``width`` map: one per window, a partial window
    at the bottom/right included."""
    # ceil by a floor division of positive numbers: an ONNX graph traced from it divides the same way
    return (height + window_size - 1) // window_size, (width + window_size - 1) // window_size


class RegionalTokens(TokenStream):
    """RegionViT's regional tokens: one per ``window_size`` window of the map, made from the image
    (a ``stride * window_size`` patch embedding; an image that is no whole number of patches is
    zero-padded evenly on both sides first, as the official code does) or from the stage's map
    (a ``window_size`` convolution with that stride, the map zero-padded at the bottom/right to
    whole windows). Carried to later stages by their downsampling (``carried_by_downsample``)."""

    Params: ClassVar[type[TokenStreamParams]] = RegionalTokensParams
    paper = "RegionViT (Chen et al., ICLR 2022)"
    pooled_by_head = True
    carried_by_downsample = True
    reads_image = True

    def __init__(
        self,
        dim: int,
        window_size: int = 7,
        source: str = "image",
        in_channels: int = 3,
        stride: int = 4,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.source = source
        self.patch = stride * window_size if source == "image" else window_size
        in_dim = in_channels if source == "image" else dim
        self.proj = nn.Conv2d(in_dim, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: Tensor, previous: Tensor | None, image: Tensor | None = None) -> Tensor:
        if self.source == "map":
            padded = pad_to_multiple(x, self.window_size)  # (B, Hp, Wp, C), whole windows
            return nchw_to_nhwc(self.proj(nhwc_to_nchw(padded))).flatten(1, 2)  # (B, nh nw, C)
        if image is None:
            raise ValueError("regional tokens made from the image need the image: run the whole model")
        H, W = image.shape[-2:]
        pad_h, pad_w = (-H) % self.patch, (-W) % self.patch
        if pad_h or pad_w:  # evenly on both sides, the extra row/column at the bottom/right
            image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        tokens = rearrange(self.proj(image), "b c h w -> b (h w) c")
        expected = region_grid(x.shape[1], x.shape[2], self.window_size)
        if tokens.shape[1] != expected[0] * expected[1]:
            raise ValueError(
                f"regional tokens: the image's {tuple(image.shape[-2:])} patches of {self.patch} do not "
                f"give one token per {self.window_size}-window of the {tuple(x.shape[1:3])} map "
                f"({expected[0]} x {expected[1]}): the stem's map must be ceil(image / stride)"
            )
        return tokens


TOKEN_STREAMS: Registry[type[TokenStream]] = Registry("token stream")
TOKEN_STREAMS.register("class", ClassTokens)
TOKEN_STREAMS.register("global", GlobalTokens)
TOKEN_STREAMS.register("regional", RegionalTokens)


def carrying_stages(params: TokenStreamParams, num_stages: int) -> range:
    """Indices of the stages that carry the tokens: ``from_stage`` to ``last_stage`` (inclusive)."""
    last = params.last_stage if params.last_stage is not None else num_stages - 1
    return range(params.from_stage, last + 1)


def build_token_streams(
    params: TokenStreamParams | None,
    widths: list[int],
    carried_by_downsample: bool = False,
    strides: list[int] | None = None,
    in_channels: int = 3,
) -> list[nn.Module | None]:
    """One module per stage (None where the stage has no tokens): the stream's own module where the
    tokens are made (and at every later stage with ``each_stage: new``), ``CarriedTokens`` after.
    ``carried_by_downsample``: the downsampling takes the tokens to the new width itself (MViT's
    transition; RegionViT's projection), so they arrive at the stage's width. ``strides`` (the
    stages') and ``in_channels`` (the image's) size the streams made from the image."""
    streams: list[nn.Module | None] = [None] * len(widths)
    if params is None:
        return streams
    cls = TOKEN_STREAMS.get(params.kind)
    carried_by_downsample = carried_by_downsample or cls.carried_by_downsample
    kwargs = params.model_dump(exclude={"kind", "from_stage", "last_stage", "each_stage", "dim"})
    own_width = getattr(params, "dim", None)  # tokens of a width of their own stay at it
    if own_width is not None:
        widths = [own_width] * len(widths)
    for i in carrying_stages(params, len(widths)):
        if i == params.from_stage or params.each_stage == "new":
            if cls.reads_image:
                kwargs.update(in_channels=in_channels, stride=strides[i] if strides else 4 * 2**i)
            streams[i] = cls(widths[i], **kwargs)
        else:
            streams[i] = CarriedTokens(widths[i] if carried_by_downsample else widths[i - 1], widths[i])
    return streams
