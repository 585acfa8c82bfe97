"""CSWin's cross-shaped window self-attention with locally-enhanced positional encoding (LePE)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class CrossWindowParams(MixerParams):
    stripe_width: PositiveInt = 7  # CSWin-T: 1, 2, 7, 7 in stages 1-4
    qkv_bias: bool = True
    proj_bias: bool = True


class CrossShapedWindowAttention(TokenMixer):
    """Half the heads attend within vertical stripes (full height, ``stripe_width`` columns),
    the other half within horizontal stripes; the two halves are concatenated and projected.

    LePE adds a depthwise 3x3 conv of V, computed inside each stripe, to the attention output.
    A stripe wider than the map is clamped to it: when it covers the whole map (CSWin's last
    stage) both halves are global attention, which is CSWin's single full-attention branch (same
    parameters, same function). Maps not divisible by the stripe are zero-padded and padded
    keys masked.
    """

    Params: ClassVar[type[MixerParams]] = CrossWindowParams
    uses_heads = True
    heads_multiple = 2
    paper = "CSWin (Dong et al., CVPR 2022)"
    complexity = "O(N sw √N C), stripe width sw"

    def __init__(
        self, dim: int, num_heads: int, stripe_width: int = 7, qkv_bias: bool = True, proj_bias: bool = True
    ) -> None:
        super().__init__()
        if num_heads % 2 or dim % 2:
            raise ValueError(f"cross-shaped windows split heads in two: got {num_heads} heads, width {dim}")
        self.num_heads = num_heads
        self.stripe_width = stripe_width
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        # one LePE conv per branch (vertical, horizontal), each over its half of the channels
        self.lepe = nn.ModuleList(
            nn.Conv2d(dim // 2, dim // 2, 3, padding=1, groups=dim // 2) for _ in range(2)
        )
        self.proj = Linear(dim, dim, bias=proj_bias)
        self._mask_cache: dict[tuple[int, int, int, int, torch.device], Tensor | None] = {}

    def windows(self, H: int, W: int) -> list[tuple[int, int]]:
        """The (height, width) of the vertical and of the horizontal stripes on an H x W map."""
        return [(H, min(self.stripe_width, W)), (min(self.stripe_width, H), W)]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _key_mask(self, H: int, W: int, wh: int, ww: int, device: torch.device) -> Tensor | None:
        """``(nW, 1, 1, N)`` True where a key is real; None if the map needs no padding."""
        key = (H, W, wh, ww, device)
        if key not in self._mask_cache:
            Hp, Wp = H + (-H) % wh, W + (-W) % ww
            if (Hp, Wp) == (H, W):
                self._mask_cache[key] = None
            else:
                real = (torch.arange(Hp)[:, None] < H) & (torch.arange(Wp)[None, :] < W)  # (Hp, Wp)
                real = rearrange(real, "(nh wh) (nw ww) -> (nh nw) 1 1 (wh ww)", wh=wh, ww=ww)
                self._mask_cache[key] = real.to(device)
        return self._mask_cache[key]

    def _stripe_attention(self, qkv: Tensor, lepe: nn.Conv2d, wh: int, ww: int) -> Tensor:
        B, H, W = qkv.shape[:3]
        qkv = pad_to_multiple(qkv, (wh, ww))
        nh, nw = qkv.shape[1] // wh, qkv.shape[2] // ww
        q, k, v = rearrange(
            qkv,
            "b (nh wh) (nw ww) (three n d) -> three (b nh nw) n (wh ww) d",
            wh=wh,
            ww=ww,
            three=3,
            n=self.num_heads // 2,
        )
        mask = self._key_mask(H, W, wh, ww, qkv.device)
        if mask is not None:
            mask = mask.repeat(B, 1, 1, 1)  # (B * nW, 1, 1, N), windows batch-major like q
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B*nW, n, N, d)
        # LePE: depthwise conv of V inside each stripe (zero padding at the stripe's border)
        v_map = rearrange(v, "bw n (wh ww) d -> bw (n d) wh ww", wh=wh)
        out = out + rearrange(lepe(v_map), "bw (n d) wh ww -> bw n (wh ww) d", n=self.num_heads // 2)
        out = rearrange(out, "(b nh nw) n (wh ww) d -> b (nh wh) (nw ww) (n d)", b=B, nh=nh, nw=nw, wh=wh)
        return out[:, :H, :W]

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        # channels: [q | k | v], each split into the vertical half and the horizontal half
        q, k, v = rearrange(self.qkv(x), "b h w (three c) -> three b h w c", three=3)
        halves = [
            torch.cat(parts, dim=-1)
            for parts in zip(q.chunk(2, -1), k.chunk(2, -1), v.chunk(2, -1), strict=True)
        ]
        outs = [
            self._stripe_attention(qkv, lepe, wh, ww)
            for qkv, lepe, (wh, ww) in zip(halves, self.lepe, self.windows(H, W), strict=True)
        ]
        return self.proj(torch.cat(outs, dim=-1))
