"""HaloNet's blocked local attention: query blocks attend to their block plus a halo around it."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import NonNegativeInt, PositiveInt, model_validator
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams, attend_in_windows
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class HaloParams(AttentionParams):
    block_size: PositiveInt = 8
    halo_size: NonNegativeInt = 3  # halo 0 is plain non-overlapping window attention
    relative_position_bias: bool = True  # a bias table per head and 2-D offset (Swin's)
    # HaloNet's own relative embeddings (timm's HaloAttn): a learned vector per row offset and per
    # column offset, dotted with the query
    factorized_position: bool = False
    # False: keys beyond the map are the zero-padded projections and take part (HaloNet, timm)
    mask_outside: bool = True
    output_proj: bool = True  # HaloNet's attention has no output projection (timm: False)

    @model_validator(mode="after")
    def _one_position_encoding(self) -> HaloParams:
        if self.factorized_position and self.relative_position_bias:
            raise PydanticCustomError(
                "halo_position",
                "factorized_position and relative_position_bias are two position encodings: choose one",
            )
        return self


class HaloAttention(TokenMixer):
    """Queries in non-overlapping b x b blocks; each block's keys and values are the
    (b + 2h) x (b + 2h) neighbourhood around it, so neighbouring blocks overlap by the halo.

    Position information, one of: a learned bias per head and relative offset (a table of
    (2(b+h)-1)² entries, as Swin's; the default), or HaloNet's factorised relative embeddings
    (``factorized_position``, as timm's ``HaloAttn``: the logit of query q and key at window row r,
    column c gains ``q . r_h[r - y + w - 1] + q . r_w[c - x + w - 1]`` for the query at block
    row y, column x, with w = b + 2h). Keys outside the map (halo over the border, padding of
    maps not divisible by b) are masked, or with ``mask_outside=False`` take part as the zero
    projections of zero padding (HaloNet's, timm's). A map smaller than b uses a block of the
    map's size. With ``stride`` 2 the queries are every other position (HaloNet's strided
    attention: the map is halved, the keys stay at full resolution); each b x b block then holds
    (b/2)² queries.
    """

    Params: ClassVar[type[MixerParams]] = HaloParams
    uses_heads = True
    supports_stride = True
    paper = "HaloNet (Vaswani et al., CVPR 2021)"
    complexity = "O(N (b+2h)² C), block b, halo h"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        block_size: int = 8,
        halo_size: int = 3,
        relative_position_bias: bool = True,
        factorized_position: bool = False,
        mask_outside: bool = True,
        output_proj: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if block_size % stride:
            raise ValueError(
                f"halo attention: block size {block_size} is not a multiple of the stride {stride}"
            )
        self.num_heads = num_heads
        self.block_size = block_size
        self.halo_size = halo_size
        self.stride = stride
        self.mask_outside = mask_outside
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias) if output_proj else None
        side = 2 * (block_size + halo_size) - 1
        if relative_position_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        else:
            self.relative_position_bias_table = None
        if factorized_position:  # one row per offset key - query + w - 1 in [0, 2w - 2], w = b + 2h
            head_dim, rows = dim // num_heads, 2 * (block_size + 2 * halo_size) - 1
            self.height_rel = nn.Parameter(torch.zeros(rows, head_dim))
            self.width_rel = nn.Parameter(torch.zeros(rows, head_dim))
            nn.init.trunc_normal_(self.height_rel, std=head_dim**-0.5)
            nn.init.trunc_normal_(self.width_rel, std=head_dim**-0.5)
        else:
            self.height_rel = self.width_rel = None
        self._index_cache: dict[tuple[int, int, torch.device], Tensor] = {}
        self._valid_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _relative_index(self, bh: int, bw: int, device: torch.device) -> Tensor:
        """``(qh*qw, kh*kw)`` index into the bias table for query (i, j) (at block position
        (s i, s j)) and key (r, c) of the window."""
        key = (bh, bw, device)
        if key not in self._index_cache:
            h, s, centre = self.halo_size, self.stride, self.block_size + self.halo_size - 1
            side = 2 * centre + 1
            dr = torch.arange(bh + 2 * h)[None, :] - h - s * torch.arange(bh // s)[:, None]  # (qh, kh)
            dc = torch.arange(bw + 2 * h)[None, :] - h - s * torch.arange(bw // s)[:, None]  # (qw, kw)
            index = (dr[:, None, :, None] + centre) * side + (dc[None, :, None, :] + centre)
            self._index_cache[key] = rearrange(index, "i j r c -> (i j) (r c)").to(device)
        return self._index_cache[key]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _factorized_index(self, queries: int, keys: int, device: torch.device) -> Tensor:
        """``(queries, keys)``: row of the factorised table for a query row (column) and a key
        row (column) of the window, ``key - query + w - 1`` with w = b + 2h (timm's indexing)."""
        key = (-queries, -keys, device)  # shares the index cache; negative sizes never clash
        if key not in self._index_cache:
            window = self.block_size + 2 * self.halo_size
            offsets = torch.arange(keys)[None, :] - torch.arange(queries)[:, None] + window - 1
            self._index_cache[key] = offsets.to(device)
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

    def _factorized_bias(self, q: Tensor, qh: int, kh: int, kw: int) -> Tensor:
        """``(B, nW, heads, N, K)`` logits ``q . r_h[...] + q . r_w[...]`` of every query and key."""
        assert self.height_rel is not None and self.width_rel is not None
        qw = q.shape[3] // qh
        q = rearrange(q, "b w n (y x) d -> b w n y x d", y=qh)
        rows = torch.matmul(q, self.height_rel.T.to(q.dtype))  # (B, nW, heads, qh, qw, R)
        cols = torch.matmul(q, self.width_rel.T.to(q.dtype))  # (B, nW, heads, qh, qw, R)
        row_index = self._factorized_index(qh, kh, q.device)  # (qh, kh)
        col_index = self._factorized_index(qw, kw, q.device)  # (qw, kw)
        rows = torch.gather(rows, -1, row_index[:, None, :].expand(*rows.shape[:-1], kh))  # (.., qh, qw, kh)
        cols = torch.gather(cols, -1, col_index[None, :, :].expand(*cols.shape[:-1], kw))  # (.., qh, qw, kw)
        bias = rows[..., :, None] + cols[..., None, :]  # (B, nW, heads, qh, qw, kh, kw)
        return rearrange(bias, "b w n y x r c -> b w n (y x) (r c)")

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        s, h = self.stride, self.halo_size
        # a block never larger than the map (rounded up to the stride, so queries tile it)
        bh = min(self.block_size, H + (-H) % s)
        bw = min(self.block_size, W + (-W) % s)
        x = pad_to_multiple(x, (bh, bw))
        Hp = x.shape[1]
        blocks = "b (nh bh) (nw bw) (n d) -> b (nh nw) n (bh bw) d"
        q = rearrange(self.q(x[:, ::s, ::s]), blocks, bh=bh // s, bw=bw // s, n=self.num_heads)
        kv = F.pad(self.kv(x), (0, 0, h, h, h, h))  # zero halo around the map: (B, Hp+2h, Wp+2h, 2C)
        kv = kv.unfold(1, bh + 2 * h, bh).unfold(2, bw + 2 * h, bw)  # (B, nh, nw, 2C, kh, kw), a view
        # kv's channels are head by head, each head's key then value (timm's HaloAttn layout)
        k, v = rearrange(kv, "b nh nw (n two d) kh kw -> two b (nh nw) n (kh kw) d", two=2, n=self.num_heads)
        valid = self._valid_keys(H, W, bh, bw, x.device) if self.mask_outside else None  # (nW, 1, 1, K)
        if self.relative_position_bias_table is not None:
            bias = self.relative_position_bias_table[self._relative_index(bh, bw, x.device)]  # (N, K, n)
            mask = rearrange(bias, "q k n -> n q k").to(q.dtype)  # (heads, N, K)
        elif self.height_rel is not None:
            mask = self._factorized_bias(q, bh // s, bh + 2 * h, bw + 2 * h)  # (B, nW, heads, N, K)
        else:
            mask = None
        if valid is not None:
            mask = valid if mask is None else mask.masked_fill(~valid, float("-inf"))
        if mask is not None and mask.dim() == 5:  # logits per sample: (B nW) folded for the fused kernel
            folded = (t.flatten(0, 1) for t in (q, k, v, mask))  # (B nW, heads, ., .): views
            out = F.scaled_dot_product_attention(*folded)  # (B nW, heads, N, d)
            out = rearrange(out, "(b nw) n t d -> b nw n t d", nw=q.shape[1])  # einops: ONNX keeps B dynamic
        else:
            out = attend_in_windows(q, k, v, mask)
        out = rearrange(out, "b (nh nw) n (bh bw) d -> b (nh bh) (nw bw) (n d)", nh=Hp // bh, bh=bh // s)
        out = out[:, : -(-H // s), : -(-W // s)]
        return self.proj(out) if self.proj is not None else out
