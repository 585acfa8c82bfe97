"""The reference implementations the zoo is checked against: timm's models, whose weights
``hvtnas.models.weights`` loads into hvtnas's generated models.

timm is not a dependency of hvtnas. Where it is not importable (this CPU machine has no
torchvision, which timm imports at module level), ``import_timm`` installs timm without
dependencies into a throw-away folder and provides a minimal stand-in for the torchvision names
timm imports (none of which these models use). Nothing is installed into the environment. The
benchmarks and ``tests/test_reference_equivalence.py`` share this module.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

import hvtnas
from hvtnas.models.weights import TIMM_NAMES, convert_state_dict

# the version the results under benchmarks/results/ were measured with (CI installs the same one)
TIMM_VERSION = "1.0.31"

# hvtnas zoo name -> timm name; the state-dict mapping is the package's (hvtnas.models.weights)
MODELS = TIMM_NAMES
# models compared at their own input size instead of --resolution
NATIVE_RESOLUTION = {"swinv2_t": 256, "halonet_h1": 256, "crossvit_s": 240}
NOTES = {
    "swinv2_t": "compared at 256x256, its native size (window 8)",
    "halonet_h1": "compared at 256x256, its native size (timm's HaloAttn needs maps divisible by its blocks)",
    "crossvit_s": "compared at 240x240, its native size (timm's CrossViT takes that size only)",
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


def load_pair(
    name: str, timm: types.ModuleType, **reference_kwargs: object
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(timm's model, hvtnas's generated model holding the same weights) for a zoo model."""
    reference = timm.create_model(MODELS[name], **reference_kwargs)
    model = hvtnas.build_model(name)
    state, _, skipped = convert_state_dict(reference.state_dict(), model, new_classifier=False)
    assert not skipped
    model.load_state_dict(state, strict=True)
    return reference, model
