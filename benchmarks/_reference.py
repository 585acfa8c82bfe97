"""The reference implementations the zoo is checked against: timm's models, and the state-dict
mapping that loads their weights into hvtnas's generated models.

timm is not a dependency of hvtnas. Where it is not importable (this CPU machine has no
torchvision, which timm imports at module level), ``import_timm`` installs timm without
dependencies into a throw-away folder and provides a minimal stand-in for the torchvision names
timm imports (none of which these models use). Nothing is installed into the environment. The
benchmarks and ``tests/test_reference_equivalence.py`` share this module.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

import hvtnas

# the version the results under benchmarks/results/ were measured with (CI installs the same one)
TIMM_VERSION = "1.0.31"

# hvtnas zoo name -> (timm name, how to map state-dict keys)
MODELS = {
    "swin_t": ("swin_tiny_patch4_window7_224", "swin"),
    "swin_s": ("swin_small_patch4_window7_224", "swin"),
    "pvt_v2_b0": ("pvt_v2_b0", "positional"),
    "pvt_v2_b2": ("pvt_v2_b2", "positional"),
    "poolformer_s12": ("poolformer_s12", "positional"),
    "convformer_s18": ("convformer_s18", "positional"),
    "caformer_s18": ("caformer_s18", "positional"),
    "twins_svt_s": ("twins_svt_small", "twins"),
    "twins_pcpvt_s": ("twins_pcpvt_small", "twins"),
    "swinv2_t": ("swinv2_tiny_window8_256", "swinv2"),
    "mvitv2_t": ("mvitv2_tiny", "mvit"),
}
# models compared at their own input size instead of --resolution
NATIVE_RESOLUTION = {"swinv2_t": 256}
NOTES = {
    "swinv2_t": "compared at 256x256, its native size (window 8)",
    "poolformer_s12": "timm's port applies the final GroupNorm after pooling; the official "
    "sail-sg/poolformer code (which hvtnas follows) applies it before, so logits differ by design",
}


def import_timm(install: bool = True) -> types.ModuleType:
    """timm, imported as it is or (``install``) from a throw-away folder; ImportError otherwise."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        pass
    try:  # timm present (e.g. `pip install --no-deps timm`) but torchvision missing
        importlib.import_module("torchvision")
    except ImportError:
        _install_torchvision_stand_in()
        try:
            return importlib.import_module("timm")
        except ImportError:
            pass
    if not install:
        raise ImportError("timm is not installed (pip install --no-deps timm)")
    target = Path(tempfile.gettempdir()) / "hvtnas-bench-timm"
    if not (target / "timm").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target),
                f"timm=={TIMM_VERSION}",
                "huggingface_hub",
                "safetensors",
            ],
            check=True,
        )
    sys.path.insert(0, str(target))
    return importlib.import_module("timm")


def _install_torchvision_stand_in() -> None:
    """timm imports a few torchvision names at module level; these models never call them."""

    class _Names(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (torch.nn.Module,), {})

    class InterpolationMode:  # the enum timm's transforms read at import
        NEAREST, BILINEAR, BICUBIC = "nearest", "bilinear", "bicubic"
        BOX, HAMMING, LANCZOS, NEAREST_EXACT = "box", "hamming", "lanczos", "nearest-exact"

    root = _Names("torchvision")
    root.__version__ = "0.0.0"
    root.__path__ = []
    sys.modules["torchvision"] = root
    for sub in [
        "ops",
        "ops.misc",
        "transforms",
        "transforms.functional",
        "transforms.v2",
        "transforms.v2.functional",
        "datasets",
        "io",
        "models",
        "models.feature_extraction",
        "utils",
    ]:
        module = _Names(f"torchvision.{sub}")
        module.__path__ = []  # a package, so its submodules import
        module.InterpolationMode = InterpolationMode
        sys.modules[f"torchvision.{sub}"] = module
        parent, _, leaf = f"torchvision.{sub}".rpartition(".")
        setattr(sys.modules[parent], leaf, module)


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


def map_state_dict(reference: torch.nn.Module, model: torch.nn.Module, how: str) -> dict[str, torch.Tensor]:
    buffers = ("relative_position_index", "relative_coords_table")  # computed, not learned
    ref = {k: v for k, v in reference.state_dict().items() if not any(b in k for b in buffers)}
    ours = model.state_dict()
    if how == "positional":  # same modules in the same order; 1x1 convs become linears
        if len(ref) != len(ours):
            raise RuntimeError(f"{len(ref)} reference tensors vs {len(ours)}")
        return {k: v.reshape(ours[k].shape) for (k, _), v in zip(ours.items(), ref.values(), strict=True)}
    rename = {"swin": _swin_key, "swinv2": _swinv2_key, "mvit": _mvit_key, "twins": _twins_key}[how]
    return {rename(k): v.reshape(ours[rename(k)].shape) for k, v in ref.items()}


def load_pair(
    name: str, timm: types.ModuleType, **reference_kwargs: object
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(timm's model, hvtnas's generated model holding the same weights) for a zoo model."""
    timm_name, how = MODELS[name]
    reference = timm.create_model(timm_name, **reference_kwargs)
    model = hvtnas.build_model(name)
    model.load_state_dict(map_state_dict(reference, model, how), strict=True)
    return reference, model
