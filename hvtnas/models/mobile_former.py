"""Mobile-Former (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022).

A MobileNet stream (a stride-2 conv stem, a lite bottleneck, then inverted-residual blocks) and a
handful of learned global tokens beside it (``tokens: {kind: global, dim: 192}``, a
``hvtnas.models.tokens`` stream made at the first stage and carried to the last, at their own
width), joined by two light cross-attentions in every block:

- **Mobile -> Former** (``MobileToFormer``): the tokens query the map; no projection on the map side
  (keys = values = the map's channels, split into heads); the result is projected back to the
  tokens' width and added, then LayerNorm (post-norm).
- **Former** (``Former``): the tokens' own transformer block, post-norm: attention with a query
  projection only (keys = values = the tokens), an output projection, then an MLP.
- **Mobile** (``MobileSubBlock``): the inverted residual whose activations are dynamic ReLUs
  (``DynamicReLU``) with coefficients made from the first token.
- **Former -> Mobile** (``FormerToMobile``): the map queries the tokens (keys and values projected
  from the tokens to the map's width, no projection on the map side), added to the map.

The block is not a mixer + FFN pair: its map changes width inside it, its mobile sub-block needs
the tokens (for the dynamic ReLU's coefficients) between two token updates, and it normalises with
BatchNorm inside its convolutions rather than around its sub-blocks. So it is a block kind of its
own (``StageConfig.mobile_former``), as HaloNet's bottleneck block is; the stage opens with the
downsampling form of the block (``stride=2``), whose mobile sub-block is depthwise (stride 2) ->
pointwise -> depthwise -> pointwise. The classifier (``MobileFormerHead``) lets the tokens read the
last map once more, then concatenates the pooled, widened map with the first token.

Maps are channels-last ``(B, H, W, C)`` as everywhere in hvtnas; tokens ``(B, T, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hvtnas.errors import HvtnasError
from hvtnas.models.fused import Linear
from hvtnas.models.layers import DropPath, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.metaformer import ClassifierHead


def _conv_bn(
    in_dim: int, out_dim: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """A bias-free conv (padding k//2) and its BatchNorm, on NCHW tensors."""
    conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_dim))


def _check_heads(what: str, dim: int, heads: int) -> None:
    if dim % heads:
        raise HvtnasError(f"{what}: {heads} heads do not divide its {dim} channels")


class DynamicReLU(nn.Module):
    """DY-ReLU-B with two pieces (Chen et al., ECCV 2020), its coefficients made from a token:
    ``max(a1 * x, a2 * x)`` per channel, ``a1 = 2 s1`` in [0, 2] and ``a2 = 2 s2 - 1`` in [-1, 1]
    with ``s = hardsigmoid(fc2(relu(fc1(token))))`` (2C values: the a1's, then the a2's)."""

    def __init__(self, dim: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = Linear(token_dim, token_dim // reduction)
        self.fc2 = Linear(token_dim // reduction, 2 * dim)

    def forward(self, x: Tensor, token: Tensor) -> Tensor:  # x (B, C, H, W), token (B, D)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(token))))  # (B, 2C) in [0, 1]
        a1, a2 = rearrange(s, "b (two c) -> two b c 1 1", two=2)  # per-channel slopes for NCHW maps
        return torch.maximum(x * (2 * a1), x * (2 * a2 - 1))


class MobileSubBlock(nn.Module):
    """The MobileNet side of a Mobile-Former block, on NCHW maps, with dynamic ReLUs from the first
    token. ``stride=1``: MobileNetV2's inverted residual, pointwise to ``in_dim * expansion`` ->
    act -> depthwise 3x3 -> act -> pointwise to ``dim`` (each conv with BatchNorm), plus the input
    where the width stays. ``stride=2`` (the downsampling block): depthwise 3x3 stride 2 with
    ``expansion`` outputs per channel -> act -> pointwise to ``dim``, then depthwise 3x3 with
    ``down_expansion`` outputs per channel -> act -> pointwise to ``dim``, residual around this
    second half."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        expansion: int,
        token_dim: int,
        stride: int = 1,
        down_expansion: int = 4,
        reduction: int = 4,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        if stride == 1:
            hidden = in_dim * expansion
            self.expand = _conv_bn(in_dim, hidden)
            self.act1 = DynamicReLU(hidden, token_dim, reduction)
            self.depthwise = _conv_bn(hidden, hidden, 3, groups=hidden)
            self.act2 = DynamicReLU(hidden, token_dim, reduction)
            self.project = _conv_bn(hidden, dim)
            self.residual = in_dim == dim
        else:
            hidden, hidden2 = in_dim * expansion, dim * down_expansion
            self.depthwise_down = _conv_bn(in_dim, hidden, 3, stride, groups=in_dim)
            self.act1 = DynamicReLU(hidden, token_dim, reduction)
            self.pointwise = _conv_bn(hidden, dim)
            self.depthwise = _conv_bn(dim, hidden2, 3, groups=dim)
            self.act2 = DynamicReLU(hidden2, token_dim, reduction)
            self.project = _conv_bn(hidden2, dim)
            self.residual = False
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, token: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C, H/s, W/s)
        if self.stride == 1:
            out = self.act1(self.expand(x), token)
            out = self.project(self.act2(self.depthwise(out), token))
            return x + self.drop_path(out) if self.residual else out
        mid = self.pointwise(self.act1(self.depthwise_down(x), token))  # (B, C, H/2, W/2)
        return mid + self.drop_path(self.project(self.act2(self.depthwise(mid), token)))


class MobileToFormer(nn.Module):
    """The tokens ``(B, T, D)`` query the map ``(B, H, W, C)``: per head, ``softmax(q k^T) v`` with
    ``q`` the tokens' projection to C and ``k = v`` the map's own channels of that head; projected
    back to D, added, then LayerNorm. With ``token_gate`` (as the released code's models) the
    attended values are first scaled per channel by ``2 hardsigmoid(Linear(token))``."""

    def __init__(
        self, dim: int, token_dim: int, num_heads: int = 2, token_gate: bool = False, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        _check_heads("the Mobile->Former bridge", dim, num_heads)
        self.num_heads = num_heads
        self.q = Linear(token_dim, dim)
        self.gate = Linear(token_dim, dim) if token_gate else None
        self.proj = Linear(dim, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        q = rearrange(self.q(tokens), "b t (n d) -> b n t d", n=self.num_heads)
        kv = rearrange(x, "b h w (n d) -> b n (h w) d", n=self.num_heads)  # the map's channels, split
        out = rearrange(F.scaled_dot_product_attention(q, kv, kv), "b n t d -> b t (n d)")
        if self.gate is not None:
            out = out * (2 * F.hardsigmoid(self.gate(tokens)))
        return self.norm(tokens + self.drop_path(self.proj(out)))


class Former(nn.Module):
    """The tokens' transformer block, post-norm: ``t = LN(t + proj(attn(q(t), t, t)))`` (no key or
    value projections), then ``t = LN(t + mlp(t))`` with a GELU MLP of ``mlp_ratio``."""

    def __init__(
        self, token_dim: int, num_heads: int = 4, mlp_ratio: float = 2.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        _check_heads("the Former", token_dim, num_heads)
        self.num_heads = num_heads
        self.q = Linear(token_dim, token_dim)
        self.proj = Linear(token_dim, token_dim)
        self.norm1 = nn.LayerNorm(token_dim)
        hidden = int(token_dim * mlp_ratio)
        self.mlp = nn.Sequential(Linear(token_dim, hidden), nn.GELU(), Linear(hidden, token_dim))
        self.norm2 = nn.LayerNorm(token_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, tokens: Tensor) -> Tensor:  # (B, T, D)
        q = rearrange(self.q(tokens), "b t (n d) -> b n t d", n=self.num_heads)
        kv = rearrange(tokens, "b t (n d) -> b n t d", n=self.num_heads)
        out = rearrange(F.scaled_dot_product_attention(q, kv, kv), "b n t d -> b t (n d)")
        tokens = self.norm1(tokens + self.drop_path(self.proj(out)))
        return self.norm2(tokens + self.mlp(tokens))


class FormerToMobile(nn.Module):
    """The map ``(B, H, W, C)`` queries the tokens: per head, ``softmax(q k^T) v`` with ``q`` the
    map's own channels of that head and ``k``, ``v`` the tokens projected to C; added to the map."""

    def __init__(self, dim: int, token_dim: int, num_heads: int = 2, drop_path: float = 0.0) -> None:
        super().__init__()
        _check_heads("the Former->Mobile bridge", dim, num_heads)
        self.num_heads = num_heads
        self.k = Linear(token_dim, dim)
        self.v = Linear(token_dim, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        H = x.shape[1]
        q = rearrange(x, "b h w (n d) -> b n (h w) d", n=self.num_heads)
        k = rearrange(self.k(tokens), "b t (n d) -> b n t d", n=self.num_heads)
        v = rearrange(self.v(tokens), "b t (n d) -> b n t d", n=self.num_heads)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b n (h w) d -> b h w (n d)", h=H)
        return x + self.drop_path(out)


class MobileFormerBlock(nn.Module):
    """Mobile -> Former, Former, Mobile (dynamic ReLUs from the updated first token), Former -> Mobile.

    ``forward_with_tokens(x, tokens)``: ``(B, H, W, C_in)``, ``(B, T, D)`` -> ``(B, H/s, W/s, C)``,
    ``(B, T, D)``. The map bridges read the map at the block's input width (Mobile -> Former) and at
    its output width (Former -> Mobile)."""

    takes_sequence = False  # a stage never joins [tokens; pixels]: they have different widths

    def __init__(
        self,
        in_dim: int,
        dim: int,
        token_dim: int,
        expansion: int,
        stride: int = 1,
        down_expansion: int = 4,
        bridge_heads: int = 2,
        former_heads: int = 4,
        former_mlp_ratio: float = 2.0,
        reduction: int = 4,
        token_gate: bool = False,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.mobile_to_former = MobileToFormer(in_dim, token_dim, bridge_heads, token_gate, drop_path)
        self.former = Former(token_dim, former_heads, former_mlp_ratio, drop_path)
        self.mobile = MobileSubBlock(
            in_dim, dim, expansion, token_dim, stride, down_expansion, reduction, drop_path
        )
        self.former_to_mobile = FormerToMobile(dim, token_dim, bridge_heads, drop_path)

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        tokens = self.former(self.mobile_to_former(x, tokens))
        x = nchw_to_nhwc(self.mobile(nhwc_to_nchw(x), tokens[:, 0]))  # convs on the NCHW view
        return self.former_to_mobile(x, tokens), tokens

    def forward(self, x: Tensor) -> Tensor:
        raise HvtnasError(
            "a Mobile-Former block needs the global tokens beside its map (tokens: {kind: global})"
        )


class LiteBottleneck(nn.Module):
    """MicroNet's lite bottleneck (Mobile-Former's first block): depthwise 3x3 with ``expansion``
    outputs per channel -> BN -> ReLU6 -> pointwise -> BN, plus the input where the width stays."""

    def __init__(self, in_dim: int, dim: int, expansion: int = 2) -> None:
        super().__init__()
        self.depthwise = _conv_bn(in_dim, in_dim * expansion, 3, groups=in_dim)
        self.act = nn.ReLU6()
        self.project = _conv_bn(in_dim * expansion, dim)
        self.residual = in_dim == dim

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C, H, W)
        out = self.project(self.act(self.depthwise(x)))
        return x + out if self.residual else out


class MobileNetStem(nn.Module):
    """Mobile-Former's stem: 3x3 conv, stride 2 (no bias) -> BN -> act, then a lite bottleneck:
    ``(B, 3, H, W)`` -> ``(B, H/2, W/2, C)``."""

    def __init__(self, in_channels: int, widths: list[int], expansion: int, act: nn.Module) -> None:
        super().__init__()
        self.conv = _conv_bn(in_channels, widths[0], 3, stride=2)
        self.act = act
        self.lite = LiteBottleneck(widths[0], widths[1], expansion)

    def forward(self, x: Tensor) -> Tensor:
        return nchw_to_nhwc(self.lite(self.act(self.conv(x))))


class MobileFormerHead(ClassifierHead):
    """Mobile-Former's classifier: the tokens read the last map once more (``MobileToFormer``); the
    map is widened by a 1x1 conv (no bias) -> BN -> ReLU6, averaged, h-swish; the first token is
    concatenated to it; then Linear -> BN -> h-swish to ``hidden`` (the pooled features,
    ``pre_logits``), dropout and the classifier."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        token_dim: int,
        conv_width: int,
        hidden: int,
        bridge: MobileToFormer,
        dropout: float = 0.0,
    ) -> None:
        self.hidden_size = hidden  # what pre_logits returns (timm's head_hidden_size); reset needs it
        super().__init__(dim, num_classes, norm=None, dropout=dropout, pool="avg_and_token")
        self.bridge = bridge
        self.conv = _conv_bn(dim, conv_width)
        # the head's hidden layer stays when the classifier is reset (timm's MobileNetV3 conv_head)
        self.hidden = nn.Sequential(
            Linear(conv_width + token_dim, hidden), nn.BatchNorm1d(hidden), nn.Hardswish()
        )

    def reset(self, num_classes: int) -> None:
        """A fresh classifier on the ``hidden`` features (0: none, the head returns them)."""
        self.num_classes = num_classes
        self.mlp = None
        self.fc = Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor, pre_logits: bool = False, tokens: Tensor | None = None) -> Tensor:
        if tokens is None:
            raise HvtnasError(
                "Mobile-Former classifies from its map and its first global token: give forward_head "
                "the tokens (feats, tokens = model.forward_features(x, return_tokens=True); "
                "model.forward_head(feats, tokens=tokens)), or call model(x)"
            )
        tokens = self.bridge(x, tokens)
        pooled = F.relu6(self.conv(nhwc_to_nchw(x))).mean(dim=(2, 3))  # (B, conv_width)
        features = self.hidden(torch.cat([F.hardswish(pooled), tokens[:, 0]], dim=1))  # (B, hidden)
        if pre_logits:
            return features
        return self.fc(self.dropout(features))
