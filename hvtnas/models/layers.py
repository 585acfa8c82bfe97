"""Small building blocks shared by every part of the skeleton.

Layout convention: inside stages, feature maps are channels-last tensors ``(B, H, W, C)``, so
linear layers and LayerNorm act on the last dimension without copies. Convolutions see the
same memory through ``nhwc_to_nchw`` (a permuted view, i.e. an NCHW tensor in channels_last
memory format, which PyTorch's convolutions consume directly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def nhwc_to_nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W), a view


def nchw_to_nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C), a view


# ----------------------------------------------------------------------------- norms
class LayerNormLast(nn.LayerNorm):
    """LayerNorm over the channel (last) dimension; ``bias=False`` gives MetaFormer's LN w/o bias."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__(dim, eps=eps, bias=bias)


class GroupNorm1(nn.Module):
    """GroupNorm with one group for channels-last maps: statistics over (H, W, C), affine per channel.

    Equals ``nn.GroupNorm(1, C)`` on the NCHW view (PoolFormer, ShiftViT) and, with ``bias=False``,
    MetaFormer's ``LayerNormGeneral(normalized_dim=(1, 2, 3), bias=False)`` (IdentityFormer).
    On pooled vectors ``(B, C)`` it normalises over C. Runs ``aten::group_norm`` on the NCHW view
    (channels_last memory), so FLOP counters see the op the reference implementations use.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        affine_learns = any(p.requires_grad for p in (self.weight, self.bias) if p is not None)
        if torch.is_grad_enabled() and affine_learns and not x.requires_grad:
            # PyTorch's CPU channels-last GroupNorm backward crashes (segfault; torch 2.13) when
            # the affine needs gradients and the input does not (the layers before it frozen):
            # that case runs on a (B, C, HW) copy, which has no channels-last kernel to take
            height, width = x.shape[1:3]
            flat = rearrange(x, "b h w c -> b c (h w)").contiguous()
            normed = F.group_norm(flat, 1, self.weight, self.bias, self.eps)
            return rearrange(normed, "b c (h w) -> b h w c", h=height, w=width).contiguous()
        return nchw_to_nhwc(F.group_norm(nhwc_to_nchw(x), 1, self.weight, self.bias, self.eps))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, bias={self.bias is not None}"


class BatchNormLast(nn.BatchNorm2d):
    """BatchNorm for channels-last maps ``(B, H, W, C)`` or pooled vectors ``(B, C)``."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        if not bias:
            raise ValueError("batchnorm always has a bias (affine shift)")
        super().__init__(dim, eps=eps)

    def _check_input_dim(self, input: Tensor) -> None:  # accept 2-D and 4-D inputs
        if input.dim() not in (2, 4):
            raise ValueError(f"expected a 2-D or 4-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return nchw_to_nhwc(super().forward(nhwc_to_nchw(x)))
        return super().forward(x)


NORMS: dict[str, type[nn.Module]] = {
    "layernorm": LayerNormLast,
    "groupnorm": GroupNorm1,
    "batchnorm": BatchNormLast,
}


def make_norm(kind: str, dim: int, eps: float, bias: bool = True) -> nn.Module:
    return NORMS[kind](dim, eps=eps, bias=bias)


# ----------------------------------------------------------------------------- activations
class StarReLU(nn.Module):
    """``s * relu(x)**2 + b`` with learnable scalars s, b (MetaFormer baselines, Yu et al. 2022)."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.bias = nn.Parameter(torch.tensor(bias))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.relu(x).square() + self.bias


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the sigmoid approximation of GELU that CvT (after CLIP) uses."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class SquaredReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "quick_gelu": QuickGELU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,  # Shuffle Transformer
    "silu": nn.SiLU,
    "star_relu": StarReLU,
    "squared_relu": SquaredReLU,
}


def make_act(kind: str) -> nn.Module:
    return ACTIVATIONS[kind]()


# ----------------------------------------------------------------------------- residual helpers
class Scale(nn.Module):
    """Learnable per-channel scale (layer scale / residual scale), on the last dimension."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def sample_factor(self, x: Tensor) -> Tensor | None:
        """Per-sample factors ``(B, 1, ..., 1)``: 0 for a dropped branch, 1 / keep for a kept one
        (None when nothing is dropped), for callers that fold them into one fused op."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        factor = self.sample_factor(x)
        return x if factor is None else x * factor

    def extra_repr(self) -> str:
        return f"p={self.p}"


def pad_to_multiple(x: Tensor, multiple: int | tuple[int, int]) -> Tensor:
    """Zero-pad a channels-last map at the bottom/right so H and W are multiples (Swin's padding)."""
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    H, W = x.shape[1], x.shape[2]
    pad_h, pad_w = (-H) % mh, (-W) % mw
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # pads (C, W, H) from the last dim backwards
    return x
