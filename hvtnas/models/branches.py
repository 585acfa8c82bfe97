"""Parallel branches: isotropic MetaFormers on one image at different patch sizes, fused (CrossViT).

A branched model (``ArchConfig.branches``) is the model's own stem and stage (branch 0) plus one
stem and stage per entry of ``branches``, each a model of its own (``ArchConfig.branch_configs``:
the same position embedding, class token and head) built by ``build_model``'s usual path, on the
image resized to the branch's resolution. ``fusion.points`` times, after every depth / points
blocks of each branch, the branches exchange information through their class tokens
(``ClassTokenExchange``, CrossViT's cross-attention fusion). Each branch's class token then goes
through its branch's classifier head (norm -> Linear) and the logits are averaged.

timm's model API, for a model whose pyramid is one level per branch, finest first (the model's own
branch, then ``branches`` in order):

- ``forward_intermediates`` returns each branch's patch map ``(B, C_b, H_b, W_b)``;
  ``feature_info`` lists them (``reduction``: the branch's patch size over its resize factor,
  rounded: CrossViT-S's 16-pixel patches on the image resized from 240 to 224 are 17);
  ``features_only`` gives those maps (a branch cannot be pruned: the fusion needs them all);
- ``forward_features`` returns the last (coarsest) branch's map, as a pyramid's last level;
  with ``return_tokens`` its tokens;
- ``forward_head`` reads every branch's class token, so it takes the maps and tokens of all levels
  as lists (``head.scales`` is the number of branches, as CoaT's multi-scale head):
  ``levels = model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)``
  then ``model.forward_head([m for m, _ in levels], tokens=[t for _, t in levels])``;
  ``pre_logits`` gives the class tokens concatenated (``num_features`` = the widths' sum, timm's);
- ``reset_classifier`` gives every branch a fresh classifier; ``get_classifier`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hvtnas.errors import HvtnasError
from hvtnas.models.blocks import Stage
from hvtnas.models.fused import Linear
from hvtnas.models.layers import make_act, nhwc_to_nchw
from hvtnas.models.metaformer import ClassifierHead, MetaFormer, _take_indices, run_stem


class ClassCrossAttention(nn.Module):
    """Cross-attention with one query, a class token: ``token + proj(attn(q(t), k(s), v(s)))`` with
    ``s = norm([token; others])`` and ``t`` the token's row of it (CrossViT's cross-attention block:
    only the token is updated). ``token`` ``(B, 1, C)``, ``others`` ``(B, N_i, C)`` tensors (joined
    once, here) -> ``(B, 1, C)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, norm: nn.Module) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = norm
        self.q = Linear(dim, dim, bias=qkv_bias)
        self.kv = Linear(dim, 2 * dim, bias=qkv_bias)  # keys and values in one matrix product
        self.proj = Linear(dim, dim)

    def forward(self, token: Tensor, others: Sequence[Tensor]) -> Tensor:
        normed = self.norm(torch.cat([token, *others], dim=1))  # (B, 1 + N, C)
        q = rearrange(self.q(normed[:, :1]), "b 1 (n d) -> b n 1 d", n=self.num_heads)
        k, v = rearrange(self.kv(normed), "b l (two n d) -> two b n l d", two=2, n=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, d)
        return token + self.proj(rearrange(out, "b n 1 d -> b 1 (n d)"))


class ClassTokenExchange(nn.Module):
    """One fusion point of CrossViT: branch ``i``'s class token is projected to branch ``j = i + 1``'s
    width (``to_other``: norm -> act -> Linear), attends over branch j's other tokens and patches
    (``attend``, a ``ClassCrossAttention`` with branch j's heads), is projected back (``back``) and
    replaces branch i's class token (the last branch attends to the first). Every branch reads the
    others as they were before the exchange. ``forward`` takes each branch's map ``(B, H_b, W_b, C_b)``
    and tokens ``(B, T, C_b)`` (the class token first) and returns the branches' new tokens."""

    def __init__(
        self,
        widths: list[int],
        heads: list[int],
        norms: list[Callable[[int], nn.Module]],
        act: str,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        n = len(widths)
        others = [(i + 1) % n for i in range(n)]
        self.to_other = nn.ModuleList(
            nn.Sequential(norms[i](widths[i]), make_act(act), Linear(widths[i], widths[j]))
            for i, j in enumerate(others)
        )
        self.attend = nn.ModuleList(
            ClassCrossAttention(widths[j], heads[j], qkv_bias, norms[j](widths[j])) for j in others
        )
        self.back = nn.ModuleList(
            nn.Sequential(norms[j](widths[j]), make_act(act), Linear(widths[j], widths[i]))
            for i, j in enumerate(others)
        )

    def forward(self, maps: list[Tensor], tokens: list[Tensor]) -> list[Tensor]:
        n = len(maps)
        out = []
        for i, (to_other, attend, back) in enumerate(zip(self.to_other, self.attend, self.back, strict=True)):
            j = (i + 1) % n
            others = [tokens[j][:, 1:], maps[j].flatten(1, 2)]  # (B, T - 1, C_j), (B, H_j W_j, C_j)
            token = attend(to_other(tokens[i][:, :1]), others)  # (B, 1, C_j)
            out.append(torch.cat([back(token), tokens[i][:, 1:]], dim=1))  # (B, T, C_i)
        return out


class Branch(nn.Module):
    """A branch beside the model's own: its stem and its one stage, on the image resized by ``scale``."""

    def __init__(self, stem: nn.Module, stage: Stage, scale: float) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList([stage])
        self.scale = scale


class BranchHeads(nn.Module):
    """Every branch's classifier (``ClassifierHead`` on its class token); the logits are averaged
    (CrossViT), ``pre_logits`` concatenates the normalised class tokens (timm's)."""

    pool = "token"
    norm_position = "pre_pool"

    def __init__(self, heads: list[ClassifierHead]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.scales = len(heads)  # the pyramid levels forward_head reads, as CoaT's head
        self.num_classes = heads[0].num_classes

    def reset(self, num_classes: int) -> None:
        for head in self.heads:
            head.reset(num_classes)
        self.num_classes = num_classes

    def forward(
        self,
        x: Tensor | Sequence[Tensor],
        pre_logits: bool = False,
        tokens: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        if tokens is None or isinstance(tokens, Tensor) or len(tokens) != self.scales:
            raise HvtnasError(
                f"this head reads the class tokens of the last {self.scales} pyramid levels (one per "
                "branch): give forward_head their maps and tokens as lists (levels = "
                "model.forward_intermediates(x, return_prefix_tokens=True, intermediates_only=True)), "
                "or call model(x)"
            )
        if pre_logits or self.num_classes == 0:
            return torch.cat(
                [h(None, pre_logits=True, tokens=t) for h, t in zip(self.heads, tokens, strict=True)], dim=1
            )
        return torch.stack([h(None, tokens=t) for h, t in zip(self.heads, tokens, strict=True)]).mean(dim=0)


class BranchedMetaFormer(MetaFormer):
    """Parallel isotropic branches fused through their class tokens (CrossViT); the API is in the
    module's docstring. ``parts`` are the branches built as models of their own (the model's own
    first; each keeps its stem, stage and head), ``scales`` the factors each resizes the image by,
    ``fusions`` one ``ClassTokenExchange`` per fusion point, after every depth / points blocks."""

    def __init__(
        self, parts: list[MetaFormer], scales: list[float], fusions: list[ClassTokenExchange]
    ) -> None:
        own = parts[0]
        strides = [f["reduction"] for f in own.feature_info]
        widths = [f["num_chs"] for f in own.feature_info]
        super().__init__(own.stem, list(own.stages), BranchHeads([p.head for p in parts]), widths, strides)
        self.branches = nn.ModuleList(
            Branch(p.stem, p.stages[0], scale) for p, scale in zip(parts[1:], scales[1:], strict=True)
        )
        self.fusions = nn.ModuleList(fusions)
        self.num_features = self.head_hidden_size = sum(p.num_features for p in parts)
        self.feature_info = [
            {
                "num_chs": p.feature_info[0]["num_chs"],
                "reduction": round(p.feature_info[0]["reduction"] / s),
                "module": "stages.0" if b == 0 else f"branches.{b - 1}",
            }
            for b, (p, s) in enumerate(zip(parts, scales, strict=True))
        ]

    def _branch_parts(self) -> list[tuple[nn.Module, Stage, float]]:
        """(stem, stage, scale) of every branch, the model's own first."""
        own = [(self.stem, self.stages[0], 1.0)]
        return own + [(b.stem, b.stages[0], b.scale) for b in self.branches]

    def _forward_levels(
        self, x: Tensor, stages: Sequence[Stage] | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """(B, 3, H, W) -> per branch its map (B, H_b, W_b, C_b) and tokens (B, T, C_b): each stage
        runs in ``len(fusions)`` pieces (``Stage.forward``'s ``blocks``), the branches exchange class
        tokens after each."""
        parts = self._branch_parts()
        maps = [
            run_stem(stem, _resize(x, scale))
            for stem, _, scale in parts
        ]
        tokens: list = [None] * len(parts)
        points = len(self.fusions)
        for k, fusion in enumerate(self.fusions):
            for b, (_, stage, _) in enumerate(parts):
                per_piece = len(stage.blocks) // points
                maps[b], tokens[b] = stage(
                    maps[b], tokens[b], blocks=range(k * per_piece, (k + 1) * per_piece)
                )
            tokens = fusion(maps, tokens)
        return list(zip(maps, tokens, strict=True))

    # ------------------------------------------------------------------ timm's model API
    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Each branch's map (one pyramid level per branch, the model's own first), as
        ``MetaFormer.forward_intermediates``; every branch runs whatever is asked (they exchange
        until the end), and ``norm`` applies each branch's head norm to its map."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise HvtnasError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, _ = _take_indices(len(self.feature_info), indices)
        levels = self._forward_levels(x)
        intermediates: list = []
        for i, (level, tokens) in enumerate(levels):
            if i in take:
                level = self.head.heads[i].norm(level) if norm else level
                level = nhwc_to_nchw(level) if output_fmt == "NCHW" else level
                intermediates.append((level, tokens) if return_prefix_tokens else level)
        if intermediates_only:
            return intermediates
        return nhwc_to_nchw(levels[-1][0]), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Every branch stays (the fusion needs them all); drops the classifiers (``prune_head``) and
        the heads' norms (``prune_norm``). Returns the indices asked for."""
        take, _ = _take_indices(len(self.feature_info), indices)
        if prune_norm:
            for head in self.head.heads:
                head.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def get_classifier(self) -> nn.Module:
        return nn.ModuleList(head.fc for head in self.head.heads)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for every branch (see ``MetaFormer.reset_classifier``)."""
        if global_pool not in (None, "", "token"):
            raise HvtnasError(
                f"global_pool: this model classifies from its class tokens, not {global_pool!r}"
            )
        self.head.reset(num_classes)
        for head in self.head.heads:
            fresh = [m for m in (head.mlp, head.fc) if m is not None]
            for module in (m for part in fresh for m in part.modules()):
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)
        self.num_classes = num_classes
        cfg = getattr(self, "arch_config", None)
        if cfg is not None:
            self.arch_config = cfg.model_copy(
                update={"input": cfg.input.model_copy(update={"num_classes": num_classes})}
            )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for _, stage, _ in self._branch_parts():
            stage.grad_checkpointing = enable


def _resize(x: Tensor, scale: float) -> Tensor:
    """The image ``(B, C, H, W)`` bicubically resized by ``scale`` (a branch's resolution over the
    input's; sides rounded), as CrossViT does for its large-patch branch."""
    if scale == 1.0:
        return x
    height, width = (int(side) for side in x.shape[-2:])  # ints also while traced (fvcore)
    size = (round(height * scale), round(width * scale))
    if size == (height, width):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)
