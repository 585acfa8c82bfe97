"""RegionViT's regional-to-local attention, on the ``regional`` token stream (``hvtnas.models.tokens``).

The map is cut into w x w windows, and each window has one regional token beside it (the stream's
grid, ceil(H / w) x ceil(W / w), row-major). A block first lets the regional tokens attend to each
other (regional self-attention, RSA: ``forward_tokens``, which the block runs as a sub-block of
its own on the tokens alone, with a norm of its own); then every window's regional token and its
w² local tokens attend together (local self-attention, LSA: ``forward_sequence``), with a learned
bias per head and relative offset between local tokens (none to or from the regional token). RSA
and LSA use one set of q / k / v / output projections, as the official code's one attention module.

Maps that are no whole number of windows are zero-padded at the bottom/right, and padded keys are
masked (the official code masks them too, but in the bottom-right window lets real tokens see the
padded positions that share a real row or column with them: a difference at such sizes only).
Without tokens (a stage with no regional stream) this is window attention with that bias alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from hvtnas.errors import HvtnasError
from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.attention import WindowAttention, WindowParams, attend_in_windows
from hvtnas.models.mixers.base import MixerParams

if TYPE_CHECKING:
    from hvtnas.models.tokens import TokenStreamParams


class RegionalLocalParams(WindowParams):
    def tokens_problem(self, tokens: TokenStreamParams) -> str | None:
        if tokens.kind != "regional":
            return f"needs one regional token per window: tokens of kind 'regional', not {tokens.kind!r}"
        window = getattr(tokens, "window_size", None)
        if window != self.window_size:
            return f"its windows ({self.window_size}) must be the regional tokens' (window_size {window})"
        return None


class RegionalLocalAttention(WindowAttention):
    """RegionViT's R2L attention: RSA among the regional tokens (``forward_tokens``), then LSA in
    each window over ``[regional token; local tokens]`` with relative position bias between the
    local ones (``forward_sequence``). Without tokens: the LSA of the local tokens alone."""

    Params: ClassVar[type[MixerParams]] = RegionalLocalParams
    attends_tokens = True
    attends_tokens_first = True
    paper = "RegionViT (Chen et al., ICLR 2022)"
    complexity = "O(N M² C + (N / M²)² C), window M"

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """RSA: global attention among the ``(B, T, C)`` regional tokens, no position bias."""
        q, k, v = rearrange(self.qkv(tokens), "b t (three n d) -> three b n t d", three=3, n=self.num_heads)
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b n t d -> b t (n d)"))

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """LSA on ``[regional tokens; pixels]`` ``(B, T + H*W, C)``, one token per window."""
        H, W = size
        if num_tokens == 0:
            x = rearrange(sequence, "b (h w) c -> b h w c", h=H)
            return self(x).flatten(1, 2)  # (B, H*W, C)
        wh, ww, _, _ = self.geometry(H, W)
        x = pad_to_multiple(rearrange(sequence[:, num_tokens:], "b (h w) c -> b h w c", h=H), (wh, ww))
        nh, nw = x.shape[1] // wh, x.shape[2] // ww  # (of the padded map: ONNX-traceable)
        if num_tokens != nh * nw:
            raise HvtnasError(
                f"regional_local: {num_tokens} tokens beside a {H}x{W} map, which has {nh}x{nw} "
                f"windows of {self.window_size}: it needs one regional token per window"
            )
        windows = rearrange(x, "b (nh wh) (nw ww) c -> b (nh nw) (wh ww) c", wh=wh, ww=ww)
        regional = rearrange(sequence[:, :num_tokens], "b t c -> b t 1 c")  # each window's own
        q, k, v = self.project_qkv(torch.cat([regional, windows], dim=2))  # (B, nW, heads, 1 + N, d)
        out = attend_in_windows(q, k, v, self._regional_mask(H, W, wh, ww, q))
        out = rearrange(out, "b nw n t d -> b nw t (n d)")
        local = rearrange(out[:, :, 1:], "b (nh nw) (wh ww) c -> b (nh wh) (nw ww) c", nh=nh, wh=wh)
        # project the real tokens only: the regional ones and the map without its padding
        return self.proj(torch.cat([out[:, :, 0], local[:, :H, :W].flatten(1, 2)], dim=1))

    def _regional_mask(self, H: int, W: int, wh: int, ww: int, q: Tensor) -> Tensor | None:
        """The attention mask of a window's ``[regional; local]`` tokens: the local position bias
        (heads, 1 + N, 1 + N), zero in the regional token's row and column, with padded keys
        blocked for real queries ((nW, heads, 1 + N, 1 + N) where the map pads); None if neither."""
        bias = self.position_bias(wh, ww, q.device)  # (heads, N, N) or None
        blocked = self.blocked_mask(H, W, q.device)  # (nW, N, N) or None: padding only (no shift)
        if blocked is not None:
            # the regional query may attend no padded key; every query may attend the regional key
            pad_keys = blocked.any(dim=1, keepdim=True)  # (nW, 1, N): blocked for some (real) query
            blocked = torch.cat([pad_keys, blocked], dim=1)  # (nW, 1 + N, N)
            blocked = F.pad(blocked, (1, 0))  # (nW, 1 + N, 1 + N)
        if bias is None:
            return None if blocked is None else ~blocked[:, None]  # bool, True = may attend
        bias = F.pad(bias.to(q.dtype), (1, 0, 1, 0))  # (heads, 1 + N, 1 + N)
        return bias if blocked is None else bias.masked_fill(blocked[:, None], float("-inf"))
