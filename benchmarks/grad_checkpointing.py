"""What ``model.set_grad_checkpointing()`` saves: peak memory of one training step with and without.

Each measurement runs in a fresh process (peak RSS cannot be reset): build the model and an AdamW
optimiser, run one warm-up step at batch 2, then one timed training step (forward, backward,
optimiser step) at ``--batch-size``. Reported: the process's peak resident memory
(``ru_maxrss``), its growth over the resident memory before the measured step, the bytes autograd
saves for backward (``hvtnas.costs.memory.saved_activation_bytes``) and the step's seconds. On
CUDA, ``torch.cuda.max_memory_allocated`` instead of RSS.

    python benchmarks/grad_checkpointing.py   # benchmarks/results/grad_checkpointing_<device>.{json,md}
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(name: str, checkpointing: bool, batch_size: int, resolution: int, device: str) -> dict:
    import torch

    from hvtnas import build_model
    from hvtnas.costs.memory import saved_activation_bytes

    torch.manual_seed(0)
    model = build_model(name).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: int) -> None:
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        loss = model(x).logsumexp(dim=1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(2)  # optimiser state and allocator warm
    before = _rss_mib()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    step(batch_size)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before anything else runs
    saved = saved_activation_bytes(model, torch.randn(batch_size, 3, resolution, resolution, device=device))
    out = {
        "model": name,
        "grad_checkpointing": checkpointing,
        "batch_size": batch_size,
        "resolution": resolution,
        "device": device,
        "saved_activations_mib": saved / 2**20,
        "step_seconds": seconds,
    }
    if device.startswith("cuda"):
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["step_growth_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        out["peak_mib"] = peak
        out["step_growth_mib"] = peak - before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["swin_t", "convformer_s18"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, flag = args.child
        print(json.dumps(measure(name, flag == "1", args.batch_size, args.resolution, args.device)))
        return
    rows = []
    for name in args.models:
        for flag in ("0", "1"):
            cmd = [sys.executable, __file__, "--child", name, flag, "--batch-size", str(args.batch_size)]
            cmd += ["--resolution", str(args.resolution), "--device", args.device]
            result = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"grad_checkpointing_{args.device.split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"One training step at batch {args.batch_size}, {args.resolution}x{args.resolution}, {args.device} "
        "(benchmarks/grad_checkpointing.py).",
        "",
        "| model | checkpointing | peak memory (MiB) | growth in the step (MiB) | saved activations (MiB) "
        "| step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {'on' if r['grad_checkpointing'] else 'off'} | {r['peak_mib']:.0f} "
            f"| {r['step_growth_mib']:.0f} | {r['saved_activations_mib']:.0f} | {r['step_seconds']:.2f} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
