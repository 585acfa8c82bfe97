"""SepViT's depthwise separable self-attention: attention inside each window, then across windows
through one learned token per window."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import PositiveInt
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import make_act, nchw_to_nhwc, nhwc_to_nchw, pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams, attend_in_windows
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class SeparableWindowParams(AttentionParams):
    window_size: PositiveInt = 7


class SeparableWindowAttention(TokenMixer):
    """SepViT's DSSA on M x M windows.

    Depthwise self-attention (DSA): each window's tokens and its window token attend to each
    other, with a shortcut: ``y = attn([t; x_w]) + [t; x_w]``. Pointwise self-attention (PSA):
    the window tokens (LayerNorm, GELU) give the queries and keys of an attention across windows
    whose values are the windows' whole DSA outputs, so every output token is a weighted sum of
    the same position in all windows; with a shortcut again; then the output projection.

    The window tokens are learned, one per window of the stage's map at the configured resolution
    (``map_size``), and resized bicubically for other window grids. SepViT normalises them with
    the block's norm together with the map; here they are stored as they enter the attention
    (the block's norm acts on each token alone, so this is the same function: convert a SepViT
    checkpoint by applying its norm1 to its ``win_tokens``). A stage whose configured map is one
    window has no window tokens and no PSA (SepViT's last stage): plain attention with the
    shortcut. Maps not divisible by M are zero-padded and padded keys masked.
    """

    Params: ClassVar[type[MixerParams]] = SeparableWindowParams
    uses_heads = True
    uses_map_size = True
    paper = "SepViT DSSA (Li et al., 2022)"
    complexity = "O(N M² C + N² C / M²), window M"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        map_size: int,
        window_size: int = 7,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        grid = max(1, map_size // window_size)  # windows per side at the configured resolution
        if grid > 1:
            self.window_tokens = nn.Parameter(torch.zeros(grid, grid, dim))
            self.token_norm = nn.LayerNorm(dim)
            self.token_act = make_act("gelu")
            self.qk = Linear(dim, 2 * dim, bias=qkv_bias)
        else:
            self.window_tokens = None
        self._real_cache: dict[tuple[int, int, int, torch.device], Tensor] = {}

    def _tokens(self, nh: int, nw: int) -> Tensor:
        """``(nh*nw, C)`` window tokens for an nh x nw grid of windows."""
        assert self.window_tokens is not None
        tokens = self.window_tokens
        if tokens.shape[:2] != (nh, nw):
            tokens = nhwc_to_nchw(tokens[None])  # (1, C, g, g)
            tokens = nchw_to_nhwc(F.interpolate(tokens, size=(nh, nw), mode="bicubic", align_corners=False))[
                0
            ]
        return rearrange(tokens, "nh nw c -> (nh nw) c")

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _real_tokens(self, H: int, W: int, Hp: int, Wp: int, ws: int, device: torch.device) -> Tensor | None:
        """``(nW, M²)`` True where a window's token lies in the real map; None without padding."""
        if (Hp, Wp) == (H, W):
            return None
        key = (H, W, ws, device)
        if key not in self._real_cache:
            real = (torch.arange(Hp) < H)[:, None] & (torch.arange(Wp) < W)[None, :]
            self._real_cache[key] = rearrange(real, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=ws, ww=ws).to(
                device
            )
        return self._real_cache[key]

    def forward(self, x: Tensor) -> Tensor:
        B, H, W = x.shape[:3]
        ws = min(self.window_size, H, W) if self.window_tokens is None else self.window_size
        x = pad_to_multiple(x, (ws, ws))
        nh, nw = x.shape[1] // ws, x.shape[2] // ws
        windows = rearrange(x, "b (nh wh) (nw ww) c -> b (nh nw) (wh ww) c", wh=ws, ww=ws)
        psa = self.window_tokens is not None
        if psa:  # each window's token first: (B, nW, 1 + M², C)
            tokens = self._tokens(nh, nw).to(x.dtype).expand(B, -1, -1)
            windows = torch.cat([tokens[:, :, None], windows], dim=2)
        q, k, v = rearrange(
            self.qkv(windows), "b w t (three n d) -> three b w n t d", three=3, n=self.num_heads
        )
        real = self._real_tokens(H, W, x.shape[1], x.shape[2], ws, x.device)  # (nW, M²) or None
        mask = None
        if real is not None:  # padded keys are masked (a window token is never padding)
            mask = F.pad(real, (1, 0), value=True) if psa else real
            mask = mask[:, None, None, :]  # (nW, 1, 1, K)
        out = attend_in_windows(q, k, v, mask)  # (B, nW, heads, T, d)
        out = rearrange(out, "b w n t d -> b w t (n d)") + windows  # DSA and its shortcut
        if psa:
            tokens, out = out[:, :, 0], out[:, :, 1:]  # (B, nW, C), (B, nW, M², C)
            if real is not None:  # padding carries nothing into the other windows
                out = out * real[..., None].to(out.dtype)
            qk = self.qk(self.token_act(self.token_norm(tokens)))
            q, k = rearrange(qk, "b w (two n d) -> two b n w d", two=2, n=self.num_heads)
            values = rearrange(out, "b w t (n d) -> b n w (t d)", n=self.num_heads)  # a window per value
            mixed = F.scaled_dot_product_attention(q, k, values)  # (B, heads, nW, M² d)
            out = rearrange(mixed, "b n w (t d) -> b w t (n d)", t=ws * ws) + out  # PSA and its shortcut
        out = rearrange(out, "b (nh nw) (wh ww) c -> b (nh wh) (nw ww) c", nh=nh, wh=ws)
        return self.proj(out[:, :H, :W])
