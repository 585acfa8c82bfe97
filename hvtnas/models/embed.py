"""Stems (image -> stride-4 map), downsampling between stages (and TNT's patch projection into a
nested stage), and positional encodings.

All modules here return channels-last maps ``(B, H, W, C)``; stems take NCHW images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hvtnas.models.fused import Linear
from hvtnas.models.layers import nchw_to_nhwc, nhwc_to_nchw, pad_to_multiple
from hvtnas.models.tokens import region_grid


# ----------------------------------------------------------------------------- stems
class CrossScaleConv(nn.Module):
    """CrossFormer's cross-scale embedding: convs of several kernel sizes, one stride, outputs
    concatenated along channels (``widths`` each; small kernels get more channels)."""

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        kernel_sizes: list[int],
        stride: int,
        paddings: list[int],
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, w, k, stride=stride, padding=p, bias=bias)
            for w, k, p in zip(widths, kernel_sizes, paddings, strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:  # NCHW -> NCHW
        return torch.cat([conv(x) for conv in self.convs], dim=1)


class PatchStem(nn.Module):
    """Non-overlapping p x p patches: conv k = s = p (+ norm); p = 4 for a pyramid (Swin), 16 for
    ViT. Inputs not divisible by p are zero-padded at the bottom/right.

    Given ``cross_scale`` (a ``CrossScaleConv`` with stride 4), that replaces the 4x4 conv."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        norm: nn.Module | None,
        cross_scale: nn.Module | None = None,
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        if cross_scale is not None:
            self.proj = cross_scale
        else:
            self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
        return self.norm(nchw_to_nhwc(self.proj(x)))


class OverlapStem(nn.Module):
    """One overlapping k x k conv with stride 4 (+ norm): PVTv2 (7, pad 3), PoolFormer (7, pad 2)."""

    def __init__(
        self, in_channels: int, dim: int, kernel_size: int, padding: int, norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=kernel_size, stride=4, padding=padding)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(nchw_to_nhwc(self.proj(x)))


class ConvStem(nn.Module):
    """Stacked convs of the given output ``widths`` (the last: stage 1's), strides (product 4),
    kernel sizes (padding k//2 for odd k, 0 for even) and ``biases``, norm + act between, and a
    norm at the end unless ``norms`` has one fewer entry than convs (ResT, Shuffle Transformer)."""

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        strides: list[int],
        kernel_sizes: list[int],
        norms: list[nn.Module],
        acts: list[nn.Module],
        biases: list[bool],
    ) -> None:
        super().__init__()
        widths = [in_channels, *widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(
                widths[i],
                widths[i + 1],
                k,
                stride=strides[i],
                padding=k // 2 if k % 2 else 0,
                bias=biases[i],
            )
            for i, k in enumerate(kernel_sizes)
        )
        self.norms = nn.ModuleList(norms)
        self.acts = nn.ModuleList(acts)  # depth - 1 of them: none after the last conv

    def forward(self, x: Tensor) -> Tensor:
        x = nchw_to_nhwc(x)
        for i, conv in enumerate(self.convs):
            x = nchw_to_nhwc(conv(nhwc_to_nchw(x)))
            if i < len(self.norms):
                x = self.norms[i](x)
            if i < len(self.acts):
                x = self.acts[i](x)
        return x  # (B, H/4, W/4, C)


class ImageToTokensStem(nn.Module):
    """CeiT's image-to-tokens stem: a k x k conv with stride 2 (no bias) -> norm -> 3x3 max pool
    with stride 2 (low-level features at stride 4) -> a p x p conv with stride p (the patch
    embedding on those features): stage 1 at stride 4p."""

    def __init__(
        self, in_channels: int, dim: int, hidden: int, kernel_size: int, patch: int, norm: nn.Module
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, hidden, kernel_size, stride=2, padding=kernel_size // 2, bias=False
        )
        self.norm = norm
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.proj = nn.Conv2d(hidden, dim, patch, stride=patch)
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, H/4p, W/4p, C)
        x = self.pool(nhwc_to_nchw(self.norm(nchw_to_nhwc(self.conv(x)))))
        x = nchw_to_nhwc(x)
        if x.shape[1] % self.patch or x.shape[2] % self.patch:  # as the patch stem: pad, drop nothing
            x = pad_to_multiple(x, self.patch)
        return nchw_to_nhwc(self.proj(nhwc_to_nchw(x)))


class PixelStem(nn.Module):
    """TNT's pixel embedding: the image is cut into ``patch_size`` squares and each is convolved on
    its own (``kernel_size``, stride 4, zero padding at the square's border: no pixel sees another
    patch), plus a learned embedding per pixel position inside a patch, the same in every patch.

    Returns the stride-4 pixel map ``(B, H/4, W/4, C)`` that a nested stage (``NestedStage``)
    carries as its inner map; inputs not divisible by the patch are zero-padded.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, stride=4, padding=kernel_size // 2)
        pixels = -(-patch_size // 4)  # pixels per patch side
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pixels, pixels))  # NCHW, as the conv's output
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, H/4, W/4, C)
        p = self.patch_size
        x = nhwc_to_nchw(pad_to_multiple(nchw_to_nhwc(x), p))
        h = x.shape[-2] // p
        patches = rearrange(x, "b c (h ph) (w pw) -> (b h w) c ph pw", ph=p, pw=p)  # each patch alone
        pixels = self.proj(patches) + self.pos_embed.to(x.dtype)  # (B*h*w, C, p/4, p/4)
        return rearrange(pixels, "(b h w) c qh qw -> b (h qh) (w qw) c", h=h, w=x.shape[-1] // p)


class ResNetStem(nn.Module):
    """ResNet's stem: k x k conv with stride 2 (padding k//2, no bias) -> norm -> act -> 3x3 max
    pool with stride 2 (padding 1), as HaloNet's."""

    def __init__(self, in_channels: int, dim: int, kernel_size: int, norm: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, kernel_size, stride=2, padding=kernel_size // 2, bias=False)
        self.norm = norm
        self.act = act

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, H/4, W/4, C)
        x = self.act(self.norm(nchw_to_nhwc(self.conv(x))))
        return nchw_to_nhwc(F.max_pool2d(nhwc_to_nchw(x), 3, stride=2, padding=1))


# ----------------------------------------------------------------------------- downsampling
class ConvDownsample(nn.Module):
    """k x k conv with stride 2 and padding (k-1)//2, with an optional pre- or post-norm, an
    optional activation after the pre-norm and ``groups`` (RegionViT: LN -> GELU -> a conv with one
    group per input channel).

    With an even k an odd map is zero-padded at the bottom/right first, so no row is dropped.
    ``token_window``: the tokens beside the map are a coarser map of their own, one per
    ``token_window`` x ``token_window`` window of it (RegionViT's regional tokens), and go through
    the same layers (``forward_with_tokens``; the official code's one projection for both).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int,
        bias: bool,
        pre_norm: nn.Module | None,
        post_norm: nn.Module | None,
        cross_scale: CrossScaleConv | None = None,
        act: nn.Module | None = None,
        groups: int = 1,
        token_window: int | None = None,
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm if pre_norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        if cross_scale is not None:  # CrossFormer: several kernels, concatenated
            self.conv = cross_scale
            kernels = [conv.kernel_size[0] for conv in cross_scale.convs]
        else:
            self.conv = nn.Conv2d(
                in_dim,
                out_dim,
                kernel_size,
                stride=2,
                padding=(kernel_size - 1) // 2,
                bias=bias,
                groups=groups,
            )
            kernels = [kernel_size]
        self.post_norm = post_norm if post_norm is not None else nn.Identity()
        # even kernels would drop the last row of an odd map (and disagree with odd ones on its size)
        self.pad_odd = any(k % 2 == 0 for k in kernels)
        self.token_window = token_window

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.pre_norm(x))
        if self.pad_odd:
            x = pad_to_multiple(x, 2)
        return self.post_norm(nchw_to_nhwc(self.conv(nhwc_to_nchw(x))))

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The map ``(B, H, W, C)`` and its ``(B, T, C)`` regional tokens, both downsampled."""
        if self.token_window is None:
            raise ValueError("this downsampling has no token grid (token_window) to carry tokens on")
        grid_h, grid_w = region_grid(x.shape[1], x.shape[2], self.token_window)
        if tokens.shape[1] != grid_h * grid_w:
            raise ValueError(
                f"{tokens.shape[1]} tokens beside a {tuple(x.shape[1:3])} map: expected one per "
                f"{self.token_window}-window ({grid_h} x {grid_w})"
            )
        grid = rearrange(tokens, "b (h w) c -> b h w c", h=grid_h)  # the tokens as their own map
        return self(x), self(grid).flatten(1, 2)  # (B, H/2, W/2, C'), (B, T', C')


class PoolDownsample(nn.Module):
    """2x2 average pool (odd maps: the last row/column averages what is there) -> Linear(C, C_out),
    with an optional pre- or post-norm: CoAtNet's downsampling shortcut."""

    def __init__(
        self, in_dim: int, out_dim: int, pre_norm: nn.Module | None, post_norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm if pre_norm is not None else nn.Identity()
        self.proj = Linear(in_dim, out_dim)
        self.post_norm = post_norm if post_norm is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = nhwc_to_nchw(self.pre_norm(x))
        x = nchw_to_nhwc(F.avg_pool2d(x, 2, ceil_mode=True))  # (B, ceil(H/2), ceil(W/2), C)
        return self.post_norm(self.proj(x))


class PatchMerging(nn.Module):
    """Swin: concatenate each 2x2 neighbourhood -> norm(4C) -> Linear(4C, C_out, bias=False);
    Swin V2 normalises after the linear instead (``post_norm``: a norm of C_out channels).

    ``stacked_inputs``: the children whose input features are that many equal parts of C channels
    one after the other (here the four pixels), which a narrower copy of this module has narrower
    copies of: what a weight-sharing supernet slices part by part (``hvtnas.search.one_shot``)."""

    PIXELS = 4  # the 4C input: the 2x2 neighbourhood's pixels one after the other, C channels each

    def __init__(
        self, in_dim: int, out_dim: int, norm: nn.Module | None, post_norm: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.norm = norm if norm is not None else nn.Identity()
        self.reduction = Linear(self.PIXELS * in_dim, out_dim, bias=False)
        self.post_norm = post_norm if post_norm is not None else nn.Identity()
        self.stacked_inputs = {"reduction": self.PIXELS, "norm": self.PIXELS}

    def forward(self, x: Tensor) -> Tensor:
        x = pad_to_multiple(x, 2)
        # Swin's channel order [x(0,0), x(1,0), x(0,1), x(1,1)]: the row offset varies fastest
        x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)
        return self.post_norm(self.reduction(self.norm(x)))


class PatchProjection(nn.Module):
    """TNT's projection of a fine map onto a coarse one: each coarse token from the ``patch_size`` x
    ``patch_size`` fine pixels under it, flattened (pixel row, pixel column, channel) -> norm ->
    Linear -> norm. It makes a nested stage's map from its input (with a bias) and, in every
    nested block, the update the inner block adds to the map (without). Fine maps not divisible by
    the patch are zero-padded at the bottom/right."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        patch_size: int,
        bias: bool,
        norm_in: nn.Module | None,
        norm_out: nn.Module | None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_in = norm_in if norm_in is not None else nn.Identity()
        self.proj = Linear(patch_size * patch_size * in_dim, out_dim, bias=bias)
        self.norm_out = norm_out if norm_out is not None else nn.Identity()
        self.stacked_inputs = {"proj": patch_size * patch_size, "norm_in": patch_size * patch_size}

    def forward(self, pixels: Tensor) -> Tensor:  # (B, h*p, w*p, c) -> (B, h, w, C)
        p = self.patch_size
        x = rearrange(pad_to_multiple(pixels, p), "b (h ph) (w pw) c -> b h w (ph pw c)", ph=p, pw=p)
        return self.norm_out(self.proj(self.norm_in(x)))


# ----------------------------------------------------------------------------- positional encodings
class AbsolutePosEmbed(nn.Module):
    """Learnable embedding of the configured map size, bicubically resized for other input sizes."""

    def __init__(self, dim: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, *size, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        pos = self.pos_embed
        if pos.shape[1:3] != x.shape[1:3]:
            pos = F.interpolate(nhwc_to_nchw(pos), size=x.shape[1:3], mode="bicubic", align_corners=False)
            pos = nchw_to_nhwc(pos)
        return x + pos.to(x.dtype)


class AxialPosEmbed(nn.Module):
    """Learnable embedding factorised over the axes (Vision Longformer's): a vector per row fills
    the first half of the channels, a vector per column the second half, so a H x W map costs
    (H + W) C / 2 parameters instead of H W C. Linearly resized along an axis of another length."""

    def __init__(self, dim: int, size: tuple[int, int]) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"axial position embedding needs an even width, got {dim}")
        self.row_embed = nn.Parameter(torch.zeros(size[0], dim // 2))
        self.col_embed = nn.Parameter(torch.zeros(size[1], dim // 2))
        nn.init.trunc_normal_(self.row_embed, std=0.02)
        nn.init.trunc_normal_(self.col_embed, std=0.02)

    @staticmethod
    def _resized(table: Tensor, length: int) -> Tensor:
        if table.shape[0] == length:
            return table
        resized = F.interpolate(table.T[None], size=length, mode="linear", align_corners=False)  # (1, C/2, L)
        return resized[0].T  # (L, C/2)

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[1:3]
        rows = self._resized(self.row_embed, H)[:, None, :].expand(H, W, -1)  # (H, W, C/2)
        cols = self._resized(self.col_embed, W)[None, :, :].expand(H, W, -1)  # (H, W, C/2)
        return x + torch.cat([rows, cols], dim=-1).to(x.dtype)


class SinusoidalPosEmbed(nn.Module):
    """Fixed 2-D sine-cosine embedding (MAE / MoCo v3 style): a quarter of the channels each for
    sin(y), cos(y), sin(x), cos(x) at geometric frequencies. No parameters; computed per map size."""

    def __init__(self, dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"sinusoidal position embedding needs a width divisible by 4, got {dim}")
        self.dim = dim
        self.temperature = temperature
        self._cache: dict[tuple, Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def embedding(self, H: int, W: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (H, W, device, dtype)
        if key not in self._cache:
            quarter = self.dim // 4
            omega = 1.0 / self.temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
            y, x = torch.meshgrid(
                torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
            )
            ay, ax = y[..., None] * omega, x[..., None] * omega  # (H, W, dim/4)
            emb = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=-1)  # (H, W, dim)
            self._cache[key] = emb.to(device=device, dtype=dtype)
        return self._cache[key]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.embedding(x.shape[1], x.shape[2], x.device, x.dtype)


class PixelAttention(nn.Module):
    """ResT's pixel-attention positional encoding: ``x * sigmoid(depthwise k x k conv(x))``."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(nchw_to_nhwc(self.proj(nhwc_to_nchw(x))))


class PEG(nn.Module):
    """CPVT's positional encoding generator: x + depthwise k x k conv(x), after a stage's first block."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + nchw_to_nhwc(self.proj(nhwc_to_nchw(x)))
