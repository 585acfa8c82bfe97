"""Attention with convolutions inside: CvT's convolutional projections, ResT's efficient MHSA and
LVT's convolutional and recursive atrous self-attention."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, PositiveInt, field_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from hvtnas.models.layers import LayerNormLast, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.attention import AttentionParams, SpatialReductionAttention, SpatialReductionParams
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


# ----------------------------------------------------------------------------- LVT
class ConvSelfAttentionParams(MixerParams):
    kernel_size: PositiveInt = 3
    stride: PositiveInt = 2
    proj_bias: bool = True

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, kernel: int) -> int:
        if kernel % 2 == 0:
            raise PydanticCustomError(
                "odd_kernel", "{kernel} is even: the kernel needs a centre", {"kernel": kernel}
            )
        return kernel


class ConvSelfAttention(TokenMixer):
    """LVT's convolutional self-attention (CSA): self-attention inside a k x k convolution.

    For every k x k neighbourhood (stride s, padding k//2) the k² x k² attention weights come from
    one linear map of the s x s average-pooled token (no query-key product, as VOLO's outlook
    attention); the values are the neighbourhood's k² tokens, each through a linear map of its own
    kernel position (a grouped 1 x 1 conv over k² C channels in LVT's code); each position's
    output is the attention-weighted sum over the neighbourhood, and the overlapping outputs are
    folded back onto the map (summed), then projected.
    """

    Params: ClassVar[type[MixerParams]] = ConvSelfAttentionParams
    uses_heads = True
    paper = "LVT CSA (Yang et al., CVPR 2022)"
    complexity = "O(N k⁴ C / s² + N k² C² / s²), kernel k, stride s"

    def __init__(
        self, dim: int, num_heads: int, kernel_size: int = 3, stride: int = 2, proj_bias: bool = True
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.scale = (dim // num_heads) ** -0.5
        self.attn = nn.Linear(dim, kernel_size**4 * num_heads)
        # (k², C_out, C_in): one value projection per kernel position, no bias (as LVT's)
        self.value_weight = nn.Parameter(torch.empty(kernel_size**2, dim, dim))
        nn.init.trunc_normal_(self.value_weight, std=0.02)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        k, s = self.kernel_size, self.stride
        x_nchw = nhwc_to_nchw(x)
        pooled = F.avg_pool2d(x_nchw, s, s, ceil_mode=True)  # (B, C, ceil(H/s), ceil(W/s))
        logits = self.attn(nchw_to_nhwc(pooled))  # (B, h, w, heads * k² * k²)
        attn = rearrange(logits, "b h w (n i j) -> b n (h w) i j", n=self.num_heads, i=k * k)
        attn = (attn * self.scale).softmax(dim=-1)  # (B, heads, L, k², k²)
        patches = F.unfold(x_nchw, k, padding=k // 2, stride=s)  # (B, C k², L), L = h w
        patches = rearrange(patches, "b (c kk) l -> b l kk c", kk=k * k)
        values = torch.einsum("blkc,koc->blko", patches, self.value_weight)  # (B, L, k², C)
        values = rearrange(values, "b l kk (n d) -> b n l kk d", n=self.num_heads)
        out = torch.matmul(attn, values)  # (B, heads, L, k², d)
        out = rearrange(out, "b n l kk d -> b (n d kk) l")  # fold's layout: channel-major, then position
        out = F.fold(out, (H, W), k, padding=k // 2, stride=s)  # overlapping outputs summed: (B, C, H, W)
        return self.proj(nchw_to_nhwc(out))


class RecursiveAtrousParams(SpatialReductionParams):
    atrous_rates: list[PositiveInt] = Field([1, 3, 5], min_length=1)  # pydantic copies the default
    recursions: PositiveInt = Field(2, le=8)


class RecursiveAtrousAttention(SpatialReductionAttention):
    """LVT's recursive atrous self-attention (RASA): spatial-reduction attention whose queries
    pass through one depthwise 3 x 3 conv applied at several dilations (shared weights, each
    result through SiLU, summed: multi-scale context in the similarity map), applied
    ``recursions`` times: ``y = silu(attn(x))``, then ``y = silu(attn(y + x_prev))``, ...

    The atrous conv has a bias when the q/kv projections do (LVT ties them).
    """

    Params: ClassVar[type[MixerParams]] = RecursiveAtrousParams
    paper = "LVT RASA (Yang et al., CVPR 2022)"
    complexity = "O(r N² C / R²), ratio R, recursions r"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        atrous_rates: list[int] | None = None,
        recursions: int = 2,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__(dim, num_heads, sr_ratio=sr_ratio, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.atrous_rates = list(atrous_rates or [1, 3, 5])
        self.recursions = recursions
        self.atrous = nn.Conv2d(dim, dim, 3, groups=dim, bias=qkv_bias)
        self.act = nn.SiLU()

    def _attention(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        q = nhwc_to_nchw(self.q(x))
        # the same depthwise weights at every dilation rate, each through SiLU, summed
        q = sum(
            self.act(
                F.conv2d(
                    q, self.atrous.weight, self.atrous.bias, padding=rate, dilation=rate, groups=q.shape[1]
                )
            )
            for rate in self.atrous_rates
        )
        q = rearrange(q, "b (n d) h w -> b n (h w) d", n=self.num_heads)
        k, v = rearrange(
            self.kv(self.reduce(x)), "b h w (two n d) -> two b n (h w) d", two=2, n=self.num_heads
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b n (h w) d -> b h w (n d)", h=H))

    def forward(self, x: Tensor) -> Tensor:
        out = self._attention(x)
        if self.recursions == 1:
            return out
        out = self.act(out)
        for _ in range(self.recursions - 1):  # recursion steps (2 in LVT), not tokens
            x = out + x  # the next step's input, and its residual
            out = self.act(self._attention(x))
        return out
