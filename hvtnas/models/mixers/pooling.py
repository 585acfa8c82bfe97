"""Attention-free mixers with no weights: pooling (PoolFormer) and identity (IdentityFormer)."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor

from hvtnas.models.layers import nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class PoolingParams(MixerParams):
    pool_size: PositiveInt = 3


class Pooling(TokenMixer):
    """``AvgPool(x) - x`` (PoolFormer): stride 1, padding excluded from the average.

    The block adds its input back, so subtracting x makes the residual branch the local average.
    """

    Params: ClassVar[type[MixerParams]] = PoolingParams
    # averaging adds, it does not multiply-accumulate: 0 MACs, as PoolFormer's 1.8 G counts it
    flop_free = True
    paper = "PoolFormer (Yu et al., CVPR 2022)"
    complexity = "O(N K² C), pool K, no weights"

    def __init__(self, dim: int, pool_size: int = 3) -> None:
        super().__init__()
        self.pool_size = pool_size

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.avg_pool2d(
            nhwc_to_nchw(x), self.pool_size, stride=1, padding=self.pool_size // 2, count_include_pad=False
        )
        return nchw_to_nhwc(pooled) - x


class Identity(TokenMixer):
    """No token mixing at all (IdentityFormer): the baseline that shows what the MetaFormer
    skeleton does by itself."""

    flop_free = True
    paper = "IdentityFormer (Yu et al., TPAMI 2023)"
    complexity = "0"

    def __init__(self, dim: int) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x
