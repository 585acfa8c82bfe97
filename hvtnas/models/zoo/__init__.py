"""The zoo: published backbones as architecture configs (YAML files beside this module).

Each file reproduces the official implementation's parameter count exactly (see tests/test_zoo.py
and ``PUBLISHED`` below for the figures the papers report).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError


@dataclass(frozen=True)
class Published:
    """Figures as the paper / official repository reports them (ImageNet-1k, 224x224 unless the
    zoo file says otherwise); None where none is published."""

    params_m: float
    gmacs: float | None
    top1: float | None
    source: str
    # False where the paper's FLOPs leave out the attention products (Q K^T, A V): Twins
    # (mmpretrain's recount of the same models gives 3.67 / 2.82 G, the same convention)
    gmacs_count_attention: bool = True
    # why hvtnas's FLOP count differs from the paper's by more than 3%, where it does
    gmacs_deviation: str | None = None


# ../shared/reference/published.md, from the official repositories' READMEs
PUBLISHED: dict[str, Published] = {
    "swin_t": Published(28, 4.5, 81.2, "microsoft/Swin-Transformer"),
    "swin_s": Published(50, 8.7, 83.2, "microsoft/Swin-Transformer"),
    "pvt_v2_b0": Published(3.7, 0.6, 70.5, "whai362/PVT"),
    "pvt_v2_b1": Published(14.0, 2.1, 78.7, "whai362/PVT"),
    "pvt_v2_b2": Published(25.4, 4.0, 82.0, "whai362/PVT"),
    "poolformer_s12": Published(12, 1.8, 77.2, "sail-sg/poolformer"),
    "poolformer_s24": Published(21, 3.4, 80.3, "sail-sg/poolformer"),
    "convformer_s18": Published(27, 3.9, 83.0, "sail-sg/metaformer"),
    "caformer_s18": Published(26, 4.1, 83.6, "sail-sg/metaformer"),
    "identityformer_s12": Published(11.9, 1.8, 74.6, "sail-sg/metaformer"),
    "twins_svt_s": Published(24, 2.8, 81.7, "Meituan-AutoML/Twins", gmacs_count_attention=False),
    "twins_pcpvt_s": Published(24.1, 3.7, 81.2, "Meituan-AutoML/Twins", gmacs_count_attention=False),
    "shiftvit_t": Published(29, 4.5, 81.7, "microsoft/SPACH"),
    "swinv2_t": Published(28, 5.9, 81.8, "microsoft/Swin-Transformer (256x256, window 8)"),
    "cswin_t": Published(23, 4.3, 82.8, "microsoft/CSWin-Transformer"),
    "crossformer_t": Published(27.8, 2.9, 81.5, "cheerss/CrossFormer"),
    "cvt_13": Published(20, 4.5, 81.6, "microsoft/CvT"),
    "mvitv2_t": Published(24, 4.7, 82.3, "facebookresearch/mvit"),
    "focal_t": Published(28.9, 4.9, 82.2, "microsoft/Focal-Transformer"),
    "coatnet_0": Published(
        25,
        4.2,
        81.6,
        "paper, arXiv 2106.04803 (no official code)",
        gmacs_deviation="approximate architecture: downsampling before each stage instead of inside its "
        "first MBConv block runs stage 1-2 convolutions at twice the resolution (4.51 G)",
    ),
    "rest_lite": Published(
        11,
        1.4,
        77.2,
        "wofmanaf/ResT",
        gmacs_deviation="hvtnas counts 1.54 G (all convolutions, EMSA's head-mixing 1x1 conv and the "
        "attention products); which of them the paper's 1.4 G leaves out is not established",
    ),
    "shunted_t": Published(11.5, None, 79.8, "OliverRensu/Shunted-Transformer"),
    "pvt_tiny": Published(13.2, 1.9, 75.1, "whai362/PVT"),
    "deit_s": Published(22, 4.6, 79.8, "facebookresearch/deit (DeiT-S, paper Table 1)"),
    # the paper reports no FLOPs (it compares throughput); hvtnas counts 12.62 GMACs
    "mixer_b16": Published(
        59, None, 76.4, "arXiv 2105.01601 Table 2, ImageNet-1k only (google-research/vision_transformer)"
    ),
    "s2mlp_wide": Published(71, 14.0, 80.0, "paper, arXiv 2106.07477 (no official code)"),
    # params and top-1: mlpc-ucsd/CoaT README.md; GFLOPs: the paper (arXiv 2104.06399), Table 2
    "coat_lite_s": Published(20, 4.0, 81.9, "mlpc-ucsd/CoaT; GFLOPs: paper, arXiv 2104.06399"),
    "coat_s": Published(22, 12.6, 82.1, "mlpc-ucsd/CoaT; GFLOPs: paper, arXiv 2104.06399"),
    # huawei-noah/Efficient-AI-Backbones tnt_pytorch/readme.md (23.8M, 5.2 G, 81.5)
    "tnt_s": Published(23.8, 5.2, 81.5, "huawei-noah/Efficient-AI-Backbones (tnt_pytorch)"),
    # coeusguo/ceit README (the authors' code; 24.2M, 82.0) and the paper, arXiv 2103.11816 (4.5 G)
    "ceit_s": Published(
        24.2,
        4.5,
        82.0,
        "coeusguo/ceit (the CeiT authors' code)",
        gmacs_deviation="fvcore counts the official code at 4.79 G, as hvtnas does; without the "
        "attention products (Q K^T, A V) it is 4.43 G, so the paper's 4.5 G likely leaves them out",
    ),
    # MViT v1 B-16 for images: facebookresearch/SlowFast configs/ImageNet/MVIT_B_16_CONV.yaml;
    # 37M, 7.8 G from the paper (arXiv 2104.11227), 82.9 from SlowFast's MODEL_ZOO.md
    "mvit_b": Published(37.0, 7.8, 82.9, "facebookresearch/SlowFast (MVIT_B_16_CONV)"),
    "asmlp_t": Published(28, 4.4, 81.3, "svip-lab/AS-MLP"),
    "shuffle_t": Published(28, 4.6, 82.4, "mulinmeng/Shuffle-Transformer"),
    # the README's 3.4M are the backbone's parameters (3,429,092); its 74.8% are lvt_cls's, the
    # backbone with two class-attention blocks and a token-labelling head (see the zoo file)
    "lvt": Published(3.4, 0.9, 74.8, "Chenglin-Yang/LVT"),
    "sepvit_t": Published(31.2, 4.5, 82.7, "liwei109/SepViT"),
    # no official code; 8.1M is timm's count of its halonet_h1 (the paper's table was not at hand
    # to check it against), and the paper gives no FLOPs (hvtnas counts 3.00 GMACs at 256)
    "halonet_h1": Published(8.1, None, None, "timm byoanet.py halonet_h1, timm's reading of the paper's H1"),
    # README "Main Results": ViL-Small with absolute position embedding; hvtnas counts 5.16 GMACs
    "vil_s": Published(24.6, 5.12, 82.0, "microsoft/vision-longformer (ViL-Small, README)"),
    # the paper's ImageNet results (arXiv 2108.05895, CVPR 2022): Mobile-Former-294M 11.4M, 294M MACs,
    # 77.9%; AAboys/MobileFormer's README gives the same figures
    "mobile_former_294m": Published(11.4, 0.294, 77.9, "paper, arXiv 2108.05895 (no official code known)"),
    # README (= paper Table 2): RegionViT-S; hvtnas counts 5.36 GMACs (fvcore on the official code 5.355)
    "regionvit_s": Published(30.6, 5.3, 82.6, "IBM/RegionViT (RegionViT-S, README)"),
    # the SegFormer paper and README give no ImageNet figures for the encoder alone
    "mit_b0": Published(3.3, None, None, "NVlabs/SegFormer (encoder, counted on mix_transformer.py)"),
    # IBM/CrossViT README and the paper (arXiv 2103.14899, Table 2): CrossViT-S at 240x240; fvcore
    # counts timm's port at 5.630 G (it normalises every token before reading the class tokens)
    "crossvit_s": Published(26.7, 5.6, 81.0, "IBM/CrossViT (CrossViT-S, 240x240; paper Table 2)"),
}


def _files() -> dict[str, resources.abc.Traversable]:
    root = resources.files(__name__)
    return {f.name.removesuffix(".yaml"): f for f in root.iterdir() if f.name.endswith(".yaml")}


def names() -> list[str]:
    return sorted(_files())


@cache
def _load(name: str) -> ArchConfig:
    files = _files()
    if name not in files:
        raise HvtnasError(f"unknown zoo model {name!r}; known: {', '.join(sorted(files))}")
    return ArchConfig.from_yaml_text(files[name].read_text(), source=f"zoo/{name}.yaml")


def get_config(name: str) -> ArchConfig:
    """The zoo config ``name`` (a fresh copy: callers may modify it)."""
    return _load(name).model_copy(deep=True)
