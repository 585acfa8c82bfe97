"""Attention token mixers: global MHSA, (shifted) window attention, spatial-reduction attention.

All attention goes through ``F.scaled_dot_product_attention`` so GPUs use flash / memory-efficient
kernels. Masks and relative-position indices depend only on the feature-map size and are cached.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import LayerNormLast, make_act, nchw_to_nhwc, nhwc_to_nchw, pad_to_multiple
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class AttentionParams(MixerParams):
    qkv_bias: bool = True
    proj_bias: bool = True


# ----------------------------------------------------------------------------- global attention
class GlobalAttention(TokenMixer):
    """Multi-head self-attention over all tokens of the map (ViT; CAFormer stages 3-4)."""

    Params: ClassVar[type[MixerParams]] = AttentionParams
    uses_heads = True
    attends_tokens = True
    paper = "ViT (Dosovitskiy et al., ICLR 2021); CAFormer (Yu et al., TPAMI 2023)"
    complexity = "O(N² C)"

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        q, k, v = rearrange(self.qkv(x), "b h w (three n d) -> three b n (h w) d", three=3, n=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b n (h w) d -> b h w (n d)", h=H)
        return self.proj(out)

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """ViT's attention over ``[tokens; pixels]`` ``(B, T + H*W, C)``: tokens are queries and keys."""
        q, k, v = rearrange(self.qkv(sequence), "b l (three n d) -> three b n l d", three=3, n=self.num_heads)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b n l d -> b l (n d)"))


class RelativeAttention(GlobalAttention):
    """Global MHSA plus a learned bias per head and 2-D relative offset (CoAtNet's relative attention).

    The table has (2S-1)² entries for the stage's S x S map at the configured resolution; on other
    map sizes it is bilinearly resized to (2H-1) x (2W-1) offsets (the bias stays a smooth
    function of the offset).
    """

    uses_map_size = True
    attends_tokens = False  # its bias is defined between pixels only
    paper = "CoAtNet (Dai et al., NeurIPS 2021)"
    complexity = "O(N² C)"

    def __init__(
        self, dim: int, num_heads: int, map_size: int, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, proj_bias)
        self.map_size = map_size
        side = 2 * map_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, side, side))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._index_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _relative_index(self, H: int, W: int, device: torch.device) -> Tensor:
        """``(N, N)`` flat index into a (2H-1) x (2W-1) table for every query/key pair."""
        key = (H, W, device)
        if key not in self._index_cache:
            coords = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")).flatten(1)
            rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
            self._index_cache[key] = ((rel[0] + H - 1) * (2 * W - 1) + rel[1] + W - 1).to(device)
        return self._index_cache[key]

    def position_bias(self, H: int, W: int) -> Tensor:
        """``(heads, N, N)`` bias for an H x W map."""
        table = self.relative_position_bias_table
        if table.shape[1:] != (2 * H - 1, 2 * W - 1):
            table = F.interpolate(
                table[None], size=(2 * H - 1, 2 * W - 1), mode="bilinear", align_corners=False
            )[0]
        return table.flatten(1)[:, self._relative_index(H, W, table.device)]

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        q, k, v = rearrange(self.qkv(x), "b h w (three n d) -> three b n (h w) d", three=3, n=self.num_heads)
        bias = self.position_bias(H, W).to(q.dtype)[None]  # 4-D: the fused CPU kernel takes no other
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = rearrange(out, "b n (h w) d -> b h w (n d)", h=H)
        return self.proj(out)


# ----------------------------------------------------------------------------- window attention
def attend_in_windows(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float | None = None
) -> Tensor:
    """Attention within windows: ``(B, nW, heads, N, head_dim)`` queries, ``(B, nW, heads, K,
    head_dim)`` keys and values, under a mask of shape (nW, heads or 1, N, K) (one per window: a
    shifted map, padding), (heads, N, K) (a position bias alone) or None.

    PyTorch's fused CPU attention kernel takes 4-D inputs and masks only (others run the unfused
    math path, 1.5-3x slower at Swin's sizes), so windows and heads are folded into 4-D: as
    ``(B nW, heads)``, a view, where the mask is the same for every window; as ``(B, nW heads)``,
    with copies of q, k and v, where it differs from window to window."""
    n_windows, heads = q.shape[1:3]
    if mask is None or mask.dim() == 3:
        q, k, v = (t.flatten(0, 1) for t in (q, k, v))  # (B nW, heads, N, head_dim): views
        mask = None if mask is None else mask[None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return rearrange(out, "(b nw) n t d -> b nw n t d", nw=n_windows)
    q, k, v = (rearrange(t, "b nw n t d -> b (nw n) t d") for t in (q, k, v))
    mask = rearrange(mask.expand(n_windows, heads, *mask.shape[-2:]), "nw n t s -> 1 (nw n) t s")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return rearrange(out, "b (nw n) t d -> b nw n t d", nw=n_windows)


class WindowParams(AttentionParams):
    window_size: PositiveInt = 7
    relative_position_bias: bool = True  # Swin: True; Twins-SVT's locally-grouped attention: False
    # CrossFormer: the bias comes from a small MLP of the offset (DPB) instead of a table
    dynamic_position_bias: bool = False

    @model_validator(mode="after")
    def _dynamic_needs_relative(self) -> WindowParams:
        if self.dynamic_position_bias and not self.relative_position_bias:
            raise PydanticCustomError(
                "dpb", "dynamic_position_bias needs relative_position_bias: true (it computes that bias)"
            )
        return self


class DynamicPositionBias(nn.Module):
    """CrossFormer's DPB: relative offset (dy, dx) -> Linear -> 3 x [LN -> ReLU -> Linear] -> one bias
    per head, so the bias is a function of the offset and exists for any window size."""

    def __init__(self, hidden: int, num_heads: int) -> None:
        super().__init__()
        self.pos_proj = Linear(2, hidden)
        self.layers = nn.Sequential(
            *(
                nn.Sequential(nn.LayerNorm(hidden), nn.ReLU(inplace=True), Linear(hidden, out))
                for out in (hidden, hidden, num_heads)
            )
        )

    def forward(self, offsets: Tensor) -> Tensor:
        return self.layers(self.pos_proj(offsets))


class WindowAttention(TokenMixer):
    """Attention inside non-overlapping windows (Swin W-MSA, Twins-SVT LSA).

    A relative position bias table of ``(2M-1)^2 x heads`` entries is shared by all windows.
    Maps not divisible by the window are zero-padded at the bottom/right (as Swin does for
    detection) and padded keys are masked so real tokens never attend to padding. A map smaller
    than the window in a dimension uses a window of the map's size there, with no shift (Swin's rule),
    and reads the matching central part of the bias table.
    """

    Params: ClassVar[type[MixerParams]] = WindowParams
    uses_heads = True
    logit_scale_factor: ClassVar[float | None] = None  # None: SDPA's 1/sqrt(head_dim)
    paper = "Swin W-MSA (Liu et al., ICCV 2021); Twins-SVT LSA (Chu et al., NeurIPS 2021)"
    complexity = "O(N M² C), window M"
    shift: ClassVar[bool] = False
    # how a padded (Hp, Wp) map is cut into nh x nw windows of wh x ww tokens: contiguous blocks;
    # the dilated variant interleaves them instead, "(wh nh) (ww nw)"
    grid: ClassVar[str] = "(nh wh) (nw ww)"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        relative_position_bias: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        dynamic_position_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        # CrossFormer sizes the DPB's hidden layers dim / 16
        self.dynamic_position_bias = (
            DynamicPositionBias(max(1, dim // 16), num_heads)
            if relative_position_bias and dynamic_position_bias
            else None
        )
        if relative_position_bias and self.dynamic_position_bias is None:
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) ** 2, num_heads)
            )
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.relative_position_bias_table = None
        self._index_cache: dict[tuple[int, int, torch.device], Tensor] = {}
        self._mask_cache: dict[tuple[int, int, torch.device], Tensor | None] = {}

    # geometry --------------------------------------------------------------------------------
    def geometry(self, H: int, W: int) -> tuple[int, int, int, int]:
        """Effective window (wh, ww) and shift (sh, sw) for an H x W map."""
        ws = self.window_size
        wh, ww = min(ws, H), min(ws, W)
        sh = ws // 2 if self.shift and ws < H else 0
        sw = ws // 2 if self.shift and ws < W else 0
        return wh, ww, sh, sw

    def _relative_index(self, wh: int, ww: int, device: torch.device) -> Tensor:
        key = (wh, ww, device)
        if key not in self._index_cache:
            self._index_cache[key] = self._build_relative_index(wh, ww).to(device)
        return self._index_cache[key]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _build_relative_index(self, wh: int, ww: int) -> Tensor:
        grid = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
        coords = torch.stack(grid).flatten(1)  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N) offsets in [-(w-1), w-1]
        side = 2 * self.window_size - 1
        return (rel[0] + self.window_size - 1) * side + (rel[1] + self.window_size - 1)

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def blocked_mask(self, H: int, W: int, device: torch.device | None = None) -> Tensor | None:
        """Boolean ``(num_windows, N, N)``, True where attention is forbidden; None if nothing is.

        Forbidden: query and key come from different regions of the rolled map (the cyclic shift
        brought them together), or the key is padding and the query is not.
        """
        device = device or torch.device("cpu")
        key = (H, W, device)
        if key in self._mask_cache:
            return self._mask_cache[key]
        wh, ww, sh, sw = self.geometry(H, W)
        Hp, Wp = H + (-H) % wh, W + (-W) % ww
        if not (sh or sw or Hp != H or Wp != W):
            self._mask_cache[key] = None
            return None

        def regions(size: int, window: int, shift: int) -> Tensor:
            # Swin's slices (0, -w), (-w, -s), (-s, None) of the rolled axis; one region if no shift
            label = torch.zeros(size, dtype=torch.long)
            if shift:
                label[size - window : size - shift] = 1
                label[size - shift :] = 2
            return label

        def padding(size: int, real: int, shift: int) -> Tensor:
            # rolled position r holds original position (r + shift) mod size
            return (torch.arange(size) + shift) % size >= real

        label = regions(Hp, wh, sh)[:, None] * 3 + regions(Wp, ww, sw)[None, :]  # (Hp, Wp)
        pad = padding(Hp, H, sh)[:, None] | padding(Wp, W, sw)[None, :]
        label = rearrange(label, f"{self.grid} -> (nh nw) (wh ww)", wh=wh, ww=ww)
        pad = rearrange(pad, f"{self.grid} -> (nh nw) (wh ww)", wh=wh, ww=ww)
        blocked = (label[:, :, None] != label[:, None, :]) | (pad[:, None, :] & ~pad[:, :, None])
        mask = blocked.to(device)
        self._mask_cache[key] = mask
        return mask

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _offsets(self, device: torch.device) -> Tensor:
        """``((2M-1)^2, 2)`` relative offsets (dy, dx) in the order of the bias table's rows."""
        key = (-1, -1, device)  # shares the index cache: no window has size -1
        if key not in self._index_cache:
            span = torch.arange(1 - self.window_size, self.window_size, dtype=torch.float32)
            grid = torch.stack(torch.meshgrid(span, span, indexing="ij"), dim=-1)  # (2M-1, 2M-1, 2)
            self._index_cache[key] = grid.flatten(0, 1).to(device)
        return self._index_cache[key]

    def position_bias(self, wh: int, ww: int, device: torch.device) -> Tensor | None:
        """``(heads, N, N)`` bias added to the attention logits of a wh x ww window, or None."""
        if self.dynamic_position_bias is not None:
            table = self.dynamic_position_bias(self._offsets(device))  # ((2M-1)^2, heads)
        elif self.relative_position_bias_table is not None:
            table = self.relative_position_bias_table
        else:
            return None
        N = wh * ww
        bias = table[self._relative_index(wh, ww, device).view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)  # (heads, N, N)

    def _attn_mask(self, H: int, W: int, wh: int, ww: int, x: Tensor) -> Tensor | None:
        blocked = self.blocked_mask(H, W, x.device)  # (nW, N, N) or None
        bias = self.position_bias(wh, ww, x.device)
        if bias is None:
            return None if blocked is None else ~blocked[:, None]  # bool, True = may attend
        bias = bias.to(x.dtype)
        if blocked is None:
            return bias
        return bias.masked_fill(blocked[:, None], float("-inf"))  # (nW, heads, N, N)

    def project_qkv(self, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, nW, N, C)`` window tokens -> q, k, v of shape ``(B, nW, heads, N, head_dim)``."""
        q, k, v = rearrange(
            self.qkv(windows), "b nw t (three n d) -> three b nw n t d", three=3, n=self.num_heads
        )
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        wh, ww, sh, sw = self.geometry(H, W)
        x = pad_to_multiple(x, (wh, ww))
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        Hp = x.shape[1]
        windows = rearrange(x, f"b {self.grid} c -> b (nh nw) (wh ww) c", wh=wh, ww=ww)
        q, k, v = self.project_qkv(windows)  # (B, nW, heads, N, head_dim)
        out = attend_in_windows(q, k, v, self._attn_mask(H, W, wh, ww, q), self.logit_scale_factor)
        out = rearrange(out, f"b (nh nw) n (wh ww) d -> b {self.grid} (n d)", nh=Hp // wh, wh=wh, ww=ww)
        out = self.proj(out)
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        return out[:, :H, :W]


class ShiftedWindowAttention(WindowAttention):
    """Swin's SW-MSA: windows displaced by half a window through a cyclic shift, with its mask."""

    paper = "Swin SW-MSA (Liu et al., ICCV 2021)"
    shift = True


class DilatedWindowAttention(WindowAttention):
    """Windows of tokens spaced evenly over the whole map: window (i, j) holds the tokens at rows
    i, i + nh, i + 2nh, ... and columns j, j + nw, ... (nh x nw windows of M x M tokens).

    This is CrossFormer's long-distance attention (LDA; at 224 its interval I = map size / M) and
    Shuffle Transformer's spatially shuffled windows, for pairing with short-distance ``window``
    attention in a pattern. The relative position bias is over the window's coarse grid.
    """

    grid = "(wh nh) (ww nw)"
    paper = "CrossFormer LDA (Wang et al., ICLR 2022); Shuffle Transformer (Huang et al., 2021)"


# ----------------------------------------------------------------------------- Swin V2
class CosineWindowParams(AttentionParams):
    window_size: PositiveInt = 8
    cpb_hidden: PositiveInt = 512  # hidden width of the continuous position bias MLP


class CosineWindowAttention(WindowAttention):
    """Swin V2 window attention: scaled cosine attention and a log-spaced continuous position bias.

    Logits are ``cos(q, k) * exp(min(logit_scale, log 100))`` per head; scaling the normalised q
    by that factor (and calling SDPA with scale 1) keeps the fused kernel. The bias is
    ``16 * sigmoid(MLP(log-spaced relative offsets))``, so it is defined for any window size.
    Like Swin V2, q and v have biases but k has none. Use with ``norm_position: post`` (res-post-norm).
    """

    Params: ClassVar[type[MixerParams]] = CosineWindowParams
    logit_scale_factor: ClassVar[float | None] = 1.0  # the per-head scale is folded into q
    paper = "Swin V2 (Liu et al., CVPR 2022)"
    complexity = "O(N M² C), window M"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 8,
        cpb_hidden: int = 512,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__(
            dim, num_heads, window_size, relative_position_bias=False, qkv_bias=False, proj_bias=proj_bias
        )
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            Linear(2, cpb_hidden), nn.ReLU(inplace=True), Linear(cpb_hidden, num_heads, bias=False)
        )
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self._coords_cache: dict[torch.device, Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _log_spaced_offsets(self, device: torch.device) -> Tensor:
        """``(2M-1, 2M-1, 2)`` relative offsets scaled to [-8, 8], then sign * log2(1 + |x|) / 3."""
        if device not in self._coords_cache:
            ws = self.window_size
            offsets = torch.arange(-(ws - 1), ws, dtype=torch.float32) / max(ws - 1, 1) * 8
            table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)
            table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
            self._coords_cache[device] = table.to(device)
        return self._coords_cache[device]

    def position_bias(self, wh: int, ww: int, device: torch.device) -> Tensor:
        table = self.cpb_mlp(self._log_spaced_offsets(device)).flatten(0, 1)  # ((2M-1)^2, heads)
        N = wh * ww
        bias = table[self._relative_index(wh, ww, device).view(-1)].view(N, N, self.num_heads)
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))  # (heads, N, N)

    def project_qkv(self, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(windows, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b nw t (three n d) -> three b nw n t d", three=3, n=self.num_heads)
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()  # (heads, 1, 1)
        return F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1), v


class ShiftedCosineWindowAttention(CosineWindowAttention):
    """Swin V2 attention in windows displaced by half a window (cyclic shift + mask, as SW-MSA)."""

    shift = True


# ----------------------------------------------------------------------------- spatial reduction
class SpatialReductionParams(AttentionParams):
    sr_ratio: PositiveInt = 1


class SpatialReductionAttention(TokenMixer):
    """PVT / PVTv2 / Twins GSA: keys and values from a map reduced by a strided conv + LayerNorm.

    ``sr_ratio == 1`` is plain global attention (with separate q and kv projections, as in PVT).
    A map not divisible by the ratio is zero-padded before the reduction.
    """

    Params: ClassVar[type[MixerParams]] = SpatialReductionParams
    uses_heads = True
    attends_tokens = True
    paper = "PVT (Wang et al., ICCV 2021); PVTv2 (CVMJ 2022); Twins GSA (NeurIPS 2021)"
    complexity = "O(N² C / R²), ratio R"

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = LayerNormLast(dim)

    def reduce(self, x: Tensor) -> Tensor:
        if self.sr_ratio == 1:
            return x
        x = pad_to_multiple(x, self.sr_ratio)
        return self.norm(nchw_to_nhwc(self.sr(nhwc_to_nchw(x))))  # (B, H/R, W/R, C)

    def forward(self, x: Tensor) -> Tensor:
        H = x.shape[1]
        q = rearrange(self.q(x), "b h w (n d) -> b n (h w) d", n=self.num_heads)
        k, v = rearrange(
            self.kv(self.reduce(x)), "b h w (two n d) -> two b n (h w) d", two=2, n=self.num_heads
        )
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b n (h w) d -> b h w (n d)", h=H)
        return self.proj(out)

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """PVT v1's last stage: queries ``[tokens; pixels]``, keys and values ``[tokens; reduced map]``
        (the tokens are never reduced: they have no place in the map)."""
        x = rearrange(sequence[:, num_tokens:], "b (h w) c -> b h w c", h=size[0])  # the map to reduce
        reduced = self.reduce(x)
        keys = (
            sequence if reduced is x else torch.cat([sequence[:, :num_tokens], reduced.flatten(1, 2)], dim=1)
        )
        q = rearrange(self.q(sequence), "b l (n d) -> b n l d", n=self.num_heads)
        k, v = rearrange(self.kv(keys), "b l (two n d) -> two b n l d", two=2, n=self.num_heads)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b n l d -> b l (n d)"))


class PooledReductionParams(AttentionParams):
    pool_size: PositiveInt = 7


class PooledReductionAttention(SpatialReductionAttention):
    """PVTv2-Li's linear SRA: keys and values from an adaptive average pool to a fixed
    ``pool_size`` x ``pool_size`` map, then 1x1 conv, LayerNorm and GELU (cost linear in tokens)."""

    Params: ClassVar[type[MixerParams]] = PooledReductionParams
    paper = "PVTv2-Li linear SRA (Wang et al., CVMJ 2022)"
    complexity = "O(N P² C), pool P"

    def __init__(
        self, dim: int, num_heads: int, pool_size: int = 7, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__(dim, num_heads, sr_ratio=1, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.pool_size = pool_size
        self.sr = nn.Conv2d(dim, dim, kernel_size=1)
        self.norm = LayerNormLast(dim)
        self.act = make_act("gelu")

    def reduce(self, x: Tensor) -> Tensor:
        pooled = F.adaptive_avg_pool2d(nhwc_to_nchw(x), self.pool_size)
        return self.act(self.norm(nchw_to_nhwc(self.sr(pooled))))  # (B, P, P, C)
