"""Focal self-attention (Yang et al., "Focal Self-attention for Local-Global Interactions in Vision
Transformers", NeurIPS 2021), with two levels: fine tokens around the window, pooled windows beyond."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import NonNegativeInt, PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams, attend_in_windows
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class FocalParams(AttentionParams):
    window_size: PositiveInt = 7
    expand_size: NonNegativeInt = 3  # level 1: fine tokens this far around the window
    focal_window: PositiveInt = 3  # level 2: focal_window x focal_window pooled windows (Focal-T: 7, 5, 3, 1)


def _offsets(rows: Tensor, cols: Tensor, side: int, centre_r: int, centre_c: int) -> Tensor:
    """Flat index ``(r + centre_r) * side + (c + centre_c)`` of 2-D offsets into a bias table."""
    return (rows + centre_r) * side + (cols + centre_c)


class FocalAttention(TokenMixer):
    """Each M x M window's queries attend to three sets of keys and values:

    1. the window's own tokens (Swin's relative position bias table);
    2. the fine tokens up to ``expand_size`` around the window: the four diagonal cyclic shifts of
       the map by the expand size, minus the tokens of the window itself, as the official code
       (a learned bias per head, query and such key);
    3. the windows themselves, each pooled to one token by a learned weighting of its M² tokens, in
       a ``focal_window`` x ``focal_window`` neighbourhood (a relative bias table; windows beyond the
       map are masked).

    As in Focal Transformer, a stage whose map (at the configured resolution, ``map_size``) fits in
    one window uses a window of the map's size and no expansion. Other maps are zero-padded to a
    multiple of the window, as the official code does (padded tokens are not masked there either).
    """

    Params: ClassVar[type[MixerParams]] = FocalParams
    uses_heads = True
    uses_map_size = True
    paper = "Focal Transformer (Yang et al., NeurIPS 2021)"
    complexity = "O(N (M² + 4eM + f²) C), window M, expand e, focal window f"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        map_size: int,
        window_size: int = 7,
        expand_size: int = 3,
        focal_window: int = 3,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        if map_size <= window_size:  # the official rule, at the configured resolution
            window_size, expand_size = max(1, map_size), 0
        expand_size = min(expand_size, window_size - 1)  # a ring wider than the window is not defined
        self.num_heads = num_heads
        self.window_size = window_size
        self.expand_size = expand_size
        self.focal_window = focal_window
        tokens = window_size**2
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        # window pooling: a learned weighting of the M² tokens (starts as the mean), plus a bias
        self.pool_weight = nn.Parameter(torch.full((tokens,), 1.0 / tokens))
        self.pool_bias = nn.Parameter(torch.zeros(1))
        side = 2 * window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(side * side, num_heads))
        neighbours = 4 * tokens - 4 * (window_size - expand_size) ** 2 if expand_size else 0
        self.neighbour_bias = nn.Parameter(torch.zeros(num_heads, tokens, neighbours)) if neighbours else None
        pooled_side = window_size + focal_window - 1
        self.pooled_bias_table = nn.Parameter(torch.zeros(num_heads, pooled_side * pooled_side))
        for table in (self.relative_position_bias_table, self.neighbour_bias, self.pooled_bias_table):
            if table is not None:
                nn.init.trunc_normal_(table, std=0.02)
        self._cache: dict[tuple, Tensor] = {}

    # cached geometry -------------------------------------------------------------------------
    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _bias_index(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Indices into the window table ``(M², M²)`` and the pooled table ``(M², f²)``."""
        if ("own", device) not in self._cache:
            M, f = self.window_size, self.focal_window
            r, c = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
            r, c = r.flatten(), c.flatten()  # (M²,) query coordinates in the window
            own = _offsets(r[:, None] - r[None, :], c[:, None] - c[None, :], 2 * M - 1, M - 1, M - 1)
            pr, pc = torch.meshgrid(torch.arange(f), torch.arange(f), indexing="ij")
            pr, pc = pr.flatten(), pc.flatten()  # (f²,) pooled-window coordinates
            pooled = _offsets(r[:, None] - pr[None, :], c[:, None] - pc[None, :], M + f - 1, f - 1, f - 1)
            self._cache[("own", device)] = own.to(device)
            self._cache[("pooled", device)] = pooled.to(device)
        return self._cache[("own", device)], self._cache[("pooled", device)]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _neighbour_index(self, Hp: int, Wp: int, device: torch.device) -> Tensor:
        """``(nW, K)`` flat positions in the padded map of each window's expanded-ring tokens, in
        the official order: shifts (-e, -e), (-e, +e), (+e, -e), (+e, +e), cyclic."""
        key = ("ring", Hp, Wp, device)
        if key not in self._cache:
            M, e = self.window_size, self.expand_size
            rows = rearrange(torch.arange(Hp), "(nh m) -> nh m", m=M)  # (nh, M)
            cols = rearrange(torch.arange(Wp), "(nw m) -> nw m", m=M)
            # a boolean mask selects the ring, so its shape depends on the mask's values: made on
            # the CPU explicitly, also while FLOPs are counted on meta tensors (hvtnas/costs/counter.py)
            u, v = torch.meshgrid(torch.arange(M, device="cpu"), torch.arange(M, device="cpu"), indexing="ij")
            parts = []
            for dy, dx in [(e, e), (e, -e), (-e, e), (-e, -e)]:  # source offset of each shifted copy
                src_r = (rows[:, None, :, None] + dy) % Hp  # (nh, 1, M, 1)
                src_c = (cols[None, :, None, :] + dx) % Wp  # (1, nw, 1, M)
                outside = ((u + dy < 0) | (u + dy >= M)) | ((v + dx < 0) | (v + dx >= M))  # (M, M)
                flat = rearrange(src_r * Wp + src_c, "nh nw m1 m2 -> (nh nw) (m1 m2)")
                parts.append(flat[:, outside.flatten()])
            self._cache[key] = torch.cat(parts, dim=1).to(device)
        return self._cache[key]

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _pooled_valid(self, nh: int, nw: int, device: torch.device) -> Tensor:
        """``(nW, f²)`` True where a pooled window in the focal neighbourhood lies on the map."""
        key = ("valid", nh, nw, device)
        if key not in self._cache:
            half = self.focal_window // 2
            real = F.pad(torch.ones(nh, nw, dtype=torch.bool), (half, half, half, half))
            real = real.unfold(0, self.focal_window, 1).unfold(1, self.focal_window, 1)  # (nh, nw, f, f)
            self._cache[key] = rearrange(real, "nh nw f g -> (nh nw) (f g)").to(device)
        return self._cache[key]

    # forward ---------------------------------------------------------------------------------
    def _pooled_keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the pooled windows in each window's focal neighbourhood."""
        M, f = self.window_size, self.focal_window
        C = x.shape[-1]
        cells = rearrange(x, "b (nh m1) (nw m2) c -> b nh nw c (m1 m2)", m1=M, m2=M)
        pooled = cells @ self.pool_weight + self.pool_bias  # (B, nh, nw, C)
        kv_bias = None if self.qkv.bias is None else self.qkv.bias[C:]
        k, v = F.linear(pooled, self.qkv.weight[C:], kv_bias).chunk(2, -1)  # the shared qkv's k, v rows
        half = f // 2
        out = []
        for t in (k, v):  # zero-pad the window grid, then take every window's f x f neighbourhood
            t = F.pad(t, (0, 0, half, half, half, half)).unfold(1, f, 1).unfold(2, f, 1)  # (B,nh,nw,C,f,f)
            out.append(rearrange(t, "b nh nw (n d) f g -> b (nh nw) n (f g) d", n=self.num_heads))
        return out[0], out[1]

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        M = self.window_size
        x = pad_to_multiple(x, M)
        Hp, Wp = x.shape[1:3]
        nh, nw = Hp // M, Wp // M
        q, k, v = rearrange(self.qkv(x), "b h w (three c) -> three b h w c", three=3)
        windows = "b (nh m1) (nw m2) (n d) -> b (nh nw) n (m1 m2) d"
        q_w, k_w, v_w = (rearrange(t, windows, m1=M, m2=M, n=self.num_heads) for t in (q, k, v))
        own_index, pooled_index = self._bias_index(x.device)
        N = M * M
        biases = [self.relative_position_bias_table[own_index.flatten()].view(N, N, -1).permute(2, 0, 1)]
        keys, values = [k_w], [v_w]
        if self.neighbour_bias is not None:
            ring = self._neighbour_index(Hp, Wp, x.device)  # (nW, K)
            for t, into in ((k, keys), (v, values)):
                gathered = t.flatten(1, 2)[:, ring]  # (B, nW, K, C)
                into.append(rearrange(gathered, "b w k (n d) -> b w n k d", n=self.num_heads))
            biases.append(self.neighbour_bias)
        k_pool, v_pool = self._pooled_keys(x)
        keys.append(k_pool)
        values.append(v_pool)
        biases.append(self.pooled_bias_table[:, pooled_index.flatten()].view(self.num_heads, N, -1))
        bias = torch.cat(biases, dim=-1).to(q.dtype)  # (heads, N, K_all)
        valid = self._pooled_valid(nh, nw, x.device)  # (nW, f²)
        blocked = F.pad(~valid, (bias.shape[-1] - valid.shape[-1], 0))  # (nW, K_all): only pooled keys
        mask = bias.masked_fill(blocked[:, None, None, :], float("-inf"))  # (nW, heads, N, K_all)
        out = attend_in_windows(q_w, torch.cat(keys, 3), torch.cat(values, 3), mask)
        out = rearrange(out, "b (nh nw) n (m1 m2) d -> b (nh m1) (nw m2) (n d)", nh=nh, m1=M, m2=M)
        return self.proj(out[:, :H, :W])
