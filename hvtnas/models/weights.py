"""Weights in and out: load a timm, official or hvtnas checkpoint file into a generated model.

A checkpoint file is read as safetensors or as a weights-only torch file
(``torch.load(weights_only=True)``: no code in the file runs). Its state dict is renamed from the
layout it is in to hvtnas's: every layout below is tried and the one whose keys and shapes fit the
model is taken, so the caller does not say where a file came from.

| layout | what | zoo models |
|---|---|---|
| ``hvtnas`` | hvtnas's own (``save_weights``, ``hvtnas export --weights``) | any |
| ``timm`` | timm 1.x's MetaFormer and PVT v2 | pvt_v2_*, poolformer_s12, convformer_s18, caformer_s18 |
| ``timm-swin`` / ``timm-swinv2`` | timm 1.x's Swin / Swin V2 | swin_t, swin_s / swinv2_t |
| ``timm-twins`` | timm's Twins | twins_svt_s, twins_pcpvt_s |
| ``timm-mvit`` | timm's MViTv2 | mvitv2_t |
| ``timm-vit`` | timm's VisionTransformer (DeiT) and MlpMixer | deit_s, mixer_b16 |
| ``timm-coat`` | timm's CoaT and CoaT-Lite (mlpc-ucsd/CoaT's names) | coat_lite_s, coat_s |
| ``timm-tnt`` | timm's TNT (huawei-noah/Efficient-AI-Backbones, renamed by timm) | tnt_s |
| ``official-ceit`` | coeusguo/ceit (the CeiT authors' code) | ceit_s |
| ``official-mvit`` | facebookresearch/SlowFast MViT v1 (2-D patches, image models) | mvit_b |
| ``timm-byoanet`` | timm's ByoaNet (HaloNet) | halonet_h1 |
| ``timm-crossvit`` | timm's CrossViT (IBM/CrossViT's names) | crossvit_s |
| ``official-swin(v2)`` | microsoft/Swin-Transformer (V1, V2) | swin_t, swin_s (swinv2_t) |
| ``official-pvt_v2`` | whai362/PVT | pvt_v2_* |
| ``official-pvt`` | whai362/PVT (v1) | pvt_tiny |
| ``official-cvt`` | microsoft/CvT | cvt_13 |
| ``official-vil`` | microsoft/vision-longformer (MsViT) | vil_s |
| ``official-regionvit`` | IBM/RegionViT | regionvit_s |
| ``official-poolformer`` | sail-sg/poolformer | poolformer_s12 |
| ``official-metaformer`` | sail-sg/metaformer | convformer_s18, caformer_s18 |
| ``aaboys-mobile_former`` | AAboys/MobileFormer (authorship unconfirmed) | mobile_former_294m |

Computed buffers (relative position indices, attention masks) are dropped; a 1x1 convolution's
weight becomes a linear's (hvtnas's channels-last layers) by a reshape. A layout that is more than
a renaming (separate query-key and value projections joined into one, a class token's entry split
off a sequence's position embedding) has a ``PREPARE`` entry that reshapes the file's tensors
first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from hvtnas.errors import HvtnasError

# the timm model whose weights each zoo model takes (the equivalence tests compare the two)
TIMM_NAMES = {
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "pvt_v2_b0": "pvt_v2_b0",
    "pvt_v2_b2": "pvt_v2_b2",
    "poolformer_s12": "poolformer_s12",
    "convformer_s18": "convformer_s18",
    "caformer_s18": "caformer_s18",
    "twins_svt_s": "twins_svt_small",
    "twins_pcpvt_s": "twins_pcpvt_small",
    "swinv2_t": "swinv2_tiny_window8_256",
    "mvitv2_t": "mvitv2_tiny",
    "deit_s": "deit_small_patch16_224",
    "mixer_b16": "mixer_b16_224",
    "coat_lite_s": "coat_lite_small",
    "coat_s": "coat_small",
    "tnt_s": "tnt_s_patch16_224",
    "halonet_h1": "halonet_h1",
    "crossvit_s": "crossvit_small_240",
}

# computed from the geometry, not learned: never loaded
_COMPUTED = ("relative_position_index", "relative_coords_table", "attn_mask")
# wrappers training scripts put around a state dict
_WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model", "module")
_CLASSIFIER = ("head.fc.", "head.mlp.")
# a branched model's (CrossViT's) classifier of each branch
_BRANCH_CLASSIFIER = re.compile(r"head\.heads\.\d+\.(fc|mlp)\.")


class WeightsError(HvtnasError):
    """A checkpoint file that cannot be read, or whose tensors do not fit the model."""


# ----------------------------------------------------------------------------- key layouts
def _timm_key(key: str) -> str:
    """timm 1.x's MetaFormer (PoolFormer, ConvFormer, CAFormer) and PVT v2."""
    key = re.sub(r"^patch_embed\.", "stem.", key)
    key = key.replace("stem.conv.", "stem.proj.")
    key = key.replace(".token_mixer.", ".mixer.").replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    key = key.replace(".mixer.act1.", ".mixer.act.")
    key = re.sub(r"^(stages\.\d+)\.norm\.", r"\1.out_norm.", key)
    key = key.replace(".downsample.proj.", ".downsample.conv.")
    key = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)
    key = key.replace("head.fc.fc1.", "head.mlp.0.").replace("head.fc.norm.", "head.mlp.2.")
    return key.replace("head.fc.fc2.", "head.fc.")


def _swin_key(key: str) -> str:
    key = key.replace("patch_embed.", "stem.")
    key = re.sub(r"^layers\.", "stages.", key)
    key = key.replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    return re.sub(r"^norm\.", "head.norm.", key)


def _swinv2_key(key: str) -> str:
    return _swin_key(key).replace("downsample.norm.", "downsample.post_norm.")  # V2 normalises after


def _mvit_key(key: str) -> str:
    """timm's MViTv2: the first block of stages 2-4 is hvtnas's attention downsampling."""
    key = key.replace("patch_embed.", "stem.")
    if m := re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key):
        i, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        rest = re.sub(r"attn\.(pool_[qkv])\.weight", r"attn.\1.conv.weight", rest)
        rest = re.sub(r"attn\.norm_([qkv])\.", r"attn.pool_\1.norm.", rest)
        rest = rest.replace("mlp.", "ffn.").replace("shortcut_proj_attn", "shortcut_proj")
        if i > 0 and j == 0:
            return f"stages.{i}.downsample.{rest.replace('attn.', 'attention.')}"
        return f"stages.{i}.blocks.{j - (i > 0)}.{rest.replace('attn.', 'mixer.')}"
    return re.sub(r"^norm\.", "head.norm.", key)


def _byoanet_key(key: str) -> str:
    """timm's ByobNet / ByoaNet (HaloNet): ResNet stem and bottleneck blocks."""
    key = key.replace("stem.conv1.conv.", "stem.conv.").replace("stem.conv1.bn.", "stem.norm.")
    if m := re.match(r"stages\.(\d+)\.(\d+)\.(.*)", key):
        i, j, rest = m.groups()
        for old, new in (
            ("shortcut.conv.", "shortcut.0."),
            ("shortcut.bn.", "shortcut.1."),
            ("conv1_1x1.conv.", "conv1."),
            ("conv1_1x1.bn.", "norm1."),
            ("self_attn.pos_embed.", "mixer."),
            ("self_attn.", "mixer."),
            ("post_attn.", "norm2."),
            ("conv3_1x1.conv.", "conv3."),
            ("conv3_1x1.bn.", "norm3."),
        ):
            rest = rest.replace(old, new)
        return f"stages.{i}.blocks.{j}.{rest}"
    return key


def _twins_key(key: str) -> str:
    if m := re.match(r"patch_embeds\.(\d)\.(proj|norm)\.(.*)", key):
        i, part, rest = m.groups()
        if i == "0":
            return f"stem.{part}.{rest}"
        return f"stages.{i}.downsample.{'conv' if part == 'proj' else 'post_norm'}.{rest}"
    if m := re.match(r"blocks\.(\d)\.(\d+)\.(.*)", key):
        i, j, rest = m.groups()
        return f"stages.{i}.blocks.{j}.{rest.replace('attn.', 'mixer.').replace('mlp.', 'ffn.')}"
    if m := re.match(r"pos_block\.(\d)\.proj\.0\.(.*)", key):
        return f"stages.{m.group(1)}.peg.proj.{m.group(2)}"
    if key.startswith("norm."):
        return "head." + key
    return key.replace("head.", "head.fc.")


def _coat_key(key: str) -> str:
    """timm's CoaT / CoaT-Lite (the same names as mlpc-ucsd/CoaT, less its unused norms): per scale
    i (1-4) a patch embedding, a class token, a convolutional position encoding and serial blocks,
    then CoaT's parallel blocks over scales 2-4. The shared encodings are stored under every module
    that uses them; each name maps to one of hvtnas's (the stage's PEG, each block's mixer)."""
    key = key.replace("crpe.conv_list.", "crpe.convs.")
    if m := re.match(r"(patch_embed|cls_token|cpe|crpe)(\d)(.*)", key):
        part, i, rest = m.group(1), int(m.group(2)) - 1, m.group(3)
        if part == "patch_embed":
            return f"stem{rest}" if i == 0 else f"stages.{i}.downsample{rest.replace('.proj.', '.conv.')}"
        if part == "cls_token":
            return f"stages.{i}.tokens.tokens"
        if part == "cpe":
            return f"stages.{i}.peg{rest}"
        return f"stages.{i}.blocks.0.mixer.crpe{rest.replace('conv_list', 'convs')}"  # also in each block
    if m := re.match(r"serial_blocks(\d)\.(\d+)\.(.*)", key):
        i, j, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
        if rest.startswith("cpe."):
            return f"stages.{i}.peg.{rest.removeprefix('cpe.')}"
        rest = rest.replace("factoratt_crpe.", "mixer.").replace("mlp.", "ffn.")
        return f"stages.{i}.blocks.{j}.{rest}"
    if m := re.match(r"parallel_blocks\.(\d+)\.(norm1|norm2|factoratt_crpe|mlp)(\d)\.(.*)", key):
        p, part, scale, rest = m.group(1), m.group(2), int(m.group(3)) - 2, m.group(4)
        part = {"norm1": "norms1", "norm2": "norms2", "factoratt_crpe": "mixers", "mlp": "ffns"}[part]
        return f"co_scale.blocks.{p}.{part}.{scale}.{rest}"
    if m := re.match(r"norm(\d)\.(.*)", key):  # the classifier's norm of each scale it reads
        i, rest = int(m.group(1)), m.group(2)
        return f"head.norm.{rest}" if i == 4 else f"head.scale_norms.{i - 2}.{rest}"
    key = re.sub(r"^aggregate\.", "head.aggregate.", key)  # CoaT's weighting of the scales
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _vit_key(key: str) -> str:
    """timm's VisionTransformer (DeiT) and MlpMixer: one stage of blocks behind the patch stem; the
    class token and its position entry are the stage's token stream (see ``_split_pos_embeds``)."""
    key = key.replace("patch_embed.", "stem.").replace("cls_token", "stages.0.tokens.tokens")
    key = key.replace("pos_embed.prefix", "stages.0.tokens.pos_embed")
    key = key.replace("pos_embed.grid", "stages.0.pos_embed.pos_embed")
    key = re.sub(r"^blocks\.", "stages.0.blocks.", key)
    key = key.replace(".attn.", ".mixer.").replace(".mlp_tokens.", ".mixer.")
    key = key.replace(".mlp_channels.", ".ffn.").replace(".mlp.", ".ffn.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


# a sequence model's class token and its position embedding split by ``_split_pos_embeds``, in
# hvtnas's names when the tokens start in the first stage (ViT-like layouts: CeiT, TNT, MViT v1)
_ONE_STAGE_TOKEN_KEYS = {
    "cls_token": "stages.0.tokens.tokens",
    "pos_embed.prefix": "stages.0.tokens.pos_embed",
    "pos_embed.grid": "stages.0.pos_embed.pos_embed",
}


def _split_pos_embeds(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A sequence model's position embedding ``(1, T + H*W, C)`` (``pos_embed``, PVT's
    ``pos_embed<i>``) is, in hvtnas, the class token's own entries ``(1, T, C)`` (key + ``.prefix``)
    and the map's ``(1, H, W, C)`` (key + ``.grid``): the map is the largest square it holds (the
    models' own sizes are square), the T entries before it the tokens'."""
    out = dict(state)
    for key in [k for k in state if re.fullmatch(r"pos_embed\d?", k)]:
        pos = out.pop(key)
        side = math.isqrt(pos.shape[1])
        prefix = pos.shape[1] - side * side
        if prefix:
            out[f"{key}.prefix"] = pos[:, :prefix]
        out[f"{key}.grid"] = rearrange(pos[:, prefix:], "one (h w) c -> one h w c", h=side)
    return out


def _official_pvt_key(key: str) -> str:
    """whai362/PVT's PVT v1: ``patch_embed<i>``, ``pos_embed<i>`` and ``block<i>`` per stage; the
    class token joins the last stage, whose position embedding holds its entry."""
    key = key.replace("patch_embed1.", "stem.")
    key = re.sub(r"^patch_embed(\d)\.proj\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.conv.", key)
    key = re.sub(r"^patch_embed(\d)\.norm\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.norm.", key)
    key = re.sub(r"^pos_embed(\d)\.grid$", lambda m: f"stages.{int(m.group(1)) - 1}.pos_embed.pos_embed", key)
    key = re.sub(r"^pos_embed(\d)\.prefix$", lambda m: f"stages.{int(m.group(1)) - 1}.tokens.pos_embed", key)
    key = key.replace("cls_token", "stages.3.tokens.tokens")  # PVT v1 adds it in its 4th stage
    key = re.sub(r"^block(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.", key)
    key = key.replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _official_cvt_key(key: str) -> str:
    """microsoft/CvT: ``stage<i>`` holds its convolutional embedding (the stem in stage 0), blocks
    and class token; the q/k/v projections are a depthwise conv + BatchNorm, then a Linear."""
    key = re.sub(r"^stage0\.patch_embed\.", "stem.", key)
    key = re.sub(r"^stage(\d)\.patch_embed\.proj\.", r"stages.\1.downsample.conv.", key)
    key = re.sub(r"^stage(\d)\.patch_embed\.norm\.", r"stages.\1.downsample.norm.", key)
    key = re.sub(r"^stage(\d)\.cls_token$", r"stages.\1.tokens.tokens", key)
    key = re.sub(r"^stage(\d)\.blocks\.", r"stages.\1.blocks.", key)
    key = re.sub(r"\.attn\.conv_proj_([qkv])\.conv\.", r".mixer.conv_\1.0.", key)
    key = re.sub(r"\.attn\.conv_proj_([qkv])\.bn\.", r".mixer.conv_\1.1.", key)
    key = key.replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _official_vil_key(key: str) -> str:
    """microsoft/vision-longformer's MsViT: ``layer<i>`` is stage i's patch embedding (``.0``: the
    stem in stage 1; its global tokens and axial position embedding) followed by each block's
    attention (odd indices) and MLP (even indices) sub-blocks."""
    key = re.sub(
        r"^layer1\.0\.(proj|norm_embed)\.", lambda m: f"stem.{'proj' if m[1] == 'proj' else 'norm'}.", key
    )
    key = re.sub(r"^layer(\d)\.0\.proj\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.conv.", key)
    key = re.sub(
        r"^layer(\d)\.0\.norm_embed\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.post_norm.", key
    )
    names = {"cls_token": "tokens.tokens", "cls_pos_embed": "tokens.pos_embed"}
    names |= {"x_pos_embed": "pos_embed.row_embed", "y_pos_embed": "pos_embed.col_embed"}
    key = re.sub(r"^layer(\d)\.0\.(\w+)$", lambda m: f"stages.{int(m[1]) - 1}.{names.get(m[2], m[2])}", key)

    def block(m: re.Match) -> str:  # sub-block 2j + 1 is block j's attention, 2j + 2 its MLP
        j, is_mlp = divmod(int(m[2]) - 1, 2)
        return f"stages.{int(m[1]) - 1}.blocks.{j}.{'norm2' if is_mlp else 'norm1'}."

    key = re.sub(r"^layer(\d)\.(\d+)\.norm\.", block, key)
    key = re.sub(
        r"^layer(\d)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{(int(m[2]) - 1) // 2}.", key
    )
    key = key.replace(".attn.query.", ".mixer.q.").replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _official_vil_prepare(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drops what ViL's state dict holds twice or empty: the global tokens' projections
    (``query_global``, ``kv_global``, ``proj_global``), which are the map's own modules under
    ``SHARE_W`` (a file with separate ones keeps them and is refused, naming them), and the
    position entries of a stage without global tokens (no elements)."""
    out = {}
    for key, value in state.items():
        shared = re.sub(r"\.(query|kv|proj)_global\.", r".\1.", key)
        if value.numel() and not (shared != key and torch.equal(state.get(shared, value + 1), value)):
            out[key] = value
    return out


def _official_regionvit_key(key: str) -> str:
    """IBM/RegionViT: ``patch_embed`` the 3-conv stem (a Sequential: convs 0, 3, 6, norms 1, 4),
    ``cls_token`` the regional tokens' patch embedding, ``layers.<i>.block.0`` stage i's projection
    (an identity in stage 0) and ``block.<j + 1>`` its block j (``norm0``: the regional tokens' own)."""
    key = re.sub(
        r"^patch_embed\.proj\.(\d)\.",
        lambda m: f"stem.{'norms' if int(m[1]) % 3 else 'convs'}.{int(m[1]) // 3}.",
        key,
    )
    key = key.replace("cls_token.proj.", "stages.0.tokens.proj.")
    key = re.sub(
        r"^layers\.(\d)\.block\.0\.proj\.(\d)\.",
        lambda m: f"stages.{m[1]}.downsample.{'conv' if m[2] == '2' else 'pre_norm'}.",
        key,
    )
    key = re.sub(r"^layers\.(\d)\.block\.(\d+)\.", lambda m: f"stages.{m[1]}.blocks.{int(m[2]) - 1}.", key)
    key = key.replace(".norm0.", ".norm_tokens.").replace(
        ".attn.rel_pos", ".mixer.relative_position_bias_table"
    )
    key = key.replace(".attn.", ".mixer.").replace(".mlp.", ".ffn.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _official_regionvit_prepare(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """IBM/RegionViT's tensors in hvtnas's shapes: its LayerNorm2d's ``(1, C, 1, 1)`` parameters as
    ``(C,)``; the regional tokens' projection (``proj_cls``), saved a second time for being the local
    map's own module, dropped (a file where the two differ keeps it and is refused, naming it); the
    relative position table ``(heads, (2w-1)^2)`` as hvtnas's ``((2w-1)^2, heads)``. The official
    table is read at offset ``(key - query + w // 2) mod (2w - 1)`` per axis (its index wraps
    around), hvtnas's at ``query - key + w - 1``: the rows are permuted to match."""
    out = {}
    for key, value in state.items():
        if ".proj_cls." in key and torch.equal(
            state.get(key.replace(".proj_cls.", ".proj."), value + 1), value
        ):
            continue
        if value.dim() == 4 and value.shape[0] == 1 and value.shape[2:] == (1, 1):  # LayerNorm2d
            value = value.flatten()
        if key.endswith(".attn.rel_pos"):
            side = math.isqrt(value.shape[1])
            half = (side + 1) // 2 // 2  # the official offset, w // 2
            offsets = torch.arange(side) - (side - 1) // 2  # query - key, hvtnas's row order
            rows = (half - offsets) % side  # the official row of each
            index = (rows[:, None] * side + rows[None, :]).flatten()
            value = value[:, index].T.contiguous()  # ((2w-1)^2, heads)
        out[key] = value
    return out


def _official_swin_to_timm(key: str) -> str:
    """microsoft/Swin-Transformer: the patch merging closes stage i there, opens stage i+1 in timm."""
    key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
    return re.sub(r"^head\.", "head.fc.", key)


def _official_pvt_v2_to_timm(key: str) -> str:
    """whai362/PVT (timm's ``checkpoint_filter_fn`` of pvt_v2)."""
    key = key.replace("patch_embed1", "patch_embed")
    for i in (2, 3, 4):
        key = key.replace(f"patch_embed{i}", f"stages.{i - 1}.downsample")
    key = key.replace("dwconv.dwconv", "dwconv")
    key = re.sub(r"block(\d+)\.(\d+)", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}", key)
    return re.sub(r"^norm(\d+)", lambda m: f"stages.{int(m.group(1)) - 1}.norm", key)


def _official_metaformer_to_timm(key: str, poolformer_v1: bool) -> str:
    """sail-sg/poolformer and sail-sg/metaformer (timm's ``checkpoint_filter_fn`` of metaformer)."""
    if poolformer_v1:
        key = re.sub(r"layer_scale_([0-9]+)", r"layer_scale\1.scale", key)
        for old, new in (("network.1", "downsample_layers.1"), ("network.3", "downsample_layers.2")):
            key = key.replace(old, new)
        key = key.replace("network.5", "downsample_layers.3")
        key = key.replace("network.2", "network.1").replace("network.4", "network.2")
        key = key.replace("network.6", "network.3").replace("network", "stages")
    key = re.sub(r"downsample_layers\.([0-9]+)", r"stages.\1.downsample", key)
    key = key.replace("downsample.proj", "downsample.conv").replace("patch_embed.proj", "patch_embed.conv")
    key = re.sub(r"([0-9]+)\.([0-9]+)", r"\1.blocks.\2", key)
    key = key.replace("stages.0.downsample", "patch_embed").replace("patch_embed", "stem")
    key = key.replace("post_norm", "norm").replace("pre_norm", "norm")
    key = re.sub(r"^head\.", "head.fc.", key)
    return re.sub(r"^norm\.", "head.norm.", key)


def _tnt_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's TNT: query-key and value projections joined into one ``qkv`` (rows q, k, v, as
    hvtnas's attention reads them); the class token's entry split off the position embedding
    (``_split_pos_embeds``)."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".qk.weight")]:
        stem = key.removesuffix(".qk.weight")
        if f"{stem}.v.weight" in out:
            out[f"{stem}.qkv.weight"] = torch.cat([out.pop(key), out.pop(f"{stem}.v.weight")])
    if "patch_pos" in out:  # TNT's name for a ViT's position embedding
        out["pos_embed"] = out.pop("patch_pos")
    return _split_pos_embeds(out)


def _mvit_v1_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """facebookresearch/SlowFast's MViT v1 (one flat list of blocks) in hvtnas's stages.

    The stages are read off the file: a block whose attention pools its queries (``pool_q``) opens a
    stage and is its downsampling (``AttentionDownsample``); the block before it ends the previous
    stage with its attention, while its widening MLP (``mlp``, ``proj``, ``norm2``) opens the
    transition (``downsample.widen``). Position embedding: split as a ViT's (``_split_pos_embeds``)."""
    if "cls_token" not in state or not any(k.startswith("blocks.") for k in state):
        return state
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    opens = [b for b in blocks if f"blocks.{b}.attn.pool_q.weight" in state]
    starts = [0, *opens]

    def place(k: int) -> tuple[int, int]:  # (stage, index of the block in it)
        stage = sum(1 for s in starts[1:] if s <= k)
        return stage, k - starts[stage]

    out: dict[str, Tensor] = {}
    for key, value in _split_pos_embeds(state).items():
        new = _ONE_STAGE_TOKEN_KEYS.get(key, key)
        if m := re.match(r"blocks\.(\d+)\.(\w+)\.(.*)", key):
            k, part, rest = int(m.group(1)), m.group(2), m.group(3)
            stage, j = place(k)
            if part == "attn":  # pool_q / norm_q -> pool_q.conv / pool_q.norm
                rest = re.sub(r"^pool_([qkv])\.", r"pool_\1.conv.", rest)
                rest = re.sub(r"^norm_([qkv])\.", r"pool_\1.norm.", rest)
            if stage > 0 and j == 0:  # the transition block
                part = {"attn": "attention", "mlp": "ffn"}.get(part, part)
                new = f"stages.{stage}.downsample.{part}.{rest}"
            elif k + 1 in opens and part in ("norm2", "mlp", "proj"):  # its widening MLP
                widen = {"norm2": "norm", "mlp": "mlp", "proj": "proj"}[part]
                new = f"stages.{stage + 1}.downsample.widen.{widen}.{rest}"
            else:
                part = {"attn": "mixer", "mlp": "ffn"}.get(part, part)
                new = f"stages.{stage}.blocks.{j - (stage > 0)}.{part}.{rest}"
        new = new.replace("patch_embed.proj.", "stem.proj.").replace("head.projection.", "head.fc.")
        out[re.sub(r"^norm\.", "head.norm.", new)] = value
    return out


def _ceit_key(key: str) -> str:
    """coeusguo/ceit: I2T stem, one stage of LeFF blocks, the layer-wise class-token attention (lca)."""
    fixed = {**_ONE_STAGE_TOKEN_KEYS, "pos_layer_embed": "head.layer_attention.pos_embed"}
    if key in fixed:
        return fixed[key]
    key = key.replace("i2t.backbone.conv.", "stem.conv.").replace("i2t.backbone.bn.", "stem.norm.")
    key = key.replace("i2t.proj.", "stem.proj.")
    if m := re.match(r"blocks\.(\d+)\.(.*)", key):
        j, rest = m.groups()
        rest = (
            rest.replace("attn.", "mixer.")
            .replace("leff.conv1.", "ffn.fc1.")
            .replace("leff.conv2.", "ffn.dwconv.")
        )
        rest = rest.replace("leff.conv3.", "ffn.fc2.").replace("leff.bn", "ffn.norm")
        return f"stages.0.blocks.{j}.{rest}"
    key = key.replace("lca.attn.", "head.layer_attention.").replace(
        "lca.feedforward.", "head.layer_attention.mlp."
    )
    key = key.replace("lca.", "head.layer_attention.")
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _tnt_key(key: str) -> str:
    """timm's TNT: one nested stage; each block an inner (pixel) block, a projection, an outer block."""
    fixed = {**_ONE_STAGE_TOKEN_KEYS, "pixel_pos": "stem.pos_embed"}
    if key in fixed:
        return fixed[key]
    key = key.replace("pixel_embed.proj.", "stem.proj.")
    key = re.sub(r"^norm1_proj\.", "stages.0.downsample.norm_in.", key)
    key = re.sub(r"^proj\.", "stages.0.downsample.proj.", key)
    key = re.sub(r"^norm2_proj\.", "stages.0.downsample.norm_out.", key)
    if m := re.match(r"blocks\.(\d+)\.(\w+)\.(.*)", key):
        j, part, rest = m.groups()
        part = {
            "norm_in": "inner.norm1",
            "attn_in": "inner.mixer",
            "norm_mlp_in": "inner.norm2",
            "mlp_in": "inner.ffn",
            "norm1_proj": "fuse.norm_in",
            "proj": "fuse.proj",
            "norm2_proj": "fuse.norm_out",
            "norm_out": "outer.norm1",
            "attn_out": "outer.mixer",
            "norm_mlp": "outer.norm2",
            "mlp": "outer.ffn",
        }.get(part, part)
        return f"stages.0.blocks.{j}.{part}.{rest}"
    key = re.sub(r"^norm\.", "head.norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def _crossvit_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm's CrossViT (IBM/CrossViT's names, position embeddings and class tokens as
    ``pos_embed_<b>`` / ``cls_token_<b>``) in hvtnas's: branch 0 is the model's own stem and stage,
    branch b > 0 ``branches.<b-1>``; multi-scale block k's j-th block of branch b is block
    k * K_b + j of that branch's stage (K_b read off the file); its fusion is ``fusions.<k>``, whose
    cross-attention keeps keys and values in one matrix (``kv``: wk and wv stacked)."""
    if "cls_token_0" not in state or "blocks.0.projs.0.0.weight" not in state:
        return state
    branches = sum(1 for k in state if re.fullmatch(r"cls_token_\d+", k))

    def branch(b: int) -> str:
        return "" if b == 0 else f"branches.{b - 1}."

    per_run = [
        len({k.split(".")[4] for k in state if k.startswith(f"blocks.0.blocks.{b}.")})
        for b in range(branches)
    ]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"cls_token_(\d+)", key):
            out[f"{branch(int(m[1]))}stages.0.tokens.tokens"] = value
        elif m := re.fullmatch(r"pos_embed_(\d+)", key):
            split = _split_pos_embeds({"pos_embed": value})
            out[f"{branch(int(m[1]))}stages.0.tokens.pos_embed"] = split["pos_embed.prefix"]
            out[f"{branch(int(m[1]))}stages.0.pos_embed.pos_embed"] = split["pos_embed.grid"]
        elif m := re.fullmatch(r"patch_embed\.(\d+)\.(.*)", key):
            out[f"{branch(int(m[1]))}stem.{m[2]}"] = value
        elif m := re.fullmatch(r"blocks\.(\d+)\.blocks\.(\d+)\.(\d+)\.(.*)", key):
            k, b, j, rest = int(m[1]), int(m[2]), int(m[3]), m[4]
            rest = rest.replace("attn.", "mixer.").replace("mlp.", "ffn.")
            out[f"{branch(b)}stages.0.blocks.{k * per_run[b] + j}.{rest}"] = value
        elif m := re.fullmatch(r"blocks\.(\d+)\.(projs|revert_projs)\.(.*)", key):
            out[f"fusions.{m[1]}.{'to_other' if m[2] == 'projs' else 'back'}.{m[3]}"] = value
        elif m := re.fullmatch(r"blocks\.(\d+)\.fusion\.(\d+)\.(norm1|attn\.wq|attn\.proj)\.(.*)", key):
            part = {"norm1": "norm", "attn.wq": "q", "attn.proj": "proj"}[m[3]]
            out[f"fusions.{m[1]}.attend.{m[2]}.{part}.{m[4]}"] = value
        elif m := re.fullmatch(r"blocks\.(\d+)\.fusion\.(\d+)\.attn\.wk\.(.*)", key):
            wv = state[key.replace(".wk.", ".wv.")]
            out[f"fusions.{m[1]}.attend.{m[2]}.kv.{m[3]}"] = torch.cat([value, wv])
        elif m := re.fullmatch(r"norm\.(\d+)\.(.*)", key):
            out[f"head.heads.{m[1]}.norm.{m[2]}"] = value
        elif m := re.fullmatch(r"head\.(\d+)\.(.*)", key):
            out[f"head.heads.{m[1]}.fc.{m[2]}"] = value
        elif not re.fullmatch(r"blocks\.\d+\.fusion\.\d+\.attn\.wv\..*", key):  # wv: in kv
            out[key] = value
    return out


def _identity(key: str) -> str:
    return key


# AAboys/MobileFormer's names -> hvtnas's, per kind of block: the downsampling block (DnaBlock3,
# four convs) and the others (DnaBlock, three); the bridges and the Former are named alike in both
_MOBILE_FORMER_DOWN = {
    "conv1": "mobile.depthwise_down",
    "hyper1.hyper": "mobile.act1",
    "conv2": "mobile.pointwise",
    "conv3": "mobile.depthwise",
    "hyper3.hyper": "mobile.act2",
    "conv4": "mobile.project",
}
_MOBILE_FORMER_PLAIN = {
    "conv1": "mobile.expand",
    "hyper1.hyper": "mobile.act1",
    "conv2": "mobile.depthwise",
    "hyper2.hyper": "mobile.act2",
    "conv3": "mobile.project",
}
_MOBILE_FORMER_BRIDGES = {
    "local_global.q": "mobile_to_former.q",
    "local_global.alpha.0": "mobile_to_former.gate",
    "local_global.proj": "mobile_to_former.proj",
    "local_global.layer_norm": "mobile_to_former.norm",
    "global_block.q": "former.q",
    "global_block.channel_mlp": "former.proj",
    "global_block.layer_norm": "former.norm1",
    "global_block.ffn.0": "former.mlp.0",
    "global_block.ffn.2": "former.mlp.2",
    "global_block.ffn_norm": "former.norm2",
    "global_local.k": "former_to_mobile.k",
    "global_local.proj": "former_to_mobile.v",
}
_MOBILE_FORMER_OTHERS = {
    "stem.0": "stem.conv.0",
    "stem.1": "stem.conv.1",
    "features.0.conv.0": "stem.lite.depthwise.0",
    "features.0.conv.1": "stem.lite.depthwise.1",
    "features.0.conv.4": "stem.lite.project.0",
    "features.0.conv.5": "stem.lite.project.1",
    "local_global.q": "head.bridge.q",
    "local_global.alpha.0": "head.bridge.gate",
    "local_global.proj": "head.bridge.proj",
    "local_global.layer_norm": "head.bridge.norm",
    "classifier.conv.1": "head.conv.0",
    "classifier.conv.2": "head.conv.1",
    "classifier.fc.0": "head.hidden.0",
    "classifier.fc.1": "head.hidden.1",
    "classifier.classifier.1": "head.fc",
}


def _mobile_former_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """AAboys/MobileFormer's ``features.{k}`` (k >= 1) are the blocks in a row: a downsampling
    block (it has a ``conv4``) opens the next stage. Keys of other layouts pass unchanged."""
    blocks = sorted(
        {int(m.group(1)) for k in state if (m := re.match(r"features\.(\d+)\.", k)) and m.group(1) != "0"}
    )
    place, stage, j = {}, -1, 0
    for k in blocks:
        down = f"features.{k}.conv4.0.weight" in state
        stage, j = (stage + 1, 0) if down else (stage, j + 1)
        place[k] = (stage, j, down)
    out = {}
    for key, value in state.items():
        match = re.match(r"features\.(\d+)\.(.+)\.(\w+)$", key)
        if match and int(match.group(1)) in place:
            i, j, down = place[int(match.group(1))]
            module, leaf = match.group(2), match.group(3)
            head, _, index = module.rpartition(".")  # "conv1.0" -> ("conv1", "0"); "hyper1.hyper.0"
            table = {**(_MOBILE_FORMER_DOWN if down else _MOBILE_FORMER_PLAIN), **_MOBILE_FORMER_BRIDGES}
            if module in table:
                key = f"stages.{i}.blocks.{j}.{table[module]}.{leaf}"
            elif head in table:
                if table[head].endswith(("act1", "act2")):  # the coefficient MLP: Linear, ReLU, Linear
                    index = {"0": "fc1", "2": "fc2"}.get(index, index)
                key = f"stages.{i}.blocks.{j}.{table[head]}.{index}.{leaf}"
        elif key == "tokens.weight":  # an nn.Embedding's (T, D): the stream's (1, T, D)
            key = "stages.0.tokens.tokens"
        elif (module := key.rpartition(".")[0]) in _MOBILE_FORMER_OTHERS:
            key = f"{_MOBILE_FORMER_OTHERS[module]}.{key.rpartition('.')[2]}"
        out[key] = value
    return out


LAYOUTS: dict[str, Callable[[str], str]] = {
    "hvtnas": _identity,
    "timm": _timm_key,
    "timm-swin": _swin_key,
    "timm-swinv2": _swinv2_key,
    "timm-twins": _twins_key,
    "timm-mvit": _mvit_key,
    "timm-vit": _vit_key,
    "timm-coat": _coat_key,
    "timm-tnt": _tnt_key,
    "official-ceit": _ceit_key,
    "official-mvit": _identity,  # renamed by its PREPARE entry, which needs the whole file
    "timm-crossvit": _identity,  # renamed by its PREPARE entry, which needs the whole file
    "timm-byoanet": _byoanet_key,
    "official-swin": lambda k: _swin_key(_official_swin_to_timm(k)),
    "official-swinv2": lambda k: _swinv2_key(_official_swin_to_timm(k)),
    "official-pvt_v2": lambda k: _timm_key(_official_pvt_v2_to_timm(k)),
    "official-pvt": _official_pvt_key,
    "official-cvt": _official_cvt_key,
    "official-vil": _official_vil_key,
    "official-regionvit": _official_regionvit_key,
    "official-metaformer": lambda k: _timm_key(_official_metaformer_to_timm(k, poolformer_v1=False)),
    "official-poolformer": lambda k: _timm_key(_official_metaformer_to_timm(k, poolformer_v1=True)),
    "aaboys-mobile_former": _identity,  # renamed by its PREPARE entry, which needs the whole file
}


# state-dict changes a layout needs before its keys are renamed (one tensor that is two in hvtnas)
PREPARE: dict[str, Callable[[dict[str, Tensor]], dict[str, Tensor]]] = {
    "timm-vit": _split_pos_embeds,
    "official-pvt": _split_pos_embeds,
    "timm-tnt": _tnt_state,
    "official-ceit": _split_pos_embeds,
    "official-mvit": _mvit_v1_state,
    "timm-crossvit": _crossvit_state,
    "official-vil": _official_vil_prepare,
    "aaboys-mobile_former": _mobile_former_state,
    "official-regionvit": _official_regionvit_prepare,
}


# ----------------------------------------------------------------------------- reading files
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file or a weights-only torch file, unwrapped from the
    ``{"model": ...}`` / ``{"state_dict": ...}`` dicts training scripts save and from DDP's
    ``module.`` prefix (hvtnas's own training checkpoints too)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    with path.open("rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - a dependency of hvtnas
            raise WeightsError("reading safetensors files needs the safetensors package") from None
        try:
            state: Any = load_file(str(path))
        except Exception as err:
            raise WeightsError(f"checkpoint {path} is not a readable safetensors file: {err}") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WeightsError(
                f"checkpoint {path} is neither a safetensors file nor a weights-only torch file "
                f"(torch.load(weights_only=True) refused it: {first}); save its state_dict() with "
                "torch.save or safetensors"
            ) from None
    for _ in range(3):  # {"model": {...}}, {"state_dict": {"model": ...}}
        if isinstance(state, dict):
            inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
            if inner is not None:  # a flat state dict holds no dicts
                state = inner
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"checkpoint {path} holds no state dict (no tensors found)")
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in ("module.", "model."):  # DDP's wrapper; a features_only model's
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


# ----------------------------------------------------------------------------- fitting
def _same_up_to_ones(a: torch.Size, b: torch.Size) -> bool:
    """Shapes equal but for size-1 dimensions: a 1x1 conv's (O, I, 1, 1) and a linear's (O, I)."""
    return [d for d in a if d != 1] == [d for d in b if d != 1]


class _Fit:
    """How a state dict, renamed by one layout, fits a model's."""

    def __init__(self, layout: str, source: dict[str, Tensor], target: dict[str, Tensor]) -> None:
        self.layout = layout
        self.mapped: dict[str, Tensor] = {}
        self.renamed: dict[str, str] = {}  # new key -> key in the file
        rename = LAYOUTS[layout]
        source = PREPARE.get(layout, lambda state: state)(source)
        for key, value in source.items():
            if any(c in key for c in _COMPUTED):
                continue
            new = rename(key)
            if new not in target and ".downsample.norm." in new:  # timm does not say pre or post
                for where in ("pre_norm", "post_norm"):
                    if (alternative := new.replace(".downsample.norm.", f".downsample.{where}.")) in target:
                        new = alternative
            self.mapped[new] = value
            self.renamed[new] = key
        self.missing = [k for k in target if k not in self.mapped]
        self.unexpected = [k for k in self.mapped if k not in target]
        self.mismatched = [  # in the model's order: stem first
            k
            for k in target
            if k in self.mapped and not _same_up_to_ones(self.mapped[k].shape, target[k].shape)
        ]
        self.matched = len(self.mapped) - len(self.unexpected) - len(self.mismatched)

    @property
    def problems(self) -> list[str]:
        return self.missing + self.unexpected + self.mismatched

    def describe(self, target: dict[str, Tensor], limit: int = 8) -> str:
        def some(keys: list[str]) -> str:
            shown = ", ".join(keys[:limit])
            return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"missing from the file ({len(self.missing)}): {some(self.missing)}")
        if self.unexpected:
            names = [f"{k} (file: {self.renamed[k]})" if self.renamed[k] != k else k for k in self.unexpected]
            parts.append(f"not in the model ({len(self.unexpected)}): {some(names)}")
        if self.mismatched:
            shapes = [
                f"{k}: file {tuple(self.mapped[k].shape)} vs model {tuple(target[k].shape)}"
                for k in self.mismatched
            ]
            parts.append(f"shapes differ ({len(self.mismatched)}): {some(shapes)}")
        return "; ".join(parts)


def convert_state_dict(
    state: dict[str, Tensor],
    model: nn.Module,
    *,
    new_classifier: bool | None = None,
    source: str = "the checkpoint",
) -> tuple[dict[str, Tensor], str, list[str]]:
    """``state`` renamed and reshaped into ``model``'s state dict.

    Returns ``(state_dict, layout, skipped)``. ``new_classifier``: the model's classifier may
    differ from the file's; its keys are then skipped (``skipped``) and keep their fresh
    initialisation (fine-tuning on other classes). Default: where the file's classifier has another
    number of classes than the model's (or either has none). Raises ``WeightsError`` naming the
    missing, unexpected and mis-shaped keys of the closest layout when no layout fits.
    """
    target = model.state_dict()
    fits = [_Fit(layout, state, target) for layout in LAYOUTS]
    best = min(fits, key=lambda f: (len(f.problems), -f.matched))
    if new_classifier is None:
        fc = best.mapped.get("head.fc.weight", best.mapped.get("head.heads.0.fc.weight"))
        new_classifier = (fc.shape[0] if fc is not None else 0) != getattr(model, "num_classes", None)
    skipped: list[str] = []
    if (
        best.problems
        and new_classifier
        and all(k.startswith(_CLASSIFIER) or _BRANCH_CLASSIFIER.match(k) for k in best.problems)
    ):
        skipped = sorted(set(best.problems))
        best.missing, best.unexpected, best.mismatched = [], [], []
    if best.problems:
        name = getattr(getattr(model, "arch_config", None), "name", None) or type(model).__name__
        raise WeightsError(
            f"{source} does not fit model {name}: the closest key layout ({best.layout}, "
            f"{best.matched} of {len(target)} tensors matched) leaves {best.describe(target)}. "
            f"Known layouts: {', '.join(LAYOUTS)} (see hvtnas.models.weights)"
        )
    out = {k: v.reshape(target[k].shape) for k, v in best.mapped.items() if k in target and k not in skipped}
    return out, best.layout, skipped


def load_weights(
    model: nn.Module, path: str | Path, *, name: str | None = None, new_classifier: bool | None = None
) -> tuple[str, list[str]]:
    """Load a checkpoint file into ``model`` (see ``convert_state_dict``); returns
    ``(layout, skipped classifier keys)``."""
    state = read_state_dict(path)
    converted, layout, skipped = convert_state_dict(
        state, model, new_classifier=new_classifier, source=f"checkpoint {path}"
    )
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not unexpected and set(missing) <= set(skipped), (missing, unexpected)
    return layout, skipped


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``model``'s state dict as a safetensors file (contiguous copies; shared tensors cloned).
    The file's metadata holds the architecture config as JSON (``arch_config``) where the model
    has one, so the file says what it is for."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "hvtnas_layout": "hvtnas"}
    cfg = getattr(model, "arch_config", None)
    if cfg is not None:
        meta["arch_config"] = json.dumps(cfg.to_dict())
    meta.update(metadata or {})
    save_file(state, str(path), metadata=meta)
    return path
