"""Proxy-training throughput: images/s and seconds per proxy trial, small / medium / zoo-sized models.

Each model trains on seeded synthetic data at 32x32 (3 channels, 10 classes) through the real
trainer (``hvtnas.train.trainer.train_model``: AdamW, warm-up + cosine, label smoothing, grad
clipping, on-device crop/flip augmentation; on CUDA also GPU-resident data, bf16 autocast,
channels_last and optionally ``torch.compile``). Reported per model:

- ``img/s``: training throughput, the median over the epochs after the first (which pays one-off
  warm-up costs);
- ``trial s (measured)``: wall time of the whole measured run, validation included;
- ``10x50k s (est.)``: the issue's reference proxy trial, 10 epochs over 50,000 images, from the
  measured img/s (on CPU such a trial is not run; on a GPU use ``--images 50000 --epochs 10``);
- achieved GFLOP/s (3 x forward FLOPs per training image, fvcore's count, which skips attention's
  matmuls inside scaled_dot_product_attention, so attention models are undercounted) and MFU
  against ``--peak-tflops`` when given.

    nice -n 10 python benchmarks/proxy_train.py                      # CPU, a few minutes
    python benchmarks/proxy_train.py --device cuda --images 50000 --epochs 10 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from hvtnas.models import build_model, resolve_config
from hvtnas.train.data import DataConfig, load_dataset
from hvtnas.train.proxies import count_flops
from hvtnas.train.trainer import TrainConfig, adapt_arch_to_data, resolve_device, train_model

RESULTS = Path(__file__).resolve().parent / "results"


def metaformer(widths: list[int], depths: list[int], early: str, late: str) -> dict[str, Any]:
    """CAFormer-like: ``early`` mixer in stages 1-2, ``late`` in 3-4, head_dim 32."""
    return {
        "input": {"channels": 3, "resolution": 32, "num_classes": 10},
        "stem": {"kind": "patch", "norm": "layernorm"},
        "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
        "stages": [
            {"depth": d, "width": w, "head_dim": 32, "mixers": [early if i < 2 else late]}
            for i, (w, d) in enumerate(zip(widths, depths, strict=True))
        ],
    }


MODELS: dict[str, Any] = {
    "small (sepconv/attention 32-128)": metaformer([32, 64, 96, 128], [1, 1, 2, 1], "sepconv", "attention"),
    "medium (sepconv/attention 64-320, ~5M)": metaformer(
        [64, 128, 192, 320], [2, 2, 4, 2], "sepconv", "attention"
    ),
    "zoo: pvt_v2_b0": "pvt_v2_b0",
    "zoo: convformer_s18": "convformer_s18",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=0, help="training images (0: per-model CPU defaults)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's default; 1: steadiest on a shared CPU)",
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for MFU")
    parser.add_argument("--only", default="", help="substring of the model names to run")
    parser.add_argument("--out", default="proxy_train")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cpu_images = [4096, 768, 1024, 256]  # enough for a stable img/s, minutes in total on 2 cores

    rows = []
    for (label, spec), default_images in zip(MODELS.items(), cpu_images, strict=True):
        if args.only and args.only not in label:
            continue
        n = args.images or (50_000 if device.type == "cuda" else default_images)
        data = load_dataset(
            DataConfig(
                name="synthetic", num_samples=n + n // 10, image_size=32, channels=3, val_fraction=1 / 11
            )
        )
        arch = adapt_arch_to_data(resolve_config(spec), data)
        torch.manual_seed(0)
        model = build_model(arch)
        flops = 2 * count_flops(model, torch.randn(1, 3, 32, 32))  # fvcore counts multiply-adds
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, device=str(device), compile=args.compile
        )
        load = os.getloadavg()[0]
        start = time.perf_counter()
        result = train_model(model, data, cfg)
        wall = time.perf_counter() - start
        # median over the epochs after the first (which pays one-off warm-up costs)
        later = sorted(e.images_per_second for e in result.epochs[1:]) or [0.0]
        ips = (
            later[len(later) // 2]
            if len(later) % 2
            else (later[len(later) // 2 - 1] + later[len(later) // 2]) / 2
        )
        achieved = 3 * flops * ips
        row = {
            "model": label,
            "params": result.params,
            "status": result.status,
            "reason": result.reason,
            "train_images": data.num_train,
            "epochs": args.epochs,
            "images_per_second": ips,
            "trial_seconds_measured": wall,
            "est_seconds_10_epochs_50k": 500_000 / ips if ips else None,
            "forward_gflops_per_image": flops / 1e9,
            "achieved_gflops_per_s": achieved / 1e9,
            "mfu": achieved / (args.peak_tflops * 1e12) if args.peak_tflops else None,
            "load_average_before": load,
            "val_accuracy": result.val_accuracy,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    digits_rows = digits_trials(device) if not args.only else []
    summary = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
        "settings": vars(args),
        "rows": rows,
        "digits_trials": digits_rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else "_cuda"
    (RESULTS / f"{args.out}{suffix}.json").write_text(json.dumps(summary, indent=1))
    (RESULTS / f"{args.out}{suffix}.md").write_text(to_markdown(summary))
    print(to_markdown(summary))


DIGITS_TRIAL = {"epochs": 5, "batch_size": 64, "augment": {"hflip": False}}


def digits_trials(device: torch.device) -> list[dict[str, Any]]:
    """Whole proxy trials as a quick-start search would run them: tiny models, digits at 16x16."""
    from hvtnas.train.trainer import train_proxy

    data = load_dataset(DataConfig(name="digits", resolution=16))
    out = []
    for mixer in ("pooling", "sepconv", "attention", "window"):
        spec = metaformer([16, 32, 48, 64], [1, 1, 1, 1], mixer, mixer)
        spec["stages"] = [dict(s, head_dim=8) for s in spec["stages"]]
        start = time.perf_counter()
        result = train_proxy(spec, data, TrainConfig(**DIGITS_TRIAL, device=str(device)))
        out.append(
            {
                "mixer": mixer,
                "params": result.params,
                "seconds": time.perf_counter() - start,
                "val_accuracy": result.val_accuracy,
                "images_per_second": result.images_per_second,
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def to_markdown(s: dict[str, Any]) -> str:
    st = s["settings"]
    lines = [
        f"# Proxy-training throughput on {s['device']}",
        "",
        f"{s['machine']}, torch {s['torch']}; synthetic 32x32x3 data, batch {st['batch_size']}, "
        f"{st['epochs']} epochs per model, compile={st['compile']}. img/s: median training throughput of "
        "the epochs after the first; the 10x50k column extrapolates the issue's reference trial from it. "
        "MFU against the given peak; load avg: the machine's 1-minute load before the model ran.",
        "",
        "| model | params | train images | img/s | measured run s | 10 epochs x 50k s (est.) "
        "| fwd GFLOP/img | achieved GFLOP/s | MFU | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        est = r["est_seconds_10_epochs_50k"]
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['train_images']:,} | {r['images_per_second']:,.0f} | "
            f"{r['trial_seconds_measured']:.1f} | {'n/a' if est is None else f'{est:,.0f}'} | "
            f"{r['forward_gflops_per_image']:.4f} | {r['achieved_gflops_per_s']:.1f} | {mfu} | "
            f"{r['load_average_before']:.1f} |"
        )
    if s["digits_trials"]:
        lines += [
            "",
            f"Whole proxy trials on `digits` at 16x16 ({DIGITS_TRIAL['epochs']} epochs, batch "
            f"{DIGITS_TRIAL['batch_size']}, 1,438 training / 359 validation images; tiny 4-stage models, "
            "widths 16-64, one block per stage; build + train + validate):",
            "",
            "| mixer | params | trial s | val acc | img/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in s["digits_trials"]:
            lines.append(
                f"| {r['mixer']} | {r['params']:,} | {r['seconds']:.1f} | {r['val_accuracy']:.3f} | "
                f"{r['images_per_second']:,.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
