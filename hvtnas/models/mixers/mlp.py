"""Attention-free mixers built from linear maps: token-mixing MLP (MLP-Mixer), random frozen mixing
(RandFormer), axial shift (AS-MLP) and spatial shift (S2-MLP).

MLP-Mixer and RandFormer mix a fixed number of tokens with a fixed matrix, which a pyramid
evaluated at several input sizes cannot give them. Here both act inside non-overlapping
``window_size`` x ``window_size`` windows: where the stage's map is exactly one window (e.g. a
window of 7 on the 7x7 last stage at 224, or 14 on stage 3) this is the original global mixing;
elsewhere it is the same mixing applied window by window. Maps not divisible by the window
are zero-padded at the bottom/right (padded tokens are zeros, like a conv's zero padding), so
any input size works.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, PositiveInt
from torch import Tensor

from hvtnas.models.fused import Linear
from hvtnas.models.layers import GroupNorm1, make_act, pad_to_multiple
from hvtnas.models.mixers.base import ActivationName, MixerParams, TokenMixer


class WindowedTokenMixing(TokenMixer):
    """Base: ``mix_tokens`` gets ``(B, nW, C, N)`` with N = window_size² and mixes the last axis."""

    def __init__(self, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size

    def mix_tokens(self, tokens: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        ws = self.window_size
        x = pad_to_multiple(x, ws)
        tokens = rearrange(x, "b (nh wh) (nw ww) c -> b (nh nw) c (wh ww)", wh=ws, ww=ws)
        tokens = self.mix_tokens(tokens)
        out = rearrange(tokens, "b (nh nw) c (wh ww) -> b (nh wh) (nw ww) c", nh=x.shape[1] // ws, wh=ws)
        return out[:, :H, :W]


class TokenMLPParams(MixerParams):
    window_size: PositiveInt = 7
    hidden_ratio: float = Field(2.0, gt=0)  # hidden tokens / tokens (Mixer-B/16: 384 for 196)
    act: ActivationName = "gelu"


class TokenMLP(WindowedTokenMixing):
    """MLP-Mixer's token-mixing MLP, Linear(N, hN) -> act -> Linear(hN, N) across the N tokens of
    each window, shared by all channels."""

    Params: ClassVar[type[MixerParams]] = TokenMLPParams
    paper = "MLP-Mixer (Tolstikhin et al., NeurIPS 2021), windowed"
    complexity = "O(N M² C), window M"

    def __init__(self, dim: int, window_size: int = 7, hidden_ratio: float = 2.0, act: str = "gelu") -> None:
        super().__init__(window_size)
        tokens = window_size**2
        hidden = max(1, int(hidden_ratio * tokens))
        self.fc1 = Linear(tokens, hidden)
        self.act = make_act(act)
        self.fc2 = Linear(hidden, tokens)

    def mix_tokens(self, tokens: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


class RandomMixingParams(MixerParams):
    window_size: PositiveInt = 7


class RandomMixing(WindowedTokenMixing):
    """RandFormer: tokens mixed by a frozen random matrix, ``softmax(U(0, 1))`` row by row, drawn at
    construction. It is a buffer (saved with the model, never trained), not a parameter."""

    Params: ClassVar[type[MixerParams]] = RandomMixingParams
    paper = "RandFormer (Yu et al., MetaFormer Baselines, TPAMI 2023), windowed"
    complexity = "O(N M² C), window M, no weights"

    def __init__(self, dim: int, window_size: int = 7) -> None:
        super().__init__(window_size)
        tokens = window_size**2
        self.register_buffer("random_matrix", torch.softmax(torch.rand(tokens, tokens), dim=-1))

    def mix_tokens(self, tokens: Tensor) -> Tensor:
        return tokens @ self.random_matrix.T.to(tokens.dtype)  # out[..., i] = sum_j R[i, j] x[..., j]


# ----------------------------------------------------------------------------- AS-MLP
class AxialShiftParams(MixerParams):
    shift_size: PositiveInt = 5  # channel groups, shifted by -(s//2) .. s//2 pixels
    act: ActivationName = "gelu"


class AxialShift(TokenMixer):
    """AS-MLP's axial shift: 1x1 conv -> GN -> act, then the channels, split into ``shift_size``
    groups, are shifted by -s//2 .. s//2 pixels along W in one branch and along H in the other
    (zero fill); each branch has a 1x1 conv + act, the branches are summed, then GN -> 1x1 conv.

    The shifts are index gathers (cached per map size): no weights, no multiplications.
    """

    Params: ClassVar[type[MixerParams]] = AxialShiftParams
    paper = "AS-MLP (Lian et al., ICLR 2022)"
    complexity = "O(N C²)"

    def __init__(self, dim: int, shift_size: int = 5, act: str = "gelu") -> None:
        super().__init__()
        self.shift_size = shift_size
        self.conv1 = Linear(dim, dim)
        self.norm1 = GroupNorm1(dim)
        self.act = make_act(act)
        self.conv2_lr = Linear(dim, dim)  # after the shift along W
        self.conv2_td = Linear(dim, dim)  # after the shift along H
        self.norm2 = GroupNorm1(dim)
        self.conv3 = Linear(dim, dim)
        self._index_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _source_index(self, size: int, channels: int, device: torch.device) -> Tensor:
        """``(size, C)``: position in the padded axis each output reads (channel group g moves by
        shift g - s//2: output i reads padded input i + pad - shift)."""
        key = (size, channels, device)
        if key not in self._index_cache:
            pad = self.shift_size // 2
            group = -(-channels // self.shift_size)  # torch.chunk's group size
            shifts = torch.arange(channels) // group - pad  # (C,)
            self._index_cache[key] = (torch.arange(size)[:, None] + pad - shifts[None, :]).to(device)
        return self._index_cache[key]

    def _shift(self, x: Tensor, dim: int) -> Tensor:
        """Shift channel groups along ``dim`` (1: H, 2: W) of a ``(B, H, W, C)`` map, zero fill."""
        pad = self.shift_size // 2
        size, C = x.shape[dim], x.shape[-1]
        padding = [0, 0, pad, pad] if dim == 2 else [0, 0, 0, 0, pad, pad]  # (C, W[, H]) pairs
        padded = F.pad(x, padding)
        index = self._source_index(size, C, x.device)  # (size, C)
        index = index.view(1, size, 1, C) if dim == 1 else index.view(1, 1, size, C)
        return torch.gather(padded, dim, index.expand(x.shape))  # a broadcast view, no copy

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        lr = self.act(self.conv2_lr(self._shift(x, 2)))
        td = self.act(self.conv2_td(self._shift(x, 1)))
        return self.conv3(self.norm2(lr + td))


# ----------------------------------------------------------------------------- S2-MLP
class SpatialShiftParams(MixerParams):
    act: ActivationName = "gelu"


class SpatialShift(TokenMixer):
    """S2-MLP's spatial-shift block: Linear -> act -> spatial shift -> Linear. The shift splits the
    channels into four groups and moves them one pixel: down, up, right, left. As in the paper's
    in-place pseudo-code, the first row (or column) a group moves away from keeps its own values.

    The shift is two concatenations of slices per group: no weights, no multiplications.
    """

    Params: ClassVar[type[MixerParams]] = SpatialShiftParams
    paper = "S2-MLP (Yu et al., WACV 2022)"
    complexity = "O(N C²)"

    def __init__(self, dim: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = Linear(dim, dim)
        self.act = make_act(act)
        self.fc2 = Linear(dim, dim)

    @staticmethod
    def shift(x: Tensor) -> Tensor:
        """``(B, H, W, C)``: channel group g of four moves one pixel (1: +H, 2: -H, 3: +W, 4: -W);
        the groups end at C/4, C/2 and 3C/4 (rounded down), as in the paper."""
        C = x.shape[-1]
        cuts = [C // 4, C // 2 - C // 4, C * 3 // 4 - C // 2, C - C * 3 // 4]
        down, up, right, left = x.split(cuts, dim=-1)
        down = torch.cat([down[:, :1], down[:, :-1]], dim=1)  # row i reads row i - 1; row 0 keeps its own
        up = torch.cat([up[:, 1:], up[:, -1:]], dim=1)  # row i reads row i + 1; the last row keeps its own
        right = torch.cat([right[:, :, :1], right[:, :, :-1]], dim=2)
        left = torch.cat([left[:, :, 1:], left[:, :, -1:]], dim=2)
        return torch.cat([down, up, right, left], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.shift(self.act(self.fc1(x))))
