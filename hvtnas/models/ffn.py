"""Feed-forward (channel-mixing) sub-blocks on channels-last maps.

The tokens that travel beside the map (class tokens; see ``hvtnas.models.tokens``) pass an FFN
each as a 1x1 map, unless it ``passes_tokens`` on unchanged (CeiT's LeFF).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from hvtnas.models.fused import Linear, conv_act, linear_act
from hvtnas.models.layers import BatchNormLast, make_act, nchw_to_nhwc, nhwc_to_nchw


class Mlp(nn.Module):
    """Linear -> act -> Linear (1x1 convs in NCHW codebases: same weights, same count)."""

    passes_tokens: ClassVar[bool] = False

    def __init__(
        self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, out_dim: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.act = make_act(act)
        self.fc2 = Linear(hidden, out_dim or dim, bias=bias)  # out_dim: MViT v1's widening MLP

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(linear_act(x, self.fc1, self.act))


class MixFFN(nn.Module):
    """PVTv2 / SegFormer: Linear -> depthwise 3x3 conv -> act -> Linear. The zero-padded conv
    leaks position information, which is why PVTv2 needs no positional embedding."""

    passes_tokens: ClassVar[bool] = False  # a token, a 1x1 map, meets only the conv's centre tap

    def __init__(
        self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, dw_residual: bool = False
    ) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = make_act(act)
        self.fc2 = Linear(hidden, dim, bias=bias)
        self.dw_residual = dw_residual  # Shunted: act(h + dwconv(h))

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        if self.dw_residual:
            return self.fc2(self.act(x + nchw_to_nhwc(self.dwconv(nhwc_to_nchw(x)))))
        return self.fc2(nchw_to_nhwc(conv_act(nhwc_to_nchw(x), self.dwconv, self.act)))


class LeFF(nn.Module):
    """CeiT's locally-enhanced feed-forward: Linear -> BN -> act -> depthwise k x k conv -> BN ->
    act -> Linear -> BN (the official code's 1x1 convs are the linears: same weights). The
    depthwise conv mixes neighbouring tokens, as Mix-FFN's does, but with BatchNorm after each layer.

    Tokens beside the map (CeiT's class token) pass it unchanged (``passes_tokens``), as in CeiT's
    code, where the block then adds their normalised value.
    """

    passes_tokens: ClassVar[bool] = True

    def __init__(
        self, dim: int, hidden: int, act: str = "gelu", bias: bool = True, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.fc1 = Linear(dim, hidden, bias=bias)
        self.norm1 = BatchNormLast(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.norm2 = BatchNormLast(hidden)
        self.act = make_act(act)
        self.fc2 = Linear(hidden, dim, bias=bias)
        self.norm3 = BatchNormLast(dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C)
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.norm2(nchw_to_nhwc(self.dwconv(nhwc_to_nchw(x)))))
        return self.norm3(self.fc2(x))


FFNS: dict[str, type[nn.Module]] = {"mlp": Mlp, "mixffn": MixFFN, "leff": LeFF}
