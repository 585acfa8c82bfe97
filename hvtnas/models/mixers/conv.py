"""Convolutional token mixers: separable conv (ConvFormer) and MBConv with squeeze-excitation (CoAtNet)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear, linear_act
from hvtnas.models.layers import BatchNormLast, make_act, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.base import ActivationName, MixerParams, TokenMixer


class SepConvParams(MixerParams):
    kernel_size: PositiveInt = 7
    expansion_ratio: float = Field(2.0, gt=0)
    act: ActivationName = "star_relu"
    bias: bool = False


class SepConv(TokenMixer):
    """Inverted separable conv of MobileNetV2 as used by ConvFormer:
    pointwise expand -> act -> depthwise k x k -> pointwise project."""

    Params: ClassVar[type[MixerParams]] = SepConvParams
    paper = "ConvFormer (Yu et al., TPAMI 2023); MobileNetV2 (CVPR 2018)"
    complexity = "O(N K² C), kernel K"

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        expansion_ratio: float = 2.0,
        act: str = "star_relu",
        bias: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=bias
        )
        self.pwconv2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = linear_act(x, self.pwconv1, self.act)
        x = nchw_to_nhwc(self.dwconv(nhwc_to_nchw(x)))
        return self.pwconv2(x)


class MBConvParams(MixerParams):
    kernel_size: PositiveInt = 3
    expansion_ratio: float = Field(4.0, gt=0)
    se_ratio: float = Field(0.25, ge=0, le=1)  # of the input width; 0 disables squeeze-excitation
    act: ActivationName = "gelu"


class SqueezeExcite(nn.Module):
    def __init__(self, dim: int, reduced: int, act: str) -> None:
        super().__init__()
        self.reduce = Linear(dim, reduced)
        self.act = make_act(act)
        self.expand = Linear(reduced, dim)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C) squeeze over space
        return x * self.expand(self.act(self.reduce(s))).sigmoid()


class MBConv(TokenMixer):
    """CoAtNet's MBConv body: 1x1 expand -> BN -> act -> depthwise k x k -> BN -> act -> SE -> 1x1 project.

    Used with ``ffn: none`` (the MBConv block has no separate FFN) and a BatchNorm pre-norm,
    as in CoAtNet stages 1-2.
    """

    Params: ClassVar[type[MixerParams]] = MBConvParams
    paper = "CoAtNet (Dai et al., NeurIPS 2021); EfficientNet (ICML 2019)"
    complexity = "O(N K² C), kernel K"

    def __init__(
        self,
        dim: int,
        kernel_size: int = 3,
        expansion_ratio: float = 4.0,
        se_ratio: float = 0.25,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        self.expand = Linear(dim, hidden, bias=False)
        self.norm1 = BatchNormLast(hidden)
        self.act1 = make_act(act)
        self.dwconv = nn.Conv2d(
            hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=False
        )
        self.norm2 = BatchNormLast(hidden)
        self.act2 = make_act(act)
        reduced = max(1, int(dim * se_ratio))
        self.se = SqueezeExcite(hidden, reduced, "silu") if se_ratio > 0 else nn.Identity()
        self.project = Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.norm1(self.expand(x)))
        x = nchw_to_nhwc(self.dwconv(nhwc_to_nchw(x)))
        x = self.act2(self.norm2(x))
        return self.project(self.se(x))
