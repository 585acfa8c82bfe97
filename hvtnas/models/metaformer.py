"""The skeleton every hierarchical ViT of the design space shares.

stem (stride 4) -> stages (strides 4, 8, 16, 32) -> classifier head. ``forward_features``
returns the feature pyramid for dense prediction; ``forward`` the class logits.
"""

from __future__ import annotations

from torch import Tensor, nn

from hvtnas.models.blocks import Stage
from hvtnas.models.layers import make_act, nhwc_to_nchw


class ClassifierHead(nn.Module):
    """norm (before or after global average pooling) -> [MLP: fc -> act -> LN -> dropout] -> fc."""

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
        self.norm = norm if norm is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        if num_classes == 0:
            self.mlp, self.fc = None, nn.Identity()
        elif mlp_ratio is not None:
            hidden = int(mlp_ratio * dim)
            # MetaFormer baselines' MlpHead: the LayerNorm is part of the head (eps 1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), make_act(act), nn.LayerNorm(hidden, eps=1e-6))
            self.fc = nn.Linear(hidden, num_classes)
        else:
            self.mlp, self.fc = None, nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:  # x: (B, H, W, C)
        if self.norm_position == "pre_pool":
            x = self.norm(x).mean(dim=(1, 2))
        else:
            x = self.norm(x.mean(dim=(1, 2)))
        if self.mlp is not None:
            x = self.mlp(x)
        if pre_logits:
            return x
        return self.fc(self.dropout(x))


class MetaFormer(nn.Module):
    """A hierarchical MetaFormer backbone with a classification head.

    Attributes:
        feature_info: per pyramid level ``{"channels", "reduction"}`` (timm's convention).
        num_features: channels of the last stage (the pooled feature size).
    """

    def __init__(self, stem: nn.Module, stages: list[Stage], head: ClassifierHead, widths: list[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.num_features = widths[-1]
        self.feature_info = [{"channels": w, "reduction": 4 * 2**i} for i, w in enumerate(widths)]

    def forward_pyramid(self, x: Tensor) -> list[Tensor]:
        """Channels-last stage outputs ``[(B, H/4, W/4, C1), ..., (B, H/32, W/32, C4)]``."""
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The feature pyramid for detection / segmentation: NCHW tensors at strides 4..32
        (permuted views of channels-last memory; call ``.contiguous()`` if a consumer needs it)."""
        return [nhwc_to_nchw(level) for level in self.forward_pyramid(x)]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)
