"""The MetaFormer block and stage."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch import Tensor, nn

from hvtnas.models.ffn import Mlp
from hvtnas.models.fused import Linear
from hvtnas.models.layers import DropPath, Scale, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.base import TokenMixer


def per_token(f: nn.Module, tokens: Tensor) -> Tensor:
    """``f`` (a norm, an FFN: parts made for maps) on each ``(B, T, C)`` token as a 1x1 map, so a
    GroupNorm normalises the token over its channels and a Mix-FFN's zero-padded depthwise conv sees
    no neighbours (its centre tap only)."""
    maps = rearrange(tokens, "b t c -> (b t) 1 1 c")
    return rearrange(f(maps), "(b t) 1 1 c -> b t c", b=tokens.shape[0])


def _token_ffn(ffn: nn.Module) -> nn.Module:
    """What an FFN is to the tokens beside the map: itself, or nothing where it ``passes_tokens``
    (CeiT's LeFF: the class token skips it, so the block adds the token's normalised value)."""
    return nn.Identity() if getattr(type(ffn), "passes_tokens", False) else ffn


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
    without drop path or scales (Shuffle Transformer). In a stage that carries tokens (``carries_tokens``),
    a mixer with ``attends_tokens_first`` gets a sub-block on the tokens alone before its own,
    ``tokens = tokens + drop(mixer.forward_tokens(norm(tokens)))``, with a norm of its own and no
    scales (RegionViT's regional self-attention).
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
        carries_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.mixer_residual = mixer.residual
        # RegionViT: the tokens attend among themselves first, through a norm of their own
        self.norm_tokens = norm() if carries_tokens and mixer.attends_tokens_first else None
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
        # the whole block acts on [tokens; pixels] as one sequence: its mixer attends to tokens and
        # its norms and FFN act on each token alone (so the map needs no neighbours)
        self.takes_sequence = (
            self.mixer_residual
            and mixer.attends_tokens
            and isinstance(self.norm1, nn.LayerNorm)
            and (ffn is None or isinstance(ffn, Mlp))
        )

    def _branch(self, f: Callable[[Tensor], Tensor], norm: nn.Module, x: Tensor) -> Tensor:
        return norm(f(x)) if self.post_norm else f(norm(x))

    def _token_branch(self, f: nn.Module, norm: nn.Module, tokens: Tensor) -> Tensor:
        """``_branch`` on the tokens beside the map, each as a 1x1 map (``per_token``)."""
        return per_token(lambda t: self._branch(f, norm, t), tokens)

    def _add(
        self,
        x: Tensor,
        branch: Tensor,
        res_scale: nn.Module,
        layer_scale: nn.Module,
        factor: Tensor | None = None,
    ) -> Tensor:
        """``res_scale(x) + drop_path(layer_scale(branch))`` with the scales and the drop-path
        factors (``factor``, per sample; drawn here when not given) folded into one ``addcmul``: one
        pass over the map instead of up to four (these element-wise passes are memory-bound, a
        sizeable part of a MetaFormer's time)."""
        scale = layer_scale.scale if isinstance(layer_scale, Scale) else None
        if factor is None:
            factor = self._drop_factor(branch)
        if factor is not None:
            scale = factor if scale is None else factor * scale  # (B, 1, ..., C): tiny
        if scale is None:
            if isinstance(res_scale, Scale):
                return torch.addcmul(branch, x, res_scale.scale)
            return x + branch
        return torch.addcmul(res_scale(x), branch, scale)

    def _drop_factor(self, x: Tensor) -> Tensor | None:
        return self.drop_path.sample_factor(x) if isinstance(self.drop_path, DropPath) else None

    def _tokens_first(self, tokens: Tensor) -> Tensor:
        """The sub-block on the ``(B, T, C)`` tokens alone (``norm_tokens``; RegionViT's RSA)."""
        if self.norm_tokens is None:
            return tokens
        return tokens + self.drop_path(self._branch(self.mixer.forward_tokens, self.norm_tokens, tokens))

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

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """The block on ``[tokens; pixels]`` ``(B, T + H*W, C)`` (``takes_sequence`` blocks only):
        the sequence model's block, without splitting the tokens from the map."""
        if self.norm_tokens is not None:
            tokens = self._tokens_first(sequence[:, :num_tokens])
            sequence = torch.cat([tokens, sequence[:, num_tokens:]], dim=1)  # (B, T + H*W, C)
        if self.post_norm:
            mixed = self.norm1(self.mixer.forward_sequence(sequence, num_tokens, size))
        else:
            mixed = self.mixer.forward_sequence(self.norm1(sequence), num_tokens, size)
        sequence = self._add(sequence, mixed, self.res_scale1, self.layer_scale1)
        if self.ffn is not None:
            branch = self._branch(self.ffn, self.norm2, sequence)
            sequence = self._add(sequence, branch, self.res_scale2, self.layer_scale2)
        return sequence

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The block on the map ``(B, H, W, C)`` and the tokens beside it ``(B, T, C)``: the mixer
        attends over both if it can (``attends_tokens``), otherwise the tokens skip its sub-block;
        norms, FFN, scales and drop path act on the tokens as on the pixels, each token as a 1x1
        map (``per_token``), one drop-path draw per sample for both (with a LayerNorm and an MLP,
        the sequence model's block on ``[tokens; pixels]``)."""
        tokens = self._tokens_first(tokens)
        if self.mixer_residual and self.mixer.attends_tokens:
            if self.post_norm:
                mixed, mixed_tokens = self.mixer.forward_with_tokens(x, tokens)
                mixed, mixed_tokens = self.norm1(mixed), per_token(self.norm1, mixed_tokens)
            else:
                normed_tokens = per_token(self.norm1, tokens)
                mixed, mixed_tokens = self.mixer.forward_with_tokens(self.norm1(x), normed_tokens)
            factor = self._drop_factor(x)  # (B, 1, 1, 1)
            x = self._add(x, mixed, self.res_scale1, self.layer_scale1, factor)
            token_factor = factor.flatten(1, 2) if factor is not None else None  # (B, 1, 1)
            tokens = self._add(tokens, mixed_tokens, self.res_scale1, self.layer_scale1, token_factor)
        elif self.mixer_residual:
            x = self._add(x, self._branch(self.mixer, self.norm1, x), self.res_scale1, self.layer_scale1)
        else:
            x = self.mixer(x)
        if self.ffn is not None:
            factor = self._drop_factor(x)
            x = self._add(
                x, self._branch(self.ffn, self.norm2, x), self.res_scale2, self.layer_scale2, factor
            )
            token_factor = factor.flatten(1, 2) if factor is not None else None
            tokens = self._add(
                tokens,
                self._token_branch(_token_ffn(self.ffn), self.norm2, tokens),
                self.res_scale2,
                self.layer_scale2,
                token_factor,
            )
        return x, tokens


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
            nn.Sequential(Linear(in_dim, dim, bias=False), norm(dim))
            if stride > 1 or in_dim != dim
            else None
        )
        self.conv1 = Linear(in_dim, mid_dim, bias=False)
        self.norm1 = norm(mid_dim)
        self.mixer = mixer
        self.norm2 = norm(mid_dim)
        self.conv3 = Linear(mid_dim, dim, bias=False)
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
    """[downsample] -> [absolute PE] -> blocks (PEG after the first) -> [output norm].

    ``tokens`` (a ``hvtnas.models.tokens`` stream module, None for none) gives the tokens this
    stage carries beside its map, made after the downsampling; PEG and the output norm act on the
    map only; a downsampling that is a block of its own (MViT's transition) carries the previous
    stage's tokens (``downsample_takes_tokens``). ``forward(x, tokens)`` returns ``(map, tokens)``;
    the tokens are None in a stage without a stream (a previous stage's tokens end there). With
    ``token_history`` (set by the builder for CeiT's layer-wise class-token attention) the stage
    returns instead the first token after each of its blocks, ``(B, depth, C)``.

    With ``peg_before_each_block`` the PEG acts before every block instead, the same weights each
    time (CoaT's convolutional position encoding).
    """

    def __init__(
        self,
        blocks: list[MetaFormerBlock] | list[BottleneckBlock],
        downsample: nn.Module | None = None,
        pos_embed: nn.Module | None = None,
        peg: nn.Module | None = None,
        out_norm: nn.Module | None = None,
        peg_before_each_block: bool = False,
        tokens: nn.Module | None = None,
        downsample_takes_tokens: bool = False,
    ) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        # the downsampling is a block that carries the previous stage's tokens (MViT's transition)
        self.downsample_takes_tokens = downsample_takes_tokens
        self.pos_embed = pos_embed if pos_embed is not None else nn.Identity()
        self.tokens = tokens
        self.blocks = nn.ModuleList(blocks)
        self.peg = peg
        self.peg_before_each_block = peg_before_each_block
        self.out_norm = out_norm if out_norm is not None else nn.Identity()
        self.grad_checkpointing = False  # MetaFormer.set_grad_checkpointing
        self.token_history = False

    def forward(
        self,
        x: Tensor,
        tokens: Tensor | None = None,
        image: Tensor | None = None,
        blocks: range | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``(map, tokens)`` from the previous stage's; ``image``, the model's input, is for a token
        stream that embeds it (RegionViT's regional tokens). ``blocks``: run only those blocks, on
        ``x`` and ``tokens`` as given (a stage run in pieces: CrossViT's branches exchange class
        tokens between them); the entry (downsampling, position embedding, new tokens) comes with
        the piece that starts at block 0, the output norm with the one that ends at the last block."""
        run = range(len(self.blocks)) if blocks is None else blocks
        if run.start == 0:
            if tokens is not None and self.tokens is not None and self.downsample_takes_tokens:
                # MViT's transition block; RegionViT's projection of both the map and its regional tokens
                x, tokens = self.downsample.forward_with_tokens(x, tokens)
                x = self.pos_embed(x)
            else:
                x = self.pos_embed(self.downsample(x))
            tokens = self.tokens(x, tokens, image) if self.tokens is not None else None
        out_norm = self.out_norm if run.stop == len(self.blocks) else nn.Identity()
        checkpoint = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        if tokens is not None and self.peg is None and all(b.takes_sequence for b in self.blocks):
            x, tokens = self._forward_sequence(x, tokens, checkpoint, run)
            return out_norm(x), tokens
        history = []
        for i, block in zip(run, (self.blocks[i] for i in run), strict=True):
            if self.peg_before_each_block and self.peg is not None:
                x = self.peg(x)
            # with checkpointing only the block's input is kept; its inside is recomputed in backward
            if tokens is None:
                x = (
                    torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                    if checkpoint
                    else block(x)
                )
            elif checkpoint:
                x, tokens = torch.utils.checkpoint.checkpoint(
                    block.forward_with_tokens, x, tokens, use_reentrant=False
                )
            else:
                x, tokens = block.forward_with_tokens(x, tokens)
            if i == 0 and self.peg is not None and not self.peg_before_each_block:
                x = self.peg(x)
            if self.token_history and tokens is not None:
                history.append(tokens[:, 0])  # (B, C): the class token after this block
        if history:
            tokens = torch.stack(history, dim=1)  # (B, depth, C)
        return out_norm(x), tokens

    def _forward_sequence(
        self, x: Tensor, tokens: Tensor, checkpoint: bool, run: range
    ) -> tuple[Tensor, Tensor]:
        """The ``run`` blocks on ``[tokens; pixels]`` as one sequence (ViT's form): joined once, split
        once."""
        H, W, T = x.shape[1], x.shape[2], tokens.shape[1]
        sequence = torch.cat([tokens, x.flatten(1, 2)], dim=1)  # (B, T + H*W, C)
        history = []
        for block in (self.blocks[i] for i in run):
            if checkpoint:
                sequence = torch.utils.checkpoint.checkpoint(
                    block.forward_sequence, sequence, T, (H, W), use_reentrant=False
                )
            else:
                sequence = block.forward_sequence(sequence, T, (H, W))
            if self.token_history:
                history.append(sequence[:, 0])  # (B, C): the class token after this block
        x = rearrange(sequence[:, T:], "b (h w) c -> b h w c", h=H)
        tokens = torch.stack(history, dim=1) if history else sequence[:, :T]  # (B, depth, C) or (B, T, C)
        return x, tokens


def _drop_pair(drop_path: nn.Module, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Drop path on a map branch ``(B, H, W, C)`` and its tokens' ``(B, T, C)`` with one draw per
    sample for both (they are one sequence in the models that carry tokens)."""
    factor = drop_path.sample_factor(x) if isinstance(drop_path, DropPath) else None
    if factor is None:
        return x, tokens
    return x * factor, tokens * factor.flatten(1, 2)  # (B, 1, 1, 1) and (B, 1, 1)


class FFNTransition(nn.Module):
    """MViT v1's widening: the FFN sub-block of the last block before a transition, whose MLP
    widens the channels, with a Linear shortcut from the same norm:
    ``x = proj(norm(x)) + drop(mlp(norm(x)))`` (same map size; C_in -> C_out). Without ``proj``
    (the width stays) it is the plain ``x + drop(mlp(norm(x)))``."""

    def __init__(
        self, norm: nn.Module, mlp: nn.Module, proj: nn.Linear | None, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm = norm
        self.mlp = mlp
        self.proj = proj
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C_in) -> (B, H, W, C_out)
        normed = self.norm(x)
        return self._shortcut(x, normed) + self.drop_path(self.mlp(normed))

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        normed, normed_tokens = self.norm(x), per_token(self.norm, tokens)
        mlp, mlp_tokens = _drop_pair(self.drop_path, self.mlp(normed), per_token(self.mlp, normed_tokens))
        return self._shortcut(x, normed) + mlp, self._shortcut(tokens, normed_tokens) + mlp_tokens

    def _shortcut(self, x: Tensor, normed: Tensor) -> Tensor:
        return self.proj(normed) if self.proj is not None else x


class AttentionDownsample(nn.Module):
    """MViT's stage-transition block, used as a stage's downsampling: the first block of the stage,
    whose attention halves the map (Q stride 2).

    MViTv2 widens the channels inside it: ``x = maxpool(proj(norm1(x))) + drop(attn(norm1(x)))``
    (3x3 max pool, stride 2; ``proj`` a Linear to the new width), then the usual
    ``x + drop(ffn(norm2(x)))``. MViT v1 widens before it (``widen``, an ``FFNTransition``: the
    previous block's MLP), and its shortcut is the max-pooled input itself. Tokens beside the map
    (MViT's class token) go through all of it but the max pool.
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
        widen: FFNTransition | None = None,
    ) -> None:
        super().__init__()
        self.widen = widen
        self.norm1 = norm1
        self.shortcut_proj = Linear(in_dim, out_dim) if in_dim != out_dim else None
        self.shortcut_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.attention = attention
        self.norm2 = norm2
        self.ffn = ffn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _shortcut(self, x: Tensor, normed: Tensor) -> Tensor:
        """The projected norm where the width changes here (MViTv2), else the input itself."""
        return self.shortcut_proj(normed) if self.shortcut_proj is not None else x

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C_in) -> (B, H/2, W/2, C_out)
        if self.widen is not None:
            x = self.widen(x)
        normed = self.norm1(x)
        shortcut = nchw_to_nhwc(self.shortcut_pool(nhwc_to_nchw(self._shortcut(x, normed))))
        x = shortcut + self.drop_path(self.attention(normed))
        return x + self.drop_path(self.ffn(self.norm2(x)))

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """The same on the map and the ``(B, T, C)`` tokens beside it (one drop-path draw per sample)."""
        if self.widen is not None:
            x, tokens = self.widen.forward_with_tokens(x, tokens)
        normed, normed_tokens = self.norm1(x), per_token(self.norm1, tokens)
        mixed, mixed_tokens = _drop_pair(
            self.drop_path, *self.attention.forward_with_tokens(normed, normed_tokens)
        )
        shortcut = nchw_to_nhwc(self.shortcut_pool(nhwc_to_nchw(self._shortcut(x, normed))))
        x, tokens = shortcut + mixed, self._shortcut(tokens, normed_tokens) + mixed_tokens
        token_ffn = _token_ffn(self.ffn)
        ffn, ffn_tokens = _drop_pair(
            self.drop_path, self.ffn(self.norm2(x)), per_token(lambda t: token_ffn(self.norm2(t)), tokens)
        )
        return x + ffn, tokens + ffn_tokens


class CoScaleBlock(nn.Module):
    """CoaT's parallel block: the maps of several scales (the last stages, of one width) side by
    side, each through its own norm and mixer; every scale's mixer output then gets the others'
    added, bilinearly resized to its map (the co-scale fusion: up from coarser, down from finer
    scales), before the residual; then norm -> FFN -> residual per scale (one FFN for all scales
    where given one module, as CoaT's).

    Tokens beside the maps (CoaT's class tokens, one set per scale) go with their scale through the
    mixer; in the fusion each scale's tokens get the others' tokens added (they have no map to
    resize). ``forward(maps, tokens)`` takes and returns lists, one entry per scale, finest first:
    maps ``(B, H_s, W_s, C)``, tokens ``(B, T, C)`` or None.
    """

    def __init__(
        self,
        mixers: list[nn.Module],
        ffns: list[nn.Module],
        norms: list[Callable[[], nn.Module]],
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norms1 = nn.ModuleList(norm() for norm in norms)
        self.mixers = nn.ModuleList(mixers)
        self.norms2 = nn.ModuleList(norm() for norm in norms)
        self.ffns = nn.ModuleList(ffns)  # the same module at every index where the scales share it
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, maps: list[Tensor], tokens: list[Tensor | None]
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        mixed, mixed_tokens = [], []
        for x, t, norm, mixer in zip(maps, tokens, self.norms1, self.mixers, strict=True):
            if t is None or not mixer.attends_tokens:  # the tokens skip a mixer that cannot take them
                mixed.append(mixer(norm(x)))
            else:
                out, out_tokens = mixer.forward_with_tokens(norm(x), norm(t))
                mixed.append(out)
                mixed_tokens.append(out_tokens)
        fused = [
            sum((_resize(other, target.shape[1:3]) for other in mixed if other is not target), target)
            for target in mixed
        ]
        maps = [x + self.drop_path(f) for x, f in zip(maps, fused, strict=True)]
        maps = [
            x + self.drop_path(ffn(norm(x)))
            for x, norm, ffn in zip(maps, self.norms2, self.ffns, strict=True)
        ]
        if mixed_tokens:  # every scale's tokens get the others' (the config gives all or none tokens)
            token_sum = sum(mixed_tokens[1:], mixed_tokens[0])
            tokens = [t + self.drop_path(token_sum) for t in tokens]
        if tokens[0] is not None:
            tokens = [
                t + self.drop_path(ffn(norm(t)))
                for t, norm, ffn in zip(tokens, self.norms2, self.ffns, strict=True)
            ]
        return maps, tokens


def _resize(x: Tensor, size: torch.Size) -> Tensor:
    """A channels-last map bilinearly resized to ``size`` (CoaT's fusion: align_corners False)."""
    if x.shape[1:3] == size:
        return x
    resized = F.interpolate(nhwc_to_nchw(x), size=tuple(size), mode="bilinear", align_corners=False)
    return nchw_to_nhwc(resized)


class CoScaleGroup(nn.Module):
    """CoaT's parallel group: ``CoScaleBlock``s over the maps of the last stages. Before each block
    every scale's map goes through its stage's PEG (``pegs``, the stages' own modules: CoaT's
    convolutional position encoding is one per scale, shared by the serial and parallel blocks)."""

    def __init__(self, blocks: list[CoScaleBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, maps: list[Tensor], tokens: list[Tensor | None], pegs: list[nn.Module | None]
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        for block in self.blocks:
            maps = [x if peg is None else peg(x) for x, peg in zip(maps, pegs, strict=True)]
            maps, tokens = block(maps, tokens)
        return maps, tokens


class NestedBlock(nn.Module):
    """TNT's block: a transformer inside a transformer.

    The inner block (a ``MetaFormerBlock`` on the fine map the stage carries, ``patch_size`` x
    ``patch_size`` pixels per token of the map; TNT's attention among the pixels of one patch is
    window attention with the patch as window) runs first; its pixels are projected onto the map
    and added (``PatchProjection``, no bias); then the outer block runs on the map and the tokens
    beside it (TNT's class token takes no pixel update: it has no pixels).
    """

    def __init__(self, inner: MetaFormerBlock, fuse: nn.Module, outer: MetaFormerBlock) -> None:
        super().__init__()
        self.inner = inner
        self.fuse = fuse
        self.outer = outer

    def forward(
        self, pixels: Tensor, x: Tensor, tokens: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:  # (B, h*p, w*p, c), (B, h, w, C), (B, T, C)
        pixels = self.inner(pixels)
        x = x + self.fuse(pixels)
        if tokens is None:
            return pixels, self.outer(x), None
        if not self.outer.takes_sequence:
            x, tokens = self.outer.forward_with_tokens(x, tokens)
            return pixels, x, tokens
        # TNT's outer block as the sequence model's: its FFN reads its weights once for the class
        # token and the map together, not once for each (what made batch 1 slower than timm's)
        H, W, T = x.shape[1], x.shape[2], tokens.shape[1]
        sequence = self.outer.forward_sequence(torch.cat([tokens, x.flatten(1, 2)], dim=1), T, (H, W))
        return pixels, rearrange(sequence[:, T:], "b (h w) c -> b h w c", h=H), sequence[:, :T]


class NestedStage(Stage):
    """A stage whose blocks are ``NestedBlock``s: it keeps its input map (the pixels; the stem's
    map for the first stage) beside its own, which ``downsample`` (a ``PatchProjection`` with bias)
    makes from those pixels. The pixels end with the stage: the pyramid level and the next stage
    see its map only."""

    def forward(
        self, x: Tensor, tokens: Tensor | None = None, image: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        pixels = x  # (B, h*p, w*p, c)
        x = self.pos_embed(self.downsample(pixels))  # (B, h, w, C)
        tokens = self.tokens(x, tokens, image) if self.tokens is not None else None
        checkpoint = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        history = []
        for i, block in enumerate(self.blocks):
            if checkpoint:  # only the block's inputs are kept; its inside is recomputed in backward
                pixels, x, tokens = torch.utils.checkpoint.checkpoint(
                    block, pixels, x, tokens, use_reentrant=False
                )
            else:
                pixels, x, tokens = block(pixels, x, tokens)
            if i == 0 and self.peg is not None:
                x = self.peg(x)
            if self.token_history and tokens is not None:
                history.append(tokens[:, 0])  # (B, C): the class token after this block
        if history:
            tokens = torch.stack(history, dim=1)  # (B, depth, C)
        return self.out_norm(x), tokens
