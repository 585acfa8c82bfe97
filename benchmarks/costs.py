"""What measuring costs costs, and how repeatable latency is.

For each zoo model: seconds to count FLOPs (224 and the 1280x800 backbone), seconds to measure
CPU latency with the default settings, and the latency itself. Then repeatability: the same
model measured ``--rounds`` times (fresh warm-up each time) on an idle machine; the spread of the
medians is the tolerance to quote for latency figures. Run it on an otherwise idle machine.

    python benchmarks/costs.py                  # writes benchmarks/results/costs_<device>.{json,md}
    python benchmarks/costs.py --device cuda --dtype bfloat16 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from hvtnas import build_model
from hvtnas.costs import LatencySettings, count_flops, measure_latency
from hvtnas.costs.latency import device_name
from hvtnas.models import zoo

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=zoo.names())
    parser.add_argument(
        "--repeatability-models", nargs="*", default=["pvt_v2_b0", "poolformer_s12", "swin_t"]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    settings = LatencySettings(
        device=args.device, dtype=args.dtype, batch_size=args.batch_size, threads=args.threads
    )
    torch.manual_seed(0)

    rows = []
    for name in args.models:
        model = build_model(name)
        t0 = time.perf_counter()
        flops = count_flops(model, (224, 224)).total
        t1 = time.perf_counter()
        count_flops(model, (800, 1280), backbone_only=True)
        t2 = time.perf_counter()
        latency = measure_latency(model, (224, 224), settings)
        t3 = time.perf_counter()
        rows.append(
            {
                "model": name,
                "gmacs": flops / 1e9,
                "flops_seconds": t1 - t0,
                "flops_dense_seconds": t2 - t1,
                "latency_seconds": t3 - t2,
                "median_ms": latency.median_ms,
                "p90_ms": latency.p90_ms,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    repeatability = []
    for name in args.repeatability_models:
        model = build_model(name)
        medians = [measure_latency(model, (224, 224), settings).median_ms for _ in range(args.rounds)]
        spread = max(medians) / min(medians) - 1
        repeatability.append(
            {
                "model": name,
                "medians_ms": medians,
                "spread": spread,
                "cv": statistics.stdev(medians) / statistics.fmean(medians),
            }
        )
        print(json.dumps(repeatability[-1]), flush=True)

    env = {
        "device": device_name(torch.device(args.device)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    tag = args.device.split(":")[0]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"costs_{tag}"
    out.with_suffix(".json").write_text(
        json.dumps({"environment": env, "models": rows, "repeatability": repeatability}, indent=2)
    )
    lines = [
        f"Environment: {env}",
        "",
        "| model | GMACs (224) | s to count FLOPs 224 / 1280x800 | s to time latency | median ms | p90 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['gmacs']:.3f} | {r['flops_seconds']:.2f} / {r['flops_dense_seconds']:.2f} | "
        f"{r['latency_seconds']:.1f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} |"
        for r in rows
    ]
    lines += [
        "",
        f"Repeatability: {args.rounds} measurements of the median latency per model",
        "",
        "| model | medians (ms) | max/min - 1 | CV |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {', '.join(f'{m:.1f}' for m in r['medians_ms'])} | {100 * r['spread']:.1f}% | "
        f"{100 * r['cv']:.1f}% |"
        for r in repeatability
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
