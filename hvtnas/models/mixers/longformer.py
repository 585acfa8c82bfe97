"""Vision Longformer's attention: sliding-chunk local attention on the map, global tokens beside it.

The map is cut into w x w chunks; the queries of a chunk attend to the 3w x 3w neighbourhood of
the chunk (itself and its eight neighbours, keys outside the map masked: the official
"sliding chunk without padding", ``MSVIT.SW_EXACT = 0``) and to every global token. Each global
token attends to everything: the other tokens and the whole map. Both directions use one set of
q / kv / output projections (the official ``SHARE_W``). The tokens come from a ``global`` token
stream (``hvtnas.models.tokens``); without tokens this is blocked local attention alone (HaloNet's
with a halo of one whole chunk).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from pydantic import PositiveInt
from torch import Tensor

from hvtnas.models.fused import Linear
from hvtnas.models.layers import pad_to_multiple
from hvtnas.models.mixers.attention import AttentionParams
from hvtnas.models.mixers.base import MixerParams, TokenMixer


class LongformerParams(AttentionParams):
    # the chunk side w: queries in w x w chunks, keys from the 3w x 3w neighbourhood (ViL: 7)
    window_size: PositiveInt = 7


class LongformerAttention(TokenMixer):
    """Vision Longformer's multi-scale 2-D Longformer attention (``longformerhand``, mode 0: all
    eight neighbour chunks). A map smaller than w on a side uses a chunk of the map's size there
    (the official pads it to w: the same keys, all of them inside one chunk)."""

    Params: ClassVar[type[MixerParams]] = LongformerParams
    uses_heads = True
    attends_tokens = True
    paper = "Vision Longformer (Zhang et al., ICCV 2021)"
    complexity = "O(N (3w)² C + N T C), chunk w, T global tokens"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        qkv_bias: bool = True,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim, bias=proj_bias)
        self._valid_cache: dict[tuple[int, int, int, int, torch.device], Tensor] = {}

    @torch.inference_mode(False)  # cached for later training steps: must not be an inference tensor
    def _valid_keys(self, H: int, W: int, ch: int, cw: int, device: torch.device) -> Tensor:
        """``(nW, 1, 1, 9 ch cw)``: True where a chunk's neighbourhood key lies inside the real map
        (not in a neighbour chunk beyond the border, nor in the padding to whole chunks)."""
        key = (H, W, ch, cw, device)
        if key not in self._valid_cache:
            Hp, Wp = H + (-H) % ch, W + (-W) % cw
            rows = torch.arange(Hp + 2 * ch) - ch
            cols = torch.arange(Wp + 2 * cw) - cw
            real = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
            hoods = real.unfold(0, 3 * ch, ch).unfold(1, 3 * cw, cw)  # (nh, nw, 3ch, 3cw)
            self._valid_cache[key] = rearrange(hoods, "nh nw kh kw -> (nh nw) 1 1 (kh kw)").to(device)
        return self._valid_cache[key]

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x, None)[0]

    def forward_sequence(self, sequence: Tensor, num_tokens: int, size: tuple[int, int]) -> Tensor:
        """``[tokens; pixels]`` ``(B, T + H*W, C)``: the pixels go back to their map for the chunks."""
        x = rearrange(sequence[:, num_tokens:], "b (h w) c -> b h w c", h=size[0])
        if num_tokens == 0:
            return self._attend(x, None)[0].flatten(1, 2)  # (B, H*W, C)
        out, out_tokens = self._attend(x, sequence[:, :num_tokens])
        return torch.cat([out_tokens, out.flatten(1, 2)], dim=1)  # (B, T + H*W, C)

    def _attend(self, x: Tensor, tokens: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The map ``(B, H, W, C)`` and the tokens ``(B, T, C)`` (or None) after attention."""
        H, W = x.shape[1:3]
        n = self.num_heads
        ch, cw = min(self.window_size, H), min(self.window_size, W)
        # the projections of the real map only; the padding to whole chunks and the zero chunks
        # around the map are masked keys and discarded queries
        q = pad_to_multiple(self.q(x), (ch, cw))  # (B, Hp, Wp, C)
        Hp = q.shape[1]
        q = rearrange(q, "b (nh ch) (nw cw) (n d) -> b (nh nw) n (ch cw) d", ch=ch, cw=cw, n=n)
        kv_map = self.kv(x)  # (B, H, W, 2C)
        kv = pad_to_multiple(kv_map, (ch, cw))
        kv = F.pad(kv, (0, 0, cw, cw, ch, ch))  # a zero chunk all around: (B, Hp + 2ch, Wp + 2cw, 2C)
        kv = kv.unfold(1, 3 * ch, ch).unfold(2, 3 * cw, cw)  # (B, nh, nw, 2C, 3ch, 3cw), a view
        k, v = rearrange(kv, "b nh nw (two n d) kh kw -> two b (nh nw) n (kh kw) d", two=2, n=n)
        mask = self._valid_keys(H, W, ch, cw, x.device)  # (nW, 1, 1, 9 ch cw)
        out_tokens: Tensor | None = None
        if tokens is not None:
            T = tokens.shape[1]
            q_tokens = rearrange(self.q(tokens), "b t (n d) -> b n t d", n=n)
            k_tokens, v_tokens = rearrange(self.kv(tokens), "b t (two n d) -> two b n t d", two=2, n=n)
            # every global token attends to all tokens and the whole map
            k_map, v_map = rearrange(kv_map, "b h w (two n d) -> two b n (h w) d", two=2, n=n)
            attended = F.scaled_dot_product_attention(
                q_tokens, torch.cat([k_tokens, k_map], dim=2), torch.cat([v_tokens, v_map], dim=2)
            )  # (B, n, T, d)
            out_tokens = self.proj(rearrange(attended, "b n t d -> b t (n d)"))
            # every chunk's queries also attend to the global tokens
            nW = q.shape[1]
            k = torch.cat([repeat(k_tokens, "b n t d -> b w n t d", w=nW), k], dim=3)
            v = torch.cat([repeat(v_tokens, "b n t d -> b w n t d", w=nW), v], dim=3)
            mask = torch.cat([mask.new_ones(nW, 1, 1, T), mask], dim=3)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nW, n, ch cw, d)
        out = rearrange(out, "b (nh nw) n (ch cw) d -> b (nh ch) (nw cw) (n d)", nh=Hp // ch, ch=ch)
        return self.proj(out[:, :H, :W]), out_tokens
