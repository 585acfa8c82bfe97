"""Do the generated zoo models compute the same function as the reference implementations?

Loads timm's randomly initialised weights for each model into hvtnas's generated model and
compares logits and the four pyramid levels on the same input. Equal parameter counts could hide
a swapped norm or a wrong shift mask; equal outputs cannot.

timm is not a dependency of hvtnas: see ``_reference.py`` for how it is imported here.
``tests/test_reference_equivalence.py`` runs the same check in CI.

    python benchmarks/reference_equivalence.py   # writes benchmarks/results/reference_equivalence.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import types
from pathlib import Path

import torch
from _reference import MODELS, NATIVE_RESOLUTION, NOTES, import_timm, load_pair

RESULTS = Path(__file__).parent / "results"


def compare(name: str, timm: types.ModuleType, resolution: int) -> dict:
    reference, model = (m.eval() for m in load_pair(name, timm))
    resolution = NATIVE_RESOLUTION.get(name, resolution)
    x = torch.randn(2, 3, resolution, resolution)
    with torch.inference_mode():
        ref_logits, logits = reference(x), model(x)
        ref_pyramid = reference.forward_intermediates(x, intermediates_only=True)
        pyramid = model.forward_intermediates(x, intermediates_only=True)
    return {
        "model": name,
        "resolution": resolution,
        "reference": f"timm {timm.__version__}: {MODELS[name]}",
        "max_abs_diff_logits": (ref_logits - logits).abs().max().item(),
        "logit_scale": ref_logits.abs().max().item(),
        "max_abs_diff_pyramid": [
            (a - b).abs().max().item() for a, b in zip(ref_pyramid, pyramid, strict=True)
        ],
        "note": NOTES.get(name, ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--out", type=Path, default=RESULTS / "reference_equivalence")
    args = parser.parse_args()
    torch.manual_seed(0)
    timm = import_timm()
    rows = []
    for name in args.models:
        rows.append(compare(name, timm, args.resolution))
        print(json.dumps(rows[-1]))
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "resolution": args.resolution,
        "dtype": "float32",
        "device": "cpu",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "results": rows}, indent=2))
    lines = [
        "| model | reference | max abs diff logits (scale) | max abs diff pyramid levels 1-4 | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        pyr = ", ".join(f"{d:.1e}" for d in r["max_abs_diff_pyramid"])
        lines.append(
            f"| {r['model']} | {r['reference']} | {r['max_abs_diff_logits']:.1e} ({r['logit_scale']:.2f})"
            f" | {pyr} | {r['note']} |"
        )
    args.out.with_suffix(".md").write_text(f"Environment: {env}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
