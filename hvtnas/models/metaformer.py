"""The skeleton every hierarchical ViT of the design space shares.

stem (stride 4) -> stages (strides 4, 8, 16, 32) -> classifier head, with timm 1.x's model API:
``forward_features`` returns the last stage's map (B, C, H, W), ``forward_head`` the logits from it,
``forward_intermediates`` the feature pyramid; ``reset_classifier``, ``set_grad_checkpointing``,
``prune_intermediate_layers`` and ``feature_info`` behave as timm's. ``FeaturePyramid`` is the
``features_only`` model that detection and segmentation code consumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hvtnas.errors import HvtnasError
from hvtnas.models.blocks import Stage
from hvtnas.models.layers import make_act, nchw_to_nhwc, nhwc_to_nchw


class ClassifierHead(nn.Module):
    """norm (before or after global average pooling) -> [MLP: fc -> act -> LN] -> dropout -> fc.

    ``pre_logits`` returns the pooled features (``num_features`` wide), as timm's heads do.
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
    ) -> None:
        super().__init__()
        self.norm_position = norm_position
        self.dim, self.mlp_ratio, self.act = dim, mlp_ratio, act
        self.norm = norm if norm is not None else nn.Identity()
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
                nn.Linear(dim, hidden), make_act(self.act), nn.LayerNorm(hidden, eps=1e-6)
            )
            self.fc = nn.Linear(hidden, num_classes)
        else:
            self.mlp, self.fc = None, nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:  # x: (B, H, W, C)
        if self.norm_position == "pre_pool":
            x = self.norm(x).mean(dim=(1, 2))
        else:
            x = self.norm(x.mean(dim=(1, 2)))
        if pre_logits:  # as timm's: pooled (normalised) features, before any MLP head
            return x
        if self.mlp is not None:
            x = self.mlp(x)
        return self.fc(self.dropout(x))


class MetaFormer(nn.Module):
    """A hierarchical MetaFormer backbone with a classification head, speaking timm 1.x's API.

    Attributes:
        feature_info: per pyramid level ``{"num_chs", "reduction", "module"}`` (timm's convention).
        num_features: channels of the last stage (the pooled feature size).
        num_classes: classes of the classifier (0: none, the head returns pooled features).

    Internally the maps are channels-last ``(B, H, W, C)``; what this API returns is NCHW
    (permuted views of channels-last memory; call ``.contiguous()`` if a consumer needs it).
    """

    def __init__(self, stem: nn.Module, stages: list[Stage], head: ClassifierHead, widths: list[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.num_features = self.head_hidden_size = widths[-1]
        self.num_classes = head.num_classes
        self.grad_checkpointing = False
        self.feature_info = [
            {"num_chs": w, "reduction": 4 * 2**i, "module": f"stages.{i}"} for i, w in enumerate(widths)
        ]

    # ------------------------------------------------------------------ timm's model API
    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's map ``(B, C, H/32, W/32)`` (what ``forward_head`` takes)."""
        return nhwc_to_nchw(self._forward_stages(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits (or, ``pre_logits``, the pooled features) from ``forward_features``' map."""
        return self.head(nchw_to_nhwc(x), pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self._forward_stages(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
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

        Returns:
            ``(final, intermediates)``: the final map as ``forward_features`` returns it and the
            list of maps; or the list alone with ``intermediates_only``.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise HvtnasError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, last = _take_indices(len(self.stages), indices)
        stages = self.stages[: last + 1] if stop_early or intermediates_only else self.stages
        intermediates = []
        x = self._stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                level = self.head.norm(x) if norm and self._norm_on_map(i) else x
                intermediates.append(nhwc_to_nchw(level) if output_fmt == "NCHW" else level)
        if intermediates_only:
            return intermediates
        return nhwc_to_nchw(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the classifier: ``prune_head``);
        returns the indices kept. The head's norm goes too with ``prune_norm``."""
        take, last = _take_indices(len(self.stages), indices)
        self.stages = self.stages[: last + 1]
        self.feature_info = self.feature_info[: last + 1]
        cfg = getattr(self, "arch_config", None)
        if cfg is not None:  # the config describes what is left
            self.arch_config = cfg.model_copy(update={"stages": cfg.stages[: last + 1]})
        if prune_norm:
            self.head.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` (0: ``forward`` returns pooled features).
        Global average pooling is the only pooling (``global_pool`` 'avg' or None)."""
        if global_pool not in (None, "avg", ""):
            raise HvtnasError(f"global_pool: only average pooling ('avg') is supported, got {global_pool!r}")
        self.head.reset(num_classes)
        for module in self.head.modules():  # the builder's initialisation (truncated normal)
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
    def _stem(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, H/4, W/4, C)
        # a channels_last image makes the stem's convolution write channels_last memory, so the
        # (B, H, W, C) maps of every stage are contiguous: from an NCHW image they would be
        # permuted views of NCHW memory, and every linear layer, pooling and norm after would
        # copy or take a slow strided path (PoolFormer's pooling: 15x slower)
        return self.stem(x.contiguous(memory_format=torch.channels_last))

    def _forward_stages(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, H/32, W/32, C)
        x = self._stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def _norm_on_map(self, i: int) -> bool:
        return i == len(self.stages) - 1 and self.head.norm_position == "pre_pool"


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
