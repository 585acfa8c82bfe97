"""The MetaFormer block and stage."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from hvtnas.models.layers import DropPath, Scale, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.base import TokenMixer


def _scale(dim: int, init: float | None) -> nn.Module:
    return Scale(dim, init) if init is not None else nn.Identity()


class NeighbourConv(nn.Module):
    """Shuffle Transformer's neighbour-window connection: a depthwise k x k conv (zero padding
    k//2, no bias) on a channels-last map, connecting tokens across window borders."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C) -> (B, H, W, C)
        return nchw_to_nhwc(self.conv(nhwc_to_nchw(x)))


class MetaFormerBlock(nn.Module):
    """``x = s1(x) + ls1(drop(mixer(norm1(x))))``, then ``x = s2(x) + ls2(drop(ffn(norm2(x))))``.

    With ``post_norm`` the norms move to the end of each branch, ``x + ls(drop(norm(f(x))))``
    (Swin V2's residual post-norm). ``ls`` is layer scale (branch scale), ``s`` residual scale
    (shortcut scale); both identity unless configured. A mixer with ``residual = False``
    replaces x (ShiftViT); ``ffn=None`` drops the second sub-block (CoAtNet MBConv stages).
    ``neighbour_conv`` adds a sub-block between the two, ``x = x + neighbour_conv(norm(x))``,
    without drop path or scales (Shuffle Transformer).
    """

    def __init__(
        self,
        dim: int,
        mixer: TokenMixer,
        ffn: nn.Module | None,
        norm: Callable[[], nn.Module],
        drop_path: float = 0.0,
        layer_scale: float | None = None,
        res_scale: bool = False,
        post_norm: bool = False,
        neighbour_conv: NeighbourConv | None = None,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.mixer_residual = mixer.residual
        if self.mixer_residual:
            self.norm1 = norm()
        self.mixer = mixer
        if self.mixer_residual:
            self.layer_scale1 = _scale(dim, layer_scale)
            self.res_scale1 = _scale(dim, 1.0 if res_scale else None)
        if neighbour_conv is not None:
            self.norm_neighbour = norm()
        self.neighbour_conv = neighbour_conv
        if ffn is not None:
            self.norm2 = norm()
            self.ffn = ffn
            self.layer_scale2 = _scale(dim, layer_scale)
            self.res_scale2 = _scale(dim, 1.0 if res_scale else None)
        else:
            self.ffn = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _branch(self, f: nn.Module, norm: nn.Module, x: Tensor) -> Tensor:
        return norm(f(x)) if self.post_norm else f(norm(x))

    def _add(self, x: Tensor, branch: Tensor, res_scale: nn.Module, layer_scale: nn.Module) -> Tensor:
        """``res_scale(x) + drop_path(layer_scale(branch))`` with the scales and the drop-path
        factors folded into one ``addcmul``: one pass over the map instead of up to four (these
        element-wise passes are memory-bound, a sizeable part of a MetaFormer's time)."""
        scale = layer_scale.scale if isinstance(layer_scale, Scale) else None
        factor = self.drop_path.sample_factor(branch) if isinstance(self.drop_path, DropPath) else None
        if factor is not None:
            scale = factor if scale is None else factor * scale  # (B, 1, 1, C): tiny
        if scale is None:
            if isinstance(res_scale, Scale):
                return torch.addcmul(branch, x, res_scale.scale)
            return x + branch
        return torch.addcmul(res_scale(x), branch, scale)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, H, W, C)
        if self.mixer_residual:
            x = self._add(x, self._branch(self.mixer, self.norm1, x), self.res_scale1, self.layer_scale1)
        else:
            x = self.mixer(x)
        if self.neighbour_conv is not None:
            x = x + self.neighbour_conv(self.norm_neighbour(x))
        if self.ffn is not None:
            x = self._add(x, self._branch(self.ffn, self.norm2, x), self.res_scale2, self.layer_scale2)
        return x


class BottleneckBlock(nn.Module):
    """ResNet's bottleneck around a token mixer (HaloNet): ``act(shortcut(x) + drop(branch(x)))``
    with ``branch = norm3(conv3(act(norm2(mixer(act(norm1(conv1(x))))))))``, the 1x1 convs as
    linears on channels-last maps (no bias). With ``stride`` 2 (the first block of a stage that
    downsamples this way) the mixer halves the map and the shortcut is a strided 1x1 conv + norm;
    it is one too where the width changes, and the identity otherwise.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        mid_dim: int,
        mixer: TokenMixer,
        norm: Callable[[int], nn.Module],
        act: Callable[[], nn.Module],
        stride: int = 1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut = (
            nn.Sequential(nn.Linear(in_dim, dim, bias=False), norm(dim))
            if stride > 1 or in_dim != dim
            else None
        )
        self.conv1 = nn.Linear(in_dim, mid_dim, bias=False)
        self.norm1 = norm(mid_dim)
        self.mixer = mixer
        self.norm2 = norm(mid_dim)
        self.conv3 = nn.Linear(mid_dim, dim, bias=False)
        self.norm3 = norm(dim)
        self.act = act()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C_in) -> (B, H/stride, W/stride, C)
        shortcut = x
        if self.shortcut is not None:
            # a strided 1x1 conv reads every stride-th position: (B, ceil(H/s), ceil(W/s), C_in)
            shortcut = self.shortcut(x[:, :: self.stride, :: self.stride])
        branch = self.act(self.norm1(self.conv1(x)))
        branch = self.norm3(self.conv3(self.act(self.norm2(self.mixer(branch)))))
        return self.act(shortcut + self.drop_path(branch))


class Stage(nn.Module):
    """[downsample] -> [absolute PE] -> blocks (PEG after the first) -> [output norm]."""

    def __init__(
        self,
        blocks: list[MetaFormerBlock] | list[BottleneckBlock],
        downsample: nn.Module | None = None,
        pos_embed: nn.Module | None = None,
        peg: nn.Module | None = None,
        out_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.pos_embed = pos_embed if pos_embed is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.peg = peg
        self.out_norm = out_norm if out_norm is not None else nn.Identity()
        self.grad_checkpointing = False  # MetaFormer.set_grad_checkpointing

    def forward(self, x: Tensor) -> Tensor:
        x = self.pos_embed(self.downsample(x))
        checkpoint = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        for i, block in enumerate(self.blocks):
            # with checkpointing only the block's input is kept; its inside is recomputed in backward
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False) if checkpoint else block(x)
            if i == 0 and self.peg is not None:
                x = self.peg(x)
        return self.out_norm(x)


class AttentionDownsample(nn.Module):
    """MViTv2's stage-transition block, used as a stage's downsampling: the first block of the stage,
    whose attention halves the map (Q stride 2) and widens the channels.

    ``x = maxpool(proj(norm1(x))) + drop(attn(norm1(x)))`` (3x3 max pool, stride 2; ``proj`` a
    Linear when the width changes), then the usual ``x + drop(ffn(norm2(x)))``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        attention: nn.Module,
        ffn: nn.Module,
        norm1: nn.Module,
        norm2: nn.Module,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm1
        self.shortcut_proj = nn.Linear(in_dim, out_dim) if in_dim != out_dim else nn.Identity()
        self.shortcut_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.attention = attention
        self.norm2 = norm2
        self.ffn = ffn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C_in) -> (B, H/2, W/2, C_out)
        normed = self.norm1(x)
        shortcut = nchw_to_nhwc(self.shortcut_pool(nhwc_to_nchw(self.shortcut_proj(normed))))
        x = shortcut + self.drop_path(self.attention(normed))
        return x + self.drop_path(self.ffn(self.norm2(x)))
