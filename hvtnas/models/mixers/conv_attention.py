"""Attention with convolutions inside: CvT's convolutional projections and ResT's efficient MHSA."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import Tensor, nn

from hvtnas.models.layers import LayerNormLast, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.attention import AttentionParams
from hvtnas.models.mixers.base import MixerParams, TokenMixer


# ----------------------------------------------------------------------------- CvT
class ConvProjectionParams(AttentionParams):
    kernel_size: PositiveInt = 3
    kv_stride: PositiveInt = 2  # CvT: keys and values from a map subsampled 2x
    # CvT scales the logits by width^-1/2 rather than head_dim^-1/2 (its code's choice)
    scale_by_width: bool = True


def _depthwise_bn(dim: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(dim, dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=dim, bias=False),
        nn.BatchNorm2d(dim),
    )


class ConvProjectionAttention(TokenMixer):
    """CvT: q, k and v each come from a depthwise k x k conv + BatchNorm of the map (stride 1 for
    q, ``kv_stride`` for k and v) followed by a linear projection; then multi-head attention."""

    Params: ClassVar[type[MixerParams]] = ConvProjectionParams
    uses_heads = True
    attends_tokens = True
    paper = "CvT (Wu et al., ICCV 2021)"
    complexity = "O(N² C / s²), kv stride s"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        kv_stride: int = 2,
        scale_by_width: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5 if scale_by_width else None
        self.conv_q = _depthwise_bn(dim, kernel_size, 1)
        self.conv_k = _depthwise_bn(dim, kernel_size, kv_stride)
        self.conv_v = _depthwise_bn(dim, kernel_size, kv_stride)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def _heads(self, conv: nn.Module, linear: nn.Linear, x_nchw: Tensor) -> Tensor:
        tokens = linear(nchw_to_nhwc(conv(x_nchw)))  # (B, h, w, C)
        return rearrange(tokens, "b h w (n d) -> b n (h w) d", n=self.num_heads)

    def forward(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        x_nchw = nhwc_to_nchw(x)
        q = self._heads(self.conv_q, self.proj_q, x_nchw)
        k = self._heads(self.conv_k, self.proj_k, x_nchw)
        v = self._heads(self.conv_v, self.proj_v, x_nchw)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(out, "b n (h w) d -> b h w (n d)", h=H))

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """CvT's stage 3: the class token skips the convolutions and joins the conv-projected pixels
        before the linear projections; then attention over ``[tokens; pixels]``."""
        tokens = sequence[:, :num_tokens]
        x_nchw = rearrange(sequence[:, num_tokens:], "b (h w) c -> b c h w", h=size[0])  # for the convs

        def heads(conv: nn.Module, linear: nn.Linear) -> Tensor:
            pixels = nchw_to_nhwc(conv(x_nchw)).flatten(1, 2)  # (B, h*w, C)
            sequence = linear(torch.cat([tokens, pixels], dim=1))  # (B, T + h*w, C)
            return rearrange(sequence, "b l (n d) -> b n l d", n=self.num_heads)

        q = heads(self.conv_q, self.proj_q)
        k = heads(self.conv_k, self.proj_k)
        v = heads(self.conv_v, self.proj_v)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(rearrange(out, "b n l d -> b l (n d)"))


# ----------------------------------------------------------------------------- ResT
class EfficientAttentionParams(AttentionParams):
    # ResT uses 8, 4, 2, 1 over the stages; without reduction the explicit N x N logits are costly
    sr_ratio: PositiveInt = 2
    head_transform: bool = True  # ResT's 1x1 conv across heads + instance norm (needs >= 2 heads)


class EfficientMultiHeadAttention(TokenMixer):
    """ResT's EMSA: keys and values from a map reduced by a depthwise conv (kernel R+1, stride R)
    + LayerNorm; the attention logits are mixed across heads by a 1x1 conv, softmaxed and
    instance-normalised per head.

    The cross-head conv acts on the logits, so this mixer computes them explicitly instead of
    through ``F.scaled_dot_product_attention``.
    """

    Params: ClassVar[type[MixerParams]] = EfficientAttentionParams
    uses_heads = True
    paper = "ResT (Zhang & Yang, NeurIPS 2021)"
    complexity = "O(N² C / R²), ratio R"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        head_transform: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio + 1, stride=sr_ratio, padding=sr_ratio // 2, groups=dim)
            self.sr_norm = LayerNormLast(dim)
        # with one head there is nothing to mix across (ResT disables it too)
        self.head_transform = nn.Conv2d(num_heads, num_heads, 1) if head_transform and num_heads > 1 else None

    def forward(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        q = rearrange(self.q(x), "b h w (n d) -> b n (h w) d", n=self.num_heads)
        reduced = self.sr_norm(nchw_to_nhwc(self.sr(nhwc_to_nchw(x)))) if self.sr_ratio > 1 else x
        k, v = rearrange(self.kv(reduced), "b h w (two n d) -> two b n (h w) d", two=2, n=self.num_heads)
        if self.head_transform is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            logits = self.head_transform(torch.matmul(q, k.transpose(-2, -1)) * self.scale)  # (B, n, N, M)
            attn = logits.softmax(dim=-1)
            # instance norm per (sample, head) over N x M; by hand, so a 1 x 1 map gives 0, not an error
            mean = attn.mean(dim=(-2, -1), keepdim=True)
            var = attn.var(dim=(-2, -1), keepdim=True, unbiased=False)
            attn = (attn - mean) * torch.rsqrt(var + 1e-5)
            out = torch.matmul(attn, v)
        return self.proj(rearrange(out, "b n (h w) d -> b h w (n d)", h=H))
