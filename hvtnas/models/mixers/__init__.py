"""The token-mixer registry.

Adding a mixer: write a ``TokenMixer`` subclass (with a ``Params`` model if it has parameters) in
the file of its family, and add one ``MIXERS.register`` line below. The config validation, the
builder, the contract tests and the search space all read this registry.
"""

from __future__ import annotations

from hvtnas.models.mixers.attention import (
    CosineWindowAttention,
    DilatedWindowAttention,
    GlobalAttention,
    PooledReductionAttention,
    RelativeAttention,
    ShiftedCosineWindowAttention,
    ShiftedWindowAttention,
    SpatialReductionAttention,
    WindowAttention,
)
from hvtnas.models.mixers.base import MixerParams, TokenMixer
from hvtnas.models.mixers.conv import MBConv, SepConv
from hvtnas.models.mixers.conv_attention import (
    ConvProjectionAttention,
    ConvSelfAttention,
    EfficientMultiHeadAttention,
    FactorizedAttention,
    RecursiveAtrousAttention,
)
from hvtnas.models.mixers.cross_window import CrossShapedWindowAttention
from hvtnas.models.mixers.focal import FocalAttention
from hvtnas.models.mixers.halo import HaloAttention
from hvtnas.models.mixers.longformer import LongformerAttention
from hvtnas.models.mixers.mlp import AxialShift, RandomMixing, SpatialShift, TokenMLP
from hvtnas.models.mixers.pooling import Identity, Pooling
from hvtnas.models.mixers.pooling_attention import PoolingAttention
from hvtnas.models.mixers.regional import RegionalLocalAttention
from hvtnas.models.mixers.separable import SeparableWindowAttention
from hvtnas.models.mixers.shift import Shift
from hvtnas.models.mixers.shunted import ShuntedAttention
from hvtnas.registry import Registry

MIXERS: Registry[type[TokenMixer]] = Registry("token mixer")
MIXERS.register("attention", GlobalAttention)  # ViT / CAFormer global MHSA
MIXERS.register("relative_attention", RelativeAttention)  # CoAtNet stages 3-4
MIXERS.register("window", WindowAttention)  # Swin W-MSA, Twins-SVT locally-grouped
MIXERS.register("shifted_window", ShiftedWindowAttention)  # Swin SW-MSA
MIXERS.register("dilated_window", DilatedWindowAttention)  # CrossFormer LDA, Shuffle Transformer
MIXERS.register("cosine_window", CosineWindowAttention)  # Swin V2 W-MSA
MIXERS.register("shifted_cosine_window", ShiftedCosineWindowAttention)  # Swin V2 SW-MSA
MIXERS.register("spatial_reduction", SpatialReductionAttention)  # PVT / PVTv2 / Twins GSA
MIXERS.register("pooled_reduction", PooledReductionAttention)  # PVTv2-Li linear SRA
MIXERS.register("shunted", ShuntedAttention)  # Shunted self-attention: two K/V rates
MIXERS.register("pooling_attention", PoolingAttention)  # MViTv2 pooling attention
MIXERS.register("cross_window", CrossShapedWindowAttention)  # CSWin cross-shaped windows + LePE
MIXERS.register("conv_projection", ConvProjectionAttention)  # CvT convolutional projections
MIXERS.register("emsa", EfficientMultiHeadAttention)  # ResT efficient MHSA
MIXERS.register("factorized", FactorizedAttention)  # CoaT conv-attention: factorized + conv rel. pos.
MIXERS.register("conv_self_attention", ConvSelfAttention)  # LVT CSA: attention inside a convolution
MIXERS.register("recursive_atrous", RecursiveAtrousAttention)  # LVT RASA
MIXERS.register("focal", FocalAttention)  # Focal Transformer: fine ring + pooled windows
MIXERS.register("halo", HaloAttention)  # HaloNet blocked local attention with a halo
MIXERS.register("longformer", LongformerAttention)  # Vision Longformer: sliding chunks + global tokens
MIXERS.register("separable_window", SeparableWindowAttention)  # SepViT DSSA: window tokens, PSA
MIXERS.register("regional_local", RegionalLocalAttention)  # RegionViT R2L: regional tokens + windows
MIXERS.register("token_mlp", TokenMLP)  # MLP-Mixer token mixing (windowed)
MIXERS.register("random_mixing", RandomMixing)  # RandFormer frozen random mixing (windowed)
MIXERS.register("axial_shift", AxialShift)  # AS-MLP
MIXERS.register("spatial_shift", SpatialShift)  # S2-MLP
MIXERS.register("pooling", Pooling)  # PoolFormer
MIXERS.register("shift", Shift)  # ShiftViT
MIXERS.register("sepconv", SepConv)  # ConvFormer
MIXERS.register("mbconv", MBConv)  # CoAtNet stages 1-2
MIXERS.register("identity", Identity)  # IdentityFormer

__all__ = ["MIXERS", "MixerParams", "TokenMixer"]
