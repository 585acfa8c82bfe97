"""How long counting FLOPs takes: the meta-device counter against fvcore, and against building.

1. ``measure_costs("swin_s")`` with the dense count at 1280x800, in a fresh Python process each
   (so the first-call cost, imports included, is in the figure), next to building swin_s once
   (``build_model(..., init_weights=False)``, what cost measurement used to build, and with
   initialisation).
2. Per zoo model: seconds to count at 224 (the model's resolution) and of the backbone at 1280x800,
   with the fast counter (after one warm-up count in the process) and with fvcore
   (``--fvcore-models``; ``--fvcore-models all`` for every model, ~10 min on 2 busy cores), and
   that the two agree.

    python benchmarks/flop_count_speed.py      # writes benchmarks/results/flop_count_speed.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from hvtnas import build_model
from hvtnas.costs import count_flops
from hvtnas.costs.latency import cpu_name
from hvtnas.models import zoo

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
DENSE = (800, 1280)

FRESH = """
import json, time
t0 = time.perf_counter()
import torch
from hvtnas import build_model
from hvtnas.costs import CostSettings, measure_costs
t1 = time.perf_counter()
costs = measure_costs("swin_s", CostSettings(dense_resolution="1280x800"))
t2 = time.perf_counter()
build_model("swin_s", init_weights=False)
t3 = time.perf_counter()
build_model("swin_s")
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "measure_costs_s": t2 - t1, "build_no_init_s": t3 - t2,
                  "build_init_s": t4 - t3, "flops": costs.flops, "flops_dense": costs.flops_dense}))
"""


def fresh_process_rows(rounds: int) -> list[dict]:
    rows = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", FRESH],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=zoo.names())
    parser.add_argument(
        "--fvcore-models", nargs="*", default=["swin_t", "swin_s", "pvt_v2_b2", "poolformer_s12", "coatnet_0"]
    )
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes for measure_costs('swin_s')")
    parser.add_argument("--out", type=Path, default=RESULTS / "flop_count_speed")
    args = parser.parse_args()
    fvcore_models = set(zoo.names() if args.fvcore_models == ["all"] else args.fvcore_models)
    load_before = os.getloadavg()

    fresh = fresh_process_rows(args.rounds)
    count_flops(build_model("pvt_v2_b0", init_weights=False), (64, 64))  # the counter's one-time warm-up
    rows = []
    for name in args.models:
        with torch.device("meta"):
            meta = build_model(name, init_weights=False)
        res = meta.arch_config.input.resolution
        fast_224, a = timed(lambda m=meta, r=res: count_flops(m, (r, r)))
        fast_dense, b = timed(lambda m=meta: count_flops(m, DENSE, backbone_only=True))
        row = {"model": name, "macs": a.total, "macs_dense": b.total, "fast_s": [fast_224, fast_dense]}
        if name in fvcore_models:
            model = build_model(name, init_weights=False)
            ref_224, c = timed(lambda m=model, r=res: count_flops(m, (r, r), method="fvcore"))
            ref_dense, d = timed(lambda m=model: count_flops(m, DENSE, backbone_only=True, method="fvcore"))
            row.update(fvcore_s=[ref_224, ref_dense], agree=(a.total, b.total) == (c.total, d.total))
        rows.append(row)
        print(json.dumps(row), flush=True)

    meta_info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta_info, "fresh_process": fresh, "models": rows}, indent=2) + "\n"
    )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in fresh)

    lines = [
        f"# FLOP counting speed ({meta_info['date']}, {meta_info['cpu']}, {meta_info['cpus']} CPUs, "
        f"torch {meta_info['torch']}, load average before/after {meta_info['load_average_before_after']})",
        "",
        f"`measure_costs('swin_s')` with the dense count at 1280x800, fresh process, median of {len(fresh)}: "
        f"**{med('measure_costs_s'):.2f} s** (imports before it {med('import_s'):.2f} s); building swin_s "
        f"once: {med('build_no_init_s'):.2f} s without weight init, {med('build_init_s'):.2f} s with it.",
        "",
        "| model | GMACs | dense GMACs (1280x800) | fast s (224 / dense) | fvcore s (224 / dense) | equal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ref = "/".join(f"{s:.2f}" for s in r["fvcore_s"]) if "fvcore_s" in r else "-"
        agree = {True: "yes", False: "**NO**"}.get(r.get("agree"), "-")
        lines.append(
            f"| {r['model']} | {r['macs'] / 1e9:.3f} | {r['macs_dense'] / 1e9:.1f} | "
            f"{r['fast_s'][0]:.3f} / {r['fast_s'][1]:.3f} | {ref} | {agree} |"
        )
    fast = [s for r in rows for s in r["fast_s"]]
    lines += [
        "",
        f"Fast counter: {min(fast):.3f}-{max(fast):.3f} s a count (median {statistics.median(fast):.3f} s), "
        "after one warm-up count in the process (a process's first counts also import parts of torch "
        "that meta kernels use, a few tenths of a second: included in the fresh-process figure above).",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
