"""MViT's pooling attention: Q, K, V pooled by depthwise convs (Fan et al., "Multiscale Vision
Transformers", ICCV 2021), with MViTv2's decomposed relative position bias and residual pooling
connection (Li et al., "MViTv2: Improved Multiscale Vision Transformers", CVPR 2022)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.mixers.attention import AttentionParams
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class PoolingAttentionParams(AttentionParams):
    kv_stride: PositiveInt = 1  # MViTv2-T: 4, 2, 1, 1 over the stages (its adaptive K/V stride)
    kernel_size: PositiveInt = 3  # of the pooling convs
    residual_pooling: bool = True  # add the pooled Q to the attention output
    relative_position: bool = True  # decomposed (height + width) relative position terms
    # MViTv2 pools Q in every block (stride 1 but at transitions); MViT v1 only where it is strided
    query_pooling: bool = True


class _Pool(nn.Module):
    """Depthwise conv on each head's channels (shared by the heads) -> LayerNorm."""

    def __init__(self, head_dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            head_dim,
            head_dim,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=head_dim,
            bias=False,
        )
        self.norm = nn.LayerNorm(head_dim, eps=1e-6)  # MViTv2's norm eps

    def forward(self, x: Tensor, tokens: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, n, H, W, d) -> (B, n, h, w, d); the tokens beside the map ``(B, n, T, d)`` are not
        pooled (they have no place in it) but normalised with it, as MViT's class token."""
        B = x.shape[0]
        x = self.conv(rearrange(x, "b n h w d -> (b n) d h w"))
        x = self.norm(rearrange(x, "(b n) d h w -> b n h w d", b=B))
        return x, (self.norm(tokens) if tokens is not None else None)


class PoolingAttention(TokenMixer):
    """Multi-head attention whose queries, keys and values are pooled maps: each passes a depthwise
    k x k conv (stride ``q_stride`` for Q, ``kv_stride`` for K and V) and a LayerNorm.

    Logits get MViTv2's decomposed relative position terms, q · R_h[dy] + q · R_w[dx] (tables
    sized for the stage's map at the configured resolution, linearly resized at other sizes), and
    the pooled Q is added to the output (residual pooling). As a mixer Q is not strided; with
    ``q_stride`` 2 and ``dim_out`` it is the attention of MViT's stage-transition block
    (``downsample: pooling_attention``), which halves the map and widens the channels inside
    attention. The position terms depend on Q, so they enter SDPA as its additive mask.
    """

    Params: ClassVar[type[MixerParams]] = PoolingAttentionParams
    uses_heads = True
    uses_map_size = True
    attends_tokens = True
    paper = "MViT (Fan et al., ICCV 2021); MViTv2 (Li et al., CVPR 2022)"
    complexity = "O(N² C / s²), K/V stride s"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        map_size: int,
        kv_stride: int = 1,
        kernel_size: int = 3,
        residual_pooling: bool = True,
        relative_position: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        query_pooling: bool = True,
        dim_out: int | None = None,
        q_stride: int = 1,
    ) -> None:
        super().__init__()
        dim_out = dim_out or dim
        self.num_heads = num_heads
        head_dim = dim_out // num_heads
        self.qkv = Linear(dim, 3 * dim_out, bias=qkv_bias)
        self.proj = Linear(dim_out, dim_out, bias=proj_bias)
        # MViTv2 pools whenever kernel or stride is above 1
        pooled = kernel_size > 1
        self.pool_q = (
            _Pool(head_dim, kernel_size, q_stride) if (pooled and query_pooling) or q_stride > 1 else None
        )
        self.pool_k = _Pool(head_dim, kernel_size, kv_stride) if pooled or kv_stride > 1 else None
        self.pool_v = _Pool(head_dim, kernel_size, kv_stride) if pooled or kv_stride > 1 else None
        self.residual_pooling = residual_pooling
        if relative_position:
            span = 2 * max(map_size // q_stride, map_size // kv_stride, 1) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(span, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(span, head_dim))
            nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(self.rel_pos_w, std=0.02)
        else:
            self.rel_pos_h = self.rel_pos_w = None
        self._distance_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _distances(self, q_len: int, k_len: int, device: torch.device) -> Tensor:
        """``(q_len, k_len)`` row of the table for each query/key pair along one axis; the finer
        of the two grids is stretched onto the coarser (MViTv2's scaled offsets)."""
        key = (q_len, k_len, device)
        if key not in self._distance_cache:
            q_ratio, k_ratio = max(k_len / q_len, 1.0), max(q_len / k_len, 1.0)
            dist = torch.arange(q_len)[:, None] * q_ratio - torch.arange(k_len)[None, :] * k_ratio
            self._distance_cache[key] = (dist + (k_len - 1) * k_ratio).long().to(device)
        return self._distance_cache[key]

    def _table(self, table: Tensor, length: int) -> Tensor:
        if table.shape[0] == length:
            return table
        # another input size: resize the table along its offsets (as MViTv2 does)
        resized = F.interpolate(table.T[None], size=length, mode="linear", align_corners=False)
        return resized[0].T

    def _position_terms(self, q: Tensor, k_size: tuple[int, int]) -> Tensor:
        """``(B, n, Nq, Nk)`` decomposed relative position logits for pooled ``q`` (B, n, h, w, d)."""
        (qh, qw), (kh, kw) = q.shape[2:4], k_size
        rel_h = self._table(self.rel_pos_h, 2 * max(qh, kh) - 1)[
            self._distances(qh, kh, q.device)
        ]  # (qh, kh, d)
        rel_w = self._table(self.rel_pos_w, 2 * max(qw, kw) - 1)[
            self._distances(qw, kw, q.device)
        ]  # (qw, kw, d)
        along_h = torch.einsum("bnhwd,hkd->bnhwk", q, rel_h)  # (B, n, qh, qw, kh)
        along_w = torch.einsum("bnhwd,wkd->bnhwk", q, rel_w)  # (B, n, qh, qw, kw)
        terms = along_h[..., :, None] + along_w[..., None, :]  # (B, n, qh, qw, kh, kw)
        return rearrange(terms, "b n qh qw kh kw -> b n (qh qw) (kh kw)")

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C) -> (B, H / q_stride, W / q_stride, C_out)
        return self._attend(x, None)[0]

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """As ``forward_sequence``, the map and tokens apart: with ``q_stride`` (MViT's transition)
        the map comes out pooled, which the base class's split of the sequence cannot know."""
        out, out_tokens = self._attend(x, tokens)
        assert out_tokens is not None
        return out, out_tokens

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """MViT's class token: a query and key like the pixels, never pooled (see ``_Pool``); the
        pooling needs the map, so the sequence ``(B, T + H*W, C)`` is split and joined here."""
        tokens, pixels = sequence[:, :num_tokens], sequence[:, num_tokens:]
        x = rearrange(pixels, "b (h w) c -> b h w c", h=size[0])
        out, out_tokens = self._attend(x, tokens)
        assert out_tokens is not None
        return torch.cat([out_tokens, out.flatten(1, 2)], dim=1)  # (B, T + h*w, C_out)

    def _attend(self, x: Tensor, tokens: Tensor | None) -> tuple[Tensor, Tensor | None]:
        qkv = rearrange(self.qkv(x), "b h w (three n d) -> three b n h w d", three=3, n=self.num_heads)
        tq = tk = tv = None
        if tokens is not None:
            tq, tk, tv = rearrange(
                self.qkv(tokens), "b t (three n d) -> three b n t d", three=3, n=self.num_heads
            )
        (q, tq), (k, tk), (v, tv) = (
            pool(m, t) if pool is not None else (m, t)
            for pool, m, t in zip((self.pool_q, self.pool_k, self.pool_v), qkv, (tq, tk, tv), strict=True)
        )
        qh, T = q.shape[2], 0 if tokens is None else tokens.shape[1]
        mask = None
        if self.rel_pos_h is not None:
            mask = self._position_terms(q, k.shape[2:4]).to(q.dtype)
            if T:  # no position terms to or from the tokens: zero rows and columns for them
                mask = F.pad(mask, (T, 0, T, 0))
        flat = "b n h w d -> b n (h w) d"
        q, k, v = (rearrange(t, flat) for t in (q, k, v))
        if T:  # [tokens; pixels], tokens first as in MViT
            q, k, v = (torch.cat([t, m], dim=2) for t, m in ((tq, q), (tk, k), (tv, v)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if self.residual_pooling:
            out = out + q
        out = self.proj(rearrange(out, "b n l d -> b l (n d)"))  # (B, T + h*w, C_out)
        return rearrange(out[:, T:], "b (h w) c -> b h w c", h=qh), (out[:, :T] if T else None)
