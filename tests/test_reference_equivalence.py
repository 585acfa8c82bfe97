"""The generated zoo models compute the same function as timm's implementations.

timm's randomly initialised weights are loaded into the generated model (the state-dict mapping of
``benchmarks/_reference.py``) and both see the same input: logits and every pyramid level must
agree to float32 tolerance. Equal parameter counts could hide a swapped norm, a wrong shift mask or
a transposed relative-position table; equal outputs cannot.

timm is not a dependency: CI installs it without dependencies (see the README's test command) and
these tests are skipped with the reason where it cannot be imported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _reference import MODELS, NATIVE_RESOLUTION, import_timm, load_pair

from hvtnas.models.weights import convert_state_dict

try:
    timm = import_timm(install=False)
except ImportError as err:  # no timm here: nothing to compare against
    timm, SKIP_REASON = None, f"timm cannot be imported ({err}); CI installs it: pip install --no-deps timm"
else:
    SKIP_REASON = ""

pytestmark = pytest.mark.skipif(timm is None, reason=SKIP_REASON)

# Windowed models need their native 224 (windows of 7 at every stage), and timm builds CoaT for one
# input size; the others are checked at a smaller size, which exercises the same code at a fraction
# of the CPU time.
SMALL_RESOLUTION = 64
# ViT/DeiT, MLP-Mixer and TNT in timm take their fixed 224 (14 x 14 patches) only
NEEDS_NATIVE = {
    "swin_t",
    "swin_s",
    "twins_svt_s",
    "mvitv2_t",
    "deit_s",
    "mixer_b16",
    "coat_lite_s",
    "coat_s",
    "tnt_s",
    "halonet_h1",
}
# one stage at stride 16: timm's forward_intermediates lists every block; the stage's map is the last
ISOTROPIC = {"deit_s", "mixer_b16", "tnt_s"}
# timm's ByobNet models (HaloNet) list the stem's stride-2 map as the first pyramid level
STEM_LEVEL_FIRST = {"halonet_h1"}
# timm's CrossViT lists every branch's map after each of its 3 multi-scale blocks, branch by branch;
# hvtnas's pyramid is each branch's last (one level per branch)
BRANCH_LEVELS = {"crossvit_s": [2, 5]}
# timm's PoolFormer applies the head's GroupNorm after pooling, the official code (which hvtnas
# follows) before it: the trunk is compared, the logits differ by design.
LOGITS_DIFFER_BY_DESIGN = {"poolformer_s12"}


def _randomise_batchnorms(model: torch.nn.Module) -> None:
    """Random BatchNorm statistics and affine parameters: timm initialises the last norm of a
    residual branch to zero (ResNet's zero-init), which would hide the whole branch."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.1, 0.5)  # small: no blow-up through deep residual stacks
            module.bias.data.uniform_(-0.3, 0.3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_model_matches_timm(name: str) -> None:
    torch.manual_seed(0)
    reference, model = (m.eval() for m in load_pair(name, timm))
    _randomise_batchnorms(reference)
    model.load_state_dict(convert_state_dict(reference.state_dict(), model, new_classifier=False)[0])
    resolution = NATIVE_RESOLUTION.get(name, 224 if name in NEEDS_NATIVE else SMALL_RESOLUTION)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.inference_mode():
        pyramid = model.forward_intermediates(x, intermediates_only=True)
        indices = 1 if name in ISOTROPIC else [1, 2, 3, 4] if name in STEM_LEVEL_FIRST else None
        indices = BRANCH_LEVELS.get(name, indices)
        ref_pyramid = reference.forward_intermediates(x, indices=indices, intermediates_only=True)
        assert len(pyramid) == len(ref_pyramid) == len(model.feature_info)
        for level, (ours, theirs) in enumerate(zip(pyramid, ref_pyramid, strict=True), start=1):
            # float32 round-off scales with the map: CoaT's unnormalised levels reach values of
            # thousands (a few units in the last place there are 1e-3)
            atol = max(1e-4, 1e-6 * theirs.abs().max().item())
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=atol, msg=f"pyramid level {level}")
        if name not in LOGITS_DIFFER_BY_DESIGN:
            torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_a_wrong_weight_is_detected() -> None:
    """The comparison has teeth: one perturbed weight changes the output beyond the tolerance."""
    reference, model = (m.eval() for m in load_pair("pvt_v2_b0", timm))
    with torch.no_grad():
        model.stages[2].blocks[0].ffn.fc1.weight.mul_(1.01)
    x = torch.randn(1, 3, SMALL_RESOLUTION, SMALL_RESOLUTION)
    with torch.inference_mode(), pytest.raises(AssertionError):
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)
