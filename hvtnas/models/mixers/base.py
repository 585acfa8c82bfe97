"""What every token mixer is: an ``nn.Module`` on channels-last maps plus a declared parameter model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from einops import rearrange
from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic_core import PydanticCustomError
from torch import Tensor, nn

from hvtnas.models.layers import ACTIVATIONS

if TYPE_CHECKING:
    from hvtnas.models.tokens import TokenStreamParams


def _known_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise PydanticCustomError(
            "unknown_act",
            "unknown activation '{value}'; known: {known}",
            {"value": name, "known": ", ".join(sorted(ACTIVATIONS))},
        )
    return name


# an activation name in a mixer's parameters, checked when the config is read
ActivationName = Annotated[str, AfterValidator(_known_activation)]


class MixerParams(BaseModel):
    """A mixer's configurable parameters. Subclasses add fields; unknown keys are rejected.

    ``kind`` is the registry name; the search space reads these fields to know which knobs exist
    (a window size exists only for window mixers, a reduction ratio only for reduction mixers).
    """

    model_config = ConfigDict(extra="forbid")
    kind: str

    def heads_problem(self, num_heads: int) -> str | None:
        """Why these parameters cannot work with ``num_heads`` heads (None: they can). The stage's
        config validation calls it once the heads are known (a split of the heads that must add up)."""
        return None

    def tokens_problem(self, tokens: TokenStreamParams) -> str | None:
        """Why these parameters cannot work beside ``tokens`` (a stage's token stream; None: they
        can). The config validation calls it for every mixer of a stage that carries tokens (RegionViT's
        regional-to-local attention needs one regional token per window of its own size)."""
        return None


class TokenMixer(nn.Module):
    """Base class: ``forward(x)`` maps ``(B, H, W, C)`` to ``(B, H, W, C)``.

    Class attributes tell the builder and the contract tests what the mixer needs:
    ``Params`` (its parameter model), ``uses_heads`` (it is given ``num_heads``), ``heads_multiple``
    (the number of groups it splits its heads into, which must divide them), ``uses_map_size`` (it
    is given ``map_size``, the side of its stage's map at the configured input resolution, for
    tables sized by the map such as MViTv2's relative positions),
    ``supports_stride`` (it takes ``stride=2`` and halves the map, as the first mixer of a stage
    whose first block downsamples: HaloNet's strided halo attention),
    ``flop_free`` (it does no multiply-accumulates by design: shift, identity, pooling),
    ``paper`` (the papers it comes from) and ``complexity`` (its cost in the number of tokens N,
    for the README's generated mixer table).
    ``attends_tokens``: it mixes the tokens that travel beside the map (class, global tokens; see
    ``hvtnas.models.tokens``) together with the map, through ``forward_sequence`` on the sequence
    ``[tokens; pixels]``; the tokens pass the sub-block of any other mixer unchanged.
    ``attends_tokens_first``: the block first runs a sub-block on the tokens alone,
    ``tokens + drop(forward_tokens(norm(tokens)))`` with a norm of its own (RegionViT's regional
    self-attention, with the mixer's weights), then the mixer's on ``[tokens; pixels]``.
    The instance attribute ``residual`` is False for mixers that replace their input instead of
    being added to it (ShiftViT applies the shift with neither norm nor shortcut).
    """

    Params: ClassVar[type[MixerParams]] = MixerParams
    uses_heads: ClassVar[bool] = False
    heads_multiple: ClassVar[int] = 1
    uses_map_size: ClassVar[bool] = False
    supports_stride: ClassVar[bool] = False
    flop_free: ClassVar[bool] = False
    attends_tokens: ClassVar[bool] = False
    attends_tokens_first: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    complexity: ClassVar[str] = ""
    residual: bool = True

    @classmethod
    def stage_shared(cls, dim: int, **kwargs: Any) -> nn.Module | None:
        """A module that every mixer of this kind and these parameters in one stage shares (CoaT's
        convolutional relative position encoding: one set of weights per stage), or None (the
        default: nothing shared). ``kwargs`` are the mixer's constructor arguments; the builder
        calls this once per stage and gives the result to each mixer as ``shared``."""
        return None

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """Mix ``[tokens; pixels]`` ``(B, T + H*W, C)``, the ``num_tokens`` tokens first and the
        H x W map (``size``) row by row after them; same shape out. Only mixers with
        ``attends_tokens`` implement it (a stage whose blocks all do keeps this form throughout)."""
        raise NotImplementedError(f"{type(self).__name__} does not attend to tokens beside the map")

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """Mix the ``(B, T, C)`` tokens among themselves (mixers with ``attends_tokens_first``)."""
        raise NotImplementedError(f"{type(self).__name__} does not mix the tokens on their own")

    def forward_with_tokens(self, x: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``forward_sequence`` on the map ``(B, H, W, C)`` and the tokens ``(B, T, C)``, returned apart."""
        H, W, T = x.shape[1], x.shape[2], tokens.shape[1]
        out = self.forward_sequence(torch.cat([tokens, x.flatten(1, 2)], dim=1), T, (H, W))  # (B, T + H*W, C)
        return rearrange(out[:, T:], "b (h w) c -> b h w c", h=H), out[:, :T]
