"""ShiftViT's zero-parameter, zero-FLOP mixer (Wang et al., AAAI 2022)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import PositiveInt
from torch import Tensor

from hvtnas.models.mixers.base import MixerParams, TokenMixer


class ShiftParams(MixerParams):
    n_div: PositiveInt = 12  # 4 groups of C // n_div channels move; the rest stay
    # ShiftViT replaces x by shift(x) (no norm, no shortcut); True gives the MetaFormer form
    # x + shift(norm(x)).
    residual: bool = False


class Shift(TokenMixer):
    """Four groups of ``C // n_div`` channels each move one pixel left, right, up and down;
    the vacated border is zero-filled. Channels-last input ``(B, H, W, C)``."""

    Params: ClassVar[type[MixerParams]] = ShiftParams
    flop_free = True
    paper = "ShiftViT (Wang et al., AAAI 2022)"
    complexity = "0 (memory moves only)"

    def __init__(self, dim: int, n_div: int = 12, residual: bool = False) -> None:
        super().__init__()
        self.n_div = n_div
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        g = x.shape[-1] // self.n_div
        left, right, up, down, rest = x.split([g, g, g, g, x.shape[-1] - 4 * g], dim=-1)
        # F.pad pads (C, W, H) pairs from the last dimension backwards
        left = F.pad(left[:, :, 1:], (0, 0, 0, 1))  # content moves one column left
        right = F.pad(right[:, :, :-1], (0, 0, 1, 0))
        up = F.pad(up[:, 1:], (0, 0, 0, 0, 0, 1))  # content moves one row up
        down = F.pad(down[:, :-1], (0, 0, 0, 0, 1, 0))
        return torch.cat([left, right, up, down, rest], dim=-1)
