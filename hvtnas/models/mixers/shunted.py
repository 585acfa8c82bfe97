"""Shunted self-attention (Ren et al., CVPR 2022): spatial reduction at two rates inside one layer."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import LayerNormLast, nchw_to_nhwc, nhwc_to_nchw, pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class ShuntedParams(AttentionParams):
    sr_ratio: PositiveInt = 1


class _Reduction(nn.Module):
    """Keys and values for one head group: strided conv (k = s = rate) -> LN -> GELU -> Linear,
    plus a depthwise 3x3 "local" term added to V on the reduced map."""

    def __init__(self, dim: int, rate: int, kv_dim: int, qkv_bias: bool) -> None:
        super().__init__()
        self.rate = rate
        self.sr = nn.Conv2d(dim, dim, kernel_size=rate, stride=rate)
        self.norm = LayerNormLast(dim)
        self.kv = Linear(dim, 2 * kv_dim, bias=qkv_bias)
        self.local_conv = nn.Conv2d(kv_dim, kv_dim, 3, padding=1, groups=kv_dim)

    def forward(self, x: Tensor, heads: int) -> tuple[Tensor, Tensor]:
        reduced = F.gelu(self.norm(nchw_to_nhwc(self.sr(nhwc_to_nchw(pad_to_multiple(x, self.rate))))))
        k, v = rearrange(self.kv(reduced), "b h w (two c) -> two b h w c", two=2)  # (B, H/r, W/r, C/2)
        v = v + nchw_to_nhwc(self.local_conv(nhwc_to_nchw(v)))
        split = "b h w (n d) -> b n (h w) d"
        return rearrange(k, split, n=heads), rearrange(v, split, n=heads)


class ShuntedAttention(TokenMixer):
    """With ``sr_ratio`` R > 1, half the heads take keys and values from the map reduced R times,
    the other half from the map reduced R/2 times (coarse and fine objects in one layer); each
    half adds a depthwise 3x3 conv of its V to V. With R = 1 all heads attend the full map and
    the depthwise conv of V is added to the attention output (LePE-like), as the official code.
    """

    Params: ClassVar[type[MixerParams]] = ShuntedParams
    uses_heads = True
    heads_multiple = 2
    paper = "Shunted Transformer (Ren et al., CVPR 2022)"
    complexity = "O(N² C / R²), ratio R"

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__()
        if num_heads % 2:
            raise ValueError(f"shunted attention splits heads in two: got {num_heads} heads")
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        if sr_ratio > 1:
            # coarse (rate R) and fine (rate R/2) head groups
            self.reductions = nn.ModuleList(
                _Reduction(dim, rate, dim // 2, qkv_bias) for rate in (sr_ratio, max(1, sr_ratio // 2))
            )
        else:
            self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
            self.local_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        q = rearrange(self.q(x), "b h w (n d) -> b n (h w) d", n=self.num_heads)
        if self.sr_ratio > 1:
            half = self.num_heads // 2
            outs = []
            for q_group, reduction in zip(q.split(half, dim=1), self.reductions, strict=True):
                k, v = reduction(x, half)
                outs.append(F.scaled_dot_product_attention(q_group, k, v))
            out = rearrange(torch.cat(outs, dim=1), "b n (h w) d -> b h w (n d)", h=H)
        else:
            k, v = rearrange(self.kv(x), "b h w (two c) -> two b h w c", two=2)  # (B, H, W, C) each
            split = "b h w (n d) -> b n (h w) d"
            out = F.scaled_dot_product_attention(
                q, rearrange(k, split, n=self.num_heads), rearrange(v, split, n=self.num_heads)
            )
            local = nchw_to_nhwc(self.local_conv(nhwc_to_nchw(v)))
            out = rearrange(out, "b n (h w) d -> b h w (n d)", h=H) + local
        return self.proj(out)
