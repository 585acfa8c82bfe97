"""Attention with convolutions inside: CvT's convolutional projections, ResT's efficient MHSA and
CoaT's conv-attention (factorized attention with convolutional relative position encoding);
LVT's convolutional and recursive atrous self-attention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, PositiveInt, field_validator, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from hvtnas.models.fused import Linear
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
        self.proj_q = Linear(dim, dim, bias=qkv_bias)
        self.proj_k = Linear(dim, dim, bias=qkv_bias)
        self.proj_v = Linear(dim, dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)

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
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
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


# ----------------------------------------------------------------------------- CoaT
class FactorizedAttentionParams(AttentionParams):
    # depthwise kernels of the convolutional relative position encoding, each for a group of heads
    crpe_kernel_sizes: list[PositiveInt] = Field([3, 5, 7], min_length=1)
    # heads per kernel (sum: the stage's heads); None: as evenly as possible, the larger kernels
    # taking the remainder (CoaT's 2, 3, 3 of 8 heads)
    crpe_heads: list[PositiveInt] | None = None
    # one encoding per stage, shared by its blocks (CoaT); false: each block its own
    share_crpe: bool = True

    @field_validator("crpe_kernel_sizes")
    @classmethod
    def _odd_kernels(cls, kernels: list[int]) -> list[int]:
        if any(k % 2 == 0 for k in kernels):
            raise PydanticCustomError(
                "odd_kernel",
                "the kernels must be odd (padding k // 2 keeps the map's size), got {k}",
                {"k": kernels},
            )
        return kernels

    @model_validator(mode="after")
    def _one_head_count_per_kernel(self) -> FactorizedAttentionParams:
        if self.crpe_heads is not None and len(self.crpe_heads) != len(self.crpe_kernel_sizes):
            raise PydanticCustomError(
                "crpe_heads",
                "crpe_heads needs one head count per kernel of crpe_kernel_sizes {kernels}, got {heads}",
                {"kernels": self.crpe_kernel_sizes, "heads": self.crpe_heads},
            )
        return self

    def heads_problem(self, num_heads: int) -> str | None:
        if self.crpe_heads is not None and sum(self.crpe_heads) != num_heads:
            return f"crpe_heads {self.crpe_heads} must add up to the stage's {num_heads} heads"
        return None


def split_heads(num_heads: int, groups: int) -> list[int]:
    """``num_heads`` over ``groups`` as evenly as possible, the last groups taking the remainder
    (8 over 3: 2, 3, 3, CoaT's split; a group may get none when there are fewer heads than groups)."""
    base, remainder = divmod(num_heads, groups)
    return [base + (i >= groups - remainder) for i in range(groups)]


class ConvRelativePositionEncoding(nn.Module):
    """CoaT's convolutional relative position encoding: ``q * dwconv(v)`` per head, a depthwise
    k x k convolution of the values as a map, with a kernel size per group of heads.

    ``forward(q, v, H)`` takes ``(B, n, H*W, d)`` queries and values of the map's tokens.
    """

    def __init__(
        self, dim: int, num_heads: int, kernel_sizes: Sequence[int], heads: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        heads = list(heads) if heads is not None else split_heads(num_heads, len(kernel_sizes))
        if sum(heads) != num_heads:
            raise ValueError(f"crpe heads {heads} must add up to {num_heads}")
        head_dim = dim // num_heads
        groups = [(k, h) for k, h in zip(kernel_sizes, heads, strict=True) if h > 0]
        self.channels = [h * head_dim for _, h in groups]  # channels of each group, in head order
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c)
            for (k, _), c in zip(groups, self.channels, strict=True)
        )

    def forward(self, q: Tensor, v: Tensor, H: int) -> Tensor:
        v_map = rearrange(v, "b n (h w) d -> b (n d) h w", h=H)  # heads' values as one channel-stacked map
        # one depthwise conv per kernel size (a handful), each over its group of heads' channels
        groups = torch.split(v_map, self.channels, dim=1)
        conv_v = torch.cat([conv(g) for conv, g in zip(self.convs, groups, strict=True)], dim=1)
        return q * rearrange(conv_v, "b (n d) h w -> b n (h w) d", n=q.shape[1])


class FactorizedAttention(TokenMixer):
    """CoaT's conv-attention: factorized attention ``q (softmax_N(k)^T v) / sqrt(d)``, linear in
    the number of tokens N (keys softmaxed over the tokens, then a d x d context per head), plus
    the convolutional relative position encoding ``q * dwconv(v)`` (``ConvRelativePositionEncoding``;
    one per stage, shared by its blocks, as CoaT's).

    With tokens beside the map (CoaT's class token) they join the factorized attention as queries
    and keys; the position encoding, a convolution over the map, is zero for them.
    """

    Params: ClassVar[type[MixerParams]] = FactorizedAttentionParams
    uses_heads = True
    attends_tokens = True
    paper = "CoaT (Xu et al., ICCV 2021)"
    complexity = "O(N C²)"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        crpe_kernel_sizes: Sequence[int] = (3, 5, 7),
        crpe_heads: Sequence[int] | None = None,
        share_crpe: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        shared: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        self.crpe = (
            shared
            if shared is not None
            else ConvRelativePositionEncoding(dim, num_heads, list(crpe_kernel_sizes), crpe_heads)
        )

    @classmethod
    def stage_shared(cls, dim: int, **kwargs: Any) -> nn.Module | None:
        if not kwargs.get("share_crpe", True):
            return None
        kernels = list(kwargs.get("crpe_kernel_sizes", (3, 5, 7)))
        return ConvRelativePositionEncoding(dim, kwargs["num_heads"], kernels, kwargs.get("crpe_heads"))

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """``[tokens; pixels]`` ``(B, T + H*W, C)`` -> the same: factorized attention over the
        whole sequence, the position encoding on its H*W map tokens."""
        T, H = num_tokens, size[0]
        q, k, v = rearrange(self.qkv(sequence), "b l (three n d) -> three b n l d", three=3, n=self.num_heads)
        context = torch.matmul(k.softmax(dim=2).transpose(-2, -1), v)  # (B, n, d, d): linear in N
        out = self.scale * torch.matmul(q, context)  # (B, n, T + H*W, d)
        position = self.crpe(q[:, :, T:], v[:, :, T:], H)  # (B, n, H*W, d)
        # the tokens beside the map (first T) have no place in the map: no position term
        out = torch.cat([out[:, :, :T], out[:, :, T:] + position], dim=2) if T else out + position
        return self.proj(rearrange(out, "b n l d -> b l (n d)"))

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1], x.shape[2]
        out = self.forward_sequence(rearrange(x, "b h w c -> b (h w) c"), 0, (H, W))
        return rearrange(out, "b (h w) c -> b h w c", h=H)


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
        self.attn = Linear(dim, kernel_size**4 * num_heads)
        # (k², C_out, C_in): one value projection per kernel position, no bias (as LVT's)
        self.value_weight = nn.Parameter(torch.empty(kernel_size**2, dim, dim))
        nn.init.trunc_normal_(self.value_weight, std=0.02)
        self.proj = Linear(dim, dim, bias=proj_bias)

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
    attends_tokens = False  # SRA's token path would skip the recursion and the atrous queries
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
