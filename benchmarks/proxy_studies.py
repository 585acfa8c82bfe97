"""Does a few-epoch proxy rank architectures as longer training does, and do zero-cost proxies?

For every architecture of a small family of tiny MetaFormers (below) this script

1. scores the untrained network with every zero-cost proxy (one batch of training images),
2. trains a low-fidelity proxy (few epochs, lower data fraction),
3. trains the same architecture longer (more epochs, all training data),

and reports Kendall tau (proxy accuracy vs long-training accuracy: the proxy-ranking study) and
Spearman rho / Kendall tau of every zero-cost proxy against both accuracies (the zero-cost study).

Architectures: the search spaces of issue 6 do not exist yet, so they are sampled here from a
documented family of tiny configs (``sample_family``); switch to ``search_spaces/quickstart.yaml``
once it exists. Data: ``../shared/data/animal_mnist.npz`` (10 animal classes, 28x28 gray) when
present, else scikit-learn's digits.

    nice -n 10 python benchmarks/proxy_studies.py            # ~10-15 min on 2 CPU cores
    nice -n 10 python benchmarks/proxy_studies.py --archs 4 --long-epochs 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from hvtnas.config import ArchConfig
from hvtnas.models import build_model
from hvtnas.train.data import DataConfig, load_dataset
from hvtnas.train.proxies import ZERO_COST_PROXIES, score_model
from hvtnas.train.trainer import TrainConfig, adapt_arch_to_data, train_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANIMAL_MNIST = ROOT.parent / "shared" / "data" / "animal_mnist.npz"

# The family: 4 stages of widths (w, 2w, 3w, 4w); stages 1-2 use one mixer and stages 3-4 another
# (the CAFormer pattern: local mixing early, global late); head_dim 8.
EARLY_MIXERS = ["pooling", "sepconv", "identity", "shift", "mbconv", {"kind": "window", "window_size": 2}]
LATE_MIXERS = [
    "attention",
    "pooling",
    "identity",
    "sepconv",
    {"kind": "spatial_reduction", "sr_ratio": 1},
    {"kind": "window", "window_size": 2},
]
DEPTHS = [[1, 1, 1, 1], [1, 1, 2, 1], [2, 2, 2, 2], [1, 2, 3, 1], [2, 2, 4, 2]]
BASE_WIDTHS = [8, 16, 24, 32]
STEMS = [
    {"kind": "patch", "norm": "layernorm"},
    {"kind": "overlap", "norm": "layernorm"},
    {"kind": "conv", "norm": "batchnorm"},
]
POS_EMBEDS = ["none", "absolute", "peg"]


def sample_family(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct architectures from the family above, as ``ArchConfig`` dicts."""
    rng = random.Random(seed)
    archs: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(archs) < n:
        early, late = rng.choice(EARLY_MIXERS), rng.choice(LATE_MIXERS)
        depths, w = rng.choice(DEPTHS), rng.choice(BASE_WIDTHS)
        stages = []
        for i, depth in enumerate(depths):
            mixer = early if i < 2 else late
            stage: dict[str, Any] = {"depth": depth, "width": w * (i + 1), "head_dim": 8, "mixers": [mixer]}
            if isinstance(mixer, str) and mixer == "mbconv":
                stage["ffn"] = "none"
            stages.append(stage)
        cfg = {
            "name": f"a{len(archs):02d}",
            "input": {"channels": 1, "resolution": 16, "num_classes": 10},
            "stem": rng.choice(STEMS),
            "pos_embed": rng.choice(POS_EMBEDS),
            "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
            "stages": stages,
        }
        key = json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        ArchConfig.from_dict(cfg)  # fail here, not mid-study, on an invalid family member
        archs.append(cfg)
    return archs


def describe(cfg: dict[str, Any]) -> str:
    def name(m: Any) -> str:
        return m if isinstance(m, str) else m["kind"]

    s = cfg["stages"]
    depths = "-".join(str(st["depth"]) for st in s)
    pe = cfg["pos_embed"]
    mixers = f"{name(s[0]['mixers'][0])}/{name(s[2]['mixers'][0])}"
    return f"{mixers} d{depths} w{s[0]['width']} {cfg['stem']['kind']} {pe}"


def correlations(a: list[float], b: list[float]) -> dict[str, float | None]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x == x and y == y]  # drop NaNs
    if len(pairs) < 3:
        return {"kendall_tau": None, "spearman_rho": None, "n": len(pairs)}
    xs, ys = zip(*pairs, strict=True)
    return {
        "kendall_tau": float(stats.kendalltau(xs, ys).statistic),
        "spearman_rho": float(stats.spearmanr(xs, ys).statistic),
        "n": len(pairs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument("--proxy-fraction", type=float, default=0.5)
    parser.add_argument("--long-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--zc-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared CPU)")
    parser.add_argument("--out", default="proxy_studies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if ANIMAL_MNIST.is_file():
        base = DataConfig(name="npz", path=ANIMAL_MNIST, resolution=args.resolution, channels=1)
        dataset = "animal_mnist"
    else:
        base = DataConfig(name="digits", resolution=args.resolution, channels=1)
        dataset = "digits"
    long_data = load_dataset(base)
    proxy_data = load_dataset(base.model_copy(update={"fraction": args.proxy_fraction}))
    no_flip = {"hflip": False}
    proxy_cfg = TrainConfig(
        epochs=args.proxy_epochs, batch_size=args.batch_size, augment=no_flip, warmup_epochs=0.5
    )
    long_cfg = TrainConfig(epochs=args.long_epochs, batch_size=args.batch_size, augment=no_flip)
    zc_x, zc_y = long_data.sample_batch(args.zc_batch, seed=args.seed)

    rows = []
    study_start = time.perf_counter()
    for cfg in sample_family(args.archs, args.seed):
        arch = adapt_arch_to_data(ArchConfig.from_dict(cfg), long_data)
        torch.manual_seed(args.seed)
        model = build_model(arch)
        t = time.perf_counter()
        zc = score_model(model, zc_x, zc_y, seed=args.seed)
        zc_seconds = time.perf_counter() - t
        torch.manual_seed(args.seed)
        proxy = train_model(build_model(arch), proxy_data, proxy_cfg)
        torch.manual_seed(args.seed)
        long = train_model(build_model(arch), long_data, long_cfg)
        row = {
            "name": cfg["name"],
            "arch": describe(cfg),
            "config": cfg,
            "params": proxy.params,
            "zero_cost": zc,
            "zero_cost_seconds": zc_seconds,
            "proxy": proxy.to_dict(),
            "long": long.to_dict(),
        }
        rows.append(row)
        print(
            f"{cfg['name']} {describe(cfg):48s} {proxy.params:>8,d}"
            f"  proxy {proxy.val_accuracy or float('nan'):.3f}"
            f" ({proxy.train_seconds:.1f}s, {proxy.status})  long {long.val_accuracy or float('nan'):.3f}"
            f" ({long.train_seconds:.1f}s, {long.status})  zc {zc_seconds:.1f}s",
            flush=True,
        )
    total = time.perf_counter() - study_start

    def acc(row: dict, which: str) -> float:
        value = row[which]["val_accuracy"]
        return float("nan") if value is None or row[which]["status"] == "failed" else value

    proxy_acc = [acc(r, "proxy") for r in rows]
    long_acc = [acc(r, "long") for r in rows]
    summary = {
        "dataset": dataset,
        "settings": {
            **vars(args),
            "proxy_train": proxy_cfg.model_dump(),
            "long_train": long_cfg.model_dump(),
            "train_images": long_data.num_train,
            "proxy_train_images": proxy_data.num_train,
            "val_images": long_data.num_val,
        },
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "total_seconds": total,
        "ranking": correlations(proxy_acc, long_acc),
        "zero_cost": {
            name: {
                "vs_proxy": correlations([r["zero_cost"][name] for r in rows], proxy_acc),
                "vs_long": correlations([r["zero_cost"][name] for r in rows], long_acc),
            }
            for name in ZERO_COST_PROXIES
        },
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=1))
    (RESULTS / f"{args.out}.md").write_text(to_markdown(summary))
    print(to_markdown(summary))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def to_markdown(s: dict[str, Any]) -> str:
    st = s["settings"]
    lines = [
        f"# Proxy-ranking and zero-cost-proxy study ({s['dataset']})",
        "",
        f"{len(s['rows'])} architectures from `benchmarks/proxy_studies.py`'s tiny family "
        f"(seed {st['seed']}), {st['resolution']}x{st['resolution']} gray input, batch {st['batch_size']}, "
        "AdamW + warm-up + cosine, "
        "label smoothing 0.1, random crop (no flip).",
        f"Proxy: {st['proxy_epochs']} epochs on {st['proxy_train_images']} training images (fraction "
        f"{st['proxy_fraction']}); long: {st['long_epochs']} epochs on {st['train_images']}; accuracy on "
        f"the same {st['val_images']} held-out validation images. Zero-cost proxies on one batch of "
        f"{st['zc_batch']} "
        "training images, untrained weights.",
        f"Machine: {s['machine']}; total {s['total_seconds'] / 60:.1f} min (shared, nice'd CPU).",
        "",
        "## Proxy ranking",
        "",
        f"Kendall tau (proxy accuracy vs long-training accuracy): **{_fmt(s['ranking']['kendall_tau'])}** "
        f"(Spearman {_fmt(s['ranking']['spearman_rho'])}, n = {s['ranking']['n']}).",
        "",
        "## Zero-cost proxies",
        "",
        "| proxy | Kendall vs proxy acc | Spearman vs proxy acc | Kendall vs long acc "
        "| Spearman vs long acc |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in s["zero_cost"].items():
        p, lg = c["vs_proxy"], c["vs_long"]
        lines.append(
            f"| {name} | {_fmt(p['kendall_tau'])} | {_fmt(p['spearman_rho'])} | {_fmt(lg['kendall_tau'])} | "
            f"{_fmt(lg['spearman_rho'])} |"
        )
    lines += [
        "",
        "## Architectures",
        "",
        "| name | early/late mixer, depths, base width, stem, pos-embed | params | proxy acc | proxy s "
        "| long acc | long s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["rows"]:
        pa, la = r["proxy"]["val_accuracy"], r["long"]["val_accuracy"]
        lines.append(
            f"| {r['name']} | {r['arch']} | {r['params']:,} | {pa if pa is None else f'{pa:.3f}'} | "
            f"{r['proxy']['train_seconds']:.1f} | {la if la is None else f'{la:.3f}'} | "
            f"{r['long']['train_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
