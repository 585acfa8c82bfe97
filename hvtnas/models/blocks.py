"""The MetaFormer block and stage."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint
from einops import rearrange
from torch import Tensor, nn

from hvtnas.models.ffn import Mlp
from hvtnas.models.layers import DropPath, Scale, nchw_to_nhwc, nhwc_to_nchw
from hvtnas.models.mixers.base import TokenMixer


def per_token(f: nn.Module, tokens: Tensor) -> Tensor:
    """``f`` (a norm, an FFN: parts made for maps) on each ``(B, T, C)`` token as a 1x1 map, so a
    GroupNorm normalises the token over its channels and a Mix-FFN's zero-padded depthwise conv sees
    no neighbours (its centre tap only)."""
    maps = rearrange(tokens, "b t c -> (b t) 1 1 c")
    return rearrange(f(maps), "(b t) 1 1 c -> b t c", b=tokens.shape[0])


def _scale(dim: int, init: float | None) -> nn.Module:
    return Scale(dim, init) if init is not None else nn.Identity()


class MetaFormerBlock(nn.Module):
    """``x = s1(x) + ls1(drop(mixer(norm1(x))))``, then ``x = s2(x) + ls2(drop(ffn(norm2(x))))``.

    With ``post_norm`` the norms move to the end of each branch, ``x + ls(drop(norm(f(x))))``
    (Swin V2's residual post-norm). ``ls`` is layer scale (branch scale), ``s`` residual scale
    (shortcut scale); both identity unless configured. A mixer with ``residual = False``
    replaces x (ShiftViT); ``ffn=None`` drops the second sub-block (CoAtNet MBConv stages).
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

    def _branch(self, f: nn.Module, norm: nn.Module, x: Tensor) -> Tensor:
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

    def forward(self, x: Tensor) -> Tensor:  # x: (B, H, W, C)
        if self.mixer_residual:
            x = self._add(x, self._branch(self.mixer, self.norm1, x), self.res_scale1, self.layer_scale1)
        else:
            x = self.mixer(x)
        if self.ffn is not None:
            x = self._add(x, self._branch(self.ffn, self.norm2, x), self.res_scale2, self.layer_scale2)
        return x

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """The block on ``[tokens; pixels]`` ``(B, T + H*W, C)`` (``takes_sequence`` blocks only):
        the sequence model's block, without splitting the tokens from the map."""
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
                self._token_branch(self.ffn, self.norm2, tokens),
                self.res_scale2,
                self.layer_scale2,
                token_factor,
            )
        return x, tokens


class Stage(nn.Module):
    """[downsample] -> [absolute PE] -> blocks (PEG after the first) -> [output norm].

    ``tokens`` (a ``hvtnas.models.tokens`` stream module, None for none) gives the tokens this
    stage carries beside its map, made after the downsampling; PEG and the output norm act on the
    map only. ``forward(x, tokens)`` returns ``(map, tokens)``; the tokens are None in a stage
    without a stream (a previous stage's tokens end there).
    """

    def __init__(
        self,
        blocks: list[MetaFormerBlock],
        downsample: nn.Module | None = None,
        pos_embed: nn.Module | None = None,
        peg: nn.Module | None = None,
        out_norm: nn.Module | None = None,
        tokens: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.pos_embed = pos_embed if pos_embed is not None else nn.Identity()
        self.tokens = tokens
        self.blocks = nn.ModuleList(blocks)
        self.peg = peg
        self.out_norm = out_norm if out_norm is not None else nn.Identity()
        self.grad_checkpointing = False  # MetaFormer.set_grad_checkpointing

    def forward(self, x: Tensor, tokens: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        x = self.pos_embed(self.downsample(x))
        tokens = self.tokens(x, tokens) if self.tokens is not None else None
        checkpoint = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        if tokens is not None and self.peg is None and all(b.takes_sequence for b in self.blocks):
            return self._forward_sequence(x, tokens, checkpoint)
        for i, block in enumerate(self.blocks):
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
            if i == 0 and self.peg is not None:
                x = self.peg(x)
        return self.out_norm(x), tokens

    def _forward_sequence(self, x: Tensor, tokens: Tensor, checkpoint: bool) -> tuple[Tensor, Tensor]:
        """Every block on ``[tokens; pixels]`` as one sequence (ViT's form): joined once, split once."""
        H, W, T = x.shape[1], x.shape[2], tokens.shape[1]
        sequence = torch.cat([tokens, x.flatten(1, 2)], dim=1)  # (B, T + H*W, C)
        for block in self.blocks:
            if checkpoint:
                sequence = torch.utils.checkpoint.checkpoint(
                    block.forward_sequence, sequence, T, (H, W), use_reentrant=False
                )
            else:
                sequence = block.forward_sequence(sequence, T, (H, W))
        x = rearrange(sequence[:, T:], "b (h w) c -> b h w c", h=H)
        return self.out_norm(x), sequence[:, :T]


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
