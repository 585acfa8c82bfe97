"""HaloNet's blocked local attention: query blocks attend to their block plus a halo around it."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import NonNegativeInt, PositiveInt
from torch import Tensor, nn

from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams, attend_in_windows
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class HaloParams(AttentionParams):
    block_size: PositiveInt = 8
    halo_size: NonNegativeInt = 3  # halo 0 is plain non-overlapping window attention
    relative_position_bias: bool = True


class HaloAttention(TokenMixer):
    """Queries in non-overlapping b x b blocks; each block's keys and values are the
    (b + 2h) x (b + 2h) neighbourhood around it, so neighbouring blocks overlap by the halo.

    Keys outside the map (halo over the border, padding of maps not divisible by b) are
    masked. A learned bias per head and relative offset (a table of (2(b+h)-1)² entries, as
    Swin's) stands in for HaloNet's factorised relative embeddings. A map smaller than b uses a
    block of the map's size.
    """

    Params: ClassVar[type[MixerParams]] = HaloParams
    uses_heads = True
    paper = "HaloNet (Vaswani et al., CVPR 2021)"
    complexity = "O(N (b+2h)² C), block b, halo h"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_size: int = 8,
        halo_size: int = 3,
        relative_position_bias: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.block_size = block_size
        self.halo_size = halo_size
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        side = 2 * (block_size + halo_size) - 1
        if relative_position_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.relative_position_bias_table = None
        self._index_cache: dict[tuple[int, int, torch.device], Tensor] = {}
        self._valid_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _relative_index(self, bh: int, bw: int, device: torch.device) -> Tensor:
        """``(bh*bw, kh*kw)`` index into the bias table for query (i, j) and key (r, c)."""
        key = (bh, bw, device)
        if key not in self._index_cache:
            h, centre = self.halo_size, self.block_size + self.halo_size - 1
            side = 2 * centre + 1
            dr = torch.arange(bh + 2 * h)[None, :] - h - torch.arange(bh)[:, None]  # (bh, kh)
            dc = torch.arange(bw + 2 * h)[None, :] - h - torch.arange(bw)[:, None]  # (bw, kw)
            index = (dr[:, None, :, None] + centre) * side + (dc[None, :, None, :] + centre)
            self._index_cache[key] = rearrange(index, "i j r c -> (i j) (r c)").to(device)
        return self._index_cache[key]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _valid_keys(self, H: int, W: int, bh: int, bw: int, device: torch.device) -> Tensor:
        """``(nW, 1, 1, kh*kw)`` True where a block's key lies inside the real map."""
        key = (H, W, device)
        if key not in self._valid_cache:
            h = self.halo_size
            Hp, Wp = H + (-H) % bh, W + (-W) % bw
            rows = torch.arange(Hp + 2 * h) - h
            cols = torch.arange(Wp + 2 * h) - h
            real = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
            blocks = real.unfold(0, bh + 2 * h, bh).unfold(1, bw + 2 * h, bw)  # (nh, nw, kh, kw)
            self._valid_cache[key] = rearrange(blocks, "nh nw kh kw -> (nh nw) 1 1 (kh kw)").to(device)
        return self._valid_cache[key]

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        bh, bw, h = min(self.block_size, H), min(self.block_size, W), self.halo_size
        x = pad_to_multiple(x, (bh, bw))
        Hp = x.shape[1]
        blocks = "b (nh bh) (nw bw) (n d) -> b (nh nw) n (bh bw) d"
        q = rearrange(self.q(x), blocks, bh=bh, bw=bw, n=self.num_heads)
        kv = F.pad(self.kv(x), (0, 0, h, h, h, h))  # zero halo around the map: (B, Hp+2h, Wp+2h, 2C)
        kv = kv.unfold(1, bh + 2 * h, bh).unfold(2, bw + 2 * h, bw)  # (B, nh, nw, 2C, kh, kw), a view
        k, v = rearrange(kv, "b nh nw (two n d) kh kw -> two b (nh nw) n (kh kw) d", two=2, n=self.num_heads)
        valid = self._valid_keys(H, W, bh, bw, x.device)  # (nW, 1, 1, K)
        if self.relative_position_bias_table is None:
            mask = valid
        else:
            bias = self.relative_position_bias_table[self._relative_index(bh, bw, x.device)]  # (N, K, n)
            bias = rearrange(bias, "q k n -> n q k").to(q.dtype)
            mask = bias.masked_fill(~valid, float("-inf"))  # (nW, heads, N, K)
        out = attend_in_windows(q, k, v, mask)
        out = rearrange(out, "b (nh nw) n (bh bw) d -> b (nh bh) (nw bw) (n d)", nh=Hp // bh, bh=bh)
        return self.proj(out[:, :H, :W])
