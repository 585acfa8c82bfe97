"""The skeleton every hierarchical ViT of the design space shares.

stem (stride 4) -> stages (strides 4, 8, 16, 32) -> classifier head, with timm 1.x's model API
(an isotropic model, ViT's, is the same with one stage behind a stride-16 patch stem):
``forward_features`` returns the last stage's map (B, C, H, W), ``forward_head`` the logits from it,
``forward_intermediates`` the feature pyramid; ``reset_classifier``, ``set_grad_checkpointing``,
``prune_intermediate_layers`` and ``feature_info`` behave as timm's. ``FeaturePyramid`` is the
``features_only`` model that detection and segmentation code consumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hvtnas.errors import HvtnasError
from hvtnas.models.blocks import CoScaleGroup, Stage
from hvtnas.models.ffn import Mlp
from hvtnas.models.fused import Linear
from hvtnas.models.layers import make_act, nchw_to_nhwc, nhwc_to_nchw


class LayerClassAttention(nn.Module):
    """CeiT's layer-wise class-token attention (LCA): the class token after each of the last
    stage's ``layers`` blocks, plus a learned embedding per layer, and one pre-norm transformer
    block in which only the last of them is a query (attention over all of them, then an MLP, both
    residual). Returns that token ``(B, C)``."""

    def __init__(
        self, dim: int, layers: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eps: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pos_embed = nn.Parameter(torch.zeros(1, layers, dim))  # zeros, as CeiT's
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, history: Tensor) -> Tensor:  # (B, L, C) -> (B, C)
        x = history + self.pos_embed.to(history.dtype)
        normed = self.norm1(x)
        dim = x.shape[-1]
        weight, bias = self.qkv.weight, self.qkv.bias
        # one query, the last layer's: only its rows of the query projection are computed
        q = F.linear(normed[:, -1:], weight[:dim], bias[:dim] if bias is not None else None)  # (B, 1, C)
        kv = F.linear(normed, weight[dim:], bias[dim:] if bias is not None else None)  # (B, L, 2C)
        q = rearrange(q, "b 1 (n d) -> b n 1 d", n=self.num_heads)
        k, v = rearrange(kv, "b l (two n d) -> two b n l d", two=2, n=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, 1, d)
        x = x[:, -1] + self.proj(rearrange(out, "b n 1 d -> b (n d)"))
        return x + self.mlp(self.norm2(x))


class ClassifierHead(nn.Module):
    """norm (before or after global average pooling) -> [MLP: fc -> act -> LN] -> dropout -> fc.

    ``pool``: ``avg`` averages the map; ``token`` reads the first token beside it (the class token,
    timm's ``global_pool='token'``) instead, normalised; ``avg_tokens`` averages the normalised
    tokens beside it (RegionViT's regional tokens). ``pre_logits`` returns the pooled features
    (``num_features`` wide), as timm's heads do.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        norm: nn.Module | None = None,
        norm_position: str = "pre_pool",
        mlp_ratio: float | None = None,
        act: str = "squared_relu",
        dropout: float = 0.0,
        pool: str = "avg",
        scale_norms: list[nn.Module] | None = None,
        layer_attention: LayerClassAttention | None = None,
    ) -> None:
        super().__init__()
        self.norm_position = norm_position
        self.pool = pool
        self.layer_attention = layer_attention  # pool 'layer_attention' (CeiT's LCA)
        self.dim, self.mlp_ratio, self.act = dim, mlp_ratio, act
        self.norm = norm if norm is not None else nn.Identity()
        # CoaT: the earlier scales' norms, and the learned weighting of the scales' pooled features
        self.scales = 1 + len(scale_norms) if scale_norms is not None else 1
        self.scale_norms = nn.ModuleList(scale_norms) if scale_norms is not None else None
        self.aggregate = nn.Conv1d(self.scales, 1, kernel_size=1) if self.scales > 1 else None
        self.dropout = nn.Dropout(dropout)
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """A new (freshly initialised) classifier for ``num_classes``; 0: pooled features out."""
        self.num_classes = num_classes
        dim, mlp_ratio = self.dim, self.mlp_ratio
        if num_classes == 0:
            self.mlp, self.fc = None, nn.Identity()
        elif mlp_ratio is not None:
            hidden = int(mlp_ratio * dim)
            # MetaFormer baselines' MlpHead: the LayerNorm is part of the head (eps 1e-6)
            self.mlp = nn.Sequential(
                Linear(dim, hidden), make_act(self.act), nn.LayerNorm(hidden, eps=1e-6)
            )
            self.fc = Linear(hidden, num_classes)
        else:
            self.mlp, self.fc = None, Linear(dim, num_classes)

    def forward(
        self,
        x: Tensor | Sequence[Tensor],
        pre_logits: bool = False,
        tokens: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Logits from the last map ``x`` ``(B, H, W, C)`` or, with ``pool == 'token'``, from the
        first of the ``tokens`` ``(B, T, C)`` beside it. A head that aggregates several scales
        (``scales > 1``, CoaT) takes a list of maps and one of tokens, finest first."""
        if self.aggregate is None:
            x = self._pool(self.norm, x, tokens)
        else:
            if not isinstance(x, Sequence) or len(x) != self.scales:
                raise HvtnasError(
                    f"this head weighs the last {self.scales} pyramid levels (CoaT): give it their maps "
                    "as a list, finest first (and their tokens as a list), or call model(x)"
                )
            tokens = tokens if tokens is not None else [None] * self.scales
            norms = [*self.scale_norms, self.norm]
            pooled = [self._pool(n, m, t) for n, m, t in zip(norms, x, tokens, strict=True)]
            x = self.aggregate(torch.stack(pooled, dim=1)).squeeze(1)  # (B, scales, C) -> (B, C)
        if pre_logits:  # as timm's: pooled (normalised) features, before any MLP head
            return x
        if self.mlp is not None:
            x = self.mlp(x)
        return self.fc(self.dropout(x))

    def _pool(self, norm: nn.Module, x: Tensor, tokens: Tensor | None) -> Tensor:
        """One scale's features ``(B, C)``: its class token or its averaged map, normalised."""
        if self.pool == "token":
            if tokens is None:
                raise HvtnasError(
                    "this model classifies from its class token: give forward_head the tokens "
                    "(feats, tokens = model.forward_features(x, return_tokens=True); "
                    "model.forward_head(feats, tokens=tokens)), or call model(x)"
                )
            return norm(tokens[:, 0])  # (B, C): one token, so pre- and post-pool norms agree
        if self.pool == "avg_tokens":  # RegionViT: its regional tokens, normalised, averaged
            if tokens is None:
                raise HvtnasError(
                    "this model classifies from the tokens beside its map: give forward_head the tokens "
                    "(model.forward_features(x, return_tokens=True)), or call model(x)"
                )
            return norm(tokens).mean(dim=1)
        if self.pool == "layer_attention":
            if tokens is None or self.layer_attention is None:
                raise HvtnasError(
                    "this model classifies from its class tokens of every layer: give forward_head the "
                    "tokens (model.forward_features(x, return_tokens=True)), or call model(x)"
                )
            return norm(self.layer_attention(tokens))  # tokens: (B, depth, C), one per block
        if self.norm_position == "pre_pool":
            return norm(x).mean(dim=(1, 2))
        return norm(x.mean(dim=(1, 2)))


def run_stem(stem: nn.Module, x: Tensor) -> Tensor:
    """``stem`` on the image ``x`` (B, 3, H, W), its (B, H/s, W/s, C) map contiguous.

    The maps of every stage must be contiguous (B, H, W, C) memory: as permuted views of NCHW memory,
    every linear layer, pooling and norm after would copy or take a slow strided path (PoolFormer's
    pooling: 15x slower). A channels_last image makes the stem's convolution write that memory
    directly; but oneDNN then reorders the convolution's weight to channels_last on every call,
    which costs more than it saves where the weight is larger than the image (ViT's 16x16 patch
    embedding: 295k weights for 150k pixel values; DeiT-S at batch 1: 5% of its time). There the
    NCHW image is used as it is and the smaller output is made contiguous instead."""
    first = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.weight.numel() > x[0].numel():
        return stem(x).contiguous()
    return stem(x.contiguous(memory_format=torch.channels_last))


class MetaFormer(nn.Module):
    """A hierarchical MetaFormer backbone with a classification head, speaking timm 1.x's API.

    Attributes:
        feature_info: per pyramid level ``{"num_chs", "reduction", "module"}`` (timm's convention).
        num_features: channels of the last stage (the pooled feature size).
        num_classes: classes of the classifier (0: none, the head returns pooled features).

    Internally the maps are channels-last ``(B, H, W, C)``; what this API returns is NCHW
    (permuted views of channels-last memory; call ``.contiguous()`` if a consumer needs it).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: list[Stage],
        head: ClassifierHead,
        widths: list[int],
        strides: list[int] | None = None,
        co_scale: CoScaleGroup | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.co_scale = co_scale  # CoaT's parallel blocks over the last stages' maps
        self.head = head
        self.num_features = widths[-1]
        # what pre_logits returns: the pooled features, wider where the head has a hidden layer
        self.head_hidden_size = getattr(head, "hidden_size", widths[-1])
        self.num_classes = head.num_classes
        self.grad_checkpointing = False
        strides = strides if strides is not None else [4 * 2**i for i in range(len(widths))]
        self.feature_info = [
            {"num_chs": w, "reduction": r, "module": f"stages.{i}"}
            for i, (w, r) in enumerate(zip(widths, strides, strict=True))
        ]

    # ------------------------------------------------------------------ timm's model API
    def forward_features(
        self, x: Tensor, return_tokens: bool = False
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """The last stage's map ``(B, C, H/32, W/32)`` (what ``forward_head`` takes); with
        ``return_tokens`` also the ``(B, T, C)`` tokens beside it (None if it carries none),
        which a model classifying from its class token needs in ``forward_head``."""
        x, tokens = self._forward_levels(x, self.stages)[-1]
        return (nhwc_to_nchw(x), tokens) if return_tokens else nhwc_to_nchw(x)

    def forward_head(
        self,
        x: Tensor | Sequence[Tensor],
        pre_logits: bool = False,
        tokens: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Logits (or, ``pre_logits``, the pooled features) from ``forward_features``' map, or from
        the class token in ``tokens`` for a model whose head reads it (``tokens: {kind: class}``).
        A head that weighs several pyramid levels (CoaT's) takes their maps and tokens as lists."""
        if isinstance(x, Sequence):
            return self.head([nchw_to_nhwc(m) for m in x], pre_logits=pre_logits, tokens=tokens)
        return self.head(nchw_to_nhwc(x), pre_logits=pre_logits, tokens=tokens)

    def forward(self, x: Tensor) -> Tensor:
        levels = self._forward_levels(x, self.stages)
        if self.head.scales > 1:
            maps, tokens = zip(*levels[-self.head.scales :], strict=True)
            return self.head(list(maps), tokens=list(tokens))
        x, tokens = levels[-1]
        return self.head(x, tokens=tokens)

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
        """The feature pyramid, as timm 1.x's ``forward_intermediates``.

        Args:
            indices: stages to return: an int n takes the last n, a sequence those indices
                (negative from the end), None all of them.
            norm: apply the head's norm to the last stage's map where the head normalises
                before pooling (``norm_position: pre_pool``); ignored otherwise.
            stop_early: stop after the last stage asked for (the final map is then that stage's).
            output_fmt: ``NCHW`` or ``NHWC`` (the native layout: no permute).
            intermediates_only: return only the list of maps.
            return_prefix_tokens: each intermediate is ``(map, tokens)``, the ``(B, T, C)``
                tokens carried beside that stage's map (None where it carries none), as timm's ViT.

        Returns:
            ``(final, intermediates)``: the final map as ``forward_features`` returns it and the
            list of maps; or the list alone with ``intermediates_only``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise HvtnasError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, last = _take_indices(len(self.stages), indices)
        # the co-scale group needs all of its stages: with one, every stage runs
        stop = (stop_early or intermediates_only) and self.co_scale is None
        levels = self._forward_levels(x, self.stages[: last + 1] if stop else self.stages)
        intermediates: list = []
        for i, (level, tokens) in enumerate(levels):
            if i in take:
                level_norm = self._norm_on_map(i)
                level = level_norm(level) if norm and level_norm is not None else level
                level = nhwc_to_nchw(level) if output_fmt == "NCHW" else level
                intermediates.append((level, tokens) if return_prefix_tokens else level)
        if intermediates_only:
            return intermediates
        return nhwc_to_nchw(levels[-1][0]), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the classifier: ``prune_head``);
        returns the indices kept. The head's norm goes too with ``prune_norm``."""
        take, last = _take_indices(len(self.stages), indices)
        cut = last + 1 < len(self.stages)
        self.stages = self.stages[: last + 1]
        self.feature_info = self.feature_info[: last + 1]
        if cut and self.co_scale is not None:  # it needs the stages cut off: the levels are serial
            self.co_scale = None
            self.head.scale_norms = self.head.aggregate = None
            self.head.scales = 1
        cfg = getattr(self, "arch_config", None)
        if cfg is not None:  # the config describes what is left
            tokens = cfg.tokens
            if tokens is not None and tokens.from_stage > last:  # they began in a pruned stage
                tokens = None
            elif tokens is not None and tokens.last_stage is not None and tokens.last_stage > last:
                tokens = tokens.model_copy(update={"last_stage": None})  # they now reach the last
            update = {"stages": cfg.stages[: last + 1], "tokens": tokens}
            if cut:
                update["co_scale"] = None
            self.arch_config = cfg.model_copy(update=update)
        if prune_norm:
            self.head.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (0: ``forward`` returns pooled features).
        ``global_pool`` (timm's argument) may only name the pooling the architecture has: 'token'
        for a model with a class token, 'avg' otherwise (None or '' keep it)."""
        if global_pool not in (None, "", self.head.pool):
            raise HvtnasError(
                f"global_pool: this model pools by {self.head.pool!r}, not {global_pool!r} (its config "
                "decides: a model with a class token classifies from it, the others average the map)"
            )
        self.head.reset(num_classes)
        fresh = [m for m in (self.head.mlp, self.head.fc) if m is not None]  # not the layer attention
        for module in (m for part in fresh for m in part.modules()):  # the builder's initialisation
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.num_classes = num_classes
        cfg = getattr(self, "arch_config", None)
        if cfg is not None:  # keep the config (summaries, exports) in step with the model
            self.arch_config = cfg.model_copy(
                update={"input": cfg.input.model_copy(update={"num_classes": num_classes})}
            )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them
        (``torch.utils.checkpoint``, non-reentrant): less memory in training, about one more
        forward pass of time. Inference is unaffected."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    # ------------------------------------------------------------------ internals
    def _stem(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, H/s, W/s, C), s the stem's stride
        return run_stem(self.stem, x)

    def _forward_levels(self, x: Tensor, stages: Sequence[Stage]) -> list[tuple[Tensor, Tensor | None]]:
        """(B, 3, H, W) -> per stage run, its map (B, H/s, W/s, C) and the (B, T, C) tokens beside it
        (None for none); the co-scale group's levels after it, where all stages ran."""
        levels = []
        image = x  # for token streams that embed it (RegionViT's regional tokens)
        x, tokens = self._stem(x), None
        for stage in stages:
            x, tokens = stage(x, tokens, image)
            levels.append((x, tokens))
        if self.co_scale is not None and len(levels) == len(self.stages):
            fused = len(self.co_scale.blocks[0].mixers)  # the last stages, side by side
            maps, tokens = (list(t) for t in zip(*levels[-fused:], strict=True))
            pegs = [stage.peg for stage in self.stages[-fused:]]
            maps, tokens = self.co_scale(maps, tokens, pegs)
            levels[-fused:] = zip(maps, tokens, strict=True)
        return levels

    def _norm_on_map(self, i: int) -> nn.Module | None:
        """The head's norm of pyramid level ``i``, where the head normalises that map before pooling:
        the last level's, or one of the levels a multi-scale head (CoaT's) weighs."""
        if self.head.norm_position != "pre_pool":
            return None
        first = len(self.stages) - self.head.scales
        if i < first:
            return None
        return self.head.norm if i == len(self.stages) - 1 else self.head.scale_norms[i - first]


def _take_indices(n: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """timm's ``feature_take_indices``: (the stage indices asked for, the largest)."""
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise HvtnasError(f"indices: the last {indices} of {n} stages cannot be taken")
        take = list(range(n - indices, n))
    else:
        take = []
        for i in indices:
            j = n + i if i < 0 else i
            if not 0 <= j < n:
                raise HvtnasError(f"indices: {i} is out of range for a model of {n} stages")
            take.append(j)
    return take, max(take)


class FeaturePyramid(nn.Module):
    """The ``features_only`` model (timm's ``FeatureGetterNet``): ``forward`` returns the maps of
    the stages in ``out_indices`` as NCHW tensors, the input of detection and segmentation necks.

    The wrapped model loses its classifier and the stages after the last one asked for;
    ``feature_info`` lists the returned levels (``num_chs``, ``reduction``, ``module``), and
    ``feature_info.channels()`` / ``.reduction()`` give their channels and strides, as timm's.
    ``out_indices``: as ``forward_intermediates``' ``indices`` (None: every stage).
    """

    def __init__(
        self, model: MetaFormer, out_indices: int | Sequence[int] | None = None, norm: bool = False
    ) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=not norm)
        self.norm = norm
        self.feature_info = FeatureInfo([model.feature_info[i] for i in self.out_indices])
        self.model = model
        if hasattr(model, "arch_config"):
            self.arch_config = model.arch_config

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.out_indices, norm=self.norm, intermediates_only=True
        )


class FeatureInfo(list):
    """timm's ``feature_info``: a list of ``{"num_chs", "reduction", "module"}`` with helpers."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]
